// SPDX-License-Identifier: MIT
// The process-wide SIGBUS handler behind guard.hpp: per-thread guard frames,
// the jump back into a guarded region, and chaining to whatever handler was
// installed before ours.
#ifndef MAPDIRECT_DETAIL_SIGBUS_HPP
#define MAPDIRECT_DETAIL_SIGBUS_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "linux_abi.hpp"
#include "syscall.hpp"

#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <functional>

#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

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
  f.outer = top == &f ? nullptr : top;  // a record at our own address is a dead one (left by a jump)
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
/// The signal mask is saved (one rt_sigprocmask): a guarded fault taken in
/// another signal's handler that interrupted fn must come back with the
/// guard's mask, not with that handler's signals still blocked.
template <class F>
bool run_guarded(guard_frame& frame, F& fn) noexcept {
  frame.resume_ip = 0;
  if (sigsetjmp(frame.env, 1) != 0) return false;
  push_guard(frame);
  fn();
  pop_guard(frame);
  return true;
}

/// One disposition our handler passes unowned SIGBUS signals to. Written
/// before it is published (sigbus_state::depth) and never changed after,
/// except for the one-shot flag of SA_RESETHAND.
struct saved_disposition {
  struct sigaction act;
  std::atomic<bool> reset_done;  // SA_RESETHAND: the one call happened, now SIG_DFL
};

/// How many times install_sigbus_handler() can take over from a foreign
/// handler (each one it replaces is kept: a replaced handler that chains back
/// to ours must reach the disposition that was there before it).
constexpr int max_saved_dispositions = 16;

/// Process-wide state of the handler. Zero-initialised (no guard variable).
struct sigbus_state {
  std::atomic<bool> installed;
  std::atomic<int> lock_owner;  // pid of the process whose thread holds the install lock, 0 if free
  std::atomic<int> depth;       // published entries of chain[]
  // chain[depth-1]: the disposition replaced by the latest install, which
  // our handler calls first; chain[i-1]: where a handler of chain[i] that
  // calls ours back (it saved ours as its "previous") is sent.
  saved_disposition chain[max_saved_dispositions];
};

inline sigbus_state& sigbus_globals() noexcept {
  static sigbus_state s{};  // aggregate value-init: constant in C++17 and C++20
  return s;
}

/// This thread's call into a foreign handler (to recognise that handler
/// calling ours back). Initial-exec TLS, read by the handler.
struct chain_call {
  const void* info;     // the siginfo passed on
  const void* context;  // the ucontext passed on
  const void* mark;     // a stack address in our handler's frame at the call
  int index;            // chain[] entry called
  // SIG_IGN with a synchronous code: the fault we let return once; its
  // repetition proves a real fault, which the kernel would have forced.
  std::uintptr_t ignored_addr;
  std::uintptr_t ignored_pc;
  int ignored_code;
};

inline chain_call& current_chain() noexcept {
  static thread_local chain_call c
      __attribute__((tls_model("initial-exec"))) = {nullptr, nullptr, nullptr, -1, 0, 0, 0};
  return c;
}

inline void sigbus_handler(int sig, siginfo_t* info, void* context) noexcept;

inline bool is_our_handler(const struct sigaction& a) noexcept {
  return (a.sa_flags & SA_SIGINFO) != 0 && a.sa_sigaction == &sigbus_handler;
}

// SIG_DFL and SIG_IGN are handler values whatever sa_flags says (a reused
// struct sigaction with SA_SIGINFO set is common): sa_handler and
// sa_sigaction share storage, so compare the stored value itself.
inline bool is_default_action(const struct sigaction& a) noexcept { return a.sa_handler == SIG_DFL; }
inline bool is_ignore_action(const struct sigaction& a) noexcept { return a.sa_handler == SIG_IGN; }

inline bool same_disposition(const struct sigaction& a, const struct sigaction& b) noexcept {
  // SA_RESTORER is libc's business and may differ between what was set and read back.
  const auto flags = [](const struct sigaction& x) { return static_cast<unsigned>(x.sa_flags) & ~0x04000000u; };
  return a.sa_handler == b.sa_handler && flags(a) == flags(b);
}

/// A fault the kernel raised for the instruction that is executing, which
/// it will retry if the handler returns. SI_USER/SI_TKILL/SI_QUEUE... are
/// <= 0, SI_KERNEL is 0x80 and BUS_MCEERR_AO is an asynchronous report.
inline bool is_synchronous_fault(int code) noexcept {
  return code > 0 && code != SI_KERNEL && code != linux_abi::bus_mceerr_ao;
}

/// The interrupted program counter, or 0 where not known.
inline std::uintptr_t interrupted_pc(void* context) noexcept {
  if (!context) return 0;
#if defined(MAPDIRECT_ARCH_X86_64)
  return static_cast<std::uintptr_t>(static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP]);
#elif defined(MAPDIRECT_ARCH_AARCH64)
  return static_cast<std::uintptr_t>(static_cast<ucontext_t*>(context)->uc_mcontext.pc);
