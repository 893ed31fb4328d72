// The group committer's io_uring seen through the seam (syscall_interposer::
// ring_sqe/ring_submit/ring_cqe): which operation ran on which file, the
// cover rule (a flush completes only requests enqueued before it started),
// failed CQEs, several files at once, and a stale failed fsync completion.
#if defined(MAPDIRECT_TEST_URING)
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/async.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {
bool is_fsync_data(std::uint64_t data) { return (data >> 62) == detail::commit_core::kind_fsync; }

// Records every SQE (with the inode its fd names), holds fsync completions
// until released, and lets a test edit a completion or fail a submit.
struct ring_interposer : syscall_interposer {
  struct sqe_record {
    unsigned opcode;
    int fd;
    unsigned flags;
    std::uint64_t data;
    dev_t dev;
    ino_t ino;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<sqe_record> sqes;
  std::vector<std::uint64_t> fsync_cqes;  // fsync completions that reached the hook, in order
  std::size_t released = 1u << 30;        // fsync completions with index < released proceed
  int fail_fsync_submits = 0;             // report this many fsync submits as failed (-EBUSY)
  bool last_sqe_fsync = false;
  // Called (outside mu) for the fsync completion of arrival index i before it proceeds.
  std::function<void(std::size_t i, std::uint64_t& data, int& res)> edit;

  void ring_sqe(unsigned opcode, int fd, unsigned flags, std::uint64_t data) noexcept override {
    struct stat st {};
    (void)::fstat(fd, &st);
    std::lock_guard<std::mutex> g(mu);
    sqes.push_back({opcode, fd, flags, data, st.st_dev, st.st_ino});
    last_sqe_fsync = opcode == IORING_OP_FSYNC;
    cv.notify_all();
  }
  int ring_submit(int result) noexcept override {
    std::lock_guard<std::mutex> g(mu);
    if (last_sqe_fsync && fail_fsync_submits > 0) {
      --fail_fsync_submits;
      return -EBUSY;  // the SQE went out anyway: its completion will be stale
    }
    return result;
  }
  void ring_cqe(std::uint64_t& data, int& res) noexcept override {
    if (!is_fsync_data(data)) return;
    std::unique_lock<std::mutex> lk(mu);
    const std::size_t i = fsync_cqes.size();
    fsync_cqes.push_back(data);
    cv.notify_all();
    cv.wait(lk, [&] { return i < released; });
    auto e = edit;
    lk.unlock();
    if (e) e(i, data, res);
  }

  void hold() {
    std::lock_guard<std::mutex> g(mu);
    released = 0;
  }
  void release(std::size_t n) {
    std::lock_guard<std::mutex> g(mu);
    released = n;
    cv.notify_all();
  }
  void release_all() { release(1u << 30); }
  // Declared after the committer: a failing test releases everything before
  // the committer's destructor waits for its requests.
  struct releaser {
    ring_interposer& r;
    ~releaser() { r.release_all(); }
  };
  // Deadlock guards (not timing assertions).
  bool wait_cqes(std::size_t n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(60), [&] { return fsync_cqes.size() >= n; });
  }
  std::size_t fsync_sqes() {
    std::lock_guard<std::mutex> g(mu);
    std::size_t n = 0;
    for (auto& s : sqes) n += s.opcode == IORING_OP_FSYNC;
    return n;
  }
  bool wait_fsync_sqes(std::size_t n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(60), [&] {
      std::size_t c = 0;
      for (auto& s : sqes) c += s.opcode == IORING_OP_FSYNC;
      return c >= n;
    });
  }
  // The file an SQE's user_data was submitted for.
  bool data_names(std::uint64_t data, const temp_file& f) {
    struct stat st {};
    ::fstat(f.fd(), &st);
    std::lock_guard<std::mutex> g(mu);
    for (auto& s : sqes)
      if (s.data == data) return s.dev == st.st_dev && s.ino == st.st_ino;
    return false;
  }
};

group_committer ring_committer() {
  committer_options o;
  o.inline_flush = false;  // every flush goes through the ring
  o.early_writeback = false;
  auto g = group_committer::create(o);
  REQUIRE(g);
  return std::move(g.value());
}

