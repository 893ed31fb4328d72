// The group committer before and after a change: tests/bench/ab/before_after.sh
// builds this file twice (against an older commit's headers and against the
// working tree) and runs the two alternately. One process prints, per method,
// "method records/s p50_us" for one cell of SECONDS (default 1):
//   a   msync(MS_SYNC) per 128-byte record, one writer (the baseline)
//   d   one writer: direct_mapping::copy_persist with a group_committer attached
//   e   one writer: persist_async + wait, inline_flush = false
//   f8  8 writers, each with up to 32 persist_async requests in flight (the
//       pipelined path); p50 is 0 (no per-record wait)
// It uses only API that existed when the committer was introduced, so that
// old headers compile. The file lives in /var/tmp, preallocated and written.
#include <mapdirect/async.hpp>
#include <mapdirect/mapdirect.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace {
constexpr std::size_t record_size = 128;
constexpr std::size_t file_size = std::size_t{64} << 20;
constexpr std::size_t capacity = file_size / record_size;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "committer A/B: %s failed: %s\n", what, mapdirect::last_error_detail());
  std::exit(1);
}

int make_file() {
  char path[] = "/var/tmp/mapdirect-ab-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) die("mkstemp");
  ::unlink(path);
  std::vector<char> zeros(std::size_t{1} << 20, 0);
  for (std::size_t off = 0; off < file_size; off += zeros.size())
    if (::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(zeros.size()))
      die("pwrite");
  if (::fsync(fd) != 0) die("fsync");
  return fd;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One blocking writer for `secs`: prints records/s and the median latency.
template <class Append>
void one_writer(const char* name, double secs, Append append) {
  std::vector<double> lat;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t slot = 0; slot < capacity && seconds_since(t0) < secs; ++slot) {
    const auto a = std::chrono::steady_clock::now();
    if (!append(slot)) die(name);
    lat.push_back(seconds_since(a) * 1e6);
  }
  const double elapsed = seconds_since(t0);
  std::sort(lat.begin(), lat.end());
  std::printf("%s %.1f %.1f\n", name, static_cast<double>(lat.size()) / elapsed, lat[lat.size() / 2]);
}

void pipelined(double secs, int fd) {
  constexpr unsigned writers = 8;
  constexpr std::size_t window = 32;
  auto m = mapdirect::direct_mapping::map(fd, 0, file_size);
  auto g = mapdirect::group_committer::create();
  if (!m || !g) die("map/create");
  std::atomic<std::size_t> next{0}, durable{0};
  std::atomic<bool> stop{false}, failed{false};
  std::vector<std::thread> pool;
  const auto t0 = std::chrono::steady_clock::now();
  for (unsigned t = 0; t < writers; ++t)
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
        std::memset(m.value().data() + slot * record_size, static_cast<int>('a' + slot % 26), record_size);
        if (count == window) retire();
        auto h = g.value().persist_async(m.value(), slot * record_size, record_size);
        if (!h) {
          failed = true;
          break;
        }
        ring[(head + count) % window] = std::move(h.value());
        ++count;
      }
      while (count) retire();
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  stop = true;
  for (auto& t : pool) t.join();
  if (failed) die("pipelined persist_async");
  std::printf("f8 %.1f 0\n", static_cast<double>(durable.load()) / seconds_since(t0));
}
}  // namespace

int main(int argc, char** argv) {
  const double secs = argc > 1 ? std::atof(argv[1]) : 1.0;
  {
    const int fd = make_file();
    auto* base = static_cast<char*>(::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (base == MAP_FAILED) die("mmap");
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    one_writer("a", secs, [&](std::size_t slot) {
      char* dst = base + slot * record_size;
      std::memset(dst, static_cast<int>('a' + slot % 26), record_size);
      char* lo = reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(dst) & ~(page - 1));
      return ::msync(lo, static_cast<std::size_t>(dst + record_size - lo), MS_SYNC) == 0;
    });
    ::munmap(base, file_size);
    ::close(fd);
  }
  for (bool inline_flush : {true, false}) {
    const int fd = make_file();
    auto m = mapdirect::direct_mapping::map(fd, 0, file_size);
    mapdirect::committer_options o;
    o.inline_flush = inline_flush;
    auto g = mapdirect::group_committer::create(o);
    if (!m || !g) die("map/create");
    auto& map = m.value();
    auto& committer = g.value();
    committer.attach(map);
    one_writer(inline_flush ? "d" : "e", secs, [&](std::size_t slot) {
      char rec[record_size];
      std::memset(rec, static_cast<int>('a' + slot % 26), record_size);
      if (inline_flush) return static_cast<bool>(map.copy_persist(slot * record_size, rec, record_size));
      std::memcpy(map.data() + slot * record_size, rec, record_size);
      auto h = committer.persist_async(map, slot * record_size, record_size);
      return h && h.value().wait();
    });
    committer.detach(map);
    ::close(fd);
  }
  const int fd = make_file();
  pipelined(secs, fd);
  ::close(fd);
  return 0;
}
