// The SIGBUS handler next to foreign dispositions (issue 10 item 5, issue 18,
// issue 19 item 6): SIG_DFL/SIG_IGN with SA_SIGINFO set, handlers that chain
// back to ours, SA_RESETHAND, signals that do not repeat, non-local exits,
// faults inside other signals' handlers, install from a handler, fork,
// SI_QUEUE, SA_ONSTACK, and which guarded-copy routine this binary tests.
// Every case runs in a child process (dispositions are process-wide) under
// an anti-hang alarm; the child reports progress through a pipe.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {

std::size_t page_bytes() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

int g_log = -1;  // write end of the child's progress pipe
void note(char c) {
  if (::write(g_log, &c, 1) != 1) ::_exit(90);
}

struct child_outcome {
  int status = -1;
  std::string log;
  bool died_of(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

std::string describe(const child_outcome& o) {
  char buf[160];
  if (WIFSIGNALED(o.status))
    std::snprintf(buf, sizeof buf, "child killed by signal %d (%s), log \"%s\"", WTERMSIG(o.status),
                  strsignal(WTERMSIG(o.status)), o.log.c_str());
  else std::snprintf(buf, sizeof buf, "child exited %d, log \"%s\"", o.exit_code(), o.log.c_str());
  return buf;
}

// Puts the child back to a fresh process's SIGBUS state: SIG_DFL, mapdirect
// not installed, no saved dispositions, no guards.
void fresh_sigbus_state() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  detail::sigbus_globals().installed.store(false);
  detail::sigbus_globals().depth.store(0);
  detail::sigbus_globals().lock_owner.store(0);
  reset_thread_guards();
}

// Waits for pid up to `seconds`, then kills it (SIGKILL: a hang may have
// every signal blocked). The wait status, or -1 if it had to be killed.
int wait_or_kill(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 100; ++i) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    ::usleep(10000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

// Runs fn in a forked child (fresh SIGBUS state, 10 s alarm, no core dump)
// and collects its status and progress log.
template <class F>
child_outcome run_child(F fn) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    g_log = fds[1];
    struct rlimit nocore {};
    ::setrlimit(RLIMIT_CORE, &nocore);
    fresh_sigbus_state();
    ::alarm(10);
    ::_exit(fn());
  }
  ::close(fds[1]);
  child_outcome o;
  // Wait first: a grandchild still holding the pipe must not hang the test.
  REQUIRE(::waitpid(pid, &o.status, 0) == pid);
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  char buf[64];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      o.log.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(fds[0]);
  return o;
}

// A mapping of 4 pages whose file now ends at one page (faults past it).
struct truncated {
  temp_file file{mdtest::test_dir(), 4 * page_bytes()};
  direct_mapping map;
  volatile std::byte* past = nullptr;
  truncated() {
    auto m = direct_mapping::map(file.fd(), 0, 4 * page_bytes());
    REQUIRE(m);
    map = std::move(m.value());
    REQUIRE(::ftruncate(file.fd(), static_cast<off_t>(page_bytes())) == 0);
    past = map.data() + 2 * page_bytes();
  }
  // A guarded read past EOF: true when it reported beyond_eof.
  bool guarded_read_fails_cleanly() const {
    char buf[16];
    auto r = map.read(2 * page_bytes() + 8, buf, sizeof buf);
    return !r && r.error() == errc::beyond_eof && r.error().offset() == page_bytes();
  }
  int touch() const { return static_cast<int>(past[0]); }
};

void set_action(void (*handler)(int), int flags) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

int queue_to_self(int sig, int code, const void* addr) {
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  info.si_signo = sig;
  info.si_code = code;
  info.si_addr = const_cast<void*>(addr);
  return static_cast<int>(::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), ::syscall(SYS_gettid), sig, &info));
}

}  // namespace

