// SIGBUS-safe access (guard.hpp): truncation by another process, full file
// systems, poison, chaining to the handler that was there before, threads
// and nesting.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {

std::size_t page() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

direct_mapping map_file(const temp_file& f, std::size_t size) {
  auto m = direct_mapping::map(f.fd(), 0, size);
  if (!m) {
    std::fprintf(stderr, "map failed: %s (%s)\n", m.error().message().c_str(), last_error_detail());
    std::abort();
  }
  return std::move(m.value());
}

void fill_pattern(const direct_mapping& m) {
  for (std::size_t i = 0; i < m.size(); ++i) m.data()[i] = static_cast<std::byte>(i * 7 + 3);
}

// Truncates `path` from a separate process (what another program would do).
void truncate_from_child(const std::string& path, off_t size) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    ::_exit(fd >= 0 && ::ftruncate(fd, size) == 0 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

// Runs fn in a forked child and returns its wait status. The child starts
// with SIGBUS at its default disposition unless fn changes it.
template <class F>
int in_child(F fn) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    // Do not let a crash in the child dump core into the test directory.
    struct rlimit nocore {};
    ::setrlimit(RLIMIT_CORE, &nocore);
    ::_exit(fn());
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

bool died_of_sigbus(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS; }
int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

void set_disposition(void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

void set_siginfo_handler(void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction sa {};
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

// Queues a SIGBUS with a chosen si_code/si_addr to this thread (the kernel
// lets a process send itself any si_code), to exercise the handler's
// decisions on codes that cannot be produced on demand (BUS_MCEERR_*).
int queue_sigbus(int code, const void* addr, short lsb) {
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  info.si_signo = SIGBUS;
  info.si_code = code;
  info.si_addr = const_cast<void*>(addr);
  info.si_addr_lsb = lsb;
  return static_cast<int>(::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), ::syscall(SYS_gettid), SIGBUS, &info));
}

// What the user handlers in the children saw.
volatile sig_atomic_t g_user_calls = 0;
volatile sig_atomic_t g_user_code = 0;
void* volatile g_user_addr = nullptr;
void* volatile g_expect_addr = nullptr;

void user_siginfo_exit(int, siginfo_t* info, void*) {
  ::_exit(info->si_code == BUS_ADRERR && info->si_addr == g_expect_addr ? 42 : 41);
}
void user_plain_exit(int) { ::_exit(43); }
void user_siginfo_count(int, siginfo_t* info, void*) {
  g_user_calls = g_user_calls + 1;
  g_user_code = info->si_code;
  g_user_addr = info->si_addr;
}

}  // namespace

TEST_CASE("guarded read, write and copy of a healthy mapping move the bytes", "[guard]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 4 * p);
  auto m = map_file(f, 4 * p);
  const std::string text = "guarded bytes across a page boundary";
  REQUIRE(m.write(p - 10, text.data(), text.size()));
  std::string back(text.size(), '\0');
  REQUIRE(m.read(p - 10, back));
  CHECK(back == text);
  std::vector<char> whole(4 * p);
  REQUIRE(guarded_copy(whole, std::vector<char>{}));  // an empty source copies nothing
  REQUIRE(guarded_copy(whole.data(), m.data(), whole.size()));
  CHECK(std::memcmp(whole.data() + p - 10, text.data(), text.size()) == 0);
  REQUIRE(m.persist(0, 4 * p));
  CHECK(f.read_all().substr(p - 10, text.size()) == text);

  auto sum = with_guard(m.data(), m.size(), [&]() noexcept {
    unsigned s = 0;
    for (std::size_t i = 0; i < m.size(); ++i) s += static_cast<unsigned>(m.data()[i]);
    return s;
  });
  REQUIRE(sum);
  unsigned expect = 0;
  for (char c : whole) expect += static_cast<unsigned char>(c);
  CHECK(sum.value() == expect);
  CHECK(detail::current_guard() == nullptr);
}

