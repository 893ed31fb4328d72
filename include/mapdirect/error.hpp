// SPDX-License-Identifier: MIT
// The error vocabulary. Every fallible call returns result<T> (Boost.Outcome's
// std_result<T, std::error_code>): a value or an error code, never an
// exception (built with -fno-exceptions, .value() on an error terminates).
// The code is an errno value (std::system_category: EIO, ENOSPC, ...) or an
// errc, mapdirect's own conditions, each of which also compares equal to the
// nearest std::errc (errc::sealed == std::errc::text_file_busy). A failing
// call also leaves a sentence for people in last_error_detail(): what was
// tried and why it failed, per thread, overwritten by the next failure.
// Guarded accesses (guard.hpp) return access_result<T>, whose error also
// carries the faulting offset.
//
//   auto m = mapdirect::direct_mapping::open("/mnt/pmem/db", opts);
//   if (!m) {
//     if (m.error() == mapdirect::errc::mode_unavailable) ...   // compare with an errc,
//     if (m.error() == std::errc::no_space_on_device) ...      // or a std::errc condition
//     std::fprintf(stderr, "%s: %s\n", m.error().message().c_str(), mapdirect::last_error_detail());
//   }
//   BOOST_OUTCOME_TRY(m.value().persist(0, n));   // in a function returning a result
#ifndef MAPDIRECT_ERROR_HPP
#define MAPDIRECT_ERROR_HPP

#include "config.hpp"

#include <boost/outcome/std_result.hpp>
#include <boost/outcome/try.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

MAPDIRECT_BEGIN_NAMESPACE

namespace outcome = BOOST_OUTCOME_V2_NAMESPACE;

#if MAPDIRECT_HAS_EXCEPTIONS
/// The result of every fallible mapdirect call: a value or a std::error_code.
template <class T>
using result = outcome::std_result<T, std::error_code>;
#else
// Without exceptions, .value() on an error terminates instead of throwing.
template <class T>
using result = outcome::std_result<T, std::error_code, outcome::policy::terminate>;
#endif

/// Error codes specific to mapdirect; each maps onto a std::errc condition.
enum class errc {
  mode_unavailable = 1,     ///< no mode between options.strongest and options.weakest could be had
  granularity_unavailable,  ///< the mapping's store granularity is coarser than the caller accepts
  sealed,                   ///< the block map is sealed (ETXTBSY); equals std::errc::text_file_busy
  beyond_eof,               ///< the range lies at or past the end of the file
  media_error,              ///< poisoned media (BUS_MCEERR_AR)
  io_error,                 ///< an access faulted for a reason other than EOF or poison
  misaligned_offset,        ///< a file offset that must be page-aligned is not
  out_of_range,             ///< an offset/length outside the mapping
  not_mapped,               ///< the object holds no mapping (moved-from or closed)
  invalid_argument,         ///< a malformed argument (message says which)
  block_map_unverifiable,   ///< the file system cannot report its block map (no FIEMAP)
  block_map_unstable,       ///< the block map still has holes, unwritten or shared extents
  lease_broken,             ///< another process opened the file for writing or truncated it
  durability_lost,          ///< an earlier flush failed: dirty data may have been dropped
  lease_compromised,        ///< the lease's signal or owner was changed through a shared description
  read_only,                ///< a write-side call on a read-only mapping; equals std::errc::permission_denied
  reservation_exhausted,    ///< grow() past the reserved address space; equals std::errc::not_enough_memory
  empty_object,             ///< a call on an empty committer, handle or seal (default-constructed, moved-from,
                            ///< released or destroyed); equals std::errc::bad_file_descriptor
};

