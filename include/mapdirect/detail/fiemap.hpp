// SPDX-License-Identifier: MIT
// The block-map algorithm of iomap_seal (seal.hpp), in one place:
// FS_IOC_FIEMAP, read in fixed-size batches on the stack (no allocation); a
// classification of a file range into what a MAP_SYNC fault could still
// have to change (holes, unwritten, delayed-allocation and shared extents);
// and stabilise(), which makes a range allocated, written and unshared
// (dirty_range in place, rewrite_range where the file cannot be mapped) and
// verifies it with FIEMAP.
#ifndef MAPDIRECT_DETAIL_FIEMAP_HPP
#define MAPDIRECT_DETAIL_FIEMAP_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "../guard.hpp"
#include "durability.hpp"
#include "linux_abi.hpp"
#include "restore_size.hpp"
#include "syscall.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <system_error>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// What a block-map range needs before it is stable, as one bit per problem.
enum extent_problem : unsigned {
  extent_ok = 0,
  extent_hole = 1u << 0,       ///< no extent at all: a fault would allocate
  extent_unwritten = 1u << 1,  ///< allocated, not written: a fault or store would convert it
  extent_delalloc = 1u << 2,   ///< delayed allocation (or location unknown): writeback would allocate
  extent_shared = 1u << 3,     ///< reflinked/deduplicated: a store would copy-on-write (allocate)
  extent_not_plain = 1u << 4,  ///< inline, tail-packed, encoded or unaligned data: no block to map
};

/// Problem bits of one extent's FIEMAP flags.
inline unsigned classify_extent_flags(std::uint32_t flags) noexcept {
  unsigned p = extent_ok;
  if (flags & FIEMAP_EXTENT_UNWRITTEN) p |= extent_unwritten;
  if (flags & (FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN)) p |= extent_delalloc;
  if (flags & FIEMAP_EXTENT_SHARED) p |= extent_shared;
  if (flags & (FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_NOT_ALIGNED |
               FIEMAP_EXTENT_DATA_ENCRYPTED))
    p |= extent_not_plain;
  return p;
}

/// Names of the problem bits, for messages ("hole", "unwritten|shared").
inline const char* extent_problem_name(unsigned p) noexcept {
  if (p == extent_ok) return "allocated and written";
  if (p & extent_hole) return "hole";
  if (p & extent_not_plain) return "inline/encoded data";
  if ((p & extent_unwritten) && (p & extent_shared)) return "unwritten and shared";
  if (p & extent_unwritten) return "unwritten";
  if (p & extent_shared) return "shared (reflinked)";
  if (p & extent_delalloc) return "delayed allocation";
  return "unknown";
}

/// Totals over a range, from walk_block_map.
struct block_map_summary {
  std::uint64_t extents = 0;          ///< extents (clipped to the range) that FIEMAP reported
  std::uint64_t hole_bytes = 0;       ///< bytes with no extent
  std::uint64_t unwritten_bytes = 0;  ///< bytes in unwritten extents
  std::uint64_t delalloc_bytes = 0;   ///< bytes in delayed-allocation/unknown extents
  std::uint64_t shared_bytes = 0;     ///< bytes in shared extents
  std::uint64_t not_plain_bytes = 0;  ///< bytes in inline/encoded extents
  std::uint64_t first_problem = 0;    ///< offset of the first problem byte (when any)
  unsigned first_problem_kind = extent_ok;

  /// True when every byte of the range is allocated, written, unshared and plain.
  bool stable() const noexcept {
    return hole_bytes == 0 && unwritten_bytes == 0 && delalloc_bytes == 0 && shared_bytes == 0 && not_plain_bytes == 0;
  }
};

