// SPDX-License-Identifier: MIT
// direct_mapping: a shared file mapping with the strongest durability the
// kernel and file system give (MAP_DIRECT -> MAP_SYNC -> MAP_SHARED + msync),
// and a precise report of which one it got.
#ifndef MAPDIRECT_MAPPING_HPP
#define MAPDIRECT_MAPPING_HPP

#include "config.hpp"
#include "detail/nd.hpp"
#include "detail/open_file.hpp"
#include "detail/syscall.hpp"
#include "error.hpp"
#include "guard.hpp"
#include "persist.hpp"
#include "seal.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include <linux/stat.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#if MAPDIRECT_HAS_MAP_SYNC && !defined(MAP_SYNC)
#define MAP_SYNC 0x80000
#endif
#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

MAPDIRECT_BEGIN_NAMESPACE

/// How stores to a mapping become durable; strongest first.
enum class map_mode {
  direct,  ///< kernel MAP_DIRECT: block map pinned, CPU flush makes stores durable
  sync,    ///< MAP_SHARED_VALIDATE|MAP_SYNC: synchronous faults, CPU flush makes stores durable
  shared,  ///< MAP_SHARED: page cache (or DAX without sync faults); msync/fdatasync makes stores durable
};

/// The smallest unit a persist must cover to be correct (PMDK's meaning).
enum class granularity {
  byte,        ///< stores are durable once visible (eADR): persist is a fence
  cache_line,  ///< stores are durable after a cache-line flush and a fence
  page,        ///< stores are durable after msync/fdatasync of their pages
};

/// Name of a mode ("sync").
constexpr const char* to_string(map_mode m) noexcept {
  switch (m) {
    case map_mode::direct: return "direct";
    case map_mode::sync: return "sync";
    case map_mode::shared: return "shared";
  }
  return "?";
}

/// Name of a granularity ("cache_line").
constexpr const char* to_string(granularity g) noexcept {
  switch (g) {
    case granularity::byte: return "byte";
    case granularity::cache_line: return "cache_line";
    case granularity::page: return "page";
  }
  return "?";
}

/// The store granularity a mapping of `mode` has over nd regions whose
/// combined persistence domain is `domain` (PMDK's rule).
constexpr granularity granularity_for(map_mode mode, persistence_domain domain) noexcept {
  return mode == map_mode::shared                  ? granularity::page
         : domain == persistence_domain::cpu_cache ? granularity::byte
                                                   : granularity::cache_line;
}

/// Options for direct_mapping::map.
struct map_options {
  /// The strongest mode to try. map_mode::direct is attempted only when the
  /// build defines MAPDIRECT_MAP_DIRECT_FLAG; otherwise it is skipped (and reported).
  map_mode strongest = map_mode::direct;
  /// The weakest mode acceptable; below it map() fails with errc::mode_unavailable.
  map_mode weakest = map_mode::shared;
  /// The coarsest store granularity the caller can handle (errc::granularity_unavailable if coarser).
  granularity coarsest = granularity::page;
  /// Prefault the whole mapping (MAP_POPULATE).
  bool populate = false;
  /// copy_persist/fill_persist use non-temporal stores from this many bytes up.
  std::size_t movnt_threshold = MAPDIRECT_MOVNT_THRESHOLD;
  /// Test/diagnostic override of the flush instruction (default: CPUID/HWCAP).
  std::optional<flush_instruction> flush = std::nullopt;
  /// Test/diagnostic override of the nd persistence domain (default: sysfs).
  std::optional<persistence_domain> domain = std::nullopt;
  /// Seal the mapped range first (iomap_seal::acquire), so that faults never
  /// allocate: with MAP_SYNC, "synchronous faults and no allocating faults"
  /// in one call. The mapping owns the seal until close().
  std::optional<seal_options> seal = std::nullopt;
};

/// One rung of the ladder as map() tried it.
struct map_attempt {
  map_mode mode = map_mode::shared;
  bool attempted = false;  ///< false: skipped (see cause)
  int error = 0;           ///< errno of the attempt, 0 on success
  const char* cause = "";  ///< likely cause, in words
};

/// What map() tried, strongest first.
struct map_ladder {
  map_attempt steps[3];
  std::size_t count = 0;
};

/// Something that can make a page-granular range durable on map()'s behalf
/// (the group committer of mapdirect/async.hpp implements it).
class page_persister {
 public:
  /// Makes [file_offset, file_offset+length) of fd durable; `addr` is its mapped address.
  virtual result<void> persist_pages(int fd, std::uint64_t file_offset, void* addr, std::size_t length) noexcept = 0;

 protected:
  ~page_persister() = default;
};