TEST_CASE("guarded_copy copies exactly n bytes for every size and alignment", "[guard]") {
  std::vector<unsigned char> src(1200), dst(1300);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 31 + 1);
  for (std::size_t n = 0; n <= 600; n += (n < 300 ? 1 : 37)) {
    for (std::size_t shift : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{33}}) {
      std::fill(dst.begin(), dst.end(), 0xee);
      INFO("n = " << n << ", destination shift " << shift);
      REQUIRE(guarded_copy(dst.data() + shift, src.data() + 3, n));
      bool exact = std::memcmp(dst.data() + shift, src.data() + 3, n) == 0;
      for (std::size_t i = 0; i < dst.size(); ++i)
        if ((i < shift || i >= shift + n) && dst[i] != 0xee) exact = false;
      REQUIRE(exact);
    }
  }
  CHECK(detail::current_guard() == nullptr);
}

TEST_CASE("guarded access rejects bad arguments and changes nothing", "[guard]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 2 * p);
  auto m = map_file(f, 2 * p);
  char buf[16] = {};
  auto r = m.read(2 * p - 8, buf, 16);
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::out_of_range);
  CHECK_FALSE(r.error().is_fault());
  auto w = m.write(2 * p, buf, 1);
  REQUIRE_FALSE(w);
  CHECK(w.error() == errc::out_of_range);
  CHECK(w.error() == std::errc::result_out_of_range);
  auto c = guarded_copy(nullptr, buf, 4);
  REQUIRE_FALSE(c);
  CHECK(c.error() == errc::invalid_argument);
  std::vector<char> small(3), big(5, 'x');
  auto s = guarded_copy(small, big);
  REQUIRE_FALSE(s);
  CHECK(s.error() == errc::invalid_argument);
  CHECK(small == std::vector<char>(3, '\0'));
  auto rp = m.repair(100, buf, 16);
  REQUIRE_FALSE(rp);
  CHECK(rp.error() == errc::misaligned_offset);
  direct_mapping empty;
  auto e = empty.read(0, buf, 1);
  REQUIRE_FALSE(e);
  CHECK(e.error() == errc::not_mapped);
  CHECK(f.read_all() == std::string(2 * p, '\0'));
  // An access_error flows into result<T> through TRY and compares as a code.
  auto via_try = [&]() noexcept -> result<int> {
    BOOST_OUTCOME_TRY(m.read(2 * p, buf, 1));
    return 1;
  }();
  REQUIRE_FALSE(via_try);
  CHECK(via_try.error() == errc::out_of_range);
}

TEST_CASE("another process truncates the file: beyond_eof with the offset where it now ends, and work goes on",
          "[guard]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 16 * p);
  auto m = map_file(f, 16 * p);
  fill_pattern(m);
  REQUIRE(m.persist(0, m.size()));
  const std::size_t eof = 5 * p + 100;
  truncate_from_child(f.path(), static_cast<off_t>(eof));

  std::vector<unsigned char> buf(16 * p);
  auto r = m.read(0, buf);
  REQUIRE_FALSE(r);
  INFO(last_error_detail());
  CHECK(r.error() == errc::beyond_eof);
  CHECK(r.error() == std::errc::result_out_of_range);
  CHECK(r.error().offset() == eof);
  CHECK(r.error().length() == 16 * p - eof);
  CHECK(r.error().is_fault());
  const auto fault = reinterpret_cast<std::uintptr_t>(r.error().address());
  const auto base = reinterpret_cast<std::uintptr_t>(m.data());
  CHECK(fault >= base + 6 * p);  // the first whole page past EOF or later
  CHECK(fault < base + 16 * p);

  // A read starting past EOF reports where the file ends too, not its own
  // start: "valid up to here" (the documented contract of offset()).
  auto late = m.read(10 * p + 5, buf.data(), 10);
  REQUIRE_FALSE(late);
  CHECK(late.error() == errc::beyond_eof);
  CHECK(late.error().offset() == eof);
  CHECK(late.error().length() == 16 * p - eof);

  // Every copy size class faults the same way (bytes, 16-byte moves, rep
  // movsb on x86-64), reads and writes alike.
  for (std::size_t n : {std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{100}, std::size_t{255},
                        std::size_t{256}, 3 * p}) {
    INFO("n = " << n);
    auto e = m.read(7 * p + 3, buf.data(), n);
    REQUIRE_FALSE(e);
    CHECK(e.error() == errc::beyond_eof);
    CHECK(e.error().offset() == eof);
    CHECK(e.error().length() == 16 * p - eof);
    auto w = m.write(7 * p + 3, buf.data(), n);
    REQUIRE_FALSE(w);
    CHECK(w.error() == errc::beyond_eof);
    CHECK(w.error().offset() == eof);
    CHECK(w.error().length() == 16 * p - eof);
  }

  // The process survived; what is still in the file reads back correctly.
  REQUIRE(m.read(0, buf.data(), eof));
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < eof; ++i) mismatches += buf[i] != static_cast<unsigned char>(i * 7 + 3);
  CHECK(mismatches == 0);
  REQUIRE(m.write(0, "alive", 5));
  CHECK(detail::current_guard() == nullptr);

  // After the file grows back, the same range is readable again (zeros).
  truncate_from_child(f.path(), static_cast<off_t>(16 * p));
  REQUIRE(m.read(8 * p, buf.data(), p));
  CHECK(buf[0] == 0);
}

