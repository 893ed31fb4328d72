// SPDX-License-Identifier: MIT
// The process-wide SIGBUS handler behind guard.hpp: per-thread guard frames,
// the jump back into a guarded region, and chaining to whatever handler was
// installed before ours.
#ifndef MAPDIRECT_DETAIL_SIGBUS_HPP
#define MAPDIRECT_DETAIL_SIGBUS_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "syscall.hpp"

#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <cstddef>
#include <cstdint>

#include <sched.h>
#include <signal.h>
#include <ucontext.h>

// Older libc headers lack the machine-check codes (values from the kernel ABI).
#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// One active guard on this thread's stack. Lives in the frame that called
/// sigsetjmp, so jumping back to it is always to a live frame. Trivially
/// destructible on purpose: it is abandoned, never destroyed, by a jump.
struct guard_frame {
  sigjmp_buf env;
  guard_frame* outer;  // the enclosing guard (nesting), or null
  // Up to two guarded address ranges, [lo, hi): guarded_copy guards both
  // source and destination.
  std::uintptr_t lo[2];
  std::uintptr_t hi[2];
  // Fix-up frames (the x86-64 copy routine of guard_copy.hpp): a fault whose
  // instruction pointer lies in [ip_lo, ip_hi) resumes at resume_ip instead
  // of jumping; resume_ip 0 means a sigsetjmp frame.
  std::uintptr_t ip_lo;
  std::uintptr_t ip_hi;
  std::uintptr_t resume_ip;
  // Written by the handler just before it jumps back.
  volatile int fault_code;
  volatile std::uintptr_t fault_addr;
  volatile int fault_lsb;

  bool covers(std::uintptr_t a) const noexcept { return (a >= lo[0] && a < hi[0]) || (a >= lo[1] && a < hi[1]); }
};

/// The innermost guard of this thread. Initial-exec TLS: a fixed offset from
/// the thread pointer, so the handler reads it without calling into the
/// dynamic loader (global-dynamic TLS may allocate on first access).
inline guard_frame*& current_guard() noexcept {
  static thread_local guard_frame* top __attribute__((tls_model("initial-exec"))) = nullptr;
  return top;
}