direct_mapping map_shared(const temp_file& f, std::size_t size) {
  auto m = direct_mapping::map(f.fd(), 0, size, mdtest::shared_only());
  REQUIRE(m);
  return std::move(m.value());
}

persist_handle async(group_committer& g, direct_mapping& m, std::size_t off) {
  std::memset(m.data() + off, 'x', 16);
  auto h = g.persist_async(m, off, 16);
  INFO(last_error_detail());
  REQUIRE(h);
  return std::move(h.value());
}

// Anti-hang guard, not a timing assertion.
bool eventually_ready(const persist_handle& h) {
  for (int i = 0; i < 30000 && !h.ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return h.ready();
}

bool ring_available() {
  auto g = group_committer::create();
  if (g && g.value().backend() == commit_backend::io_uring) return true;
  WARN("skipped: io_uring is not usable in this process: " << (g ? g.value().backend_detail() : "create failed"));
  return false;
}

void clear_registry(const temp_file& f) {
  struct stat st {};
  ::fstat(f.fd(), &st);
  detail::durability_registry::clear(st.st_dev, st.st_ino);
}
}  // namespace

TEST_CASE("ring seam: the flush is a datasync fsync of the file, and covers only requests enqueued before it",
          "[async][ring]") {
  if (!ring_available()) return;
  temp_file f(mdtest::test_dir(), 64 * 1024);
  ring_interposer ri;
  ri.hold();
  scoped_syscall_interposer guard(ri);
  auto g = ring_committer();
  auto m = map_shared(f, 64 * 1024);
  ring_interposer::releaser rel{ri};

  auto h1 = async(g, m, 0);
  REQUIRE(ri.wait_cqes(1));  // flush 1 ran in the kernel; its completion is held
  {
    std::lock_guard<std::mutex> lk(ri.mu);
    REQUIRE(ri.sqes.size() == 1);
    CHECK(ri.sqes[0].opcode == IORING_OP_FSYNC);
    CHECK((ri.sqes[0].flags & IORING_FSYNC_DATASYNC) != 0);
  }
  CHECK(ri.data_names(ri.fsync_cqes[0], f));  // on this file's inode
  // Enqueued while flush 1 is in flight: not covered by it, and no second
  // flush of the file starts meanwhile.
  auto h2 = async(g, m, 4096);
  auto h3 = async(g, m, 8192);
  CHECK(ri.fsync_sqes() == 1);
  CHECK_FALSE(h1.ready());
  CHECK_FALSE(h2.ready());
  CHECK_FALSE(h3.ready());

  ri.release(1);
  // Flush 2 reaching the hook means the reaper finished with flush 1.
  REQUIRE(ri.wait_cqes(2));
  CHECK(h1.ready());
  CHECK(h1.wait());
  CHECK_FALSE(h2.ready());  // the cover rule: flush 1 started before h2/h3 were enqueued
  CHECK_FALSE(h3.ready());
  CHECK(ri.data_names(ri.fsync_cqes[1], f));
  ri.release_all();
  CHECK(h2.wait());
  CHECK(h3.wait());
  CHECK(g.stats().flushes == 2);
}

TEST_CASE("ring seam: a failed CQE fails exactly the requests it covered; later ones report durability_lost",
          "[async][ring]") {
  if (!ring_available()) return;
  temp_file f(mdtest::test_dir(), 64 * 1024);
  ring_interposer ri;
  ri.hold();
  ri.edit = [](std::size_t i, std::uint64_t&, int& res) {
    if (i == 0) res = -EIO;
  };
  scoped_syscall_interposer guard(ri);
  auto g = ring_committer();
  auto m = map_shared(f, 64 * 1024);
  ring_interposer::releaser rel{ri};
  auto h1 = async(g, m, 0);
  auto h2 = async(g, m, 100);  // may or may not be covered: enqueued before the completion arrived?
  REQUIRE(ri.wait_cqes(1));
  auto h3 = async(g, m, 4096);  // certainly not covered: flush 1 finished in the kernel already
  ri.release_all();
  auto r1 = h1.wait();
  REQUIRE_FALSE(r1);
  CHECK(r1.error() == std::error_code(EIO, std::system_category()));
  auto r2 = h2.wait();
  REQUIRE_FALSE(r2);
  auto r3 = h3.wait();
  REQUIRE_FALSE(r3);
  CHECK(r3.error() == errc::durability_lost);
  CHECK(ri.fsync_sqes() == 1);  // nothing was flushed "successfully" for h3
  // Later requests, through this committer, another one, or persist().
  auto later = g.persist_async(m, 0, 10);
  REQUIRE_FALSE(later);
  CHECK(later.error() == errc::durability_lost);
  {
    auto other = ring_committer();
    auto again = other.persist_async(m, 0, 10);
    REQUIRE_FALSE(again);
    CHECK(again.error() == errc::durability_lost);
  }
  struct stat st {};
  ::fstat(f.fd(), &st);
  CHECK(detail::durability_registry::is_lost(st.st_dev, st.st_ino));
  // After rewriting: durable again.
  g.clear_durability_error(m);
  CHECK_FALSE(detail::durability_registry::is_lost(st.st_dev, st.st_ino));
  auto ok = g.persist_async(m, 0, 10);
  REQUIRE(ok);
  CHECK(ok.value().wait());
}

