// SPDX-License-Identifier: MIT
// mapdirect_vfs: an SQLite VFS named "mapdirect" that stores the main
// database, its rollback journal and its WAL through direct_mapping, and
// delegates everything else to the default "unix" VFS.
//
// Design (see README.md next to this file):
//  - Every file is ALSO opened by the unix VFS; its sqlite3_file is embedded
//    after ours. Locks (xLock/xUnlock/xCheckReservedLock), the WAL index
//    (xShm*), sector size, device characteristics and most file controls are
//    forwarded to it, so the locking protocol between connections and
//    processes is exactly unix's.
//  - Data goes through one direct_mapping of [0, mapped size) on our own
//    descriptor. The mapping may be larger than the file (it was mapped while
//    the file was briefly extended), accesses never go past the file size we
//    track. When SQLite extends the file past the mapping, a larger mapping is
//    made and the old one retired (kept until xClose). SQLite never holds
//    pointers into our mappings: io_methods is version 2, so xFetch/xUnfetch
//    (SQLite's memory-mapped I/O) are never called and a remap is safe.
//  - File sizes are always exact (as with the unix VFS): blocks are reserved
//    ahead in chunks with fallocate(FALLOC_FL_KEEP_SIZE) (so that a full file
//    system is reported as SQLITE_FULL by xWrite, not as SIGBUS on a store),
//    then the size is set exactly with ftruncate.
//  - xRead/xWrite use direct_mapping::read/write (SIGBUS-guarded): a file
//    truncated by another process or a media error becomes SQLITE_IOERR_READ
//    / SQLITE_IOERR_WRITE.
//  - xSync persists the range written since the last sync; a size change is
//    made durable by fdatasync (the msync of a shared mapping covers it too).
//    A failed persist is sticky: every later xWrite/xSync of that file
//    object fails with SQLITE_IOERR_FSYNC until SQLite reopens the file.
//  - Read-only opens and every other file type (temp databases, statement
//    and super-journals) pass through to the unix VFS untouched.
#include "mapdirect_vfs.h"

#include <mapdirect/detail/descriptor.hpp>
#include <mapdirect/mapping.hpp>

#include <sqlite3ext.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

SQLITE_EXTENSION_INIT1

#define MDVFS_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using mapdirect::direct_mapping;
namespace sys = mapdirect::detail::sys;

constexpr std::uint64_t kMinMap = 256 * 1024;        // smallest mapping
constexpr std::uint64_t kMapAlign = 1024 * 1024;     // mappings grow in MiB
constexpr std::uint64_t kMaxMapStep = 256ull << 20;  // at most this much ahead
constexpr std::uint64_t kMinReserve = 64 * 1024;     // blocks reserved ahead
constexpr std::uint64_t kMaxReserve = 8ull << 20;

std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

sqlite3_vfs* g_unix = nullptr;  // the VFS underneath
sqlite3_vfs g_vfs;              // "mapdirect"
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

// Mappings whose descriptor could not be closed yet because this process held
// POSIX record locks on the file (closing any descriptor of the inode would
// release them, including other connections' locks). Closed by a later xClose.
std::vector<direct_mapping>& deferred() {
  static std::vector<direct_mapping> list;
  return list;
}

struct mapped_state {
  direct_mapping map;                   // covers [0, map.size()), may exceed the file
  std::vector<direct_mapping> retired;  // earlier, smaller mappings (see header)
  int fd = -1;                          // our own descriptor of the file (O_RDWR)
  int type = 0;                         // SQLITE_OPEN_MAIN_DB / _MAIN_JOURNAL / _WAL
  std::string path;
  std::uint64_t size = 0;                    // file size as last set or seen
  std::uint64_t reserved = 0;                // blocks reserved (fallocate KEEP_SIZE) below this offset
  bool reserve_supported = true;             // false: file system has no fallocate (sparse growth)
  std::uint64_t dirty_lo = 0, dirty_hi = 0;  // written since the last xSync (file offsets)
  bool size_dirty = false;                   // size changed since the last xSync
  bool created = false;                      // created by this open: first sync also syncs the directory
  int sticky = SQLITE_OK;                    // a persist failed: fail writes/syncs until reopened
  std::string mode;                          // "shared/page"
  std::string why;                           // describe() of the ladder, one line
};

