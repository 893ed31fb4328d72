// SPDX-License-Identifier: MIT
// iomap_seal: keeps the block map of a file range fixed so that MAP_SYNC
// faults never allocate and shared-mode stores never meet ENOSPC.
//
//   auto s = mapdirect::iomap_seal::acquire(fd, 0, length);  // allocate, write, verify
//   if (!s) return s.error();                 // e.g. errc::block_map_unstable, ENOSPC
//   ...                                       // map and store: no fault allocates
//   mapdirect::extend_file(fd, 2 * length);   // refused while held: errc::sealed
//   s.value().release();
// (or map_options::seal, which seals the mapped range as part of the map).
//
// Native: a kernel carrying the MAP_DIRECT series pins the block map of an
// open file description (fcntl F_MAY_SEAL_IOMAP, CAP_LINUX_IMMUTABLE; the
// permission travels with the descriptor over SCM_RIGHTS) and refuses
// block-map changes with ETXTBSY. Built only when MAPDIRECT_F_MAY_SEAL_IOMAP
// and MAPDIRECT_MAP_DIRECT_FLAG are defined.
//
// Stabilised (mainline kernels): every block of the range is made allocated,
// written and unshared (fallocate, FIEMAP, unshare, dirtying pages in place,
// fdatasync) and verified with FIEMAP. Nothing stops another process from changing the
// block map afterwards; mapdirect's own helpers (file.hpp) refuse while the
// seal is held, and an optional write lease reports conflicting opens.
#ifndef MAPDIRECT_SEAL_HPP
#define MAPDIRECT_SEAL_HPP

#include "config.hpp"
#include "detail/descriptor.hpp"
#include "detail/durability.hpp"
#include "detail/fiemap.hpp"
#include "detail/seal_lease.hpp"
#include "detail/seal_registry.hpp"
#include "detail/syscall.hpp"
#include "error.hpp"
#include "file.hpp"
#include "guard.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <utility>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>

MAPDIRECT_BEGIN_NAMESPACE

/// How a seal holds the block map.
enum class seal_kind {
  native,      ///< the kernel pins it (F_MAY_SEAL_IOMAP): changes fail with ETXTBSY
  stabilised,  ///< made allocated, written and unshared, and verified; not enforced by the kernel
};

/// Which kind acquire() may return.
enum class seal_method {
  automatic,   ///< native when built in and the kernel knows it, else stabilised
  native,      ///< native only (errc::mode_unavailable when not built in or the kernel lacks it)
  stabilised,  ///< stabilised only
};

/// Name of a seal kind ("stabilised").
constexpr const char* to_string(seal_kind k) noexcept {
  switch (k) {
    case seal_kind::native: return "native";
    case seal_kind::stabilised: return "stabilised";
  }
  return "?";
}

/// Progress of iomap_seal::acquire on a large range: `done` of `total` units
/// of work (bytes of the range walked, twice: allocating, then unsharing and
/// writing). Return false to cancel. Called on acquire's thread; must not
/// call into mapdirect's seal or file helpers for the same file.
using seal_progress = bool (*)(std::uint64_t done, std::uint64_t total, void* context) noexcept;

/// Options for iomap_seal::acquire.
struct seal_options {
  /// Which kind of seal to take.
  seal_method method = seal_method::automatic;
  /// Allow a range past the end of the file: the file is grown to cover it
  /// (only after its blocks were allocated; rolled back on failure). Without
  /// it such a range fails with errc::beyond_eof and nothing changes.
  bool extend = false;
  /// On a file system without FIEMAP (tmpfs), succeed after allocating and
  /// syncing, with verified() false. Without it acquire fails with
  /// errc::block_map_unverifiable before changing anything.
  bool allow_unverifiable = false;
  /// Take a write lease (F_SETLEASE) to learn of conflicting opens and
  /// truncates: see iomap_seal::lease_broken(). Needs the descriptor to be the
  /// file's only open file description, and file ownership or CAP_LEASE.
  /// Installs a signal handler for lease_signal (kept for the process's life)
  /// and sets the description's F_SETSIG/F_SETOWN (restored on release). Should
  /// the realtime signal queue overflow (RLIMIT_SIGPENDING), the kernel falls
  /// back to SIGIO, whose default action ends the process.
  bool lease = false;
  /// Realtime signal for lease breaks; 0 picks SIGRTMIN+6. It must have no
  /// other handler.
  int lease_signal = 0;
  /// Called as acquire() works through the range (after each step of at
  /// least 64 MiB, and once at the end of each pass, so at least twice when
  /// the file system reports its block map; once on one that does not).
  /// Returning false cancels: acquire fails with
  /// std::errc::operation_canceled, the file's size is restored and no byte
  /// of data has changed (blocks allocated so far stay allocated and read as
  /// zeros, as after any failed acquire). Should restoring the size fail
  /// (EIO), last_error_detail() says so and gives the size it has.
  seal_progress progress = nullptr;
  /// Passed to progress unchanged.
  void* progress_context = nullptr;
};

