// SPDX-License-Identifier: MIT
// The conflict notice of a stabilised iomap_seal: a write lease (F_SETLEASE
// F_WRLCK) whose break is delivered as a realtime signal (F_SETSIG) to a
// handler that only sets a flag and writes an eventfd. The process is never
// killed and the holder polls lease_broken() or the eventfd.
//
// Why a write lease: a read lease (F_RDLCK) is refused while anyone has the
// file open for writing, including the holder's own O_RDWR descriptor; a
// write lease is granted when the lease's open file description is the only
// one of the file, and is broken by any other open (read or write, from any
// process including this one) and by truncate(2).
//
// Trust: the lease, its signal (F_SETSIG) and owner (F_SETOWN) belong to the
// open file description. Any process holding that description (passed over
// SCM_RIGHTS, inherited) can release the lease, silence or redirect its
// notice, or turn it into a deadly signal. A lease on a description shared
// with a less-trusted process is therefore only advisory: mapdirect detects
// such changes (compromised()) when a notice arrives and whenever the holder
// asks, but cannot prevent them. Signals sent by processes (kill, sigqueue)
// are ignored; only the kernel's notices count.
#ifndef MAPDIRECT_DETAIL_SEAL_LEASE_HPP
#define MAPDIRECT_DETAIL_SEAL_LEASE_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "syscall.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <utility>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// One leased descriptor, as the signal handler sees it.
struct lease_slot {
  std::atomic<bool> claimed{false};
  std::atomic<int> fd{-1};        ///< the descriptor the lease was taken on (si_fd)
  std::atomic<int> event_fd{-1};  ///< written (counter += 1) on a break
  std::atomic<bool> broken{false};
  /// Set (sticky) once the description's lease signal or owner was found
  /// changed: someone sharing the description can redirect or silence notices.
  std::atomic<bool> compromised{false};
  std::atomic<int> sig{0};  ///< the signal mapdirect set with F_SETSIG
};

inline lease_slot* lease_table() noexcept {
  static lease_slot table[MAPDIRECT_MAX_LEASES];
  return table;
}

static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free,
              "the lease signal handler needs lock-free atomics");

// Async-signal-safe: atomics, fcntl(2) and write(2) only; errno preserved.
// Only kernel-sent notices count: a lease break arrives with a positive
// si_code (POLL_MSG), while kill/sigqueue/tgkill from any process carry
// si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL) and would otherwise forge a break.
inline void lease_break_handler(int, siginfo_t* info, void*) noexcept {
  if (!info || info->si_code <= 0) return;
  const int saved = errno;
  lease_slot* table = lease_table();
  for (std::size_t i = 0; i < MAPDIRECT_MAX_LEASES; ++i) {
    const int fd = table[i].fd.load(std::memory_order_acquire);
    if (fd < 0 || fd != info->si_fd) continue;
    table[i].broken.store(true, std::memory_order_release);
    // On every notice: is the description still signalling us with our signal?
    if (sys::fcntl(fd, F_GETSIG) != table[i].sig.load(std::memory_order_acquire))
      table[i].compromised.store(true, std::memory_order_release);
    const int efd = table[i].event_fd.load(std::memory_order_acquire);
    if (efd >= 0) {
      const std::uint64_t one = 1;
      (void)sys::write(efd, &one, sizeof one);
    }
  }
  errno = saved;
}

/// The realtime signal used when seal_options::lease_signal is 0.
inline int default_lease_signal() noexcept { return SIGRTMIN + 6; }

/// Installs lease_break_handler for `sig` unless it is already ours. Refuses
/// (EBUSY) to replace a handler someone else installed.
inline std::error_code install_lease_handler(int sig) noexcept {
  if (sig < SIGRTMIN || sig > SIGRTMAX)
    return fail(errc::invalid_argument, "lease: signal %d is not a realtime signal (%d..%d)", sig, SIGRTMIN, SIGRTMAX);
  struct sigaction old {};
  if (sys::sigaction(sig, nullptr, &old) != 0) return fail_errno(errno, "lease: sigaction (query)");
  if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == &lease_break_handler) return {};
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)
    return fail(errc::invalid_argument,
                "lease: signal %d already has a handler; choose another seal_options::lease_signal", sig);
  if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction != nullptr)
    return fail(errc::invalid_argument,
                "lease: signal %d already has a handler; choose another seal_options::lease_signal", sig);
  struct sigaction sa {};
  sa.sa_sigaction = &lease_break_handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sys::sigaction(sig, &sa, nullptr) != 0) return fail_errno(errno, "lease: sigaction (install)");
  return {};
}

