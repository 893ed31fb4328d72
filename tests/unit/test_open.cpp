// direct_mapping::open: atomic, durable creation (O_TMPFILE + linkat + the
// directory's fsync), the fallback without O_TMPFILE, no destruction of
// another process's file, safe opening in shared directories, and 0600.
#include "catch.hpp"
#include "refusals.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;

namespace {
// A fresh directory removed (with its entries) on destruction.
struct temp_dir {
  std::string path;
  explicit temp_dir(const std::string& base = mdtest::test_dir(), mode_t mode = 0700) {
    std::string tmpl = base + "/mapdirect-open-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) std::abort();
    path = buf.data();
    ::chmod(path.c_str(), mode);
  }
  ~temp_dir() {
    const std::string cmd = "rm -rf '" + path + "'";
    if (std::system(cmd.c_str()) != 0) std::perror("rm");
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// Runs fn in a child (with an anti-hang alarm); returns its exit code, or
// 128+signal.
int in_child(const std::function<int()>& fn, unsigned alarm_seconds = 30) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(alarm_seconds);
    ::_exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<missing>";
  std::string out(4096, '\0');
  const ssize_t n = ::read(fd, out.data(), out.size());
  ::close(fd);
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

bool is_root() { return ::geteuid() == 0; }

// Records the calls open() makes that matter for durability, in order.
struct durability_recorder : syscall_interposer {
  std::vector<std::string> events;
  int fsync(int fd) noexcept override {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) events.push_back("fsync-dir:" + std::to_string(st.st_ino));
    else events.push_back("fsync-file");
    return syscall_interposer::fsync(fd);
  }
  int linkat(int a, const char* b, int c, const char* d, int e) noexcept override {
    const int rc = syscall_interposer::linkat(a, b, c, d, e);
    if (rc == 0) events.push_back("linkat");
    return rc;
  }
};

// Fails O_TMPFILE opens as a file system without it does.
using no_tmpfile = mdtest::no_tmpfile<durability_recorder>;
}  // namespace

TEST_CASE("open(create): a failing creator never removes the file another process created and acknowledged", "[open]") {
  temp_dir dir;
  const std::string path = dir / "raced";
  int go[2], done[2];
  REQUIRE(::pipe(go) == 0);
  REQUIRE(::pipe(done) == 0);
  // Process A: open(create) whose mapping fails; it pauses inside open (at
  // its mmap) until process B has created, written and persisted the file.
  const pid_t a = ::fork();
  if (a == 0) {
    ::alarm(30);
    struct pause_then_fail : syscall_interposer {
      int go_w, done_r;
      bool paused = false;
      void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
        if (fd >= 0 && !paused) {
          paused = true;
          char c = 'a';
          if (::write(go_w, &c, 1) != 1 || ::read(done_r, &c, 1) != 1) ::_exit(3);
          errno = ENOMEM;  // as a failed map would (granularity_unavailable etc. also fail here)
          return MAP_FAILED;
        }
        return syscall_interposer::mmap(addr, len, prot, flags, fd, off);
      }
    } seam;
    seam.go_w = go[1];
    seam.done_r = done[0];
    scoped_syscall_interposer installed(seam);
    open_options o;
    o.create = true;
    o.size = 4096;
    auto m = direct_mapping::open(path, o);
    ::_exit(!m && seam.paused ? 0 : 1);
  }
  char c = 0;
  REQUIRE(::read(go[0], &c, 1) == 1);
  // Process B (this one) opens the same path while A is inside open().
  open_options o;
  o.create = true;
  o.size = 4096;
  bool created = false;
  o.created = &created;
  auto b = direct_mapping::open(path, o);
  REQUIRE(b);
  const char record[] = "acknowledged record";
  REQUIRE(b.value().copy_persist(0, record, sizeof record));
  REQUIRE(::write(done[1], "d", 1) == 1);
  int status = 0;
  REQUIRE(::waitpid(a, &status, 0) == a);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // A failed, as arranged
  CHECK(created);                   // A never linked anything: B created the file
  struct stat st {};
  REQUIRE(::fstat(b.value().native_handle(), &st) == 0);
  CHECK(st.st_nlink == 1);  // B's file still has its name
  struct stat named {};
  REQUIRE(::stat(path.c_str(), &named) == 0);
  CHECK(named.st_ino == st.st_ino);
  CHECK(read_file(path).compare(0, sizeof record - 1, record) == 0);
  for (int fd : {go[0], go[1], done[0], done[1]}) ::close(fd);
}