struct md_file {
  sqlite3_file base;
  sqlite3_file* real;  // the unix VFS's file, right after this struct
  mapped_state* st;    // nullptr: pass-through
  const char* passthrough_why;
};

constexpr std::size_t kHeader = (sizeof(md_file) + 15) & ~std::size_t{15};

md_file* as_md(sqlite3_file* f) { return reinterpret_cast<md_file*>(f); }

const char* type_name(int type) {
  switch (type) {
    case SQLITE_OPEN_MAIN_DB: return "db";
    case SQLITE_OPEN_MAIN_JOURNAL: return "journal";
    case SQLITE_OPEN_WAL: return "wal";
    default: return "other";
  }
}

std::string one_line(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ';';
  std::string out;
  for (char c : s) {
    out += c;
    if (c == ';') out += ' ';
  }
  return out;
}

// Closes mappings (and their descriptors) unless this process holds POSIX
// locks on the file; then they wait in deferred(). Also retries earlier ones.
void release_mappings(std::vector<direct_mapping>& maps, int fd) {
  struct stat st {};
  bool locked = false;
  if (fd >= 0 && sys::fstat(fd, &st) == 0) locked = mapdirect::detail::process_holds_posix_lock(fd, st);
  pthread_mutex_lock(&g_lock);
  std::vector<direct_mapping>& later = deferred();
  for (std::size_t i = 0; i < later.size();) {
    struct stat ds {};
    const int dfd = later[i].native_handle();
    if (dfd >= 0 && sys::fstat(dfd, &ds) == 0 && mapdirect::detail::process_holds_posix_lock(dfd, ds)) {
      ++i;
      continue;
    }
    (void)later[i].close();
    later.erase(later.begin() + static_cast<std::ptrdiff_t>(i));
  }
  for (auto& m : maps) {
    if (!m) continue;
    if (locked) later.push_back(std::move(m));
    else (void)m.close();
  }
  pthread_mutex_unlock(&g_lock);
  maps.clear();
}

// True the first time a file (path) is opened with this mode in this process:
// a journal is reopened for every transaction, its report is given once.
bool first_report(const std::string& path, const std::string& mode) {
  static std::vector<std::string> seen;
  const std::string key = path + '\n' + mode;
  pthread_mutex_lock(&g_lock);
  bool first = true;
  for (const auto& k : seen)
    if (k == key) first = false;
  if (first && seen.size() < 256) seen.push_back(key);
  pthread_mutex_unlock(&g_lock);
  return first;
}

// fsyncs the directory holding `path` (a new journal/WAL must survive a crash).
int sync_parent_dir(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int dfd = sys::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return errno;
  const int rc = sys::fsync(dfd) == 0 ? 0 : errno;
  sys::close_quietly(dfd);  // a directory: holds none of SQLite's record locks
  return rc;
}

void log_failure(const mapped_state* s, int rc, const char* what) {
  sqlite3_log(rc, "mapdirect: %s (%s): %s: %s", s->path.c_str(), type_name(s->type), what,
              mapdirect::last_error_detail());
}

// ENOSPC/EDQUOT -> SQLITE_FULL, else `otherwise`.
int code_for_errno(int e, int otherwise) { return (e == ENOSPC || e == EDQUOT) ? SQLITE_FULL : otherwise; }

// True when the file system of fd has no block left for us.
bool fs_full(int fd) {
  struct statvfs v {};
  return ::fstatvfs(fd, &v) == 0 && v.f_bavail == 0;
}

// Re-reads the file size (another process may have changed it).
int refresh_size(mapped_state* s) {
  struct stat st {};
  if (sys::fstat(s->fd, &st) != 0) return SQLITE_IOERR_FSTAT;
  const auto now = static_cast<std::uint64_t>(st.st_size);
  // Someone else truncated the file: that freed the blocks we reserved beyond.
  if (now < s->size && now < s->reserved) s->reserved = now;
  s->size = now;
  return SQLITE_OK;
}

// Records the mode of a (new) mapping.
void note_mode(mapped_state* s, const direct_mapping& m) {
  s->mode = std::string(mapdirect::to_string(m.mode())) + "/" + mapdirect::to_string(m.store_granularity());
  s->why = one_line(m.describe());
}