/// The FIEMAP batch loop under both block-map walks (walk_block_map here,
/// walk_physical_extents in badblocks.hpp): reads fd's extents of [offset,
/// end) with FS_IOC_FIEMAP in batches on the stack (no allocation; EINTR
/// retried) and calls on_extent(extent) for each in the order FIEMAP gives
/// them. on_extent returns 0 to go on or an errno to stop (returned). Each
/// batch resumes at the furthest extent end seen; the walk ends at `end`, at
/// the file's last extent (FIEMAP_EXTENT_LAST), after a short batch, or after
/// a batch that made no progress. Returns 0, on_extent's errno or the FIEMAP
/// errno (EOPNOTSUPP/ENOTTY: the file system has no FIEMAP).
template <class OnExtent>
int for_each_fiemap_extent(int fd, std::uint64_t offset, std::uint64_t end, std::uint32_t fiemap_flags,
                           OnExtent&& on_extent) noexcept {
  constexpr std::uint32_t batch = 32;
  // struct fiemap ends in a flexible array: reserve room for `batch` extents.
  alignas(struct fiemap) unsigned char storage[sizeof(struct fiemap) + batch * sizeof(struct fiemap_extent)];
  std::uint64_t pos = offset;
  while (pos < end) {
    std::memset(storage, 0, sizeof storage);
    auto* fm = reinterpret_cast<struct fiemap*>(storage);
    fm->fm_start = pos;
    fm->fm_length = end - pos;
    fm->fm_flags = fiemap_flags;
    fm->fm_extent_count = batch;
    const int rc = retry_eintr([&] { return sys::ioctl(fd, FS_IOC_FIEMAP, fm); });
    if (rc != 0) return errno;
    bool last = false;
    std::uint64_t next = pos;
    for (std::uint32_t i = 0; i < fm->fm_mapped_extents && i < batch; ++i) {
      const struct fiemap_extent& e = fm->fm_extents[i];
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
      const std::uint64_t e_end = e.fe_logical + e.fe_length;
      if (e_end > next) next = e_end;
      if (const int r = on_extent(e)) return r;
    }
    if (last || fm->fm_mapped_extents < batch || next <= pos) return 0;
    pos = next;
  }
  return 0;
}

/// Walks [offset, offset+length) of fd's block map in order, calling
/// visit(start, length, problem_bits) for every piece: extents (clipped to
/// the range) and the holes between them. `visit` returns 0 to go on or an
/// errno to stop (walk_block_map then returns it). Returns 0, or the FIEMAP
/// errno (EOPNOTSUPP/ENOTTY: the file system has no FIEMAP). fiemap_flags may
/// hold FIEMAP_FLAG_SYNC. The file may change between batches; each batch
/// resumes at the end of the last piece visited.
template <class Visit>
int walk_block_map(int fd, std::uint64_t offset, std::uint64_t length, std::uint32_t fiemap_flags,
                   Visit&& visit) noexcept {
  const std::uint64_t end = offset + length;
  std::uint64_t pos = offset;  // the end of the last piece visited
  const int err = for_each_fiemap_extent(fd, offset, end, fiemap_flags, [&](const struct fiemap_extent& e) {
    const std::uint64_t e_start = e.fe_logical;
    const std::uint64_t e_end = e.fe_logical + e.fe_length;
    if (pos >= end || e_end <= pos) return 0;
    if (e_start > pos) {
      const std::uint64_t hole_end = e_start < end ? e_start : end;
      if (const int r = visit(pos, hole_end - pos, unsigned{extent_hole})) return r;
      pos = hole_end;
      if (pos >= end) return 0;
    }
    const std::uint64_t piece_end = e_end < end ? e_end : end;
    if (const int r = visit(pos, piece_end - pos, classify_extent_flags(e.fe_flags))) return r;
    pos = piece_end;
    return 0;
  });
  if (err) return err;
  // Past the file's last extent (or a short batch) everything left is a hole;
  // so is what follows a batch that made no progress (nothing lies at pos).
  return pos < end ? visit(pos, end - pos, unsigned{extent_hole}) : 0;
}

/// Summarises [offset, offset+length) of fd's block map. Returns 0 or the FIEMAP errno.
inline int summarise_block_map(int fd, std::uint64_t offset, std::uint64_t length, block_map_summary& out,
                               std::uint32_t fiemap_flags = 0) noexcept {
  out = block_map_summary{};
  return walk_block_map(fd, offset, length, fiemap_flags, [&](std::uint64_t start, std::uint64_t n, unsigned p) {
    if (p != extent_hole) ++out.extents;
    if (p != extent_ok && out.first_problem_kind == extent_ok) {
      out.first_problem = start;
      out.first_problem_kind = p;
    }
    if (p & extent_hole) out.hole_bytes += n;
    if (p & extent_unwritten) out.unwritten_bytes += n;
    if (p & extent_delalloc) out.delalloc_bytes += n;
    if (p & extent_shared) out.shared_bytes += n;
    if (p & extent_not_plain) out.not_plain_bytes += n;
    return 0;
  });
}

