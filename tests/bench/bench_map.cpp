// SPDX-License-Identifier: MIT
// Map and unmap of a 1 GiB file: direct_mapping::map + close against
// pmem2_map_new + pmem2_map_delete, on the same file, in one process. Both
// walk the same ladder (MAP_SHARED_VALIDATE|MAP_SYNC, then MAP_SHARED) and
// place the mapping at an aligned address; neither touches the pages.
//
// The file lives in $MAPDIRECT_BENCH_DIR (default: $MAPDIRECT_TEST_DIR, then
// /tmp); point it at a DAX mount to measure the MAP_SYNC path.
#include <mapdirect/mapping.hpp>

#include <benchmark/benchmark.h>
#include <libpmem2.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace md = mapdirect;

namespace {

constexpr std::size_t kFileSize = std::size_t{1} << 30;

std::string bench_dir() {
  for (const char* var : {"MAPDIRECT_BENCH_DIR", "MAPDIRECT_TEST_DIR"})
    if (const char* v = std::getenv(var); v && *v) return v;
  return "/tmp";
}

// A 1 GiB file, allocated so both libraries map the same real blocks; removed at exit.
struct bench_file {
  bench_file() {
    path = bench_dir() + "/mapdirect-bench-map-XXXXXX";
    fd = ::mkstemp(path.data());
    if (fd < 0) {
      std::perror(("bench: mkstemp " + path).c_str());
      std::exit(1);
    }
    if (::posix_fallocate(fd, 0, static_cast<off_t>(kFileSize)) != 0 &&
        ::ftruncate(fd, static_cast<off_t>(kFileSize)) != 0) {
      std::perror("bench: sizing the file");
      std::exit(1);
    }
  }
  ~bench_file() {
    ::close(fd);
    ::unlink(path.c_str());
  }
  std::string path;
  int fd = -1;
};

bench_file& file() {
  static bench_file f;
  return f;
}

void map_mapdirect(benchmark::State& st) {
  const int fd = file().fd;
  md::map_mode mode = md::map_mode::shared;
  for (auto _ : st) {
    auto m = md::direct_mapping::map(fd, 0, kFileSize);
    if (!m) {
      st.SkipWithError(md::last_error_detail());
      return;
    }
    mode = m.value().mode();
    benchmark::DoNotOptimize(m.value().data());
    if (!m.value().close()) {
      st.SkipWithError("close failed");
      return;
    }
  }
  st.SetLabel(md::to_string(mode));
}

void map_pmem2(benchmark::State& st) {
  pmem2_source* src = nullptr;
  pmem2_config* cfg = nullptr;
  if (pmem2_source_from_fd(&src, file().fd) != 0 || pmem2_config_new(&cfg) != 0 ||
      pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) != 0) {
    st.SkipWithError(pmem2_errormsg());
    return;
  }
  for (auto _ : st) {
    pmem2_map* map = nullptr;
    if (pmem2_map_new(&map, cfg, src) != 0) {
      st.SkipWithError(pmem2_errormsg());
      break;
    }
    benchmark::DoNotOptimize(pmem2_map_get_address(map));
    if (pmem2_map_delete(&map) != 0) {
      st.SkipWithError(pmem2_errormsg());
      break;
    }
  }
  pmem2_config_delete(&cfg);
  pmem2_source_delete(&src);
}

// The minimum over repetitions: the least disturbed run on a shared machine.
double min_of(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }

}  // namespace

// Interleaved so drift of a shared machine hits both sides alike.
BENCHMARK(map_mapdirect)->Name("map_unmap/mapdirect/1073741824")->ComputeStatistics("min", min_of);
BENCHMARK(map_pmem2)->Name("map_unmap/pmem2/1073741824")->ComputeStatistics("min", min_of);
