// Documented claims that had no test (issue 19, "weak assertions"): EDQUOT,
// map_options::populate, STATX_ATTR_DAX mask handling, stacked and mixed nd
// regions, "free space is checked first", the sealed range never meeting
// ENOSPC-SIGBUS, and repair's "cannot clear poison" path (EIO and EFAULT).
// Each test fails when the behaviour it names is broken (tests/mutation).
#include "catch.hpp"
#include "loopfs.hpp"
#include "rollback_check.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {
constexpr std::size_t kib = 1024;
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;

std::size_t page() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

std::string why_text() { return std::string(last_error_detail()); }

std::string pread_all(int fd, std::size_t n, std::size_t off = 0) {
  std::string out(n, '\0');
  REQUIRE(::pread(fd, out.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
  return out;
}

std::uint64_t file_size(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  return static_cast<std::uint64_t>(st.st_size);
}

std::uint64_t file_blocks(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  return static_cast<std::uint64_t>(st.st_blocks);
}

// Bytes of [p, p+n) whose pages are present in this process's page table
// (/proc/self/pagemap bit 63): mapped in, not merely in the page cache.
std::uint64_t resident_bytes(const void* p, std::size_t n) {
  const std::size_t pg = page();
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  std::uint64_t total = 0;
  const auto first = reinterpret_cast<std::uintptr_t>(p) / pg;
  for (std::size_t i = 0; i < (n + pg - 1) / pg; ++i) {
    std::uint64_t entry = 0;
    REQUIRE(::pread(fd, &entry, sizeof entry, static_cast<off_t>((first + i) * sizeof entry)) ==
            static_cast<ssize_t>(sizeof entry));
    if (entry >> 63) total += pg;
  }
  ::close(fd);
  return total;
}

// Counts the calls that would change a file (allocation, size, data); passes everything through.
struct change_counter : mdtest::recording_interposer {
  std::atomic<int> fallocates{0}, ftruncates{0}, pwrites{0}, writable_file_mmaps{0};
  std::atomic<bool> no_free_space{false};
  int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
    ++fallocates;
    return syscall_interposer::fallocate(fd, mode, off, len);
  }
  int ftruncate(int fd, off_t len) noexcept override {
    ++ftruncates;
    return syscall_interposer::ftruncate(fd, len);
  }
  ssize_t pwrite(int fd, const void* buf, std::size_t n, off_t off) noexcept override {
    ++pwrites;
    return syscall_interposer::pwrite(fd, buf, n, off);
  }
  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
    if (fd >= 0 && (prot & PROT_WRITE)) ++writable_file_mmaps;
    return recording_interposer::mmap(addr, len, prot, flags, fd, off);
  }
  int fstatfs(int fd, struct statfs* st) noexcept override {
    const int r = syscall_interposer::fstatfs(fd, st);
    if (r == 0 && no_free_space) st->f_bfree = st->f_bavail = 0;
    return r;
  }
  int changes() const { return fallocates + ftruncates + pwrites + writable_file_mmaps; }
};

// Fills a file system with one big file (kept open by the returned temp_file).
std::unique_ptr<temp_file> fill(const std::string& dir) {
  auto filler = std::make_unique<temp_file>(dir);
  std::uint64_t have = 0;
  for (std::uint64_t chunk = 16 * MiB; chunk >= 4096; chunk /= 2)
    while (::fallocate(filler->fd(), 0, static_cast<off_t>(have), static_cast<off_t>(chunk)) == 0) have += chunk;
  return filler;
}
}  // namespace

// ---------------------------------------------------------------------------
// EDQUOT (README "Errors (fsyncgate)", grow()'s "ENOSPC/EDQUOT/EFBIG (nothing changed)")