// Maps [0, length) of the file; the file must be at least that long now.
int map_now(mapped_state* s, std::uint64_t length) {
  auto m = direct_mapping::map(s->fd, 0, static_cast<std::size_t>(length));
  if (!m) {
    log_failure(s, SQLITE_IOERR_MMAP, "map");
    return SQLITE_IOERR_MMAP;
  }
  const bool first = !s->map && s->retired.empty();
  if (s->map) s->retired.push_back(std::move(s->map));
  s->map = std::move(m.value());
  // A new file object (SQLite reopened the file: a new connection, or the
  // next transaction's journal) starts afresh: the durability loss an earlier
  // object saw was reported to the connection that saw it, and SQLite's
  // recovery (hot journal, WAL) rewrites what was lost. mapdirect remembers
  // losses per inode and process, so forget it here; this object's own
  // `sticky` keeps later remaps of a failed file failing.
  if (first) s->map.clear_durability_error();
  note_mode(s, s->map);
  return SQLITE_OK;
}

// Makes the mapping cover [0, end) of a file at least that long (reads after
// another process extended the file).
int cover(mapped_state* s, std::uint64_t end) {
  if (s->map && s->map.size() >= end) return SQLITE_OK;
  return map_now(s, s->size);
}

// Extends the file to exactly `need` bytes with blocks reserved, and the
// mapping to cover it.
int grow(mapped_state* s, std::uint64_t need) {
  const std::uint64_t old = s->size;
  if (!s->map || s->map.size() < need) {
    // Map ahead: extend the file (sparse, metadata only) to the new mapping's
    // length, map it, and restore the size. Never rolled back beyond `old`.
    const std::uint64_t have = s->map ? s->map.size() : 0;
    std::uint64_t target = have * 2 > need ? have * 2 : need;
    if (target < kMinMap) target = kMinMap;
    if (target > need + kMaxMapStep) target = need + kMaxMapStep;
    target = round_up(target, kMapAlign);
    if (sys::ftruncate(s->fd, static_cast<off_t>(target)) != 0) {
      const int e = errno;
      mapdirect::detail::fail_errno(e, "ftruncate (extending the file to map ahead)");
      log_failure(s, SQLITE_IOERR_TRUNCATE, "grow");
      return code_for_errno(e, SQLITE_IOERR_TRUNCATE);
    }
    const int rc = map_now(s, target);
    if (sys::ftruncate(s->fd, static_cast<off_t>(old)) != 0 && rc == SQLITE_OK) {
      mapdirect::detail::fail_errno(errno, "ftruncate (restoring the size after mapping ahead)");
      log_failure(s, SQLITE_IOERR_TRUNCATE, "grow");
      return SQLITE_IOERR_TRUNCATE;
    }
    if (rc != SQLITE_OK) return rc;
  }
  if (s->reserve_supported && need > s->reserved) {
    // Reserve blocks ahead so that stores into the mapping never need an
    // allocation (no SIGBUS on a full file system): ENOSPC surfaces here.
    std::uint64_t step = need / 8;
    if (step < kMinReserve) step = kMinReserve;
    if (step > kMaxReserve) step = kMaxReserve;
    const std::uint64_t from = s->reserved;
    std::uint64_t until = round_up(need + step, kMinReserve);
    int rc = sys::fallocate(s->fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from), static_cast<off_t>(until - from));
    if (rc != 0 && errno == ENOSPC) {
      until = need;  // no room to reserve ahead: try exactly what is needed
      rc = sys::fallocate(s->fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from), static_cast<off_t>(until - from));
    }
    if (rc != 0) {
      const int e = errno;
      if (e == EOPNOTSUPP) {
        s->reserve_supported = false;
        sqlite3_log(SQLITE_NOTICE,
                    "mapdirect: %s: no fallocate on this file system: growth is sparse, a full "
                    "file system may then surface as SQLITE_IOERR_WRITE from a store",
                    s->path.c_str());
      } else {
        mapdirect::detail::fail_errno(e, "fallocate (reserving blocks)");
        const int code = code_for_errno(e, SQLITE_IOERR_WRITE);
        log_failure(s, code, "grow");
        return code;
      }
    } else {
      s->reserved = until;
    }
  }
  // The new size: fallocate (mode 0) over the reserved blocks only ever
  // extends, so it cannot cut off what another process appended meanwhile.
  int rc = -1;
  if (s->reserve_supported) rc = sys::fallocate(s->fd, 0, static_cast<off_t>(old), static_cast<off_t>(need - old));
  if (rc != 0 && (!s->reserve_supported || errno == EOPNOTSUPP)) rc = sys::ftruncate(s->fd, static_cast<off_t>(need));
  if (rc != 0) {
    const int e = errno;
    mapdirect::detail::fail_errno(e, "fallocate/ftruncate (setting the new size)");
    const int code = code_for_errno(e, SQLITE_IOERR_TRUNCATE);
    log_failure(s, code, "grow");
    return code;
  }
  s->size = need;
  s->size_dirty = true;
  return SQLITE_OK;
}

