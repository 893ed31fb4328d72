// map_mode::direct on an emulated kernel carrying the MAP_DIRECT series.
// This binary is built with MAPDIRECT_MAP_DIRECT_FLAG=0x400000, a value no
// mainline mmap flag uses, so only the seam can accept it.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

using namespace mapdirect;
using mdtest::recording_interposer;
using mdtest::temp_file;

static_assert(MAPDIRECT_MAP_DIRECT_FLAG == 0x400000, "built for the emulated MAP_DIRECT kernel");

namespace {
constexpr int direct_flags = MAP_SHARED_VALIDATE | MAPDIRECT_MAP_DIRECT_FLAG;
constexpr int sync_flags = MAP_SHARED_VALIDATE | MAP_SYNC;
}  // namespace

TEST_CASE("direct: MAP_DIRECT accepted gives direct mode", "[direct][seam]") {
  temp_file f(mdtest::test_dir(), 4u << 20);
  recording_interposer rec;
  rec.on_file_mmap = [](int flags) { return flags == direct_flags ? 0 : -1; };
  {
    scoped_syscall_interposer guard(rec);
    auto m = direct_mapping::map(f.fd(), 0, 4u << 20);
    REQUIRE(m);
    CHECK(m.value().mode() == map_mode::direct);
    CHECK(m.value().store_granularity() == granularity::cache_line);
    CHECK(m.value().describe() == "direct: ok\n");
    CHECK(reinterpret_cast<std::uintptr_t>(m.value().data()) % (2u << 20) == 0);
    REQUIRE(m.value().copy_persist(123, "direct", 6));
    CHECK(rec.msyncs.empty());
    auto r = probe(f.fd());
    REQUIRE(r);
    CHECK(r.value().map_direct_configured);
    CHECK(r.value().mode == map_mode::direct);
  }
  CHECK(rec.bytes_still_mapped() == 0);
}

TEST_CASE("direct: refusals that mean 'not offered here' step down to sync, then shared", "[direct][seam]") {
  for (int e : {EOPNOTSUPP, EINVAL, EPERM, ENODEV}) {
    INFO("errno " << e);
    temp_file f(mdtest::test_dir(), 8192);
    recording_interposer rec;
    rec.on_file_mmap = [e](int flags) { return flags == direct_flags ? e : flags == sync_flags ? 0 : -1; };
    scoped_syscall_interposer guard(rec);
    auto m = direct_mapping::map(f.fd(), 0, 8192);
    REQUIRE(m);
    CHECK(m.value().mode() == map_mode::sync);
    CHECK(m.value().describe().rfind(std::string("direct: ") + detail::errno_name(e), 0) == 0);
    CHECK(m.value().describe().find("sync: ok") != std::string::npos);
  }
  temp_file f(mdtest::test_dir(), 8192);
  recording_interposer rec;
  rec.on_file_mmap = [](int flags) { return flags == direct_flags || flags == sync_flags ? EOPNOTSUPP : -1; };
  scoped_syscall_interposer guard(rec);
  auto m = direct_mapping::map(f.fd(), 0, 8192);
  REQUIRE(m);
  CHECK(m.value().mode() == map_mode::shared);
  CHECK(m.value().store_granularity() == granularity::page);
  map_options only_direct;
  only_direct.weakest = map_mode::direct;
  auto d = direct_mapping::map(f.fd(), 0, 8192, only_direct);
  REQUIRE_FALSE(d);
  CHECK(d.error() == errc::mode_unavailable);
  CHECK(std::string(last_error_detail()).find("direct: EOPNOTSUPP (file system does not support MAP_DIRECT)") !=
        std::string::npos);
}

TEST_CASE("direct: ETXTBSY is errc::sealed, EACCES and ENOMEM are real errors", "[direct][seam]") {
  struct {
    int e;
    std::error_code expect;
    const char* needle;
  } const cases[] = {
      {ETXTBSY, make_error_code(errc::sealed), "block map is sealed or busy"},
      {EACCES, std::error_code(EACCES, std::system_category()), "MAP_DIRECT needs a writable mapping"},
      {ENOMEM, std::error_code(ENOMEM, std::system_category()), "out of memory"},
  };
  for (const auto& c : cases) {
    INFO("errno " << c.e);
    temp_file f(mdtest::test_dir(), 3u << 20);
    recording_interposer rec;
    const int e = c.e;
    rec.on_file_mmap = [e](int flags) { return flags == direct_flags ? e : -1; };
    {
      scoped_syscall_interposer guard(rec);
      auto m = direct_mapping::map(f.fd(), 0, 3u << 20);
      REQUIRE_FALSE(m);
      CHECK(m.error() == c.expect);
      CHECK(std::string(last_error_detail()).find(c.needle) != std::string::npos);
      // No silent fallback after a real error.
      for (const auto& call : rec.mmaps)
        if (call.prot != PROT_NONE) CHECK((call.flags & ~MAP_FIXED) == direct_flags);
    }
    CHECK(rec.bytes_still_mapped() == 0);
  }
}
