// SPDX-License-Identifier: MIT
// Descriptors mapdirect opens on the caller's files: a description of its
// own (so write-back errors and O_APPEND/O_DIRECT flags are not shared with
// the caller), and a close that never releases the caller's POSIX record locks.
//
// Why: POSIX record locks (fcntl F_SETLK, lockf) belong to the process and
// the inode, and closing *any* descriptor of that inode releases all of them.
// So mapdirect never closes a descriptor of a file on which this process
// holds a POSIX lock (read from /proc/locks); such a close is deferred and
// retried by later mapdirect calls and by release_deferred_descriptors().
#ifndef MAPDIRECT_DETAIL_DESCRIPTOR_HPP
#define MAPDIRECT_DETAIL_DESCRIPTOR_HPP

#include "../config.hpp"
#include "syscall.hpp"

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// True when one /proc/locks line (NUL-terminated, changed in place) is a
/// POSIX lock, held or waited for, of process `self` on inode `ino`. Lines:
/// "1: POSIX  ADVISORY  WRITE 1234 08:02:56789 0 EOF", waiters "1: -> POSIX ...".
inline bool proc_locks_line_matches(char* line, long self, ino_t ino) noexcept {
  char* p = std::strchr(line, ':');
  if (!p) return false;
  ++p;
  while (*p == ' ') ++p;
  if (p[0] == '-' && p[1] == '>') p += 2;
  while (*p == ' ') ++p;
  if (std::strncmp(p, "POSIX", 5) != 0 || p[5] != ' ') return false;
  // skip "POSIX", the advisory/mandatory word and the access word
  char* q = p;
  for (int field = 0; field < 3 && q; ++field) {
    q = std::strchr(q, ' ');
    while (q && *q == ' ') ++q;
  }
  if (!q || !*q) return false;
  char* end = nullptr;
  const long pid = std::strtol(q, &end, 10);
  // device "MAJ:MIN:INODE" follows
  char* dev = end;
  while (dev && *dev == ' ') ++dev;
  char* space = dev ? std::strchr(dev, ' ') : nullptr;
  if (space) *space = '\0';  // search the device field only
  char* colon = dev ? std::strrchr(dev, ':') : nullptr;
  if (end == q || !colon) return false;
  char* ino_end = nullptr;
  const unsigned long long lock_ino = std::strtoull(colon + 1, &ino_end, 10);
  return ino_end != colon + 1 && pid == self && lock_ino == static_cast<unsigned long long>(ino);
}

