// group_committer and persist_async: group commit on real files, both
// backends, errors injected through the seam, destruction in flight.
#if defined(MAPDIRECT_TEST_URING)
#include "catch.hpp"
#include "process_support.hpp"
#include "test_support.hpp"

#include <mapdirect/async.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/wait.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {
constexpr std::size_t record_size = 128;

// fdatasync through the seam, scripted: each call (in order) may be held at a
// gate until released and may fail with a given errno; io_uring_setup may be
// refused with an errno.
struct gated_interposer : syscall_interposer {
  std::mutex mu;
  std::condition_variable cv;
  int entered = 0;             // fdatasync calls started
  int allowed = 1 << 30;       // calls with index < allowed may return
  std::vector<int> fail_with;  // errno for call i (0 or absent: the real call)
  int setup_errno = 0;
  int setup_calls = 0;
  std::vector<std::thread::id> callers;  // thread of each fdatasync
  std::string sysctl_file;               // stands in for /proc/sys/kernel/io_uring_disabled

  int open(const char* path, int flags, mode_t mode) noexcept override {
    if (!sysctl_file.empty() && std::strcmp(path, "/proc/sys/kernel/io_uring_disabled") == 0)
      return syscall_interposer::open(sysctl_file.c_str(), flags, mode);
    return syscall_interposer::open(path, flags, mode);
  }

  int fdatasync(int fd) noexcept override {
    std::unique_lock<std::mutex> lk(mu);
    const int index = entered++;
    callers.push_back(std::this_thread::get_id());
    cv.notify_all();
    cv.wait(lk, [&] { return index < allowed; });
    const int e = static_cast<std::size_t>(index) < fail_with.size() ? fail_with[static_cast<std::size_t>(index)] : 0;
    lk.unlock();
    if (e) {
      errno = e;
      return -1;
    }
    return syscall_interposer::fdatasync(fd);
  }
  long io_uring_setup(unsigned entries, void* params) noexcept override {
    {
      std::lock_guard<std::mutex> g(mu);
      ++setup_calls;
    }
    if (setup_errno) {
      errno = setup_errno;
      return -1;
    }
    return syscall_interposer::io_uring_setup(entries, params);
  }
  // Holds every fdatasync from index `n` on.
  void hold_from(int n) {
    std::lock_guard<std::mutex> g(mu);
    allowed = n;
  }
  void release_all() {
    std::lock_guard<std::mutex> g(mu);
    allowed = 1 << 30;
    cv.notify_all();
  }
  // Waits (deadlock guard only, not a timing assertion) until n calls started.
  bool wait_entered(int n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(60), [&] { return entered >= n; });
  }
  int calls() {
    std::lock_guard<std::mutex> g(mu);
    return entered;
  }
};

// A page-granular (shared) mapping on any host, DAX ones included: group
// commit is about the fdatasync path.
direct_mapping map_file(const temp_file& f, std::size_t size) {
  auto m = direct_mapping::map(f.fd(), 0, size, mdtest::shared_only());
  REQUIRE(m);
  return std::move(m.value());
}

group_committer make_committer(bool force_thread, bool inline_flush = true, unsigned inline_rounds = 1) {
  committer_options o;
  o.early_writeback = true;  // exercised (and counted) by the tests
  o.force_thread = force_thread;
  o.inline_flush = inline_flush;
  o.inline_rounds = inline_rounds;
  auto g = group_committer::create(o);
  INFO(last_error_detail());
  REQUIRE(g);
  return std::move(g.value());
}

// Whether io_uring works for this process (else the io_uring cases are skipped).
bool io_uring_usable() {
  auto g = group_committer::create();
  return g && g.value().backend() == commit_backend::io_uring;
}

void fill_record(char* out, unsigned writer, unsigned seq) {
  std::memset(out, 0, record_size);
  std::snprintf(out, record_size, "writer %u record %u", writer, seq);
  for (std::size_t i = 32; i < record_size; ++i) out[i] = static_cast<char>('a' + (writer * 7 + seq + i) % 26);
}
}  // namespace

TEST_CASE("async: the backend is io_uring when the kernel allows it, and says why otherwise", "[async]") {
  auto r = probe(mdtest::test_dir().c_str());
  REQUIRE(r);
  auto g = group_committer::create();
  REQUIRE(g);
  INFO(g.value().backend_detail());
  CHECK(g.value().backend() == (r.value().io_uring ? commit_backend::io_uring : commit_backend::thread));
  CHECK(r.value().group_commit_backend == to_string(g.value().backend()));
  CHECK(std::string(g.value().backend_detail()).rfind(to_string(g.value().backend()), 0) == 0);
  auto forced = make_committer(true);
  CHECK(forced.backend() == commit_backend::thread);
  CHECK(std::string(forced.backend_detail()).find("force_thread") != std::string::npos);
}

