// Durable 128-byte appends, each acknowledged only once durable, from 1, 2, 4
// and 8 writer threads sharing one file on this machine's disk:
//   (a) msync(MS_SYNC) per record      (b) fdatasync per record
//   (c) libpmem2 persist at page granularity (one msync per call)
//   (d) mapdirect group commit: direct_mapping::copy_persist with a
//       group_committer attached (unchanged synchronous code)
//   (e) mapdirect persist_async + wait with every flush on the committer's
//       backend (inline_flush = false: IORING_OP_FSYNC when io_uring works)
//   (f) mapdirect persist_async without blocking per record: each writer
//       keeps up to 32 records in flight (an engine acknowledging from its
//       event loop); a record counts once its handle completed durably
// Records per second for each, and the ratio d/a. A second table shows the
// blocking writers (a, d, e: each writer waits for its own record): records
// per flush, p50/p99 commit latency (enqueue to durable, per record) and the
// gain over msync per record. Each cell runs for a fixed
// time; the cells are run in interleaved rounds and the median round is shown,
// so that a change in the disk's load (a shared machine) hits every method
// alike. The whole table takes about 30 s.
//
// Usage: bench_async [directory (default /var/tmp)] [seconds per cell (default 0.5)] [rounds (default 3)]
#include <mapdirect/async.hpp>
#include <mapdirect/mapdirect.hpp>

#include <libpmem2.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace {
constexpr std::size_t record_size = 128;
constexpr std::size_t file_size = std::size_t{32} << 20;  // room for 262144 records per cell

struct cell_result {
  double records_per_s = 0;
  double records_per_flush = 0;                 // (d)/(e) only
  double p50_us = 0, p99_us = 0;                // per-record commit latency (blocking methods)
  double merge_windows = 0, merge_expired = 0;  // (d)/(e): per flush
  bool ok = true;
};

// The q-quantile of `v` (sorted in place).
double quantile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

// One open file, written with zeros and flushed before the cell, as an engine
// preallocates its log: the appends then overwrite allocated, written blocks
// (fallocate alone would leave unwritten extents, whose conversion adds a
// journal commit to every flush). Removed at the end.
struct bench_file {
  std::string path;
  int fd = -1;
  explicit bench_file(const std::string& dir) {
    path = dir + "/mapdirect-bench-async-XXXXXX";
    fd = ::mkstemp(path.data());
    if (fd < 0) {
      std::perror("mkstemp");
      std::exit(1);
    }
    std::vector<char> zeros(std::size_t{1} << 20, 0);
    for (std::size_t off = 0; off < file_size; off += zeros.size()) {
      if (::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(zeros.size())) {
        std::perror("pwrite");
        std::exit(1);
      }
    }
    if (::fsync(fd) != 0) {
      std::perror("fsync");
      std::exit(1);
    }
  }
  ~bench_file() {
    ::close(fd);
    ::unlink(path.c_str());
  }
};

// Runs `append(slot)` on `threads` threads for `seconds`; returns records/s
// and sets the latency percentiles of one append (microseconds) in `r`.
double run_cell(unsigned threads, double seconds, const std::function<bool(std::size_t)>& append, bool& ok,
                cell_result* r = nullptr) {
  std::vector<std::vector<double>> lat(threads);
  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> done{0};
  std::atomic<bool> failed{false};
  const std::size_t capacity = file_size / record_size;
  std::vector<std::thread> pool;
  const auto t0 = std::chrono::steady_clock::now();
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      lat[t].reserve(1 << 16);
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t slot = next.fetch_add(1);
        if (slot >= capacity) break;
        const auto a = std::chrono::steady_clock::now();
        if (!append(slot)) {
          failed = true;
          break;
        }
        lat[t].push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count());
        done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : pool) t.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ok = !failed;
  if (r) {
    std::vector<double> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    r->p50_us = quantile(all, 0.50);
    r->p99_us = quantile(all, 0.99);
  }
  return static_cast<double>(done.load()) / elapsed;
}

void make_record(char* rec, std::size_t slot) {
  std::memset(rec, static_cast<int>('a' + slot % 26), record_size);
  std::memcpy(rec, &slot, sizeof slot);
}

cell_result bench_msync(const std::string& dir, unsigned threads, double seconds, bool use_fdatasync) {
  bench_file f(dir);
  auto* base = static_cast<char*>(::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, f.fd, 0));
  if (base == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  cell_result r;
  r.records_per_s = run_cell(
      threads, seconds,
      [&](std::size_t slot) {
        char rec[record_size];
        make_record(rec, slot);
        char* dst = base + slot * record_size;
        std::memcpy(dst, rec, record_size);
        if (use_fdatasync) return ::fdatasync(f.fd) == 0;
        char* lo = reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(dst) & ~(std::uintptr_t{page} - 1));
        return ::msync(lo, static_cast<std::size_t>(dst + record_size - lo), MS_SYNC) == 0;
      },
      r.ok, &r);
  ::munmap(base, file_size);
  return r;
}

