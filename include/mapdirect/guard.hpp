// SPDX-License-Identifier: MIT
// SIGBUS-safe access to mapped files: guarded copies and guarded regions that
// turn truncation (past EOF), allocation or I/O failures and memory poison
// into errors that carry the faulting offset, instead of killing the process.
//
//   char buf[256];
//   if (auto r = mapdirect::guarded_copy(buf, p, sizeof buf); !r)   // p: mapped memory
//     report(r.error().code(), r.error().offset());   // beyond_eof, media_error, io_error
//   auto sum = mapdirect::with_guard(p, n, [&] { return crc32(p, n); });  // access_result<uint32_t>
// (direct_mapping::read/write/repair are guarded the same way.)
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
#include "detail/linux_abi.hpp"
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
  access_error(std::error_code code) noexcept
      : value_(code.value()), category_(&code.category()) {}  // NOLINT: implicit
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

  /// The error value (an errc or errno value, as code() shows).
  int value() const noexcept { return value_; }
  /// The error category of code().
  const std::error_category& category() const noexcept { return code().category(); }
  /// code().message().
  std::string message() const { return code().message(); }
  /// True when this holds an error.
  explicit operator bool() const noexcept { return value_ != 0; }
  /// The error as a std::error_code (offset and length dropped).
  operator std::error_code() const noexcept { return code(); }  // NOLINT: implicit on purpose

  /// @name Comparisons
  /// @{

  /// Compares code() with a std::error_code or std::error_condition (offset and length are not compared).
  friend bool operator==(const access_error& a, const std::error_code& b) noexcept { return a.code() == b; }
  friend bool operator==(const std::error_code& b, const access_error& a) noexcept { return a.code() == b; }
  friend bool operator!=(const access_error& a, const std::error_code& b) noexcept { return !(a.code() == b); }
  friend bool operator!=(const std::error_code& b, const access_error& a) noexcept { return !(a.code() == b); }
  friend bool operator==(const access_error& a, const std::error_condition& b) noexcept { return a.code() == b; }
  friend bool operator==(const std::error_condition& b, const access_error& a) noexcept { return a.code() == b; }
  friend bool operator!=(const access_error& a, const std::error_condition& b) noexcept { return !(a.code() == b); }
  friend bool operator!=(const std::error_condition& b, const access_error& a) noexcept { return !(a.code() == b); }
  /// @}

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

// Offsets within a guarded object of addresses clamped to the window
// [lo, hi) (the whole guarded object: the contract of access_error::offset()).
struct fault_window {
  std::uintptr_t base, lo, hi;
  std::size_t rel(std::uintptr_t a) const noexcept {
    a = a < lo ? lo : a > hi ? hi : a;
    return static_cast<std::size_t>(a - base);
  }
};

// BUS_MCEERR_AR: the kernel reports the poisoned range as si_addr with its
// low si_addr_lsb bits cleared, 1 << si_addr_lsb bytes long.
inline access_error poison_error(const fault_window& w, std::uintptr_t addr, int lsb, const char* what) noexcept {
  unsigned shift = lsb > 0 && lsb < 48 ? static_cast<unsigned>(lsb) : 0;
  if (shift == 0)
    while ((std::size_t{1} << shift) < sys::page_size()) ++shift;
  const std::uintptr_t lo = addr & ~((std::uintptr_t{1} << shift) - 1);
  const std::size_t off = w.rel(lo);
  const std::size_t len = w.rel(lo + (std::uintptr_t{1} << shift)) - off;
  const void* fault_ptr = reinterpret_cast<const void*>(addr);
  return access_error(fail(errc::media_error,
                           "%s: poisoned media (BUS_MCEERR_AR) at offset %zu, %zu bytes (fault address %p); "
                           "rewrite the range to clear it (direct_mapping::repair)",
                           what, off, len, fault_ptr),
                      off, len, fault_ptr);
}