// --- pass-through io_methods (temp files, read-only files)

int pt_close(sqlite3_file* f) {
  md_file* p = as_md(f);
  const int rc = p->real->pMethods ? p->real->pMethods->xClose(p->real) : SQLITE_OK;
  p->real->pMethods = nullptr;
  return rc;
}
int pt_read(sqlite3_file* f, void* b, int n, sqlite3_int64 o) {
  return as_md(f)->real->pMethods->xRead(as_md(f)->real, b, n, o);
}
int pt_write(sqlite3_file* f, const void* b, int n, sqlite3_int64 o) {
  return as_md(f)->real->pMethods->xWrite(as_md(f)->real, b, n, o);
}
int pt_truncate(sqlite3_file* f, sqlite3_int64 n) { return as_md(f)->real->pMethods->xTruncate(as_md(f)->real, n); }
int pt_sync(sqlite3_file* f, int flags) { return as_md(f)->real->pMethods->xSync(as_md(f)->real, flags); }
int pt_file_size(sqlite3_file* f, sqlite3_int64* out) {
  return as_md(f)->real->pMethods->xFileSize(as_md(f)->real, out);
}
int fw_lock(sqlite3_file* f, int l) { return as_md(f)->real->pMethods->xLock(as_md(f)->real, l); }
int fw_unlock(sqlite3_file* f, int l) { return as_md(f)->real->pMethods->xUnlock(as_md(f)->real, l); }
int fw_check_reserved(sqlite3_file* f, int* out) {
  return as_md(f)->real->pMethods->xCheckReservedLock(as_md(f)->real, out);
}
int fw_sector_size(sqlite3_file* f) { return as_md(f)->real->pMethods->xSectorSize(as_md(f)->real); }
int fw_device_characteristics(sqlite3_file* f) {
  return as_md(f)->real->pMethods->xDeviceCharacteristics(as_md(f)->real);
}
int fw_shm_map(sqlite3_file* f, int pg, int sz, int extend, void volatile** pp) {
  return as_md(f)->real->pMethods->xShmMap(as_md(f)->real, pg, sz, extend, pp);
}
int fw_shm_lock(sqlite3_file* f, int off, int n, int flags) {
  return as_md(f)->real->pMethods->xShmLock(as_md(f)->real, off, n, flags);
}
void fw_shm_barrier(sqlite3_file* f) { as_md(f)->real->pMethods->xShmBarrier(as_md(f)->real); }
int fw_shm_unmap(sqlite3_file* f, int del) { return as_md(f)->real->pMethods->xShmUnmap(as_md(f)->real, del); }
int pt_fetch(sqlite3_file* f, sqlite3_int64 o, int n, void** pp) {
  return as_md(f)->real->pMethods->xFetch(as_md(f)->real, o, n, pp);
}
int pt_unfetch(sqlite3_file* f, sqlite3_int64 o, void* p) {
  return as_md(f)->real->pMethods->xUnfetch(as_md(f)->real, o, p);
}

int pt_file_control(sqlite3_file* f, int op, void* arg) {
  md_file* p = as_md(f);
  if (op == SQLITE_FCNTL_PRAGMA) {
    char** az = static_cast<char**>(arg);
    if (az[1] && (sqlite3_stricmp(az[1], "mapdirect_mode") == 0 || sqlite3_stricmp(az[1], "mapdirect_describe") == 0)) {
      az[0] = sqlite3_mprintf("unix (pass-through: %s)", p->passthrough_why);
      return SQLITE_OK;
    }
  }
  return p->real->pMethods->xFileControl(p->real, op, arg);
}

sqlite3_io_methods g_pt_methods;  // filled in register (version follows the unix file's)

// --- mapped io_methods

