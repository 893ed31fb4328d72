// SPDX-License-Identifier: MIT
// mapdirect_rocksdb: a RocksDB FileSystem named "mapdirect" that writes the
// write-ahead log (NNNNNN.log) through direct_mapping and passes everything
// else (tables, MANIFEST, info log, every read) to FileSystem::Default().
//
// Load it into an unmodified program with LD_PRELOAD (its static initializer
// registers the factories in ObjectLibrary::Default()) and select it with
// db_bench --fs_uri=mapdirect, or link it and call
// FileSystem::CreateFromString(ConfigOptions(), "mapdirect", &fs).
//
// Registered names:
//   mapdirect            the WAL on direct_mapping; Sync/Fsync persist.
//   mapdirect-nopersist  TEST ONLY negative control: Sync/Fsync return OK
//                        without persisting (acknowledged writes can be lost
//                        on power loss). Never use it for data.
//   mapdirect-group      as mapdirect, with page-granular persists through a
//                        group_committer (io_uring fdatasync; built when
//                        mapdirect::uring is available). RocksDB already
//                        groups concurrent writers into one WAL sync, so at
//                        most one persist per WAL is in flight: expect a tie.
// (RocksDB's CreateFromString reads "name=value" as options, so a URI such as
// "mapdirect?nopersist=1" would not reach the factory; hence a second name.)
//
// WAL files: the file is created (exclusively; a pre-existing file passes
// through to the default file system, logged), preallocated in windows
// (1 MiB, doubling up to 16 MiB per step) and mapped with
// map_options::reserve so the mapping grows in place; Append copies into the
// mapping (guarded write), Sync/Fsync persist [last synced, logical end),
// Close truncates the file to its logical size. After a power cut the file
// can end in a zero-filled preallocated tail: RocksDB's log reader treats a
// zero header (type kZeroType, length 0) as padding and stops cleanly there
// (see README.md next to this file for the recovery mode).
#include <mapdirect/mapping.hpp>
#if MAPDIRECT_ROCKSDB_GROUP
#include <mapdirect/async.hpp>
#endif

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/io_status.h>
#include <rocksdb/utilities/object_registry.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using ROCKSDB_NAMESPACE::FileOptions;
using ROCKSDB_NAMESPACE::FileSystem;
using ROCKSDB_NAMESPACE::FileSystemWrapper;
using ROCKSDB_NAMESPACE::FSWritableFile;
using ROCKSDB_NAMESPACE::IODebugContext;
using ROCKSDB_NAMESPACE::IOOptions;
using ROCKSDB_NAMESPACE::IOStatus;
using ROCKSDB_NAMESPACE::Logger;
using ROCKSDB_NAMESPACE::Slice;

constexpr std::size_t kFirstWindow = std::size_t{1} << 20;  // first preallocation
constexpr std::size_t kMaxStep = std::size_t{16} << 20;     // largest single extension
constexpr std::size_t kReserve = std::size_t{1} << 30;      // address space to grow in place

// Maps a mapdirect error to an IOStatus faithfully: ENOSPC/EDQUOT as NoSpace,
// durability_lost (an earlier flush of this file failed: dirty pages may be
// gone) as an unrecoverable IOError with data loss, everything else IOError.
IOStatus to_status(const std::error_code& ec, const std::string& what, const std::string& file) {
  const std::string msg = what + " " + file + ": " + ec.message() + " (" + mapdirect::last_error_detail() + ")";
  if (ec == std::errc::no_space_on_device || ec == std::errc::file_too_large ||
      (ec.category() == std::generic_category() && ec.value() == EDQUOT) ||
      (ec.category() == std::system_category() && ec.value() == EDQUOT))
    return IOStatus::NoSpace(msg);
  if (ec == mapdirect::errc::durability_lost) {
    IOStatus s = IOStatus::IOError(msg);
    s.SetDataLoss(true);  // RocksDB: not retryable, the WAL must not be trusted
    return s;
  }
  IOStatus s = IOStatus::IOError(msg);
  if (ec == std::errc::io_error) s.SetDataLoss(true);
  return s;
}

IOStatus errno_status(int e, const std::string& what, const std::string& file) {
  return to_status(std::error_code(e, std::generic_category()), what, file);
}

bool is_wal_name(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.size() <= 4 || base.compare(base.size() - 4, 4, ".log") != 0) return false;
  for (std::size_t i = 0; i + 4 < base.size(); ++i)
    if (base[i] < '0' || base[i] > '9') return false;
  return true;
}