/// True when /proc/locks lists a POSIX record lock (held or waited for) of
/// this process on inode `ino`. Conservative: any device with that inode
/// number counts (st_dev and /proc/locks' device differ on btrfs), and an
/// unreadable /proc/locks counts as "held". Async-signal-unsafe; not for handlers.
inline bool proc_locks_lists_posix_lock(ino_t ino) noexcept {
  const int fd = sys::open("/proc/locks", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  const long self = static_cast<long>(::getpid());
  char buf[8192];
  std::size_t have = 0;
  bool held = false, eof = false;
  while (!held && !(eof && have == 0)) {
    if (!eof) {
      const ssize_t n = retry_eintr([&] { return sys::read(fd, buf + have, sizeof buf - 1 - have); });
      if (n < 0) {
        held = true;
        break;
      }
      if (n == 0) eof = true;
      have += static_cast<std::size_t>(n);
    }
    buf[have] = '\0';
    char* line = buf;
    char* nl = nullptr;
    while (!held && ((nl = std::strchr(line, '\n')) != nullptr || (eof && *line))) {
      if (nl) *nl = '\0';
      held = proc_locks_line_matches(line, self, ino);
      if (!nl) {
        line += std::strlen(line);
        break;
      }
      line = nl + 1;
    }
    // keep the unfinished tail
    const std::size_t consumed = static_cast<std::size_t>(line - buf);
    std::memmove(buf, line, have - consumed);
    have -= consumed;
    if (have == sizeof buf - 1) have = 0;  // a line longer than the buffer: drop it
    if (eof && have > 0 && !std::strchr(buf, '\n')) have = 0;
  }
  sys::close_quietly(fd);
  return held;
}

/// True when this process may hold a POSIX record lock on the file behind
/// `fd` (`st`: its fstat). Fast path: an open-file-description lock query
/// conflicts with every POSIX lock on the inode, whoever holds it, so "no
/// lock at all" and "the first lock found is ours" are answered without
/// /proc/locks; anything else reads /proc/locks.
inline bool process_holds_posix_lock(int fd, const struct stat& st) noexcept {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (sys::fcntl(fd, F_OFD_GETLK, reinterpret_cast<long>(&fl)) == 0) {
    if (fl.l_type == F_UNLCK) return false;
    if (fl.l_pid == ::getpid()) return true;
  }
  return proc_locks_lists_posix_lock(st.st_ino);
}

/// The file offset mapdirect parks its own descriptions at. mapdirect never
/// reads or writes through the offset of a description it opened (mmap,
/// pread, pwrite), so the offset tags it: a descriptor number the
/// application closed and reused, even for the same file, has another
/// offset and is never taken for mapdirect's. Per process, below every file
/// system's s_maxbytes (ext4: 16 TiB).
inline off_t description_tag() noexcept {
  static const off_t tag = [] {
    static int anchor = 0;  // its address varies with ASLR
    const std::uint64_t k1 = UINT64_C(0x9e3779b97f4a7c15), k2 = UINT64_C(0xbf58476d1ce4e5b9);
    std::uint64_t x = static_cast<std::uint64_t>(::getpid()) * k1;
    x ^= static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&anchor));
    x ^= static_cast<std::uint64_t>(::time(nullptr)) * k2;
    x ^= x >> 29;
    return static_cast<off_t>((std::uint64_t{1} << 42) | (x & ((std::uint64_t{1} << 40) - 1)));
  }();
  return tag;
}

/// Descriptors whose close was deferred because this process held POSIX
/// locks on their file. Lock-free fixed table (a per-slot claim word), so it
/// is usable after fork() and from any thread; when full, a descriptor stays
/// open (a leak, never a dropped lock). Each slot remembers the file's
/// (st_dev, st_ino) and the description's file offset (description_tag()
/// for mapdirect's own descriptions): a slot whose descriptor was closed or
/// reused behind mapdirect's back is forgotten, never closed (it may be
/// someone else's now). Limit: a dup of the caller's description (the
/// fallback when a reopen is refused) carries the caller's offset, so an
/// application that closes descriptors it does not own and reopens the same
/// file at the same number and offset can still be mistaken for it.
/// fork(): the child inherits the table and the descriptors but none of the
/// parent's locks, so its next retry closes its copies (the parent's locks
/// are unaffected). The descriptors are close-on-exec.
class deferred_closes {
 public:
  static constexpr std::size_t capacity = 1024;

  /// Remembers fd (a descriptor of file dev/ino) for a later close. False
  /// when the table is full (the descriptor then simply stays open).
  static bool add(int fd, dev_t dev, ino_t ino) noexcept {
    for (auto& s : slots()) {
      int expected = empty;
      if (s.fd.compare_exchange_strong(expected, busy, std::memory_order_acquire)) {
        s.dev = dev;
        s.ino = ino;
        s.pos = sys::lseek(fd, 0, SEEK_CUR);
        count().fetch_add(1, std::memory_order_relaxed);
        s.fd.store(fd, std::memory_order_release);
        return true;
      }
    }
    return false;
  }

  /// Closes every deferred descriptor whose file is no longer locked by this
  /// process; returns how many remain deferred.
  static std::size_t retry() noexcept {
    if (count().load(std::memory_order_relaxed) == 0) return 0;
    std::size_t remaining = 0;
    for (auto& s : slots()) {
      const int fd = claim(s);
      if (fd < 0) continue;
      struct stat st {};
      if (sys::fstat(fd, &st) != 0 || st.st_dev != s.dev || st.st_ino != s.ino ||
          sys::lseek(fd, 0, SEEK_CUR) != s.pos) {
        forget(s);  // closed or reused behind our back: not ours to close
        continue;
      }
      if (process_holds_posix_lock(fd, st)) {
        s.fd.store(fd, std::memory_order_release);
        ++remaining;
        continue;
      }
      forget(s);
      sys::close_quietly(fd);
    }
    return remaining;
  }