TEST_CASE("{SA_SIGINFO, SIG_DFL} and {SA_SIGINFO, SIG_IGN} are the default and ignore actions", "[sigbus]") {
  truncated t;
  SECTION("SIG_DFL with SA_SIGINFO: an unguarded fault dies of SIGBUS (not SIGSEGV)") {
    auto o = run_child([&] {
      set_action(SIG_DFL, SA_SIGINFO);
      if (!install_sigbus_handler()) return 10;
      if (!t.guarded_read_fails_cleanly()) return 11;
      note('g');
      return t.touch();
    });
    INFO(describe(o));
    CHECK(o.died_of(SIGBUS));
    CHECK(o.log == "g");
  }
  SECTION("SIG_DFL with SA_SIGINFO: kill(getpid(), SIGBUS) inside a guard dies of SIGBUS") {
    auto o = run_child([&] {
      set_action(SIG_DFL, SA_SIGINFO);
      auto r = with_guard(t.map.data(), t.map.size(), [] { return ::kill(::getpid(), SIGBUS); });
      (void)r;
      note('x');
      return 0;
    });
    INFO(describe(o));
    CHECK(o.died_of(SIGBUS));
    CHECK(o.log.empty());
  }
  SECTION("SIG_IGN with SA_SIGINFO: kill(getpid(), SIGBUS) stays ignored, guards work") {
    auto o = run_child([&] {
      set_action(SIG_IGN, SA_SIGINFO);
      if (!install_sigbus_handler()) return 10;
      if (::kill(::getpid(), SIGBUS) != 0) return 11;
      note('k');
      if (!t.guarded_read_fails_cleanly()) return 12;
      note('g');
      return 0;
    });
    INFO(describe(o));
    CHECK(o.exit_code() == 0);
    CHECK(o.log == "kg");
  }
  SECTION("SIG_IGN with SA_SIGINFO: a real unguarded fault still dies of SIGBUS") {
    auto o = run_child([&] {
      set_action(SIG_IGN, SA_SIGINFO);
      if (!install_sigbus_handler()) return 10;
      return t.touch();
    });
    INFO(describe(o));
    CHECK(o.died_of(SIGBUS));
  }
}

namespace {
struct sigaction g_saved_by_app;  // what the chaining handler replaced (ours)
void chaining_handler(int sig, siginfo_t* info, void* context) {
  note('h');
  const struct sigaction& prev = g_saved_by_app;
  if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) return;
  if (prev.sa_flags & SA_SIGINFO) prev.sa_sigaction(sig, info, context);
  else prev.sa_handler(sig);
}
void install_chaining_handler() {
  struct sigaction sa {};
  sa.sa_sigaction = chaining_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, &g_saved_by_app);
}
}  // namespace

TEST_CASE("a handler that chains to ours, then install_sigbus_handler() again: no mutual recursion", "[sigbus]") {
  truncated t;
  SECTION("an unguarded fault reaches the application's handler once, then the default (SIGBUS)") {
    auto o = run_child([&] {
      if (!install_sigbus_handler()) return 10;
      install_chaining_handler();
      if (!install_sigbus_handler()) return 11;  // as README recommends after replacing a handler
      if (!t.guarded_read_fails_cleanly()) return 12;
      note('g');
      return t.touch();
    });
    INFO(describe(o));
    CHECK(o.died_of(SIGBUS));
    CHECK(o.log == "gh");
  }
  SECTION("kill(getpid(), SIGBUS) likewise") {
    auto o = run_child([&] {
      if (!install_sigbus_handler()) return 10;
      install_chaining_handler();
      if (!install_sigbus_handler()) return 11;
      ::kill(::getpid(), SIGBUS);
      note('x');
      return 0;
    });
    INFO(describe(o));
    CHECK(o.died_of(SIGBUS));
    CHECK(o.log == "h");
  }
  SECTION("without the second install the chaining handler hands guarded faults to ours") {
    auto o = run_child([&] {
      if (!install_sigbus_handler()) return 10;
      install_chaining_handler();
      for (int i = 0; i < 3; ++i) {
        // Through the chaining handler (SIGBUS blocked in it): the guard
        // must come back with SIGBUS unblocked, or the next fault is fatal.
        auto r = with_guard(t.map.data(), t.map.size(), [&] { return t.touch(); });
        if (r || r.error() != errc::beyond_eof) return 12;
      }
      note('g');
      return 0;
    });
    INFO(describe(o));
    CHECK(o.exit_code() == 0);
    CHECK(o.log == "hhhg");
  }
}

namespace {
void noting_handler(int) { note('h'); }
}  // namespace

TEST_CASE("a previous handler with SA_RESETHAND: called once, then SIG_DFL, and the guards stay", "[sigbus]") {
  truncated t;
  auto o = run_child([&] {
    set_action(noting_handler, static_cast<int>(SA_RESETHAND));
    if (!install_sigbus_handler()) return 10;
    ::kill(::getpid(), SIGBUS);  // reaches the handler, which the kernel would now reset
    if (!t.guarded_read_fails_cleanly()) return 11;
    note('g');
    struct sigaction now {};
    ::sigaction(SIGBUS, nullptr, &now);
    if (!detail::is_our_handler(now)) return 12;
    ::kill(::getpid(), SIGBUS);  // SIG_DFL now: fatal
    note('x');
    return 0;
  });
  INFO(describe(o));
  CHECK(o.died_of(SIGBUS));
  CHECK(o.log == "hg");
}

