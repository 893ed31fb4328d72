// iomap_seal and repair with odd descriptors and neighbours: O_APPEND and
// O_DIRECT descriptors (issue 10 item 7), a concurrent store during the
// conversion of unwritten extents (item 9), the process's POSIX record locks
// (issue 17), and file.hpp's helpers racing an acquire in another thread.
#include "catch.hpp"
#include "process_support.hpp"
#include "refusals.hpp"
#include "rollback_check.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {
constexpr std::uint64_t MiB = 1u << 20;

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

void write_at(int fd, std::uint64_t off, const std::string& s) {
  REQUIRE(::pwrite(fd, s.data(), s.size(), static_cast<off_t>(off)) == static_cast<ssize_t>(s.size()));
}

std::string read_range(int fd, std::uint64_t off, std::size_t n) {
  std::string s(n, '\0');
  REQUIRE(::pread(fd, s.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
  return s;
}

// Raw FIEMAP (not the library's): flags of every extent, or false without FIEMAP.
bool extent_flags(int fd, std::uint64_t off, std::uint64_t len, std::vector<std::uint32_t>& flags,
                  std::uint64_t* covered = nullptr) {
  const std::uint32_t cap = 1024;
  std::vector<unsigned char> buf(sizeof(struct fiemap) + cap * sizeof(struct fiemap_extent));
  auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
  fm->fm_start = off;
  fm->fm_length = len;
  fm->fm_extent_count = cap;
  if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) return false;
  flags.clear();
  std::uint64_t bytes = 0;
  for (std::uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
    flags.push_back(fm->fm_extents[i].fe_flags);
    bytes += fm->fm_extents[i].fe_length;
  }
  if (covered) *covered = bytes;
  return true;
}

bool has_unwritten(int fd, std::uint64_t len) {
  std::vector<std::uint32_t> f;
  if (!extent_flags(fd, 0, len, f)) return false;
  for (auto x : f)
    if (x & FIEMAP_EXTENT_UNWRITTEN) return true;
  return false;
}

bool stable(int fd, std::uint64_t len) {
  std::vector<std::uint32_t> f;
  std::uint64_t covered = 0;
  if (!extent_flags(fd, 0, len, f, &covered)) return false;
  for (auto x : f)
    if (x & (FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_SHARED)) return false;
  return covered >= len;
}

// A file in the test directory with written extents next to unwritten ones,
// and some dirty (not yet written back) data over an unwritten extent.
// Returns false (test skipped) where fallocate/FIEMAP/unwritten are missing.
bool make_mixed(const temp_file& f, std::uint64_t size, std::string& why) {
  if (::fallocate(f.fd(), 0, 0, static_cast<off_t>(size)) != 0) {
    why = "fallocate unsupported in the test directory";
    return false;
  }
  write_at(f.fd(), 0, random_bytes(64 * 1024, 1));
  write_at(f.fd(), size / 2, random_bytes(64 * 1024, 2));
  REQUIRE(::fsync(f.fd()) == 0);
  write_at(f.fd(), size / 2 + size / 4 + 123, random_bytes(5000, 3));  // dirty over unwritten
  if (!has_unwritten(f.fd(), size)) {
    why = "the test directory's file system reports no unwritten extents (or has no FIEMAP)";
    return false;
  }
  return true;
}

using mdtest::no_reopen;

// Base, with every shared mapping of a file refused (ENODEV, as on a file
// system without mmap).
template <class Base>
struct no_shared_mmap : Base {
  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
    if ((flags & MAP_SHARED) && fd >= 0) {
      errno = ENODEV;
      return MAP_FAILED;
    }
    return this->syscall_interposer::mmap(addr, len, prot, flags, fd, off);
  }
};

// F_GETLK from another process: does it see this process's lock on [start, start+len)?
bool child_sees_lock(const std::string& path, off_t start, off_t len) {
  return mdtest::child_sees_lock(path, start, len, ::getpid());
}
}  // namespace