/// What acquire() found and did.
struct seal_report {
  std::uint64_t extents = 0;          ///< extents covering the range afterwards (0 when unverified)
  std::uint64_t allocated_bytes = 0;  ///< bytes of holes (and delayed allocation) found before
  std::uint64_t zeroed_bytes = 0;     ///< bytes of unwritten extents converted (pages dirtied in place, written back)
  std::uint64_t unshared_bytes = 0;   ///< bytes of shared extents unshared (FALLOC_FL_UNSHARE_RANGE or rewrite)
  bool rewrote_shared = false;        ///< unsharing used a copy-on-write rewrite (no FALLOC_FL_UNSHARE_RANGE)
  bool verified = false;              ///< FIEMAP confirmed the range stable (false only with allow_unverifiable)
  bool extended = false;              ///< the file was grown (seal_options::extend)
};

/// A move-only RAII seal on the block map of (fd, offset, length). The seal
/// keeps a descriptor of its own: a new open file description of the file
/// (so the caller's O_APPEND, O_DIRECT or O_NONBLOCK never apply to it), or,
/// with seal_options::lease (a write lease needs the file's only
/// description) or when the reopen is refused, a duplicate of fd. It never
/// releases the process's POSIX record locks: its descriptor's close is
/// deferred while the process holds any on the file. The destructor releases
/// and never throws; release() reports errors.
///
/// Thread-safety: distinct seals may be used from any threads; one seal's
/// const members (verify, lease_broken, lease_compromised) may run
/// concurrently, release/move need exclusive access. acquire is atomic
/// against file.hpp's helpers running in other threads. Fork: the child
/// inherits the descriptor but not the lease's notices (signals go to the
/// parent); release the seal in the child only if the child owns it.
///
/// What a stabilised seal cannot see: block-map changes by other processes
/// (or by this one bypassing file.hpp) are not prevented; verify() detects
/// them afterwards. The optional lease sees other opens (from any process,
/// this one included) and truncate(2), but not writes, fallocate or
/// ftruncate through descriptors opened before the lease, nor stores
/// through mappings.
class iomap_seal {
 public:
  /// An empty seal.
  iomap_seal() noexcept = default;
  /// Takes over `o`'s seal; `o` becomes empty.
  iomap_seal(iomap_seal&& o) noexcept { swap(o); }
  /// Releases this seal (as release(), errors dropped), then takes over `o`'s.
  iomap_seal& operator=(iomap_seal&& o) noexcept {
    if (this != &o) {
      iomap_seal tmp(std::move(o));
      swap(tmp);
    }
    return *this;
  }
  iomap_seal(const iomap_seal&) = delete;
  iomap_seal& operator=(const iomap_seal&) = delete;
  ~iomap_seal() { (void)release(); }

