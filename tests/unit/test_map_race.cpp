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
#include <vector>

#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {

struct race_counts {
  long maps = 0;             // successful map() calls
  long map_failures = 0;     // failed map() calls
  long stores_lost = 0;      // the mapper's store into its own mapping failed
  long anon_rounds = 0;      // anonymous regions checked
  long foreign_touched = 0;  // checks that found the anonymous region changed, unreadable or unwritable
  long file_mismatch = 0;    // words of the file that are not what the mapper wrote
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
    // Regions stay mapped (as malloc arenas and thread stacks do): they fill
    // the gaps above the mapper's address range, so that later ones land
    // where map() works, in its hole if one is open. A failed check counts
    // once per region.
    constexpr std::size_t len = std::size_t{1} << 20;
    constexpr std::size_t max_regions = 4096;  // 4 GiB of address space, 8 KiB touched each
    struct region {
      char* p;
      std::uint64_t value;
      bool bad;
    };
    std::vector<region> held;
    held.reserve(max_regions);
    std::uint64_t value = 0xA11CE00000000000ULL;
    auto check = [&](region& r) {
      std::uint64_t a = 0, b = 0, v = r.value;
      const bool ok = peek(r.p, &a, sizeof a) && peek(r.p + len - sizeof b, &b, sizeof b) && a == v && b == v &&
                      poke(r.p, &v, sizeof v);  // and still writable
      if (!ok && !r.bad) {
        r.bad = true;
        ++c.foreign_touched;
      }
    };
    while (!stop.load() && held.size() < max_regions) {
      void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) break;
      ++c.anon_rounds;
      held.push_back(region{static_cast<char*>(p), ++value, false});
      region& r = held.back();
      if (!poke(r.p, &r.value, sizeof r.value) || !poke(r.p + len - sizeof r.value, &r.value, sizeof r.value)) {
        r.bad = true;
        ++c.foreign_touched;
      }
      std::this_thread::yield();
      // The newest few: a replaced region is replaced right after it was made.
      for (std::size_t i = held.size() > 8 ? held.size() - 8 : 0; i < held.size(); ++i) check(held[i]);
    }
    while (!stop.load()) std::this_thread::yield();
    for (region& r : held) {
      check(r);
      ::munmap(r.p, len);
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

namespace {
// The kernel hands out an unaligned address for the file (as it may), and
// the first aligned slot map() carves out is taken by "another thread"
// before map() can place the file there.
struct unaligned_and_contended : syscall_interposer {
  static constexpr std::size_t huge = std::size_t{2} << 20;
  int steal = 1;  // NOREPLACE placements to pre-empt
  int noreplace_calls = 0;
  int fixed_calls = 0;  // MAP_FIXED by the library: must stay 0
  std::vector<char*> foreign;
  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
    if (flags & MAP_FIXED) ++fixed_calls;
    if (fd >= 0 && !addr) {
      // An unaligned placement, made inside this interposer's own reservation.
      char* r = static_cast<char*>(
          ::mmap(nullptr, len + 2 * huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
      if (r == MAP_FAILED) return MAP_FAILED;
      char* at = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(r) + huge - 1) & ~(huge - 1)) + 4096;
      void* p = ::mmap(at, len, prot, flags | MAP_FIXED, fd, off);
      const int e = errno;
      ::munmap(r, static_cast<std::size_t>(at - r));
      ::munmap(at + len, static_cast<std::size_t>(r + len + 2 * huge - (at + len)));
      if (p == MAP_FAILED) ::munmap(at, len);
      errno = e;
      return p;
    }
    if (fd >= 0 && (flags & MAP_FIXED_NOREPLACE)) {
      ++noreplace_calls;
      if (steal > 0) {
        --steal;
        void* f = ::mmap(addr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (f != MAP_FAILED) {
          std::memcpy(f, "foreign", 8);
          foreign.push_back(static_cast<char*>(f));
        }
      }
    }
    return ::mmap(addr, len, prot, flags, fd, off);
  }
};
}  // namespace

TEST_CASE("seam: an unaligned large mapping is moved to a 2 MiB boundary with MAP_FIXED_NOREPLACE, retrying when "
          "the slot is taken",
          "[mapping][race]") {
  temp_file f(mdtest::test_dir(), file_size);
  unaligned_and_contended rec;
  {
    scoped_syscall_interposer seam(rec);
    auto m = direct_mapping::map(f.fd(), 0, file_size, mdtest::shared_only());
    REQUIRE(m);
    CHECK(reinterpret_cast<std::uintptr_t>(m.value().data()) % (std::size_t{2} << 20) == 0);
    std::memcpy(m.value().data(), "mine", 4);
    REQUIRE(m.value().persist(0, 4));
  }
  CHECK(rec.fixed_calls == 0);
  CHECK(rec.noreplace_calls == 2);
  REQUIRE(rec.foreign.size() == 1);
  CHECK(std::memcmp(rec.foreign[0], "foreign", 8) == 0);  // untouched, still mapped and ours
  ::munmap(rec.foreign[0], 4096);
  CHECK(f.read_all().substr(0, 4) == "mine");
  CHECK_FALSE(mdtest::path_is_mapped(f.path()));
}
