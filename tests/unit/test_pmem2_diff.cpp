// Differential test against Debian's libpmem2: for the same file, both
// libraries must arrive at the same store granularity.
#if defined(MAPDIRECT_TEST_PMEM2)
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <libpmem2.h>

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

// Maps fd with libpmem2 accepting any granularity; nullopt if it cannot.
std::optional<granularity> pmem2_granularity_of(int fd, std::string& why) {
  pmem2_config* cfg = nullptr;
  pmem2_source* src = nullptr;
  pmem2_map* map = nullptr;
  std::optional<granularity> out;
  if (pmem2_config_new(&cfg) == 0 && pmem2_source_from_fd(&src, fd) == 0 &&
      pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) == 0) {
    if (pmem2_map_new(&map, cfg, src) == 0) {
      out = from_pmem2(pmem2_map_get_store_granularity(map));
      pmem2_map_delete(&map);
    } else {
      why = pmem2_errormsg();
    }
  } else {
    why = pmem2_errormsg();
  }
  if (src) pmem2_source_delete(&src);
  if (cfg) pmem2_config_delete(&cfg);
  return out;
}
}  // namespace

TEST_CASE("differential: the same store granularity as libpmem2 for the same file", "[pmem2]") {
  std::vector<std::string> dirs{mdtest::test_dir()};
  if (::access("/dev/shm", W_OK) == 0) dirs.emplace_back("/dev/shm");
  for (const auto& dir : dirs) {
    for (std::size_t size : {std::size_t{4096}, std::size_t{4} << 20}) {
      INFO(dir << " size " << size);
      mdtest::temp_file f(dir, size);
      std::string why;
      const auto theirs = pmem2_granularity_of(f.fd(), why);
      if (!theirs) {
        WARN("skipped for " << dir << ": libpmem2 cannot map it: " << why);
        continue;
      }
      auto ours = direct_mapping::map(f.fd(), 0, size);
      REQUIRE(ours);
      CHECK(to_string(ours.value().store_granularity()) == std::string(to_string(*theirs)));
    }
  }
}
#endif