TEST_CASE("claims: EDQUOT from grow's fallocate is returned as EDQUOT and changes nothing", "[claims][edquot]") {
  temp_file f(mdtest::test_dir(), 16 * kib);
  const std::string before(16 * kib, 'q');
  REQUIRE(::pwrite(f.fd(), before.data(), before.size(), 0) == static_cast<ssize_t>(before.size()));
  map_options o = mdtest::shared_only();
  o.reserve = 1024 * kib;
  auto r = direct_mapping::map(f.fd(), 0, 16 * kib, o);
  REQUIRE(r);
  direct_mapping& m = r.value();
  // Like a real fallocate that runs out of quota midway: the file has grown
  // (part of the blocks were allocated) when EDQUOT comes back.
  struct quota : syscall_interposer {
    int calls = 0;
    int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
      ++calls;
      if (mode == 0) (void)::ftruncate(fd, off + len / 2);
      errno = EDQUOT;
      return -1;
    }
  } q;
  {
    scoped_syscall_interposer scope(q);
    auto g = m.grow(512 * kib);
    REQUIRE_FALSE(g);
    CHECK(g.error() == std::error_code(EDQUOT, std::system_category()));
    INFO(why_text());
    CHECK(why_text().find("(errno " + std::to_string(EDQUOT) + ")") != std::string::npos);
  }
  CHECK(q.calls >= 1);
  CHECK(m.size() == 16 * kib);
  CHECK(m.capacity() == 1024 * kib);
  mdtest::check_file_holds(f.fd(), before);
  CHECK(m.persist(0, 16 * kib));  // the mapping still works
}

TEST_CASE("claims: EDQUOT from a page flush is a write-back error: later persists fail with durability_lost",
          "[claims][edquot]") {
  temp_file f(mdtest::test_dir(), 4 * kib);
  auto r = direct_mapping::map(f.fd(), 0, 4 * kib, mdtest::shared_only());
  REQUIRE(r);
  direct_mapping& m = r.value();
  REQUIRE(m.store_granularity() == granularity::page);
  mdtest::recording_interposer quota;
  quota.on_msync = [] { return EDQUOT; };
  {
    scoped_syscall_interposer scope(quota);
    std::memset(m.data(), 'd', 64);
    auto p = m.persist(0, 64);
    REQUIRE_FALSE(p);
    CHECK(p.error() == std::error_code(EDQUOT, std::system_category()));
  }
  // The kernel reports a write-back error once: mapdirect must remember it.
  auto later = m.persist(0, 64);
  REQUIRE_FALSE(later);
  CHECK(later.error() == make_error_code(errc::durability_lost));
  m.clear_durability_error();
  CHECK(m.persist(0, 64));
}

// ---------------------------------------------------------------------------
// map_options::populate ("Prefault the whole mapping (MAP_POPULATE)"), off by default

TEST_CASE("claims: populate prefaults every page of the mapping; off by default", "[claims][populate]") {
  const std::size_t n = 64 * page();
  temp_file f(mdtest::test_dir(), n);
  const std::string data(n, 'p');
  REQUIRE(::pwrite(f.fd(), data.data(), n, 0) == static_cast<ssize_t>(n));  // in the page cache
  SECTION("default: nothing mapped in until touched") {
    mdtest::recording_interposer rec;
    scoped_syscall_interposer scope(rec);
    auto m = direct_mapping::map(f.fd(), 0, n, mdtest::shared_only());
    REQUIRE(m);
    for (const auto& c : rec.mmaps) CHECK((c.flags & MAP_POPULATE) == 0);
    CHECK(resident_bytes(m.value().data(), n) == 0);
  }
  SECTION("populate: every page resident right after map") {
    mdtest::recording_interposer rec;
    scoped_syscall_interposer scope(rec);
    map_options o = mdtest::shared_only();
    o.populate = true;
    auto m = direct_mapping::map(f.fd(), 0, n, o);
    REQUIRE(m);
    bool asked = false;
    for (const auto& c : rec.mmaps) asked = asked || (c.flags & MAP_POPULATE) != 0;
    CHECK(asked);
    CHECK(resident_bytes(m.value().data(), n) == n);
  }
  SECTION("populate: what grow() adds in place is prefaulted too; without it, not") {
    for (const bool populate : {false, true}) {
      INFO("populate " << populate);
      map_options o = mdtest::shared_only();
      o.populate = populate;
      o.reserve = 2 * n;
      auto m = direct_mapping::map(f.fd(), 0, n / 2, o);
      REQUIRE(m);
      std::byte* const base = m.value().data();
      REQUIRE(m.value().grow(n));  // the file already has these bytes
      REQUIRE(m.value().data() == base);
      CHECK(resident_bytes(base + n / 2, n / 2) == (populate ? n / 2 : 0));
    }
  }
}

