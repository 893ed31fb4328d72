// SPDX-License-Identifier: MIT
// SIGBUS-safe access to mapped files: guarded copies and guarded regions that
// turn truncation (past EOF), allocation or I/O failures and memory poison
// into errors that carry the faulting offset, instead of killing the process.
//
// One process-wide SIGBUS handler (installed lazily on first use, or by
// install_sigbus_handler()) returns control to the innermost guard of the
// faulting thread whose range holds the fault address: with siglongjmp to a
// sigsetjmp(env, 1) frame (with_guard; the guard's signal mask comes back
// with it), or, for the copies on x86-64, by moving the instruction pointer
// of the copy routine to its fix-up label. Every other SIGBUS (sent by
// kill/tgkill/sigqueue, asynchronous BUS_MCEERR_AO, or a fault outside any
// guard) goes to the disposition that was installed before ours, exactly as
// if we were not there: SIG_DFL kills with SIGBUS and SIG_IGN ignores (both
// whatever sa_flags says), a handler is called with its sa_mask, SA_NODEFER
// and SA_RESETHAND honoured (the reset is kept in our table, so the guards
// stay). Foreign handlers:
// - installed before ours: called for every SIGBUS no guard owns;
// - installed after ours: it replaces ours; install yours first, or call
//   install_sigbus_handler() again afterwards. If it chains to ours (calls
//   the sa_sigaction it replaced with the same siginfo/ucontext), that call
//   continues with the disposition from before it, never back into it.
// Non-local exits: leaving a guarded region other than by returning (a
// siglongjmp/longjmp from another signal's handler, an exception) is not
// allowed; the thread's guard records then name dead frames. At the recovery
// point call reset_thread_guards(). A fault taken in a foreign signal
// handler that interrupted with_guard's body, at an address that guard
// covers, returns to that guard with the guard's own signal mask.
// fork(): the child inherits the handler and its state; guards and the
// chaining work there as in the parent (the install lock is taken over).
#ifndef MAPDIRECT_GUARD_HPP
#define MAPDIRECT_GUARD_HPP

#include "config.hpp"
#include "detail/descriptor.hpp"
#include "detail/durability.hpp"
#include "detail/guard_copy.hpp"
#include "detail/guard_maps.hpp"
#include "detail/seal_registry.hpp"
#include "detail/sigbus.hpp"
#include "detail/syscall.hpp"
#include "error.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <system_error>
#include <type_traits>
#include <utility>

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

MAPDIRECT_BEGIN_NAMESPACE

/// The error of a guarded access: an error code plus, for a fault, where it
/// happened. Converts to std::error_code and compares like one.
class access_error {
 public:
  access_error() noexcept = default;
  /// A failure that is not a fault (bad argument, handler not installable...).
  access_error(std::error_code code) noexcept : value_(code.value()), category_(&code.category()) {}  // NOLINT: implicit
  /// A fault: bytes [offset, offset+length) of the guarded object are affected.
  access_error(std::error_code code, std::uint64_t offset, std::size_t length, const void* address) noexcept
      : value_(code.value()), category_(&code.category()), offset_(offset), length_(length), address_(address) {}

  /// errc::beyond_eof, errc::media_error, errc::io_error for faults; others for bad calls.
  std::error_code code() const noexcept { return category_ ? std::error_code(value_, *category_) : std::error_code(); }
  /// First affected byte, relative to the guarded object: the mapping for
  /// direct_mapping::read/write/repair, the range for with_guard, the copy
  /// (same offset in source and destination) for guarded_copy. For
  /// beyond_eof it is where the file now ends (clamped to the object: 0 when
  /// the file now ends before the object's start), for media_error the start
  /// of the poisoned range (clamped), for io_error the faulting page. Not
  /// clamped to the bytes the call touched.
  std::uint64_t offset() const noexcept { return offset_; }
  /// Number of affected bytes from offset(): to the end of the object
  /// (beyond_eof), the poisoned range (media_error), one page (io_error).
  std::size_t length() const noexcept { return length_; }
  /// The address the kernel reported (si_addr), or nullptr when no fault.
  const void* address() const noexcept { return address_; }
  /// True when this error comes from a fault inside a guard.
  bool is_fault() const noexcept { return address_ != nullptr; }

  int value() const noexcept { return value_; }
  const std::error_category& category() const noexcept { return code().category(); }
  std::string message() const { return code().message(); }
  explicit operator bool() const noexcept { return value_ != 0; }
  operator std::error_code() const noexcept { return code(); }  // NOLINT: implicit on purpose

