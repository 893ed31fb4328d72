// Every kernel answer to the mapping ladder, injected through the syscall
// seam; persist's msync range; copy/fill correctness on every path.
#include "catch.hpp"
#include "rollback_check.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <dirent.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::recording_interposer;
using mdtest::temp_file;

namespace {
constexpr int sync_flags = MAP_SHARED_VALIDATE | MAP_SYNC;

struct ladder_case {
  int sync_errno;
  bool expect_ok;
  map_mode mode;
  const char* detail_needle;
};

std::string ladder_text(const direct_mapping& m) { return m.describe(); }

// The granularity an emulated MAP_SYNC mapping must get in the test
// directory, known without asking the library: byte where the environment
// (the VM tier) says the real mapping is byte-granular (an eADR region),
// cache_line where it names anything else, and cache_line on a host with no
// nd region at all (no persistence domain to read: the conservative answer).
// nullopt on a pmem host that did not say (the test then skips that check).
std::optional<granularity> expected_sync_granularity() {
  if (const auto g = mdtest::expected("MAPDIRECT_EXPECT_GRANULARITY"))
    return *g == "byte" ? granularity::byte : granularity::cache_line;
  bool regions = false;
  if (DIR* d = ::opendir("/sys/bus/nd/devices")) {
    while (const dirent* e = ::readdir(d))
      if (std::strncmp(e->d_name, "region", 6) == 0) regions = true;
    ::closedir(d);
  }
  if (regions) return std::nullopt;
  return granularity::cache_line;
}
}  // namespace

TEST_CASE("seam: MAP_SYNC accepted gives sync mode with cache-line (ADR) or byte (eADR) granularity", "[seam]") {
  for (std::size_t length : {std::size_t{8192}, std::size_t{4} << 20}) {
    temp_file f(mdtest::test_dir(), length);
    recording_interposer rec;
    rec.emulate_map_sync();
    {
      mapdirect::scoped_syscall_interposer guard(rec);
      auto m = direct_mapping::map(f.fd(), 0, length);
      REQUIRE(m);
      CHECK(m.value().mode() == map_mode::sync);
      // The domain comes from sysfs for the file's device: unknown off pmem
      // (be conservative: cache_line), the region's own value on pmem hosts.
      const auto want = expected_sync_granularity();
      if (want) {
        CHECK(m.value().store_granularity() == *want);
        if (*want == granularity::byte) CHECK(m.value().domain() == persistence_domain::cpu_cache);
        else CHECK(m.value().domain() != persistence_domain::cpu_cache);
      } else {
        WARN("skipped: the granularity check on a pmem host needs MAPDIRECT_EXPECT_GRANULARITY");
      }
      CHECK(ladder_text(m.value()) ==
            "direct: skipped (not configured: build does not define MAPDIRECT_MAP_DIRECT_FLAG (MAP_DIRECT is not "
            "in mainline))\nsync: ok\n");
      if (length >= (2u << 20)) CHECK(reinterpret_cast<std::uintptr_t>(m.value().data()) % (2u << 20) == 0);
      // Persist on the cache-line path makes no syscall.
      const auto msyncs = rec.msyncs.size();
      std::memset(m.value().data(), 7, 100);
      REQUIRE(m.value().persist(0, 100));
      CHECK(rec.msyncs.size() == msyncs);

      map_options eadr;
      eadr.domain = persistence_domain::cpu_cache;
      auto b = direct_mapping::map(f.fd(), 0, length, eadr);
      REQUIRE(b);
      CHECK(b.value().store_granularity() == granularity::byte);
      map_options strict;
      strict.coarsest = granularity::byte;
      auto c = direct_mapping::map(f.fd(), 0, length, strict);
      if (want == granularity::byte) {
        REQUIRE(c);  // eADR host: byte granularity is real
        CHECK(c.value().store_granularity() == granularity::byte);
      } else if (want) {
        REQUIRE_FALSE(c);
        CHECK(c.error() == errc::granularity_unavailable);
      }
    }
    CHECK(rec.bytes_still_mapped() == 0);
    // Never MAP_PRIVATE for the file, never MAP_SHARED|MAP_SYNC without VALIDATE.
    for (const auto& call : rec.mmaps) {
      if (call.prot == PROT_NONE) continue;
      CHECK((call.flags & MAP_TYPE) != MAP_PRIVATE);
      if (call.flags & MAP_SYNC) CHECK((call.flags & MAP_TYPE) == MAP_SHARED_VALIDATE);
    }
  }
}