// ---------------------------------------------------------------------------
// STATX_ATTR_DAX "is trusted only when stx_attributes_mask has the bit"

namespace {
// MAP_SYNC refused with EOPNOTSUPP (as on any non-synchronous-fault host) and a scripted statx.
struct statx_script : mdtest::recording_interposer {
  bool mask = false, attr = false;
  statx_script() {
    on_file_mmap = [](int flags) { return flags == (MAP_SHARED_VALIDATE | MAP_SYNC) ? EOPNOTSUPP : -1; };
  }
  int statx(int dirfd, const char* path, int flags, unsigned m, struct statx* st) noexcept override {
    const int r = syscall_interposer::statx(dirfd, path, flags, m, st);
    if (r == 0) {
      st->stx_attributes_mask = mask ? (st->stx_attributes_mask | STATX_ATTR_DAX)
                                     : (st->stx_attributes_mask & ~std::uint64_t{STATX_ATTR_DAX});
      st->stx_attributes =
          attr ? (st->stx_attributes | STATX_ATTR_DAX) : (st->stx_attributes & ~std::uint64_t{STATX_ATTR_DAX});
    }
    return r;
  }
};
}  // namespace

TEST_CASE("claims: STATX_ATTR_DAX is trusted only when stx_attributes_mask has the bit", "[claims][statx]") {
  temp_file f(mdtest::test_dir(), 4096);
  struct row {
    bool mask, attr;
    const char* cause;        // in the refusal's detail
    std::optional<bool> dax;  // probe_report::dax
  } const rows[] = {
      {true, true, "DAX file without synchronous faults", true},
      {true, false, "not on a DAX file system (statx DAX=0)", false},
      {false, true, "DAX state unknown: statx lacks STATX_ATTR_DAX", std::nullopt},
      {false, false, "DAX state unknown: statx lacks STATX_ATTR_DAX", std::nullopt},
  };
  for (const auto& r : rows) {
    INFO("mask " << r.mask << ", attribute " << r.attr);
    statx_script s;
    s.mask = r.mask;
    s.attr = r.attr;
    scoped_syscall_interposer scope(s);
    map_options o;
    o.weakest = map_mode::sync;
    auto m = direct_mapping::map(f.fd(), 0, 4096, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == make_error_code(errc::mode_unavailable));
    const std::string d = why_text();
    INFO(d);
    CHECK(d.find(r.cause) != std::string::npos);
    auto p = probe(f.fd());
    REQUIRE(p);
    CHECK(p.value().dax == r.dax);
  }
}

// ---------------------------------------------------------------------------
// Stacked and mixed nd regions: "persistence_domain = cpu_cache on every nd
// region behind the file ... following slaves of stacked devices; if any part
// cannot be resolved, mapdirect assumes cache_line". A fake sysfs tree stands
// in for /sys/dev/block/M:m through the seam (nd.hpp reads it with sys::open/openat).

namespace {
class fake_sysfs {
 public:
  fake_sysfs() {
    std::string tmpl = mdtest::private_dir() + "/sysfs-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    REQUIRE(::mkdtemp(buf.data()) != nullptr);
    root_ = buf.data();
  }
  ~fake_sysfs() { (void)mdtest::run_command({"rm", "-rf", root_}); }
  const std::string& root() const { return root_; }
  // region/<name>/ns/block/<dev>, with region/<name>/persistence_domain = domain; returns the dev dir.
  std::string pmem(const std::string& dev, const std::string& region, const std::string& domain) {
    const std::string r = root_ + "/" + region;
    mkdirs(r + "/ns/block/" + dev);
    write(r + "/persistence_domain", domain + "\n");
    return r + "/ns/block/" + dev;
  }
  // A plain block device with no region above it.
  std::string disk(const std::string& dev) {
    mkdirs(root_ + "/pci/" + dev);
    return root_ + "/pci/" + dev;
  }
  // A stacked device (dm, md) whose slaves/ link to `components`.
  std::string stacked(const std::string& dev, const std::vector<std::string>& components) {
    const std::string d = root_ + "/virtual/" + dev;
    mkdirs(d + "/slaves");
    for (const auto& c : components) {
      const std::string name = c.substr(c.rfind('/') + 1);
      REQUIRE(::symlink(c.c_str(), (d + "/slaves/" + name).c_str()) == 0);
    }
    return d;
  }

