// Issue 10 item 6: flush()/drain()/persist() of one mapping from several
// threads. A drain() may return only once an msync that started after the
// caller's flush() has completed over the flushed range.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

using namespace mapdirect;
using mdtest::temp_file;

namespace {

// Records every msync with a logical start time, and can hold the next msync
// until released (the "slow msync" of the issue).
struct msync_clock : syscall_interposer {
  struct done_sync {
    std::uintptr_t lo, hi;
    std::uint64_t started;
  };
  std::atomic<std::uint64_t> clock{1};
  std::mutex lock;
  std::condition_variable cv;
  std::vector<done_sync> done;
  bool hold_next = false;  // the next msync waits for release()
  bool holding = false;    // an msync is being held now
  bool released = false;

  std::uint64_t tick() { return clock.fetch_add(1); }

  int msync(void* addr, std::size_t len, int flags) noexcept override {
    const std::uint64_t started = tick();
    {
      std::unique_lock<std::mutex> g(lock);
      if (hold_next) {
        hold_next = false;
        holding = true;
        cv.notify_all();
        cv.wait(g, [&] { return released; });
        holding = false;
      }
    }
    const int rc = syscall_interposer::msync(addr, len, flags);
    if (rc == 0) {
      std::lock_guard<std::mutex> g(lock);
      const auto b = reinterpret_cast<std::uintptr_t>(addr);
      done.push_back({b, b + len, started});
    }
    return rc;
  }
  // True when an msync that started after `since` has completed over [lo, hi).
  bool durable_since(const void* lo, std::size_t n, std::uint64_t since) {
    std::lock_guard<std::mutex> g(lock);
    const auto a = reinterpret_cast<std::uintptr_t>(lo);
    for (const auto& d : done)
      if (d.started > since && d.lo <= a && d.hi >= a + n) return true;
    return false;
  }
  void wait_holding() {
    std::unique_lock<std::mutex> g(lock);
    cv.wait(g, [&] { return holding; });
  }
  void release() {
    std::lock_guard<std::mutex> g(lock);
    released = true;
    cv.notify_all();
  }
};

}  // namespace

TEST_CASE("drain() does not return before the msync covering this thread's flush has finished", "[mapping][threads]") {
  temp_file f(mdtest::test_dir(), 4 * 4096);
  auto r = direct_mapping::map(f.fd(), 0, 4 * 4096, mdtest::shared_only());
  REQUIRE(r);
  direct_mapping& m = r.value();
  REQUIRE(m.store_granularity() == granularity::page);
  msync_clock rec;
  scoped_syscall_interposer seam(rec);

  // B stores and flushes page 1; A flushes page 0 and drains, which takes
  // both pages into one msync that we hold. B's drain must wait for it.
  std::memset(m.data() + 4096, 'B', 100);
  const std::uint64_t b_flushed = rec.tick();
  m.flush(4096, 100);
  std::memset(m.data(), 'A', 100);
  m.flush(0, 100);
  rec.hold_next = true;
  std::thread a([&] { CHECK(m.drain()); });
  rec.wait_holding();

  std::atomic<bool> b_returned{false};
  bool durable_when_b_returned = false;
  bool b_ok = false;
  std::thread b([&] {
    b_ok = static_cast<bool>(m.drain());
    durable_when_b_returned = rec.durable_since(m.data() + 4096, 100, b_flushed);
    b_returned.store(true);
  });
  // Give a wrong drain time to return early (no assertion on time: the check
  // is what B saw when it returned).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const bool returned_while_held = b_returned.load();
  rec.release();
  a.join();
  b.join();
  CHECK_FALSE(returned_while_held);
  CHECK(b_ok);
  CHECK(durable_when_b_returned);
}