TEST_CASE("seam: each answer to MAP_SHARED_VALIDATE|MAP_SYNC", "[seam]") {
  const ladder_case cases[] = {
      {EINVAL, true, map_mode::shared, "sync: EINVAL (kernel older than 4.15"},
      {EOPNOTSUPP, true, map_mode::shared, "sync: EOPNOTSUPP ("},
      {EACCES, false, map_mode::shared, "sync mapping failed with EACCES"},
      {ENOMEM, false, map_mode::shared, "sync mapping failed with ENOMEM"},
      {ETXTBSY, false, map_mode::shared, "sync mapping failed with ETXTBSY"},
      {EAGAIN, false, map_mode::shared, "sync mapping failed with EAGAIN"},
      {ENODEV, false, map_mode::shared, "sync mapping failed with ENODEV"},
  };
  for (const auto& c : cases) {
    for (std::size_t length : {std::size_t{4096}, std::size_t{3} << 20}) {
      INFO("errno " << c.sync_errno << " length " << length);
      temp_file f(mdtest::test_dir(), length);
      recording_interposer rec;
      const int e = c.sync_errno;
      rec.on_file_mmap = [e](int flags) { return flags == sync_flags ? e : -1; };
      {
        mapdirect::scoped_syscall_interposer guard(rec);
        auto m = direct_mapping::map(f.fd(), 0, length);
        const std::string detail = last_error_detail();
        INFO(detail);
        if (c.expect_ok) {
          REQUIRE(m);
          CHECK(m.value().mode() == c.mode);
          CHECK(m.value().store_granularity() == granularity::page);
          CHECK(ladder_text(m.value()).find(c.detail_needle) != std::string::npos);
          CHECK(ladder_text(m.value()).find("shared: ok") != std::string::npos);
        } else {
          REQUIRE_FALSE(m);
          CHECK(detail.find(c.detail_needle) != std::string::npos);
          if (e == ETXTBSY) {
            CHECK(m.error() == errc::sealed);
            CHECK(m.error() == std::errc::text_file_busy);
          } else {
            CHECK(m.error() == std::error_code(e, std::system_category()));
          }
          // A real error never falls back: no MAP_SHARED attempt was made.
          for (const auto& call : rec.mmaps) CHECK(!(call.prot != PROT_NONE && (call.flags & MAP_TYPE) == MAP_SHARED));
        }
      }
      CHECK(rec.bytes_still_mapped() == 0);
      CHECK_FALSE(mdtest::path_is_mapped(f.path()));
    }
  }
}

TEST_CASE("seam: weakest = sync with EOPNOTSUPP names the DAX cause", "[seam]") {
  temp_file f(mdtest::test_dir(), 4096);
  recording_interposer rec;
  rec.on_file_mmap = [](int flags) { return flags == sync_flags ? EOPNOTSUPP : -1; };
  mapdirect::scoped_syscall_interposer guard(rec);
  map_options o;
  o.weakest = map_mode::sync;
  auto m = direct_mapping::map(f.fd(), 0, 4096, o);
  REQUIRE_FALSE(m);
  CHECK(m.error() == errc::mode_unavailable);
  const std::string detail = last_error_detail();
  CHECK(detail.find("no mode from direct to sync") != std::string::npos);
  CHECK(detail.find("sync: EOPNOTSUPP") != std::string::npos);
}

TEST_CASE("seam: a failing shared mmap is a real error", "[seam]") {
  temp_file f(mdtest::test_dir(), 4096);
  recording_interposer rec;
  rec.on_file_mmap = [](int flags) { return flags == sync_flags ? EOPNOTSUPP : flags == MAP_SHARED ? ENOMEM : -1; };
  {
    mapdirect::scoped_syscall_interposer guard(rec);
    auto m = direct_mapping::map(f.fd(), 0, 4096);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::not_enough_memory);
    CHECK(std::string(last_error_detail()).find("shared mapping failed with ENOMEM") != std::string::npos);
  }
  CHECK(rec.bytes_still_mapped() == 0);
}

