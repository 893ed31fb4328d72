// One error vocabulary (issue 11): every public move-only type spells
// emptiness as `explicit operator bool`, reads like a default-constructed
// object after close()/release() or a move, and an empty committer, handle or
// seal fails with errc::empty_object; calls interrupted by a signal (EINTR)
// are retried, fsync/fdatasync included.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>
#if defined(MAPDIRECT_TEST_URING)
#include <mapdirect/async.hpp>
#endif

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {
// Every accessor of `m` reads as a default-constructed mapping's.
void check_like_default(const direct_mapping& m) {
  const direct_mapping fresh;
  CHECK_FALSE(static_cast<bool>(m));
  CHECK(m.data() == nullptr);
  CHECK(m.size() == 0);
  CHECK(m.capacity() == 0);
  CHECK(m.access() == fresh.access());
  CHECK(m.file_offset() == 0);
  CHECK(m.native_handle() == -1);
  CHECK(m.own_description() == fresh.own_description());
  CHECK(m.mode() == fresh.mode());
  CHECK(m.device_dax() == fresh.device_dax());
  CHECK(m.store_granularity() == fresh.store_granularity());
  CHECK(m.domain() == fresh.domain());
  CHECK(m.flush_with() == fresh.flush_with());
  CHECK(m.ladder().count == 0);
  CHECK_FALSE(static_cast<bool>(m.seal()));
  CHECK_FALSE(static_cast<bool>(m.grown_seal()));
  CHECK_FALSE(m.durability_failed());
  CHECK(m.describe() == fresh.describe());
}

// Every accessor of `s` reads as a default-constructed seal's.
void check_like_default(const iomap_seal& s) {
  const iomap_seal fresh;
  CHECK_FALSE(static_cast<bool>(s));
  CHECK(s.kind() == fresh.kind());
  CHECK(s.verified() == fresh.verified());
  const seal_report& r = s.report();
  const seal_report& f = fresh.report();
  CHECK(r.extents == f.extents);
  CHECK(r.allocated_bytes == f.allocated_bytes);
  CHECK(r.zeroed_bytes == f.zeroed_bytes);
  CHECK(r.unshared_bytes == f.unshared_bytes);
  CHECK(r.rewrote_shared == f.rewrote_shared);
  CHECK(r.verified == f.verified);
  CHECK(r.extended == f.extended);
  CHECK(s.offset() == 0);
  CHECK(s.length() == 0);
  CHECK(s.native_handle() == -1);
  CHECK_FALSE(s.lease_broken());
  CHECK_FALSE(s.lease_compromised());
  CHECK(s.lease_event_fd() == -1);
  CHECK_FALSE(s.has_lease());
  auto v = s.verify();
  REQUIRE_FALSE(v);
  CHECK(v.error() == errc::empty_object);
}

direct_mapping mapped(const temp_file& f) {
  map_options o = mdtest::shared_only();
  o.access = map_access::read_only;  // not the default, so a stale field shows
  auto m = direct_mapping::map(f.fd(), 4096, 4096, o);
  INFO(last_error_detail());
  REQUIRE(m);
  REQUIRE(m.value().ladder().count > 0);
  return std::move(m.value());
}

iomap_seal sealed(const temp_file& f) {
  seal_options o;
  o.allow_unverifiable = true;  // whatever the test directory is
  o.lease = true;
  auto s = iomap_seal::acquire(f.fd(), 4096, 4096, o);
  INFO(last_error_detail());
  REQUIRE(s);
  return std::move(s.value());
}

// Fails the first `failures` calls of fsync/fdatasync with EINTR.
struct interrupting : syscall_interposer {
  std::atomic<int> fsyncs{0}, fdatasyncs{0};
  int failures = 1;
  bool alternate = false;  // fail every other call instead: each retried call is interrupted once
  int fsync(int fd) noexcept override {
    const int n = fsyncs.fetch_add(1);
    if (alternate ? n % 2 == 0 : n < failures) {
      errno = EINTR;
      return -1;
    }
    return syscall_interposer::fsync(fd);
  }
  int fdatasync(int fd) noexcept override {
    if (fdatasyncs.fetch_add(1) < failures) {
      errno = EINTR;
      return -1;
    }
    return syscall_interposer::fdatasync(fd);
  }
};
}  // namespace