TEST_CASE("seal: an O_RDWR|O_APPEND descriptor over unwritten extents: acquire succeeds, size and data unchanged",
          "[seal][oddfd]") {
  temp_file f(mdtest::test_dir());
  std::string why;
  if (!make_mixed(f, 2 * MiB, why)) {
    WARN("skipped: " << why);
    return;
  }
  const std::string before = f.read_all();
  const int afd = ::open(f.path().c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  REQUIRE(afd >= 0);
  auto s = iomap_seal::acquire(afd, 0, 0);
  INFO(last_error_detail());
  REQUIRE(s);
  CHECK(s.value().verified());
  CHECK(s.value().report().zeroed_bytes > 0);
  mdtest::check_file_holds(f.fd(), before);
  CHECK(stable(f.fd(), 2 * MiB));
  // The seal's descriptor is a description of its own, without O_APPEND.
  CHECK((::fcntl(s.value().native_handle(), F_GETFL) & O_APPEND) == 0);
  REQUIRE(s.value().release());
  ::close(afd);
}

TEST_CASE("seal: an O_RDWR|O_DIRECT descriptor over fallocated extents: acquire succeeds, data unchanged",
          "[seal][oddfd]") {
  temp_file f(mdtest::test_dir());
  std::string why;
  if (!make_mixed(f, 2 * MiB, why)) {
    WARN("skipped: " << why);
    return;
  }
  const std::string before = f.read_all();
  const int dfd = ::open(f.path().c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (dfd < 0) {
    WARN("skipped: O_DIRECT refused in the test directory: " << std::strerror(errno));
    return;
  }
  auto s = iomap_seal::acquire(dfd, 0, 0);
  INFO(last_error_detail());
  REQUIRE(s);
  mdtest::check_file_holds(f.fd(), before);
  CHECK(stable(f.fd(), 2 * MiB));
  REQUIRE(s.value().release());
  ::close(dfd);
}

TEST_CASE("seal: a leased seal on the caller's own O_APPEND or O_DIRECT description works in place",
          "[seal][oddfd][lease]") {
  for (const int flag : {O_APPEND, O_DIRECT}) {
    INFO((flag == O_APPEND ? "O_APPEND" : "O_DIRECT"));
    const std::string path = mdtest::private_dir() + "/mapdirect-oddfd-lease";
    ::unlink(path.c_str());
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    struct cleanup {
      int fd;
      std::string path;
      ~cleanup() {
        ::close(fd);
        ::unlink(path.c_str());
      }
    } c{fd, path};
    if (::fallocate(fd, 0, 0, static_cast<off_t>(MiB)) != 0 || !has_unwritten(fd, MiB)) {
      WARN("skipped: no unwritten extents after fallocate here");
      return;
    }
    write_at(fd, 4096, random_bytes(8192, 4));
    const std::string before = read_range(fd, 0, MiB);
    REQUIRE(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | flag) == 0);
    seal_options o;
    o.lease = true;
    auto s = iomap_seal::acquire(fd, 0, 0, o);
    MDTEST_SKIP_WITHOUT_LEASES(s);
    INFO(last_error_detail());
    REQUIRE(s);
    CHECK(s.value().has_lease());
    CHECK_FALSE(s.value().lease_broken());
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    // While leased, the rest of mapdirect must not reopen the file.
    CHECK(detail::seal_registry::leased(st.st_dev, st.st_ino));
    CHECK(static_cast<std::uint64_t>(st.st_size) == MiB);
    CHECK(stable(fd, MiB));
    REQUIRE(s.value().release());
    CHECK_FALSE(detail::seal_registry::leased(st.st_dev, st.st_ino));
    REQUIRE(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~flag) == 0);
    CHECK((read_range(fd, 0, MiB) == before));
  }
}