TEST_CASE("async: io_uring refused through the seam falls back to the fdatasync thread", "[async]") {
  for (int e : {ENOSYS, EPERM}) {
    temp_file f(mdtest::test_dir(), 64 * 1024);
    gated_interposer gi;
    gi.setup_errno = e;
    scoped_syscall_interposer guard(gi);
    auto g = make_committer(false);
    CHECK(gi.setup_calls == 1);
    CHECK(g.backend() == commit_backend::thread);
    INFO(g.backend_detail());
    CHECK(std::string(g.backend_detail()).find(detail::errno_name(e)) != std::string::npos);
    if (e == EPERM) {
      // With the sysctl set, the detail names it.
      temp_file sysctl(mdtest::test_dir());
      REQUIRE(::pwrite(sysctl.fd(), "2\n", 2, 0) == 2);
      gi.sysctl_file = sysctl.path();
      auto g2 = make_committer(false);
      CHECK(g2.backend() == commit_backend::thread);
      INFO(g2.backend_detail());
      CHECK(std::string(g2.backend_detail()).find("kernel.io_uring_disabled") != std::string::npos);
      gi.sysctl_file.clear();
    }
    auto pr = probe(mdtest::test_dir().c_str());
    REQUIRE(pr);
    CHECK(pr.value().group_commit_backend == "thread");
    CHECK_FALSE(pr.value().io_uring);
    auto m = map_file(f, 64 * 1024);
    const char text[] = "fallback backend";
    std::memcpy(m.data() + 5000, text, sizeof text);
    auto h = g.persist_async(m, 5000, sizeof text);
    REQUIRE(h);
    REQUIRE(h.value().wait());
    CHECK(h.value().ready());
    CHECK(gi.calls() >= 1);  // the flush was an fdatasync through the seam
    CHECK(f.read_all().substr(5000, sizeof text - 1) == std::string(text));
  }
}

TEST_CASE("async: many writers append and persist, every record reads back", "[async]") {
  const bool uring = io_uring_usable();
  if (!uring) WARN("io_uring unusable here: only the thread backend runs");
  struct variant {
    bool force_thread;
    bool inline_flush;
    int api;  // 0: attached copy_persist, 1: persist_async + wait, 2: callbacks
  };
  std::vector<variant> variants;
  for (bool force : {false, true})
    for (bool inl : {true, false})
      for (int api : {0, 1, 2})
        if (force || uring) variants.push_back({force, inl, api});
  for (const variant& v : variants) {
    CAPTURE(v.force_thread, v.inline_flush, v.api);
    constexpr unsigned writers = 8, per_writer = 60;
    const std::size_t size = writers * per_writer * record_size;
    temp_file f(mdtest::test_dir(), size);
    {
      auto g = make_committer(v.force_thread, v.inline_flush);
      auto m = map_file(f, size);
      g.attach(m);
      std::atomic<unsigned> failures{0}, callbacks{0};
      std::atomic<unsigned> next{0};
      std::vector<std::thread> threads;
      for (unsigned w = 0; w < writers; ++w) {
        threads.emplace_back([&, w] {
          for (unsigned s = 0; s < per_writer; ++s) {
            // Appends: each record takes the next slot of the file.
            const std::size_t off = next.fetch_add(1) * record_size;
            char rec[record_size];
            fill_record(rec, w, s);
            if (v.api == 0) {
              if (!m.copy_persist(off, rec, record_size)) ++failures;
              continue;
            }
            std::memcpy(m.data() + off, rec, record_size);
            if (v.api == 1) {
              auto h = g.persist_async(m, off, record_size);
              if (!h || !h.value().wait()) ++failures;
            } else {
              std::atomic<bool> fired{false};
              auto h = g.persist_async(m, off, record_size, [&](result<void> r) {
                if (!r) ++failures;
                ++callbacks;
                fired = true;
              });
              if (!h || !h.value().wait()) ++failures;
              if (!fired.load()) ++failures;  // wait() returns only after the callback
            }
          }
        });
      }
      for (auto& t : threads) t.join();
      CHECK(failures == 0);
      if (v.api == 2) CHECK(callbacks == writers * per_writer);
      const auto st = g.stats();
      CHECK(st.requests == writers * per_writer);
      CHECK(st.flushes >= 1);
      CHECK(st.flushes <= st.requests);
      g.detach(m);
      REQUIRE(m.close());
    }
    // Read back through the file, not the mapping.
    const std::string all = f.read_all();
    REQUIRE(all.size() == size);
    std::vector<unsigned> seen(writers, 0);
    for (std::size_t slot = 0; slot < writers * per_writer; ++slot) {
      const char* rec = all.data() + slot * record_size;
      unsigned w = 0, s = 0;
      REQUIRE(std::sscanf(rec, "writer %u record %u", &w, &s) == 2);
      REQUIRE(w < writers);
      char expect[record_size];
      fill_record(expect, w, s);
      CHECK(std::memcmp(rec, expect, record_size) == 0);
      CHECK(s == seen[w]++);  // each writer's records appear in order
    }
    for (unsigned w = 0; w < writers; ++w) CHECK(seen[w] == per_writer);
  }
}