#else
  return 0;
#endif
}

// The default action of SIGBUS (terminate with a core dump), taken for
// exactly this signal: SIG_DFL back in place, the same siginfo queued to
// this thread while SIGBUS is blocked, and return. The mask the kernel
// restores on the way out unblocks it, so the process dies at the
// interrupted instruction with the original si_code and si_addr, whether
// or not the fault would have repeated (a self-queued signal, a page that
// became valid again). Raw libc calls: async-signal-safe, no seam.
inline void take_default_action(int sig, siginfo_t* info, int code) noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  sigset_t block;
  ::sigemptyset(&block);
  ::sigaddset(&block, sig);
  ::pthread_sigmask(SIG_BLOCK, &block, nullptr);
  siginfo_t again{};
  if (info) {
    again = *info;
  } else {
    again.si_signo = sig;
    again.si_code = SI_TKILL;
  }
  if (::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), ::syscall(SYS_gettid), sig, &again) == 0) return;
  // Could not queue: a real fault repeats on return; anything else is raised.
  if (is_synchronous_fault(code)) return;
  ::pthread_sigmask(SIG_UNBLOCK, &block, nullptr);
  ::raise(sig);
}

// Calls a foreign handler as the kernel would have: its sa_mask (plus the
// signal itself unless SA_NODEFER) blocked for the call. SA_RESETHAND is
// emulated on its saved entry (one call, SIG_DFL after), never by
// resetting SIGBUS: that would remove our handler and the guards with it.
inline void call_foreign(saved_disposition& d, int index, int sig, siginfo_t* info, void* context,
                         const void* mark) noexcept {
  const struct sigaction& prev = d.act;
  sigset_t block = prev.sa_mask;
  if ((prev.sa_flags & SA_NODEFER) == 0) ::sigaddset(&block, sig);
  chain_call& c = current_chain();
  const chain_call outer = c;
  c.info = info;
  c.context = context;
  c.mark = mark;
  c.index = index;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  sigset_t saved;
  ::pthread_sigmask(SIG_BLOCK, &block, &saved);
  if (prev.sa_flags & SA_SIGINFO) prev.sa_sigaction(sig, info, context);
  else prev.sa_handler(sig);
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  c.info = outer.info;
  c.context = outer.context;
  c.mark = outer.mark;
  c.index = outer.index;
}

// A SIGBUS no guard owns: behave as if our handler had never been there.
// `mark` is an address in the handler's frame (stack depth).
inline void chain_sigbus(int sig, siginfo_t* info, void* context, int code, const void* mark) noexcept {
  sigbus_state& g = sigbus_globals();
  int index = g.depth.load(std::memory_order_acquire) - 1;
  // Called back by the foreign handler we are calling on this thread (it
  // saved ours as its previous): continue below it instead of calling it
  // again, which would recurse until the stack overflows. A stale record
  // (that handler left by a jump) is told by the stack depth.
  const chain_call& c = current_chain();
  if (c.mark && std::less<const void*>()(mark, c.mark) && (c.info == info || c.context == context)) index = c.index - 1;
  saved_disposition* d = index >= 0 ? &g.chain[index] : nullptr;
  if (d && (static_cast<unsigned>(d->act.sa_flags) & SA_RESETHAND) && d->reset_done.load(std::memory_order_acquire))
    d = nullptr;  // its one call happened: SIG_DFL now
  if (!d || is_default_action(d->act)) {
    take_default_action(sig, info, code);
    return;
  }
  if (is_ignore_action(d->act)) {
    if (!is_synchronous_fault(code)) return;  // sent or asynchronous: ignored
    // The kernel forces a real fault through SIG_IGN; a queued one with the
    // same code stays ignored. A real fault repeats at once at the same
    // instruction and address: return once, take the default on the repeat.
    chain_call& mine = current_chain();
    const std::uintptr_t addr = info ? reinterpret_cast<std::uintptr_t>(info->si_addr) : 0;
    const std::uintptr_t pc = interrupted_pc(context);
    if (mine.ignored_code == code && mine.ignored_addr == addr && mine.ignored_pc == pc) {
      mine.ignored_code = 0;
      take_default_action(sig, info, code);
      return;
    }
    mine.ignored_code = code;
    mine.ignored_addr = addr;
    mine.ignored_pc = pc;
    return;
  }
  if ((static_cast<unsigned>(d->act.sa_flags) & SA_RESETHAND) && d->reset_done.exchange(true)) {
    take_default_action(sig, info, code);  // another thread made the one call first
    return;
  }
  call_foreign(*d, index, sig, info, context, mark);
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
      f->fault_lsb = code == linux_abi::bus_mceerr_ar ? static_cast<int>(info->si_addr_lsb) : 0;
      top = f->outer;  // f and every guard nested inside it are gone
      std::atomic_signal_fence(std::memory_order_seq_cst);
      errno = saved_errno;
#if defined(MAPDIRECT_ARCH_X86_64)
      if (ip) {
        // rt_sigreturn resumes at the fix-up label with the interrupted
        // code's mask (the copy routine itself, never a nested handler).
        *ip = static_cast<greg_t>(f->resume_ip);
        return;
      }
#endif
      // Restores the mask saved at the guard's entry (run_guarded), also
      // when the fault was taken in another signal's handler.
      siglongjmp(f->env, 1);
    }
  }
  volatile char mark = 0;
  chain_sigbus(sig, info, context, code, const_cast<const char*>(&mark));
  errno = saved_errno;
}