/// Options for direct_mapping::open.
///
/// Rules open() follows (so that a privileged program can open files in
/// directories other users write to):
///  - A new file is created unnamed (O_TMPFILE in the parent directory),
///    sized, sealed if map.seal asks, and mapped; only then is it linked
///    into place (linkat, which never replaces an existing name) and the
///    parent directory fsynced, before open() returns. A failure before the
///    link leaves nothing behind. Where O_TMPFILE is unsupported (EOPNOTSUPP,
///    EISDIR, EINVAL) the file is created by name with O_CREAT|O_EXCL, and on
///    failure it is removed only if provably still this call's own file (same
///    inode, one link, no other opener: a write lease is granted); otherwise
///    it is left in place. last_error_detail() says which path was taken.
///  - An existing file is looked at first through an O_PATH descriptor:
///    anything but a regular file (directory, FIFO, device, socket) is
///    refused without being opened; another user's file in a sticky
///    directory others can write to (/tmp, /var/tmp, /dev/shm; the rule of
///    the kernel's fs.protected_regular, applied whatever the sysctl says) is
///    refused with EACCES unless allow_foreign_owner. With create, the real
///    open of an existing file passes O_CREAT, so the kernel's own
///    protections apply too; without create it reopens the checked inode.
///  - no_follow refuses a symbolic link as the last component (ELOOP).
///    Symbolic links in the directory part are always followed.
///  - An extension (grow) is never rolled back: shrinking could cut off data
///    another process already mapped at the new size. After a failed
///    extension or mapping the file may be larger than before.
struct open_options {
  /// Bytes to map from offset 0; 0 maps the whole existing file (and then a
  /// missing file is not created: ENOENT).
  std::uint64_t size = 0;
  /// Create the file if it does not exist (it is then sized to `size`).
  bool create = false;
  /// With create: fail with EEXIST if the file exists.
  bool exclusive = false;
  /// Extend an existing file shorter than `size` (never shrinks). Off by
  /// default so that a wrong size cannot change a file on disk.
  bool grow = false;
  /// Allocate the blocks of any extension (fallocate), so stores never need
  /// an allocation; else the extension is sparse.
  bool preallocate = true;
  /// Refuse a symbolic link as the last path component (O_NOFOLLOW; ELOOP).
  bool no_follow = false;
  /// Accept an existing file owned by another user in a sticky directory
  /// that others can write to (refused with EACCES by default).
  bool allow_foreign_owner = false;
  /// Permission bits of a created file (the umask still applies). 0600:
  /// engine data is private, and any process that can open the file can
  /// also break a lease-based seal.
  mode_t permissions = 0600;
  /// If not null: set to true when this call created the file, false when it
  /// opened an existing one (also on failure).
  bool* created = nullptr;
  /// How to map it.
  map_options map = {};
};

// Checks a range against the mapping (used inside direct_mapping members).
#define MAPDIRECT_TRY_RANGE(off, len)                                                             \
  do {                                                                                            \
    if (!data_) return detail::fail(errc::not_mapped, "no mapping");                             \
    if ((off) > size_ || (len) > size_ - (off))                                                   \
      return detail::fail(errc::out_of_range, "range [%zu, +%zu) outside mapping of %zu bytes", \
                          static_cast<std::size_t>(off), static_cast<std::size_t>(len), size_);   \
  } while (0)

/// A move-only RAII shared mapping of a file range with a known durability
/// guarantee. The destructor unmaps and never throws; close() reports errors.
class direct_mapping {
 public:
  /// An empty object (no mapping).
  direct_mapping() noexcept = default;
  direct_mapping(direct_mapping&& other) noexcept { swap(other); }
  direct_mapping& operator=(direct_mapping&& other) noexcept {
    if (this != &other) {
      direct_mapping tmp(std::move(other));
      swap(tmp);
    }
    return *this;
  }
  direct_mapping(const direct_mapping&) = delete;
  direct_mapping& operator=(const direct_mapping&) = delete;
  ~direct_mapping() { (void)close(); }

  /// Maps [offset, offset+length) of fd (opened O_RDWR) with the strongest
  /// mode options allow. length 0 maps to the end of the file. The fd is
  /// duplicated: the caller may close its own.
  /// Errors: errc::misaligned_offset, errc::beyond_eof (range past EOF),
  /// errc::invalid_argument, errc::mode_unavailable (every step named in
  /// last_error_detail()), errc::granularity_unavailable, errc::sealed (ETXTBSY),
  /// errno codes (EACCES: fd not writable, ENOMEM, EBADF, ...); with
  /// options.seal, iomap_seal::acquire's errors (ENOSPC, errc::block_map_unverifiable, ...).
  static result<direct_mapping> map(int fd, std::uint64_t offset, std::size_t length, map_options options = {}) noexcept;

  /// Opens (or creates, atomically and durably) `path` and maps it; see
  /// open_options for the rules. Never releases the process's record locks.
  /// Errors: as map(), plus EEXIST (exclusive), ENOENT, ELOOP (no_follow),
  /// EACCES (another user's file in a shared sticky directory, or the
  /// kernel's protections), errc::invalid_argument (not a regular file,
  /// device DAX), EAGAIN (the name was replaced while opening), and
  /// open/linkat/fsync/fallocate/ftruncate errno codes (ENOSPC, EIO, ...).
  /// Thread-safe (calls may run concurrently, also on one path); descriptors
  /// it opens are close-on-exec and never 0..2.
  static result<direct_mapping> open(const char* path, open_options options = {}) noexcept;
  /// As open(const char*, open_options).
  static result<direct_mapping> open(const std::string& path, open_options options = {}) noexcept {
    return open(path.c_str(), std::move(options));
  }

  /// First byte of the mapping (nullptr when empty).
  std::byte* data() const noexcept { return data_; }
  /// Mapped length in bytes.
  std::size_t size() const noexcept { return size_; }
  /// True when this object holds a mapping.
  bool is_mapped() const noexcept { return data_ != nullptr; }
  explicit operator bool() const noexcept { return is_mapped(); }
  /// File offset of data()[0].
  std::uint64_t file_offset() const noexcept { return offset_; }
  /// The mapping's own (duplicated) file descriptor, or -1.
  int native_handle() const noexcept { return fd_; }
  /// The durability mode obtained.
  map_mode mode() const noexcept { return mode_; }
  /// The store granularity obtained.
  granularity store_granularity() const noexcept { return granularity_; }
  /// The nd persistence domain behind a sync/direct mapping (unknown for shared).
  persistence_domain domain() const noexcept { return domain_; }
  /// The flush instruction persist() uses.
  flush_instruction flush_with() const noexcept { return flush_; }
  /// Every rung map() tried, with errno and likely cause.
  const map_ladder& ladder() const noexcept { return ladder_; }
  /// The seal taken because options.seal was set (empty otherwise).
  const iomap_seal& seal() const noexcept { return seal_; }
  /// One line per rung, e.g. "sync: EOPNOTSUPP (not on a DAX file system (statx DAX=0))".
  std::string describe() const { return describe_ladder(ladder_); }