int md_close(sqlite3_file* f) {
  md_file* p = as_md(f);
  mapped_state* s = p->st;
  if (s) {
    s->retired.push_back(std::move(s->map));
    release_mappings(s->retired, s->fd);
    // Our descriptor: never close it while the process holds record locks on
    // the file (that would drop SQLite's locks); deferred then.
    if (s->fd >= 0) mapdirect::detail::close_keeping_locks_quietly(s->fd);
    delete s;
    p->st = nullptr;
  }
  const int rc = p->real->pMethods ? p->real->pMethods->xClose(p->real) : SQLITE_OK;
  p->real->pMethods = nullptr;
  return rc;
}

int md_read(sqlite3_file* f, void* buf, int amt, sqlite3_int64 off) {
  mapped_state* s = as_md(f)->st;
  if (amt <= 0 || off < 0) return SQLITE_OK;
  const auto o = static_cast<std::uint64_t>(off), n = static_cast<std::uint64_t>(amt);
  if (o + n > s->size) {
    // Maybe another connection extended the file: look again.
    if (int rc = refresh_size(s); rc != SQLITE_OK) return rc;
  }
  const std::uint64_t avail = o >= s->size ? 0 : (s->size - o < n ? s->size - o : n);
  if (avail > 0) {
    if (int rc = cover(s, o + avail); rc != SQLITE_OK) return SQLITE_IOERR_READ;
    auto r = s->map.read(static_cast<std::size_t>(o), buf, static_cast<std::size_t>(avail));
    if (!r) {
      // SIGBUS: the file shrank under the mapping (another process truncated
      // it) or the media failed. Never a crash: an I/O error.
      log_failure(s, SQLITE_IOERR_READ, "read");
      (void)refresh_size(s);
      return SQLITE_IOERR_READ;
    }
  }
  if (avail < n) {
    std::memset(static_cast<char*>(buf) + avail, 0, static_cast<std::size_t>(n - avail));
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

int md_write(sqlite3_file* f, const void* buf, int amt, sqlite3_int64 off) {
  mapped_state* s = as_md(f)->st;
  if (s->sticky != SQLITE_OK) return s->sticky;
  if (amt <= 0 || off < 0) return SQLITE_OK;
  const auto o = static_cast<std::uint64_t>(off), n = static_cast<std::uint64_t>(amt);
  if (o + n > s->size) {
    if (int rc = refresh_size(s); rc != SQLITE_OK) return rc;
    if (o + n > s->size)
      if (int rc = grow(s, o + n); rc != SQLITE_OK) return rc;
  }
  if (int rc = cover(s, o + n); rc != SQLITE_OK) return SQLITE_IOERR_WRITE;
  auto r = s->map.write(static_cast<std::size_t>(o), buf, static_cast<std::size_t>(n));
  if (!r) {
    const int code = fs_full(s->fd) ? SQLITE_FULL : SQLITE_IOERR_WRITE;
    log_failure(s, code, "write");
    (void)refresh_size(s);
    return code;
  }
  if (s->dirty_hi <= s->dirty_lo) {
    s->dirty_lo = o;
    s->dirty_hi = o + n;
  } else {
    if (o < s->dirty_lo) s->dirty_lo = o;
    if (o + n > s->dirty_hi) s->dirty_hi = o + n;
  }
  return SQLITE_OK;
}

int md_truncate(sqlite3_file* f, sqlite3_int64 size) {
  mapped_state* s = as_md(f)->st;
  if (s->sticky != SQLITE_OK) return s->sticky;
  if (size < 0) return SQLITE_IOERR_TRUNCATE;
  const auto n = static_cast<std::uint64_t>(size);
  if (n > s->size) return grow(s, n);  // exact, like unix without a chunk size
  if (sys::ftruncate(s->fd, static_cast<off_t>(n)) != 0) {
    mapdirect::detail::fail_errno(errno, "ftruncate");
    log_failure(s, SQLITE_IOERR_TRUNCATE, "truncate");
    return SQLITE_IOERR_TRUNCATE;
  }
  s->size = n;
  if (s->reserved > n) s->reserved = n;  // truncation frees reserved blocks beyond
  s->size_dirty = true;
  if (s->dirty_hi > n) s->dirty_hi = n;
  return SQLITE_OK;
}

int md_sync(sqlite3_file* f, int flags) {
  mapped_state* s = as_md(f)->st;
  if (s->sticky != SQLITE_OK) return s->sticky;
  (void)flags;
  bool size_covered = false;
  if (s->dirty_hi > s->dirty_lo && s->map) {
    // Never past the file's end: a CPU flush of a page beyond EOF would fault.
    std::uint64_t hi = s->dirty_hi;
    if (hi > s->map.size()) hi = s->map.size();
    if (hi > s->size) hi = s->size;
    const std::uint64_t lo = s->dirty_lo < hi ? s->dirty_lo : hi;
    auto r = s->map.persist(static_cast<std::size_t>(lo), static_cast<std::size_t>(hi - lo));
    if (!r) {
      log_failure(s, SQLITE_IOERR_FSYNC, "persist");
      return s->sticky = SQLITE_IOERR_FSYNC;
    }
    // msync(MS_SYNC) of a page-cache mapping is fdatasync of the range,
    // which includes the file size; a CPU flush (DAX) does not.
    size_covered = s->map.store_granularity() == mapdirect::granularity::page;
  }
  s->dirty_lo = s->dirty_hi = 0;
  if (s->size_dirty && !size_covered) {
    if (sys::fdatasync(s->fd) != 0) {
      mapdirect::detail::fail_errno(errno, "fdatasync (file size)");
      log_failure(s, SQLITE_IOERR_FSYNC, "sync");
      return s->sticky = SQLITE_IOERR_FSYNC;
    }
  }
  s->size_dirty = false;
  if (s->created) {
    // Like unix: the first sync of a new journal/WAL also syncs its directory.
    if (const int e = sync_parent_dir(s->path)) {
      mapdirect::detail::fail_errno(e, "fsync of the directory");
      log_failure(s, SQLITE_IOERR_DIR_FSYNC, "sync");
      return SQLITE_IOERR_DIR_FSYNC;
    }
    s->created = false;
  }
  return SQLITE_OK;
}

int md_file_size(sqlite3_file* f, sqlite3_int64* out) {
  mapped_state* s = as_md(f)->st;
  if (int rc = refresh_size(s); rc != SQLITE_OK) return rc;
  *out = static_cast<sqlite3_int64>(s->size);
  return SQLITE_OK;
}

int md_file_control(sqlite3_file* f, int op, void* arg) {
  md_file* p = as_md(f);
  mapped_state* s = p->st;
  switch (op) {
    case SQLITE_FCNTL_PRAGMA: {
      char** az = static_cast<char**>(arg);
      if (az[1] && sqlite3_stricmp(az[1], "mapdirect_mode") == 0) {
        az[0] = sqlite3_mprintf("%s", s->mode.c_str());
        return SQLITE_OK;
      }
      if (az[1] && sqlite3_stricmp(az[1], "mapdirect_describe") == 0) {
        az[0] = sqlite3_mprintf("%s", s->why.c_str());
        return SQLITE_OK;
      }
      break;
    }
    case SQLITE_FCNTL_VFSNAME:
      *static_cast<char**>(arg) = sqlite3_mprintf("mapdirect(%s)", s->mode.c_str());
      return SQLITE_OK;
    case SQLITE_FCNTL_SIZE_HINT:   // growth is ours: unix would extend the file behind our back
    case SQLITE_FCNTL_CHUNK_SIZE:  // sizes stay exact; blocks are reserved ahead anyway
      return SQLITE_OK;
    case SQLITE_FCNTL_MMAP_SIZE:  // no xFetch: SQLite's own mmap stays off
      *static_cast<sqlite3_int64*>(arg) = 0;
      return SQLITE_OK;
    default: break;
  }
  return p->real->pMethods->xFileControl(p->real, op, arg);
}

// unix's characteristics, minus batch-atomic writes: those are F2FS ioctls on
// unix's descriptor, which our stores through the mapping would bypass.
int md_device_characteristics(sqlite3_file* f) { return fw_device_characteristics(f) & ~SQLITE_IOCAP_BATCH_ATOMIC; }

sqlite3_io_methods g_md_methods = {
    2,  // no xFetch/xUnfetch: SQLite never holds pointers into our mappings
    md_close,   md_read,     md_write,          md_truncate,     md_sync,        md_file_size,
    fw_lock,    fw_unlock,   fw_check_reserved, md_file_control, fw_sector_size, md_device_characteristics,
    fw_shm_map, fw_shm_lock, fw_shm_barrier,    fw_shm_unmap,    nullptr,        nullptr,
};

// --- the VFS

int md_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  md_file* p = as_md(file);
  std::memset(p, 0, sizeof *p);
  p->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kHeader);
  const int type = flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL | SQLITE_OPEN_TEMP_DB |
                            SQLITE_OPEN_TEMP_JOURNAL | SQLITE_OPEN_TRANSIENT_DB | SQLITE_OPEN_SUBJOURNAL |
                            SQLITE_OPEN_SUPER_JOURNAL);
  bool existed = false;
  if (name) {
    struct stat before {};
    existed = ::stat(name, &before) == 0;
  }
  int got = 0;
  int rc = g_unix->xOpen(g_unix, name, p->real, flags, &got);
  if (out_flags) *out_flags = got;
  if (rc != SQLITE_OK) {
    if (p->real->pMethods) p->real->pMethods->xClose(p->real);
    p->real->pMethods = nullptr;
    return rc;
  }
  const bool mappable =
      name && (type == SQLITE_OPEN_MAIN_DB || type == SQLITE_OPEN_MAIN_JOURNAL || type == SQLITE_OPEN_WAL);
  const char* why = nullptr;
  if (!mappable) why = "temporary or auxiliary file";
  else if (got & SQLITE_OPEN_READONLY) why = "read-only open (a direct_mapping needs a writable descriptor)";
  else if (flags & SQLITE_OPEN_DELETEONCLOSE) why = "delete-on-close file";
  mapped_state* s = nullptr;
  if (!why) {
    s = new (std::nothrow) mapped_state();
    if (!s) why = "out of memory";
  }
  if (s) {
    s->type = type;
    s->path = name;
    s->created = !existed && (type == SQLITE_OPEN_MAIN_JOURNAL || type == SQLITE_OPEN_WAL);
    {
      const mapdirect::detail::stdio_placeholders low;  // never take descriptors 0..2
      s->fd = sys::open(name, O_RDWR | O_CLOEXEC | O_NOCTTY);
    }
    struct stat st {};
    if (s->fd < 0 || sys::fstat(s->fd, &st) != 0) {
      mapdirect::detail::fail_errno(errno, "open");
      log_failure(s, SQLITE_CANTOPEN, "open");
      rc = SQLITE_CANTOPEN;
    } else {
      s->size = static_cast<std::uint64_t>(st.st_size);
      s->reserved = s->size;  // an existing file's blocks are (taken to be) allocated
      if (s->size > 0) {
        rc = map_now(s, s->size);
      } else {
        // Nothing to map yet: find out which mode a mapping would get.
        mapdirect::map_ladder ladder;
        auto mode = direct_mapping::try_modes(s->fd, mapdirect::map_options{}, ladder);
        if (mode) {
          const auto g = mapdirect::granularity_for(mode.value(), mapdirect::persistence_domain::unknown);
          s->mode = std::string(mapdirect::to_string(mode.value())) + "/" + mapdirect::to_string(g);
          s->why = one_line(direct_mapping::describe_ladder(ladder));
        } else {
          log_failure(s, SQLITE_CANTOPEN, "try_modes");
          rc = SQLITE_CANTOPEN;
        }
      }
    }
    if (rc != SQLITE_OK) {
      if (s->fd >= 0) mapdirect::detail::close_keeping_locks_quietly(s->fd);
      release_mappings(s->retired, -1);
      delete s;
      p->real->pMethods->xClose(p->real);
      p->real->pMethods = nullptr;
      return rc;
    }
    p->st = s;
    p->base.pMethods = &g_md_methods;
    if (first_report(s->path, s->mode))
      sqlite3_log(SQLITE_NOTICE, "mapdirect: %s (%s): %s; %s", name, type_name(type), s->mode.c_str(), s->why.c_str());
    return SQLITE_OK;
  }
  p->passthrough_why = why;
  p->base.pMethods = &g_pt_methods;
  if (name && type == SQLITE_OPEN_MAIN_DB)
    sqlite3_log(SQLITE_NOTICE, "mapdirect: %s (%s): pass-through to unix: %s", name, type_name(type), why);
  return SQLITE_OK;
}