TEST_CASE("a synchronous-looking SIGBUS that does not repeat: fatal stays fatal, ignored keeps the guards",
          "[sigbus]") {
  truncated t;
  SECTION("SIG_DFL: a self-queued BUS_ADRERR outside a guard kills with SIGBUS right away") {
    auto o = run_child([&] {
      if (!install_sigbus_handler()) return 10;
      if (queue_to_self(SIGBUS, BUS_ADRERR, t.map.data()) != 0) return 11;
      note('q');  // without mapdirect the process is dead here
      return 0;
    });
    INFO(describe(o));
    CHECK(o.died_of(SIGBUS));
    CHECK(o.log.empty());
  }
  SECTION("SIG_IGN: a self-queued BUS_ADRERR stays ignored and later guarded faults are caught") {
    auto o = run_child([&] {
      set_action(SIG_IGN, 0);
      if (!install_sigbus_handler()) return 10;
      for (int i = 0; i < 2; ++i) {
        if (queue_to_self(SIGBUS, BUS_ADRERR, t.map.data() + i) != 0) return 11;
        note('q');
      }
      if (!t.guarded_read_fails_cleanly()) return 12;
      note('g');
      struct sigaction now {};
      ::sigaction(SIGBUS, nullptr, &now);
      return detail::is_our_handler(now) ? 0 : 13;
    });
    INFO(describe(o));
    CHECK(o.exit_code() == 0);
    CHECK(o.log == "qqg");
  }
}

namespace {
sigjmp_buf g_recovery;
void jumping_handler(int) { siglongjmp(g_recovery, 1); }
const truncated* g_truncated = nullptr;
volatile sig_atomic_t g_in_handler_result = 0;
void touching_handler(int) {
  // Not a guard of its own: the fault belongs to the with_guard this handler interrupted.
  g_in_handler_result = g_truncated->touch();
}
void set_signal(int sig, void (*handler)(int), int flags) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  ::sigaction(sig, &sa, nullptr);
}
bool blocked(int sig) {
  sigset_t now;
  ::pthread_sigmask(SIG_BLOCK, nullptr, &now);
  return sigismember(&now, sig) == 1;
}
}  // namespace

TEST_CASE("a guarded fault taken in another signal's handler comes back with the guard's signal mask", "[sigbus]") {
  truncated t;
  g_truncated = &t;
  auto o = run_child([&] {
    set_signal(SIGUSR1, touching_handler, 0);
    for (int i = 0; i < 2; ++i) {
      auto r = with_guard(t.map.data(), t.map.size(), [] {
        ::raise(SIGUSR1);
        return 1;
      });
      if (r || r.error() != errc::beyond_eof || r.error().offset() != page_bytes()) return 10;
      if (blocked(SIGUSR1)) return 11;  // the interrupted handler's mask must not stay
      if (blocked(SIGBUS)) return 12;
      note('g');
    }
    return 0;
  });
  INFO(describe(o));
  CHECK(o.exit_code() == 0);
  CHECK(o.log == "gg");
}

TEST_CASE("a non-local exit out of a guard: reset_thread_guards() at the recovery point, then all is as before",
          "[sigbus]") {
  truncated t;
  auto o = run_child([&] {
    set_signal(SIGUSR1, jumping_handler, 0);
    if (sigsetjmp(g_recovery, 1) == 0) {
      auto r = with_guard(t.map.data(), t.map.size(), [] { return ::raise(SIGUSR1); });
      (void)r;
      return 10;  // the handler never returns
    }
    // The recovery point: the guard's record names a dead frame.
    if (detail::current_guard() == nullptr) return 11;
    reset_thread_guards();
    if (detail::current_guard() != nullptr) return 12;
    note('r');
    if (!t.guarded_read_fails_cleanly()) return 13;
    note('g');
    return t.touch();  // unguarded: must die of SIGBUS, not jump into the dead frame
  });
  INFO(describe(o));
  CHECK(o.died_of(SIGBUS));
  CHECK(o.log == "rg");
}