TEST_CASE("open(create): the file is linked and its directory fsynced before open returns", "[open]") {
  temp_dir dir;
  struct stat dst {};
  REQUIRE(::stat(dir.path.c_str(), &dst) == 0);
  durability_recorder rec;
  bool created = false;
  {
    scoped_syscall_interposer installed(rec);
    open_options o;
    o.create = true;
    o.size = 8192;
    o.created = &created;
    auto m = direct_mapping::open(dir / "durable", o);
    REQUIRE(m);
    // Recorded while open ran: the link, then the directory's fsync.
    const auto link = std::find(rec.events.begin(), rec.events.end(), "linkat");
    const auto dir_sync = std::find(rec.events.begin(), rec.events.end(), "fsync-dir:" + std::to_string(dst.st_ino));
    CHECK(link != rec.events.end());
    CHECK(dir_sync != rec.events.end());
    CHECK(link < dir_sync);
    // The file's own metadata (its size) was made durable before the link.
    CHECK(std::find(rec.events.begin(), link, "fsync-file") != link);
  }
  CHECK(created);
  struct stat st {};
  REQUIRE(::stat((dir / "durable").c_str(), &st) == 0);
  CHECK(st.st_size == 8192);
}

TEST_CASE("open(create): without O_TMPFILE it creates by name, says so, and undoes only its own file", "[open]") {
  temp_dir dir;
  SECTION("success: created, directory fsynced, the detail names the fallback") {
    no_tmpfile seam;
    bool created = false;
    {
      scoped_syscall_interposer installed(seam);
      open_options o;
      o.create = true;
      o.size = 4096;
      o.created = &created;
      auto m = direct_mapping::open(dir / "fallback", o);
      REQUIRE(m);
      CHECK(std::string(last_error_detail()).find("O_TMPFILE unsupported") != std::string::npos);
      REQUIRE(m.value().copy_persist(0, "x", 1));
    }
    CHECK(seam.tmpfile_refusals >= 1);
    CHECK(created);
    CHECK(std::find_if(seam.events.begin(), seam.events.end(),
                       [](const std::string& e) { return e.rfind("fsync-dir:", 0) == 0; }) != seam.events.end());
    CHECK(read_file(dir / "fallback").substr(0, 1) == "x");
  }
  SECTION("a failed map removes the file only while provably nobody else has it") {
    struct failing_map : no_tmpfile {
      std::string other;  // if set: opened by "someone else" before the map fails
      int other_fd = -1;
      void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
        if (fd >= 0) {
          if (!other.empty() && other_fd < 0) other_fd = ::open(other.c_str(), O_RDWR | O_CLOEXEC);
          errno = ENOMEM;
          return MAP_FAILED;
        }
        return syscall_interposer::mmap(addr, len, prot, flags, fd, off);
      }
    } seam;
    open_options o;
    o.create = true;
    o.size = 4096;
    {
      scoped_syscall_interposer installed(seam);
      auto m = direct_mapping::open(dir / "alone", o);
      REQUIRE_FALSE(m);
      CHECK(std::string(last_error_detail()).find("removed again") != std::string::npos);
    }
    CHECK(::access((dir / "alone").c_str(), F_OK) != 0);
    seam.other = dir / "shared";
    {
      scoped_syscall_interposer installed(seam);
      auto m = direct_mapping::open(dir / "shared", o);
      REQUIRE_FALSE(m);
      INFO(last_error_detail());
      CHECK(std::string(last_error_detail()).find("left in place") != std::string::npos);
    }
    CHECK(seam.other_fd >= 0);
    CHECK(::access((dir / "shared").c_str(), F_OK) == 0);  // someone else had it open: kept
    ::close(seam.other_fd);
  }
}