cell_result bench_pmem2(const std::string& dir, unsigned threads, double seconds) {
  bench_file f(dir);
  pmem2_config* cfg = nullptr;
  pmem2_source* src = nullptr;
  pmem2_map* map = nullptr;
  if (pmem2_config_new(&cfg) || pmem2_source_from_fd(&src, f.fd) ||
      pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) || pmem2_map_new(&map, cfg, src)) {
    std::fprintf(stderr, "libpmem2: %s\n", pmem2_errormsg());
    std::exit(1);
  }
  auto* base = static_cast<char*>(pmem2_map_get_address(map));
  pmem2_persist_fn persist = pmem2_get_persist_fn(map);
  cell_result r;
  r.records_per_s = run_cell(
      threads, seconds,
      [&](std::size_t slot) {
        char rec[record_size];
        make_record(rec, slot);
        char* dst = base + slot * record_size;
        std::memcpy(dst, rec, record_size);
        persist(dst, record_size);  // msync; libpmem2 aborts on failure
        return true;
      },
      r.ok);
  pmem2_map_delete(&map);
  pmem2_source_delete(&src);
  pmem2_config_delete(&cfg);
  return r;
}

// (f): each writer appends and keeps up to `window` persist_async requests
// outstanding; only completed (durable) records count.
cell_result bench_pipelined(const std::string& dir, unsigned threads, double seconds) {
  constexpr std::size_t window = 32;
  bench_file f(dir);
  auto m = mapdirect::direct_mapping::map(f.fd, 0, file_size);
  auto g = mapdirect::group_committer::create();
  if (!m || !g) {
    std::fprintf(stderr, "mapdirect: %s\n", mapdirect::last_error_detail());
    std::exit(1);
  }
  auto& map = m.value();
  auto& committer = g.value();
  std::atomic<std::size_t> next{0}, durable{0};
  std::atomic<bool> stop{false}, failed{false};
  const std::size_t capacity = file_size / record_size;
  std::vector<std::thread> pool;
  const auto t0 = std::chrono::steady_clock::now();
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      std::vector<mapdirect::persist_handle> ring(window);
      std::size_t head = 0, count = 0;
      auto retire = [&] {
        if (!ring[head].wait()) failed = true;
        else durable.fetch_add(1, std::memory_order_relaxed);
        ring[head] = mapdirect::persist_handle{};
        head = (head + 1) % window;
        --count;
      };
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t slot = next.fetch_add(1);
        if (slot >= capacity) break;
        char rec[record_size];
        make_record(rec, slot);
        std::memcpy(map.data() + slot * record_size, rec, record_size);
        if (count == window) retire();
        auto h = committer.persist_async(map, slot * record_size, record_size);
        if (!h) {
          failed = true;
          break;
        }
        ring[(head + count) % window] = std::move(h.value());
        ++count;
      }
      while (count) retire();
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : pool) t.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cell_result r;
  r.ok = !failed;
  r.records_per_s = static_cast<double>(durable.load()) / elapsed;
  const auto st = committer.stats();
  r.records_per_flush = st.flushes ? static_cast<double>(st.requests) / static_cast<double>(st.flushes) : 0;
  return r;
}

