// SPDX-License-Identifier: MIT
// Block-map-changing helpers: resize, truncate, extend, punch a hole. Each
// refuses with errc::sealed while this process holds an iomap_seal on the
// file (identified by st_dev and st_ino, so any descriptor of the file is
// covered), and maps the kernel's ETXTBSY (a native seal) to errc::sealed.
// The check and the change are atomic against an iomap_seal acquired
// concurrently by another thread (see blockmap_changes). Thread-safe; they
// open and close no descriptor, so the process's POSIX record locks stay.
//
//   if (auto r = mapdirect::extend_file(fd, new_size); !r)   // preallocated by default
//     return r.error();                                      // errc::sealed while sealed
//   mapdirect::punch_hole(fd, offset, length);
#ifndef MAPDIRECT_FILE_HPP
#define MAPDIRECT_FILE_HPP

#include "config.hpp"
#include "detail/restore_size.hpp"
#include "detail/seal_registry.hpp"
#include "detail/syscall.hpp"
#include "error.hpp"

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <limits>

#include <sched.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

MAPDIRECT_BEGIN_NAMESPACE

namespace detail {
/// Block-map changes by these helpers in flight, counted per inode bucket.
/// Why: the seal check and the ftruncate/fallocate are two steps. A helper
/// counts itself in before it checks, and iomap_seal::acquire registers its
/// seal before it waits here for the bucket to drain: so either the helper
/// sees the seal and refuses, or the seal waits until the helper's change is
/// done and then stabilises (and verifies) the result.
struct blockmap_changes {
  static constexpr std::size_t buckets = 64;
  static std::atomic<unsigned>& bucket(ino_t ino) noexcept {
    static std::atomic<unsigned> in_flight[buckets];  // static storage: zero-initialised
    return in_flight[static_cast<std::size_t>(ino) % buckets];
  }
  /// Waits until no helper change on a file of this bucket is in flight.
  static void wait_idle(ino_t ino) noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    while (bucket(ino).load(std::memory_order_seq_cst) != 0) ::sched_yield();
  }
};

/// One helper's change: fstat + the seal check, counted in blockmap_changes
/// until destroyed. Sets `st` on success.
class unsealed_change {
 public:
  unsealed_change() noexcept = default;
  ~unsealed_change() {
    if (counted_) blockmap_changes::bucket(ino_).fetch_sub(1, std::memory_order_seq_cst);
  }
  unsealed_change(const unsealed_change&) = delete;
  unsealed_change& operator=(const unsealed_change&) = delete;

  std::error_code begin(int fd, const char* what, struct stat& st) noexcept {
    if (fd < 0) return fail(errc::invalid_argument, "%s: negative file descriptor %d", what, fd);
    if (sys::fstat(fd, &st) != 0) return fail_errno(errno, "%s", what);
    if (!S_ISREG(st.st_mode)) return fail(errc::invalid_argument, "%s: not a regular file", what);
    ino_ = st.st_ino;
    blockmap_changes::bucket(ino_).fetch_add(1, std::memory_order_seq_cst);
    counted_ = true;
    if (const std::size_t n = seal_registry::count(st.st_dev, st.st_ino))
      return fail(errc::sealed,
                  "%s: refused: %zu iomap_seal(s) held on this file (device %llu, inode %llu); release "
                  "them first",
                  what, n, static_cast<unsigned long long>(st.st_dev), static_cast<unsigned long long>(st.st_ino));
    return {};
  }

 private:
  ino_t ino_ = 0;
  bool counted_ = false;
};

inline bool fits_off_t(std::uint64_t v) noexcept {
  return v <= static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());
}
}  // namespace detail

/// Sets the file's size (grows sparse or shrinks), like ftruncate.
/// Errors: errc::sealed, errc::invalid_argument (bad fd, not a regular file,
/// size beyond off_t), ftruncate errno codes (EFBIG, EIO, EPERM, EBADF).
inline result<void> resize_file(int fd, std::uint64_t size) noexcept {
  detail::clear_detail();
  struct stat st {};
  detail::unsealed_change change;
  if (auto ec = change.begin(fd, "resize_file", st)) return ec;
  if (!detail::fits_off_t(size)) return detail::fail(errc::invalid_argument, "resize_file: size beyond off_t");
  if (detail::sys::ftruncate(fd, static_cast<off_t>(size)) != 0)
    return detail::file_errno(errno, "resize_file: ftruncate");
  return outcome::success();
}