TEST_CASE("open(create): a failed mapping of a new file leaves nothing behind", "[open]") {
  temp_dir dir;
  open_options o;
  o.create = true;
  o.size = 4096;
  o.map.coarsest = granularity::byte;  // unreachable off pmem with eADR
  auto m = direct_mapping::open(dir / "never", o);
  if (m) {
    WARN("skipped: this host maps byte-granular (eADR pmem)");
    return;
  }
  CHECK(m.error() == errc::granularity_unavailable);
  CHECK(::access((dir / "never").c_str(), F_OK) != 0);
}

TEST_CASE("open(grow): a failed extension or mapping never shrinks the file back", "[open]") {
  temp_dir dir;
  const std::string path = dir / "grown";
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);
  }
  struct fail_file_mmap : syscall_interposer {
    void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
      if (fd >= 0) {
        errno = ENOMEM;
        return MAP_FAILED;
      }
      return syscall_interposer::mmap(addr, len, prot, flags, fd, off);
    }
  } seam;
  open_options g;
  g.size = 4 * 4096;
  g.grow = true;
  {
    scoped_syscall_interposer installed(seam);
    auto m = direct_mapping::open(path, g);
    REQUIRE_FALSE(m);
  }
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(st.st_size == 4 * 4096);  // another process may already map the new size
}

TEST_CASE("open: created reports creation, exclusive keeps EEXIST, size 0 never creates", "[open]") {
  temp_dir dir;
  const std::string path = dir / "f";
  open_options o;
  o.create = true;
  o.size = 4096;
  bool created = false;
  o.created = &created;
  REQUIRE(direct_mapping::open(path, o));
  CHECK(created);
  {
    auto again = direct_mapping::open(path, o);
    REQUIRE(again);
    CHECK_FALSE(created);
  }
  o.exclusive = true;
  auto ex = direct_mapping::open(path, o);
  REQUIRE_FALSE(ex);
  CHECK(ex.error() == std::errc::file_exists);
  CHECK_FALSE(created);
  open_options zero;
  zero.create = true;
  auto none = direct_mapping::open(dir / "missing", zero);
  REQUIRE_FALSE(none);
  CHECK(none.error() == std::errc::no_such_file_or_directory);
  CHECK(::access((dir / "missing").c_str(), F_OK) != 0);
}