  /// Makes [offset, offset+length) durable: a fence (byte), cache-line
  /// flushes and a fence (cache_line), or msync/the attached persister (page).
  /// Errors: errc::out_of_range, errc::not_mapped, errc::durability_lost
  /// (an earlier msync failed), msync errno codes (EIO, ENOSPC, ENOMEM).
  result<void> persist(std::size_t offset, std::size_t length) noexcept {
    MAPDIRECT_TRY_RANGE(offset, length);
    switch (granularity_) {
      case granularity::byte: mapdirect::drain(flush_); return outcome::success();
      case granularity::cache_line:
        flush_lines(data_ + offset, length, flush_);
        mapdirect::drain(flush_);
        return outcome::success();
      case granularity::page: break;
    }
    return persist_pages(offset, length);
  }

  /// Starts writing back [offset, offset+length) (clamped to the mapping);
  /// durable only after the next drain(). Batch many flushes, then drain once.
  void flush(std::size_t offset, std::size_t length) noexcept {
    if (!data_ || offset >= size_) return;
    if (length > size_ - offset) length = size_ - offset;
    if (length == 0) return;
    switch (granularity_) {
      case granularity::byte: return;
      case granularity::cache_line: flush_lines(data_ + offset, length, flush_); return;
      case granularity::page:
        pending_lo_ = pending_hi_ > pending_lo_ ? (offset < pending_lo_ ? offset : pending_lo_) : offset;
        pending_hi_ = offset + length > pending_hi_ ? offset + length : pending_hi_;
        return;
    }
  }

  /// Makes every flush() since the last drain durable.
  /// Errors: errc::not_mapped, errc::durability_lost, msync errno codes.
  result<void> drain() noexcept {
    if (!data_) return detail::fail(errc::not_mapped, "drain: no mapping");
    if (granularity_ != granularity::page) {
      mapdirect::drain(flush_);
      return outcome::success();
    }
    if (pending_hi_ <= pending_lo_) return durability_failed_ ? durability_lost() : outcome::success();
    const std::size_t lo = pending_lo_, hi = pending_hi_;
    pending_lo_ = pending_hi_ = 0;
    return persist_pages(lo, hi - lo);
  }

  /// Copies n bytes from src to offset and makes them durable.
  /// Errors: as persist().
  result<void> copy_persist(std::size_t offset, const void* src, std::size_t n) noexcept {
    MAPDIRECT_TRY_RANGE(offset, n);
    if (n == 0) return outcome::success();
    switch (granularity_) {
      case granularity::byte:
        std::memcpy(data_ + offset, src, n);
        mapdirect::drain(flush_);
        return outcome::success();
      case granularity::cache_line:
        memcpy_flush(data_ + offset, src, n, flush_, movnt_threshold_);
        mapdirect::drain(flush_);
        return outcome::success();
      case granularity::page: break;
    }
    std::memcpy(data_ + offset, src, n);
    return persist_pages(offset, n);
  }

  /// Fills n bytes at offset with `byte` and makes them durable.
  /// Errors: as persist().
  result<void> fill_persist(std::size_t offset, int byte, std::size_t n) noexcept {
    MAPDIRECT_TRY_RANGE(offset, n);
    if (n == 0) return outcome::success();
    switch (granularity_) {
      case granularity::byte:
        std::memset(data_ + offset, byte, n);
        mapdirect::drain(flush_);
        return outcome::success();
      case granularity::cache_line:
        memset_flush(data_ + offset, byte, n, flush_, movnt_threshold_);
        mapdirect::drain(flush_);
        return outcome::success();
      case granularity::page: break;
    }
    std::memset(data_ + offset, byte, n);
    return persist_pages(offset, n);
  }

  /// Routes page-granular persists through `p` (for example a group
  /// committer); nullptr restores msync. `p` must outlive the attachment.
  void attach_persister(page_persister* p) noexcept { persister_ = p; }
  /// The attached page persister, or nullptr.
  page_persister* persister() const noexcept { return persister_; }

  /// After a failed msync (EIO, ENOSPC, EDQUOT) every later persist fails with
  /// errc::durability_lost, because the kernel may have dropped the dirty
  /// pages and would not report it twice. Call this once the data written
  /// since the last successful persist has been rewritten.
  void clear_durability_error() noexcept { durability_failed_ = false; }
  /// True after a failed msync/persister flush, until clear_durability_error().
  bool durability_failed() const noexcept { return durability_failed_; }