TEST_CASE("a drain() after a flush issued while another thread's msync runs gets an msync of its own",
          "[mapping][threads]") {
  temp_file f(mdtest::test_dir(), 4 * 4096);
  auto r = direct_mapping::map(f.fd(), 0, 4 * 4096, mdtest::shared_only());
  REQUIRE(r);
  direct_mapping& m = r.value();
  msync_clock rec;
  scoped_syscall_interposer seam(rec);

  m.flush(0, 10);
  rec.hold_next = true;
  std::thread a([&] { CHECK(m.drain()); });
  rec.wait_holding();
  // B flushes page 2 after A's msync started: A's msync does not cover it.
  std::memset(m.data() + 2 * 4096, 'C', 10);
  const std::uint64_t b_flushed = rec.tick();
  m.flush(2 * 4096, 10);
  bool b_ok = false, durable = false;
  std::thread b([&] {
    b_ok = static_cast<bool>(m.drain());
    durable = rec.durable_since(m.data() + 2 * 4096, 10, b_flushed);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  rec.release();
  a.join();
  b.join();
  CHECK(b_ok);
  CHECK(durable);
  CHECK(f.read_all().substr(2 * 4096, 10) == std::string(10, 'C'));
}

TEST_CASE("flush/drain/persist/copy_persist/fill_persist from many threads: every drain covers its flush",
          "[mapping][threads]") {
  constexpr int threads = 4;
  constexpr int rounds = 150;
  temp_file f(mdtest::test_dir(), threads * 2 * 4096);
  auto r = direct_mapping::map(f.fd(), 0, threads * 2 * 4096, mdtest::shared_only());
  REQUIRE(r);
  direct_mapping& m = r.value();
  msync_clock rec;
  scoped_syscall_interposer seam(rec);
  std::atomic<int> failures{0}, uncovered{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::size_t page = static_cast<std::size_t>(t) * 2 * 4096;
      for (int i = 0; i < rounds; ++i) {
        char v = static_cast<char>('a' + (i % 26));
        std::memset(m.data() + page, v, 64);
        const std::uint64_t flushed = rec.tick();
        m.flush(page, 64);
        if (!m.drain()) ++failures;
        if (!rec.durable_since(m.data() + page, 64, flushed)) ++uncovered;
        if (!m.persist(page, 64)) ++failures;
        if (!m.copy_persist(page + 4096, &v, 1)) ++failures;
        if (!m.fill_persist(page + 4096 + 1, v, 3)) ++failures;
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(failures.load() == 0);
  CHECK(uncovered.load() == 0);
  const std::string content = f.read_all();
  for (int t = 0; t < threads; ++t) {
    const char last = static_cast<char>('a' + ((rounds - 1) % 26));
    CHECK(content.substr(static_cast<std::size_t>(t) * 2 * 4096, 64) == std::string(64, last));
    CHECK(content.substr(static_cast<std::size_t>(t) * 2 * 4096 + 4096, 4) == std::string(4, last));
  }
}

TEST_CASE("a failed msync made by one thread's drain fails the drains it covered", "[mapping][threads]") {
  temp_file f(mdtest::test_dir(), 2 * 4096);
  auto r = direct_mapping::map(f.fd(), 0, 2 * 4096, mdtest::shared_only());
  REQUIRE(r);
  direct_mapping& m = r.value();
  struct failing : msync_clock {
    int msync(void* addr, std::size_t len, int flags) noexcept override {
      const int rc = msync_clock::msync(addr, len, flags);
      errno = ENOMEM;  // not a write-back error: nothing becomes sticky
      return rc == 0 ? -1 : rc;
    }
  } rec;
  scoped_syscall_interposer seam(rec);
  m.flush(0, 10);
  m.flush(4096, 10);
  rec.hold_next = true;
  result<void> ra = outcome::success(), rb = outcome::success();
  std::thread a([&] { ra = m.drain(); });
  rec.wait_holding();
  std::thread b([&] { rb = m.drain(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  rec.release();
  a.join();
  b.join();
  REQUIRE_FALSE(ra);
  REQUIRE_FALSE(rb);
  CHECK(ra.error() == std::errc::not_enough_memory);
  CHECK(rb.error() == std::errc::not_enough_memory);
  CHECK_FALSE(m.durability_failed());
}