std::string dir_of(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// The DB's info log (LOG), captured when RocksDB creates it through this file
// system, so that WAL decisions appear where RocksDB's own messages are.
class info_logs {
 public:
  void remember(const std::string& log_path, const std::shared_ptr<Logger>& logger) {
    std::lock_guard<std::mutex> hold(lock_);
    last_dir_ = dir_of(log_path);
    last_ = logger;
  }
  std::shared_ptr<Logger> get() {
    std::lock_guard<std::mutex> hold(lock_);
    return last_.lock();
  }

 private:
  std::mutex lock_;
  std::string last_dir_;
  std::weak_ptr<Logger> last_;
};

// One WAL file on a growable direct_mapping.
class mapped_wal final : public FSWritableFile {
 public:
  mapped_wal(std::string name, mapdirect::direct_mapping m, bool persist, const FileOptions& fo)
      : FSWritableFile(fo), name_(std::move(name)), map_(std::move(m)), persist_(persist) {}
  ~mapped_wal() override {
    if (map_) (void)close_now();
  }

  IOStatus Append(const Slice& data, const IOOptions&, IODebugContext*) override {
    if (!map_) return IOStatus::IOError("append to closed WAL " + name_);
    const std::size_t n = data.size();
    if (n > map_.size() - end_) {
      if (IOStatus s = make_room(n); !s.ok()) return s;
    }
    if (auto r = map_.write(end_, data.data(), n); !r)
      return to_status(r.error(), "mapdirect: storing into the mapped WAL", name_);
    end_ += n;
    return IOStatus::OK();
  }

  IOStatus Truncate(uint64_t size, const IOOptions&, IODebugContext*) override {
    if (size > end_) return IOStatus::InvalidArgument("mapdirect: truncate beyond the logical end of " + name_);
    end_ = static_cast<std::size_t>(size);
    if (synced_ > end_) synced_ = end_;
    return IOStatus::OK();
  }

  IOStatus Flush(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }  // already in the mapping

  IOStatus Sync(const IOOptions&, IODebugContext*) override { return sync_now(); }
  IOStatus Fsync(const IOOptions&, IODebugContext*) override { return sync_now(); }
  IOStatus RangeSync(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  // Our windows are preallocated by grow(); RocksDB's own preallocation hint is not needed.
  IOStatus Allocate(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  void PrepareWrite(size_t, size_t, const IOOptions&, IODebugContext*) override {}

  uint64_t GetFileSize(const IOOptions&, IODebugContext*) override { return end_; }

  IOStatus Close(const IOOptions&, IODebugContext*) override {
    if (!map_) return IOStatus::OK();
    return close_now();
  }

 private:
  IOStatus make_room(std::size_t n) {
    const std::size_t have = map_.size();
    std::size_t step = have < kMaxStep ? have : kMaxStep;
    if (step < kFirstWindow) step = kFirstWindow;
    std::size_t want = end_ + n;
    std::size_t next = have + step;
    if (next < want) next = (want + kFirstWindow - 1) / kFirstWindow * kFirstWindow;
    mapdirect::grow_options g;
    g.preallocate = true;       // blocks allocated now: a full disk is ENOSPC here, never SIGBUS on a store
    g.allow_relocation = true;  // no pointers into the mapping are held outside this object
    auto r = map_.grow(next, g);
    if (!r) return to_status(r.error(), "mapdirect: growing the mapped WAL", name_);
    return IOStatus::OK();
  }

  IOStatus sync_now() {
    if (!map_) return IOStatus::IOError("sync of closed WAL " + name_);
    if (!persist_) {  // negative control (mapdirect-nopersist): acknowledges without persisting
      synced_ = end_;
      return IOStatus::OK();
    }
    if (end_ == synced_) {
      // Nothing new, but a durability loss must still be reported.
      if (map_.durability_failed())
        return to_status(make_error_code(mapdirect::errc::durability_lost), "mapdirect: sync", name_);
      return IOStatus::OK();
    }
    if (auto r = map_.persist(synced_, end_ - synced_); !r)
      return to_status(r.error(), "mapdirect: persisting the WAL", name_);
    synced_ = end_;
    return IOStatus::OK();
  }

  IOStatus close_now() {
    // Cut the preallocated tail (as PosixWritableFile::Close does for its
    // fallocated space). Unsynced bytes are not made durable here, as with
    // the POSIX file: RocksDB syncs a WAL before it depends on it.
    IOStatus s;
    if (::ftruncate(map_.native_handle(), static_cast<off_t>(end_)) != 0)
      s = errno_status(errno, "mapdirect: truncating the WAL to its logical size", name_);
    if (auto r = map_.close(); !r && s.ok()) s = to_status(r.error(), "mapdirect: unmapping the WAL", name_);
    return s;
  }

  std::string name_;
  mapdirect::direct_mapping map_;
  bool persist_;
  std::size_t end_ = 0;     // logical size: bytes appended
  std::size_t synced_ = 0;  // bytes made durable by Sync
};

class mapdirect_fs final : public FileSystemWrapper {
 public:
  mapdirect_fs(bool persist, const char* name, bool group = false)
      : FileSystemWrapper(FileSystem::Default()), persist_(persist), name_(name) {
#if MAPDIRECT_ROCKSDB_GROUP
    if (group) {
      auto gc = mapdirect::group_committer::create({});
      if (gc) {
        gc_.reset(new mapdirect::group_committer(std::move(gc).value()));
        group_note_ = std::string("; group commit: ") + gc_->backend_detail();
      } else {
        group_note_ = "; group commit unavailable (" + gc.error().message() + "): msync";
      }
    }
#else
    if (group) group_note_ = "; group commit not built (no mapdirect::uring): msync";
#endif
  }
  static const char* kClassName() { return "mapdirect"; }
  const char* Name() const override { return name_; }

  IOStatus NewWritableFile(const std::string& f, const FileOptions& fo, std::unique_ptr<FSWritableFile>* r,
                           IODebugContext* dbg) override {
    if (!is_wal_name(f) || fo.use_direct_writes) return target()->NewWritableFile(f, fo, r, dbg);
    mapdirect::open_options o;
    o.create = true;
    o.exclusive = true;  // a new WAL number; an existing file passes through (below)
    o.size = kFirstWindow;
    o.preallocate = true;
    o.map.reserve = kReserve;
    auto m = mapdirect::direct_mapping::open(f, o);
    if (!m && m.error() == std::errc::file_exists) {
      log(f, "mapdirect: WAL %s exists already (reused or recycled): passed to the default file system", f.c_str());
      return target()->NewWritableFile(f, fo, r, dbg);
    }
    if (!m) return to_status(m.error(), "mapdirect: creating the WAL", f);
    // The new file's size must be durable before any record is acknowledged;
    // open() already made its name durable (parent directory fsync).
    if (::fdatasync(m.value().native_handle()) != 0) {
      const int e = errno;
      (void)::unlink(f.c_str());
      return errno_status(e, "mapdirect: fdatasync of the new WAL", f);
    }
#if MAPDIRECT_ROCKSDB_GROUP
    if (gc_) gc_->attach(m.value());  // the committer outlives every WAL (it is a member of this file system)
#endif
    const auto& map = m.value();
    std::string why = map.describe();
    for (char& c : why)
      if (c == '\n') c = ';';
    log(f,
        "mapdirect: WAL %s mapped: mode=%s granularity=%s%s%s; window %zu bytes, grows in place (reserve %zu); ladder: %s",
        f.c_str(), mapdirect::to_string(map.mode()), mapdirect::to_string(map.store_granularity()),
        persist_ ? "" : " NOPERSIST (test-only negative control: Sync does not persist)", group_note_.c_str(),
        map.size(), kReserve, why.c_str());
    r->reset(new mapped_wal(f, std::move(m).value(), persist_, fo));
    return IOStatus::OK();
  }

  IOStatus NewLogger(const std::string& fname, const IOOptions& io, std::shared_ptr<Logger>* result,
                     IODebugContext* dbg) override {
    IOStatus s = target()->NewLogger(fname, io, result, dbg);
    if (s.ok() && *result) logs_.remember(fname, *result);
    return s;
  }

 private:
  __attribute__((format(printf, 3, 4))) void log(const std::string&, const char* fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (auto l = logs_.get()) {
      ROCKSDB_NAMESPACE::Log(ROCKSDB_NAMESPACE::InfoLogLevel::INFO_LEVEL, l.get(), "%s", line);
    } else if (const char* v = std::getenv("MAPDIRECT_ROCKSDB_VERBOSE"); v && *v == '1') {
      std::fprintf(stderr, "%s\n", line);
    }
  }

  bool persist_;
  const char* name_;
  std::string group_note_;
#if MAPDIRECT_ROCKSDB_GROUP
  std::unique_ptr<mapdirect::group_committer> gc_;  // declared last: destroyed first, after every WAL closed
#endif
  info_logs logs_;
};

template <bool Persist>
FileSystem* make_fs(const std::string&, std::unique_ptr<FileSystem>* guard, std::string*) {
  guard->reset(new mapdirect_fs(Persist, Persist ? "mapdirect" : "mapdirect-nopersist"));
  return guard->get();
}

FileSystem* make_group_fs(const std::string&, std::unique_ptr<FileSystem>* guard, std::string*) {
  guard->reset(new mapdirect_fs(true, "mapdirect-group", true));
  return guard->get();
}

// Registers both names at load time (LD_PRELOAD or linking).
const bool registered = [] {
  auto lib = ROCKSDB_NAMESPACE::ObjectLibrary::Default();
  lib->AddFactory<FileSystem>("mapdirect", make_fs<true>);
  lib->AddFactory<FileSystem>("mapdirect-nopersist", make_fs<false>);
  lib->AddFactory<FileSystem>("mapdirect-group", make_group_fs);
  return true;
}();

}  // namespace

/// For programs that link the plugin: forces the registration object in.
extern "C" __attribute__((visibility("default"))) int mapdirect_rocksdb_registered() { return registered ? 1 : 0; }