  // --- guarded access (see guard.hpp)
  /// Copies n bytes at offset into dst; a SIGBUS becomes an error whose
  /// offset() is relative to data(). On error dst's contents are unspecified.
  /// Errors: errc::beyond_eof (truncated: offset() is where the file now ends),
  /// errc::media_error (offset()/length(): the poisoned range), errc::io_error,
  /// errc::out_of_range, errc::not_mapped, sigaction errno codes.
  access_result<void> read(std::size_t offset, void* dst, std::size_t n) const noexcept {
    MAPDIRECT_TRY_RANGE(offset, n);
    const guard_range target{data_, size_, fd_, offset_};
    return detail::copy_guarded(dst, data_ + offset, n, nullptr, &target, "direct_mapping::read");
  }
  /// read() into a whole byte range (std::span, vector, string, array...). Errors: as read().
  template <class Buffer, class = std::enable_if_t<detail::is_byte_range<std::remove_reference_t<Buffer>>::value>>
  access_result<void> read(std::size_t offset, Buffer&& buffer) const noexcept {
    return read(offset, static_cast<void*>(buffer.data()), detail::byte_size(buffer));
  }
  /// Stores n bytes from src at offset (not yet durable: persist() after);
  /// a SIGBUS (e.g. no block left on the file system) becomes an error.
  /// Errors: as read() (a full file system gives errc::io_error).
  access_result<void> write(std::size_t offset, const void* src, std::size_t n) noexcept {
    MAPDIRECT_TRY_RANGE(offset, n);
    const guard_range target{data_, size_, fd_, offset_};
    return detail::copy_guarded(data_ + offset, src, n, &target, nullptr, "direct_mapping::write");
  }
  /// write() of a whole byte range. Errors: as write().
  template <class Buffer, class = std::enable_if_t<detail::is_byte_range<std::remove_reference_t<Buffer>>::value>>
  access_result<void> write(std::size_t offset, const Buffer& buffer) noexcept {
    return write(offset, static_cast<const void*>(buffer.data()), detail::byte_size(buffer));
  }
  /// Rewrites a poisoned range [offset, offset+n) (page-aligned) with `src`
  /// through pwrite, which clears poison on DAX (recovery write, Linux 5.19+),
  /// makes it durable (fdatasync) and checks that the mapping reads it back.
  /// Errors: errc::misaligned_offset, errc::out_of_range, errc::not_mapped,
  /// errc::invalid_argument, errc::media_error (the kernel could not clear the
  /// poison, or the range still faults), errc::io_error, pwrite/fdatasync errno codes.
  access_result<void> repair(std::size_t offset, const void* src, std::size_t n) noexcept {
    MAPDIRECT_TRY_RANGE(offset, n);
    return detail::repair_range(guard_range{data_, size_, fd_, offset_}, offset, src, n, detail::sys::page_size());
  }
  /// repair() from a whole byte range. Errors: as repair().
  template <class Buffer, class = std::enable_if_t<detail::is_byte_range<std::remove_reference_t<Buffer>>::value>>
  access_result<void> repair(std::size_t offset, const Buffer& buffer) noexcept {
    return repair(offset, static_cast<const void*>(buffer.data()), detail::byte_size(buffer));
  }

  /// Unmaps now (and closes the mapping's fd). Closing an empty object
  /// succeeds and does nothing. Errors: munmap/close errno codes; the object
  /// is empty afterwards either way.
  result<void> close() noexcept {
    if (!map_base_ && fd_ < 0) return outcome::success();
    std::error_code ec;
    if (map_base_ && detail::sys::munmap(map_base_, map_length_) != 0) ec = detail::fail_errno(errno, "munmap");
    if (fd_ >= 0 && detail::sys::close(fd_) != 0 && !ec) ec = detail::fail_errno(errno, "close");
    if (auto released = seal_.release(); !released && !ec) ec = released.error();
    reset_fields();
    if (ec) return ec;
    return outcome::success();
  }

  /// Exchanges two mappings.
  void swap(direct_mapping& o) noexcept {
    using std::swap;
    swap(data_, o.data_);
    swap(size_, o.size_);
    swap(map_base_, o.map_base_);
    swap(map_length_, o.map_length_);
    swap(offset_, o.offset_);
    swap(fd_, o.fd_);
    swap(mode_, o.mode_);
    swap(granularity_, o.granularity_);
    swap(domain_, o.domain_);
    swap(flush_, o.flush_);
    swap(movnt_threshold_, o.movnt_threshold_);
    swap(ladder_, o.ladder_);
    swap(pending_lo_, o.pending_lo_);
    swap(pending_hi_, o.pending_hi_);
    swap(persister_, o.persister_);
    durability_failed_ = o.durability_failed_.exchange(durability_failed_);
    swap(seal_, o.seal_);
  }
  friend void swap(direct_mapping& a, direct_mapping& b) noexcept { a.swap(b); }

  /// Which mode map() would obtain for fd (opened O_RDWR), found by mapping
  /// one page at offset 0 (the file may be empty; nothing is touched) and
  /// unmapping it. `ladder` receives every rung tried.
  /// Errors: as map()'s ladder (errc::mode_unavailable, errno codes).
  static result<map_mode> try_modes(int fd, const map_options& options, map_ladder& ladder) noexcept {
    detail::clear_detail();
    void* mapped = nullptr;
    map_mode mode = map_mode::shared;
    const std::size_t page = detail::sys::page_size();
    if (auto ec = climb(fd, 0, page, options, nullptr, ladder, mapped, mode)) return ec;
    detail::sys::munmap(mapped, page);
    return mode;
  }

  /// Renders a ladder as text, one rung per line.
  static std::string describe_ladder(const map_ladder& ladder) {
    std::string out;
    for (std::size_t i = 0; i < ladder.count; ++i) {
      const map_attempt& a = ladder.steps[i];
      out += to_string(a.mode);
      out += ": ";
      if (!a.attempted) out += "skipped";
      else if (a.error == 0) out += "ok";
      else out += detail::errno_name(a.error);
      if (a.cause && *a.cause) {
        out += " (";
        out += a.cause;
        out += ")";
      }
      out += "\n";
    }
    return out;
  }

 private:
  static result<void> durability_lost() noexcept { return detail::fail_durability_lost("persist"); }

