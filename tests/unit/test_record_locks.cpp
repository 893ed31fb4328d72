// mapdirect and your record locks: no mapdirect call releases a POSIX record
// lock the process holds. Each case runs the calls in a child that holds a
// lock; the parent checks with F_GETLK, from another process, after each step.
#include "catch.hpp"
#include "rollback_check.hpp"
#include "test_support.hpp"

#include <mapdirect/descriptor.hpp>
#include <mapdirect/mapdirect.hpp>
#if defined(MAPDIRECT_TEST_URING)
#include <mapdirect/async.hpp>
#endif

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;

namespace {
constexpr std::size_t file_size = 64 * 1024;

// Where the lock lives.
struct lock_config {
  std::string dir;
  short type;  // F_RDLCK or F_WRLCK
  bool whole;  // whole file, else the byte range [4096, 8192)
  std::string name() const {
    return dir + (type == F_WRLCK ? " write" : " read") + (whole ? " lock on the whole file" : " lock on [4096, 8192)");
  }
};

bool dir_usable(const std::string& dir) { return ::access(dir.c_str(), W_OK) == 0; }

std::vector<lock_config> configs() {
  std::vector<lock_config> out;
  std::vector<std::string> dirs{mdtest::test_dir()};
  if (dir_usable("/dev/shm")) dirs.push_back("/dev/shm");
  else WARN("skipped the tmpfs variants: /dev/shm is not writable here");
  for (const auto& d : dirs)
    for (short t : {static_cast<short>(F_WRLCK), static_cast<short>(F_RDLCK)})
      for (bool whole : {true, false}) out.push_back({d, t, whole});
  return out;
}

struct flock lock_of(const lock_config& c, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = c.whole ? 0 : 4096;
  fl.l_len = c.whole ? 0 : 4096;
  return fl;
}

// What happened to the lock while the child ran the calls.
struct lock_report {
  int result = -1;              // the calls' own result: 0 ok, 77 unsupported here, else a failure code
  bool visible_before = false;  // the parent saw the lock before any call
  std::string lost_after;       // checkpoints after which the lock was gone
  std::string kept_after;       // checkpoints after which it was still there
};

// The child calls this after each step; the parent checks the lock then.
using checkpoint_fn = std::function<void(char)>;
using calls_fn = std::function<int(int fd, const std::string& path, const checkpoint_fn& checkpoint)>;

lock_report run_locked(const lock_config& c, const calls_fn& calls) {
  lock_report rep;
  mdtest::temp_file f(c.dir, file_size);
  int up[2], down[2];
  if (::pipe(up) != 0 || ::pipe(down) != 0) std::abort();
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(60);
    ::close(up[0]);
    ::close(down[1]);
    const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
    struct flock fl = lock_of(c, c.type);
    if (fd < 0 || ::fcntl(fd, F_SETLK, &fl) != 0) ::_exit(90);
    auto checkpoint = [&](char tag) {
      char ack = 0;
      if (::write(up[1], &tag, 1) != 1 || ::read(down[0], &ack, 1) != 1) ::_exit(91);
    };
    checkpoint('L');
    const int r = calls(fd, f.path(), checkpoint);
    const char end[2] = {'Z', static_cast<char>(r)};
    if (::write(up[1], end, 2) != 2) ::_exit(92);
    char ack = 0;
    (void)::read(down[0], &ack, 1);
    ::_exit(0);
  }
  ::close(up[1]);
  ::close(down[0]);
  const int mine = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
  for (;;) {
    char tag = 0;
    if (::read(up[0], &tag, 1) != 1) break;
    if (tag == 'Z') {
      char r = 0;
      if (::read(up[0], &r, 1) == 1) rep.result = static_cast<unsigned char>(r);
      (void)!::write(down[1], "k", 1);
      break;
    }
    struct flock q = lock_of(c, F_WRLCK);  // conflicts with a read or a write lock
    const bool held = ::fcntl(mine, F_GETLK, &q) == 0 && q.l_type == c.type && q.l_pid == child;
    if (tag == 'L') rep.visible_before = held;
    else (held ? rep.kept_after : rep.lost_after) += tag;
    (void)!::write(down[1], "k", 1);
  }
  ::close(mine);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rep.result = 200 + (WIFEXITED(status) ? WEXITSTATUS(status) : 0);
  ::close(up[0]);
  ::close(down[1]);
  return rep;
}