TEST_CASE("ring seam: the exact cover of a failed CQE (requests before and after it started)", "[async][ring]") {
  if (!ring_available()) return;
  temp_file f(mdtest::test_dir(), 64 * 1024);
  ring_interposer ri;
  ri.hold();
  ri.edit = [](std::size_t i, std::uint64_t&, int& res) {
    if (i == 1) res = -ENOSPC;  // flush 2 fails
  };
  scoped_syscall_interposer guard(ri);
  auto g = ring_committer();
  auto m = map_shared(f, 64 * 1024);
  ring_interposer::releaser rel{ri};
  auto h1 = async(g, m, 0);
  REQUIRE(ri.wait_cqes(1));
  auto h2 = async(g, m, 4096);  // covered by flush 2
  auto h3 = async(g, m, 8192);  // covered by flush 2
  ri.release(1);
  REQUIRE(ri.wait_cqes(2));      // flush 2 done in the kernel, completion held
  auto h4 = async(g, m, 12288);  // enqueued while flush 2 was in flight: not covered
  ri.release_all();
  CHECK(h1.wait());
  for (auto* h : {&h2, &h3}) {
    auto r = h->wait();
    REQUIRE_FALSE(r);
    CHECK(r.error() == std::error_code(ENOSPC, std::system_category()));
  }
  auto r4 = h4.wait();
  REQUIRE_FALSE(r4);
  CHECK(r4.error() == errc::durability_lost);
  CHECK(ri.fsync_sqes() == 2);
  g.clear_durability_error(m);
}

TEST_CASE("ring seam: several files at once keep their errors apart", "[async][ring]") {
  if (!ring_available()) return;
  temp_file fa(mdtest::test_dir(), 64 * 1024), fb(mdtest::test_dir(), 64 * 1024);
  ring_interposer ri;
  ri.hold();
  scoped_syscall_interposer guard(ri);
  ri.edit = [&](std::size_t, std::uint64_t& data, int& res) {
    if (ri.data_names(data, fa)) res = -EIO;
  };
  auto g = ring_committer();
  auto ma = map_shared(fa, 64 * 1024);
  auto mb = map_shared(fb, 64 * 1024);
  ring_interposer::releaser rel{ri};
  auto a1 = async(g, ma, 0);
  auto b1 = async(g, mb, 0);
  REQUIRE(ri.wait_cqes(1));  // the reaper holds the first completion; both flushes were submitted
  REQUIRE(ri.wait_fsync_sqes(2));
  auto a2 = async(g, ma, 4096);  // each behind its own file's flush
  auto b2 = async(g, mb, 4096);
  ri.release_all();
  auto ra1 = a1.wait();
  REQUIRE_FALSE(ra1);
  CHECK(ra1.error() == std::error_code(EIO, std::system_category()));
  auto ra2 = a2.wait();
  REQUIRE_FALSE(ra2);
  CHECK(ra2.error() == errc::durability_lost);
  CHECK(b1.wait());
  CHECK(b2.wait());
  auto a3 = g.persist_async(ma, 0, 10);
  REQUIRE_FALSE(a3);
  CHECK(a3.error() == errc::durability_lost);
  auto b3 = g.persist_async(mb, 0, 10);
  REQUIRE(b3);
  CHECK(b3.value().wait());
  {
    // One fsync per file, each on its own file.
    std::lock_guard<std::mutex> lk(ri.mu);
    REQUIRE(ri.sqes.size() >= 2);
  }
  CHECK(ri.data_names(ri.sqes[0].data, fa) != ri.data_names(ri.sqes[1].data, fa));
  CHECK(ri.data_names(ri.sqes[0].data, fb) != ri.data_names(ri.sqes[1].data, fb));
  g.clear_durability_error(ma);
}

