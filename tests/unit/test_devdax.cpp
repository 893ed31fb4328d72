// Device DAX (/dev/daxX.Y): size and alignment from sysfs, mode sync without
// MAP_SYNC, granularity from the region, grow/shrink/seal/repair refused.
// On the host a fake sysfs tree (tests/support/fake_sysfs.hpp) makes /dev/zero
// (a character device that MAP_SHARED maps) look like a device DAX; the VM
// tier's devdax configuration runs the same tests on a real one when
// MAPDIRECT_TEST_DEVDAX names it.
#include "catch.hpp"
#include "fake_sysfs.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

using namespace mapdirect;

namespace {
constexpr std::uint64_t mib = 1024 * 1024;

struct zero_device {
  int fd = -1;
  dev_t rdev = 0;
  explicit zero_device(int flags = O_RDWR) {
    fd = ::open("/dev/zero", flags | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) std::abort();
    rdev = st.st_rdev;
  }
  ~zero_device() { ::close(fd); }
};
}  // namespace

TEST_CASE("device DAX: a character device that is not on the dax bus is refused", "[devdax]") {
  mdtest::fake_sysfs sys;  // empty tree: /sys/dev/char/1:5 does not exist
  scoped_syscall_interposer on(sys);
  zero_device z;
  auto m = direct_mapping::map(z.fd, 0, 4096);
  REQUIRE_FALSE(m);
  CHECK(m.error() == errc::invalid_argument);
  CHECK(std::string(last_error_detail()).find("not a device DAX") != std::string::npos);
}

TEST_CASE("device DAX: size and alignment from sysfs, mode sync, granularity from the region", "[devdax]") {
  mdtest::fake_sysfs sys;
  zero_device z;
  const char* domain = GENERATE("memory_controller", "cpu_cache");
  mdtest::fake_devdax(sys, z.rdev, 8 * mib, 2 * mib, domain);
  scoped_syscall_interposer on(sys);

  auto m = direct_mapping::map(z.fd, 0, 0);  // whole device: st_size is 0, the size comes from sysfs
  INFO(last_error_detail());
  REQUIRE(m);
  direct_mapping& d = m.value();
  CHECK(d.device_dax());
  CHECK(d.size() == 8 * mib);
  CHECK(d.mode() == map_mode::sync);
  CHECK(d.store_granularity() == (std::strcmp(domain, "cpu_cache") == 0 ? granularity::byte : granularity::cache_line));
  CHECK(d.domain() == (std::strcmp(domain, "cpu_cache") == 0 ? persistence_domain::cpu_cache
                                                             : persistence_domain::memory_controller));
  const std::string ladder = d.describe();
  CHECK(ladder.find("direct: skipped (not applicable: device DAX") != std::string::npos);
  CHECK(ladder.find("sync: ok (device DAX") != std::string::npos);
  // Persist is a CPU flush (no msync), guarded access works.
  REQUIRE(d.copy_persist(4096, "hello", 5));
  char back[5] = {};
  REQUIRE(d.read(4096, back, 5));
  CHECK(std::memcmp(back, "hello", 5) == 0);
  REQUIRE(d.write(2 * mib, "x", 1));
  REQUIRE(d.persist(2 * mib, 1));
  REQUIRE(d.drain());
}

TEST_CASE("device DAX: offsets and lengths must respect the align attribute", "[devdax]") {
  mdtest::fake_sysfs sys;
  zero_device z;
  mdtest::fake_devdax(sys, z.rdev, 8 * mib, 2 * mib);
  scoped_syscall_interposer on(sys);

  auto off = direct_mapping::map(z.fd, 4096, 2 * mib);
  REQUIRE_FALSE(off);
  CHECK(off.error() == errc::misaligned_offset);
  CHECK(std::string(last_error_detail()).find("alignment 2097152") != std::string::npos);

  auto len = direct_mapping::map(z.fd, 0, 3 * mib);
  REQUIRE_FALSE(len);
  CHECK(len.error() == errc::invalid_argument);
  CHECK(std::string(last_error_detail()).find("not a multiple of its alignment") != std::string::npos);

  auto past = direct_mapping::map(z.fd, 6 * mib, 4 * mib);
  REQUIRE_FALSE(past);
  CHECK(past.error() == errc::beyond_eof);
  auto at_end = direct_mapping::map(z.fd, 8 * mib, 0);
  REQUIRE_FALSE(at_end);
  CHECK(at_end.error() == errc::beyond_eof);

  auto ok = direct_mapping::map(z.fd, 2 * mib, 4 * mib);
  INFO(last_error_detail());
  REQUIRE(ok);
  CHECK(ok.value().file_offset() == 2 * mib);
  CHECK(ok.value().size() == 4 * mib);
}