TEST_CASE("emptiness: a closed or moved-from direct_mapping reads as a default-constructed one", "[errors]") {
  temp_file f(mdtest::test_dir(), 4 * 4096);
  SECTION("close()") {
    auto m = mapped(f);
    CHECK(static_cast<bool>(m));
    REQUIRE(m.close());
    check_like_default(m);
  }
  SECTION("moved-from") {
    auto m = mapped(f);
    direct_mapping taken = std::move(m);
    CHECK(static_cast<bool>(taken));
    check_like_default(m);
  }
  SECTION("empty: ranged calls fail with not_mapped (it is a mapping)") {
    direct_mapping m;
    check_like_default(m);
    auto r = m.persist(0, 1);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::not_mapped);
  }
}

TEST_CASE("emptiness: a released or moved-from iomap_seal reads as a default-constructed one", "[errors][seal]") {
  temp_file f(mdtest::test_dir(), 4 * 4096);
  SECTION("release()") {
    auto s = sealed(f);
    CHECK(static_cast<bool>(s));
    CHECK(s.has_lease());
    REQUIRE(s.release());
    check_like_default(s);
  }
  SECTION("moved-from") {
    auto s = sealed(f);
    iomap_seal taken = std::move(s);
    CHECK(static_cast<bool>(taken));
    check_like_default(s);
  }
  SECTION("default-constructed") {
    const iomap_seal s;
    check_like_default(s);
  }
}

TEST_CASE("errc::empty_object: its message and condition", "[errors]") {
  const std::error_code ec = errc::empty_object;
  CHECK(ec.message().find("empty") != std::string::npos);
  CHECK(ec == std::errc::bad_file_descriptor);
  CHECK(ec != errc::not_mapped);
}

TEST_CASE("EINTR: open() retries the new file's fsync and the directory's", "[errors][mapping]") {
  const std::string path = mdtest::private_dir() + "/mapdirect-eintr";
  ::unlink(path.c_str());
  open_options o;
  o.create = true;
  o.size = 4096;
  interrupting seam;
  seam.alternate = true;  // the file's fsync and the directory's are each interrupted once
  {
    scoped_syscall_interposer scope(seam);
    auto m = direct_mapping::open(path, o);
    INFO(last_error_detail());
    REQUIRE(m);
  }
  CHECK(seam.fsyncs.load() >= 4);  // each interrupted once, then retried
  ::unlink(path.c_str());
}

#if defined(MAPDIRECT_TEST_URING)
TEST_CASE("emptiness: group_committer and persist_handle convert to false when empty, errc::empty_object",
          "[errors][async]") {
  temp_file f(mdtest::test_dir(), 4096);
  auto m = direct_mapping::map(f.fd(), 0, 4096, mdtest::shared_only());
  REQUIRE(m);
  group_committer none;
  CHECK_FALSE(static_cast<bool>(none));
  CHECK(none.notify_fd() == -1);
  auto n = none.persist(m.value(), 0, 1);
  REQUIRE_FALSE(n);
  CHECK(n.error() == errc::empty_object);
  auto g = group_committer::create();
  REQUIRE(g);
  CHECK(static_cast<bool>(g.value()));
  group_committer taken = std::move(g.value());
  CHECK_FALSE(static_cast<bool>(g.value()));
  CHECK(g.value().notify_fd() == -1);
  auto h = taken.persist_async(m.value(), 0, 1);
  REQUIRE(h);
  CHECK(static_cast<bool>(h.value()));
  persist_handle moved = std::move(h.value());
  CHECK_FALSE(static_cast<bool>(h.value()));
  CHECK_FALSE(h.value().ready());
  auto w = h.value().wait();
  REQUIRE_FALSE(w);
  CHECK(w.error() == errc::empty_object);
  CHECK(moved.wait());
}

