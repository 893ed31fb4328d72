// Read-only mappings (map_options::access) and read-only probing.
#include "catch.hpp"
#include "loopfs.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;

namespace {
constexpr std::size_t kib = 1024;

map_options read_only() {
  map_options o;
  o.access = map_access::read_only;
  return o;
}

int open_ro(const std::string& path) { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }

// Runs fn in a child (anti-hang alarm); its exit code, or 128+signal.
int in_child(const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(30);
    ::_exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A private 0755 directory (not sticky: open()'s foreign-owner rule does not apply), removed afterwards.
struct private_dir {
  std::string path;
  private_dir() {
    std::string tmpl = mdtest::test_dir() + "/mapdirect-ro-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) std::abort();
    path = buf.data();
    ::chmod(path.c_str(), 0755);
  }
  ~private_dir() {
    const std::string cmd = "rm -rf '" + path + "'";
    if (std::system(cmd.c_str()) != 0) std::perror("rm");
  }
};

void write_file(const std::string& path, const std::string& content, mode_t mode) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  REQUIRE(::fchmod(fd, mode) == 0);
  ::close(fd);
}
}  // namespace

TEST_CASE("read-only: maps an O_RDONLY descriptor PROT_READ and reports the ladder honestly", "[readonly]") {
  mdtest::temp_file f(mdtest::test_dir());
  const std::string content = std::string(4 * kib, 'r') + "tail";
  REQUIRE(::pwrite(f.fd(), content.data(), content.size(), 0) == static_cast<ssize_t>(content.size()));
  const int fd = open_ro(f.path());
  REQUIRE(fd >= 0);

  // Without read_only an O_RDONLY descriptor cannot be mapped (shared writable needs O_RDWR).
  auto rw = direct_mapping::map(fd, 0, 0);
  REQUIRE_FALSE(rw);
  CHECK(rw.error() == std::errc::permission_denied);
  CHECK(std::string(last_error_detail()).find("map_access::read_only") != std::string::npos);

  auto r = direct_mapping::map(fd, 0, 0, read_only());
  ::close(fd);
  REQUIRE(r);
  direct_mapping& m = r.value();
  CHECK(m.access() == map_access::read_only);
  CHECK(m.size() == content.size());
  CHECK(m.mode() == map_mode::shared);
  CHECK(m.own_description());
  // The stronger rungs are named, not tried, and say why.
  const map_ladder& l = m.ladder();
  REQUIRE(l.count == 3);
  CHECK_FALSE(l.steps[1].attempted);
  CHECK(std::string(l.steps[1].cause).find("not applicable to a read-only mapping") != std::string::npos);
  CHECK(l.steps[2].attempted);
  CHECK(l.steps[2].error == 0);
  CHECK(m.describe().find("sync: skipped (not applicable to a read-only mapping") != std::string::npos);

  std::string back(content.size(), '\0');
  REQUIRE(m.read(0, back.data(), back.size()));
  CHECK(back == content);
  CHECK(std::memcmp(m.data() + 4 * kib, "tail", 4) == 0);
}

TEST_CASE("read-only: every write-side call fails with errc::read_only and never faults", "[readonly]") {
  mdtest::temp_file f(mdtest::test_dir(), 8 * kib);
  const int fd = open_ro(f.path());
  REQUIRE(fd >= 0);
  auto r = direct_mapping::map(fd, 0, 0, read_only());
  ::close(fd);
  REQUIRE(r);
  direct_mapping& m = r.value();
  const char src[16] = "0123456789abcde";
  auto is_read_only = [](const std::error_code& ec) {
    return ec == errc::read_only && ec == std::errc::permission_denied &&
           std::string(last_error_detail()).find("read-only") != std::string::npos;
  };
  auto p = m.persist(0, 16);
  REQUIRE_FALSE(p);
  CHECK(is_read_only(p.error()));
  auto c = m.copy_persist(0, src, sizeof src);
  REQUIRE_FALSE(c);
  CHECK(is_read_only(c.error()));
  auto fl = m.fill_persist(0, 0x55, 64);
  REQUIRE_FALSE(fl);
  CHECK(is_read_only(fl.error()));
  m.flush(0, 64);  // does nothing
  auto d = m.drain();
  REQUIRE_FALSE(d);
  CHECK(is_read_only(d.error()));
  auto w = m.write(0, src, sizeof src);
  REQUIRE_FALSE(w);
  CHECK(is_read_only(w.error().code()));
  auto rp = m.repair(0, std::string(4 * kib, 'x').data(), 4 * kib);
  REQUIRE_FALSE(rp);
  CHECK(is_read_only(rp.error().code()));
  auto s = m.shrink(4 * kib, shrink_options{true});
  REQUIRE_FALSE(s);
  CHECK(is_read_only(s.error()));
  CHECK(f.size() == 8 * kib);
  CHECK(f.read_all() == std::string(8 * kib, '\0'));  // nothing was written
  CHECK(make_error_code(errc::read_only).message() == "the mapping is read-only");
}

TEST_CASE("read-only: grow follows a file another writer extended, never extends it", "[readonly][grow]") {
  mdtest::temp_file f(mdtest::test_dir(), 8 * kib);
  const int fd = open_ro(f.path());
  REQUIRE(fd >= 0);
  map_options o = read_only();
  o.reserve = 256 * kib;
  auto r = direct_mapping::map(fd, 0, 0, o);
  ::close(fd);
  REQUIRE(r);
  direct_mapping& m = r.value();
  auto g = m.grow(64 * kib);
  REQUIRE_FALSE(g);
  CHECK(g.error() == errc::read_only);
  CHECK(f.size() == 8 * kib);
  // The writer appends; the reader follows in place.
  REQUIRE(::pwrite(f.fd(), "appended", 8, 60 * kib) == 8);
  std::byte* const base = m.data();
  REQUIRE(m.grow(60 * kib + 8));
  CHECK(m.data() == base);
  char got[8];
  REQUIRE(m.read(60 * kib, got, 8));
  CHECK(std::memcmp(got, "appended", 8) == 0);
}

TEST_CASE("read-only: a seal is refused, open() refuses create and grow", "[readonly]") {
  mdtest::temp_file f(mdtest::test_dir(), 8 * kib);
  map_options o = read_only();
  o.seal = seal_options{};
  auto r = direct_mapping::map(f.fd(), 0, 0, o);
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::invalid_argument);
  open_options oo;
  oo.map = read_only();
  oo.create = true;
  oo.size = 4096;
  auto c = direct_mapping::open(f.path(), oo);
  REQUIRE_FALSE(c);
  CHECK(c.error() == errc::invalid_argument);
  oo.create = false;
  oo.size = 64 * kib;
  auto big = direct_mapping::open(f.path(), oo);
  REQUIRE_FALSE(big);
  CHECK(big.error() == errc::beyond_eof);
}