TEST_CASE("async: requests arriving during a flush share the next one (fallback thread)", "[async]") {
  temp_file f(mdtest::test_dir(), 64 * 1024);
  gated_interposer gi;
  scoped_syscall_interposer guard(gi);
  auto g = make_committer(true);
  auto m = map_file(f, 64 * 1024);
  gi.hold_from(0);
  auto first = g.persist_async(m, 0, 100);
  REQUIRE(first);
  REQUIRE(gi.wait_entered(1));  // flush 1 is running and covers only `first`
  std::vector<persist_handle> later;
  for (int i = 1; i <= 7; ++i) {
    std::memset(m.data() + i * 4096, i, 100);
    auto h = g.persist_async(m, static_cast<std::size_t>(i) * 4096, 100);
    REQUIRE(h);
    CHECK_FALSE(h.value().ready());
    later.push_back(std::move(h.value()));
  }
  CHECK_FALSE(first.value().ready());
  gi.release_all();
  REQUIRE(first.value().wait());
  for (auto& h : later) REQUIRE(h.wait());
  const auto st = g.stats();
  CHECK(st.requests == 8);
  CHECK(st.flushes == 2);  // one for `first`, one shared by the seven
  CHECK(gi.calls() == 2);
  CHECK(st.writebacks == 7);  // each late request started its write-back early
}

TEST_CASE("async: io_uring group commit behind a flush run by a blocked writer", "[async]") {
  if (!io_uring_usable()) {
    WARN("skipped: io_uring is not usable in this process (see probe)");
    return;
  }
  temp_file f(mdtest::test_dir(), 64 * 1024);
  gated_interposer gi;
  scoped_syscall_interposer guard(gi);
  auto g = make_committer(false);
  REQUIRE(g.backend() == commit_backend::io_uring);
  auto m = map_file(f, 64 * 1024);
  g.attach(m);
  gi.hold_from(0);
  std::atomic<bool> leader_ok{false};
  std::thread leader([&] { leader_ok = static_cast<bool>(m.fill_persist(0, 'L', 100)); });
  REQUIRE(gi.wait_entered(1));  // the writer runs fdatasync itself (inline flush)
  std::vector<persist_handle> later;
  std::atomic<int> callbacks{0};
  for (int i = 1; i <= 7; ++i) {
    std::memset(m.data() + i * 4096, 'A' + i, 100);
    auto h = g.persist_async(m, static_cast<std::size_t>(i) * 4096, 100, [&](result<void> r) {
      if (r) ++callbacks;
    });
    REQUIRE(h);
    later.push_back(std::move(h.value()));
  }
  CHECK(g.stats().writebacks == 7);  // IORING_OP_SYNC_FILE_RANGE submitted for each
  gi.release_all();
  leader.join();
  CHECK(leader_ok);
  for (auto& h : later) REQUIRE(h.wait());
  const auto st = g.stats();
  CHECK(st.flushes == 2);  // the writer's, then one IORING_OP_FSYNC for the seven
  CHECK(gi.calls() == 1);  // the second never went through fdatasync(2)
  // Callbacks run on the ring's thread after `done`; all seven complete before
  // the committer's destructor returns.
  g.detach(m);
  { group_committer gone = std::move(g); }
  CHECK(callbacks == 7);
}