/// Makes `f` the innermost guard. The fences keep the compiler from moving
/// the guarded accesses above the publishing store (signal fences are free).
inline void push_guard(guard_frame& f) noexcept {
  guard_frame*& top = current_guard();
  f.outer = top;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  top = &f;
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

/// Removes `f` (the innermost guard) after its region finished normally.
inline void pop_guard(guard_frame& f) noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  current_guard() = f.outer;
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

/// Runs fn() as a guarded region of `frame` (ranges already set). False when
/// a fault jumped back (frame.fault_* tell where). Kept apart from the
/// callers so that nothing of theirs is live across sigsetjmp: GCC will not
/// inline it (it calls sigsetjmp), and after the jump only `false` is returned.
template <class F>
bool run_guarded(guard_frame& frame, F& fn) noexcept {
  frame.resume_ip = 0;
  if (sigsetjmp(frame.env, 0) != 0) return false;
  push_guard(frame);
  fn();
  pop_guard(frame);
  return true;
}

/// Process-wide state of the handler. Constant-initialised (no guard variable).
struct sigbus_state {
  std::atomic<bool> installed;
  std::atomic_flag lock;
  struct sigaction previous;  // what was installed before ours, called for faults we do not own
};

inline sigbus_state& sigbus_globals() noexcept {
  static sigbus_state s{{false}, ATOMIC_FLAG_INIT, {}};
  return s;
}

inline void sigbus_handler(int sig, siginfo_t* info, void* context) noexcept;

inline bool is_our_handler(const struct sigaction& a) noexcept {
  return (a.sa_flags & SA_SIGINFO) != 0 && a.sa_sigaction == &sigbus_handler;
}

/// A fault the kernel raised for the instruction that is executing, which
/// it will retry if the handler returns. SI_USER/SI_TKILL/SI_QUEUE... are
/// <= 0, SI_KERNEL is 0x80 and BUS_MCEERR_AO is an asynchronous report.
inline bool is_synchronous_fault(int code) noexcept { return code > 0 && code != SI_KERNEL && code != BUS_MCEERR_AO; }

// Calls a previous handler as the kernel would have: its sa_mask (plus the
// signal itself unless SA_NODEFER) blocked for the call, SA_RESETHAND
// honoured. Raw libc calls only here: the syscall seam's interposers are not
// async-signal-safe.
inline void call_previous(const struct sigaction& prev, int sig, siginfo_t* info, void* context) noexcept {
  sigset_t block = prev.sa_mask;
  if ((prev.sa_flags & SA_NODEFER) == 0) ::sigaddset(&block, sig);
  if (static_cast<unsigned>(prev.sa_flags) & SA_RESETHAND) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigemptyset(&dfl.sa_mask);
    ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t saved;
  ::pthread_sigmask(SIG_BLOCK, &block, &saved);
  if (prev.sa_flags & SA_SIGINFO)
    prev.sa_sigaction(sig, info, context);
  else
    prev.sa_handler(sig);
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

// A SIGBUS that is not ours: behave as if our handler had never been there.
inline void chain_sigbus(int sig, siginfo_t* info, void* context, int code) noexcept {
  const struct sigaction prev = sigbus_globals().previous;
  const bool is_default = (prev.sa_flags & SA_SIGINFO) ? is_our_handler(prev) : prev.sa_handler == SIG_DFL;
  const bool is_ignore = (prev.sa_flags & SA_SIGINFO) == 0 && prev.sa_handler == SIG_IGN;
  if (!is_default && !is_ignore) {
    call_previous(prev, sig, info, context);
    return;
  }
  if (is_synchronous_fault(code)) {
    // Put the old disposition back and return: the faulting access repeats
    // and the kernel delivers SIGBUS to it (forcibly if it was ignored), so
    // the process dies exactly as it would have without us.
    struct sigaction restore = prev;
    if (is_default) {
      restore = {};
      restore.sa_handler = SIG_DFL;
      ::sigemptyset(&restore.sa_mask);
    }
    ::sigaction(sig, &restore, nullptr);
    return;
  }
  if (is_ignore) return;  // a sent or asynchronous SIGBUS that was being ignored
  // Sent (kill, tgkill, sigqueue) or asynchronous (BUS_MCEERR_AO) with the
  // default action: terminate the way the default action does. SIGBUS is not
  // blocked here (SA_NODEFER), so it is delivered as raise() returns.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

/// The handler: jumps back into the innermost guard covering the fault
/// address, else chains. Async-signal-safe (TLS read, raw libc calls only).
inline void sigbus_handler(int sig, siginfo_t* info, void* context) noexcept {
  const int saved_errno = errno;
  const int code = info ? info->si_code : SI_USER;
  if (is_synchronous_fault(code)) {
    const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
    guard_frame*& top = current_guard();
    for (guard_frame* f = top; f; f = f->outer) {
      if (!f->covers(addr)) continue;
#if defined(MAPDIRECT_ARCH_X86_64)
      greg_t* ip = nullptr;
      if (f->resume_ip != 0) {
        // Only the copy routine's own instructions may be redirected.
        ip = &static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP];
        const auto at = static_cast<std::uintptr_t>(*ip);
        if (at < f->ip_lo || at >= f->ip_hi) continue;
      }
#endif
      f->fault_code = code;
      f->fault_addr = addr;
      f->fault_lsb = code == BUS_MCEERR_AR ? static_cast<int>(info->si_addr_lsb) : 0;
      top = f->outer;  // f and every guard nested inside it are gone
      std::atomic_signal_fence(std::memory_order_seq_cst);
      errno = saved_errno;
#if defined(MAPDIRECT_ARCH_X86_64)
      if (ip) {
        *ip = static_cast<greg_t>(f->resume_ip);  // rt_sigreturn resumes at the fix-up label
        return;
      }
#endif
      // savemask 0 on both sides: SA_NODEFER left SIGBUS unblocked and our
      // sa_mask is empty, so there is no mask to restore (and no syscall).
      siglongjmp(f->env, 1);
    }
  }
  chain_sigbus(sig, info, context, code);
  errno = saved_errno;
}

/// Installs the handler (once; again if someone replaced it since). The
/// replaced disposition becomes the one unowned SIGBUS signals chain to.
/// Errors: sigaction errno codes.
__attribute__((noinline)) inline std::error_code install_sigbus_handler() noexcept {
  sigbus_state& g = sigbus_globals();
  while (g.lock.test_and_set(std::memory_order_acquire)) ::sched_yield();
  std::error_code ec;
  struct sigaction current {};
  if (sys::sigaction(SIGBUS, nullptr, &current) != 0) {
    ec = fail_errno(errno, "sigaction(SIGBUS) (reading the current disposition)");
  } else if (!is_our_handler(current)) {
    // Store the old disposition before ours can run, so the handler never
    // reads a half-written one.
    g.previous = current;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    struct sigaction ours {};
    ours.sa_sigaction = &sigbus_handler;
    // SA_NODEFER: SIGBUS must not stay blocked after the jump (sigsetjmp(env, 0)
    // restores no mask); SA_ONSTACK: use the thread's alternate stack if any.
    ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    ::sigemptyset(&ours.sa_mask);
    struct sigaction replaced {};
    if (sys::sigaction(SIGBUS, &ours, &replaced) != 0) {
      ec = fail_errno(errno, "sigaction(SIGBUS) (installing mapdirect's handler)");
    } else if (!is_our_handler(replaced)) {
      g.previous = replaced;  // changed by someone else between the two calls
    }
  }
  if (!ec) g.installed.store(true, std::memory_order_release);
  g.lock.clear(std::memory_order_release);
  return ec;
}

/// The cheap check on guard entry: installs lazily on first use.
inline std::error_code ensure_sigbus_handler() noexcept {
  if (sigbus_globals().installed.load(std::memory_order_acquire)) return {};
  return install_sigbus_handler();
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_SIGBUS_HPP