 private:
  static void mkdirs(const std::string& p) { REQUIRE(mdtest::run_command({"mkdir", "-p", p}) == 0); }
  static void write(const std::string& p, const std::string& text) { std::ofstream(p) << text; }
  std::string root_;
};

// Sends nd.hpp's open of /sys/dev/block/M:m to a directory of the fake tree.
struct sysfs_redirect : mdtest::recording_interposer {
  std::string target;
  int open(const char* path, int flags, mode_t mode) noexcept override {
    if (std::strncmp(path, "/sys/dev/block/", 15) == 0) return syscall_interposer::open(target.c_str(), flags, mode);
    return syscall_interposer::open(path, flags, mode);
  }
};

persistence_domain domain_behind(const std::string& dev_dir, int& regions) {
  sysfs_redirect r;
  r.target = dev_dir;
  scoped_syscall_interposer scope(r);
  return mapdirect::detail::domain_of_device(makedev(259, 0), &regions);
}
}  // namespace

TEST_CASE("claims: nd regions behind stacked and mixed devices (fake sysfs through the seam)", "[claims][nd]") {
  fake_sysfs fs;
  const std::string p0 = fs.pmem("pmem0", "region0", "cpu_cache");
  const std::string p1 = fs.pmem("pmem1", "region1", "cpu_cache");
  const std::string p2 = fs.pmem("pmem2", "region2", "memory_controller");
  const std::string p3 = fs.pmem("pmem3", "region3", "something_new");
  const std::string sda = fs.disk("sda");
  int regions = -1;

  SECTION("one pmem device: its region's domain") {
    CHECK(domain_behind(p0, regions) == persistence_domain::cpu_cache);
    CHECK(regions == 1);
    CHECK(domain_behind(p2, regions) == persistence_domain::memory_controller);
    CHECK(regions == 1);
  }
  SECTION("dm over two eADR regions: cpu_cache") {
    CHECK(domain_behind(fs.stacked("dm-0", {p0, p1}), regions) == persistence_domain::cpu_cache);
    CHECK(regions == 2);
  }
  SECTION("dm over mixed regions: the weaker, memory_controller") {
    CHECK(domain_behind(fs.stacked("dm-1", {p0, p2}), regions) == persistence_domain::memory_controller);
    CHECK(regions == 2);
  }
  SECTION("a component without a region: unknown") {
    CHECK(domain_behind(fs.stacked("dm-2", {p0, sda}), regions) == persistence_domain::unknown);
    CHECK(regions == 1);
  }
  SECTION("a region with a domain this code does not know: unknown") {
    CHECK(domain_behind(fs.stacked("dm-3", {p0, p3}), regions) == persistence_domain::unknown);
  }
  SECTION("two levels of stacking (md over dm over pmem, plus pmem)") {
    const std::string dm = fs.stacked("dm-4", {p0, p1});
    CHECK(domain_behind(fs.stacked("md0", {dm, p1}), regions) == persistence_domain::cpu_cache);
    CHECK(regions == 3);
    const std::string mixed = fs.stacked("dm-5", {p1, p2});
    CHECK(domain_behind(fs.stacked("md1", {mixed, p0}), regions) == persistence_domain::memory_controller);
    CHECK(regions == 3);
  }
  SECTION("end to end: a MAP_SYNC mapping over the stack gets byte only when every region is eADR") {
    temp_file f(mdtest::test_dir(), 4096);
    struct expectation {
      std::string dev;
      persistence_domain domain;
      granularity g;
    } const cases[] = {
        {fs.stacked("dm-6", {p0, p1}), persistence_domain::cpu_cache, granularity::byte},
        {fs.stacked("dm-7", {p0, p2}), persistence_domain::memory_controller, granularity::cache_line},
        {fs.stacked("dm-8", {p0, sda}), persistence_domain::unknown, granularity::cache_line},
    };
    for (const auto& c : cases) {
      INFO(c.dev);
      sysfs_redirect r;
      r.target = c.dev;
      r.emulate_map_sync();
      scoped_syscall_interposer scope(r);
      auto m = direct_mapping::map(f.fd(), 0, 4096);
      REQUIRE(m);
      REQUIRE(m.value().mode() == map_mode::sync);
      CHECK(m.value().domain() == c.domain);
      CHECK(m.value().store_granularity() == c.g);
    }
  }
}