/// Shrinks the file to `size` (which must not exceed the current size).
/// Errors: errc::sealed, errc::invalid_argument (size larger than the file),
/// ftruncate errno codes.
inline result<void> truncate_file(int fd, std::uint64_t size) noexcept {
  detail::clear_detail();
  struct stat st {};
  detail::unsealed_change change;
  if (auto ec = change.begin(fd, "truncate_file", st)) return ec;
  if (size > static_cast<std::uint64_t>(st.st_size))
    return detail::fail(errc::invalid_argument,
                        "truncate_file: %llu is larger than the file (%lld bytes); use extend_file",
                        static_cast<unsigned long long>(size), static_cast<long long>(st.st_size));
  if (detail::sys::ftruncate(fd, static_cast<off_t>(size)) != 0)
    return detail::file_errno(errno, "truncate_file: ftruncate");
  return outcome::success();
}

/// Grows the file to `size` (which must not be below the current size);
/// with `preallocate` the new blocks are allocated (fallocate, falling back
/// to a sparse extension where unsupported). On failure the size is
/// unchanged; where a fallocate that failed part way had grown it and putting
/// it back fails too (EIO), last_error_detail() says so and gives the size.
/// Errors: errc::sealed, errc::invalid_argument (size below the file's),
/// fallocate/ftruncate errno codes (ENOSPC, EDQUOT, EFBIG).
inline result<void> extend_file(int fd, std::uint64_t size, bool preallocate = true) noexcept {
  detail::clear_detail();
  struct stat st {};
  detail::unsealed_change change;
  if (auto ec = change.begin(fd, "extend_file", st)) return ec;
  const auto old_size = static_cast<std::uint64_t>(st.st_size);
  if (size < old_size)
    return detail::fail(errc::invalid_argument, "extend_file: %llu is below the file's size (%llu); use truncate_file",
                        static_cast<unsigned long long>(size), static_cast<unsigned long long>(old_size));
  if (!detail::fits_off_t(size)) return detail::fail(errc::invalid_argument, "extend_file: size beyond off_t");
  if (size == old_size) return outcome::success();
  if (preallocate) {
    if (detail::sys::fallocate(fd, 0, st.st_size, static_cast<off_t>(size - old_size)) == 0) return outcome::success();
    const int e = errno;
    if (e != EOPNOTSUPP) {
      // fallocate may have grown the file before failing (ext4 raises the
      // size as it allocates): put the size back, and say whether it is.
      const std::error_code ec = detail::file_errno(e, "extend_file: fallocate");
      struct stat now {};
      if (detail::sys::fstat(fd, &now) == 0 && now.st_size == st.st_size)
        detail::append_detail("the file's size is unchanged (%llu)", static_cast<unsigned long long>(old_size));
      else (void)detail::restore_size(fd, old_size);
      return ec;
    }
  }
  if (detail::sys::ftruncate(fd, static_cast<off_t>(size)) != 0)
    return detail::file_errno(errno, "extend_file: ftruncate");
  return outcome::success();
}

/// Deallocates [offset, offset+length) (reads as zeros afterwards); the
/// size is unchanged. Errors: errc::sealed, errc::invalid_argument (length
/// 0, overflow), errc::beyond_eof (offset at or past EOF), fallocate errno
/// codes (EOPNOTSUPP: the file system cannot punch holes).
inline result<void> punch_hole(int fd, std::uint64_t offset, std::uint64_t length) noexcept {
  detail::clear_detail();
  struct stat st {};
  detail::unsealed_change change;
  if (auto ec = change.begin(fd, "punch_hole", st)) return ec;
  if (length == 0) return detail::fail(errc::invalid_argument, "punch_hole: length 0");
  if (!detail::fits_off_t(offset) || length > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) - offset)
    return detail::fail(errc::invalid_argument, "punch_hole: range overflows off_t");
  if (offset >= static_cast<std::uint64_t>(st.st_size))
    return detail::fail(errc::beyond_eof, "punch_hole: offset %llu is at or past EOF (%lld)",
                        static_cast<unsigned long long>(offset), static_cast<long long>(st.st_size));
  if (detail::sys::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                             static_cast<off_t>(length)) != 0)
    return detail::file_errno(errno, "punch_hole: fallocate(FALLOC_FL_PUNCH_HOLE)");
  return outcome::success();
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_FILE_HPP