// The install lock: a pid-owned spin lock taken with every signal blocked,
// so a handler on the same thread can never wait for it (no self-deadlock),
// and a child of fork() takes over a lock a parent's thread held at fork.
inline void lock_install(sigbus_state& g, sigset_t& saved_mask) noexcept {
  sigset_t all;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &saved_mask);  // raw: may run in a signal handler
  const int me = static_cast<int>(::getpid());
  for (;;) {
    int owner = 0;
    if (g.lock_owner.compare_exchange_weak(owner, me, std::memory_order_acquire)) return;
    if (owner != 0 && owner != me) {
      // Held by a thread of the process we were forked from: it does not exist here.
      if (g.lock_owner.compare_exchange_strong(owner, me, std::memory_order_acquire)) return;
      continue;
    }
    ::sched_yield();  // another thread of ours, running with all signals blocked
  }
}

inline void unlock_install(sigbus_state& g, const sigset_t& saved_mask) noexcept {
  g.lock_owner.store(0, std::memory_order_release);
  ::pthread_sigmask(SIG_SETMASK, &saved_mask, nullptr);
}

// Publishes `a` as the disposition our handler calls first (before our
// handler can run with it). False when the table is full.
inline bool push_disposition(sigbus_state& g, const struct sigaction& a) noexcept {
  const int n = g.depth.load(std::memory_order_relaxed);
  if (n > 0 && !g.chain[n - 1].reset_done.load(std::memory_order_relaxed) && same_disposition(g.chain[n - 1].act, a))
    return true;  // ours was removed and what it chains to put back: nothing new
  if (n >= max_saved_dispositions) return false;
  g.chain[n].act = a;
  g.chain[n].reset_done.store(false, std::memory_order_relaxed);
  g.depth.store(n + 1, std::memory_order_release);
  return true;
}

/// Installs the handler (once; again if someone replaced it since). The
/// replaced disposition becomes the one unowned SIGBUS signals chain to.
/// Safe from a signal handler and in a child of fork(). Errors: sigaction
/// errno codes; EAGAIN after more than
/// max_saved_dispositions take-overs from foreign handlers.
__attribute__((noinline)) inline std::error_code install_sigbus_handler() noexcept {
  sigbus_state& g = sigbus_globals();
  sigset_t saved_mask;
  lock_install(g, saved_mask);
  std::error_code ec;
  struct sigaction current {};
  if (sys::sigaction(SIGBUS, nullptr, &current) != 0) {
    ec = fail_errno(errno, "sigaction(SIGBUS) (reading the current disposition)");
  } else if (!is_our_handler(current)) {
    // Saved and published before ours can run, so the handler never reads a
    // half-written disposition.
    if (!push_disposition(g, current)) {
      set_detail("install_sigbus_handler: SIGBUS was taken over from %d foreign handlers already; "
                 "install yours before mapdirect's instead of replacing it again and again",
                 max_saved_dispositions);
      ec = errno_code(EAGAIN);
    } else {
      struct sigaction ours {};
      ours.sa_sigaction = &sigbus_handler;
      // SA_NODEFER: SIGBUS must not stay blocked after a fix-up return or
      // in a foreign handler we call; SA_ONSTACK: use the thread's
      // alternate stack if any.
      ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
      ::sigemptyset(&ours.sa_mask);
      struct sigaction replaced {};
      if (sys::sigaction(SIGBUS, &ours, &replaced) != 0) {
        ec = fail_errno(errno, "sigaction(SIGBUS) (installing mapdirect's handler)");
      } else if (!is_our_handler(replaced) && !same_disposition(replaced, current)) {
        (void)push_disposition(g, replaced);  // changed by someone else between the two calls
      }
    }
  }
  if (!ec) g.installed.store(true, std::memory_order_release);
  unlock_install(g, saved_mask);
  return ec;
}

/// The cheap check on guard entry: installs lazily on first use.
inline std::error_code ensure_sigbus_handler() noexcept {
  if (sigbus_globals().installed.load(std::memory_order_acquire)) return {};
  return install_sigbus_handler();
}

/// Forgets every guard of this thread (after a non-local exit out of one).
inline void reset_thread_guards() noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  current_guard() = nullptr;
  chain_call& c = current_chain();
  c.info = nullptr;
  c.context = nullptr;
  c.mark = nullptr;
  c.index = -1;
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_SIGBUS_HPP