// Where the faulting mapping's file ends now, as an address: from the
// guard's descriptor, else from the VMA (/proc/self/maps) of the address.
struct file_end {
  bool known = false;    // the file could be examined
  bool fs_full = false;  // its file system has no free block
  std::uint64_t size = 0;
  std::uintptr_t addr = 0;
};
inline file_end find_file_end(const guard_range& target, std::uintptr_t addr) noexcept {
  file_end e;
  const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(target.data);
  if (target.fd >= 0) {
    e.known = file_facts(target.fd, e.size, e.fs_full);
    if (e.known)
      e.addr = e.size >= target.file_offset && e.size - target.file_offset < target.size
                   ? base + static_cast<std::uintptr_t>(e.size - target.file_offset)
               : e.size < target.file_offset ? base
                                             : base + target.size;
    return e;
  }
  vma_info v;
  if (!find_vma(addr, v)) return e;
  const int fd = open_vma_file(v);
  if (fd < 0) return e;
  e.known = file_facts(fd, e.size, e.fs_full);
  sys::close_quietly(fd);
  if (e.known)
    e.addr = e.size >= v.file_offset ? v.start + static_cast<std::uintptr_t>(e.size - v.file_offset) : v.start;
  return e;
}

/// Turns the fault recorded in `f` into an access_error whose offsets are
/// relative to `target` and clamped to [window, window+window_size) (the
/// whole guarded object: the contract of access_error::offset()) and records
/// the detail. Runs after the jump.
inline access_error fault_error(const guard_frame& f, const guard_range& target, const void* window,
                                std::size_t window_size, const char* what) noexcept {
  const std::uintptr_t addr = f.fault_addr;
  const std::uintptr_t win_lo = reinterpret_cast<std::uintptr_t>(window);
  const fault_window w{reinterpret_cast<std::uintptr_t>(target.data), win_lo, win_lo + window_size};
  const void* fault_ptr = reinterpret_cast<const void*>(addr);
  if (f.fault_code == linux_abi::bus_mceerr_ar) return poison_error(w, addr, f.fault_lsb, what);
  // BUS_ADRERR (or OBJERR/ADRALN): past the end of the file, or a page the
  // kernel could not read or allocate. The file's current size tells which.
  const file_end end = find_file_end(target, addr);
  if (end.known && addr >= end.addr) {
    const std::size_t off = w.rel(end.addr);
    return access_error(fail(errc::beyond_eof,
                             "%s: access past the end of the file at offset %zu (the file now has %llu bytes; "
                             "fault address %p): it was truncated",
                             what, off, static_cast<unsigned long long>(end.size), fault_ptr),
                        off, w.rel(w.hi) - off, fault_ptr);
  }
  const std::size_t page = sys::page_size();
  const std::uintptr_t page_lo = addr & ~static_cast<std::uintptr_t>(page - 1);
  const std::size_t off = w.rel(page_lo);
  const std::size_t len = w.rel(page_lo + page) - off;
  return access_error(fail(errc::io_error, "%s: SIGBUS (si_code %d) at offset %zu (fault address %p)%s", what,
                           f.fault_code, off, fault_ptr,
                           end.fs_full  ? ": the file system is full, a store needed a block"
                           : !end.known ? ": could not tell whether it is past EOF (file unknown)"
                                        : ": the kernel could not read or allocate the page"),
                      off, len, fault_ptr);
}

/// memcpy with SIGBUS on the guarded side(s) turned into an error. src_obj /
/// dst_obj: the object src / dst lie in (offsets are reported relative to
/// it), or null for an unguarded side. Source and destination must not overlap.
// The error path of copy_guarded, out of line so the fast path stays small.
__attribute__((noinline, cold)) inline access_error copy_fault(const guard_frame& frame, const void* dst,
                                                               const void* src, std::size_t n,
                                                               const guard_range* dst_obj, const guard_range* src_obj,
                                                               const char* what) noexcept {
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

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_GUARD_HPP
