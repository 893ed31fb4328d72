// Issue 10 item 1: map() must never replace address space it does not own.
// One thread maps a 4 MiB file over and over (on a host without DAX the sync
// rung is refused with EOPNOTSUPP, after which the old code re-reserved and
// mapped with MAP_FIXED over whatever had landed in the hole); another thread
// maps anonymous memory and checks that it stays its own. Runs in a child
// process: on the old code the foreign memory may vanish under either thread.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {

struct race_counts {
  long maps = 0;              // successful map() calls
  long map_failures = 0;      // failed map() calls
  long stores_lost = 0;       // the mapper's store into its own mapping failed
  long anon_rounds = 0;       // anonymous regions checked
  long foreign_touched = 0;   // checks that found the anonymous region changed, unreadable or unwritable
  long file_mismatch = 0;     // words of the file that are not what the mapper wrote
  std::uint64_t last_written = 0;
};

// Reads/writes our own memory through the kernel: an address that became
// PROT_NONE or was unmapped gives EFAULT instead of killing the thread.
bool peek(const void* addr, void* out, std::size_t n) {
  iovec local{out, n}, remote{const_cast<void*>(addr), n};
  return ::process_vm_readv(::getpid(), &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
}
bool poke(void* addr, const void* in, std::size_t n) {
  iovec local{const_cast<void*>(in), n}, remote{addr, n};
  return ::process_vm_writev(::getpid(), &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
}

constexpr std::size_t file_size = std::size_t{4} << 20;
constexpr long max_iterations = 20000;
constexpr auto time_budget = std::chrono::seconds(5);

race_counts run_race(int fd) {
  race_counts c;
  std::atomic<bool> stop{false};
  std::thread mapper([&] {
    const auto start = std::chrono::steady_clock::now();
    for (long i = 1; i <= max_iterations && std::chrono::steady_clock::now() - start < time_budget; ++i) {
      auto m = direct_mapping::map(fd, 0, file_size);  // default options: direct, sync, shared
      if (!m) {
        ++c.map_failures;
        continue;
      }
      ++c.maps;
      const std::uint64_t v = static_cast<std::uint64_t>(i);
      if (poke(m.value().data(), &v, sizeof v)) c.last_written = v;
      else ++c.stores_lost;
    }
    stop.store(true);
  });
  std::thread other([&] {
    constexpr std::size_t len = 64 * 1024;
    std::uint64_t value = 0xA11CE00000000000ULL;
    while (!stop.load()) {
      void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) continue;
      ++c.anon_rounds;
      ++value;
      bool ok = true;
      for (std::size_t off = 0; off < len; off += 4096) ok = poke(static_cast<char*>(p) + off, &value, sizeof value) && ok;
      for (int round = 0; round < 20 && ok; ++round) {
        for (std::size_t off = 0; off < len && ok; off += 4096) {
          std::uint64_t got = 0;
          ok = peek(static_cast<char*>(p) + off, &got, sizeof got) && got == value &&
               poke(static_cast<char*>(p) + off, &value, sizeof value);
        }
        std::this_thread::yield();
      }
      if (!ok) ++c.foreign_touched;
      ::munmap(p, len);
    }
  });
  mapper.join();
  other.join();
  // The file holds exactly what the mapper wrote: its last value, then zeros.
  std::vector<std::uint64_t> words(file_size / sizeof(std::uint64_t));
  if (::pread(fd, words.data(), file_size, 0) != static_cast<ssize_t>(file_size)) c.file_mismatch = -1;
  for (std::size_t i = 0; i < words.size(); ++i)
    if (words[i] != (i == 0 ? c.last_written : 0)) ++c.file_mismatch;
  return c;
}

}  // namespace

TEST_CASE("map() never maps over another thread's memory (sync rung refused, large mapping)", "[mapping][race]") {
  temp_file f(mdtest::test_dir(), file_size);
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    ::alarm(120);  // anti-hang only
    const race_counts c = run_race(f.fd());
    const ssize_t n = ::write(pipefd[1], &c, sizeof c);
    ::_exit(n == static_cast<ssize_t>(sizeof c) ? 0 : 3);
  }
  ::close(pipefd[1]);
  race_counts c;
  const ssize_t n = ::read(pipefd[0], &c, sizeof c);
  ::close(pipefd[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("child status " << status << (WIFSIGNALED(status) ? " (killed by a signal: its memory was replaced)" : ""));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(n == static_cast<ssize_t>(sizeof c));
  INFO("maps " << c.maps << ", anonymous regions checked " << c.anon_rounds);
  CHECK(c.maps > 0);
  CHECK(c.anon_rounds > 0);
  CHECK(c.map_failures == 0);
  CHECK(c.stores_lost == 0);
  CHECK(c.foreign_touched == 0);
  CHECK(c.file_mismatch == 0);
}