int vfs_delete(sqlite3_vfs*, const char* name, int sync_dir) { return g_unix->xDelete(g_unix, name, sync_dir); }
int vfs_access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return g_unix->xAccess(g_unix, name, flags, out);
}
int vfs_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_unix->xFullPathname(g_unix, name, n, out);
}
void* vfs_dl_open(sqlite3_vfs*, const char* name) { return g_unix->xDlOpen(g_unix, name); }
void vfs_dl_error(sqlite3_vfs*, int n, char* msg) { g_unix->xDlError(g_unix, n, msg); }
void (*vfs_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) { return g_unix->xDlSym(g_unix, h, sym); }
void vfs_dl_close(sqlite3_vfs*, void* h) { g_unix->xDlClose(g_unix, h); }
int vfs_randomness(sqlite3_vfs*, int n, char* out) { return g_unix->xRandomness(g_unix, n, out); }
int vfs_sleep(sqlite3_vfs*, int us) { return g_unix->xSleep(g_unix, us); }
int vfs_current_time(sqlite3_vfs*, double* out) { return g_unix->xCurrentTime(g_unix, out); }
int vfs_get_last_error(sqlite3_vfs*, int n, char* out) { return g_unix->xGetLastError(g_unix, n, out); }
int vfs_current_time_int64(sqlite3_vfs*, sqlite3_int64* out) { return g_unix->xCurrentTimeInt64(g_unix, out); }

}  // namespace