// Runs `calls` under every configuration and checks that no checkpoint lost the lock.
void check_lock_kept(const char* what, const calls_fn& calls) {
  for (const auto& c : configs()) {
    INFO(what << " with a " << c.name());
    const lock_report rep = run_locked(c, calls);
    REQUIRE(rep.visible_before);
    if (rep.result == 77) {
      WARN("skipped " << what << " on " << c.dir << ": not supported on this file system");
      continue;
    }
    CHECK(rep.result == 0);
    INFO("checkpoints kept: '" << rep.kept_after << "', lost: '" << rep.lost_after << "'");
    CHECK(rep.lost_after.empty());
    CHECK_FALSE(rep.kept_after.empty());
  }
}

map_options shared() { return mdtest::shared_only(); }
}  // namespace

TEST_CASE("record locks survive direct_mapping::map, close, the destructor and move-assignment", "[locks]") {
  check_lock_kept("map/close", [](int fd, const std::string&, const checkpoint_fn& cp) {
    auto m = direct_mapping::map(fd, 0, 0, shared());
    if (!m) return 1;
    cp('m');  // while mapped
    if (!m.value().close()) return 2;
    cp('c');
    return 0;
  });
  check_lock_kept("destructor", [](int fd, const std::string&, const checkpoint_fn& cp) {
    {
      auto m = direct_mapping::map(fd, 0, 4096, shared());
      if (!m) return 1;
    }
    cp('d');
    return 0;
  });
  check_lock_kept("move-assignment", [](int fd, const std::string&, const checkpoint_fn& cp) {
    auto a = direct_mapping::map(fd, 0, 4096, shared());
    auto b = direct_mapping::map(fd, 4096, 4096, shared());
    if (!a || !b) return 1;
    a.value() = std::move(b.value());  // destroys a's old mapping
    cp('a');
    a.value() = direct_mapping{};
    cp('e');
    return 0;
  });
}

TEST_CASE("record locks survive direct_mapping::open of the locked file", "[locks][open]") {
  check_lock_kept("open", [](int, const std::string& path, const checkpoint_fn& cp) {
    open_options o;
    o.map = shared();
    auto m = direct_mapping::open(path, o);
    if (!m) return 1;
    cp('o');
    o.create = true;
    o.size = file_size;
    auto c = direct_mapping::open(path, o);  // create=true on the existing file
    if (!c) return 2;
    cp('O');
    (void)m.value().close();
    (void)c.value().close();
    cp('c');
    return 0;
  });
}

TEST_CASE("record locks survive probe(fd) and probe(path)", "[locks][probe]") {
  check_lock_kept("probe", [](int fd, const std::string& path, const checkpoint_fn& cp) {
    if (!probe(fd)) return 1;
    cp('p');
    if (!probe(path.c_str())) return 2;
    cp('P');
    return 0;
  });
}

TEST_CASE("record locks survive iomap_seal::acquire and release", "[locks][seal]") {
  check_lock_kept("iomap_seal", [](int fd, const std::string&, const checkpoint_fn& cp) {
    auto s = iomap_seal::acquire(fd, 0, file_size);
    if (!s)
      return s.error() == errc::block_map_unverifiable || s.error() == std::errc::operation_not_supported ? 77 : 1;
    cp('s');
    if (!s.value().release()) return 2;
    cp('r');
    return 0;
  });
}