TEST_CASE("read/write report beyond_eof as documented: where the file now ends, to the end of the mapping", "[guard]") {
  const std::size_t p = page();
  SECTION("the issue's example: 16 pages truncated to 20580 bytes, read(6 pages, 100)") {
    temp_file f(mdtest::test_dir(), 16 * p);
    auto m = map_file(f, 16 * p);
    const std::size_t eof = 5 * p + 100;  // 20580 with 4 KiB pages
    truncate_from_child(f.path(), static_cast<off_t>(eof));
    char buf[100];
    auto r = m.read(6 * p, buf, sizeof buf);
    REQUIRE_FALSE(r);
    INFO(last_error_detail());
    CHECK(r.error() == errc::beyond_eof);
    CHECK(r.error().offset() == eof);
    CHECK(r.error().length() == 16 * p - eof);
    auto w = m.write(15 * p + 1, buf, sizeof buf);
    REQUIRE_FALSE(w);
    CHECK(w.error() == errc::beyond_eof);
    CHECK(w.error().offset() == eof);
    CHECK(w.error().length() == 16 * p - eof);
  }
  SECTION("a mapping at a nonzero file offset: inside it, then below its start") {
    temp_file f(mdtest::test_dir(), 16 * p);
    auto mapped = direct_mapping::map(f.fd(), 4 * p, 8 * p);  // file bytes [4p, 12p)
    REQUIRE(mapped);
    auto& m = mapped.value();
    truncate_from_child(f.path(), static_cast<off_t>(6 * p + 100));  // 2p + 100 into the mapping
    char buf[64];
    auto r = m.read(5 * p, buf, sizeof buf);
    REQUIRE_FALSE(r);
    INFO(last_error_detail());
    CHECK(r.error() == errc::beyond_eof);
    CHECK(r.error().offset() == 2 * p + 100);
    CHECK(r.error().length() == 8 * p - (2 * p + 100));
    REQUIRE(m.read(2 * p, buf, sizeof buf));                       // still in the file
    truncate_from_child(f.path(), static_cast<off_t>(2 * p + 5));  // below the mapping's start
    auto below = m.read(3 * p, buf, 10);
    REQUIRE_FALSE(below);
    CHECK(below.error() == errc::beyond_eof);
    CHECK(below.error().offset() == 0);
    CHECK(below.error().length() == 8 * p);
    auto wbelow = m.write(0, buf, 10);
    REQUIRE_FALSE(wbelow);
    CHECK(wbelow.error() == errc::beyond_eof);
    CHECK(wbelow.error().offset() == 0);
    CHECK(wbelow.error().length() == 8 * p);
  }
  SECTION("guarded_copy keeps reporting relative to the copy (its object)") {
    temp_file f(mdtest::test_dir(), 8 * p);
    auto m = map_file(f, 8 * p);
    truncate_from_child(f.path(), static_cast<off_t>(3 * p));
    std::vector<char> buf(2 * p);
    auto c = guarded_copy(buf.data(), m.data() + 2 * p, buf.size());
    REQUIRE_FALSE(c);
    CHECK(c.error() == errc::beyond_eof);
    CHECK(c.error().offset() == p);
    CHECK(c.error().length() == p);
  }
}

