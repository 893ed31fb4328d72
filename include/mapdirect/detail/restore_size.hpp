// SPDX-License-Identifier: MIT
// The one rollback of a file's size: extend_file, iomap_seal::acquire and
// direct_mapping::grow put back a size they grew when a later step fails,
// and say in the detail whether that worked.
#ifndef MAPDIRECT_DETAIL_RESTORE_SIZE_HPP
#define MAPDIRECT_DETAIL_RESTORE_SIZE_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "syscall.hpp"

#include <cerrno>
#include <cstdint>

#include <sys/stat.h>
#include <sys/types.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {
// Puts a file grown by a failed operation back to `old_size`, appending to the
// detail whether that worked: a failed ftruncate (EIO, a native seal) leaves it
// larger, and the caller must not be told otherwise. Call it after the
// failure's own detail is set (it appends). Returns true when restored.
inline bool restore_size(int fd, std::uint64_t old_size) noexcept {
  if (retry_eintr([&] { return sys::ftruncate(fd, static_cast<off_t>(old_size)); }) == 0) {
    append_detail("the file's size is restored to %llu", static_cast<unsigned long long>(old_size));
    return true;
  }
  const int e = errno;
  struct stat st {};
  const long long now = sys::fstat(fd, &st) == 0 ? static_cast<long long>(st.st_size) : -1;
  append_detail("restoring the file's size to %llu failed with %s: it is %lld bytes now",
                static_cast<unsigned long long>(old_size), errno_name(e), now);
  return false;
}
}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_RESTORE_SIZE_HPP