TEST_CASE("async: a failed flush reaches every covered waiter; later requests report durability_lost", "[async]") {
  for (int v = 0; v < 3; ++v) {
    // v 0: fallback thread; 1: io_uring; 2: io_uring, the first writer keeps
    // running flushes (inline_rounds 2).
    const bool force = v == 0;
    const unsigned rounds = v == 2 ? 2 : 1;
    if (!force && !io_uring_usable()) {
      WARN("skipped io_uring variant: io_uring is not usable in this process");
      continue;
    }
    CAPTURE(v);
    temp_file f(mdtest::test_dir(), 64 * 1024);
    gated_interposer gi;
    gi.fail_with = {0, EIO};  // flush 1 succeeds, flush 2 fails
    scoped_syscall_interposer guard(gi);
    auto g = make_committer(force, true, rounds);
    auto m = map_file(f, 64 * 1024);
    g.attach(m);
    gi.hold_from(0);
    // Flush 1 runs on a blocked writer; seven writers queue behind it and one
    // of them runs flush 2 for all seven, which fails.
    std::atomic<bool> first_ok{false};
    std::thread first([&] { first_ok = static_cast<bool>(m.fill_persist(0, 1, 10)); });
    const std::thread::id first_id = first.get_id();
    REQUIRE(gi.wait_entered(1));
    std::atomic<int> eio{0}, other{0};
    std::vector<std::thread> writers;
    for (int i = 0; i < 7; ++i)
      writers.emplace_back([&, i] {
        auto r = m.fill_persist(static_cast<std::size_t>(i + 1) * 4096, 'w', 10);
        if (!r && r.error() == std::error_code(EIO, std::system_category())) ++eio;
        else ++other;
      });
    // Deadlock guard, not a timing assertion: all seven must be queued first.
    for (int spin = 0; spin < 60000 && g.stats().requests < 8; ++spin)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(g.stats().requests == 8);
    gi.release_all();
    first.join();
    for (auto& t : writers) t.join();
    CHECK(first_ok);
    CHECK(eio == 7);
    CHECK(other == 0);
    CHECK(gi.calls() == 2);
    CHECK(g.stats().flushes == 2);
    {
      std::lock_guard<std::mutex> lk(gi.mu);
      REQUIRE(gi.callers.size() == 2);
      CHECK(gi.callers[0] == first_id);
      // inline_rounds 2: the first writer ran the seven's flush too; else one of them did.
      CHECK((gi.callers[1] == first_id) == (rounds == 2));
    }
    // The mapping's own flag is set too (the error came back through persist).
    CHECK(m.durability_failed());
    // fsyncgate: whatever the kernel says now, nothing may claim durability.
    auto later = g.persist_async(m, 0, 10);
    REQUIRE_FALSE(later);
    CHECK(later.error() == errc::durability_lost);
    auto sync_later = m.persist(0, 10);
    REQUIRE_FALSE(sync_later);
    CHECK(sync_later.error() == errc::durability_lost);
    CHECK(std::string(last_error_detail()).find("clear_durability_error") != std::string::npos);
    CHECK(gi.calls() == 2);  // refused without flushing
    // After the user rewrote the data: durable again.
    std::memset(m.data(), 3, 4096 * 8);
    g.clear_durability_error(m);
    CHECK_FALSE(m.durability_failed());
    REQUIRE(m.persist(0, 4096 * 8));
    auto again = g.persist_async(m, 0, 10);
    REQUIRE(again);
    REQUIRE(again.value().wait());
    g.detach(m);
  }
}

TEST_CASE("async: a failed flush fails its waiter with the errno and the requests queued behind it with "
          "durability_lost",
          "[async]") {
  for (bool force : {true, false}) {
    if (!force && !io_uring_usable()) {
      WARN("skipped io_uring variant: io_uring is not usable in this process");
      continue;
    }
    CAPTURE(force);
    temp_file f(mdtest::test_dir(), 64 * 1024);
    gated_interposer gi;
    gi.fail_with = {ENOSPC};
    scoped_syscall_interposer guard(gi);
    auto g = make_committer(force);
    auto m = map_file(f, 64 * 1024);
    gi.hold_from(0);
    std::atomic<int> cb_lost{0};
    // Thread backend: the committer thread runs the flush of an async request.
    // io_uring: a blocked writer runs it (the ring's own fsync cannot be
    // failed through the seam).
    persist_handle first;
    std::thread leader;
    std::atomic<int> leader_error{0};
    if (force) {
      auto h = g.persist_async(m, 0, 10);
      REQUIRE(h);
      first = std::move(h.value());
    } else {
      leader = std::thread([&] {
        auto r = g.persist(m, 0, 10);
        leader_error = r ? 0 : r.error().value();
      });
    }
    REQUIRE(gi.wait_entered(1));
    std::vector<persist_handle> queued;
    for (int i = 1; i <= 4; ++i) {
      auto h = g.persist_async(m, static_cast<std::size_t>(i) * 4096, 10, [&](result<void> r) {
        if (!r && r.error() == errc::durability_lost) ++cb_lost;
      });
      REQUIRE(h);
      queued.push_back(std::move(h.value()));
    }
    gi.release_all();
    if (force) {
      auto r = first.wait();
      REQUIRE_FALSE(r);
      CHECK(r.error() == std::error_code(ENOSPC, std::system_category()));
      CHECK(std::string(last_error_detail()).find("ENOSPC") != std::string::npos);
    } else {
      leader.join();
      CHECK(leader_error == ENOSPC);
    }
    for (auto& h : queued) {
      auto q = h.wait();
      REQUIRE_FALSE(q);
      CHECK(q.error() == errc::durability_lost);
    }
    CHECK(gi.calls() == 1);  // no flush may "succeed" for the queued ones
    CHECK(g.stats().flushes == 1);
    g.clear_durability_error(m);  // the process-wide record outlives this file's inode number
    {
      group_committer gone = std::move(g);  // callbacks have run once this returns
    }
    CHECK(cb_lost == 4);
  }
}