  friend bool operator==(const access_error& a, const std::error_code& b) noexcept { return a.code() == b; }
  friend bool operator==(const std::error_code& b, const access_error& a) noexcept { return a.code() == b; }
  friend bool operator!=(const access_error& a, const std::error_code& b) noexcept { return !(a.code() == b); }
  friend bool operator!=(const std::error_code& b, const access_error& a) noexcept { return !(a.code() == b); }
  friend bool operator==(const access_error& a, const std::error_condition& b) noexcept { return a.code() == b; }
  friend bool operator==(const std::error_condition& b, const access_error& a) noexcept { return a.code() == b; }
  friend bool operator!=(const access_error& a, const std::error_condition& b) noexcept { return !(a.code() == b); }
  friend bool operator!=(const std::error_condition& b, const access_error& a) noexcept { return !(a.code() == b); }

 private:
  // Not a std::error_code member: its default constructor calls
  // std::system_category() out of line, on every successful guarded copy.
  int value_ = 0;
  const std::error_category* category_ = nullptr;
  std::uint64_t offset_ = 0;
  std::size_t length_ = 0;
  const void* address_ = nullptr;
};

/// Lets Outcome treat access_error as an error code (TRY into result<T>, value() throwing system_error).
inline std::error_code make_error_code(const access_error& e) noexcept { return e.code(); }

#if MAPDIRECT_HAS_EXCEPTIONS
/// The result of a guarded access: a value or an access_error.
template <class T>
using access_result = outcome::std_result<T, access_error>;
#else
template <class T>
using access_result = outcome::std_result<T, access_error, outcome::policy::terminate>;
#endif

/// Installs mapdirect's SIGBUS handler now instead of on the first guarded
/// access; again after another handler replaced it (that one then receives
/// every SIGBUS no guard owns). Errors: sigaction errno codes (EINVAL...).
/// Safe to call from any thread, from a signal handler and after fork().
inline result<void> install_sigbus_handler() noexcept {
  if (auto ec = detail::install_sigbus_handler()) return ec;
  return outcome::success();
}

/// Forgets every guard record of the calling thread. Call it at the point a
/// non-local exit (siglongjmp out of a signal handler that interrupted a
/// guarded region) lands, before any other guard: the records left behind
/// name dead stack frames. Never call it inside a guarded region. No errors;
/// async-signal-safe; affects the calling thread only.
inline void reset_thread_guards() noexcept { detail::reset_thread_guards(); }

/// A guarded address range, optionally naming the file mapped there (so a
/// past-EOF fault is told from an I/O error by fstat instead of /proc).
struct guard_range {
  const void* data = nullptr;     ///< first guarded byte
  std::size_t size = 0;           ///< guarded length
  int fd = -1;                    ///< file mapped at data, or -1 (then found through /proc/self/maps)
  std::uint64_t file_offset = 0;  ///< file offset mapped at data (with fd)
};

namespace detail {

inline std::error_code check_guard_range(const void* data, std::size_t size, const char* what) noexcept {
  if (size == 0) return {};
  if (!data) return fail(errc::invalid_argument, "%s: null pointer with %zu bytes", what, size);
  const auto a = reinterpret_cast<std::uintptr_t>(data);
  if (size > std::numeric_limits<std::uintptr_t>::max() - a)
    return fail(errc::invalid_argument, "%s: range of %zu bytes wraps the address space", what, size);
  return {};
}

inline void set_guard_range(guard_frame& f, int slot, const void* data, std::size_t size) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(data);
  f.lo[slot] = a;
  f.hi[slot] = a + size;
}

/// Size of the file behind `fd` and whether its file system has no free block.
inline bool file_facts(int fd, std::uint64_t& size, bool& fs_full) noexcept {
  struct stat st {};
  if (sys::fstat(fd, &st) != 0) return false;
  if (!S_ISREG(st.st_mode)) return false;  // a device (DAX) has no st_size: never "past EOF"
  size = static_cast<std::uint64_t>(st.st_size);
  struct statfs sf {};
  fs_full = sys::fstatfs(fd, &sf) == 0 && sf.f_bavail == 0;
  return true;
}