TEST_CASE("read-only: open() maps a 0444 file of another user that the caller cannot open for writing",
          "[readonly][open]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root (to chown to another user and drop to nobody in a child)");
    return;
  }
  private_dir dir;
  const std::string path = dir.path + "/theirs";
  write_file(path, "record-one", 0444);
  REQUIRE(::chown(path.c_str(), 1234, 1234) == 0);
  const int rc = in_child([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    auto rw = direct_mapping::open(path);
    if (rw || rw.error() != std::errc::permission_denied) return 3;  // what readers got before
    open_options o;
    o.map = read_only();
    auto m = direct_mapping::open(path, o);
    if (!m) return 4;
    char got[10];
    if (!m.value().read(0, got, sizeof got) || std::memcmp(got, "record-one", 10) != 0) return 5;
    if (m.value().persist(0, 1) || m.value().write(0, "x", 1)) return 6;
    return 0;
  });
  CHECK(rc == 0);
}

TEST_CASE("read-only: open() maps a file on a read-only loop mount; probe says what a writer would get",
          "[readonly][open][probe]") {
  std::string why;
  auto fs = mdtest::loopfs::create({}, why);
  if (!fs) {
    WARN("skipped: " << why);
    return;
  }
  const std::string path = fs->path() + "/data";
  write_file(path, std::string(8 * kib, 'd'), 0644);
  REQUIRE(mdtest::run_command({"mount", "-o", "remount,ro", fs->path()}) == 0);
  auto rw = direct_mapping::open(path);
  REQUIRE_FALSE(rw);
  CHECK(rw.error() == std::errc::read_only_file_system);
  open_options o;
  o.map = read_only();
  auto m = direct_mapping::open(path, o);
  REQUIRE(m);
  CHECK(m.value().size() == 8 * kib);
  CHECK(m.value().data()[0] == std::byte{'d'});

  auto rep = probe(path.c_str());
  REQUIRE(rep);
  CHECK_FALSE(rep.value().writable);
  CHECK(rep.value().read_only_mount);
  CHECK_FALSE(rep.value().mode_known);
  CHECK(rep.value().mode_inferred);
  CHECK(rep.value().map_sync_tested);  // tried with a read-only mapping
  CHECK(rep.value().untested.find("EROFS") != std::string::npos);
  CHECK(rep.value().untested.find("mounted read-only") != std::string::npos);
  CHECK(rep.value().ladder.find("not tested: a writable mapping") != std::string::npos);
  REQUIRE(mdtest::run_command({"mount", "-o", "remount,rw", fs->path()}) == 0);
}

TEST_CASE("probe on a read-only descriptor: MAP_SYNC tested with a read-only mapping, not reported as 'no'",
          "[readonly][probe][seam]") {
  mdtest::temp_file f(mdtest::test_dir(), 4 * kib);
  const int fd = open_ro(f.path());
  REQUIRE(fd >= 0);
  SECTION("the test directory: the read-only MAP_SYNC attempt gives what a writer would get, and says why") {
    // A plain disk refuses MAP_SYNC; the VM tier's DAX configurations
    // (MAPDIRECT_EXPECT_MODE=sync) accept it for a read-only mapping too.
    const auto want = mdtest::expected("MAPDIRECT_EXPECT_MODE");
    const bool dax = want && *want == "sync";
    auto rep = probe(fd);
    REQUIRE(rep);
    CHECK_FALSE(rep.value().writable);
    CHECK(rep.value().mode_inferred);
    CHECK_FALSE(rep.value().mode_known);
    CHECK(rep.value().map_sync_tested);
    CHECK(rep.value().map_sync == dax);
    CHECK(rep.value().mode == (dax ? map_mode::sync : map_mode::shared));
    CHECK(rep.value().untested.find("not open for writing") != std::string::npos);
  }
  SECTION("emulated DAX: a writer would get sync") {
    mdtest::recording_interposer rec;
    rec.emulate_map_sync();
    scoped_syscall_interposer scope(rec);
    auto rep = probe(fd);
    REQUIRE(rep);
    CHECK(rep.value().map_sync_tested);
    CHECK(rep.value().map_sync);
    CHECK(rep.value().mode == map_mode::sync);
    bool read_only_sync_attempt = false;
    for (const auto& c : rec.mmaps)
      if ((c.flags & MAP_SYNC) && c.prot == PROT_READ) read_only_sync_attempt = true;
    CHECK(read_only_sync_attempt);
  }
  ::close(fd);
}
