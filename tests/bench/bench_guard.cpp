// SPDX-License-Identifier: MIT
// SIGBUS-safe copies out of a mapped file: mapdirect::guarded_copy against a
// plain memcpy (no protection) and libpmem2's pmem2_source_pread_mcsafe (a
// pread syscall per call for files), and the cost of entering and leaving a
// guard against sigsetjmp with the signal mask saved (a syscall).
//
// Names are <operation>/<library>/<bytes>: tests/bench/run.sh pairs them per
// size and reports mapdirect / memcpy (the first peer alphabetically) as the
// time ratio. The file lives in $MAPDIRECT_BENCH_DIR (default /var/tmp) and
// is prefaulted, so every variant copies from resident pages.
#include <mapdirect/guard.hpp>
#include <mapdirect/mapping.hpp>

#include <benchmark/benchmark.h>
#include <libpmem2.h>

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

namespace md = mapdirect;

namespace {

constexpr std::size_t kFileSize = std::size_t{4} << 20;

struct fixture {
  fixture() {
    const char* dir = std::getenv("MAPDIRECT_BENCH_DIR");
    path = std::string(dir && *dir ? dir : "/var/tmp") + "/mapdirect-bench-guard-XXXXXX";
    fd = ::mkstemp(path.data());
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(kFileSize)) != 0) die("create the file");
    auto m = md::direct_mapping::map(fd, 0, kFileSize);
    if (!m) die(md::last_error_detail());
    map = std::move(m.value());
    std::memset(map.data(), 0x5a, kFileSize);  // every page resident and dirty-free after the persist
    if (!map.persist(0, kFileSize)) die("persist");
    void* p = ::mmap(nullptr, kFileSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) die("mmap the destination");
    dst = static_cast<char*>(p);
    std::memset(dst, 1, kFileSize);
    if (pmem2_source_from_fd(&source, fd) != 0) die(pmem2_errormsg());
    if (!md::install_sigbus_handler()) die("install the SIGBUS handler");
  }
  ~fixture() {
    pmem2_source_delete(&source);
    (void)map.close();
    ::munmap(dst, kFileSize);
    ::close(fd);
    ::unlink(path.c_str());
  }
  [[noreturn]] static void die(const char* what) {
    std::fprintf(stderr, "bench_guard: %s\n", what);
    std::exit(1);
  }
  std::string path;
  int fd = -1;
  md::direct_mapping map;
  char* dst = nullptr;
  pmem2_source* source = nullptr;
};

fixture& fx() {
  static fixture f;
  return f;
}

void copy_memcpy(benchmark::State& state, std::size_t n) {
  auto& f = fx();
  for (auto _ : state) {
    std::memcpy(f.dst, f.map.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void copy_guarded(benchmark::State& state, std::size_t n) {
  auto& f = fx();
  for (auto _ : state) {
    auto r = md::guarded_copy(f.dst, f.map.data(), n);
    benchmark::DoNotOptimize(r);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void copy_mapping_read(benchmark::State& state, std::size_t n) {
  auto& f = fx();
  for (auto _ : state) {
    auto r = f.map.read(0, f.dst, n);
    benchmark::DoNotOptimize(r);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void copy_pmem2(benchmark::State& state, std::size_t n) {
  auto& f = fx();
  for (auto _ : state) {
    if (pmem2_source_pread_mcsafe(f.source, f.dst, n, 0) != 0) {
      state.SkipWithError(pmem2_errormsg());
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// Entering and leaving an (empty) guarded region.
void entry_guard(benchmark::State& state) {
  auto& f = fx();
  const md::guard_range range{f.map.data(), f.map.size(), -1, 0};
  for (auto _ : state) {
    auto r = md::with_guard(range, []() noexcept {});
    benchmark::DoNotOptimize(r);
  }
}

// The same with the signal mask saved (what a guard without SA_NODEFER would need).
sigjmp_buf g_env;
void entry_sigsetjmp_savemask(benchmark::State& state) {
  for (auto _ : state) {
    if (sigsetjmp(g_env, 1) != 0) state.SkipWithError("unexpected jump");
    benchmark::ClobberMemory();
  }
}

// sigsetjmp alone without the mask: the floor of any setjmp-based guard.
void entry_sigsetjmp_nomask(benchmark::State& state) {
  for (auto _ : state) {
    if (sigsetjmp(g_env, 0) != 0) state.SkipWithError("unexpected jump");
    benchmark::ClobberMemory();
  }
}

// Interleaved by size so drift on a shared machine hits every variant alike.
int register_all() {
  for (std::size_t n : {std::size_t{64}, std::size_t{4096}, std::size_t{1} << 20}) {
    const std::string size = std::to_string(n);
    benchmark::RegisterBenchmark(("guarded_copy/mapdirect/" + size).c_str(), copy_guarded, n);
    benchmark::RegisterBenchmark(("guarded_copy/memcpy/" + size).c_str(), copy_memcpy, n);
    benchmark::RegisterBenchmark(("guarded_copy/pmem2_pread_mcsafe/" + size).c_str(), copy_pmem2, n);
    benchmark::RegisterBenchmark(("mapping_read/mapdirect/" + size).c_str(), copy_mapping_read, n);
    benchmark::RegisterBenchmark(("mapping_read/memcpy/" + size).c_str(), copy_memcpy, n);
  }
  benchmark::RegisterBenchmark("guard_entry/mapdirect/0", entry_guard);
  benchmark::RegisterBenchmark("guard_entry/sigsetjmp_nomask/0", entry_sigsetjmp_nomask);
  benchmark::RegisterBenchmark("guard_entry/sigsetjmp_savemask/0", entry_sigsetjmp_savemask);
  return 0;
}
const int registered = register_all();

}  // namespace