TEST_CASE("truncation racing with a loop of guarded copies is caught, never fatal", "[guard]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 64 * p);
  auto m = map_file(f, 64 * p);
  fill_pattern(m);
  int go[2];
  REQUIRE(::pipe(go) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(2);
    const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
    ::_exit(fd >= 0 && ::ftruncate(fd, static_cast<off_t>(20 * p)) == 0 ? 0 : 1);
  }
  ::close(go[0]);
  std::vector<char> buf(64 * p);
  REQUIRE(::write(go[1], "g", 1) == 1);
  ::close(go[1]);
  access_result<void> r = outcome::success();
  std::size_t copies = 0;
  bool child_done = false;
  for (;;) {
    r = guarded_copy(buf.data(), m.data(), buf.size());
    ++copies;
    if (!r) break;
    if (child_done) break;  // one full copy after the truncation finished must have failed
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      child_done = true;
      REQUIRE(exit_code(status) == 0);
    }
  }
  if (!child_done) ::waitpid(pid, nullptr, 0);
  INFO("copies before the fault: " << copies << "; " << last_error_detail());
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::beyond_eof);
  CHECK(r.error().offset() == 20 * p);
  CHECK(r.error().length() == 44 * p);
}

TEST_CASE("guarded_copy finds the file itself, also for the destination side and for a deleted file", "[guard]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 8 * p);
  auto m = map_file(f, 8 * p);
  truncate_from_child(f.path(), static_cast<off_t>(3 * p));
  std::vector<char> buf(4 * p, 'z');

  // Destination in the truncated mapping: offset relative to the copy.
  auto w = guarded_copy(m.data() + 2 * p, buf.data(), buf.size());
  REQUIRE_FALSE(w);
  INFO(last_error_detail());
  CHECK(w.error() == errc::beyond_eof);
  CHECK(w.error().offset() == p);
  CHECK(w.error().length() == 3 * p);

  // Unlinked: found through /proc/self/map_files (root) or, failing that, an I/O error.
  ::unlink(f.path().c_str());
  auto r = guarded_copy(buf.data(), m.data() + p, buf.size());
  REQUIRE_FALSE(r);
  if (::geteuid() == 0) {
    CHECK(r.error() == errc::beyond_eof);
    CHECK(r.error().offset() == 2 * p);
  } else {
    CHECK((r.error() == errc::beyond_eof || r.error() == errc::io_error));
  }
}

TEST_CASE("with_guard reports offsets relative to its range and nests", "[guard]") {
  const std::size_t p = page();
  temp_file fa(mdtest::test_dir(), 8 * p);
  temp_file fb(mdtest::test_dir(), 8 * p);
  auto a = map_file(fa, 8 * p);
  auto b = map_file(fb, 8 * p);
  truncate_from_child(fa.path(), static_cast<off_t>(4 * p));
  truncate_from_child(fb.path(), static_cast<off_t>(2 * p));
  const guard_range ra{a.data(), a.size(), a.native_handle(), a.file_offset()};

  // Inner guard catches a fault in its own range; the outer region goes on.
  volatile int inner_code = 0;
  volatile std::size_t inner_offset = 0;
  auto outer = with_guard(ra, [&]() noexcept {
    char local[64];
    auto inner = guarded_copy(local, b.data() + 3 * p, sizeof local);
    inner_code = inner ? 0 : inner.error().value();
    inner_offset = inner ? 0 : static_cast<std::size_t>(inner.error().offset());
    return static_cast<int>(a.data()[p]);  // still inside a's file: fine
  });
  REQUIRE(outer);
  CHECK(inner_code == static_cast<int>(errc::beyond_eof));
  CHECK(inner_offset == 0);  // the copy started past b's EOF

  // A fault in the outer range inside an inner guard that does not cover it
  // goes to the outer guard.
  volatile bool inner_returned = false;
  auto nested = with_guard(ra, [&]() noexcept {
    auto inner = with_guard(b.data(), p, [&]() noexcept { return static_cast<int>(a.data()[6 * p + 1]); });
    inner_returned = true;
    (void)inner;
  });
  REQUIRE_FALSE(nested);
  CHECK_FALSE(inner_returned);
  CHECK(nested.error() == errc::beyond_eof);
  CHECK(nested.error().offset() == 4 * p);
  CHECK(detail::current_guard() == nullptr);

  // And the handler still works afterwards on this thread.
  auto again = with_guard(b.data(), b.size(), [&]() noexcept { return static_cast<int>(b.data()[5 * p]); });
  REQUIRE_FALSE(again);
  CHECK(again.error().offset() == 2 * p);
}

