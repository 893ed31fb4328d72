// Differential test against Debian's libpmem2 (its own binary,
// mapdirect_tests_pmem2, linked dynamically so that the VM tier can carry the
// .so files into the guest). For the same file, and for each store
// granularity a caller can require (byte, cache_line, page), both libraries
// must accept or refuse alike, report the same granularity when they accept,
// and that granularity must be the one the environment expects
// (MAPDIRECT_EXPECT_GRANULARITY, set by the VM tier on DAX; "page" on a host
// with no pmem), so that neither library is the other's only oracle.
#if defined(MAPDIRECT_TEST_PMEM2)
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <libpmem2.h>

#include <dirent.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

using namespace mapdirect;

namespace {
granularity from_pmem2(pmem2_granularity g) {
  switch (g) {
    case PMEM2_GRANULARITY_BYTE: return granularity::byte;
    case PMEM2_GRANULARITY_CACHE_LINE: return granularity::cache_line;
    case PMEM2_GRANULARITY_PAGE: return granularity::page;
  }
  return granularity::page;
}

pmem2_granularity to_pmem2(granularity g) {
  switch (g) {
    case granularity::byte: return PMEM2_GRANULARITY_BYTE;
    case granularity::cache_line: return PMEM2_GRANULARITY_CACHE_LINE;
    case granularity::page: return PMEM2_GRANULARITY_PAGE;
  }
  return PMEM2_GRANULARITY_PAGE;
}

struct pmem2_answer {
  bool setup_ok = false;  // config and source could be made
  bool mapped = false;    // pmem2_map_new succeeded
  granularity got = granularity::page;
  int error = 0;  // pmem2_map_new's result when it refused
  std::string why;
};

// Maps fd with libpmem2 requiring at most `required`.
pmem2_answer pmem2_map_with(int fd, granularity required) {
  pmem2_answer a;
  pmem2_config* cfg = nullptr;
  pmem2_source* src = nullptr;
  pmem2_map* map = nullptr;
  if (pmem2_config_new(&cfg) == 0 && pmem2_source_from_fd(&src, fd) == 0 &&
      pmem2_config_set_required_store_granularity(cfg, to_pmem2(required)) == 0) {
    a.setup_ok = true;
    a.error = pmem2_map_new(&map, cfg, src);
    if (a.error == 0) {
      a.mapped = true;
      a.got = from_pmem2(pmem2_map_get_store_granularity(map));
      pmem2_map_delete(&map);
    } else {
      a.why = pmem2_errormsg();
    }
  } else {
    a.why = pmem2_errormsg();
  }
  if (src) pmem2_source_delete(&src);
  if (cfg) pmem2_config_delete(&cfg);
  return a;
}

// The granularity a real mapping must have in `dir`, known without either
// library: the VM tier's MAPDIRECT_EXPECT_GRANULARITY for the test directory;
// page anywhere on a host with no nd region (no DAX, so no MAP_SYNC) and on
// /dev/shm (tmpfs). nullopt: unknown (a pmem host that did not say).
std::optional<granularity> expected_granularity(const std::string& dir) {
  if (dir == "/dev/shm") return granularity::page;
  if (const auto g = mdtest::expected("MAPDIRECT_EXPECT_GRANULARITY")) {
    if (*g == "byte") return granularity::byte;
    if (*g == "cache_line") return granularity::cache_line;
    return granularity::page;
  }
  if (DIR* d = ::opendir("/sys/bus/nd/devices")) {
    bool regions = false;
    while (const dirent* e = ::readdir(d))
      if (std::strncmp(e->d_name, "region", 6) == 0) regions = true;
    ::closedir(d);
    if (regions) return std::nullopt;
  }
  return granularity::page;
}
}  // namespace

TEST_CASE("differential: libpmem2 and mapdirect accept, refuse and grade the same file alike, as expected", "[pmem2]") {
  std::vector<std::string> dirs{mdtest::test_dir()};
  if (::access("/dev/shm", W_OK) == 0) dirs.emplace_back("/dev/shm");
  std::size_t compared = 0;
  bool skipped = false;
  for (const auto& dir : dirs) {
    const auto want = expected_granularity(dir);
    if (!want) {
      WARN("skipped for " << dir << ": a pmem host needs MAPDIRECT_EXPECT_GRANULARITY to know what to expect");
      skipped = true;
      continue;
    }
    for (std::size_t size : {std::size_t{4096}, std::size_t{4} << 20}) {
      mdtest::temp_file f(dir, size);
      for (granularity required : {granularity::byte, granularity::cache_line, granularity::page}) {
        INFO(dir << " size " << size << " required " << to_string(required) << " expected " << to_string(*want));
        const auto theirs = pmem2_map_with(f.fd(), required);
        REQUIRE(theirs.setup_ok);
        map_options o;
        o.coarsest = required;
        auto ours = direct_mapping::map(f.fd(), 0, size, o);
        const bool fits = static_cast<int>(*want) <= static_cast<int>(required);
        INFO("libpmem2: " << (theirs.mapped ? to_string(theirs.got) : theirs.why.c_str()) << "; mapdirect: "
                          << (ours ? to_string(ours.value().store_granularity()) : last_error_detail()));
        // Both accept exactly when the expected granularity is fine enough.
        CHECK(theirs.mapped == fits);
        CHECK(static_cast<bool>(ours) == fits);
        if (fits) {
          REQUIRE(theirs.mapped);
          REQUIRE(ours);
          // As names, so that a log (the QEMU tier) shows which granularity was compared.
          CHECK(std::string(to_string(theirs.got)) == std::string(to_string(*want)));
          CHECK(std::string(to_string(ours.value().store_granularity())) == std::string(to_string(*want)));
        } else {
          CHECK(theirs.error == PMEM2_E_GRANULARITY_NOT_SUPPORTED);
          if (!ours) CHECK(ours.error() == errc::granularity_unavailable);
        }
        ++compared;
      }
    }
  }
  // Nothing compared without a printed skip would be a silent pass.
  CHECK((compared > 0 || skipped));
}
#endif