TEST_CASE("ring seam: a stale fsync completion that fails fails every pending request of its file at once",
          "[async][ring]") {
  if (!ring_available()) return;
  temp_file f(mdtest::test_dir(), 64 * 1024);
  ring_interposer ri;
  ri.hold();
  ri.fail_fsync_submits = 1;  // flush 1's submit "fails", yet the SQE goes out
  ri.edit = [](std::size_t i, std::uint64_t&, int& res) {
    if (i == 0) res = -EIO;  // and its (stale) completion reports a write-back error
  };
  scoped_syscall_interposer guard(ri);
  auto g = ring_committer();
  auto m = map_shared(f, 64 * 1024);
  ring_interposer::releaser rel{ri};
  auto h1 = async(g, m, 0);
  REQUIRE(h1.ready());  // failed at once, not sticky (nothing was lost on disk)
  auto r1 = h1.wait();
  REQUIRE_FALSE(r1);
  CHECK(r1.error() == std::error_code(EBUSY, std::system_category()));
  REQUIRE(ri.wait_cqes(1));     // the stale completion is held
  auto h2 = async(g, m, 4096);  // flush 2 starts for it
  REQUIRE(ri.wait_fsync_sqes(2));
  std::error_code waiter_error;
  std::thread waiter([&] {
    auto r = g.persist(m, 8192, 10);  // a blocked waiter queued behind flush 2
    waiter_error = r ? std::error_code{} : r.error();
  });
  for (int i = 0; i < 60000 && g.stats().requests < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(g.stats().requests == 3);
  ri.release(1);  // only the stale completion proceeds; flush 2's stays held
  const bool prompt = eventually_ready(h2);
  ri.release_all();  // (so that a failure here does not hang the suite)
  waiter.join();
  CHECK(prompt);
  auto r2 = h2.wait();
  REQUIRE_FALSE(r2);
  CHECK(r2.error() == errc::durability_lost);
  CHECK(waiter_error == errc::durability_lost);
  auto later = g.persist_async(m, 0, 10);
  REQUIRE_FALSE(later);
  CHECK(later.error() == errc::durability_lost);
  {
    group_committer gone = std::move(g);  // shutdown returns
  }
  clear_registry(f);
}
TEST_CASE("ring seam: blocked writers released by a flush are covered by the next flush (merged cohorts)",
          "[async][ring]") {
  if (!ring_available()) return;
  constexpr int writers = 4;
  temp_file f(mdtest::test_dir(), 64 * 1024);
  ring_interposer ri;
  ri.hold();
  scoped_syscall_interposer guard(ri);
  auto g = ring_committer();
  auto m = map_shared(f, 64 * 1024);
  g.attach(m);
  std::atomic<int> done[writers] = {};
  std::vector<std::thread> pool;
  {
    ring_interposer::releaser rel{ri};
    auto writer = [&](int i) {
      for (std::size_t k = 0; k < 2; ++k)
        if (m.fill_persist(static_cast<std::size_t>(i) * 4096 + k * 128, 'r', 128)) ++done[i];
    };
    // Flush 1 covers writer 0's first record (its completion is held); the
    // other three queue behind it.
    pool.emplace_back(writer, 0);
    REQUIRE(ri.wait_cqes(1));
    for (int i = 1; i < writers; ++i) pool.emplace_back(writer, i);
    for (int spin = 0; spin < 60000 && g.stats().requests < writers; ++spin)  // deadlock guard
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(g.stats().requests == writers);
    // A long flush 1 gives a long merge window bound (a share of its
    // duration): a margin for writer 0 to come back, not a timing assertion.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    ri.release(2);  // flushes 1 and 2 complete; flush 3 is held
    // Flush 2 was submitted once writer 0's second record was enqueued: it
    // covers all five requests, so writer 0 finishes with flush 3 held.
    for (int spin = 0; spin < 20000 && done[0] < 2; ++spin)  // deadlock guard
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(done[0] == 2);
    // The others' first records were covered by flush 2 as well.
    for (int i = 1; i < writers; ++i) {
      for (int spin = 0; spin < 20000 && done[i] < 1; ++spin)  // deadlock guard
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      CHECK(done[i] >= 1);
    }
    CHECK(g.stats().merge_windows >= 1);
  }
  for (auto& t : pool) t.join();
  for (int i = 0; i < writers; ++i) CHECK(done[i] == 2);
  g.detach(m);
}

namespace {
// The io_uring descriptors open in this process.
std::set<int> ring_fds() {
  std::set<int> out;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      char target[64] = {};
      const std::string link = std::string("/proc/self/fd/") + e->d_name;
      if (::readlink(link.c_str(), target, sizeof target - 1) > 0 && std::string(target) == "anon_inode:[io_uring]")
        out.insert(std::atoi(e->d_name));
    }
    ::closedir(d);
  }
  return out;
}