TEST_CASE("two threads fault inside their own guards at once", "[guard]") {
  const std::size_t p = page();
  temp_file fa(mdtest::test_dir(), 32 * p);
  temp_file fb(mdtest::test_dir(), 32 * p);
  auto a = map_file(fa, 32 * p);
  auto b = map_file(fb, 32 * p);
  truncate_from_child(fa.path(), static_cast<off_t>(7 * p));
  truncate_from_child(fb.path(), static_cast<off_t>(13 * p + 1));
  std::atomic<int> start{0};
  std::atomic<int> wrong{0};
  std::atomic<int> healthy_failures{0};
  auto faulting = [&](const direct_mapping& m, std::uint64_t eof) {
    std::vector<char> buf(32 * p);
    start.fetch_add(1);
    while (start.load() < 3) {
    }
    for (int i = 0; i < 300; ++i) {
      auto r = m.read(0, buf);
      if (r || r.error() != errc::beyond_eof || r.error().offset() != eof) wrong.fetch_add(1);
    }
  };
  std::thread t1(faulting, std::cref(a), 7 * p);
  std::thread t2(faulting, std::cref(b), 13 * p + 1);
  std::thread t3([&] {
    std::vector<char> buf(p);
    start.fetch_add(1);
    while (start.load() < 3) {
    }
    for (int i = 0; i < 3000; ++i)
      if (!a.read(0, buf)) healthy_failures.fetch_add(1);
  });
  t1.join();
  t2.join();
  t3.join();
  CHECK(wrong.load() == 0);
  CHECK(healthy_failures.load() == 0);
}

TEST_CASE("media_error carries the poisoned range from si_addr_lsb (BUS_MCEERR_AR queued to ourselves)", "[guard]") {
  // Real poison needs CONFIG_MEMORY_FAILURE (see the [poison] test); the
  // decoding of a BUS_MCEERR_AR report is checked here with a queued one.
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 8 * p);
  auto m = map_file(f, 8 * p);
  std::byte* poisoned = m.data() + 3 * p + 123;
  const guard_range r{m.data(), m.size(), m.native_handle(), 0};
  auto res = with_guard(r, [&]() noexcept { return queue_sigbus(BUS_MCEERR_AR, poisoned, 12); });
  if (res && res.value() != 0) {
    WARN("skipped: rt_tgsigqueueinfo refused: " << std::strerror(errno));
    return;
  }
  REQUIRE_FALSE(res);
  INFO(last_error_detail());
  CHECK(res.error() == errc::media_error);
  CHECK(res.error() == std::errc::io_error);
  CHECK(res.error().offset() == 3 * p);
  CHECK(res.error().length() == 4096);
  CHECK(res.error().address() == poisoned);

  // A 2 MiB report (huge page) is clamped to the bytes accessed.
  auto copy = [&]() noexcept {
    return with_guard(guard_range{m.data() + p, 2 * p, m.native_handle(), p},
                      [&]() noexcept { return queue_sigbus(BUS_MCEERR_AR, m.data() + p + 10, 21); });
  }();
  REQUIRE_FALSE(copy);
  CHECK(copy.error() == errc::media_error);
  CHECK(copy.error().offset() == 0);
  CHECK(copy.error().length() == 2 * p);
}