namespace {
volatile sig_atomic_t g_copy_in_handler = 0;
void copying_handler(int) {
  char a[4] = {1, 2, 3, 4}, b[4] = {};
  auto r = guarded_copy(b, a, sizeof b);  // the first guarded access: installs
  g_copy_in_handler = r && b[3] == 4 ? 1 : 2;
}
// Raises SIGUSR1 on this thread from inside install_sigbus_handler (while it
// holds its lock), and checks the previous disposition is published before
// ours goes live.
struct raising_sigaction : syscall_interposer {
  bool raised = false;
  bool published_first = true;
  int sigaction(int sig, const struct sigaction* act, struct sigaction* old) noexcept override {
    if (act && detail::is_our_handler(*act)) {
      const auto& g = detail::sigbus_globals();
      const int n = g.depth.load();
      published_first = n > 0 && g.chain[n - 1].act.sa_handler == noting_handler;
    }
    if (!raised) {
      raised = true;
      ::raise(SIGUSR1);
    }
    return syscall_interposer::sigaction(sig, act, old);
  }
};
}  // namespace

// install_sigbus_handler interrupted (on its own thread) by a signal handler
// that makes the first guarded access.
TEST_CASE("a handler interrupting the install can install too: no self-deadlock", "[sigbus]") {
  auto o = run_child([&] {
    set_signal(SIGUSR1, copying_handler, 0);
    set_action(noting_handler, 0);
    raising_sigaction seam;
    {
      scoped_syscall_interposer scope(seam);
      if (!install_sigbus_handler()) return 10;
    }
    if (!seam.raised) return 11;
    if (!seam.published_first) return 12;
    if (g_copy_in_handler != 1) return 13;
    note('i');
    return 0;
  });
  INFO(describe(o));
  CHECK(o.exit_code() == 0);  // a self-deadlock ends with SIGALRM
  CHECK(o.log == "i");
}

TEST_CASE("fork: the child's guards work and an unguarded SIGBUS still kills", "[sigbus][fork]") {
  truncated t;
  SECTION("install lock held by a parent's thread at fork") {
    auto o = run_child([&] {
      // As if another thread of the parent was inside install_sigbus_handler at fork.
      detail::sigbus_globals().lock_owner.store(static_cast<int>(::getpid()));
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::alarm(5);
        if (!t.guarded_read_fails_cleanly()) ::_exit(20);
        note('c');
        ::_exit(t.touch());
      }
      if (pid < 0) return 10;
      const int status = wait_or_kill(pid, 5);
      if (status == -1) return 12;  // hung (the inherited lock)
      return WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS ? 0 : 11;
    });
    INFO(describe(o));
    CHECK(o.exit_code() == 0);
    CHECK(o.log == "c");
  }
  SECTION("forks while another thread keeps faulting in guards") {
    auto o = run_child([&] {
      if (!install_sigbus_handler()) return 10;
      std::atomic<bool> stop{false};
      std::atomic<int> wrong{0};
      std::thread busy([&] {
        while (!stop.load())
          if (!t.guarded_read_fails_cleanly()) wrong.fetch_add(1);
      });
      int bad = 0;
      for (int i = 0; i < 20; ++i) {
        const pid_t pid = ::fork();
        if (pid == 0) {
          ::alarm(5);
          detail::sigbus_globals().installed.store(i % 2 == 0);  // half of them install afresh
          ::_exit(t.guarded_read_fails_cleanly() ? 0 : 1);
        }
        const int status = pid < 0 ? -1 : wait_or_kill(pid, 5);
        if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) ++bad;
      }
      stop.store(true);
      busy.join();
      return bad == 0 && wrong.load() == 0 ? 0 : 11;
    });
    INFO(describe(o));
    CHECK(o.exit_code() == 0);
  }
}

namespace {
volatile sig_atomic_t g_calls = 0;
volatile sig_atomic_t g_code = 0;
volatile sig_atomic_t g_value = 0;
void counting_siginfo(int, siginfo_t* info, void*) {
  g_calls = g_calls + 1;
  g_code = info->si_code;
  g_value = info->si_value.sival_int;
}
}  // namespace