// ---------------------------------------------------------------------------
// iomap_seal: "Free space is checked first; ENOSPC midway leaves the file's
// size and every existing byte unchanged."

TEST_CASE("claims: seal checks free space first: no allocation, size or data change is attempted",
          "[claims][seal][space]") {
  temp_file f(mdtest::test_dir(), 4 * MiB);
  const std::string data(MiB, 'F');
  REQUIRE(::pwrite(f.fd(), data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  REQUIRE(::fsync(f.fd()) == 0);
  const std::uint64_t blocks = file_blocks(f.fd());
  change_counter c;
  c.no_free_space = true;  // statfs says the file system is full
  {
    scoped_syscall_interposer scope(c);
    auto s = iomap_seal::acquire(f.fd(), 0, 0);
    if (!s && s.error() == errc::block_map_unverifiable) {
      WARN("skipped: the test directory's file system has no FIEMAP, so no stabilised seal: " << why_text());
      return;
    }
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::error_code(ENOSPC, std::system_category()));
    const std::string d = why_text();
    INFO(d);
    CHECK(d.find("nothing was changed") != std::string::npos);
  }
  CHECK(c.fallocates == 0);
  CHECK(c.ftruncates == 0);
  CHECK(c.pwrites == 0);
  CHECK(c.writable_file_mmaps == 0);
  CHECK(file_blocks(f.fd()) == blocks);  // the holes are still holes
  mdtest::check_file_holds(f.fd(), data + std::string(3 * MiB, '\0'));
}

TEST_CASE("claims: on a full loop-mounted ext4, seal and seal with extend are refused before any change",
          "[claims][seal][space][loopfs]") {
  std::string why;
  mdtest::loopfs_options o;
  o.size = 32 * MiB;
  auto fs = mdtest::loopfs::create(o, why);
  if (!fs) {
    WARN("skipped: " << why);
    return;
  }
  const std::string path = fs->path() + "/file";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  const std::string data(MiB, 'E');
  REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  REQUIRE(::fsync(fd) == 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(8 * MiB)) == 0);  // 7 MiB of holes
  auto filler = fill(fs->path());
  const std::uint64_t blocks = file_blocks(fd);
  SECTION("the whole file") {
    change_counter c;
    scoped_syscall_interposer scope(c);
    auto s = iomap_seal::acquire(fd, 0, 0);
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::error_code(ENOSPC, std::system_category()));
    CHECK(c.changes() == 0);
    CHECK(file_size(fd) == 8 * MiB);
  }
  SECTION("extend past EOF") {
    REQUIRE(::ftruncate(fd, static_cast<off_t>(MiB)) == 0);
    change_counter c;
    scoped_syscall_interposer scope(c);
    seal_options grow;
    grow.extend = true;
    auto s = iomap_seal::acquire(fd, 0, 8 * MiB, grow);
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::error_code(ENOSPC, std::system_category()));
    CHECK(c.changes() == 0);
    CHECK(file_size(fd) == MiB);
  }
  CHECK(file_blocks(fd) <= blocks);
  CHECK((pread_all(fd, MiB) == data));
  ::close(fd);
}

// ---------------------------------------------------------------------------
// "A write needing a block-map change raises SIGBUS | Writes never need one
// after stabilising": stores into a sealed range on a full file system.