/// Turns the fault recorded in `f` into an access_error whose offsets are
/// relative to `target` and clamped to [window, window+window_size) (the
/// whole guarded object: the contract of access_error::offset()) and records
/// the detail. Runs after the jump.
inline access_error fault_error(const guard_frame& f, const guard_range& target, const void* window,
                                std::size_t window_size, const char* what) noexcept {
  const int code = f.fault_code;
  const std::uintptr_t addr = f.fault_addr;
  const int lsb = f.fault_lsb;
  const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(target.data);
  const std::uintptr_t win_lo = reinterpret_cast<std::uintptr_t>(window);
  const std::uintptr_t win_hi = win_lo + window_size;
  const std::size_t size = target.size;
  const std::size_t page = sys::page_size();
  const void* fault_ptr = reinterpret_cast<const void*>(addr);
  // Offset of address a within the target, after clamping a to the window.
  auto rel = [&](std::uintptr_t a) -> std::size_t {
    a = a < win_lo ? win_lo : a > win_hi ? win_hi : a;
    return static_cast<std::size_t>(a - base);
  };

  if (code == BUS_MCEERR_AR) {
    // The kernel reports the poisoned range as si_addr with its low
    // si_addr_lsb bits cleared, 1 << si_addr_lsb bytes long.
    unsigned shift = lsb > 0 && lsb < 48 ? static_cast<unsigned>(lsb) : 0;
    if (shift == 0)
      while ((std::size_t{1} << shift) < page) ++shift;
    const std::uintptr_t lo = addr & ~((std::uintptr_t{1} << shift) - 1);
    const std::size_t off = rel(lo);
    const std::size_t len = rel(lo + (std::uintptr_t{1} << shift)) - off;
    return access_error(fail(errc::media_error,
                             "%s: poisoned media (BUS_MCEERR_AR) at offset %zu, %zu bytes (fault address %p); "
                             "rewrite the range to clear it (direct_mapping::repair)",
                             what, off, len, fault_ptr),
                        off, len, fault_ptr);
  }

  // BUS_ADRERR (or OBJERR/ADRALN): past the end of the file, or a page the
  // kernel could not read or allocate. The file's current size tells which.
  std::uint64_t file_size = 0;
  bool fs_full = false;
  bool known = false;
  std::uintptr_t eof_addr = 0;  // address where the file ends
  if (target.fd >= 0) {
    known = file_facts(target.fd, file_size, fs_full);
    if (known)
      eof_addr = file_size >= target.file_offset && file_size - target.file_offset < size
                     ? base + static_cast<std::uintptr_t>(file_size - target.file_offset)
                 : file_size < target.file_offset ? base
                                                  : base + size;
  } else {
    vma_info v;
    if (find_vma(addr, v)) {
      const int fd = open_vma_file(v);
      if (fd >= 0) {
        known = file_facts(fd, file_size, fs_full);
        sys::close_quietly(fd);
        if (known)
          eof_addr = file_size >= v.file_offset ? v.start + static_cast<std::uintptr_t>(file_size - v.file_offset)
                                                : v.start;
      }
    }
  }
  if (known && addr >= eof_addr) {
    const std::size_t off = rel(eof_addr);
    return access_error(fail(errc::beyond_eof,
                             "%s: access past the end of the file at offset %zu (the file now has %llu bytes; "
                             "fault address %p): it was truncated",
                             what, off, static_cast<unsigned long long>(file_size), fault_ptr),
                        off, rel(win_hi) - off, fault_ptr);
  }
  const std::uintptr_t page_lo = addr & ~static_cast<std::uintptr_t>(page - 1);
  const std::size_t off = rel(page_lo);
  const std::size_t len = rel(page_lo + page) - off;
  return access_error(fail(errc::io_error, "%s: SIGBUS (si_code %d) at offset %zu (fault address %p)%s", what, code,
                           off, fault_ptr,
                           fs_full   ? ": the file system is full, a store needed a block"
                           : !known ? ": could not tell whether it is past EOF (file unknown)"
                                     : ": the kernel could not read or allocate the page"),
                      off, len, fault_ptr);
}

/// memcpy with SIGBUS on the guarded side(s) turned into an error. src_obj /
/// dst_obj: the object src / dst lie in (offsets are reported relative to
/// it), or null for an unguarded side. Source and destination must not overlap.
// The error path of copy_guarded, out of line so the fast path stays small.
__attribute__((noinline, cold)) inline access_error copy_fault(const guard_frame& frame, const void* dst,
                                                               const void* src, std::size_t n,
                                                               const guard_range* dst_obj,
                                                               const guard_range* src_obj, const char* what) noexcept {
  // Offsets and lengths follow the object (the mapping for read/write), not
  // the n bytes copied: "where the file now ends" and "to the object's end".
  (void)dst;
  (void)src;
  (void)n;
  const std::uintptr_t a = frame.fault_addr;
  if (src_obj && a >= frame.lo[0] && a < frame.hi[0])
    return fault_error(frame, *src_obj, src_obj->data, src_obj->size, what);
  return fault_error(frame, *dst_obj, dst_obj->data, dst_obj->size, what);
}

