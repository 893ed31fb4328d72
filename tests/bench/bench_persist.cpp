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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
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

// One page of slack: the misaligned rows copy kMaxCopy bytes to dst + 7.
buffer& src_buf() {
  static buffer b(kMaxCopy + 4096);
  return b;
}
buffer& dst_buf() {
  static buffer b(kMaxCopy + 4096);
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

// ---- Cold-buffer and misaligned rows: own interleaved harness ----
// `bench_persist --cold_ratios[=ROUNDS] [--cold_procs=N]` runs this instead of Google
// Benchmark and prints a markdown table. How buffers are chosen:
//  - hot: the same source and destination every call (src_buf/dst_buf), as
//    the Google Benchmark rows above;
//  - cold: sources rotate through one 64 MiB arena and destinations through
//    another; call k starts at line ((k * 1000003) mod slots) of each arena
//    (slots = lines that leave room for the copy), so consecutive calls hit
//    unrelated lines (no prefetcher streak) and a line comes back only after
//    the whole arena has been walked: what a log or page write meets;
//  - misaligned: destination + 7 bytes (source line-aligned).
// Each round times a batch of mapdirect calls (memcpy_flush/memset_flush +
// drain), a batch of libpmem calls (pmem_memcpy_persist/pmem_memset_persist)
// and a batch of plain memcpy/memset on the same kind of buffers (the
// ceiling: no flush, no fence), the order of the first two alternating per
// round. Reported: the median over rounds of the per-round ratio
// mapdirect/libpmem, its quartiles, and the median GB/s of each.
constexpr std::size_t kArena = std::size_t{64} << 20;

buffer& src_arena() {
  static buffer b(kArena);
  return b;
}
buffer& dst_arena() {
  static buffer b(kArena);
  return b;
}

struct ratio_case {
  bool copy;
  std::size_t n;
  std::size_t misalign;
  bool cold;
};

struct cursor {
  std::size_t k = 0;
  std::size_t slots = 1;
  char* at(char* base, std::size_t salt) const { return base + ((k * 1000003u + salt) % slots) * 64; }
};

enum class who { mapdirect, pmem, plain };

// Thread CPU time: on a loaded machine a batch that is preempted would
// otherwise carry the other processes' time into its ratio.
double thread_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// One untimed call first, then `iters` timed ones: every batch starts from the
// cache state its own method leaves (what Google Benchmark's repeated calls
// measure), not the one the previous batch left. Without it the first batch of
// a round on hot buffers met destination lines the plain memcpy had just made
// dirty in the cache, the second found them written back, and the order
// (alternating per round) decided a 1 MiB row's ratio (0.55 or 1.5).
double run_batch(const ratio_case& c, who w, std::size_t iters, cursor& cur) {
  double t0 = 0;
  for (std::size_t i = 0; i <= iters; ++i, ++cur.k) {
    if (i == 1) t0 = thread_ns();
    char* d;
    const char* s;
    if (c.cold) {
      d = cur.at(dst_arena().data, 0) + c.misalign;
      s = cur.at(src_arena().data, 7919);
    } else {
      d = dst_buf().data + c.misalign;
      s = src_buf().data;
    }
    switch (w) {
      case who::mapdirect:
        if (c.copy) md::memcpy_flush(d, s, c.n, kFlush);
        else md::memset_flush(d, 0x42, c.n, kFlush);
        md::drain(kFlush);
        break;
      case who::pmem:
        if (c.copy) pmem_memcpy_persist(d, s, c.n);
        else pmem_memset_persist(d, 0x42, c.n);
        break;
      case who::plain:
        if (c.copy) std::memcpy(d, s, c.n);
        else std::memset(d, 0x42, c.n);
        break;
    }
    benchmark::ClobberMemory();
  }
  return thread_ns() - t0;
}

// Distribution-free 95% confidence interval of the median: the order
// statistics at ranks n/2 -+ 0.98 sqrt(n) (normal approximation to the
// binomial). A ratio is "faster" when the whole interval is below 1.0,
// "SLOWER" when it is above, otherwise "parity" (no difference this many
// rounds can resolve).
std::pair<double, double> median_ci95(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const double n = static_cast<double>(v.size());
  const double half = 0.98 * std::sqrt(n);
  const auto lo = static_cast<std::size_t>(std::max(0.0, std::floor(n / 2 - half)));
  const auto hi = static_cast<std::size_t>(std::min(n - 1, std::ceil(n / 2 + half) - 1));
  return {v[std::min(lo, v.size() - 1)], v[hi]};
}

const char* verdict(std::pair<double, double> ci) {
  if (ci.second < 1.0) return "faster";
  if (ci.first > 1.0) return "SLOWER";
  return "parity";
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(pos);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

std::vector<ratio_case> ratio_cases() {
  const std::size_t sizes[] = {64, 128, 256, 1000, 4096, 16 << 10, 64 << 10, 1 << 20, 16 << 20};
  std::vector<ratio_case> cases;
  for (bool copy : {true, false})
    for (bool cold : {false, true})
      for (std::size_t mis : {std::size_t{0}, std::size_t{7}})
        for (std::size_t n : sizes)
          // MAPDIRECT_BENCH_ONLY=copy|fill|hot|cold keeps only those rows.
          if (const char* only = std::getenv("MAPDIRECT_BENCH_ONLY");
              !only || std::strcmp(only, copy ? "copy" : "fill") == 0 || std::strcmp(only, cold ? "cold" : "hot") == 0)
            cases.push_back({copy, n, mis, cold});
  return cases;
}

// Per case, per round: ratio, mapdirect B/ns, libpmem B/ns, plain B/ns.
constexpr std::size_t kSampleFields = 4;

// One process's rounds; samples appended in case-major order.
std::vector<double> measure_rounds(const std::vector<ratio_case>& cases, int rounds) {
  (void)src_arena();
  (void)dst_arena();
  std::vector<double> out(cases.size() * static_cast<std::size_t>(rounds) * kSampleFields);
  std::vector<std::size_t> iters(cases.size());
  cursor cur;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    // About 1 MiB per batch (at most 4096 calls), at least one call.
    iters[i] = std::max<std::size_t>(1, std::min<std::size_t>(4096, (std::size_t{1} << 20) / cases[i].n));
  }
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const ratio_case& c = cases[i];
      cur.slots = (kArena - c.n - 128) / 64;
      double tm, tp;
      if (r % 2 == 0) {
        tm = run_batch(c, who::mapdirect, iters[i], cur);
        tp = run_batch(c, who::pmem, iters[i], cur);
      } else {
        tp = run_batch(c, who::pmem, iters[i], cur);
        tm = run_batch(c, who::mapdirect, iters[i], cur);
      }
      const double tc = run_batch(c, who::plain, iters[i], cur);
      const double bytes = static_cast<double>(c.n * iters[i]);
      double* o = &out[(i * static_cast<std::size_t>(rounds) + static_cast<std::size_t>(r)) * kSampleFields];
      o[0] = tm / tp;
      o[1] = bytes / tm;
      o[2] = bytes / tp;
      o[3] = bytes / tc;
    }
  }
  return out;
}