TEST_CASE("a SIGBUS outside any guard kills the process as before ours was installed", "[guard][chain]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 4 * p);
  auto m = map_file(f, 4 * p);
  truncate_from_child(f.path(), static_cast<off_t>(p));
  volatile std::byte* past = m.data() + 2 * p;

  SECTION("default disposition: the child dies of SIGBUS") {
    const int status = in_child([&] {
      set_disposition(SIG_DFL);
      if (!install_sigbus_handler()) return 10;
      // A guard elsewhere is no excuse to swallow this one.
      char local[8];
      auto ok = with_guard(local, sizeof local, [&]() noexcept { return static_cast<int>(past[0]); });
      (void)ok;
      return 0;
    });
    CHECK(died_of_sigbus(status));
  }
  SECTION("an SA_SIGINFO handler installed before ours gets the fault with its siginfo") {
    const int status = in_child([&] {
      g_expect_addr = const_cast<std::byte*>(past);
      set_siginfo_handler(user_siginfo_exit);
      if (!install_sigbus_handler()) return 10;
      return static_cast<int>(past[0]);
    });
    CHECK(exit_code(status) == 42);
  }
  SECTION("a plain handler installed before ours gets the fault") {
    const int status = in_child([&] {
      set_disposition(user_plain_exit);
      if (!install_sigbus_handler()) return 10;
      return static_cast<int>(past[0]);
    });
    CHECK(exit_code(status) == 43);
  }
  SECTION("SIG_IGN: a real fault still kills, as the kernel forces it") {
    const int status = in_child([&] {
      set_disposition(SIG_IGN);
      if (!install_sigbus_handler()) return 10;
      return static_cast<int>(past[0]);
    });
    CHECK(died_of_sigbus(status));
  }
  SECTION("a fault inside a guard is ours: the earlier handler is not called") {
    const int status = in_child([&] {
      set_siginfo_handler(user_siginfo_count);
      if (!install_sigbus_handler()) return 10;
      auto r = with_guard(m.data(), m.size(), [&]() noexcept { return static_cast<int>(past[0]); });
      if (r || r.error() != errc::beyond_eof) return 11;
      return g_user_calls == 0 ? 0 : 12;
    });
    CHECK(exit_code(status) == 0);
  }
}

TEST_CASE("kill(getpid(), SIGBUS) and asynchronous reports inside a guard are not swallowed", "[guard][chain]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 2 * p);
  auto m = map_file(f, 2 * p);

  SECTION("default disposition: kill inside a guard kills") {
    const int status = in_child([&] {
      set_disposition(SIG_DFL);
      if (!install_sigbus_handler()) return 10;
      auto r = with_guard(m.data(), m.size(), [&]() noexcept { return ::kill(::getpid(), SIGBUS); });
      (void)r;
      return 0;
    });
    CHECK(died_of_sigbus(status));
  }
  SECTION("raise (SI_TKILL) inside a guard kills") {
    const int status = in_child([&] {
      set_disposition(SIG_DFL);
      if (!install_sigbus_handler()) return 10;
      auto r = with_guard(m.data(), m.size(), [&]() noexcept { return ::raise(SIGBUS); });
      (void)r;
      return 0;
    });
    CHECK(died_of_sigbus(status));
  }
  SECTION("a user handler sees the kill; the guarded region completes") {
    const int status = in_child([&] {
      set_siginfo_handler(user_siginfo_count);
      if (!install_sigbus_handler()) return 10;
      auto r = with_guard(m.data(), m.size(), [&]() noexcept {
        ::kill(::getpid(), SIGBUS);
        return 7;
      });
      if (!r || r.value() != 7) return 11;
      if (g_user_calls != 1 || g_user_code != SI_USER) return 12;
      return 0;
    });
    CHECK(exit_code(status) == 0);
  }
  SECTION("BUS_MCEERR_AO (asynchronous) at a guarded address goes to the user handler") {
    const int status = in_child([&] {
      set_siginfo_handler(user_siginfo_count);
      if (!install_sigbus_handler()) return 10;
      auto r = with_guard(m.data(), m.size(), [&]() noexcept { return queue_sigbus(BUS_MCEERR_AO, m.data(), 12); });
      if (!r || r.value() != 0) return 11;
      if (g_user_calls != 1 || g_user_code != BUS_MCEERR_AO || g_user_addr != m.data()) return 12;
      return 0;
    });
    CHECK(exit_code(status) == 0);
  }
  SECTION("SIG_IGN: a sent SIGBUS stays ignored") {
    const int status = in_child([&] {
      set_disposition(SIG_IGN);
      if (!install_sigbus_handler()) return 10;
      auto r = with_guard(m.data(), m.size(), [&]() noexcept { return ::kill(::getpid(), SIGBUS); });
      return r && r.value() == 0 ? 0 : 11;
    });
    CHECK(exit_code(status) == 0);
  }
}

namespace {
struct failing_sigaction : syscall_interposer {
  int sigaction(int sig, const struct sigaction* act, struct sigaction* old) noexcept override {
    if (act) {
      errno = EINVAL;
      return -1;
    }
    return syscall_interposer::sigaction(sig, act, old);
  }
};
}  // namespace

