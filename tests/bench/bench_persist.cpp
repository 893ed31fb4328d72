// SPDX-License-Identifier: MIT
// mapdirect's persistence primitives against libpmem, side by side in one
// process on the same buffers. Ordinary memory is enough: the flush and
// non-temporal store instructions execute (and cost) the same without pmem.
//
// Names are <operation>/<library>/<bytes>; tests/bench/run.sh pairs the
// libraries per size and reports ratios. Sizes are registered interleaved
// (mapdirect, then PMDK, for each size) so slow drift of a shared machine
// hits both sides alike.
#include <mapdirect/mapping.hpp>
#include <mapdirect/persist.hpp>

#include <benchmark/benchmark.h>
#include <libpmem.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace md = mapdirect;

namespace {

constexpr std::size_t kMaxCopy = std::size_t{16} << 20;

// Page-aligned anonymous memory, prefaulted so no benchmark pays for faults.
struct buffer {
  explicit buffer(std::size_t n) : size(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("bench: mmap");
      std::exit(1);
    }
    data = static_cast<char*>(p);
    std::memset(data, 0x5a, n);
  }
  ~buffer() { ::munmap(data, size); }
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  char* data;
  std::size_t size;
};

buffer& src_buf() {
  static buffer b(kMaxCopy);
  return b;
}
buffer& dst_buf() {
  static buffer b(kMaxCopy);
  return b;
}

const md::flush_instruction kFlush = md::detect_flush_instruction();

// Dirties every line of the range first: a persist after a store is what a
// storage engine does, and flushing clean lines would flatter both sides.
inline void dirty(char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; i += 64) p[i] = static_cast<char>(p[i] + 1);
  benchmark::ClobberMemory();
}