// Runs measure_rounds in a child process and reads its samples back: each
// process gets its own arenas (fresh physical pages) and its own code and
// cache placement, which moved a row's median by up to 2% between processes
// on the measuring machine, more than the 95% interval of one process.
bool measure_in_child(const std::vector<ratio_case>& cases, int rounds, std::vector<double>& out) {
  int fds[2];
  if (::pipe(fds) != 0) return false;
  const pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    ::close(fds[0]);
    const std::vector<double> v = measure_rounds(cases, rounds);
    const char* p = reinterpret_cast<const char*>(v.data());
    std::size_t left = v.size() * sizeof(double);
    while (left > 0) {
      const ssize_t w = ::write(fds[1], p, left);
      if (w <= 0) ::_exit(1);
      p += w;
      left -= static_cast<std::size_t>(w);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  out.assign(cases.size() * static_cast<std::size_t>(rounds) * kSampleFields, 0.0);
  char* p = reinterpret_cast<char*>(out.data());
  std::size_t left = out.size() * sizeof(double);
  while (left > 0) {
    const ssize_t r = ::read(fds[0], p, left);
    if (r <= 0) break;
    p += r;
    left -= static_cast<std::size_t>(r);
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return left == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int cold_ratios(int rounds, int procs) {
  // MAPDIRECT_BENCH_NT_ISA=sse2|avx2|avx512 measures one variant instead of the dispatched one.
  if (const char* e = std::getenv("MAPDIRECT_BENCH_NT_ISA")) {
    bool ok = false;
    for (auto i : {md::detail::nt_isa::sse2, md::detail::nt_isa::avx2, md::detail::nt_isa::avx512})
      if (std::strcmp(e, md::detail::to_string(i)) == 0) ok = md::detail::force_nt_isa(i);
    if (!ok) {
      std::fprintf(stderr, "MAPDIRECT_BENCH_NT_ISA=%s: unknown or not supported here\n", e);
      return 2;
    }
  }
  const std::vector<ratio_case> cases = ratio_cases();
  struct samples {
    std::vector<double> ratio, md, pm, plain;
    std::vector<double> proc_median;  // each process's median ratio
  };
  std::vector<samples> res(cases.size());
  for (int p = 0; p < procs; ++p) {
    std::vector<double> v;
    if (!measure_in_child(cases, rounds, v)) {
      std::fprintf(stderr, "bench_persist: measuring process %d failed\n", p + 1);
      return 1;
    }
    for (std::size_t i = 0; i < cases.size(); ++i) {
      std::vector<double> mine;
      for (int r = 0; r < rounds; ++r) {
        const double* o = &v[(i * static_cast<std::size_t>(rounds) + static_cast<std::size_t>(r)) * kSampleFields];
        res[i].ratio.push_back(o[0]);
        res[i].md.push_back(o[1]);
        res[i].pm.push_back(o[2]);
        res[i].plain.push_back(o[3]);
        mine.push_back(o[0]);
      }
      res[i].proc_median.push_back(quantile(mine, 0.5));
    }
  }
  std::printf("cpu: %s; flush: %s; non-temporal variant: %s; libpmem API %d.%d; %d processes x %d rounds, thread CPU "
              "time\n\n",
              cpu_model().c_str(), md::to_string(kFlush), md::detail::to_string(md::detail::current_nt_isa()),
              PMEM_MAJOR_VERSION, PMEM_MINOR_VERSION, procs, rounds);
  std::printf("| op | buffers | dst | bytes | ratio (median) | 95%% CI of the median | verdict | median per process | "
              "mapdirect GB/s | libpmem GB/s | plain GB/s |\n");
  std::printf("|---|---|---|---:|---:|---:|:---|---:|---:|---:|---:|\n");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const ratio_case& c = cases[i];
    const auto ci = median_ci95(res[i].ratio);
    std::string per;
    for (double m : res[i].proc_median) {
      char b[16];
      std::snprintf(b, sizeof b, "%s%.3f", per.empty() ? "" : " / ", m);
      per += b;
    }
    std::printf("| %s | %s | %s | %zu | %.3f | %.3f-%.3f | %s | %s | %.2f | %.2f | %.2f |\n", c.copy ? "copy" : "fill",
                c.cold ? "cold" : "hot", c.misalign ? "+7" : "aligned", c.n, quantile(res[i].ratio, 0.5), ci.first,
                ci.second, verdict(ci), per.c_str(), quantile(res[i].md, 0.5), quantile(res[i].pm, 0.5),
                quantile(res[i].plain, 0.5));
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  // --cold_ratios[=ROUNDS] [--cold_procs=N]: ROUNDS rounds in each of N
  // processes (default 101 x 3), pooled.
  int cold_rounds = 0, cold_procs = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cold_ratios") cold_rounds = 101;
    if (a.rfind("--cold_ratios=", 0) == 0) cold_rounds = std::max(1, std::atoi(a.c_str() + 14));
    if (a.rfind("--cold_procs=", 0) == 0) cold_procs = std::max(1, std::atoi(a.c_str() + 13));
  }
  if (cold_rounds > 0) return cold_ratios(cold_rounds, cold_procs);
  // Touch the buffers now, outside any timed region.
  (void)src_buf();
  (void)dst_buf();
  register_all();
  benchmark::AddCustomContext("cpu_model", cpu_model());
  benchmark::AddCustomContext("mapdirect_flush", md::to_string(kFlush));
  benchmark::AddCustomContext("mapdirect_movnt_threshold", std::to_string(MAPDIRECT_MOVNT_THRESHOLD));
  benchmark::AddCustomContext("pmem_version",
                              std::to_string(PMEM_MAJOR_VERSION) + "." + std::to_string(PMEM_MINOR_VERSION));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