TEST_CASE("record locks survive resize_file, extend_file and punch_hole", "[locks][file]") {
  check_lock_kept("file helpers", [](int fd, const std::string&, const checkpoint_fn& cp) {
    if (!resize_file(fd, file_size + 4096)) return 1;
    cp('z');
    if (!extend_file(fd, 2 * file_size)) return 2;
    cp('x');
    if (auto p = punch_hole(fd, 0, 4096); !p && p.error() != std::errc::operation_not_supported) return 3;
    cp('h');
    return 0;
  });
}

TEST_CASE("record locks survive direct_mapping::repair", "[locks][guard]") {
  check_lock_kept("repair", [](int fd, const std::string&, const checkpoint_fn& cp) {
    auto m = direct_mapping::map(fd, 0, 0, shared());
    if (!m) return 1;
    std::vector<char> page(4096, 'r');
    if (!m.value().repair(0, page.data(), page.size())) return 2;
    cp('R');
    (void)m.value().close();
    cp('c');
    return 0;
  });
}

#if defined(MAPDIRECT_TEST_URING)
TEST_CASE("record locks survive group_committer create, attach, persist and destruction", "[locks][async]") {
  check_lock_kept("group_committer", [](int fd, const std::string&, const checkpoint_fn& cp) {
    auto m = direct_mapping::map(fd, 0, 0, shared());
    if (!m) return 1;
    {
      auto g = group_committer::create();
      if (!g) return 2;
      cp('g');
      g.value().attach(m.value());
      if (!m.value().copy_persist(0, "abc", 3)) return 3;
      cp('p');
      auto h = g.value().persist_async(m.value(), 4096, 100);
      if (!h || !h.value().wait()) return 4;
      cp('a');
      g.value().detach(m.value());
    }
    cp('d');
    (void)m.value().close();
    cp('c');
    return 0;
  });
}
#endif

TEST_CASE("10,000 map/close cycles leak no descriptor, with or without a record lock held", "[locks]") {
  mdtest::temp_file f(mdtest::test_dir(), 4096);
  const std::size_t before = mdtest::open_fd_count();
  for (int i = 0; i < 10000; ++i) {
    auto m = direct_mapping::map(f.fd(), 0, 4096, shared());
    REQUIRE(m);
  }
  CHECK(mdtest::open_fd_count() == before);

  check_lock_kept("10,000 map/close cycles", [](int fd, const std::string&, const checkpoint_fn& cp) {
    const std::size_t start = mdtest::open_fd_count();
    for (int i = 0; i < 10000; ++i) {
      auto m = direct_mapping::map(fd, 0, 4096, shared());
      if (!m) return 1;
    }
    cp('y');
    // A few may stay open while the lock is held, never one per cycle.
    if (mdtest::open_fd_count() > start + 4) return 2;
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, F_SETLK, &fl) != 0) return 3;
    if (release_deferred_descriptors() != 0) return 4;
    if (mdtest::open_fd_count() != start) return 5;
    return 0;
  });
}