  /// Takes back a deferred descriptor of file dev/ino that is open with
  /// `access` (O_RDONLY or O_RDWR; an O_RDWR one serves both) and without
  /// O_APPEND/O_DIRECT, so that a new open need not add another descriptor
  /// that could not be closed while the lock is held. -1 if none.
  static int take(dev_t dev, ino_t ino, int access) noexcept {
    if (count().load(std::memory_order_relaxed) == 0) return -1;
    for (auto& s : slots()) {
      const int fd = claim(s);
      if (fd < 0) continue;
      struct stat st {};
      const int fl = sys::fcntl(fd, F_GETFL);
      if (s.dev == dev && s.ino == ino && sys::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino &&
          s.pos == description_tag() && sys::lseek(fd, 0, SEEK_CUR) == s.pos && fl >= 0 &&
          (fl & (O_APPEND | O_DIRECT | O_PATH)) == 0 &&
          ((fl & O_ACCMODE) == O_RDWR || (fl & O_ACCMODE) == (access & O_ACCMODE))) {
        forget(s);
        return fd;
      }
      s.fd.store(fd, std::memory_order_release);
    }
    return -1;
  }

  /// How many descriptors are deferred now.
  static std::size_t pending() noexcept { return count().load(std::memory_order_relaxed); }

 private:
  static constexpr int empty = -1;
  static constexpr int busy = -2;
  struct slot {
    std::atomic<int> fd{empty};
    dev_t dev = 0;
    ino_t ino = 0;
    off_t pos = -1;
  };
  struct table {
    slot s[capacity];
    slot* begin() noexcept { return s; }
    slot* end() noexcept { return s + capacity; }
  };
  // Claims a filled slot (marks it busy); -1 when empty or busy.
  static int claim(slot& s) noexcept {
    int fd = s.fd.load(std::memory_order_acquire);
    while (fd >= 0 && !s.fd.compare_exchange_weak(fd, busy, std::memory_order_acquire)) {
    }
    return fd >= 0 ? fd : -1;
  }
  static void forget(slot& s) noexcept {
    count().fetch_sub(1, std::memory_order_relaxed);
    s.fd.store(empty, std::memory_order_release);
  }
  static table& slots() noexcept {
    static table t;
    return t;
  }
  static std::atomic<std::size_t>& count() noexcept {
    static std::atomic<std::size_t> c{0};
    return c;
  }
};

/// Closes a descriptor of a caller's file without releasing the process's
/// POSIX record locks on it: if this process may hold any on that inode, the
/// close is deferred (see deferred_closes). O_PATH descriptors are closed at
/// once (their close never releases locks). Returns 0, or -1 with errno from
/// close(). Also retries earlier deferred closes.
inline int close_keeping_locks(int fd) noexcept {
  if (fd < 0) return 0;
  struct stat st {};
  const int fl = sys::fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_PATH) == 0 && sys::fstat(fd, &st) == 0 && process_holds_posix_lock(fd, st)) {
    // Table full: the descriptor stays open; a leak, never a dropped lock.
    (void)deferred_closes::add(fd, st.st_dev, st.st_ino);
    return 0;
  }
  const int rc = sys::close(fd);
  const int saved = errno;
  (void)deferred_closes::retry();
  errno = saved;
  return rc;
}

/// close_keeping_locks() that keeps the caller's errno (cleanup paths).
inline void close_keeping_locks_quietly(int fd) noexcept {
  const int saved = errno;
  (void)close_keeping_locks(fd);
  errno = saved;
}