  result<void> persist_pages(std::size_t offset, std::size_t length) noexcept {
    if (durability_failed_) return durability_lost();
    if (length == 0) return outcome::success();
    // Whole pages: msync needs a page-aligned start, and rounding the end
    // ourselves (within the page-rounded mapping) makes the range explicit.
    const std::size_t page = detail::sys::page_size();
    const std::size_t lo = offset & ~(page - 1);
    const std::size_t hi = (offset + length + page - 1) & ~(page - 1);
    if (persister_) {
      auto r = persister_->persist_pages(fd_, offset_ + lo, data_ + lo, hi - lo);
      if (!r) note_flush_failure(r.error().value(), r.error().category() == std::system_category());
      return r;
    }
    if (detail::sys::msync(data_ + lo, hi - lo, MS_SYNC) != 0) {
      const int e = errno;
      note_flush_failure(e, true);
      return detail::fail_errno(e, "msync(MS_SYNC)");
    }
    return outcome::success();
  }

  void note_flush_failure(int e, bool is_errno) noexcept {
    if (is_errno && detail::is_writeback_error(e)) durability_failed_ = true;
  }

  void reset_fields() noexcept {
    data_ = nullptr;
    size_ = 0;
    map_base_ = nullptr;
    map_length_ = 0;
    offset_ = 0;
    fd_ = -1;
    pending_lo_ = pending_hi_ = 0;
    persister_ = nullptr;
    durability_failed_ = false;
  }

  static int try_map(void* at, std::size_t len, int flags, int fd, std::uint64_t off, bool populate,
                     void*& out) noexcept {
    if (at) flags |= MAP_FIXED;
    if (populate) flags |= MAP_POPULATE;
    void* p = detail::sys::mmap(at, len, PROT_READ | PROT_WRITE, flags, fd, static_cast<off_t>(off));
    if (p == MAP_FAILED) return errno;
    out = p;
    return 0;
  }

  // Tries each rung from options.strongest to options.weakest at `at` (or
  // anywhere when null). On success sets mapped/mode; on failure returns the
  // error with the detail recorded.
  static std::error_code climb(int fd, std::uint64_t offset, std::size_t map_length, const map_options& options,
                               void* at, map_ladder& ladder, void*& mapped, map_mode& mode_out) noexcept {
    ladder = map_ladder{};
    for (int rung = static_cast<int>(options.strongest); rung <= static_cast<int>(options.weakest); ++rung) {
      const auto mode = static_cast<map_mode>(rung);
      map_attempt& a = ladder.steps[ladder.count++];
      a.mode = mode;
      int flags = 0;
      switch (mode) {
        case map_mode::direct:
#ifdef MAPDIRECT_MAP_DIRECT_FLAG
          flags = MAP_SHARED_VALIDATE | (MAPDIRECT_MAP_DIRECT_FLAG);
          break;
#else
          a.cause = "not configured: build does not define MAPDIRECT_MAP_DIRECT_FLAG (MAP_DIRECT is not in mainline)";
          continue;
#endif
        case map_mode::sync:
#if MAPDIRECT_HAS_MAP_SYNC
          flags = MAP_SHARED_VALIDATE | MAP_SYNC;
          break;
#else
          a.cause = "no MAP_SYNC on this architecture";
          continue;
#endif
        case map_mode::shared: flags = MAP_SHARED; break;
      }
      a.attempted = true;
      a.error = try_map(at, map_length, flags, fd, offset, options.populate, mapped);
      if (a.error == 0) {
        mode_out = mode;
        return {};
      }
      // After a failed MAP_FIXED attempt the kernel may already have removed
      // the reservation under it; put it back before the next rung.
      if (at)
        (void)detail::sys::mmap(at, map_length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                                -1, 0);
      // Only "this mode is not offered here" steps down; anything else is real.
      const int e = a.error;
      bool step_down = false;
      if (mode == map_mode::direct) {
        step_down = (e == EOPNOTSUPP || e == EINVAL || e == EPERM || e == ENODEV);
        a.cause = e == EOPNOTSUPP ? "file system does not support MAP_DIRECT"
                  : e == EINVAL   ? "kernel does not know MAP_DIRECT"
                  : e == EPERM    ? "file not eligible (not DAX, or reflinked)"
                  : e == EACCES   ? "MAP_DIRECT needs a writable mapping of a file opened O_RDWR"
                                  : "";
      } else if (mode == map_mode::sync) {
        step_down = (e == EOPNOTSUPP || e == EINVAL);
        a.cause = sync_refusal_cause(fd, e);
      }
      if (e == EACCES && !*a.cause) a.cause = "file descriptor not open O_RDWR (a writable shared mapping needs it)";
      if (e == ETXTBSY) a.cause = "block map is sealed or busy";
      if (e == ENOMEM && !*a.cause) a.cause = "out of memory or address space";
      if (!step_down) {
        const std::string steps = describe_ladder(ladder);
        detail::set_detail("map: %s mapping failed with %s; tried:\n%s", to_string(mode), detail::errno_name(e),
                           steps.c_str());
        return e == ETXTBSY ? make_error_code(errc::sealed) : detail::errno_code(e);
      }
    }
    const std::string steps = describe_ladder(ladder);
    return detail::fail(errc::mode_unavailable, "map: no mode from %s to %s is available; tried:\n%s",
                        to_string(options.strongest), to_string(options.weakest), steps.c_str());
  }