MDVFS_EXPORT int mapdirect_vfs_register(int make_default) {
  pthread_mutex_lock(&g_lock);
  if (!g_unix) {
    sqlite3_vfs* unix_vfs = sqlite3_vfs_find("unix");
    if (!unix_vfs) {
      pthread_mutex_unlock(&g_lock);
      return SQLITE_ERROR;
    }
    g_unix = unix_vfs;
    g_vfs.iVersion = unix_vfs->iVersion < 2 ? unix_vfs->iVersion : 2;
    g_vfs.szOsFile = static_cast<int>(kHeader) + unix_vfs->szOsFile;
    g_vfs.mxPathname = unix_vfs->mxPathname;
    g_vfs.zName = "mapdirect";
    g_vfs.pAppData = unix_vfs;
    g_vfs.xOpen = md_open;
    g_vfs.xDelete = vfs_delete;
    g_vfs.xAccess = vfs_access;
    g_vfs.xFullPathname = vfs_full_pathname;
    g_vfs.xDlOpen = vfs_dl_open;
    g_vfs.xDlError = vfs_dl_error;
    g_vfs.xDlSym = vfs_dl_sym;
    g_vfs.xDlClose = vfs_dl_close;
    g_vfs.xRandomness = vfs_randomness;
    g_vfs.xSleep = vfs_sleep;
    g_vfs.xCurrentTime = vfs_current_time;
    g_vfs.xGetLastError = vfs_get_last_error;
    g_vfs.xCurrentTimeInt64 = vfs_current_time_int64;
    g_pt_methods = sqlite3_io_methods{3,
                                      pt_close,
                                      pt_read,
                                      pt_write,
                                      pt_truncate,
                                      pt_sync,
                                      pt_file_size,
                                      fw_lock,
                                      fw_unlock,
                                      fw_check_reserved,
                                      pt_file_control,
                                      fw_sector_size,
                                      fw_device_characteristics,
                                      fw_shm_map,
                                      fw_shm_lock,
                                      fw_shm_barrier,
                                      fw_shm_unmap,
                                      pt_fetch,
                                      pt_unfetch};
  }
  pthread_mutex_unlock(&g_lock);
  return sqlite3_vfs_register(&g_vfs, make_default);
}

#ifndef SQLITE_CORE
// Entry point for `.load ./libmapdirect_vfs` (SQLite derives the name from
// the file name: lib + mapdirect_vfs -> sqlite3_mapdirectvfs_init).
MDVFS_EXPORT int sqlite3_mapdirectvfs_init(sqlite3*, char** err, const sqlite3_api_routines* api) {
  SQLITE_EXTENSION_INIT2(api);
  const int rc = mapdirect_vfs_register(0);
  if (rc != SQLITE_OK) {
    if (err) *err = sqlite3_mprintf("mapdirect: cannot register the VFS (no unix VFS?)");
    return rc;
  }
  // The VFS must outlive the connection that loaded it.
  return SQLITE_OK_LOAD_PERMANENTLY;
}
#endif