/// Keeps descriptors 0..2 occupied (by O_PATH descriptors of "/") for its
/// lifetime, so that a descriptor opened meanwhile is never 0, 1 or 2: a
/// file of the caller's on "stdout" would receive every printf, and moving
/// it away later would need a close that drops record locks. Closing the
/// O_PATH placeholders never touches any lock.
class stdio_placeholders {
 public:
  stdio_placeholders() noexcept {
    for (int i = 0; i < 3; ++i) {
      if (sys::fcntl(i, F_GETFD) >= 0 || errno != EBADF) continue;
      const int p = sys::open("/", O_PATH | O_CLOEXEC, 0);
      if (p < 0) break;
      if (p > 2) {
        sys::close_quietly(p);
        break;
      }
      held_[n_++] = p;
    }
  }
  ~stdio_placeholders() {
    for (int i = 0; i < n_; ++i) sys::close_quietly(held_[i]);
  }
  stdio_placeholders(const stdio_placeholders&) = delete;
  stdio_placeholders& operator=(const stdio_placeholders&) = delete;

 private:
  int held_[3] = {-1, -1, -1};
  int n_ = 0;
};

/// A descriptor mapdirect opened for itself.
struct own_descriptor {
  int fd = -1;
  /// True: a new open file description (its own write-back error cursor,
  /// none of the caller's O_APPEND/O_DIRECT/O_NONBLOCK). False: a dup that
  /// shares the caller's description (the reopen was refused: see `why`).
  bool own_description = false;
  /// errno of the refused reopen (0 when own_description; EBUSY also when a
  /// descriptor kept open for the process's record locks was reused).
  int reopen_error = 0;
};

/// Opens a new description of the file behind `fd` (through /proc/self/fd),
/// with `access` (O_RDWR or O_RDONLY), close-on-exec. O_NONBLOCK on the open
/// means a file leased by another process is not waited for (EWOULDBLOCK).
/// Never reopens a file whose description `fd` holds a lease (that would
/// break it), nor one for which `avoid_reopen` is true: those get a dup.
/// Falls back to a dup on any refusal; fails only if the dup fails.
inline own_descriptor reopen_description(int fd, int access, bool avoid_reopen = false) noexcept {
  own_descriptor out;
  struct stat want {};
  if (sys::fstat(fd, &want) != 0) {
    out.fd = -1;
    return out;
  }
  int why = 0;
  // While this process holds record locks on the file, every new descriptor
  // must stay open until they are released: reuse a deferred one first.
  if (deferred_closes::pending() != 0 && process_holds_posix_lock(fd, want)) {
    const int again = deferred_closes::take(want.st_dev, want.st_ino, access);
    if (again >= 0) {
      out.fd = again;  // only mapdirect's own (tagged) descriptions are taken back
      out.own_description = true;
      return out;
    }
  }
  // NOLINTNEXTLINE(bugprone-branch-clone): two reasons for EBUSY; only one costs an fcntl
  if (avoid_reopen) why = EBUSY;
  else if (const int lease = sys::fcntl(fd, F_GETLEASE); lease > 0 && lease != F_UNLCK) why = EBUSY;
  if (why == 0) {
    const sys::proc_fd_path path(fd);
    int nfd = -1;
    {
      const stdio_placeholders low;  // never hand out 0..2 (see there)
      nfd = sys::open(path.c_str(), access | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0);
    }
    if (nfd >= 0) {
      struct stat got {};
      if (sys::fstat(nfd, &got) == 0 && got.st_dev == want.st_dev && got.st_ino == want.st_ino) {
        const int fl = sys::fcntl(nfd, F_GETFL);
        if (fl >= 0) (void)sys::fcntl(nfd, F_SETFL, fl & ~O_NONBLOCK);
        (void)sys::lseek(nfd, description_tag(), SEEK_SET);  // see description_tag()
        out.fd = nfd;
        out.own_description = true;
        return out;
      }
      why = EXDEV;  // the /proc link named another file: never use it
      close_keeping_locks_quietly(nfd);
    } else {
      why = errno;
    }
  }
  out.fd = sys::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  out.reopen_error = why;
  return out;
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_DESCRIPTOR_HPP
