// map_options::reserve and grow() relocation on validated mappings
// (MAP_SHARED_VALIDATE: sync, direct). The kernel's MAP_SHARED_VALIDATE
// accepts only LEGACY_MAP_MASK flags (plus MAP_SYNC on DAX files), so
// MAP_FIXED_NOREPLACE fails with EOPNOTSUPP: found by the RocksDB WAL plugin
// in the VM tier, where every map() with reserve failed on DAX.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

using namespace mapdirect;

namespace {
constexpr std::size_t kib = 1024;

// Emulates a DAX file: MAP_SYNC is dropped before the real mmap, every other
// flag (MAP_SHARED_VALIDATE, MAP_FIXED, MAP_FIXED_NOREPLACE) goes to this
// host's kernel unchanged, so the kernel's own flag validation applies.
struct dax_emulation : syscall_interposer {
  int noreplace_refused = 0;
  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
    if (fd >= 0 && (flags & MAP_TYPE) == MAP_SHARED_VALIDATE) {
      void* p = syscall_interposer::mmap(addr, len, prot, flags & ~MAP_SYNC, fd, off);
      if (p == MAP_FAILED && errno == EOPNOTSUPP && (flags & MAP_FIXED_NOREPLACE)) ++noreplace_refused;
      return p;
    }
    return syscall_interposer::mmap(addr, len, prot, flags, fd, off);
  }
};

std::string pread_n(int fd, std::size_t n, std::size_t off) {
  std::string out(n, '\0');
  REQUIRE(::pread(fd, out.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
  return out;
}
}  // namespace

TEST_CASE("reserve: a MAP_SYNC mapping is placed in its reservation without MAP_FIXED_NOREPLACE", "[grow][seam]") {
  mdtest::temp_file f(mdtest::test_dir(), 16 * kib);
  {
    // The premise: this kernel refuses MAP_SHARED_VALIDATE|MAP_FIXED_NOREPLACE.
    void* p = ::mmap(nullptr, 4 * kib, PROT_READ, MAP_SHARED_VALIDATE | MAP_FIXED_NOREPLACE, f.fd(), 0);
    if (p != MAP_FAILED) {
      ::munmap(p, 4 * kib);
      WARN("skipped: this kernel accepts MAP_SHARED_VALIDATE|MAP_FIXED_NOREPLACE");
      return;
    }
    REQUIRE(errno == EOPNOTSUPP);
  }
  dax_emulation dax;
  scoped_syscall_interposer scope(dax);
  map_options o;
  o.strongest = map_mode::sync;
  o.weakest = map_mode::sync;
  o.domain = persistence_domain::memory_controller;
  o.reserve = 1024 * kib;
  auto r = direct_mapping::map(f.fd(), 0, 16 * kib, o);
  INFO(last_error_detail());
  REQUIRE(r);
  direct_mapping& m = r.value();
  CHECK(m.mode() == map_mode::sync);
  CHECK(m.capacity() >= 1024 * kib);
  CHECK(dax.noreplace_refused == 0);
  std::byte* const base = m.data();
  REQUIRE(m.grow(512 * kib));
  CHECK(m.data() == base);  // in place
  const std::string text(8 * kib, 'v');
  REQUIRE(m.copy_persist(12 * kib, text.data(), text.size()));  // across the old end
  CHECK(pread_n(f.fd(), text.size(), 12 * kib) == text);

  // Past the reservation: relocation takes the same path.
  grow_options g;
  g.allow_relocation = true;
  auto moved = m.grow(2048 * kib, g);
  INFO(last_error_detail());
  REQUIRE(moved);
  CHECK(moved.value().moved);
  CHECK(m.mode() == map_mode::sync);
  CHECK(dax.noreplace_refused == 0);
  std::string back(text.size(), '\0');
  std::memcpy(back.data(), m.data() + 12 * kib, back.size());
  CHECK(back == text);
}

TEST_CASE("align: a large MAP_SYNC mapping is moved to a 2 MiB boundary despite MAP_SHARED_VALIDATE",
          "[mapping][seam]") {
  // Mapped from a 4 KiB offset: a kernel that aligns large file mappings
  // itself (THP) places it congruent to the offset, i.e. not 2 MiB-aligned,
  // so that map() has to move it.
  mdtest::temp_file f(mdtest::test_dir(), 4 * 1024 * kib + 4 * kib);
  void* probe = ::mmap(nullptr, 4 * kib, PROT_READ, MAP_SHARED_VALIDATE | MAP_FIXED_NOREPLACE, f.fd(), 0);
  if (probe != MAP_FAILED) {
    ::munmap(probe, 4 * kib);
    WARN("skipped: this kernel accepts MAP_SHARED_VALIDATE|MAP_FIXED_NOREPLACE");
    return;
  }
  dax_emulation dax;
  scoped_syscall_interposer scope(dax);
  map_options o;
  o.strongest = map_mode::sync;
  o.weakest = map_mode::sync;
  o.domain = persistence_domain::memory_controller;
  // Several tries: the kernel may place the first mapping aligned by chance.
  for (int i = 0; i < 4; ++i) {
    auto r = direct_mapping::map(f.fd(), 4 * kib, 4 * 1024 * kib, o);
    INFO(last_error_detail());
    REQUIRE(r);
    CHECK(r.value().mode() == map_mode::sync);
    CHECK(reinterpret_cast<std::uintptr_t>(r.value().data()) % MAPDIRECT_HUGE_ALIGN_THRESHOLD == 0);
    REQUIRE(r.value().copy_persist(1024 * kib, "aligned", 7));
  }
  CHECK(dax.noreplace_refused == 0);
}