__attribute__((always_inline)) inline access_result<void> copy_guarded(void* dst, const void* src, std::size_t n,
                                                                       const guard_range* dst_obj,
                                                                       const guard_range* src_obj,
                                                                       const char* what) noexcept {
  if (n == 0) return outcome::success();
  if (auto ec = ensure_sigbus_handler()) return access_error(ec);
  guard_frame frame;
  set_guard_range(frame, 0, src_obj ? src : nullptr, src_obj ? n : 0);
  set_guard_range(frame, 1, dst_obj ? dst : nullptr, dst_obj ? n : 0);
  if (copy_in_frame(frame, dst, src, n)) return outcome::success();
  return copy_fault(frame, dst, src, n, dst_obj, src_obj, what);
}

template <class T>
using byte_range_pointer = decltype(std::declval<T&>().data());

/// A contiguous range of trivially copyable elements (std::span, std::vector,
/// std::string, std::array...), seen as bytes.
template <class T, class = void>
struct is_byte_range : std::false_type {};
template <class T>
struct is_byte_range<T, std::void_t<byte_range_pointer<T>, decltype(std::declval<T&>().size())>>
    : std::bool_constant<std::is_pointer<byte_range_pointer<T>>::value &&
                         std::is_trivially_copyable<std::remove_pointer_t<byte_range_pointer<T>>>::value> {};

template <class T>
std::size_t byte_size(T& r) noexcept {
  return static_cast<std::size_t>(r.size()) * sizeof(*r.data());
}

}  // namespace detail

/// Copies n bytes from src to dst (which must not overlap), either of which
/// may be mapped; a SIGBUS on either becomes an error instead of a crash. On
/// error the destination's contents are unspecified.
/// Errors: errc::beyond_eof (the file was truncated under the copy),
/// errc::media_error (poison; offset()/length() give the poisoned range),
/// errc::io_error (the page could not be read or allocated, e.g. a full file
/// system), errc::invalid_argument, sigaction errno codes (handler install).
inline access_result<void> guarded_copy(void* dst, const void* src, std::size_t n) noexcept {
  if (auto ec = detail::check_guard_range(src, n, "guarded_copy (source)")) return access_error(ec);
  if (auto ec = detail::check_guard_range(dst, n, "guarded_copy (destination)")) return access_error(ec);
  const guard_range source{src, n, -1, 0};
  const guard_range destination{dst, n, -1, 0};
  return detail::copy_guarded(dst, src, n, &destination, &source, "guarded_copy");
}

/// guarded_copy of a whole byte range (std::span, vector, string, array...)
/// into dst. Errors: as guarded_copy; errc::invalid_argument if dst is smaller.
template <class Dst, class Src,
          class = std::enable_if_t<detail::is_byte_range<std::remove_reference_t<Dst>>::value &&
                                   detail::is_byte_range<std::remove_reference_t<Src>>::value>>
access_result<void> guarded_copy(Dst&& dst, Src&& src) noexcept {
  static_assert(!std::is_const<std::remove_pointer_t<detail::byte_range_pointer<std::remove_reference_t<Dst>>>>::value,
                "guarded_copy: the destination must be writable");
  const std::size_t n = detail::byte_size(src);
  if (detail::byte_size(dst) < n)
    return access_error(detail::fail(errc::invalid_argument, "guarded_copy: destination of %zu bytes < source of %zu",
                                     detail::byte_size(dst), n));
  return guarded_copy(static_cast<void*>(dst.data()), static_cast<const void*>(src.data()), n);
}