TEST_CASE("a handler that cannot be installed is an error, and nothing is copied", "[guard]") {
  const int status = in_child([] {
    set_disposition(SIG_DFL);
    detail::sigbus_globals().installed.store(false);  // as in a fresh process
    failing_sigaction fail;
    scoped_syscall_interposer scope(fail);
    char src[4] = {'a', 'b', 'c', 'd'}, dst[4] = {};
    auto r = guarded_copy(dst, src, sizeof dst);
    if (r || r.error() != std::errc::invalid_argument) return 11;
    if (std::string(last_error_detail()).find("sigaction") == std::string::npos) return 12;
    if (dst[0] != 0) return 13;
    struct sigaction now {};
    ::sigaction(SIGBUS, nullptr, &now);
    if ((now.sa_flags & SA_SIGINFO) || now.sa_handler != SIG_DFL) return 14;
    auto e = install_sigbus_handler();
    if (e || e.error() != std::errc::invalid_argument) return 15;
    return 0;
  });
  CHECK(exit_code(status) == 0);
}

TEST_CASE("repair rewrites a page-aligned range through the file and reads it back", "[guard]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 4 * p);
  auto m = map_file(f, 4 * p);
  std::vector<char> data(2 * p);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('A' + i % 26);
  REQUIRE(m.repair(p, data));
  CHECK(std::memcmp(m.data() + p, data.data(), data.size()) == 0);
  CHECK(f.read_all().substr(p, 2 * p) == std::string(data.begin(), data.end()));
  auto bad = m.repair(3 * p, data);
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::out_of_range);
}

namespace {
// A small ext4 on a loop device, removed again whatever happens.
class loop_fs {
 public:
  loop_fs() {
    if (::geteuid() != 0) {
      why_ = "needs root (losetup, mount)";
      return;
    }
    std::string tmpl = mdtest::test_dir() + "/mapdirect-loopimg-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const int fd = ::mkstemp(buf.data());
    if (fd < 0) {
      why_ = "cannot create the image file";
      return;
    }
    image_ = buf.data();
    const bool sized = ::ftruncate(fd, 8 << 20) == 0;
    ::close(fd);
    if (!sized) {
      why_ = "cannot size the image file";
      return;
    }
    if (run("mkfs.ext4 -q -F -m 0 -O ^has_journal " + image_ + " >/dev/null 2>&1") != 0) {
      why_ = "mkfs.ext4 failed or is missing";
      return;
    }
    FILE* pipe = ::popen(("losetup -f --show " + image_ + " 2>/dev/null").c_str(), "r");
    char line[128] = {};
    if (pipe) {
      if (!std::fgets(line, sizeof line, pipe)) line[0] = '\0';
      ::pclose(pipe);
    }
    device_ = line;
    while (!device_.empty() && (device_.back() == '\n' || device_.back() == ' ')) device_.pop_back();
    if (device_.empty()) {
      why_ = "no free loop device (losetup -f failed)";
      return;
    }
    char dir[] = "/tmp/mapdirect-loopmnt-XXXXXX";
    if (!::mkdtemp(dir)) {
      why_ = "cannot create the mount point";
      return;
    }
    dir_ = dir;
    if (::mount(device_.c_str(), dir_.c_str(), "ext4", 0, nullptr) != 0) {
      why_ = std::string("mount failed: ") + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~loop_fs() {
    if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) ::rmdir(dir_.c_str());
    if (!device_.empty()) run("losetup -d " + device_ + " >/dev/null 2>&1");
    if (!image_.empty()) ::unlink(image_.c_str());
  }
  loop_fs(const loop_fs&) = delete;
  loop_fs& operator=(const loop_fs&) = delete;
  bool ok() const { return mounted_; }
  const std::string& why() const { return why_; }
  const std::string& dir() const { return dir_; }

 private:
  static int run(const std::string& cmd) { return std::system(cmd.c_str()); }
  std::string image_, device_, dir_, why_;
  bool mounted_ = false;
};
}  // namespace

TEST_CASE("a store needing a block on a full file system is an error, not a crash", "[guard][loop]") {
  loop_fs fs;
  if (!fs.ok()) {
    WARN("skipped: loop-mounted ext4 unavailable: " << fs.why());
    return;
  }
  const std::size_t size = 16u << 20;  // twice the file system
  open_options o;
  o.create = true;
  o.size = size;
  o.preallocate = false;  // sparse: every store needs a block
  const std::string path = fs.dir() + "/sparse";
  {
    auto m = direct_mapping::open(path, o);
    REQUIRE(m);
    CHECK(m.value().mode() == map_mode::shared);
    std::vector<char> chunk(1u << 20, 'x');
    access_result<void> r = outcome::success();
    std::size_t at = 0;
    for (; at < size; at += chunk.size()) {
      r = m.value().write(at, chunk);
      if (!r) break;
    }
    INFO(last_error_detail());
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::io_error);
    // The faulting page and one page, relative to the mapping.
    CHECK(r.error().offset() >= at);
    CHECK(r.error().offset() < at + chunk.size());
    CHECK(r.error().offset() % page() == 0);
    CHECK(r.error().length() == page());
    // The process goes on: what was written is there.
    std::vector<char> back(4096);
    REQUIRE(m.value().read(0, back));
    CHECK(back[0] == 'x');
    (void)m.value().close();
  }
  ::unlink(path.c_str());
}