namespace detail {
class errc_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "mapdirect"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::mode_unavailable: return "no acceptable mapping mode is available for this file";
      case errc::granularity_unavailable: return "store granularity coarser than required";
      case errc::sealed: return "block map is sealed";
      case errc::beyond_eof: return "access at or beyond end of file";
      case errc::media_error: return "media error (poisoned memory)";
      case errc::io_error: return "I/O error while accessing the mapping";
      case errc::misaligned_offset: return "file offset is not page-aligned";
      case errc::out_of_range: return "range outside the mapping";
      case errc::not_mapped: return "no mapping";
      case errc::invalid_argument: return "invalid argument";
      case errc::block_map_unverifiable: return "file system cannot report its block map (no FIEMAP)";
      case errc::block_map_unstable: return "block map has holes, unwritten or shared extents";
      case errc::lease_broken: return "file lease broken by a conflicting open or truncate";
      case errc::durability_lost: return "an earlier flush failed; dirty data may have been lost";
      case errc::lease_compromised:
        return "file lease compromised: its signal or owner was changed by another holder of the description";
      case errc::read_only: return "the mapping is read-only";
      case errc::reservation_exhausted: return "the mapping cannot grow in place beyond its reserved address space";
      case errc::empty_object: return "the object is empty (default-constructed, moved-from or released)";
    }
    return "unknown mapdirect error";
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<errc>(value)) {
      case errc::mode_unavailable:
      case errc::granularity_unavailable:
      case errc::block_map_unverifiable: return std::errc::operation_not_supported;
      case errc::sealed: return std::errc::text_file_busy;
      case errc::beyond_eof:
      case errc::out_of_range: return std::errc::result_out_of_range;
      case errc::media_error:
      case errc::io_error:
      case errc::durability_lost: return std::errc::io_error;
      case errc::misaligned_offset:
      case errc::invalid_argument: return std::errc::invalid_argument;
      // What a call on a closed descriptor gives (EBADF).
      case errc::not_mapped:
      case errc::empty_object: return std::errc::bad_file_descriptor;
      case errc::block_map_unstable: return std::errc::no_space_on_device;
      case errc::lease_broken:
      case errc::lease_compromised: return std::errc::resource_unavailable_try_again;
      // What mmap(PROT_WRITE) of an O_RDONLY descriptor gives (EACCES); not
      // read_only_file_system: the mapping, not the mount, is read-only.
      case errc::read_only: return std::errc::permission_denied;
      // What mremap() without MREMAP_MAYMOVE gives when it cannot grow in place.
      case errc::reservation_exhausted: return std::errc::not_enough_memory;
    }
    return std::error_condition(value, *this);
  }
};
}  // namespace detail

/// The std::error_category of mapdirect::errc.
inline const std::error_category& error_category() noexcept {
  static const detail::errc_category_impl category;
  return category;
}

/// Makes a std::error_code from a mapdirect::errc.
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

/// Human-readable detail of the most recent mapdirect failure on this thread:
/// what was tried and why it failed. Empty when the last failure left none.
inline const char* last_error_detail() noexcept;