void persist_mapdirect(benchmark::State& st, std::size_t n) {
  char* p = dst_buf().data;
  for (auto _ : st) {
    dirty(p, n);
    md::flush_lines(p, n, kFlush);
    md::drain(kFlush);
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

void persist_pmem(benchmark::State& st, std::size_t n) {
  char* p = dst_buf().data;
  for (auto _ : st) {
    dirty(p, n);
    pmem_persist(p, n);
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

// 16 lines, one per 4 KiB page plus a skew, so no two share a page or set.
constexpr std::size_t kScattered = 16;
inline char* scattered_line(std::size_t i) { return dst_buf().data + i * 4096 + (i * 7 % 64) * 64; }

void scattered_mapdirect(benchmark::State& st) {
  for (auto _ : st) {
    for (std::size_t i = 0; i < kScattered; ++i) dirty(scattered_line(i), 64);
    for (std::size_t i = 0; i < kScattered; ++i) md::flush_lines(scattered_line(i), 64, kFlush);
    md::drain(kFlush);
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * kScattered * 64));
}

void scattered_pmem(benchmark::State& st) {
  for (auto _ : st) {
    for (std::size_t i = 0; i < kScattered; ++i) dirty(scattered_line(i), 64);
    for (std::size_t i = 0; i < kScattered; ++i) pmem_flush(scattered_line(i), 64);
    pmem_drain();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * kScattered * 64));
}

void copy_mapdirect(benchmark::State& st, std::size_t n) {
  char* d = dst_buf().data;
  const char* s = src_buf().data;
  for (auto _ : st) {
    md::memcpy_flush(d, s, n, kFlush);
    md::drain(kFlush);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

void copy_pmem(benchmark::State& st, std::size_t n) {
  char* d = dst_buf().data;
  const char* s = src_buf().data;
  for (auto _ : st) {
    pmem_memcpy_persist(d, s, n);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

void fill_mapdirect(benchmark::State& st, std::size_t n) {
  char* d = dst_buf().data;
  for (auto _ : st) {
    md::memset_flush(d, 0x42, n, kFlush);
    md::drain(kFlush);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

void fill_pmem(benchmark::State& st, std::size_t n) {
  char* d = dst_buf().data;
  for (auto _ : st) {
    pmem_memset_persist(d, 0x42, n);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

// direct_mapping::copy_persist itself (range check, granularity switch) on a
// cache-line-granular mapping. Such a mapping needs MAP_SYNC on DAX; without
// pmem we emulate the kernel through the syscall seam: MAP_SYNC requests are
// served as MAP_SHARED of the same memfd, so the instructions run on page-cache
// memory exactly as they would on pmem.
class emulated_map_sync final : public md::syscall_interposer {
 public:
  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
    if ((flags & MAP_SHARED_VALIDATE) == MAP_SHARED_VALIDATE && (flags & MAP_SYNC))
      flags = (flags & ~(MAP_SHARED_VALIDATE | MAP_SYNC)) | MAP_SHARED;
    return ::mmap(addr, len, prot, flags, fd, off);
  }
};

md::direct_mapping& emulated_mapping() {
  static md::direct_mapping m = [] {
    const int fd = ::memfd_create("mapdirect-bench", 0);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(kMaxCopy)) != 0) {
      std::perror("bench: memfd");
      std::exit(1);
    }
    emulated_map_sync emu;
    md::scoped_syscall_interposer guard(emu);
    md::map_options o;
    o.strongest = md::map_mode::sync;
    o.domain = md::persistence_domain::memory_controller;  // ADR: flush + fence, like pmem_persist
    o.populate = true;
    auto r = md::direct_mapping::map(fd, 0, kMaxCopy, o);
    ::close(fd);
    if (!r || r.value().store_granularity() != md::granularity::cache_line) {
      std::fprintf(stderr, "bench: emulated sync mapping failed: %s\n", md::last_error_detail());
      std::exit(1);
    }
    return std::move(r).value();
  }();
  return m;
}

void mapping_copy_persist(benchmark::State& st, std::size_t n) {
  md::direct_mapping& m = emulated_mapping();
  const char* s = src_buf().data;
  for (auto _ : st) {
    auto r = m.copy_persist(0, s, n);
    if (!r) {
      st.SkipWithError("copy_persist failed");
      break;
    }
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

void mapping_copy_pmem(benchmark::State& st, std::size_t n) {
  char* d = reinterpret_cast<char*>(emulated_mapping().data());
  const char* s = src_buf().data;
  for (auto _ : st) {
    pmem_memcpy_persist(d, s, n);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

std::string size_name(std::size_t n) { return std::to_string(n); }

// The minimum over repetitions: on a shared machine the intrinsic cost of an
// instruction sequence is best estimated by its least disturbed run.
double min_of(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }

void register_all() {
  auto RegisterBenchmark = [](const std::string& name, auto&&... args) {
    return benchmark::RegisterBenchmark(name.c_str(), args...)->ComputeStatistics("min", min_of);
  };
  for (std::size_t n : {std::size_t{64}, std::size_t{4096}}) {
    RegisterBenchmark((std::string("persist/mapdirect/") + size_name(n)), persist_mapdirect, n);
    RegisterBenchmark((std::string("persist/pmem/") + size_name(n)), persist_pmem, n);
  }
  RegisterBenchmark("scattered16/mapdirect/1024", scattered_mapdirect);
  RegisterBenchmark("scattered16/pmem/1024", scattered_pmem);
  const std::size_t sizes[] = {64, 256, 4096, 64 << 10, 1 << 20, 16 << 20};
  for (std::size_t n : sizes) {
    RegisterBenchmark((std::string("copy/mapdirect/") + size_name(n)), copy_mapdirect, n);
    RegisterBenchmark((std::string("copy/pmem/") + size_name(n)), copy_pmem, n);
  }
  for (std::size_t n : sizes) {
    RegisterBenchmark((std::string("fill/mapdirect/") + size_name(n)), fill_mapdirect, n);
    RegisterBenchmark((std::string("fill/pmem/") + size_name(n)), fill_pmem, n);
  }
  for (std::size_t n : sizes) {
    RegisterBenchmark((std::string("mapping_copy/mapdirect/") + size_name(n)), mapping_copy_persist, n);
    RegisterBenchmark((std::string("mapping_copy/pmem/") + size_name(n)), mapping_copy_pmem, n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Touch the buffers now, outside any timed region.
  (void)src_buf();
  (void)dst_buf();
  register_all();
  benchmark::AddCustomContext("cpu_model", cpu_model());
  benchmark::AddCustomContext("mapdirect_flush", md::to_string(kFlush));
  benchmark::AddCustomContext("mapdirect_movnt_threshold", std::to_string(MAPDIRECT_MOVNT_THRESHOLD));
  benchmark::AddCustomContext("pmem_version", std::to_string(PMEM_MAJOR_VERSION) + "." +
                                                   std::to_string(PMEM_MINOR_VERSION));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