TEST_CASE("seam: persist msyncs exactly the page-rounded range", "[seam]") {
  temp_file f(mdtest::test_dir(), 5 * 4096);
  recording_interposer rec;
  mapdirect::scoped_syscall_interposer guard(rec);
  auto r = direct_mapping::map(f.fd(), 0, 5 * 4096, mdtest::shared_only());
  REQUIRE(r);
  auto& m = r.value();
  REQUIRE(m.store_granularity() == granularity::page);
  struct {
    std::size_t off, len, lo, hi;
  } const cases[] = {{4100, 10, 4096, 8192},
                     {4000, 200, 0, 8192},
                     {0, 1, 0, 4096},
                     {8192, 4096, 8192, 12288},
                     {3 * 4096 + 1, 4096 + 4095, 3 * 4096, 5 * 4096}};
  for (const auto& c : cases) {
    rec.msyncs.clear();
    REQUIRE(m.persist(c.off, c.len));
    REQUIRE(rec.msyncs.size() == 1);
    CHECK(rec.msyncs[0].addr == m.data() + c.lo);
    CHECK(rec.msyncs[0].len == c.hi - c.lo);
    CHECK(rec.msyncs[0].flags == MS_SYNC);
  }
  rec.msyncs.clear();
  CHECK(m.persist(100, 0));
  CHECK(rec.msyncs.empty());
  // flush() batches, drain() msyncs the union once.
  m.flush(4096 * 3 + 5, 10);
  m.flush(10, 10);
  CHECK(rec.msyncs.empty());
  REQUIRE(m.drain());
  REQUIRE(rec.msyncs.size() == 1);
  CHECK(rec.msyncs[0].addr == m.data());
  CHECK(rec.msyncs[0].len == 4 * 4096);
  rec.msyncs.clear();
  REQUIRE(m.drain());
  CHECK(rec.msyncs.empty());
}

TEST_CASE("seam: a failed msync is reported and sticks (fsyncgate)", "[seam]") {
  temp_file f(mdtest::test_dir(), 4096);
  recording_interposer rec;
  int next_errno = EIO;
  rec.on_msync = [&] { return std::exchange(next_errno, 0); };
  mapdirect::scoped_syscall_interposer guard(rec);
  auto r = direct_mapping::map(f.fd(), 0, 4096, mdtest::shared_only());
  REQUIRE(r);
  auto first = r.value().copy_persist(0, "abc", 3);
  REQUIRE_FALSE(first);
  CHECK(first.error() == std::errc::io_error);
  CHECK(std::string(last_error_detail()).find("msync") != std::string::npos);
  // The kernel would now report success, but the dirty pages may be gone.
  auto second = r.value().persist(0, 3);
  REQUIRE_FALSE(second);
  CHECK(second.error() == errc::durability_lost);
  r.value().clear_durability_error();
  CHECK(r.value().copy_persist(0, "abc", 3));
  // A non-durability error (EINVAL) does not stick.
  next_errno = ENOMEM;
  CHECK_FALSE(r.value().persist(0, 1));
  CHECK(r.value().persist(0, 1));
}

namespace {
// copy_persist/fill_persist must equal memcpy/memset for every size and
// alignment, on whichever path the mapping takes.
void check_copy_fill(direct_mapping& m, std::size_t max_size, std::size_t size_step) {
  std::vector<unsigned char> src(max_size + 128), expect(m.size());
  std::mt19937 rng(42);
  for (auto& b : src) b = static_cast<unsigned char>(rng());
  auto* base = reinterpret_cast<unsigned char*>(m.data());
  std::memset(base, 0, m.size());
  std::memset(expect.data(), 0, expect.size());
  bool all_ok = true;
  for (std::size_t n = 0; n <= max_size; n += size_step) {
    for (std::size_t align = 0; align < 64; ++align) {
      const std::size_t src_off = (n * 7 + align) % 64;
      if (!m.copy_persist(align, src.data() + src_off, n)) all_ok = false;
      std::memcpy(expect.data() + align, src.data() + src_off, n);
      if (std::memcmp(base, expect.data(), max_size + 128) != 0) {
        FAIL("copy_persist differs from memcpy at size " << n << " alignment " << align);
      }
      const int byte = static_cast<int>((n + align) & 0xff);
      const std::size_t fill_at = (align * 3) % 64;
      if (!m.fill_persist(fill_at, byte, n)) all_ok = false;
      std::memset(expect.data() + fill_at, byte, n);
      if (std::memcmp(base, expect.data(), max_size + 128) != 0) {
        FAIL("fill_persist differs from memset at size " << n << " alignment " << fill_at);
      }
    }
  }
  CHECK(all_ok);
}
}  // namespace