cell_result bench_mapdirect(const std::string& dir, unsigned threads, double seconds, bool async_backend) {
  bench_file f(dir);
  auto m = mapdirect::direct_mapping::map(f.fd, 0, file_size);
  mapdirect::committer_options o;
  o.inline_flush = !async_backend;
  auto g = mapdirect::group_committer::create(o);
  if (!m || !g) {
    std::fprintf(stderr, "mapdirect: %s\n", mapdirect::last_error_detail());
    std::exit(1);
  }
  auto& map = m.value();
  auto& committer = g.value();
  committer.attach(map);
  cell_result r;
  r.records_per_s = run_cell(
      threads, seconds,
      [&](std::size_t slot) {
        char rec[record_size];
        make_record(rec, slot);
        if (!async_backend) return static_cast<bool>(map.copy_persist(slot * record_size, rec, record_size));
        std::memcpy(map.data() + slot * record_size, rec, record_size);
        auto h = committer.persist_async(map, slot * record_size, record_size);
        return h && h.value().wait();
      },
      r.ok, &r);
  const auto st = committer.stats();
  r.records_per_flush = st.flushes ? static_cast<double>(st.requests) / static_cast<double>(st.flushes) : 0;
  if (st.flushes) {
    r.merge_windows = static_cast<double>(st.merge_windows) / static_cast<double>(st.flushes);
    r.merge_expired = static_cast<double>(st.merge_expired) / static_cast<double>(st.flushes);
  }
  committer.detach(map);
  return r;
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0f", v);
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/var/tmp";
  const double seconds = argc > 2 ? std::atof(argv[2]) : 0.5;
  const int rounds = argc > 3 ? std::max(1, std::atoi(argv[3])) : 3;
  {
    auto g = mapdirect::group_committer::create();
    auto p = mapdirect::probe(dir.c_str());
    std::printf("directory %s (%s), mapdirect backend: %s\n", dir.c_str(), p ? p.value().file_system.c_str() : "?",
                g ? g.value().backend_detail() : "?");
  }
  constexpr std::array<unsigned, 4> thread_counts{1, 2, 4, 8};
  constexpr int methods = 6;
  // samples[threads][method] = records/s of each round; per_flush likewise for d and e.
  std::vector<double> samples[thread_counts.size()][methods];
  std::vector<double> per_flush[thread_counts.size()][3];
  // Blocking methods a, d, e: p50 and p99 latency per round; d/a and e/a per round.
  std::vector<double> p50[thread_counts.size()][3], p99[thread_counts.size()][3], gain[thread_counts.size()][2];
  std::vector<double> expired[thread_counts.size()][2];
  bool all_ok = true;
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t ti = 0; ti < thread_counts.size(); ++ti) {
      const unsigned threads = thread_counts[ti];
      const cell_result r[methods] = {
          bench_msync(dir, threads, seconds, false),    bench_msync(dir, threads, seconds, true),
          bench_pmem2(dir, threads, seconds),           bench_mapdirect(dir, threads, seconds, false),
          bench_mapdirect(dir, threads, seconds, true), bench_pipelined(dir, threads, seconds)};
      for (int m = 0; m < methods; ++m) {
        samples[ti][m].push_back(r[m].records_per_s);
        all_ok = all_ok && r[m].ok;
      }
      per_flush[ti][0].push_back(r[3].records_per_flush);
      per_flush[ti][1].push_back(r[4].records_per_flush);
      per_flush[ti][2].push_back(r[5].records_per_flush);
      const int blocking[3] = {0, 3, 4};
      for (int b = 0; b < 3; ++b) {
        p50[ti][b].push_back(r[blocking[b]].p50_us);
        p99[ti][b].push_back(r[blocking[b]].p99_us);
      }
      if (r[0].records_per_s > 0) {
        gain[ti][0].push_back(r[3].records_per_s / r[0].records_per_s);
        gain[ti][1].push_back(r[4].records_per_s / r[0].records_per_s);
      }
      expired[ti][0].push_back(r[3].merge_expired);
      expired[ti][1].push_back(r[4].merge_expired);
    }
  }
  std::printf("durable %zu-byte appends, records/s: median of %d interleaved rounds of %.2f s per cell\n\n",
              record_size, rounds, seconds);
  std::printf("%7s | %9s | %9s | %9s | %9s | %9s | %9s | %6s | %8s | %8s | %8s\n", "threads", "a msync", "b fdatsync",
              "c pmem2", "d group", "e async", "f pipe", "d/a", "d rec/fl", "e rec/fl", "f rec/fl");
  std::printf("--------+-----------+-----------+-----------+-----------+-----------+-----------+--------+----------+"
              "----------+---------\n");
  for (std::size_t ti = 0; ti < thread_counts.size(); ++ti) {
    double med[methods];
    for (int m = 0; m < methods; ++m) med[m] = median(samples[ti][m]);
    std::printf("%7u | %9s | %9s | %9s | %9s | %9s | %9s | %6.2f | %8.1f | %8.1f | %8.1f\n", thread_counts[ti],
                fmt(med[0]).c_str(), fmt(med[1]).c_str(), fmt(med[2]).c_str(), fmt(med[3]).c_str(), fmt(med[4]).c_str(),
                fmt(med[5]).c_str(), med[0] > 0 ? med[3] / med[0] : 0.0, median(per_flush[ti][0]),
                median(per_flush[ti][1]), median(per_flush[ti][2]));
  }
  std::printf("\nblocking writers (each waits for its own record): records per flush, commit latency in us "
              "(median over rounds of each round's p50/p99), median of per-round records/s ratios\n\n");
  std::printf("%7s | %8s | %8s | %8s | %8s | %8s | %8s | %8s | %8s | %8s | %6s | %6s | %7s | %7s\n", "threads",
              "d rec/fl", "e rec/fl", "a p50", "a p99", "d p50", "d p99", "e p50", "e p99", "rec/fl/N", "d/a", "e/a",
              "d expir", "e expir");
  std::printf("--------+----------+----------+----------+----------+----------+----------+----------+----------+"
              "----------+--------+--------+---------+--------\n");
  for (std::size_t ti = 0; ti < thread_counts.size(); ++ti) {
    const double dfl = median(per_flush[ti][0]);
    std::printf("%7u | %8.2f | %8.2f | %8.0f | %8.0f | %8.0f | %8.0f | %8.0f | %8.0f | %8.2f | %6.2f | %6.2f | %7.2f | "
                "%7.2f\n",
                thread_counts[ti], dfl, median(per_flush[ti][1]), median(p50[ti][0]), median(p99[ti][0]),
                median(p50[ti][1]), median(p99[ti][1]), median(p50[ti][2]), median(p99[ti][2]), dfl / thread_counts[ti],
                median(gain[ti][0]), median(gain[ti][1]), median(expired[ti][0]), median(expired[ti][1]));
  }
  std::printf("(d/e expir: merge windows that ran out of time, per flush)\n");
  if (!all_ok) {
    std::printf("\nsome persist calls FAILED\n");
    return 1;
  }
  return 0;
}