TEST_CASE("open: created files are 0600 by default, and the umask still applies", "[open][security]") {
  temp_dir dir;
  const mode_t old = ::umask(022);
  open_options o;
  o.create = true;
  o.size = 4096;
  REQUIRE(direct_mapping::open(dir / "private", o));
  o.permissions = 0644;
  REQUIRE(direct_mapping::open(dir / "shared", o));
  ::umask(077);
  REQUIRE(direct_mapping::open(dir / "masked", o));
  ::umask(old);
  struct stat st {};
  REQUIRE(::stat((dir / "private").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(::stat((dir / "shared").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
  REQUIRE(::stat((dir / "masked").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
}

TEST_CASE("open: files, symlinks and hard links planted by another user in a sticky shared directory are refused",
          "[open][security]") {
  if (!is_root()) {
    WARN("skipped: needs root (chown to nobody, a sticky world-writable directory)");
    return;
  }
  temp_dir dir(mdtest::test_dir(), 0700);
  REQUIRE(::chmod(dir.path.c_str(), 01777) == 0);
  temp_dir elsewhere;  // root's private directory
  const std::string secret = elsewhere / "secret";
  {
    const int fd = ::open(secret.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "root only", 9) == 9);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);
  }
  const uid_t nobody = 65534;
  open_options o;
  o.create = true;
  o.size = 4096;
  bool created = true;
  o.created = &created;

  SECTION("a regular file owned by nobody") {
    const std::string p = dir / "planted";
    // nobody plants it for real, from a child that dropped privileges.
    CHECK(in_child([&] {
            if (::setgid(nobody) != 0 || ::setuid(nobody) != 0) return 2;
            const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666);
            return fd >= 0 && ::ftruncate(fd, 4096) == 0 ? 0 : 3;
          }) == 0);
    auto m = direct_mapping::open(p, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::permission_denied);
    CHECK(std::string(last_error_detail()).find("allow_foreign_owner") != std::string::npos);
    CHECK_FALSE(created);
    o.allow_foreign_owner = true;
    CHECK(direct_mapping::open(p, o));
  }
  SECTION("a symbolic link owned by nobody to root's file: refused, and never followed with no_follow") {
    const std::string p = dir / "link";
    REQUIRE(::symlink(secret.c_str(), p.c_str()) == 0);
    REQUIRE(::lchown(p.c_str(), nobody, nobody) == 0);
    auto m = direct_mapping::open(p, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::permission_denied);
    o.no_follow = true;
    o.allow_foreign_owner = true;  // even then, no_follow refuses the link
    auto nf = direct_mapping::open(p, o);
    REQUIRE_FALSE(nf);
    CHECK(nf.error() == std::errc::too_many_symbolic_link_levels);
    CHECK(read_file(secret).substr(0, 9) == "root only");
  }
  SECTION("a dangling symbolic link: nothing is created through it") {
    const std::string p = dir / "dangling";
    const std::string target = elsewhere / "created-through-link";
    REQUIRE(::symlink(target.c_str(), p.c_str()) == 0);
    REQUIRE(::lchown(p.c_str(), nobody, nobody) == 0);
    o.allow_foreign_owner = true;
    auto m = direct_mapping::open(p, o);
    REQUIRE_FALSE(m);
    CHECK(::access(target.c_str(), F_OK) != 0);
  }
  SECTION("a hard link to root's file elsewhere") {
    const std::string p = dir / "hardlink";
    REQUIRE(::link(secret.c_str(), p.c_str()) == 0);
    auto m = direct_mapping::open(p, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::permission_denied);
    CHECK(std::string(last_error_detail()).find("hard links") != std::string::npos);
  }
  SECTION("a hard link to nobody's file") {
    const std::string target = dir / "nobodys";
    const std::string p = dir / "hardlink2";
    CHECK(in_child([&] {
            if (::setgid(nobody) != 0 || ::setuid(nobody) != 0) return 2;
            const int fd = ::open(target.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666);
            if (fd < 0 || ::ftruncate(fd, 4096) != 0) return 3;
            return ::link(target.c_str(), p.c_str()) == 0 ? 0 : 4;
          }) == 0);
    auto m = direct_mapping::open(p, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::permission_denied);
  }
  SECTION("our own file there is fine") {
    const std::string p = dir / "mine";
    REQUIRE(direct_mapping::open(p, o));
    CHECK(created);
    auto again = direct_mapping::open(p, o);
    REQUIRE(again);
    CHECK_FALSE(created);
  }
}

namespace {
// Records every non-O_PATH open that returned a FIFO or a device.
struct real_open_watch : syscall_interposer {
  int opened_special = 0;
  int check(int fd, int flags) noexcept {
    struct stat st {};
    if (fd >= 0 && !(flags & O_PATH) && ::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
      ++opened_special;
    return fd;
  }
  int open(const char* path, int flags, mode_t mode) noexcept override {
    return check(syscall_interposer::open(path, flags, mode), flags);
  }
  int openat(int d, const char* path, int flags, mode_t mode) noexcept override {
    return check(syscall_interposer::openat(d, path, flags, mode), flags);
  }
};
}  // namespace

TEST_CASE("open and probe refuse FIFOs and devices (also behind symlinks) without opening them",
          "[open][probe][security]") {
  temp_dir dir;
  const std::string fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string devlink = dir / "devnull";
  REQUIRE(::symlink("/dev/null", devlink.c_str()) == 0);
  const std::string fifolink = dir / "fifolink";
  REQUIRE(::symlink(fifo.c_str(), fifolink.c_str()) == 0);
  // In a child: a FIFO opened for real without O_NONBLOCK would hang (the alarm kills it).
  const int rc = in_child(
      [&] {
        real_open_watch watch;
        scoped_syscall_interposer installed(watch);
        int bad = 0;
        for (const std::string& p : {fifo, devlink, fifolink}) {
          auto pr = probe(p.c_str());
          if (pr || pr.error() != errc::invalid_argument) bad |= 1;
          auto m = direct_mapping::open(p);
          if (m || m.error() != errc::invalid_argument) bad |= 2;
          open_options o;
          o.create = true;
          o.size = 4096;
          auto c = direct_mapping::open(p, o);
          if (c || c.error() != errc::invalid_argument) bad |= 4;
        }
        if (std::string(last_error_detail()).find("without opening") == std::string::npos) bad |= 8;
        if (watch.opened_special != 0) bad |= 16;
        return bad;
      },
      10);
  CHECK(rc == 0);
  auto dev = probe("/dev/null");
  REQUIRE_FALSE(dev);
  CHECK(std::string(last_error_detail()).find("is a character device but not a device DAX") != std::string::npos);
}

TEST_CASE("probe(path) works read-only and reports what it could not test", "[probe][security]") {
  if (!is_root()) {
    WARN("skipped: needs root (to drop to nobody in a child)");
    return;
  }
  temp_dir dir;
  REQUIRE(::chmod(dir.path.c_str(), 0755) == 0);
  const std::string ro = dir / "readonly";
  {
    const int fd = ::open(ro.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);
  }
  const int rc = in_child([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    auto r = probe(ro.c_str());
    if (!r) return 3;
    if (r.value().writable || r.value().mode_known) return 4;
    if (r.value().ladder.find("not tested") == std::string::npos) return 5;
    auto d = probe(dir.path.c_str());  // a directory nobody cannot write to
    if (!d) return 6;
    if (d.value().mode_known || d.value().ladder.find("not tested") == std::string::npos) return 7;
    return 0;
  });
  CHECK(rc == 0);
}

TEST_CASE("open(create): a name that appears after the existence check is found at link time and opened", "[open]") {
  temp_dir dir;
  const std::string path = dir / "appears";
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "theirs", 6) == 6);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);
  }
  struct hide_once : durability_recorder {
    bool hidden = false;
    int fstatat(int d, const char* p, struct stat* st, int flags) noexcept override {
      if (!hidden) {
        hidden = true;  // as if the other process created it just after this check
        errno = ENOENT;
        return -1;
      }
      return syscall_interposer::fstatat(d, p, st, flags);
    }
  } seam;
  open_options o;
  o.create = true;
  o.size = 4096;
  bool created = true;
  o.created = &created;
  {
    scoped_syscall_interposer installed(seam);
    auto m = direct_mapping::open(path, o);
    REQUIRE(m);
    CHECK(std::memcmp(m.value().data(), "theirs", 6) == 0);
  }
  CHECK(seam.hidden);
  CHECK_FALSE(created);
  CHECK(std::find(seam.events.begin(), seam.events.end(), "linkat") == seam.events.end());
  o.exclusive = true;
  seam.hidden = false;
  {
    scoped_syscall_interposer installed(seam);
    auto m = direct_mapping::open(path, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::file_exists);
  }
  CHECK(read_file(path).substr(0, 6) == "theirs");
}