  // Why MAP_SYNC was refused, in words, from statx's DAX attribute.
  static const char* sync_refusal_cause(int fd, int e) noexcept {
    if (e == EINVAL) return "kernel older than 4.15 (MAP_SHARED_VALIDATE unknown)";
    if (e != EOPNOTSUPP) return "";
    struct statx stx {};
    if (detail::sys::statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0 &&
        (stx.stx_attributes_mask & STATX_ATTR_DAX)) {
      return (stx.stx_attributes & STATX_ATTR_DAX)
                 ? "DAX file without synchronous faults (virtio-pmem or similar): persist uses msync"
                 : "not on a DAX file system (statx DAX=0)";
    }
    return "file system or device has no synchronous faults (DAX state unknown: statx lacks STATX_ATTR_DAX)";
  }

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  void* map_base_ = nullptr;
  std::size_t map_length_ = 0;
  std::uint64_t offset_ = 0;
  int fd_ = -1;
  map_mode mode_ = map_mode::shared;
  granularity granularity_ = granularity::page;
  persistence_domain domain_ = persistence_domain::unknown;
  flush_instruction flush_ = flush_instruction::none;
  std::size_t movnt_threshold_ = MAPDIRECT_MOVNT_THRESHOLD;
  map_ladder ladder_{};
  std::size_t pending_lo_ = 0, pending_hi_ = 0;
  page_persister* persister_ = nullptr;
  // Atomic: threads persisting concurrently (group commit) may all see a failure.
  std::atomic<bool> durability_failed_{false};
  iomap_seal seal_{};
};

inline result<direct_mapping> direct_mapping::map(int fd, std::uint64_t offset, std::size_t length,
                                                  map_options options) noexcept {
  detail::clear_detail();
  if (fd < 0) return detail::fail(errc::invalid_argument, "map: negative file descriptor %d", fd);
  if (static_cast<int>(options.strongest) > static_cast<int>(options.weakest))
    return detail::fail(errc::invalid_argument, "map: options.strongest (%s) is weaker than options.weakest (%s)",
                        to_string(options.strongest), to_string(options.weakest));
  const std::size_t page = detail::sys::page_size();
  if (offset % page != 0)
    return detail::fail(errc::misaligned_offset, "map: file offset %llu is not a multiple of the page size %zu",
                        static_cast<unsigned long long>(offset), page);
  struct stat st {};
  if (detail::sys::fstat(fd, &st) != 0) return detail::fail_errno(errno, "map: fstat");
  if (!S_ISREG(st.st_mode)) return detail::fail(errc::invalid_argument, "map: not a regular file");
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (length == 0) {
    if (offset >= file_size)
      return detail::fail(errc::beyond_eof, "map: length 0 (to end of file) but offset %llu is at or past EOF (%llu)",
                          static_cast<unsigned long long>(offset), static_cast<unsigned long long>(file_size));
    if (file_size - offset > std::numeric_limits<std::size_t>::max())
      return detail::fail(errc::invalid_argument, "map: file too large for the address space");
    length = static_cast<std::size_t>(file_size - offset);
  }
  if (offset > file_size || length > file_size - offset)
    return detail::fail(errc::beyond_eof,
                        "map: range [%llu, %llu) extends past end of file (%llu bytes); grow the file first "
                        "(direct_mapping::open with grow) so that no access can SIGBUS",
                        static_cast<unsigned long long>(offset),
                        static_cast<unsigned long long>(offset + length), static_cast<unsigned long long>(file_size));
  if (length > std::numeric_limits<std::size_t>::max() - 2 * MAPDIRECT_HUGE_ALIGN_THRESHOLD)
    return detail::fail(errc::invalid_argument, "map: length too large");

  direct_mapping m;
  m.fd_ = detail::sys::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (m.fd_ < 0) return detail::fail_errno(errno, "map: fcntl(F_DUPFD_CLOEXEC)");
  if (options.seal) {
    auto sealed = iomap_seal::acquire(m.fd_, offset, length, *options.seal);
    if (!sealed) return sealed.error();
    m.seal_ = std::move(sealed.value());
  }
  m.offset_ = offset;
  m.size_ = length;
  m.map_length_ = (length + page - 1) & ~(page - 1);
  m.movnt_threshold_ = options.movnt_threshold;

  // Reserve an address range so that large mappings start 2 MiB-aligned (DAX
  // PMD faults); the file is then mapped over it with MAP_FIXED.
  void* reservation = nullptr;
  std::size_t reservation_length = 0;
  void* at = nullptr;
  const std::size_t huge = MAPDIRECT_HUGE_ALIGN_THRESHOLD;
  if (m.map_length_ >= huge) {
    reservation_length = m.map_length_ + huge;
    void* r = detail::sys::mmap(nullptr, reservation_length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                                -1, 0);
    if (r == MAP_FAILED) return detail::fail_errno(errno, "map: reserving address space");
    reservation = r;
    const auto base = reinterpret_cast<std::uintptr_t>(r);
    at = reinterpret_cast<void*>((base + huge - 1) & ~(std::uintptr_t{huge} - 1));
  }
  // Releases whatever part of the reservation is not the final mapping.
  auto release_reservation = [&](void* keep) noexcept {
    if (!reservation) return;
    auto* r = static_cast<char*>(reservation);
    auto* k = static_cast<char*>(keep ? keep : at);
    const std::size_t lead = static_cast<std::size_t>(k - r);
    const std::size_t trail = reservation_length - lead - m.map_length_;
    if (!keep) {
      detail::sys::munmap(reservation, reservation_length);
      return;
    }
    if (lead) detail::sys::munmap(r, lead);
    if (trail) detail::sys::munmap(k + m.map_length_, trail);
  };

  void* mapped = nullptr;
  const std::error_code climb_error = climb(m.fd_, offset, m.map_length_, options, at, m.ladder_, mapped, m.mode_);
  if (climb_error) {
    release_reservation(nullptr);
    return climb_error;
  }
  release_reservation(mapped);
  m.map_base_ = mapped;
  m.data_ = static_cast<std::byte*>(mapped);

// GCC 12 at -O2 falsely reports the defaulted optionals of a by-value
// map_options as maybe-uninitialized once inlined into callers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
  // The nd domain matters only where CPU flushes persist (sync, direct).
  if (m.mode_ != map_mode::shared)
    m.domain_ = options.domain ? *options.domain : detail::domain_of_device(st.st_dev);
  m.granularity_ = granularity_for(m.mode_, m.domain_);
  m.flush_ = options.flush ? *options.flush : detect_flush_instruction();
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  if (m.granularity_ == granularity::cache_line && m.flush_ == flush_instruction::none) {
    return detail::fail(errc::granularity_unavailable,
                        "map: %s mapping needs a cache-line flush instruction and this CPU has none",
                        to_string(m.mode_));
  }
  if (static_cast<int>(m.granularity_) > static_cast<int>(options.coarsest)) {
    const std::string steps = describe_ladder(m.ladder_);
    return detail::fail(errc::granularity_unavailable, "map: granularity %s is coarser than the required %s; tried:\n%s",
                        to_string(m.granularity_), to_string(options.coarsest), steps.c_str());
  }
  return m;
}