namespace detail {
inline char* error_detail_buffer() noexcept {
  static thread_local char buffer[MAPDIRECT_ERROR_DETAIL_SIZE];
  return buffer;
}

/// Records a printf-style detail for the current thread (truncated, never allocates).
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
inline void
set_detail(const char* fmt, ...) noexcept {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(error_detail_buffer(), MAPDIRECT_ERROR_DETAIL_SIZE, fmt, args);
  va_end(args);
}

inline void clear_detail() noexcept { error_detail_buffer()[0] = '\0'; }

// Appends to the current detail text.
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
inline void
append_detail(const char* fmt, ...) noexcept {
  char before[MAPDIRECT_ERROR_DETAIL_SIZE];
  std::snprintf(before, sizeof before, "%s", error_detail_buffer());
  char more[MAPDIRECT_ERROR_DETAIL_SIZE];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(more, sizeof more, fmt, args);
  va_end(args);
  set_detail("%s%s%s", before, *before ? "; " : "", more);
}

/// An error_code from an errno value.
inline std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

// strerror_r is the XSI variant (int; musl, or glibc without _GNU_SOURCE) or
// the GNU one (char*, possibly a static string); the overloads pick by return type.
inline const char* strerror_text(int rc, const char* buf) noexcept { return rc == 0 ? buf : "unknown error"; }
inline const char* strerror_text(const char* text, const char*) noexcept { return text; }

/// The text of errno value `e` (strerror_r, either variant), in `buf` or static storage.
inline const char* errno_text(int e, char* buf, std::size_t size) noexcept {
  return strerror_text(::strerror_r(e, buf, size), buf);
}

/// Fails with errno, recording "<printf-style what>: <strerror> (errno <e>)" as the detail.
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
inline std::error_code
fail_errno(int e, const char* fmt, ...) noexcept {
  char* out = error_detail_buffer();
  va_list args;
  va_start(args, fmt);
  const int n = std::vsnprintf(out, MAPDIRECT_ERROR_DETAIL_SIZE, fmt, args);
  va_end(args);
  const std::size_t size = MAPDIRECT_ERROR_DETAIL_SIZE;
  const std::size_t used = n < 0 ? 0 : std::min(static_cast<std::size_t>(n), size - 1);
  char buf[128];
  std::snprintf(out + used, size - used, ": %s (errno %d)", errno_text(e, buf, sizeof buf), e);
  return errno_code(e);
}

/// Fails with a mapdirect code, recording a printf-style detail.
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
inline std::error_code
fail(errc e, const char* fmt, ...) noexcept {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(error_detail_buffer(), MAPDIRECT_ERROR_DETAIL_SIZE, fmt, args);
  va_end(args);
  return make_error_code(e);
}

/// Fails with errno `e` from a call on a file, ETXTBSY (the kernel sealed the
/// block map) as errc::sealed; records `what`.
inline std::error_code file_errno(int e, const char* what) noexcept {
  if (e == ETXTBSY) return fail(errc::sealed, "%s: ETXTBSY (the file's block map is sealed)", what);
  return fail_errno(e, "%s", what);
}

/// True for the errors with which a flush reports lost write-back (fsyncgate):
/// the kernel may have dropped the dirty pages and reports it only once.
inline bool is_writeback_error(int e) noexcept { return e == EIO || e == ENOSPC || e == EDQUOT; }

inline const char* errno_name(int e) noexcept;

/// Fails with errc::durability_lost after an earlier failed flush of the file
/// (`e`: that flush's errno when known, else 0); the one text of this error.
inline std::error_code fail_durability_lost(const char* what, int e = 0) noexcept {
  return fail(errc::durability_lost,
              "%s: an earlier flush of this file failed%s%s (through this or another mapdirect object in this "
              "process); the kernel may have dropped dirty pages (rewrite the data, then clear_durability_error())",
              what, e != 0 ? " with " : "", e != 0 ? errno_name(e) : "");
}

/// Short name of an errno value ("EOPNOTSUPP"), for messages.
inline const char* errno_name(int e) noexcept {
  switch (e) {
    case EINVAL: return "EINVAL";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOMEM: return "ENOMEM";
    case ETXTBSY: return "ETXTBSY";
    case ENODEV: return "ENODEV";
    case EAGAIN: return "EAGAIN";
    case EBADF: return "EBADF";
    case ENOSPC: return "ENOSPC";
    case EIO: return "EIO";
    case EOVERFLOW: return "EOVERFLOW";
    case ENOSYS: return "ENOSYS";
    case EFBIG: return "EFBIG";
    case EROFS: return "EROFS";
    case 0: return "ok";
    default: return "errno";
  }
}
}  // namespace detail

inline const char* last_error_detail() noexcept { return detail::error_detail_buffer(); }

MAPDIRECT_END_NAMESPACE

namespace std {
template <>
struct is_error_code_enum<mapdirect::errc> : true_type {};
}  // namespace std

#endif  // MAPDIRECT_ERROR_HPP