/// Runs fn() with SIGBUS inside range turned into an error; returns fn's
/// result (void or a trivially destructible type).
/// Rule for fn, because a fault abandons its frames without unwinding them:
/// no object with a non-trivial destructor, no lock taken, no allocation,
/// no exception, inside fn. Guards nest; a fault goes to the innermost
/// guard whose range holds it. Errors: errc::beyond_eof, errc::media_error,
/// errc::io_error (offset() relative to range.data), errc::invalid_argument,
/// sigaction errno codes (handler install).
template <class F>
auto with_guard(const guard_range& range, F&& fn) noexcept -> access_result<std::invoke_result_t<F&>> {
  using R = std::invoke_result_t<F&>;
  static_assert(std::is_void<R>::value || std::is_trivially_destructible<R>::value,
                "with_guard: a fault abandons the result, so it must be trivially destructible");
  if (auto ec = detail::check_guard_range(range.data, range.size, "with_guard")) return access_error(ec);
  if (auto ec = detail::ensure_sigbus_handler()) return access_error(ec);
  detail::guard_frame frame;
  detail::set_guard_range(frame, 0, range.data, range.size);
  detail::set_guard_range(frame, 1, nullptr, 0);
  if constexpr (std::is_void<R>::value) {
    if (detail::run_guarded(frame, fn)) return outcome::success();
  } else {
    // Constructed in place by the region; never destroyed (trivially destructible).
    alignas(R) unsigned char storage[sizeof(R)];
    auto body = [&storage, &fn]() { ::new (static_cast<void*>(storage)) R(fn()); };
    if (detail::run_guarded(frame, body)) return std::move(*std::launder(reinterpret_cast<R*>(storage)));
  }
  return detail::fault_error(frame, range, range.data, range.size, "with_guard");
}

/// with_guard over [data, data+size) (the file found through /proc/self/maps if a fault needs it).
template <class F>
auto with_guard(const void* data, std::size_t size, F&& fn) noexcept -> access_result<std::invoke_result_t<F&>> {
  return with_guard(guard_range{data, size, -1, 0}, std::forward<F>(fn));
}

namespace detail {

/// direct_mapping::repair: pwrite [offset, offset+n) of `map` (a mapping of
/// map.fd at map.file_offset), fdatasync, then read it back through the
/// mapping under a guard. The caller checked the range. A descriptor open
/// with O_APPEND (pwrite would append) or O_DIRECT (unaligned buffers
/// refused) is not written through: a description of mapdirect's own is
/// (closed keeping the process's record locks); failing that, O_DIRECT goes
/// through a page-aligned copy and O_APPEND is refused before any write.
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
  struct writer {
    int fd = -1;
    int own = -1;                 // our own description, closed keeping record locks
    unsigned char* bounce = nullptr;  // page-aligned copy for an O_DIRECT dup
    ~writer() {
      if (own >= 0) close_keeping_locks_quietly(own);
      std::free(bounce);
    }
  } out;
  out.fd = map.fd;
  const int fl = sys::fcntl(map.fd, F_GETFL);
  if (fl < 0) return access_error(fail_errno(errno, "repair: fcntl(F_GETFL)"));
  if (fl & (O_APPEND | O_DIRECT)) {
    struct stat st {};
    // Never reopen a file a seal of this process leases: the open would break the lease.
    const bool leased = sys::fstat(map.fd, &st) == 0 && seal_registry::leased(st.st_dev, st.st_ino);
    const own_descriptor d = reopen_description(map.fd, O_RDWR, leased);
    if (d.fd < 0) return access_error(fail_errno(errno, "repair: reopening the file"));
    if (d.own_description) {
      out.fd = out.own = d.fd;
    } else {
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
    }
  }
  for (std::size_t done = 0; done < n;) {
    const ssize_t w = sys::pwrite(out.fd, from + done, n - done, static_cast<off_t>(at + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EIO) {
      struct utsname u {};
      const char* release = sys::uname(&u) == 0 ? u.release : "unknown";
      return access_error(fail(errc::media_error,
                               "repair: pwrite at file offset %llu failed with EIO: the kernel could not clear "
                               "the poison (DAX recovery writes need Linux 5.19 or later and driver support; "
                               "this kernel is %s). The range stays poisoned.",
                               static_cast<unsigned long long>(at + done), release),
                          offset + done, n - done, nullptr);
    }
    if (w < 0) return access_error(fail_errno(errno, "repair: pwrite"));
    if (w == 0)
      return access_error(fail(errc::io_error, "repair: pwrite wrote nothing at file offset %llu",
                               static_cast<unsigned long long>(at + done)));
    done += static_cast<std::size_t>(w);
  }
  if (sys::fdatasync(out.fd) != 0) {
    const int e = errno;
    struct stat st {};
    // The write-back error may be this file's only report of lost data.
    if (is_writeback_error(e) && sys::fstat(map.fd, &st) == 0) durability_registry::mark_lost(st.st_dev, st.st_ino, map.fd);
    return access_error(fail_errno(e, "repair: fdatasync after the rewrite"));
  }
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
    return access_error(fail(errc::io_error, "repair: the mapping does not show the rewritten data at offset %zu",
                             offset));
  return outcome::success();
}

}  // namespace detail

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_GUARD_HPP