TEST_CASE("async: sync mappings complete at once after the CPU flush", "[async]") {
  temp_file f(mdtest::test_dir(), 8192);
  mdtest::recording_interposer rec;
  rec.emulate_map_sync();
  scoped_syscall_interposer guard(rec);
  auto g = make_committer(true);
  map_options o;
  o.domain = persistence_domain::memory_controller;
  auto m = direct_mapping::map(f.fd(), 0, 8192, o);
  REQUIRE(m);
  REQUIRE(m.value().mode() == map_mode::sync);
  bool called = false;
  std::memset(m.value().data(), 9, 300);
  auto h = g.persist_async(m.value(), 0, 300, [&](result<void> r) { called = static_cast<bool>(r); });
  REQUIRE(h);
  CHECK(called);  // before persist_async returned
  CHECK(h.value().ready());
  CHECK(h.value().wait());
  CHECK(g.stats().requests == 0);
  CHECK(rec.msyncs.empty());
}

TEST_CASE("async: bad input is refused with a clear error and changes nothing", "[async]") {
  temp_file f(mdtest::test_dir(), 8192);
  auto g = make_committer(true);
  auto m = map_file(f, 8192);
  std::memset(m.data(), 0, 8192);
  auto h = g.persist_async(m, 8000, 500);
  REQUIRE_FALSE(h);
  CHECK(h.error() == errc::out_of_range);
  CHECK(std::string(last_error_detail()).find("outside mapping") != std::string::npos);
  direct_mapping empty;
  auto e = g.persist_async(empty, 0, 1);
  REQUIRE_FALSE(e);
  CHECK(e.error() == errc::not_mapped);
  group_committer none;
  auto n = none.persist_async(m, 0, 1);
  REQUIRE_FALSE(n);
  CHECK(n.error() == errc::empty_object);
  persist_handle blank;
  CHECK_FALSE(blank);
  CHECK_FALSE(blank.ready());
  auto w = blank.wait();
  REQUIRE_FALSE(w);
  CHECK(w.error() == errc::empty_object);
  CHECK(g.stats().requests == 0);
  CHECK(f.read_all() == std::string(8192, '\0'));
}

// Attack finding: a read-only mapping's persist() fails with errc::read_only,
// so the committer's persist (what an attached mapping's persist() does) and
// persist_async must too, never report a durability that was not asked for.
TEST_CASE("async: a read-only mapping is refused with errc::read_only like its own persist()", "[async]") {
  temp_file f(mdtest::test_dir(), 8192);
  auto g = make_committer(true);
  const int ro = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(ro >= 0);
  map_options o;
  o.access = map_access::read_only;
  auto m = direct_mapping::map(ro, 0, 8192, o);
  ::close(ro);
  REQUIRE(m);
  auto own = m.value().persist(0, 100);
  REQUIRE_FALSE(own);
  CHECK(own.error() == errc::read_only);
  auto h = g.persist_async(m.value(), 0, 100);
  REQUIRE_FALSE(h);
  CHECK(h.error() == errc::read_only);
  CHECK(std::string(last_error_detail()).find("read-only") != std::string::npos);
  auto p = g.persist(m.value(), 0, 100);
  REQUIRE_FALSE(p);
  CHECK(p.error() == errc::read_only);
  CHECK(g.stats().requests == 0);
}

// Review finding (issue 11): the mapping already knows its file's st_dev and
// st_ino, so a request must not fstat the descriptor again.
TEST_CASE("async: requests on a mapping do not fstat its descriptor per request", "[async]") {
  struct counting_interposer : syscall_interposer {
    std::atomic<int> target{-1};
    std::atomic<int> fstats{0};
    int fstat(int fd, struct stat* st) noexcept override {
      if (fd == target.load()) fstats.fetch_add(1);
      return syscall_interposer::fstat(fd, st);
    }
  };
  temp_file f(mdtest::test_dir(), 8192);
  for (const bool force_thread : {true, false}) {
    auto g = make_committer(force_thread);
    auto m = map_file(f, 8192);
    counting_interposer ci;
    scoped_syscall_interposer scope(ci);
    std::memset(m.data(), 'x', 8192);
    REQUIRE(g.persist(m, 0, 100));  // the file's first request opens its lane (once per file)
    ci.target = m.native_handle();
    for (int i = 0; i < 4; ++i) {
      auto h = g.persist_async(m, 0, 100);
      REQUIRE(h);
      REQUIRE(h.value().wait());
      REQUIRE(g.persist(m, 4096, 100));
    }
    g.attach(m);
    REQUIRE(m.persist(0, 8192));
    g.detach(m);
    CHECK(ci.fstats.load() == 0);
    CHECK(g.stats().requests == 10);
  }
}