/// A held write lease on one descriptor, with its eventfd. Move-only.
class file_lease {
 public:
  file_lease() noexcept = default;
  file_lease(file_lease&& o) noexcept { swap(o); }
  file_lease& operator=(file_lease&& o) noexcept {
    if (this != &o) {
      file_lease tmp(std::move(o));
      swap(tmp);
    }
    return *this;
  }
  void swap(file_lease& o) noexcept {
    std::swap(slot_, o.slot_);
    std::swap(fd_, o.fd_);
    std::swap(event_fd_, o.event_fd_);
    std::swap(restore_fd_, o.restore_fd_);
    std::swap(old_sig_, o.old_sig_);
    std::swap(old_owner_, o.old_owner_);
    std::swap(sig_, o.sig_);
    std::swap(owner_pid_, o.owner_pid_);
  }
  file_lease(const file_lease&) = delete;
  file_lease& operator=(const file_lease&) = delete;
  ~file_lease() { (void)release(); }

  /// Takes a write lease on fd, signalled with `sig`. fd must stay open
  /// while the lease is held. Errors: EAGAIN (the file is open through
  /// another file description), EACCES (caller neither owns the file nor has
  /// CAP_LEASE), EINVAL (file system without leases), ENFILE
  /// (MAPDIRECT_MAX_LEASES reached), errc::invalid_argument (signal taken).
  static std::error_code take(int fd, int sig, file_lease& out) noexcept {
    if (auto ec = install_lease_handler(sig)) return ec;
    lease_slot* table = lease_table();
    lease_slot* slot = nullptr;
    for (std::size_t i = 0; i < MAPDIRECT_MAX_LEASES && !slot; ++i) {
      bool expected = false;
      if (table[i].claimed.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) slot = &table[i];
    }
    if (!slot) {
      set_detail("lease: more than MAPDIRECT_MAX_LEASES (%d) leased seals in this process", MAPDIRECT_MAX_LEASES);
      return errno_code(ENFILE);
    }
    file_lease l;
    l.slot_ = slot;
    l.event_fd_ = sys::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l.event_fd_ < 0) return fail_errno(errno, "lease: eventfd");
    slot->broken.store(false, std::memory_order_release);
    slot->compromised.store(false, std::memory_order_release);
    slot->sig.store(sig, std::memory_order_release);
    slot->event_fd.store(l.event_fd_, std::memory_order_release);
    slot->fd.store(fd, std::memory_order_release);
    // Owner and signal are properties of the open file description, shared
    // with the caller's descriptor: remember them to restore on release.
    l.old_sig_ = sys::fcntl(fd, F_GETSIG);
    l.old_owner_ = sys::fcntl(fd, F_GETOWN);
    if (l.old_sig_ < 0 || l.old_owner_ == -1) return fail_errno(errno, "lease: fcntl(F_GETSIG/F_GETOWN)");
    l.restore_fd_ = fd;
    l.owner_pid_ = ::getpid();
    // Deliver to this process (F_SETLEASE sets the owner only when none is set).
    if (sys::fcntl(fd, F_SETOWN, static_cast<long>(::getpid())) != 0) return fail_errno(errno, "lease: F_SETOWN");
    // The signal number must be set before the lease exists, or a break in
    // between would arrive as SIGIO (default action: terminate). The kernel
    // may also reset it when an earlier lease on this description ended, so
    // it is set on every take and checked afterwards.
    if (sys::fcntl(fd, F_SETSIG, sig) != 0) return fail_errno(errno, "lease: fcntl(F_SETSIG)");
    if (sys::fcntl(fd, F_SETLEASE, F_WRLCK) != 0) {
      const int e = errno;
      return fail_errno(e, "lease: fcntl(F_SETLEASE, F_WRLCK) failed with %s (%s)", errno_name(e),
                        e == EAGAIN   ? "the file is open through another file description (a write lease needs the "
                                        "only one; open the file once and pass that descriptor)"
                        : e == EACCES ? "the caller neither owns the file nor has CAP_LEASE"
                        : e == EINVAL ? "the file system does not support leases"
                                      : "unexpected");
    }
    l.fd_ = fd;
    if (sys::fcntl(fd, F_GETSIG) != sig && sys::fcntl(fd, F_SETSIG, sig) != 0)
      return fail_errno(errno, "lease: fcntl(F_SETSIG) after F_SETLEASE");
    l.sig_ = sig;
    out = std::move(l);
    return {};
  }

  /// True once another open or a truncate broke the lease, or the lease is
  /// no longer held on the description, or it is compromised (below): a
  /// lease that can no longer deliver its notice must be treated as broken.
  /// In a child of fork() the break signal goes to the process that took the
  /// lease, so the child asks the kernel instead: broken unless the shared
  /// description still holds the write lease undisturbed.
  bool broken() const noexcept {
    if (!slot_) return false;
    if (inherited()) return fd_ < 0 || sys::fcntl(fd_, F_GETLEASE) != F_WRLCK;
    if (slot_->broken.load(std::memory_order_acquire) || compromised()) return true;
    const int now = sys::fcntl(fd_, F_GETLEASE);
    return now >= 0 && now != F_WRLCK;
  }

  /// True when the description's lease signal (F_GETSIG) or owner
  /// (F_GETOWN_EX) is no longer what take() set: another holder of the same
  /// open file description (a process it was passed to) changed them, so
  /// notices may go elsewhere, be silenced, or arrive as a deadly signal.
  /// Sticky. Checked now, and on every notice by the signal handler.
  bool compromised() const noexcept {
    if (!slot_) return false;
    if (slot_->compromised.load(std::memory_order_acquire)) return true;
    bool changed = sys::fcntl(fd_, F_GETSIG) != sig_;
    struct f_owner_ex owner {};
    if (!changed && sys::fcntl(fd_, F_GETOWN_EX, reinterpret_cast<long>(&owner)) == 0)
      changed = owner.type != F_OWNER_PID || owner.pid != owner_pid_;
    if (changed) slot_->compromised.store(true, std::memory_order_release);
    return changed;
  }
  /// Readable (counter > 0) once broken; for poll/epoll.
  int event_fd() const noexcept { return event_fd_; }
  bool held() const noexcept { return slot_ != nullptr; }

  /// Gives the lease up (lets a blocked opener proceed) and frees the slot.
  std::error_code release() noexcept {
    if (!slot_) return {};
    std::error_code ec;
    if (inherited()) {
      // A forked child shares the leased description with the parent, which
      // still holds the lease: unlocking it, or restoring F_SETSIG/F_SETOWN,
      // would take the parent's lease away. Drop only this process's copies
      // (the table is process memory: clear it as release does).
      slot_->fd.store(-1, std::memory_order_release);
      slot_->event_fd.store(-1, std::memory_order_release);
      slot_->broken.store(false, std::memory_order_release);
      slot_->claimed.store(false, std::memory_order_release);
      if (event_fd_ >= 0) close_quietly_fd(event_fd_);
      slot_ = nullptr;
      fd_ = event_fd_ = restore_fd_ = -1;
      return ec;
    }
    if (fd_ >= 0 && sys::fcntl(fd_, F_SETLEASE, F_UNLCK) != 0 && errno != EBADF)
      ec = fail_errno(errno, "lease: fcntl(F_SETLEASE, F_UNLCK)");
    // Restore signal and owner only after the lease is gone, so no break can arrive as SIGIO.
    if (restore_fd_ >= 0) {
      (void)sys::fcntl(restore_fd_, F_SETSIG, old_sig_);
      (void)sys::fcntl(restore_fd_, F_SETOWN, old_owner_);
    }
    slot_->fd.store(-1, std::memory_order_release);
    slot_->event_fd.store(-1, std::memory_order_release);
    slot_->broken.store(false, std::memory_order_release);
    slot_->compromised.store(false, std::memory_order_release);
    slot_->claimed.store(false, std::memory_order_release);
    if (event_fd_ >= 0) close_quietly_fd(event_fd_);
    slot_ = nullptr;
    fd_ = event_fd_ = restore_fd_ = -1;
    return ec;
  }

 private:
  static void close_quietly_fd(int fd) noexcept { sys::close_quietly(fd); }
  // True in a child of fork(): the lease belongs to an ancestor process.
  bool inherited() const noexcept { return owner_pid_ != 0 && ::getpid() != owner_pid_; }

  lease_slot* slot_ = nullptr;
  int fd_ = -1;  // the leased descriptor, once F_SETLEASE succeeded
  int event_fd_ = -1;
  int restore_fd_ = -1;  // where old_sig_/old_owner_ must be put back
  int old_sig_ = 0;
  int old_owner_ = 0;
  int sig_ = 0;          // the signal take() set
  pid_t owner_pid_ = 0;  // the owner take() set (F_OWNER_PID): the process that took the lease
};

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_SEAL_LEASE_HPP