TEST_CASE("EINTR: the thread committer retries an interrupted fdatasync", "[errors][async]") {
  temp_file f(mdtest::test_dir(), 4096);
  auto m = direct_mapping::map(f.fd(), 0, 4096, mdtest::shared_only());
  REQUIRE(m);
  committer_options co;
  co.force_thread = true;
  auto g = group_committer::create(co);
  REQUIRE(g);
  interrupting seam;
  {
    scoped_syscall_interposer scope(seam);
    std::memset(m.value().data(), 'x', 100);
    auto r = g.value().persist(m.value(), 0, 100);
    INFO(last_error_detail());
    CHECK(r);
  }
  CHECK(seam.fdatasyncs.load() >= 2);
  CHECK_FALSE(m.value().durability_failed());
}
#endif

TEST_CASE("describe_ladder into a buffer: the std::string text, truncated safely, no allocation", "[errors][mapping]") {
  map_ladder ladder;
  ladder.steps[0] = map_attempt{map_mode::direct, false, 0, "not built in"};
  ladder.steps[1] = map_attempt{map_mode::sync, true, EOPNOTSUPP, "no DAX"};
  ladder.steps[2] = map_attempt{map_mode::shared, true, 0, ""};
  ladder.count = 3;
  const std::string text = direct_mapping::describe_ladder(ladder);
  CHECK(text == "direct: skipped (not built in)\nsync: EOPNOTSUPP (no DAX)\nshared: ok\n");
  char buf[256];
  CHECK(direct_mapping::describe_ladder(ladder, buf, sizeof buf) == text.size());
  CHECK(std::string(buf) == text);
  char small[10];
  std::memset(small, 'x', sizeof small);
  CHECK(direct_mapping::describe_ladder(ladder, small, 8) == text.size());
  CHECK(std::string(small) == text.substr(0, 7));
  CHECK(small[8] == 'x');  // nothing written past the size given
  CHECK(direct_mapping::describe_ladder(map_ladder{}, buf, sizeof buf) == 0);
  CHECK(buf[0] == '\0');
}

TEST_CASE("fail_errno: printf-style text, then strerror and the errno, truncated within the buffer", "[errors]") {
  auto ec = detail::fail_errno(ENOSPC, "grow: fallocate of %s at %d", "f.db", 4096);
  CHECK(ec == std::errc::no_space_on_device);
  char text[128];
  const std::string want = std::string("grow: fallocate of f.db at 4096: ") +
                           detail::errno_text(ENOSPC, text, sizeof text) + " (errno " + std::to_string(ENOSPC) + ")";
  CHECK(std::string(last_error_detail()) == want);
  const std::string huge(3 * MAPDIRECT_ERROR_DETAIL_SIZE, 'w');
  (void)detail::fail_errno(EIO, "%s", huge.c_str());
  CHECK(std::string(last_error_detail()).size() == MAPDIRECT_ERROR_DETAIL_SIZE - 1);
  // Both strerror_r variants: XSI (int, 0 on success) and GNU (the text).
  CHECK(std::string(detail::strerror_text(0, "from buf")) == "from buf");
  CHECK(std::string(detail::strerror_text(ERANGE, "partial")) == "unknown error");
  CHECK(std::string(detail::strerror_text("static text", "unused")) == "static text");
}

TEST_CASE("durability lost: one text, naming the caller, the errno when known, and the way out", "[errors]") {
  auto ec = detail::fail_durability_lost("persist");
  CHECK(ec == errc::durability_lost);
  const std::string plain = last_error_detail();
  CHECK(plain.rfind("persist: an earlier flush of this file failed (", 0) == 0);
  CHECK(plain.find("clear_durability_error()") != std::string::npos);
  (void)detail::fail_durability_lost("group_committer", EIO);
  const std::string with = last_error_detail();
  CHECK(with.rfind("group_committer: an earlier flush of this file failed with EIO (", 0) == 0);
  CHECK(with.substr(with.find(" (")) == plain.substr(plain.find(" (")));
}