  /// Seals [offset, offset+length) of fd (any O_RDWR descriptor, O_APPEND
  /// and O_DIRECT ones included); length 0 means to the end of the file.
  /// Unwritten, shared and hole blocks are made written by dirtying each
  /// page through a shared mapping with an atomic compare-and-swap of a byte
  /// with its own value, never by reading and writing data back: a store by
  /// another thread or process into the range while acquiring is never
  /// overwritten (only where the file system cannot be mapped does a
  /// read-and-write-back remain, whose window is one chunk).
  /// On failure the file's size and every existing byte are unchanged; blocks
  /// allocated before the failure stay allocated (and read as zeros).
  /// Errors: errc::invalid_argument, errc::beyond_eof (range past EOF without
  /// extend), errc::block_map_unverifiable (no FIEMAP; nothing changed),
  /// errc::block_map_unstable (still not stable after stabilising),
  /// errc::sealed (ETXTBSY: natively sealed elsewhere), errc::mode_unavailable
  /// (method native, not available), ENOSPC/EDQUOT (size and data unchanged),
  /// EPERM/EACCES (native: CAP_LINUX_IMMUTABLE missing), lease errors (EAGAIN,
  /// EACCES, ENFILE), other errno codes (EBADF, EIO, ENOMEM).
  static result<iomap_seal> acquire(int fd, std::uint64_t offset, std::uint64_t length,
                                    seal_options options = {}) noexcept;

  /// True when this object holds a seal (false when default-constructed,
  /// moved-from or released).
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Native or stabilised.
  seal_kind kind() const noexcept { return kind_; }
  /// False when the file system could not report its block map (allow_unverifiable).
  bool verified() const noexcept { return report_.verified; }
  /// What acquire() found and did.
  const seal_report& report() const noexcept { return report_; }
  /// Start of the sealed range.
  std::uint64_t offset() const noexcept { return offset_; }
  /// Length of the sealed range.
  std::uint64_t length() const noexcept { return length_; }
  /// The seal's own descriptor (its own description, or with a lease a duplicate of acquire's fd), or -1.
  int native_handle() const noexcept { return fd_; }

  /// Re-checks the range now; returns the number of extents covering it.
  /// Errors: errc::empty_object (empty seal), errc::lease_compromised (the
  /// lease's signal or owner was changed), errc::lease_broken,
  /// errc::block_map_unstable (detail names the first offending byte),
  /// errc::block_map_unverifiable (no FIEMAP), fstat/FIEMAP errno codes.
  result<std::uint64_t> verify() const noexcept;

  /// True when a lease was taken and has since been broken by another open
  /// or a truncate, is no longer held, or is compromised (it can no longer be
  /// trusted to notice). The lease break time (/proc/sys/fs/lease-break-time)
  /// then runs: release() promptly to let the opener proceed. Signals sent by
  /// processes (kill, sigqueue) never count as a break.
  bool lease_broken() const noexcept { return lease_.broken(); }
  /// True when the lease's signal (F_SETSIG) or owner (F_SETOWN_EX) on its
  /// open file description was changed after acquire: a process sharing the
  /// description (one it was passed to) can silence, redirect or weaponise
  /// the notice. A lease on a description shared with a less-trusted process
  /// is only advisory; poll this (and lease_broken()) periodically.
  bool lease_compromised() const noexcept { return lease_.compromised(); }
  /// An eventfd that becomes readable when the lease breaks (for poll/epoll),
  /// or -1 without a lease. Owned by the seal.
  int lease_event_fd() const noexcept { return lease_.event_fd(); }
  /// True when a lease is held.
  bool has_lease() const noexcept { return lease_.held(); }

  /// Gives the seal up: lease, native pin, registry entry, descriptor.
  /// Releasing an empty seal succeeds. Errors: fcntl/close errno codes; the
  /// object is empty afterwards either way.
  result<void> release() noexcept;

  /// Exchanges two seals.
  void swap(iomap_seal& o) noexcept {
    using std::swap;
    swap(fd_, o.fd_);
    swap(offset_, o.offset_);
    swap(length_, o.length_);
    swap(kind_, o.kind_);
    swap(report_, o.report_);
    swap(node_, o.node_);
    lease_.swap(o.lease_);
  }
  /// Exchanges two seals.
  friend void swap(iomap_seal& a, iomap_seal& b) noexcept { a.swap(b); }