TEST_CASE("memory poison on a mapped page: media_error at its offset, repair, data back", "[poison]") {
  const bool must_run = mdtest::expected("MAPDIRECT_EXPECT_POISON").has_value();
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 8 * p);
  auto m = map_file(f, 8 * p);
  fill_pattern(m);
  REQUIRE(m.persist(0, m.size()));
  const auto* page3 = reinterpret_cast<const unsigned char*>(m.data()) + 3 * p;
  std::vector<unsigned char> good(page3, page3 + p);
  if (::geteuid() != 0) {
    if (must_run) FAIL("MADV_HWPOISON needs root (CAP_SYS_ADMIN)");
    WARN("skipped: memory poison injection (MADV_HWPOISON) needs root");
    return;
  }
  // Inject under a guard: on DAX the kernel signals BUS_MCEERR_AR to every
  // process mapping the page right away (MF_MUST_KILL), us included.
  const guard_range whole{m.data(), m.size(), m.native_handle(), m.file_offset()};
  auto inject =
      with_guard(whole, [&]() noexcept { return ::madvise(m.data() + 3 * p, p, MADV_HWPOISON) == 0 ? 0 : errno; });
  if (inject && inject.value() != 0) {
    const int e = inject.value();
    if (must_run) FAIL("MADV_HWPOISON failed: " << std::strerror(e));
    WARN("skipped: MADV_HWPOISON failed with " << std::strerror(e)
                                               << (e == EINVAL ? " (kernel built without CONFIG_MEMORY_FAILURE)" : ""));
    return;
  }
  std::vector<unsigned char> buf(p);
  access_error seen;
  if (!inject) {
    seen = inject.error();
  } else {
    // Page cache and tmpfs: the page table now holds a poison entry; the next access faults.
    auto r = m.read(3 * p, buf);
    REQUIRE_FALSE(r);
    seen = r.error();
  }
  INFO(last_error_detail());
  CHECK(seen == errc::media_error);
  CHECK(seen.offset() == 3 * p);
  CHECK(seen.length() >= p);
  // Other pages are unaffected.
  REQUIRE(m.read(0, buf));
  CHECK(buf[5] == static_cast<unsigned char>(5 * 7 + 3));
  // Repair with bytes unlike the page's old ones: a repair that writes
  // nothing (the file still holds `good`) must not pass.
  std::vector<unsigned char> fresh(p);
  for (std::size_t i = 0; i < p; ++i) fresh[i] = static_cast<unsigned char>(~good[i]);
  REQUIRE(fresh != good);
  auto fixed = m.repair(3 * p, fresh);
  INFO(last_error_detail());
  REQUIRE(fixed);
  REQUIRE(m.read(3 * p, buf));
  CHECK(buf == fresh);
  std::vector<unsigned char> on_disk(p);
  REQUIRE(::pread(f.fd(), on_disk.data(), p, static_cast<off_t>(3 * p)) == static_cast<ssize_t>(p));
  CHECK(on_disk == fresh);
}