// A field ("SqTail", ...) of a ring's /proc/self/fdinfo entry; -1 if absent.
long long ring_fdinfo(int fd, const char* field) {
  const std::string path = "/proc/self/fdinfo/" + std::to_string(fd);
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return -1;
  char line[256];
  long long v = -1;
  const std::string prefix = std::string(field) + ":";
  while (std::fgets(line, sizeof line, f))
    if (std::string(line).rfind(prefix, 0) == 0) v = std::atoll(line + prefix.size());
  std::fclose(f);
  return v;
}
}  // namespace

// Found by the issue-16 benchmark (a hang with 8 writers, persist_async +
// wait, inline_flush = false): io_uring_queue_mmap leaves the ring's feature
// bits clear, so liburing took the pre-5.11 path in the reap thread's timed
// wait (a merge window's deadline): it queued a timeout SQE of its own and
// submitted the whole queue from that thread, outside the lock the other
// submitters hold. A flush prepared meanwhile went out as its slot's stale
// contents and never completed. Every SQE the kernel consumed must be one the
// committer queued (through the seam), plus the set-up round trip.
TEST_CASE("ring seam: the reap thread's timed waits submit nothing (every SQE is the committer's own)",
          "[async][ring]") {
  if (!ring_available()) return;
  temp_file f(mdtest::test_dir(), 256 * 1024);
  ring_interposer ri;
  scoped_syscall_interposer guard(ri);
  const std::set<int> before = ring_fds();
  auto g = ring_committer();
  int ring_fd = -1;
  for (int fd : ring_fds())
    if (!before.count(fd)) ring_fd = fd;
  REQUIRE(ring_fd >= 0);
  auto m = map_shared(f, 256 * 1024);
  g.attach(m);
  // Blocking writers of unequal length: flushes that release waiters open
  // merge windows, and once the short writers are done some windows run to
  // their deadline, which the reap thread waits for with a timeout.
  constexpr int writers = 4;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < writers; ++i)
    pool.emplace_back([&, i] {
      const int records = i == 0 ? 120 : 30;
      for (int k = 0; k < records; ++k)
        if (!m.fill_persist(static_cast<std::size_t>(i) * 32768 + static_cast<std::size_t>(k) * 128, 'w', 128))
          ++failures;
    });
  for (auto& t : pool) t.join();
  CHECK(failures == 0);
  const auto st = g.stats();
  INFO("merge windows " << st.merge_windows << ", expired " << st.merge_expired << ", flushes " << st.flushes);
  REQUIRE(st.merge_windows > 0);
  std::size_t queued = 0;
  {
    std::lock_guard<std::mutex> lk(ri.mu);
    queued = ri.sqes.size();
  }
  // The kernel's count of consumed SQEs: ours, plus the set-up round trip's NOP.
  const long long consumed = ring_fdinfo(ring_fd, "SqHead");
  g.detach(m);
  if (consumed < 0) {
    WARN("skipped: this kernel's io_uring fdinfo has no SqHead line");
    return;
  }
  CHECK(consumed == static_cast<long long>(queued) + 1);
}

#endif  // MAPDIRECT_TEST_URING