namespace detail {
// Sizes a file this call just created: fallocate (preallocate) or ftruncate.
inline std::error_code size_new_file(int fd, std::uint64_t size, bool preallocate) noexcept {
  if (preallocate) {
    if (sys::fallocate(fd, 0, 0, static_cast<off_t>(size)) == 0) return {};
    if (errno != EOPNOTSUPP) return fail_errno(errno, "open: fallocate (allocating blocks for the new file)");
  }
  if (sys::ftruncate(fd, static_cast<off_t>(size)) != 0) return fail_errno(errno, "open: ftruncate (sizing the new file)");
  return {};
}

// Appends to the current detail text.
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
inline void append_detail(const char* fmt, ...) noexcept {
  char before[MAPDIRECT_ERROR_DETAIL_SIZE];
  std::snprintf(before, sizeof before, "%s", error_detail_buffer());
  char more[MAPDIRECT_ERROR_DETAIL_SIZE];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(more, sizeof more, fmt, args);
  va_end(args);
  set_detail("%s%s%s", before, *before ? "; " : "", more);
}

// open() of an existing file. `retry` is set when, in create mode, the name
// vanished or was replaced meanwhile (the caller tries creating again).
inline result<direct_mapping> open_existing_and_map(const parent_dir& parent, const char* path,
                                                    const open_options& options, const open_rules& rules,
                                                    bool& retry) noexcept {
  retry = false;
  int raw = -1;
  struct stat st {};
  if (auto ec = open_existing(parent.fd.get(), parent.name, path, rules, "open", raw, st)) {
    retry = options.create && (ec == std::errc::no_such_file_or_directory || ec == std::errc::resource_unavailable_try_again);
    if (options.size == 0 && ec == std::errc::no_such_file_or_directory)
      append_detail("nothing is created without create and a size");
    return ec;
  }
  const scoped_fd fd(raw);
  std::uint64_t size = options.size;
  if (size == 0) {
    if (st.st_size == 0) return fail(errc::invalid_argument, "open: %s is empty and no size was given", path);
    size = static_cast<std::uint64_t>(st.st_size);
  }
  if (size > static_cast<std::uint64_t>(st.st_size)) {
    if (!options.grow)
      return fail(errc::beyond_eof, "open: %s has %lld bytes, fewer than the requested %llu; set grow to extend it",
                  path, static_cast<long long>(st.st_size), static_cast<unsigned long long>(size));
    // Growing changes the block map: refuse while this process holds a seal.
    if (const std::size_t seals = seal_registry::count(st.st_dev, st.st_ino))
      return fail(errc::sealed, "open: refusing to grow %s: %zu iomap_seal(s) held on it", path, seals);
    // Never rolled back (another process may already map the new size): a
    // failure below leaves the file larger.
    const off_t grow_by = static_cast<off_t>(size) - st.st_size;
    int rc = -1;
    if (options.preallocate) {
      rc = sys::fallocate(fd.get(), 0, st.st_size, grow_by);
      if (rc != 0 && errno != EOPNOTSUPP)
        return fail_errno(errno, "open: fallocate (allocating blocks for the new size; the file may be larger now)");
    }
    if (rc != 0 && sys::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
      return fail_errno(errno, "open: ftruncate (extending the file)");
  }
  if (size > std::numeric_limits<std::size_t>::max())
    return fail(errc::invalid_argument, "open: size too large for the address space");
  auto m = direct_mapping::map(fd.get(), 0, static_cast<std::size_t>(size), options.map);
  if (m && options.create) {
    // Unlinked meanwhile (for example another creator's rollback): mapping a
    // file without a name would lose whatever is written to it.
    struct stat now {};
    if (sys::fstat(fd.get(), &now) == 0 && now.st_nlink == 0) {
      retry = true;
      set_detail("open: %s was removed while it was being opened", path);
      return errno_code(ENOENT);
    }
  }
  return m;
}
}  // namespace detail

inline result<direct_mapping> direct_mapping::open(const char* path, open_options options) noexcept {
  detail::clear_detail();
  if (options.created) *options.created = false;
  if (!path || !*path) return detail::fail(errc::invalid_argument, "open: empty path");
  if (options.exclusive && !options.create)
    return detail::fail(errc::invalid_argument, "open: exclusive requires create");
  if (options.size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) ||
      options.size > std::numeric_limits<std::size_t>::max())
    return detail::fail(errc::invalid_argument, "open: size too large");
  detail::parent_dir parent;
  if (auto ec = detail::open_parent(path, parent, "open")) return ec;
  detail::open_rules rules;
  rules.no_follow = options.no_follow;
  rules.allow_foreign_owner = options.allow_foreign_owner;
  rules.permissions = options.permissions;
  rules.access = O_RDWR;
  // Without a size nothing can be created: such an open never passes O_CREAT.
  const bool may_create = options.create && options.size != 0;
  rules.may_create = may_create;
  bool retry = false;
  if (!may_create) {
    if (options.exclusive) return detail::fail(errc::invalid_argument, "open: exclusive creation needs a size");
    return detail::open_existing_and_map(parent, path, options, rules, retry);
  }
  const auto size = static_cast<std::size_t>(options.size);
  int tmpfile_refused = 0;  // errno of an unsupported O_TMPFILE
  for (int attempt = 0; attempt < 8; ++attempt) {
    // An existing name is opened directly: building (and preallocating) a
    // complete unnamed file only to find the name taken would cost a second
    // copy's space. linkat below still catches a name that appears meanwhile.
    struct stat existing_entry {};
    if (detail::sys::fstatat(parent.fd.get(), parent.name, &existing_entry, AT_SYMLINK_NOFOLLOW) == 0) {
      if (options.exclusive) {
        detail::set_detail("open: %s exists (exclusive)", path);
        return detail::errno_code(EEXIST);
      }
      auto existing = detail::open_existing_and_map(parent, path, options, rules, retry);
      if (retry) continue;
      return existing;
    }
    if (!tmpfile_refused) {
      int raw = -1;
      {
        const detail::stdio_placeholders low;
        raw = detail::sys::openat(parent.fd.get(), ".", O_TMPFILE | O_RDWR | O_CLOEXEC, options.permissions);
      }
      if (raw < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) tmpfile_refused = errno;
      else if (raw < 0) return detail::fail_errno(errno, "open: O_TMPFILE in the parent directory");
      if (raw >= 0) {
        const detail::scoped_fd tmp(raw);
        if (auto ec = detail::size_new_file(raw, options.size, options.preallocate)) return ec;
        if (detail::sys::fsync(raw) != 0) return detail::fail_errno(errno, "open: fsync of the new file");
        auto m = map(raw, 0, size, options.map);
        if (!m) return m.error();  // the unnamed file vanishes with its descriptors
        const int e = detail::link_tmpfile(raw, parent.fd.get(), parent.name);
        if (e == 0) {
          if (options.created) *options.created = true;
          if (auto ec = detail::fsync_dir(parent.fd.get(), path, "open")) return ec;
          return m;
        }
        if (e != EEXIST) {
          char text[128];
          detail::set_detail("open: linking the new file into place as %s: %s (errno %d)", path,
                             ::strerror_r(e, text, sizeof text), e);
          return detail::errno_code(e);
        }
        (void)m.value().close();
        if (options.exclusive) {
          detail::set_detail("open: %s exists (exclusive)", path);
          return detail::errno_code(EEXIST);
        }
        auto existing = detail::open_existing_and_map(parent, path, options, rules, retry);
        if (retry) continue;
        return existing;
      }
    }
    // Fallback: create by name, exclusively.
    int raw = -1;
    {
      const detail::stdio_placeholders low;
      raw = detail::sys::openat(parent.fd.get(), parent.name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
                                options.permissions);
    }
    if (raw < 0) {
      if (errno != EEXIST) return detail::fail_errno(errno, "open: creating file (O_CREAT|O_EXCL)");
      if (options.exclusive) {
        detail::set_detail("open: %s exists (exclusive)", path);
        return detail::errno_code(EEXIST);
      }
      auto existing = detail::open_existing_and_map(parent, path, options, rules, retry);
      if (retry) continue;
      return existing;
    }
    if (options.created) *options.created = true;
    const detail::scoped_fd fd(raw);
    auto undo = [&](std::error_code ec) noexcept -> result<direct_mapping> {
      char why[160] = "";
      const bool removed = detail::unlink_if_still_ours(parent.fd.get(), parent.name, raw, why, sizeof why);
      if (removed) {
        (void)detail::sys::fsync(parent.fd.get());
        if (options.created) *options.created = false;
      }
      detail::append_detail("O_TMPFILE unsupported here (%s), so %s was created by name; %s%s",
                            detail::errno_name(tmpfile_refused), path,
                            removed ? "it was removed again" : "it was left in place: ", why);
      return ec;
    };
    if (auto ec = detail::size_new_file(raw, options.size, options.preallocate)) return undo(ec);
    if (detail::sys::fsync(raw) != 0) return undo(detail::fail_errno(errno, "open: fsync of the new file"));
    auto m = map(raw, 0, size, options.map);
    if (!m) return undo(m.error());
    if (auto ec = detail::fsync_dir(parent.fd.get(), path, "open")) return ec;
    detail::set_detail("open: O_TMPFILE unsupported in the directory of %s (%s): created by name with "
                       "O_CREAT|O_EXCL (not atomic: the name existed before the file was complete)",
                       path, detail::errno_name(tmpfile_refused));
    return m;
  }
  detail::set_detail("open: %s kept vanishing or being replaced while it was being opened; gave up", path);
  return detail::errno_code(EAGAIN);
}

#undef MAPDIRECT_TRY_RANGE

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_MAPPING_HPP
