// SPDX-License-Identifier: MIT
// File I/O on a mapped file's descriptor: direct_mapping::repair's rewrite
// of a poisoned range (pwrite through a description that honours offsets,
// fdatasync, then a guarded read-back through the mapping).
#ifndef MAPDIRECT_DETAIL_FILE_IO_HPP
#define MAPDIRECT_DETAIL_FILE_IO_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "../guard.hpp"
#include "descriptor.hpp"
#include "durability.hpp"
#include "seal_registry.hpp"
#include "syscall.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>

MAPDIRECT_BEGIN_NAMESPACE

namespace detail {

// Where repair_range writes: the mapping's descriptor, or a description of
// mapdirect's own (closed keeping the process's record locks), or an
// aligned bounce copy of the source for an O_DIRECT dup.
struct repair_writer {
  int fd = -1;
  int own = -1;
  unsigned char* bounce = nullptr;
  repair_writer() noexcept = default;
  repair_writer(const repair_writer&) = delete;
  repair_writer& operator=(const repair_writer&) = delete;
  ~repair_writer() {
    if (own >= 0) close_keeping_locks_quietly(own);
    std::free(bounce);
  }
};

// A descriptor open with O_APPEND (pwrite would append) or O_DIRECT
// (unaligned buffers refused) is not written through: a description of
// mapdirect's own is; failing that, O_DIRECT goes through a page-aligned copy
// of `from` (which then points at it) and O_APPEND is refused before any write.
inline access_result<void> open_repair_writer(int fd, std::uint64_t at, std::size_t n, std::size_t page,
                                              const unsigned char*& from, repair_writer& out) noexcept {
  out.fd = fd;
  const int fl = sys::fcntl(fd, F_GETFL);
  if (fl < 0) return access_error(fail_errno(errno, "repair: fcntl(F_GETFL)"));
  if (!(fl & (O_APPEND | O_DIRECT))) return outcome::success();
  struct stat st {};
  // Never reopen a file a seal of this process leases: the open would break the lease.
  const bool leased = sys::fstat(fd, &st) == 0 && seal_registry::leased(st.st_dev, st.st_ino);
  const own_descriptor d = reopen_description(fd, O_RDWR, leased);
  if (d.fd < 0) return access_error(fail_errno(errno, "repair: reopening the file"));
  if (d.own_description) {
    out.fd = out.own = d.fd;
    return outcome::success();
  }
  close_keeping_locks_quietly(d.fd);
  if (fl & O_APPEND)
    return access_error(fail(errc::invalid_argument,
                             "repair: the mapping's descriptor is open with O_APPEND (pwrite would append instead "
                             "of rewriting offset %llu) and a description of its own could not be opened (%s); "
                             "nothing was written",
                             static_cast<unsigned long long>(at), errno_name(d.reopen_error)));
  void* aligned = nullptr;
  if (::posix_memalign(&aligned, page, n) != 0)
    return access_error(fail_errno(ENOMEM, "repair: aligned buffer for the O_DIRECT descriptor"));
  out.bounce = static_cast<unsigned char*>(aligned);
  std::memcpy(out.bounce, from, n);
  from = out.bounce;
  return outcome::success();
}

// pwrite of all n bytes of `from` at file offset `at` (`offset` within the
// mapping, for the error's range), then fdatasync.
inline access_result<void> repair_write(const repair_writer& out, int map_fd, std::uint64_t at, std::size_t offset,
                                        const unsigned char* from, std::size_t n) noexcept {
  for (std::size_t done = 0; done < n;) {
    const ssize_t w =
        retry_eintr([&] { return sys::pwrite(out.fd, from + done, n - done, static_cast<off_t>(at + done)); });
    // EIO, or EFAULT (the DAX recovery write of some drivers, QEMU's NFIT
    // among them, reports a poisoned destination that way): not cleared.
    if (w < 0 && (errno == EIO || errno == EFAULT)) {
      const int e = errno;
      struct utsname u {};
      const char* release = sys::uname(&u) == 0 ? u.release : "unknown";
      return access_error(fail(errc::media_error,
                               "repair: pwrite at file offset %llu failed with %s: the kernel could not clear "
                               "the poison (DAX recovery writes need Linux 5.19 or later and driver support; "
                               "this kernel is %s). The range stays poisoned.",
                               static_cast<unsigned long long>(at + done), errno_name(e), release),
                          offset + done, n - done, nullptr);
    }
    if (w < 0) return access_error(fail_errno(errno, "repair: pwrite"));
    if (w == 0)
      return access_error(fail(errc::io_error, "repair: pwrite wrote nothing at file offset %llu",
                               static_cast<unsigned long long>(at + done)));
    done += static_cast<std::size_t>(w);
  }
  if (retry_eintr([&] { return sys::fdatasync(out.fd); }) != 0) {
    const int e = errno;
    struct stat st {};
    // The write-back error may be this file's only report of lost data.
    if (is_writeback_error(e) && sys::fstat(map_fd, &st) == 0)
      durability_registry::mark_lost(st.st_dev, st.st_ino, map_fd);
    return access_error(fail_errno(e, "repair: fdatasync after the rewrite"));
  }
  return outcome::success();
}

// After the rewrite: drops the mapping's stale translations of the range and
// reads it back through the mapping under a guard.
inline access_result<void> repair_check(const guard_range& map, std::size_t offset, const unsigned char* from,
                                        std::size_t n) noexcept {
  // Drop this mapping's translations of the range: a page-cache page that was
  // poisoned leaves a hwpoison entry in the page table that would keep
  // faulting although the file now holds good data. Harmless for a shared
  // file mapping (dirty pages stay in the page cache; DAX stores are in media).
  if (sys::madvise(static_cast<unsigned char*>(const_cast<void*>(map.data)) + offset, n, MADV_DONTNEED) != 0)
    return access_error(fail_errno(errno, "repair: madvise(MADV_DONTNEED) to drop stale translations"));
  // The rewrite must be visible through the mapping, and must no longer fault.
  const unsigned char* mapped = static_cast<const unsigned char*>(map.data) + offset;
  auto same = with_guard(map, [mapped, from, n]() noexcept { return std::memcmp(mapped, from, n) == 0; });
  if (!same) {
    const access_error& e = same.error();
    if (!e.is_fault()) return e;
    return access_error(fail(errc::media_error,
                             "repair: the range still faults after the rewrite (%s at offset %llu): "
                             "the kernel did not clear the poison",
                             e.message().c_str(), static_cast<unsigned long long>(e.offset())),
                        e.offset(), e.length(), e.address());
  }
  if (!same.value())
    return access_error(
        fail(errc::io_error, "repair: the mapping does not show the rewritten data at offset %zu", offset));
  return outcome::success();
}

/// direct_mapping::repair: pwrite [offset, offset+n) of `map` (a mapping of
/// map.fd at map.file_offset), fdatasync, then read it back through the
/// mapping under a guard. The caller checked the range.
inline access_result<void> repair_range(const guard_range& map, std::size_t offset, const void* src, std::size_t n,
                                        std::size_t page) noexcept {
  if (offset % page != 0 || n % page != 0)
    return access_error(fail(errc::misaligned_offset,
                             "repair: offset %zu and length %zu must be multiples of the page size %zu "
                             "(the kernel clears poison a page at a time)",
                             offset, n, page));
  if (n == 0) return outcome::success();
  if (!src) return access_error(fail(errc::invalid_argument, "repair: null source with %zu bytes", n));
  const auto* from = static_cast<const unsigned char*>(src);
  const std::uint64_t at = map.file_offset + offset;
  repair_writer out;
  if (auto r = open_repair_writer(map.fd, at, n, page, from, out); !r) return r;
  if (auto r = repair_write(out, map.fd, at, offset, from, n); !r) return r;
  return repair_check(map, offset, from, n);
}

}  // namespace detail

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_FILE_IO_HPP