/// True for the FIEMAP errnos that mean "this file system cannot report its block map".
inline bool fiemap_unsupported(int e) noexcept { return e == EOPNOTSUPP || e == ENOTTY || e == ENOSYS; }

// fdatasync, retried on EINTR. A write-back error it reports may be the only
// report of lost data (consumed for a description shared with the caller),
// so it marks the file durability-lost process-wide (durability.hpp).
inline int fdatasync_retry(int fd) noexcept {
  const int rc = retry_eintr([&] { return sys::fdatasync(fd); });
  if (rc != 0 && is_writeback_error(errno)) {
    const int saved = errno;
    struct stat st {};
    if (sys::fstat(fd, &st) == 0) durability_registry::mark_lost(st.st_dev, st.st_ino, fd);
    errno = saved;
  }
  return rc;
}

// Dirties every page of [start, start+n) (clipped to `file_size`) without
// changing a byte: through a shared mapping of fd, one compare-and-swap per
// page of a byte with its own value. The CAS is atomic against every other
// store to that byte (another process's write(2), a store through any
// mapping), so unlike reading and writing data back it can never put stale
// bytes over a concurrent store; and the description's O_APPEND/O_DIRECT do
// not apply to mappings. The write fault and the caller's fdatasync then
// convert unwritten extents, allocate holes and copy shared extents (on
// ext4 and XFS, written-back dirty pages are what turns an unwritten extent
// into a written one; FALLOC_FL_ZERO_RANGE would leave ext4 extents
// unwritten and would zero a concurrent store). Returns 0, ENODEV when the
// file cannot be mapped (caller falls back), EIO when a page faulted, or
// the mmap errno.
inline int dirty_range(int fd, std::uint64_t start, std::uint64_t n, std::uint64_t file_size) noexcept {
  if (start >= file_size) return 0;
  if (n > file_size - start) n = file_size - start;
  const std::uint64_t page = sys::page_size();
  const std::uint64_t end = start + n;
  std::uint64_t pos = start - start % page;
  constexpr std::uint64_t window = std::uint64_t{64} << 20;  // bounds address space, not I/O
  while (pos < end) {
    const std::size_t len = static_cast<std::size_t>(end - pos < window ? end - pos : window);
    void* p = sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(pos));
    if (p == MAP_FAILED) return errno == EINVAL || errno == EACCES ? ENODEV : errno;
    unsigned char* base = static_cast<unsigned char*>(p);
    auto touched = with_guard(guard_range{base, len, fd, pos}, [base, len, page]() noexcept {
      for (std::size_t off = 0; off < len; off += static_cast<std::size_t>(page)) {
        // volatile: an idempotent atomic must not be turned into a plain load.
        volatile unsigned char* b = base + off;
        unsigned char v = __atomic_load_n(b, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(b, &v, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
      }
    });
    (void)sys::munmap(p, len);
    if (!touched) {
      const access_error& e = touched.error();
      if (e.category() == error_category() && e.value() == static_cast<int>(errc::beyond_eof))
        return 0;  // the file shrank under us: verify tells
      if (!e.is_fault() && e.category() == std::system_category() && e.value() != 0) return e.value();
      return EIO;  // a page faulted (I/O error, poison) or the guard was unavailable
    }
    pos += len;
  }
  return 0;
}

// Fallback where the file cannot be mapped: reads [start, start+n) and
// writes the same bytes back (clipped to `file_size`). A store by another
// process between a chunk's read and its write is overwritten with the old
// bytes (window: one chunk of up to 1 MiB); so it runs only where
// dirty_range cannot. Returns 0 or errno.
inline int rewrite_range(int fd, std::uint64_t start, std::uint64_t n, std::uint64_t file_size) noexcept {
  if (start >= file_size) return 0;
  if (n > file_size - start) n = file_size - start;
  // 1 MiB chunks keep the syscall count low on large ranges; a small stack
  // buffer when the heap says no.
  constexpr std::size_t big = std::size_t{1} << 20;
  alignas(64) unsigned char small[16384];
  unsigned char* heap = n > sizeof small ? new (std::nothrow) unsigned char[big] : nullptr;
  unsigned char* buf = heap ? heap : small;
  const std::size_t cap = heap ? big : sizeof small;
  struct owner {
    unsigned char* p;
    ~owner() { delete[] p; }
  } free_heap{heap};
  while (n > 0) {
    const std::size_t chunk = n < cap ? static_cast<std::size_t>(n) : cap;
    const ssize_t r = retry_eintr([&] { return sys::pread(fd, buf, chunk, static_cast<off_t>(start)); });
    if (r < 0) return errno;
    if (r == 0) return 0;  // the file shrank under us: nothing left to rewrite
    std::size_t done = 0;
    while (done < static_cast<std::size_t>(r)) {
      const ssize_t w = retry_eintr([&] {
        return sys::pwrite(fd, buf + done, static_cast<std::size_t>(r) - done, static_cast<off_t>(start + done));
      });
      if (w < 0) return errno;
      done += static_cast<std::size_t>(w);
    }
    start += static_cast<std::uint64_t>(r);
    n -= static_cast<std::uint64_t>(r);
  }
  return 0;
}

// What stabilise() found and did (copied into seal_report by iomap_seal::acquire).
struct stabilise_report {
  std::uint64_t extents = 0;
  std::uint64_t allocated_bytes = 0;
  std::uint64_t zeroed_bytes = 0;
  std::uint64_t unshared_bytes = 0;
  bool rewrote_shared = false;
  bool verified = false;
  bool extended = false;
};

// seal_options::progress and its context (seal.hpp), as stabilise() calls it:
// `done` of 2 * length (a pass over the range to allocate, one to unshare and
// write), at most every 64 MiB and at the end of each pass.
struct stabilise_progress {
  bool (*fn)(std::uint64_t, std::uint64_t, void*) noexcept = nullptr;
  void* context = nullptr;
};

// Makes [offset, end) of a file allocated, written and unshared, growing it
// to `end` when asked, in the numbered steps of run(). On failure the
// file's size is restored and no byte of existing data has changed (blocks
// allocated so far stay allocated and read as zeros).
class stabiliser {
 public:
  stabiliser(int fd, std::uint64_t offset, std::uint64_t end, std::uint64_t old_size, stabilise_report& report,
             stabilise_progress progress = {}) noexcept
      : fd_(fd),
        offset_(offset),
        end_(end),
        length_(end - offset),
        old_size_(old_size),
        report_(report),
        progress_(progress) {}

  std::error_code run(bool allow_unverifiable) noexcept {
    // Dirty page-cache data over an unwritten extent reads back as data but
    // FIEMAP still says "unwritten": write it back first so that the scan
    // sees the truth (this also resolves delayed allocations).
    if (fdatasync_retry(fd_) != 0) return file_errno(errno, "seal: fdatasync (before scanning)");
    block_map_summary before{};
    const int scan = summarise_block_map(fd_, offset_, length_, before);
    if (scan != 0 && !fiemap_unsupported(scan)) return file_errno(scan, "seal: FS_IOC_FIEMAP");
    if (scan != 0) return unverifiable(scan, allow_unverifiable);
    if (auto ec = check_free_space(before)) return ec;
    // Where mapping is impossible, pages are written back with pwrite, which
    // O_APPEND would turn into appends and O_DIRECT refuse unaligned.
    const int fl = sys::fcntl(fd_, F_GETFL);
    pwrite_unsafe_ = fl < 0 || (fl & (O_APPEND | O_DIRECT)) != 0;
    if (auto ec = allocate_holes(before)) return ec;  // 1.
    if (!report_progress(0, length_, true)) return canceled();
    if (auto ec = grow()) return ec;               // 2.
    if (auto ec = unshare_and_write()) return ec;  // 3. and 4.
    if (!report_progress(1, length_, true)) return canceled();
    return sync_and_verify();  // 5. and 6.
  }

 private:
  // Tells the caller's progress callback that pass `pass` (0: allocating,
  // 1: unsharing and writing) reached byte `at` of the range, when it moved
  // 64 MiB since the last call or `final` is set. False: the caller cancels.
  bool report_progress(int pass, std::uint64_t at, bool final) noexcept {
    if (!progress_.fn) return true;
    const std::uint64_t done = static_cast<std::uint64_t>(pass) * length_ + (at < length_ ? at : length_);
    if (!final && done - last_reported_ < (std::uint64_t{64} << 20)) return true;
    if (final && done == last_reported_ && reported_) return true;
    last_reported_ = done;
    reported_ = true;
    if (progress_.fn(done, 2 * length_, progress_.context)) return true;
    canceled_ = true;
    return false;
  }

  // The callback cancelled: data unchanged, the size restored (fail_with).
  std::error_code canceled() noexcept {
    set_detail("seal: canceled by seal_options::progress after %llu of %llu units; no data changed (blocks "
               "allocated so far stay allocated)",
               static_cast<unsigned long long>(last_reported_), static_cast<unsigned long long>(2 * length_));
    return fail_with(errno_code(ECANCELED));
  }
  // Puts back the size this stabilisation grew, and says whether it could.
  std::error_code fail_with(std::error_code ec) noexcept {
    if (grew_) restore_size(fd_, old_size_);
    return ec;
  }

  // No FIEMAP (`scan`): allocate and sync without verification if allowed,
  // report verified = false; else refuse with nothing changed.
  std::error_code unverifiable(int scan, bool allowed) noexcept {
    if (!allowed)
      return fail(errc::block_map_unverifiable,
                  "seal: the file system cannot report its block map (FS_IOC_FIEMAP: %s), so the range cannot be "
                  "verified; nothing was changed (set seal_options::allow_unverifiable to allocate and sync "
                  "without verification)",
                  errno_name(scan));
    if (sys::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset_), static_cast<off_t>(length_)) != 0 &&
        errno != EOPNOTSUPP)
      return file_errno(errno, "seal: fallocate");
    if (auto ec = grow()) return ec;
    if (fdatasync_retry(fd_) != 0) return fail_with(file_errno(errno, "seal: fdatasync"));
    if (!report_progress(1, length_, true)) return canceled();
    report_.verified = false;
    return {};
  }

  // Refuses up front when the free space clearly cannot cover the holes and
  // shared bytes (f_bfree: the most the file system could ever give us).
  std::error_code check_free_space(const block_map_summary& before) noexcept {
    const std::uint64_t needed = before.hole_bytes + before.shared_bytes;
    struct statfs sfs {};
    if (needed == 0 || sys::fstatfs(fd_, &sfs) != 0) return {};
    const std::uint64_t free_bytes = static_cast<std::uint64_t>(sfs.f_bfree) * static_cast<std::uint64_t>(sfs.f_bsize);
    if (needed <= free_bytes) return {};
    set_detail("seal: ENOSPC: the range needs %llu bytes of new blocks (%llu in holes, %llu shared) but the file "
               "system has %llu free; nothing was changed",
               static_cast<unsigned long long>(needed), static_cast<unsigned long long>(before.hole_bytes),
               static_cast<unsigned long long>(before.shared_bytes), static_cast<unsigned long long>(free_bytes));
    return errno_code(ENOSPC);
  }

  // Dirties [start, +n) in place (dirty_range), or where the file cannot be
  // mapped rewrites it (rewrite_range) unless the descriptor forbids pwrite.
  int make_written(std::uint64_t start, std::uint64_t n, std::uint64_t file_size) noexcept {
    const int r = dirty_range(fd_, start, n, file_size);
    if (r != ENODEV) return r;
    if (pwrite_unsafe_) {
      refused_ = true;
      return EINVAL;
    }
    return rewrite_range(fd_, start, n, file_size);
  }

  static std::error_code refusal() noexcept {
    return fail(errc::invalid_argument,
                "seal: the file cannot be mapped here and its descriptor is open with O_APPEND or O_DIRECT, so its "
                "blocks cannot be written in place; size and data are unchanged (pass a descriptor without "
                "O_APPEND/O_DIRECT)");
  }

  // 1. Allocate holes (only holes), without changing the size.
  std::error_code allocate_holes(const block_map_summary& before) noexcept {
    const int err = walk_block_map(fd_, offset_, length_, 0, [&](std::uint64_t start, std::uint64_t n, unsigned p) {
      if (!report_progress(0, start - offset_, false)) return ECANCELED;
      if (!(p & extent_hole)) return 0;
      if (sys::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(start), static_cast<off_t>(n)) == 0) {
        report_.allocated_bytes += n;
        return 0;
      }
      // No fallocate here: dirtying the hole's pages allocates it (within EOF).
      if (errno == EOPNOTSUPP) {
        report_.allocated_bytes += n;
        return make_written(start, n, old_size_);
      }
      return errno;
    });
    report_.allocated_bytes += before.delalloc_bytes;
    if (canceled_) return canceled();
    if (refused_) return refusal();
    if (err != 0) return file_errno(err, "seal: allocating holes (fallocate)");
    return {};
  }

  // 2. Grow the file now that every block it gains is reserved.
  std::error_code grow() noexcept {
    if (end_ <= old_size_) return {};
    if (sys::ftruncate(fd_, static_cast<off_t>(end_)) != 0) return file_errno(errno, "seal: ftruncate (extend)");
    grew_ = true;
    report_.extended = true;
    return {};
  }

  // 3. Unshare reflinked extents; 4. make unwritten ones written by dirtying
  // their pages in place (dirty_range: no byte is ever written back, so a
  // concurrent store is never lost).
  std::error_code unshare_and_write() noexcept {
    const std::uint64_t size = end_ > old_size_ ? end_ : old_size_;
    bool unshare_supported = true;
    const int err = walk_block_map(fd_, offset_, length_, 0, [&](std::uint64_t start, std::uint64_t n, unsigned p) {
      if (!report_progress(1, start - offset_, false)) return ECANCELED;
      if (p & extent_shared) {
        if (unshare_supported && sys::fallocate(fd_, linux_abi::falloc_fl_unshare_range, static_cast<off_t>(start),
                                                static_cast<off_t>(n)) == 0) {
          report_.unshared_bytes += n;
        } else if (!unshare_supported || errno == EOPNOTSUPP || errno == EINVAL) {
          unshare_supported = false;
          report_.rewrote_shared = true;
          if (const int r = make_written(start, n, size)) return r;
          report_.unshared_bytes += n;
        } else {
          return errno;
        }
      }
      if (p & (extent_unwritten | extent_not_plain)) {
        if (const int r = make_written(start, n, size)) return r;
        if (p & extent_unwritten) report_.zeroed_bytes += n;
      }
      return 0;
    });
    if (canceled_) return canceled();
    if (refused_) return fail_with(refusal());
    if (err != 0) return fail_with(file_errno(err, "seal: unsharing or writing extents"));
    return {};
  }

  // 5. Make it durable, then 6. verify.
  std::error_code sync_and_verify() noexcept {
    if (fdatasync_retry(fd_) != 0) return fail_with(file_errno(errno, "seal: fdatasync"));
    block_map_summary after{};
    if (const int e = summarise_block_map(fd_, offset_, length_, after))
      return fail_with(file_errno(e, "seal: FIEMAP (verify)"));
    if (!after.stable())
      return fail_with(fail(
          errc::block_map_unstable,
          "seal: after stabilising, byte %llu of the range is still %s (%llu hole, %llu unwritten, "
          "%llu delalloc, %llu shared, %llu inline/encoded bytes)",
          static_cast<unsigned long long>(after.first_problem), extent_problem_name(after.first_problem_kind),
          static_cast<unsigned long long>(after.hole_bytes), static_cast<unsigned long long>(after.unwritten_bytes),
          static_cast<unsigned long long>(after.delalloc_bytes), static_cast<unsigned long long>(after.shared_bytes),
          static_cast<unsigned long long>(after.not_plain_bytes)));
    report_.extents = after.extents;
    report_.verified = true;
    return {};
  }

  int fd_;
  std::uint64_t offset_, end_, length_, old_size_;
  stabilise_report& report_;
  stabilise_progress progress_;
  std::uint64_t last_reported_ = 0;
  bool reported_ = false;
  bool canceled_ = false;
  bool grew_ = false;
  bool refused_ = false;
  bool pwrite_unsafe_ = false;
};

// Makes [offset, end) allocated, written and unshared, growing the file to
// `end` when needed (see stabiliser).
inline std::error_code stabilise(int fd, std::uint64_t offset, std::uint64_t end, std::uint64_t old_size,
                                 bool allow_unverifiable, stabilise_report& report,
                                 stabilise_progress progress = {}) noexcept {
  return stabiliser(fd, offset, end, old_size, report, progress).run(allow_unverifiable);
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_FIEMAP_HPP