 private:
  // The steps of acquire().
  static std::error_code check_request(int fd, std::uint64_t offset, std::uint64_t& length, seal_options& options,
                                       struct stat& st) noexcept;
  std::error_code open_descriptor(int fd, const struct stat& st, bool lease) noexcept;
  std::error_code pin_native(seal_method method, std::uint64_t old_size) noexcept;
  std::error_code take_lease(int signal, std::uint64_t old_size) noexcept;
  // A failure after stabilising must not leave the file grown.
  std::error_code undo_growth(std::uint64_t old_size, std::error_code ec) noexcept;

  int fd_ = -1;
  std::uint64_t offset_ = 0;
  std::uint64_t length_ = 0;
  seal_kind kind_ = seal_kind::stabilised;
  seal_report report_{};
  detail::seal_node* node_ = nullptr;
  detail::file_lease lease_{};
};

/// True when this process holds an iomap_seal on the file behind fd.
/// Errors: fstat errno codes (EBADF).
inline result<bool> is_sealed(int fd) noexcept {
  struct stat st {};
  if (detail::sys::fstat(fd, &st) != 0) return detail::fail_errno(errno, "is_sealed: fstat");
  return detail::seal_registry::count(st.st_dev, st.st_ino) != 0;
}

inline result<iomap_seal> iomap_seal::acquire(int fd, std::uint64_t offset, std::uint64_t length,
                                              seal_options options) noexcept {
  detail::clear_detail();
  struct stat st {};
  if (auto ec = check_request(fd, offset, length, options, st)) return ec;
  const auto size = static_cast<std::uint64_t>(st.st_size);
  iomap_seal s;
  s.node_ = new (std::nothrow) detail::seal_node;
  if (!s.node_) return detail::fail_errno(ENOMEM, "seal: allocating the registry entry");
  if (auto ec = s.open_descriptor(fd, st, options.lease)) return ec;
  s.offset_ = offset;
  s.length_ = length;
  s.kind_ = seal_kind::stabilised;
  // Registered before stabilising, then wait for file.hpp helpers already
  // past their seal check on this file: no helper change can interleave with
  // (or follow) the stabilisation unseen. Removed again if acquire fails.
  s.node_->dev = st.st_dev;
  s.node_->ino = st.st_ino;
  detail::seal_registry::add(s.node_);
  detail::blockmap_changes::wait_idle(st.st_ino);

  // Both kinds first make the range stable: a natively sealed file can no
  // longer allocate, so a later fault on a hole could only fail.
  detail::stabilise_report done{};
  const detail::stabilise_progress progress{options.progress, options.progress_context};
  if (auto ec = detail::stabilise(s.fd_, offset, offset + length, size, options.allow_unverifiable, done, progress))
    return ec;
  s.report_.extents = done.extents;
  s.report_.allocated_bytes = done.allocated_bytes;
  s.report_.zeroed_bytes = done.zeroed_bytes;
  s.report_.unshared_bytes = done.unshared_bytes;
  s.report_.rewrote_shared = done.rewrote_shared;
  s.report_.verified = done.verified;
  s.report_.extended = done.extended;
  if (auto ec = s.pin_native(options.method, size)) return ec;
  if (options.lease) {
    if (auto ec = s.take_lease(options.lease_signal, size)) return ec;
  }
  return s;
}