TEST_CASE("seal: without a mappable file, an O_APPEND dup is refused up front and changes nothing", "[seal][oddfd]") {
  temp_file f(mdtest::test_dir());
  std::string why;
  if (!make_mixed(f, MiB, why)) {
    WARN("skipped: " << why);
    return;
  }
  const std::string before = f.read_all();
  const int afd = ::open(f.path().c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  REQUIRE(afd >= 0);
  no_shared_mmap<no_reopen> refuse;
  {
    scoped_syscall_interposer use(refuse);
    auto s = iomap_seal::acquire(afd, 0, 0);
    REQUIRE_FALSE(s);
    CHECK(s.error() == errc::invalid_argument);
    CHECK(std::string(last_error_detail()).find("O_APPEND") != std::string::npos);
  }
  mdtest::check_file_holds(f.fd(), before);
  // With a description of its own (reopen allowed) the pwrite fallback is safe.
  no_shared_mmap<syscall_interposer> nm;
  {
    scoped_syscall_interposer use(nm);
    auto s = iomap_seal::acquire(afd, 0, 0);
    INFO(last_error_detail());
    REQUIRE(s);
  }
  mdtest::check_file_holds(f.fd(), before);
  CHECK(stable(f.fd(), MiB));
  ::close(afd);
}

TEST_CASE("repair through a mapping of an O_APPEND descriptor rewrites the page in place", "[guard][oddfd]") {
  const std::size_t page = detail::sys::page_size();
  temp_file f(mdtest::test_dir());
  const std::string original = random_bytes(4 * page, 5);
  write_at(f.fd(), 0, original);
  REQUIRE(::fsync(f.fd()) == 0);
  const std::string repl = random_bytes(page, 6);
  REQUIRE(repl != original.substr(2 * page, page));
  const int afd = ::open(f.path().c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  REQUIRE(afd >= 0);
  {
    // A mapping normally has its own description, without O_APPEND.
    auto own = direct_mapping::map(afd, 0, 0, mdtest::shared_only());
    REQUIRE(own);
    CHECK(own.value().own_description());
    CHECK((::fcntl(own.value().native_handle(), F_GETFL) & O_APPEND) == 0);
  }
  // Reopen refused when mapping: the mapping holds a dup of the O_APPEND description.
  result<direct_mapping> m = [&] {
    no_reopen refuse;
    scoped_syscall_interposer use(refuse);
    return direct_mapping::map(afd, 0, 0, mdtest::shared_only());
  }();
  INFO(last_error_detail());
  REQUIRE(m);
  REQUIRE_FALSE(m.value().own_description());
  {
    // Reopen refused again: an O_APPEND dup cannot rewrite in place: refused, nothing written.
    no_reopen refuse;
    scoped_syscall_interposer use(refuse);
    auto r = m.value().repair(2 * page, repl.data(), page);
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == errc::invalid_argument);
  }
  CHECK(f.size() == 4 * page);
  CHECK((f.read_all() == original));
  auto r = m.value().repair(2 * page, repl.data(), page);
  INFO(last_error_detail());
  REQUIRE(r);
  CHECK(f.size() == 4 * page);
  std::string expect = original;
  expect.replace(2 * page, page, repl);
  CHECK((f.read_all() == expect));
  REQUIRE(m.value().close());
  ::close(afd);
}

TEST_CASE("repair through a mapping of an O_DIRECT descriptor writes unaligned sources, also through a dup",
          "[guard][oddfd]") {
  const std::size_t page = detail::sys::page_size();
  temp_file f(mdtest::test_dir());
  const std::string original = random_bytes(4 * page, 7);
  write_at(f.fd(), 0, original);
  REQUIRE(::fsync(f.fd()) == 0);
  const int dfd = ::open(f.path().c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (dfd < 0) {
    WARN("skipped: O_DIRECT refused in the test directory: " << std::strerror(errno));
    return;
  }
  auto m = direct_mapping::map(dfd, 0, 0, mdtest::shared_only());
  INFO(last_error_detail());
  REQUIRE(m);
  std::string expect = original;
  for (std::size_t round = 0; round < 2; ++round) {
    const std::string buf = "x" + random_bytes(page, static_cast<unsigned>(8 + round));  // +1: unaligned source
    no_reopen refuse;
    std::optional<scoped_syscall_interposer> use;
    if (round == 1) use.emplace(refuse);  // the dup fallback: an aligned copy
    auto r = m.value().repair(round * page, buf.data() + 1, page);
    INFO("round " << round << ": " << last_error_detail());
    REQUIRE(r);
    expect.replace(round * page, page, buf.substr(1));
  }
  mdtest::check_file_holds(f.fd(), expect);
  REQUIRE(m.value().close());
  ::close(dfd);
}

TEST_CASE("seal: a store by another writer into an unwritten extent while acquiring is never lost", "[seal][oddfd]") {
  temp_file f(mdtest::test_dir());
  std::string why;
  if (!make_mixed(f, 4 * MiB, why)) {
    WARN("skipped: " << why);
    return;
  }
  // Deterministic: the store lands inside the chunk being converted, after
  // the library read it (old read-and-write-back) or mapped it (in-place CAS).
  const int other = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(other >= 0);
  struct store_midway : syscall_interposer {
    int other = -1;
    bool done = false;
    std::uint64_t at = 0;
    void store(std::uint64_t chunk_start) noexcept {
      if (done) return;
      done = true;
      at = chunk_start + 100;
      (void)::pwrite(other, "CONCURRENT-STORE", 16, static_cast<off_t>(at));
    }
    ssize_t pread(int fd, void* buf, std::size_t n, off_t off) noexcept override {
      const ssize_t r = syscall_interposer::pread(fd, buf, n, off);
      if (r > 200) store(static_cast<std::uint64_t>(off));
      return r;
    }
    void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
      void* p = syscall_interposer::mmap(addr, len, prot, flags, fd, off);
      if (p != MAP_FAILED && (flags & MAP_SHARED) && fd >= 0 && len > 200) store(static_cast<std::uint64_t>(off));
      return p;
    }
  } ip;
  ip.other = other;
  {
    scoped_syscall_interposer use(ip);
    auto s = iomap_seal::acquire(f.fd(), 0, 0);
    INFO(last_error_detail());
    REQUIRE(s);
  }
  REQUIRE(ip.done);
  CHECK(read_range(f.fd(), ip.at, 16) == "CONCURRENT-STORE");

  // And with a real concurrent writer thread (bounded rounds).
  for (int round = 0; round < 4; ++round) {
    temp_file g(mdtest::test_dir());
    if (!make_mixed(g, 8 * MiB, why)) break;
    const int w = ::open(g.path().c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(w >= 0);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> slots{0};
    const std::uint64_t base = 4 * MiB + 128 * 1024;  // unwritten region
    std::thread writer([&] {
      std::uint64_t i = 0;
      while (!stop.load(std::memory_order_acquire) && i < 900) {
        const std::uint64_t v = 0xabc0000000000000ull | i;
        if (::pwrite(w, &v, sizeof v, static_cast<off_t>(base + i * 4096 + 8)) != sizeof v) break;
        slots.store(++i, std::memory_order_release);
      }
    });
    auto s = iomap_seal::acquire(g.fd(), 0, 0);
    stop.store(true, std::memory_order_release);
    writer.join();
    INFO(last_error_detail());
    REQUIRE(s);
    const std::uint64_t n = slots.load();
    for (std::uint64_t i = 0; i < n; ++i) {
      std::uint64_t v = 0;
      REQUIRE(::pread(g.fd(), &v, sizeof v, static_cast<off_t>(base + i * 4096 + 8)) == sizeof v);
      INFO("round " << round << " slot " << i);
      REQUIRE(v == (0xabc0000000000000ull | i));
    }
    ::close(w);
  }
  ::close(other);
}

namespace {
void check_locks_survive(const std::string& dir, bool fiemap_dir) {
  const std::size_t page = detail::sys::page_size();
  temp_file f(dir, 1 * MiB);
  write_at(f.fd(), 0, random_bytes(256 * 1024, 9));
  REQUIRE(::fsync(f.fd()) == 0);
  // A write lock and a read lock on byte ranges, held by this process through f's descriptor.
  struct flock wl {};
  wl.l_type = F_WRLCK;
  wl.l_whence = SEEK_SET;
  wl.l_start = 4096;
  wl.l_len = 4096;
  REQUIRE(::fcntl(f.fd(), F_SETLK, &wl) == 0);
  struct flock rl = wl;
  rl.l_type = F_RDLCK;
  rl.l_start = 65536;
  rl.l_len = 100;
  REQUIRE(::fcntl(f.fd(), F_SETLK, &rl) == 0);
  auto both = [&] { return child_sees_lock(f.path(), 4096, 4096) && child_sees_lock(f.path(), 65536, 100); };
  REQUIRE(both());

  seal_options o;
  o.allow_unverifiable = !fiemap_dir;
  {
    auto s = iomap_seal::acquire(f.fd(), 0, 0, o);
    INFO(last_error_detail());
    REQUIRE(s);
    CHECK(both());
    REQUIRE(s.value().release());
    CHECK(both());
  }
  // Closing afd ourselves would drop the locks (POSIX): it stays open until the end.
  const int afd = ::open(f.path().c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  REQUIRE(afd >= 0);
  {  // O_APPEND: the seal opens and closes a description of its own; the failure path too
    auto s = iomap_seal::acquire(afd, 0, 0, o);
    INFO(last_error_detail());
    REQUIRE(s);
    CHECK(both());
    REQUIRE(s.value().release());
    CHECK(both());
    auto bad = iomap_seal::acquire(afd, 0, 8 * MiB, o);  // beyond EOF without extend
    REQUIRE_FALSE(bad);
    CHECK(both());
  }
  REQUIRE(resize_file(f.fd(), 2 * MiB));
  CHECK(both());
  REQUIRE(extend_file(f.fd(), 3 * MiB));
  CHECK(both());
  if (punch_hole(f.fd(), 512 * 1024, 64 * 1024)) CHECK(both());
  REQUIRE(truncate_file(f.fd(), 2 * MiB));
  CHECK(both());
  {  // repair through a mapping of the O_APPEND descriptor: an own description, opened and closed
    auto m = direct_mapping::map(afd, 0, 0, mdtest::shared_only());
    INFO(last_error_detail());
    REQUIRE(m);
    const std::string repl = random_bytes(page, 10);
    auto r = m.value().repair(8 * page, repl.data(), page);
    INFO(last_error_detail());
    REQUIRE(r);
    CHECK(both());
    // The mapping's own close and the caller's ::close(afd) are outside this test's subject.
    (void)m.value().close();
  }
  ::close(afd);
}
}  // namespace

TEST_CASE("seal, file helpers and repair keep the process's POSIX record locks (ext4 test directory)",
          "[seal][file][locks]") {
  std::vector<std::uint32_t> flags;
  temp_file probe(mdtest::test_dir(), 4096);
  const bool fiemap_dir = extent_flags(probe.fd(), 0, 4096, flags);
  check_locks_survive(mdtest::test_dir(), fiemap_dir);
}

TEST_CASE("seal, file helpers and repair keep the process's POSIX record locks (tmpfs)", "[seal][file][locks]") {
  if (::access("/dev/shm", W_OK) != 0) {
    WARN("skipped: /dev/shm (tmpfs) is missing or not writable here");
    return;
  }
  check_locks_survive("/dev/shm", false);
}

TEST_CASE("file helpers are atomic against an iomap_seal acquired concurrently in another thread", "[seal][file]") {
  std::vector<std::uint32_t> flags;
  temp_file f(mdtest::test_dir(), MiB);
  if (!extent_flags(f.fd(), 0, 4096, flags)) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  write_at(f.fd(), 0, random_bytes(MiB, 11));
  REQUIRE(::fsync(f.fd()) == 0);
  // The helper passes its seal check, then its fallocate is held back until
  // the seal's acquire has started in the main thread.
  struct slow_punch : syscall_interposer {
    std::atomic<bool> inside{false};
    std::atomic<bool> acquiring{false};
    int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
      if (mode & FALLOC_FL_PUNCH_HOLE) {
        inside.store(true);
        while (!acquiring.load()) std::this_thread::yield();
        // Give an unsynchronised acquire time to finish first (not an assertion).
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      return syscall_interposer::fallocate(fd, mode, off, len);
    }
  } ip;
  scoped_syscall_interposer use(ip);
  result<void> punched = outcome::success();
  std::thread helper([&] { punched = punch_hole(f.fd(), 128 * 1024, 256 * 1024); });
  while (!ip.inside.load()) std::this_thread::yield();
  ip.acquiring.store(true);
  auto s = iomap_seal::acquire(f.fd(), 0, MiB);
  helper.join();
  INFO(last_error_detail());
  REQUIRE(s);
  if (!punched) {
    WARN("skipped: punch_hole unsupported here: " << punched.error().message());
    return;
  }
  // The punch finished before the seal stabilised: the sealed range has no hole.
  CHECK(stable(f.fd(), MiB));
  CHECK(s.value().verify());
}