TEST_CASE("async: an event loop learns of completions through notify_fd", "[async]") {
  for (bool force : {true, false}) {
    if (!force && !io_uring_usable()) continue;
    CAPTURE(force);
    temp_file f(mdtest::test_dir(), 16384);
    auto g = make_committer(force);
    const int efd = g.notify_fd();
    REQUIRE(efd >= 0);
    auto m = map_file(f, 16384);
    std::memset(m.data() + 4096, 'e', 64);
    auto h = g.persist_async(m, 4096, 64);
    REQUIRE(h);
    // No thread of ours waits: poll the descriptor like an event loop would.
    while (!h.value().ready()) {
      pollfd p{efd, POLLIN, 0};
      REQUIRE(::poll(&p, 1, 60000) == 1);
      std::uint64_t count = 0;
      REQUIRE(::read(efd, &count, sizeof count) == static_cast<ssize_t>(sizeof count));
      CHECK(count >= 1);
    }
    CHECK(h.value().wait());
  }
}

TEST_CASE("async: destroying the committer with requests in flight completes them all cleanly", "[async]") {
  for (bool force : {true, false}) {
    if (!force && !io_uring_usable()) continue;
    CAPTURE(force);
    temp_file f(mdtest::test_dir(), 256 * 1024);
    gated_interposer gi;
    scoped_syscall_interposer guard(gi);
    auto shared_count = std::make_shared<std::atomic<int>>(0);
    std::vector<persist_handle> kept;
    {
      auto g = make_committer(force, false);
      auto m = map_file(f, 256 * 1024);
      gi.hold_from(0);
      std::thread releaser;
      for (int i = 0; i < 40; ++i) {
        std::memset(m.data() + i * 4096, i, 4096);
        auto payload = std::make_unique<std::vector<int>>(100, i);  // ASan sees any use after free
        auto h =
            g.persist_async(m, static_cast<std::size_t>(i) * 4096, 4096,
                            [shared_count, p = std::shared_ptr<std::vector<int>>(std::move(payload))](result<void> r) {
                              if (r && (*p)[99] >= 0) ++*shared_count;
                            });
        REQUIRE(h);
        if (i % 2 == 0) kept.push_back(std::move(h.value()));  // the others are dropped at once
      }
      if (force) {
        REQUIRE(gi.wait_entered(1));
        // Let the held flush finish while the destructor is already waiting.
        releaser = std::thread([&] {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          gi.release_all();
        });
      } else {
        gi.release_all();
      }
      m.close().value();  // the mapping may go first: the committer flushes its own descriptor
      { group_committer gone = std::move(g); }
      if (releaser.joinable()) releaser.join();
    }
    CHECK(*shared_count == 40);
    for (auto& h : kept) {
      CHECK(h.ready());
      CHECK(h.wait());
    }
  }
}

// Refuses mapdirect's reopen of a file through /proc/self/fd (as for a 0600
// file of another user received over SCM_RIGHTS) and fails chosen fdatasyncs.
struct refusing_interposer : gated_interposer {
  std::atomic<bool> refuse{true};
  std::atomic<int> refused{0};
  int open(const char* path, int flags, mode_t mode) noexcept override {
    if (refuse && mdtest::is_reopen_path(path)) {
      ++refused;
      errno = EACCES;
      return -1;
    }
    return gated_interposer::open(path, flags, mode);
  }
};

TEST_CASE("async: with the reopen refused the committer flushes a dup, and its errors still reach every "
          "mapdirect consumer of the file",
          "[async]") {
  temp_file f(mdtest::test_dir(), 64 * 1024);
  struct stat st {};
  REQUIRE(::fstat(f.fd(), &st) == 0);
  refusing_interposer ri;
  ri.fail_with = {0, EIO};  // first flush fine, second one loses write-back
  scoped_syscall_interposer guard(ri);
  auto g = make_committer(true);
  auto m = map_file(f, 64 * 1024);
  g.attach(m);
  std::memset(m.data(), 'a', 64);
  INFO(last_error_detail());
  REQUIRE(m.persist(0, 64));  // through the dup: still works
  CHECK(ri.refused >= 1);
  std::memset(m.data(), 'b', 64);
  auto failed = m.persist(0, 64);
  REQUIRE_FALSE(failed);
  CHECK(failed.error() == std::error_code(EIO, std::system_category()));
  CHECK(detail::durability_registry::is_lost(st.st_dev, st.st_ino));
  // Another committer (its own description: reopen allowed now) and another
  // mapping of the file: nothing may claim durability, and nothing is flushed.
  ri.refuse = false;
  const int calls = ri.calls();
  auto other = make_committer(false);
  auto m2 = map_file(f, 64 * 1024);
  auto h = other.persist_async(m2, 0, 64);
  REQUIRE_FALSE(h);
  CHECK(h.error() == errc::durability_lost);
  auto p = other.persist(m2, 0, 64);
  REQUIRE_FALSE(p);
  CHECK(p.error() == errc::durability_lost);
  CHECK(ri.calls() == calls);
  // Cleared through the other committer (the user rewrote the data): the
  // file is durable again through both committers.
  other.clear_durability_error(m2);
  CHECK_FALSE(detail::durability_registry::is_lost(st.st_dev, st.st_ino));
  auto h2 = other.persist_async(m2, 0, 64);
  REQUIRE(h2);
  CHECK(h2.value().wait());
  auto h3 = g.persist_async(m2, 0, 64);
  INFO(last_error_detail());
  REQUIRE(h3);
  CHECK(h3.value().wait());
  g.clear_durability_error(m);  // m's own flag (its persist saw the EIO)
  REQUIRE(m.persist(0, 64));
  g.detach(m);
}