TEST_CASE("device DAX: grow, shrink, seal, reserve and repair are refused with a reason", "[devdax]") {
  mdtest::fake_sysfs sys;
  zero_device z;
  mdtest::fake_devdax(sys, z.rdev, 8 * mib, 2 * mib);
  scoped_syscall_interposer on(sys);

  map_options sealed;
  sealed.seal = seal_options{};
  auto s = direct_mapping::map(z.fd, 0, 2 * mib, sealed);
  REQUIRE_FALSE(s);
  CHECK(s.error() == errc::invalid_argument);
  CHECK(std::string(last_error_detail()).find("no block map to seal") != std::string::npos);

  map_options reserve;
  reserve.reserve = 4 * mib;
  auto r = direct_mapping::map(z.fd, 0, 2 * mib, reserve);
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::invalid_argument);

  auto m = direct_mapping::map(z.fd, 0, 4 * mib);
  REQUIRE(m);
  auto g = m.value().grow(6 * mib);
  REQUIRE_FALSE(g);
  CHECK(g.error() == errc::invalid_argument);
  CHECK(std::string(last_error_detail()).find("device DAX") != std::string::npos);
  auto sh = m.value().shrink(2 * mib);
  REQUIRE_FALSE(sh);
  CHECK(sh.error() == errc::invalid_argument);
  std::vector<char> page(4096, 'r');
  auto rep = m.value().repair(0, page.data(), page.size());
  REQUIRE_FALSE(rep);
  CHECK(rep.error().code() == errc::invalid_argument);
  CHECK(m.value().size() == 4 * mib);
}

TEST_CASE("device DAX: read-only mapping from an O_RDONLY descriptor", "[devdax]") {
  mdtest::fake_sysfs sys;
  zero_device z(O_RDONLY);
  mdtest::fake_devdax(sys, z.rdev, 4 * mib, 2 * mib);
  scoped_syscall_interposer on(sys);
  map_options o;
  o.access = map_access::read_only;
  auto m = direct_mapping::map(z.fd, 0, 0, o);
  INFO(last_error_detail());
  REQUIRE(m);
  CHECK(m.value().device_dax());
  CHECK(m.value().access() == map_access::read_only);
  char b = 1;
  REQUIRE(m.value().read(0, &b, 1));
  auto p = m.value().persist(0, 1);
  REQUIRE_FALSE(p);
  CHECK(p.error() == errc::read_only);
}

TEST_CASE("device DAX: probe reports it", "[devdax]") {
  mdtest::fake_sysfs sys;
  zero_device z;
  mdtest::fake_devdax(sys, z.rdev, 8 * mib, 2 * mib, "cpu_cache");
  scoped_syscall_interposer on(sys);
  auto r = probe("/dev/zero");
  INFO(last_error_detail());
  REQUIRE(r);
  CHECK(r.value().device_dax);
  CHECK(r.value().file_system == "device_dax");
  CHECK(r.value().device_size == 8 * mib);
  CHECK(r.value().device_align == 2 * mib);
  CHECK(r.value().mode == map_mode::sync);
  CHECK(r.value().mode_known);
  CHECK(r.value().store_granularity == granularity::byte);
  CHECK(r.value().persistence == persistence_domain::cpu_cache);
}

// The VM tier's devdax configuration: the real device named by MAPDIRECT_TEST_DEVDAX.
TEST_CASE("device DAX: the real device of the VM tier", "[devdax]") {
  const auto path = mdtest::expected("MAPDIRECT_TEST_DEVDAX");
  if (!path) {
    WARN("skipped: no device DAX here (MAPDIRECT_TEST_DEVDAX unset; the VM tier's devdax configuration sets it)");
    return;
  }
  const int fd = ::open(path->c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  auto pr = probe(path->c_str());
  INFO(last_error_detail());
  REQUIRE(pr);
  CHECK(pr.value().device_dax);
  const std::uint64_t align = pr.value().device_align;
  REQUIRE(align >= 4096);
  auto m = direct_mapping::map(fd, 0, static_cast<std::size_t>(align));
  INFO(last_error_detail());
  REQUIRE(m);
  CHECK(m.value().device_dax());
  CHECK(m.value().mode() == map_mode::sync);
  if (const auto g = mdtest::expected("MAPDIRECT_EXPECT_GRANULARITY"))
    CHECK(to_string(m.value().store_granularity()) == *g);
  REQUIRE(m.value().copy_persist(64, "devdax", 6));
  char back[6] = {};
  REQUIRE(m.value().read(64, back, 6));
  CHECK(std::memcmp(back, "devdax", 6) == 0);
  // The region's bad-block list, placed in device offsets (needs root for
  // the physical addresses; the VM guest is root). None are planted here.
  auto bb = list_bad_blocks(fd);
  INFO(last_error_detail());
  REQUIRE(bb);
  INFO(bb.value().source);
  CHECK(bb.value().known);
  CHECK(bb.value().ranges.empty());
  // The kernel itself refuses a misaligned mapping; mapdirect says so first.
  if (align > 4096) {
    auto bad = direct_mapping::map(fd, 4096, static_cast<std::size_t>(align));
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == errc::misaligned_offset);
  }
  ::close(fd);
}