TEST_CASE("a sigqueue'd SIGBUS (SI_QUEUE) inside a guard is not swallowed", "[sigbus][chain]") {
  truncated t;
  SECTION("a handler installed before ours gets it once, with its value; the region completes") {
    auto o = run_child([&] {
      struct sigaction sa {};
      sa.sa_sigaction = counting_siginfo;
      sa.sa_flags = SA_SIGINFO;
      sigemptyset(&sa.sa_mask);
      ::sigaction(SIGBUS, &sa, nullptr);
      if (!install_sigbus_handler()) return 10;
      auto r = with_guard(t.map.data(), t.map.size(), [] {
        union sigval v {};
        v.sival_int = 77;
        return ::sigqueue(::getpid(), SIGBUS, v) == 0 ? 7 : 8;
      });
      if (!r || r.value() != 7) return 11;
      if (g_calls != 1 || g_code != SI_QUEUE || g_value != 77) return 12;
      note('q');
      return 0;
    });
    INFO(describe(o));
    CHECK(o.exit_code() == 0);
    CHECK(o.log == "q");
  }
  SECTION("default disposition: it kills with SIGBUS") {
    auto o = run_child([&] {
      auto r = with_guard(t.map.data(), t.map.size(), [] {
        union sigval v {};
        return ::sigqueue(::getpid(), SIGBUS, v);
      });
      (void)r;
      note('x');
      return 0;
    });
    INFO(describe(o));
    CHECK(o.died_of(SIGBUS));
    CHECK(o.log.empty());
  }
}

namespace {
char* g_altstack = nullptr;
std::size_t g_altstack_size = 0;
volatile sig_atomic_t g_onstack_result = 0;
void altstack_handler(int) {
  char here = 0;
  const bool on_alt = &here >= g_altstack && &here < g_altstack + g_altstack_size;
  // Both the read (copy routine) and with_guard, taken on the alternate stack.
  const bool read_ok = g_truncated->guarded_read_fails_cleanly();
  auto r = with_guard(g_truncated->map.data(), g_truncated->map.size(), [] { return g_truncated->touch(); });
  const bool guard_ok = !r && r.error() == errc::beyond_eof && r.error().offset() == page_bytes();
  g_onstack_result = !on_alt ? 2 : !read_ok ? 3 : !guard_ok ? 4 : 1;
}
}  // namespace

TEST_CASE("guarded faults on a thread running on its alternate signal stack (SA_ONSTACK)", "[sigbus]") {
  truncated t;
  g_truncated = &t;
  auto o = run_child([&] {
    if (!install_sigbus_handler()) return 10;
    struct sigaction ours {};
    ::sigaction(SIGBUS, nullptr, &ours);
    if (!(ours.sa_flags & SA_ONSTACK)) return 11;
    int result = 0;
    std::thread th([&] {
      std::vector<char> stack(256 * 1024);
      g_altstack = stack.data();
      g_altstack_size = stack.size();
      stack_t ss{};
      ss.ss_sp = stack.data();
      ss.ss_size = stack.size();
      if (::sigaltstack(&ss, nullptr) != 0) {
        result = 12;
        return;
      }
      set_signal(SIGUSR1, altstack_handler, SA_ONSTACK);
      ::raise(SIGUSR1);
      result = g_onstack_result == 1 ? 0 : 20 + g_onstack_result;
      stack_t off{};
      off.ss_flags = SS_DISABLE;
      ::sigaltstack(&off, nullptr);
    });
    th.join();
    if (result == 0) note('a');
    return result;
  });
  INFO(describe(o));
  CHECK(o.exit_code() == 0);
  CHECK(o.log == "a");
}

TEST_CASE("this binary tests the guarded-copy routine it was built for", "[sigbus][guard]") {
#if defined(MAPDIRECT_TEST_PORTABLE_COPY)
  CHECK(MAPDIRECT_GUARD_COPY_ASM == 0);  // sigsetjmp + memcpy, forced on x86-64 too
#elif defined(MAPDIRECT_ARCH_X86_64) && !defined(__SANITIZE_ADDRESS__)
  CHECK(MAPDIRECT_GUARD_COPY_ASM == 1);  // the assembly fix-up routine release builds ship
#else
  CHECK(MAPDIRECT_GUARD_COPY_ASM == 0);
#endif
  // Either way the copy faults precisely in every size class.
  truncated t;
  for (std::size_t n : {std::size_t{1}, std::size_t{17}, std::size_t{300}, 2 * page_bytes()}) {
    std::vector<char> buf(n);
    auto r = guarded_copy(buf.data(), t.map.data() + page_bytes() - 1, n);
    if (n == 1) {
      CHECK(r);
      continue;
    }
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::beyond_eof);
    CHECK(r.error().offset() == 1);
    CHECK(r.error().length() == n - 1);
  }
  CHECK(detail::current_guard() == nullptr);
}