inline std::error_code iomap_seal::check_request(int fd, std::uint64_t offset, std::uint64_t& length,
                                                 seal_options& options, struct stat& st) noexcept {
  if (fd < 0) return detail::fail(errc::invalid_argument, "seal: negative file descriptor %d", fd);
  if (detail::sys::fstat(fd, &st) != 0) return detail::fail_errno(errno, "seal: fstat");
  if (!S_ISREG(st.st_mode)) return detail::fail(errc::invalid_argument, "seal: not a regular file");
  const int access = detail::sys::fcntl(fd, F_GETFL);
  if (access < 0) return detail::fail_errno(errno, "seal: fcntl(F_GETFL)");
  if ((access & O_ACCMODE) != O_RDWR)
    return detail::fail(errc::invalid_argument, "seal: the file descriptor must be open O_RDWR");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (length == 0) {
    if (offset >= size)
      return detail::fail(errc::beyond_eof, "seal: length 0 (to end of file) but offset %llu is at or past EOF (%llu)",
                          static_cast<unsigned long long>(offset), static_cast<unsigned long long>(size));
    length = size - offset;
  }
  const auto max_off = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());
  if (offset > max_off || length > max_off - offset)
    return detail::fail(errc::invalid_argument, "seal: range [%llu, +%llu) overflows off_t",
                        static_cast<unsigned long long>(offset), static_cast<unsigned long long>(length));
  const std::uint64_t end = offset + length;
  if (end > size && !options.extend)
    return detail::fail(errc::beyond_eof,
                        "seal: range [%llu, %llu) extends past end of file (%llu bytes); set seal_options::extend "
                        "to grow the file",
                        static_cast<unsigned long long>(offset), static_cast<unsigned long long>(end),
                        static_cast<unsigned long long>(size));
  if (options.lease) {
    if (options.lease_signal == 0) options.lease_signal = detail::default_lease_signal();
    if (options.lease_signal < SIGRTMIN || options.lease_signal > SIGRTMAX)
      return detail::fail(errc::invalid_argument, "seal: lease_signal %d is not a realtime signal (%d..%d)",
                          options.lease_signal, SIGRTMIN, SIGRTMAX);
  }
#if !MAPDIRECT_HAS_NATIVE_SEAL
  if (options.method == seal_method::native)
    return detail::fail(errc::mode_unavailable,
                        "seal: native seal not configured: the build does not define MAPDIRECT_F_MAY_SEAL_IOMAP and "
                        "MAPDIRECT_MAP_DIRECT_FLAG (the MAP_DIRECT series is not in mainline)");
#endif
  return {};
}

inline std::error_code iomap_seal::open_descriptor(int fd, const struct stat& st, bool lease) noexcept {
  if (lease) {
    // A write lease is granted only to the file's sole open file description:
    // a description of our own would leave the caller's open (EAGAIN). So the
    // lease goes on the caller's description, which the seal keeps a dup of.
    fd_ = detail::sys::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (fd_ < 0) return detail::fail_errno(errno, "seal: fcntl(F_DUPFD_CLOEXEC)");
    return {};
  }
  // A description of our own: none of the caller's O_APPEND/O_DIRECT, and
  // write-back errors of its own. Never reopened while a seal of this
  // process leases the file (the open would break that lease): then a dup.
  const detail::own_descriptor own =
      detail::reopen_description(fd, O_RDWR, detail::seal_registry::leased(st.st_dev, st.st_ino));
  if (own.fd < 0) return detail::fail_errno(errno, "seal: reopening or duplicating the descriptor");
  fd_ = own.fd;
  return {};
}

// After `ec`'s detail is set: the size put back is appended to it.
inline std::error_code iomap_seal::undo_growth(std::uint64_t old_size, std::error_code ec) noexcept {
  if (report_.extended) detail::restore_size(fd_, old_size);
  return ec;
}

inline std::error_code iomap_seal::pin_native(seal_method method, std::uint64_t old_size) noexcept {
#if MAPDIRECT_HAS_NATIVE_SEAL
  if (method == seal_method::stabilised) return {};
  if (detail::sys::fcntl(fd_, MAPDIRECT_F_MAY_SEAL_IOMAP, 1) == 0) {
    kind_ = seal_kind::native;
    return {};
  }
  const int e = errno;
  if (e == EPERM || e == EACCES) {
    return undo_growth(old_size, detail::fail_errno(e,
                                                    "seal: fcntl(F_MAY_SEAL_IOMAP) refused with %s (sealing a "
                                                    "block map needs CAP_LINUX_IMMUTABLE, or a descriptor passed "
                                                    "by a process that has it)",
                                                    detail::errno_name(e)));
  }
  if (e == ETXTBSY) {
    return undo_growth(old_size, detail::file_errno(e, "seal: fcntl(F_MAY_SEAL_IOMAP)"));
  }
  const bool unknown = (e == EINVAL || e == EOPNOTSUPP || e == ENOTTY);
  if (!unknown || method == seal_method::native) {
    if (unknown)
      return undo_growth(old_size, detail::fail(errc::mode_unavailable,
                                                "seal: fcntl(F_MAY_SEAL_IOMAP) failed with %s: the kernel or file "
                                                "system has no native block-map seal",
                                                detail::errno_name(e)));
    return undo_growth(old_size, detail::fail_errno(e, "seal: fcntl(F_MAY_SEAL_IOMAP)"));
  }
  // automatic: the kernel lacks the native seal; the stabilised one stands.
#else
  (void)method;
  (void)old_size;
#endif
  return {};
}