namespace {
// Stores `n` bytes through a fresh shared mapping of `fd` in a child; its wait status.
int store_in_child(int fd, std::size_t n, char byte) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(60);  // anti-hang only
    ::signal(SIGBUS, SIG_DFL);
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) ::_exit(3);
    std::memset(p, byte, n);
    ::_exit(::msync(p, n, MS_SYNC) == 0 ? 0 : 4);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}
}  // namespace

TEST_CASE("claims: the sealed range never meets ENOSPC-SIGBUS on a full file system", "[claims][seal][loopfs]") {
  std::string why;
  mdtest::loopfs_options o;
  o.size = 32 * MiB;
  auto fs = mdtest::loopfs::create(o, why);
  if (!fs) {
    WARN("skipped: " << why);
    return;
  }
  const std::size_t n = 4 * MiB;
  const std::string sealed_path = fs->path() + "/sealed", plain_path = fs->path() + "/plain";
  const int sealed = ::open(sealed_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  const int plain = ::open(plain_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(sealed >= 0);
  REQUIRE(plain >= 0);
  REQUIRE(::ftruncate(sealed, static_cast<off_t>(n)) == 0);  // all holes
  REQUIRE(::ftruncate(plain, static_cast<off_t>(n)) == 0);
  auto seal = iomap_seal::acquire(sealed, 0, n);
  if (!seal && seal.error() == errc::block_map_unverifiable) {
    WARN("skipped: loop ext4 gives no verifiable block map here: " << why_text());
    ::close(sealed);
    ::close(plain);
    return;
  }
  REQUIRE(seal);
  {
    auto filler = fill(fs->path());
    // Control: the same stores into holes do meet ENOSPC and SIGBUS, so this test can fail.
    const int control = store_in_child(plain, n, 'c');
    CHECK(WIFSIGNALED(control));
    if (WIFSIGNALED(control)) CHECK(WTERMSIG(control) == SIGBUS);
    const int status = store_in_child(sealed, n, 's');
    INFO("wait status " << status);
    CHECK(WIFEXITED(status));
    if (WIFEXITED(status)) CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK((pread_all(sealed, n) == std::string(n, 's')));
  CHECK(seal.value().verify());
  REQUIRE(seal.value().release());
  ::close(sealed);
  ::close(plain);
}

// ---------------------------------------------------------------------------
// repair: "where the kernel cannot clear poison ... it says so" (media_error).
// QEMU's NFIT pmem returns EFAULT from the recovery write, other drivers EIO.

TEST_CASE("claims: repair maps a pwrite that cannot clear poison (EIO, EFAULT) to media_error naming the offset",
          "[claims][repair]") {
  const std::size_t p = page();
  temp_file f(mdtest::test_dir(), 6 * p);
  const std::string before(6 * p, 'o');
  REQUIRE(::pwrite(f.fd(), before.data(), before.size(), 0) == static_cast<ssize_t>(before.size()));
  // Mapped at file offset p: the error's offset is relative to the mapping, the detail names the file offset.
  auto r = direct_mapping::map(f.fd(), p, 4 * p, mdtest::shared_only());
  REQUIRE(r);
  direct_mapping& m = r.value();
  const std::vector<char> repl(p, 'R');
  for (const int e : {EIO, EFAULT}) {
    INFO(mapdirect::detail::errno_name(e));
    struct refusing_write : syscall_interposer {
      int error = 0, calls = 0;
      ssize_t pwrite(int, const void*, std::size_t, off_t) noexcept override {
        ++calls;
        errno = error;
        return -1;
      }
    } w;
    w.error = e;
    scoped_syscall_interposer scope(w);
    auto fixed = m.repair(2 * p, repl);
    REQUIRE_FALSE(fixed);
    CHECK(w.calls == 1);
    CHECK(fixed.error() == errc::media_error);
    CHECK(fixed.error().offset() == 2 * p);
    CHECK(fixed.error().length() == p);
    const std::string d = why_text();
    INFO(d);
    CHECK(d.find("file offset " + std::to_string(3 * p)) != std::string::npos);
    CHECK(d.find(mapdirect::detail::errno_name(e)) != std::string::npos);
    CHECK(d.find("could not clear the poison") != std::string::npos);
  }
  CHECK(f.read_all() == before);
}