TEST_CASE("async: group commit on a mapping with a leased seal neither stalls nor breaks the lease", "[async]") {
  for (bool force : {true, false}) {
    if (!force && !io_uring_usable()) continue;
    CAPTURE(force);
    temp_file f(mdtest::test_dir(), 64 * 1024);
    map_options o = mdtest::shared_only();
    seal_options so;
    so.lease = true;
    so.allow_unverifiable = true;
    o.seal = so;
    {
      auto probe_map = direct_mapping::map(f.fd(), 0, 64 * 1024, o);
      if (!probe_map) {
        WARN("skipped: a leased seal is unavailable here: " << last_error_detail());
        return;
      }
    }
    // In a child under a generous alarm: a self-inflicted lease break blocks
    // for the lease-break time (45 s by default) and the alarm ends it.
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::alarm(20);
      auto m = direct_mapping::map(f.fd(), 0, 64 * 1024, o);
      if (!m || !m.value().seal().has_lease()) ::_exit(10);
      committer_options co;
      co.force_thread = force;
      auto g = group_committer::create(co);
      if (!g) ::_exit(11);
      g.value().attach(m.value());
      std::memset(m.value().data(), 'L', 128);
      if (!m.value().persist(0, 128)) ::_exit(12);
      auto h = g.value().persist_async(m.value(), 4096, 128);
      if (!h || !h.value().wait()) ::_exit(13);
      if (m.value().seal().lease_broken()) ::_exit(14);
      if (!m.value().seal().verify()) ::_exit(15);
      g.value().detach(m.value());
      ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    INFO("child status " << status << (WIFSIGNALED(status) ? " (killed by a signal: hung)" : ""));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}
TEST_CASE("async: a write-back error reported only to the mapping's description before the committer's first "
          "flush is not lost",
          "[async][durability]") {
  // The committer flushes through a description it opens at the file's first
  // request; an error that happened between map() and then is reported only
  // to the mapping's own description (found by a hostile review: the
  // committer acknowledged data another process's fdatasync had seen fail).
  struct mapping_fd_reports_eio : syscall_interposer {
    int target = -1;
    int sync_file_range(int fd, off_t off, off_t n, unsigned flags) noexcept override {
      if (fd == target && (flags & SYNC_FILE_RANGE_WAIT_AFTER)) {
        errno = EIO;
        return -1;
      }
      return syscall_interposer::sync_file_range(fd, off, n, flags);
    }
    int fdatasync(int fd) noexcept override {
      if (fd == target) {
        errno = EIO;
        return -1;
      }
      return syscall_interposer::fdatasync(fd);
    }
    int msync(void* a, std::size_t len, int flags) noexcept override {
      // the mapping's own description would report it on msync too
      if (target >= 0 && a == addr) {
        errno = EIO;
        return -1;
      }
      return syscall_interposer::msync(a, len, flags);
    }
    void* addr = nullptr;
  };
  for (const bool force_thread : {false, true}) {
    temp_file f(mdtest::test_dir(), 4 * 4096);
    auto g = make_committer(force_thread);
    auto m = map_file(f, 4 * 4096);
    mapping_fd_reports_eio rule;
    rule.target = m.native_handle();
    rule.addr = m.data();
    {
      scoped_syscall_interposer seam(rule);
      g.attach(m);
      std::memset(m.data(), 'x', 100);
      auto r = m.persist(0, 100);
      INFO("force_thread " << force_thread << ": " << last_error_detail());
      REQUIRE_FALSE(r);
      CHECK((r.error() == std::errc::io_error || r.error() == errc::durability_lost));
      CHECK(m.durability_failed());
      auto h = g.persist_async(m, 0, 100);
      CHECK((!h || !h.value().wait()));
    }
    m.clear_durability_error();
  }
}
// Merging cohorts (issue 16): while a flush runs, the blocked writers it will
// release cannot enqueue; the next flush waits for them (bounded by a share
// of the last flush's duration) instead of covering only the requests that
// arrived meanwhile.
TEST_CASE("async: blocked writers released by a flush are covered by the next flush (merged cohorts)", "[async]") {
  for (int v = 0; v < 2; ++v) {
    // v 0: fallback thread; 1: io_uring (every flush here runs inline on a blocked writer).
    const bool force = v == 0;
    if (!force && !io_uring_usable()) {
      WARN("skipped io_uring variant: io_uring is not usable in this process");
      continue;
    }
    CAPTURE(v);
    constexpr int writers = 4;
    temp_file f(mdtest::test_dir(), 64 * 1024);
    gated_interposer gi;
    scoped_syscall_interposer guard(gi);
    auto g = make_committer(force, true);
    auto m = map_file(f, 64 * 1024);
    g.attach(m);
    gi.hold_from(0);
    std::atomic<int> done[writers] = {};
    auto writer = [&](int i) {
      for (std::size_t k = 0; k < 2; ++k)
        if (m.fill_persist(static_cast<std::size_t>(i) * 4096 + k * record_size, 'a', record_size)) ++done[i];
    };
    // Flush 1 covers writer 0's first record; the other three queue behind it.
    std::vector<std::thread> pool;
    pool.emplace_back(writer, 0);
    REQUIRE(gi.wait_entered(1));
    for (int i = 1; i < writers; ++i) pool.emplace_back(writer, i);
    for (int spin = 0; spin < 60000 && g.stats().requests < writers; ++spin)  // deadlock guard
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(g.stats().requests == writers);
    // Holding flush 1 this long makes its measured duration, hence the merge
    // window's bound (a quarter of it here), far longer than writer 0 needs
    // to come back: a margin, not a timing assertion.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    {
      std::lock_guard<std::mutex> lk(gi.mu);
      gi.allowed = 2;  // flushes 1 and 2 return; flush 3 is held
      gi.cv.notify_all();
    }
    // Flush 2 waited for writer 0's second record: it covers all five
    // requests, so writer 0 finishes while flush 3 is still held. Without the
    // merge, flush 2 covers the three queued ones only and writer 0's second
    // record waits for flush 3.
    for (int spin = 0; spin < 20000 && done[0] < 2; ++spin)  // deadlock guard
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(done[0] == 2);
    // The others' first records were covered by flush 2 as well.
    for (int i = 1; i < writers; ++i) {
      for (int spin = 0; spin < 20000 && done[i] < 1; ++spin)  // deadlock guard
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      CHECK(done[i] >= 1);
    }
    const auto st = g.stats();
    CHECK(st.merge_windows >= 1);
    gi.release_all();
    for (auto& t : pool) t.join();
    for (int i = 0; i < writers; ++i) CHECK(done[i] == 2);
    g.detach(m);
  }
}