TEST_CASE("copy_persist/fill_persist equal memcpy/memset for sizes 0..8 KiB and alignments 0..63", "[persist]") {
  temp_file f(mdtest::test_dir(), 3 * 4096);
  SECTION("cache-line path with the CPU's flush instruction (MAP_SYNC emulated)") {
    recording_interposer rec;
    rec.emulate_map_sync();
    mapdirect::scoped_syscall_interposer guard(rec);
    map_options o;
    o.domain = persistence_domain::memory_controller;
    auto m = direct_mapping::map(f.fd(), 0, 3 * 4096, o);
    REQUIRE(m);
    REQUIRE(m.value().store_granularity() == granularity::cache_line);
    check_copy_fill(m.value(), 8192, 1);
  }
#if defined(MAPDIRECT_ARCH_X86_64)
  SECTION("every x86 flush instruction the CPU has") {
    recording_interposer rec;
    rec.emulate_map_sync();
    mapdirect::scoped_syscall_interposer guard(rec);
    for (auto fi : {flush_instruction::clflush, flush_instruction::clflushopt, flush_instruction::clwb}) {
      if (fi == flush_instruction::clwb && detect_flush_instruction() != flush_instruction::clwb) continue;
      if (fi == flush_instruction::clflushopt && detect_flush_instruction() == flush_instruction::clflush) continue;
      map_options o;
      o.flush = fi;
      o.domain = persistence_domain::memory_controller;
      o.movnt_threshold = 512;
      auto m = direct_mapping::map(f.fd(), 0, 3 * 4096, o);
      REQUIRE(m);
      CHECK(m.value().flush_with() == fi);
      check_copy_fill(m.value(), 8192, 61);
    }
  }
#endif
  SECTION("byte path (eADR emulated)") {
    recording_interposer rec;
    rec.emulate_map_sync();
    mapdirect::scoped_syscall_interposer guard(rec);
    map_options o;
    o.domain = persistence_domain::cpu_cache;
    auto m = direct_mapping::map(f.fd(), 0, 3 * 4096, o);
    REQUIRE(m);
    REQUIRE(m.value().store_granularity() == granularity::byte);
    check_copy_fill(m.value(), 8192, 13);
  }
  SECTION("page path (msync)") {
    temp_file shm(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : mdtest::test_dir(), 3 * 4096);
    auto m = direct_mapping::map(shm.fd(), 0, 3 * 4096, mdtest::shared_only());
    REQUIRE(m);
    REQUIRE(m.value().store_granularity() == granularity::page);
    check_copy_fill(m.value(), 8192, 127);
    CHECK(shm.read_all().size() == 3 * 4096);
  }
}

TEST_CASE("memcpy_flush/memset_flush on ordinary memory match memcpy/memset", "[persist]") {
  std::vector<unsigned char> dst(9000), ref(9000), src(9000);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 31 + 7);
  const auto fi = detect_flush_instruction();
  for (std::size_t n : {0u, 1u, 63u, 64u, 65u, 255u, 256u, 257u, 1000u, 4096u, 8191u}) {
    for (std::size_t a = 0; a < 64; a += 5) {
      std::fill(dst.begin(), dst.end(), 0xEE);
      std::fill(ref.begin(), ref.end(), 0xEE);
      memcpy_flush(dst.data() + a, src.data() + 3, n, fi, 128);
      drain(fi);
      std::memcpy(ref.data() + a, src.data() + 3, n);
      REQUIRE(dst == ref);
      memset_flush(dst.data() + a, 0x42, n, fi, 128);
      drain(fi);
      std::memset(ref.data() + a, 0x42, n);
      REQUIRE(dst == ref);
    }
  }
}

TEST_CASE("probe reports this host truthfully", "[probe]") {
  auto r = probe(mdtest::test_dir().c_str());
  REQUIRE(r);
  const auto& rep = r.value();
  CHECK(rep.directory);
  CHECK(rep.writable);
  CHECK(rep.mode_known);
  struct utsname u {};
  ::uname(&u);
  CHECK(rep.kernel_release == u.release);
  CHECK(rep.flush == detect_flush_instruction());
  const auto expect_mode = mdtest::expected("MAPDIRECT_EXPECT_MODE");
  CHECK(to_string(rep.mode) == (expect_mode ? *expect_mode : std::string("shared")));
  CHECK(rep.map_sync == (rep.mode == map_mode::sync));
  CHECK(rep.ladder.find("sync:") != std::string::npos);
  // A mapping made there must agree with the probe.
  temp_file f(mdtest::test_dir(), 4096);
  auto m = direct_mapping::map(f.fd(), 0, 4096);
  REQUIRE(m);
  CHECK(m.value().mode() == rep.mode);
  CHECK(m.value().store_granularity() == rep.store_granularity);
  auto missing = probe("/nonexistent/mapdirect");
  REQUIRE_FALSE(missing);
  CHECK(missing.error() == std::errc::no_such_file_or_directory);
}