TEST_CASE("deferred descriptors: closed once the lock is released, never someone else's, fork, stdio",
          "[locks][descriptor]") {
  mdtest::temp_file f(mdtest::test_dir(), 4096);
  const auto in_child = [](const std::function<int()>& fn) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(30);
      ::_exit(fn());
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  };
  const auto lock = [](int fd, short type) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    return ::fcntl(fd, F_SETLK, &fl) == 0;
  };
  const auto is_open = [](int fd) { return ::fcntl(fd, F_GETFD) >= 0; };

  SECTION("a deferred close happens at release_deferred_descriptors() once the lock is gone") {
    CHECK(in_child([&] {
            const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            if (!lock(fd, F_WRLCK)) return 1;
            const int extra = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            if (detail::close_keeping_locks(extra) != 0 || !is_open(extra)) return 2;
            if (deferred_descriptor_count() != 1 || release_deferred_descriptors() != 1) return 3;
            if (!lock(fd, F_UNLCK)) return 4;
            if (release_deferred_descriptors() != 0 || is_open(extra) || deferred_descriptor_count() != 0) return 5;
            return 0;
          }) == 0);
  }
  SECTION("a deferred descriptor closed and reused behind mapdirect's back is never closed by it") {
    CHECK(in_child([&] {
            const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            if (!lock(fd, F_WRLCK)) return 1;
            const int extra = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            (void)detail::close_keeping_locks(extra);
            // The application closes everything and reuses the number (daemons do).
            ::close(extra);
            const int other = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (other != extra) return 77;
            if (!lock(fd, F_UNLCK)) return 2;
            (void)release_deferred_descriptors();
            return is_open(other) ? 0 : 3;
          }) == 0);
  }
  SECTION("a deferred mapping descriptor whose number the application reuses for the same file is not closed") {
    // Found by a hostile review: the application closes every descriptor
    // (close_range), reopens the same file and gets the deferred number back;
    // a later mapdirect call must not close the application's descriptor.
    CHECK(in_child([&] {
            const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            if (!lock(fd, F_WRLCK)) return 1;
            int mapped_fd = -1;
            {
              auto m = direct_mapping::map(fd, 0, 4096, mdtest::shared_only());
              if (!m || !m.value().own_description()) return 2;
              mapped_fd = m.value().native_handle();
            }  // close deferred: the lock is held
            if (!is_open(mapped_fd)) return 3;
            ::close(mapped_fd);  // behind mapdirect's back
            const int again = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            if (again != mapped_fd) return 77;
            // Another mapdirect call while the lock is held, then after it is released.
            {
              auto m2 = direct_mapping::map(fd, 0, 4096, mdtest::shared_only());
              if (!m2) return 4;
              if (m2.value().native_handle() == again) return 5;  // never handed out as mapdirect's
            }
            if (!lock(fd, F_UNLCK)) return 6;
            (void)release_deferred_descriptors();
            return is_open(again) ? 0 : 7;
          }) == 0);
  }
  SECTION("after fork the child closes its inherited copies and the parent keeps its lock") {
    CHECK(in_child([&] {
            const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            if (!lock(fd, F_WRLCK)) return 1;
            const int extra = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            (void)detail::close_keeping_locks(extra);
            const int grandchild = [&] {
              const pid_t pid = ::fork();
              if (pid == 0) ::_exit(release_deferred_descriptors() == 0 && !is_open(extra) ? 0 : 1);
              int status = 0;
              ::waitpid(pid, &status, 0);
              return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
            }();
            if (grandchild != 0) return 2;
            // The parent's lock, seen from yet another process.
            const pid_t self = ::getpid();
            const pid_t checker = ::fork();
            if (checker == 0) {
              const int mine = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
              struct flock q {};
              q.l_type = F_WRLCK;
              q.l_whence = SEEK_SET;
              ::_exit(::fcntl(mine, F_GETLK, &q) == 0 && q.l_type == F_WRLCK && q.l_pid == self ? 0 : 1);
            }
            int status = 0;
            ::waitpid(checker, &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 3;
            return is_open(extra) ? 0 : 4;
          }) == 0);
  }
  SECTION("with stdin closed, a description mapdirect opens never lands on 0..2 (nor stays there)") {
    CHECK(in_child([&] {
            const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
            if (fd < 3 || !lock(fd, F_WRLCK)) return 1;
            ::close(0);
            auto own = detail::reopen_description(fd, O_RDWR);
            if (own.fd < 3) return 2;
            if (is_open(0)) return 3;  // nothing of the file's left on stdin
            auto p = probe(f.path().c_str());
            if (!p || is_open(0)) return 4;
            open_options o;
            o.map = mdtest::shared_only();
            auto m = direct_mapping::open(f.path(), o);
            if (!m || is_open(0)) return 5;
            return 0;
          }) == 0);
  }
}