inline std::error_code iomap_seal::take_lease(int signal, std::uint64_t old_size) noexcept {
  // Flag first: from the moment the lease exists, no part of mapdirect in
  // this process may open the file again (that open would break it).
  node_->leased.store(true, std::memory_order_release);
  std::error_code ec = detail::file_lease::take(fd_, signal, lease_);
  if (!ec) return {};
  node_->leased.store(false, std::memory_order_release);
#if MAPDIRECT_HAS_NATIVE_SEAL
  // Unpin first: a natively sealed file refuses the ftruncate of undo_growth.
  if (kind_ == seal_kind::native) {
    const int saved = errno;
    (void)detail::sys::fcntl(fd_, MAPDIRECT_F_MAY_SEAL_IOMAP, 0);
    kind_ = seal_kind::stabilised;
    errno = saved;
  }
#endif
  return undo_growth(old_size, ec);
}

inline result<std::uint64_t> iomap_seal::verify() const noexcept {
  detail::clear_detail();
  if (fd_ < 0) return detail::fail(errc::empty_object, "verify: empty iomap_seal");
  if (lease_.compromised())
    return detail::fail(errc::lease_compromised,
                        "verify: the lease's signal or owner was changed on its open file description (by a process "
                        "sharing it): its notices can no longer be trusted");
  if (lease_.broken())
    return detail::fail(errc::lease_broken,
                        "verify: the lease was broken: another process opened or truncated the file");
  struct stat st {};
  if (detail::sys::fstat(fd_, &st) != 0) return detail::fail_errno(errno, "verify: fstat");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (offset_ + length_ > size)
    return detail::fail(errc::block_map_unstable,
                        "verify: the file shrank to %llu bytes, below the sealed range end %llu",
                        static_cast<unsigned long long>(size), static_cast<unsigned long long>(offset_ + length_));
  detail::block_map_summary now{};
  if (const int e = detail::summarise_block_map(fd_, offset_, length_, now)) {
    if (detail::fiemap_unsupported(e))
      return detail::fail(errc::block_map_unverifiable, "verify: the file system cannot report its block map (%s)",
                          detail::errno_name(e));
    return detail::fail_errno(e, "verify: FS_IOC_FIEMAP");
  }
  if (!now.stable())
    return detail::fail(errc::block_map_unstable, "verify: byte %llu of the sealed range is %s",
                        static_cast<unsigned long long>(now.first_problem),
                        detail::extent_problem_name(now.first_problem_kind));
  return now.extents;
}

inline result<void> iomap_seal::release() noexcept {
  if (fd_ < 0 && !node_) return outcome::success();
  std::error_code ec = lease_.release();
  if (node_) node_->leased.store(false, std::memory_order_release);
#if MAPDIRECT_HAS_NATIVE_SEAL
  if (fd_ >= 0 && kind_ == seal_kind::native && detail::sys::fcntl(fd_, MAPDIRECT_F_MAY_SEAL_IOMAP, 0) != 0 && !ec)
    ec = detail::fail_errno(errno, "release: fcntl(F_MAY_SEAL_IOMAP, 0)");
#endif
  if (node_) {
    if (node_->registered) detail::seal_registry::remove(node_);
    delete node_;
    node_ = nullptr;
  }
  // Never drops the process's POSIX record locks on the file (deferred close).
  if (fd_ >= 0 && detail::close_keeping_locks(fd_) != 0 && !ec) ec = detail::fail_errno(errno, "release: close");
  fd_ = -1;
  offset_ = length_ = 0;
  report_ = seal_report{};
  kind_ = seal_kind::stabilised;
  if (ec) return ec;
  return outcome::success();
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_SEAL_HPP