TEST_CASE("probe through the seam: io_uring refused and MAP_SYNC accepted", "[probe][seam]") {
  struct no_uring : recording_interposer {
    long io_uring_setup(unsigned, void*) noexcept override {
      errno = ENOSYS;
      return -1;
    }
  } rec;
  rec.emulate_map_sync();
  mapdirect::scoped_syscall_interposer guard(rec);
  auto r = probe(mdtest::test_dir().c_str());
  REQUIRE(r);
  CHECK_FALSE(r.value().io_uring);
  CHECK(r.value().io_uring_detail.find("ENOSYS") != std::string::npos);
  CHECK(r.value().mode == map_mode::sync);
  CHECK(r.value().map_sync);
  if (const auto want = expected_sync_granularity()) CHECK(r.value().store_granularity == *want);
  else WARN("skipped: the granularity check on a pmem host needs MAPDIRECT_EXPECT_GRANULARITY");
}

TEST_CASE("seam: map(-1) is invalid_argument and makes no syscall", "[seam]") {
  recording_interposer rec;
  mapdirect::scoped_syscall_interposer guard(rec);
  auto m = direct_mapping::map(-1, 0, 4096);
  REQUIRE_FALSE(m);
  CHECK(m.error() == errc::invalid_argument);
  CHECK(std::string(last_error_detail()).find("negative file descriptor -1") != std::string::npos);
  CHECK(rec.mmaps.empty());
}

TEST_CASE("seam: when the mapping fails, open() removes only a file it created and never shrinks one",
          "[seam][mapping]") {
  // Every file mmap fails with ENOMEM on every host, so the rollback always runs.
  const std::string path = mdtest::private_dir() + "/mapdirect-seam-rollback";
  ::unlink(path.c_str());
  recording_interposer rec;
  rec.on_file_mmap = [](int) { return ENOMEM; };
  const mdtest::rollback_witness before;
  SECTION("a grown file is never shrunk back (another process may already map the new size)") {
    {
      temp_file old(mdtest::test_dir(), 3 * 4096 + 100);
      REQUIRE(::link(old.path().c_str(), path.c_str()) == 0);
    }
    mapdirect::scoped_syscall_interposer guard(rec);
    open_options g;
    g.size = 8 * 4096;
    g.grow = true;
    auto m = direct_mapping::open(path, g);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::not_enough_memory);
    mdtest::check_file_holds(path, std::string(8 * 4096, '\0'));
  }
  SECTION("a file open() created is removed") {
    mapdirect::scoped_syscall_interposer guard(rec);
    open_options g;
    g.create = true;
    g.size = 4096;
    auto m = direct_mapping::open(path, g);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::not_enough_memory);
    CHECK(::access(path.c_str(), F_OK) != 0);
    CHECK(errno == ENOENT);
  }
  before.check_nothing_left(rec, path);
  ::unlink(path.c_str());
}

TEST_CASE("seam: a seal whose range is still shared after stabilising fails with block_map_unstable", "[seam][seal]") {
  // FIEMAP answers as the kernel does, except that every extent stays
  // "shared" whatever the seal does to it: the verify pass after stabilising
  // must notice, and the seal must not be granted.
  struct always_shared : recording_interposer {
    int fiemaps = 0;
    int ioctl(int fd, unsigned long request, void* arg) noexcept override {
      const int r = recording_interposer::ioctl(fd, request, arg);
      if (r == 0 && request == FS_IOC_FIEMAP) {
        ++fiemaps;
        auto* fm = static_cast<struct fiemap*>(arg);
        for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) fm->fm_extents[i].fe_flags |= FIEMAP_EXTENT_SHARED;
      }
      return r;
    }
  } rec;
  temp_file f(mdtest::test_dir(), 0);
  const std::string data(64 * 1024, 'q');
  REQUIRE(::pwrite(f.fd(), data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  REQUIRE(::fsync(f.fd()) == 0);
  mapdirect::scoped_syscall_interposer guard(rec);
  auto s = iomap_seal::acquire(f.fd(), 0, data.size());
  const std::string detail = last_error_detail();
  INFO(detail);
  if (!s && s.error() == errc::block_map_unverifiable) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  REQUIRE_FALSE(s);
  CHECK(s.error() == errc::block_map_unstable);
  CHECK(detail.find("after stabilising") != std::string::npos);
  CHECK(rec.fiemaps >= 2);  // the scan before, and the verify pass after
  CHECK(f.read_all() == data);
}