TEST_CASE("async: a lone blocking writer, or a pipelined one, never waits for a merge", "[async]") {
  for (int v = 0; v < 3; ++v) {
    // v 0: fallback thread; 1: io_uring, inline flushes; 2: io_uring, every flush on the ring.
    const bool force = v == 0;
    if (!force && !io_uring_usable()) {
      WARN("skipped io_uring variant: io_uring is not usable in this process");
      continue;
    }
    CAPTURE(v);
    temp_file f(mdtest::test_dir(), 64 * 1024);
    auto g = make_committer(force, v != 2);
    auto m = map_file(f, 64 * 1024);
    g.attach(m);
    // One blocked writer: each flush releases it alone and nobody else waits,
    // so no flush start is ever held back (the counters say so, not a clock).
    for (std::size_t k = 0; k < 40; ++k) REQUIRE(m.fill_persist(k * record_size, 'l', record_size));
    auto st = g.stats();
    CHECK(st.requests == 40);
    CHECK(st.flushes == 40);
    CHECK(st.merge_windows == 0);
    CHECK(st.merge_expired == 0);
    g.detach(m);
    // One pipelined writer keeping 8 requests in flight, waiting for the oldest.
    std::vector<persist_handle> window;
    for (std::size_t k = 0; k < 64; ++k) {
      std::memset(m.data() + k * record_size, 'p', record_size);
      auto h = g.persist_async(m, k * record_size, record_size);
      REQUIRE(h);
      window.push_back(std::move(h.value()));
      if (window.size() == 8) {
        CHECK(window.front().wait());
        window.erase(window.begin());
      }
    }
    for (auto& h : window) CHECK(h.wait());
    st = g.stats();
    CHECK(st.merge_windows == 0);
    CHECK(st.merge_expired == 0);
  }
}

#endif  // MAPDIRECT_TEST_URING
