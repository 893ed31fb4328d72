// iomap_seal's native path on an emulated kernel carrying the MAP_DIRECT
// series: F_MAY_SEAL_IOMAP (1039 in this binary) answered through the seam,
// with the emulated kernel refusing block-map changes of a sealed inode with
// ETXTBSY.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/file.hpp>
#include <mapdirect/seal.hpp>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include <sys/stat.h>

using namespace mapdirect;
using mdtest::temp_file;

static_assert(MAPDIRECT_F_MAY_SEAL_IOMAP == 1039, "built for the emulated MAP_DIRECT kernel");

namespace {
// The emulated kernel: F_MAY_SEAL_IOMAP pins the inode's block map; while
// pinned, ftruncate and fallocate fail with ETXTBSY.
struct native_kernel : syscall_interposer {
  int seal_errno = 0;            // answer to F_MAY_SEAL_IOMAP (0: success)
  std::vector<long> seal_calls;  // the argument of every F_MAY_SEAL_IOMAP call
  std::set<std::pair<dev_t, ino_t>> pinned;

  static std::pair<dev_t, ino_t> inode(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return {0, 0};
    return {st.st_dev, st.st_ino};
  }
  int fcntl(int fd, int cmd, long arg) noexcept override {
    if (cmd != MAPDIRECT_F_MAY_SEAL_IOMAP) return syscall_interposer::fcntl(fd, cmd, arg);
    seal_calls.push_back(arg);
    if (seal_errno) {
      errno = seal_errno;
      return -1;
    }
    if (arg) pinned.insert(inode(fd));
    else pinned.erase(inode(fd));
    return 0;
  }
  int ftruncate(int fd, off_t len) noexcept override {
    if (pinned.count(inode(fd))) {
      errno = ETXTBSY;
      return -1;
    }
    return syscall_interposer::ftruncate(fd, len);
  }
  int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
    if (pinned.count(inode(fd))) {
      errno = ETXTBSY;
      return -1;
    }
    return syscall_interposer::fallocate(fd, mode, off, len);
  }
};

seal_options allow_any_fs() {
  seal_options o;
  o.allow_unverifiable = true;  // the test directory may be tmpfs
  return o;
}
}  // namespace

TEST_CASE("native seal: missing CAP_LINUX_IMMUTABLE is EPERM/EACCES with a message naming it", "[seal][native]") {
  for (const int e : {EPERM, EACCES}) {
    INFO("errno " << e);
    temp_file f(mdtest::test_dir(), 64 * 1024);
    REQUIRE(::pwrite(f.fd(), "data", 4, 10) == 4);
    native_kernel k;
    k.seal_errno = e;
    scoped_syscall_interposer use(k);
    for (const auto method : {seal_method::automatic, seal_method::native}) {
      seal_options o = allow_any_fs();
      o.method = method;
      auto s = iomap_seal::acquire(f.fd(), 0, 0, o);
      REQUIRE_FALSE(s);
      CHECK(s.error() == std::error_code(e, std::system_category()));
      CHECK(s.error() == (e == EPERM ? std::errc::operation_not_permitted : std::errc::permission_denied));
      const std::string detail = last_error_detail();
      INFO(detail);
      CHECK(detail.find("CAP_LINUX_IMMUTABLE") != std::string::npos);
      CHECK_FALSE(is_sealed(f.fd()).value());
    }
    CHECK(k.seal_calls == std::vector<long>{1, 1});
    CHECK(f.size() == 64 * 1024);
    CHECK(f.read_all().substr(10, 4) == "data");
  }
}

TEST_CASE("native seal: success pins the block map until release", "[seal][native]") {
  temp_file f(mdtest::test_dir(), 64 * 1024);
  native_kernel k;
  scoped_syscall_interposer use(k);
  {
    auto s = iomap_seal::acquire(f.fd(), 0, 0, allow_any_fs());
    INFO(last_error_detail());
    REQUIRE(s);
    CHECK(s.value().kind() == seal_kind::native);
    CHECK(k.seal_calls == std::vector<long>{1});
    CHECK(k.pinned.count(native_kernel::inode(f.fd())) == 1);
    CHECK(is_sealed(f.fd()).value());
    // mapdirect's helpers refuse before reaching the kernel...
    auto r = resize_file(f.fd(), 4096);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::sealed);
    // ...and the kernel itself refuses everyone else.
    CHECK(detail::sys::ftruncate(f.fd(), 4096) == -1);
    CHECK(errno == ETXTBSY);
    REQUIRE(s.value().release());
  }
  CHECK(k.seal_calls == std::vector<long>{1, 0});
  CHECK(k.pinned.empty());
  CHECK(resize_file(f.fd(), 4096));
  CHECK(f.size() == 4096);
}

TEST_CASE("native seal: ETXTBSY maps to errc::sealed (== std::errc::text_file_busy)", "[seal][native]") {
  SECTION("the seal call itself reports the file busy") {
    temp_file f(mdtest::test_dir(), 16384);
    native_kernel k;
    k.seal_errno = ETXTBSY;
    scoped_syscall_interposer use(k);
    auto s = iomap_seal::acquire(f.fd(), 0, 0, allow_any_fs());
    REQUIRE_FALSE(s);
    CHECK(s.error() == errc::sealed);
    CHECK(s.error() == std::errc::text_file_busy);
  }
  SECTION("another holder's pin makes stabilising and the helpers fail with errc::sealed") {
    temp_file f(mdtest::test_dir(), 1 << 20);  // sparse: acquiring must allocate
    native_kernel k;
    k.pinned.insert(native_kernel::inode(f.fd()));  // pinned by "another process"
    scoped_syscall_interposer use(k);
    auto s = iomap_seal::acquire(f.fd(), 0, 0, allow_any_fs());
    REQUIRE_FALSE(s);
    CHECK(s.error() == errc::sealed);
    CHECK(s.error() == std::errc::text_file_busy);
    CHECK(k.seal_calls.empty());
    for (auto r : {resize_file(f.fd(), 0), truncate_file(f.fd(), 0), extend_file(f.fd(), 2 << 20),
                   punch_hole(f.fd(), 0, 4096)}) {
      REQUIRE_FALSE(r);
      CHECK(r.error() == errc::sealed);
    }
    CHECK(f.size() == 1 << 20);
  }
}

TEST_CASE("native seal: a kernel without it falls back to stabilised only when automatic", "[seal][native]") {
  temp_file f(mdtest::test_dir(), 16384);
  native_kernel k;
  k.seal_errno = EINVAL;  // a kernel that does not know the fcntl
  scoped_syscall_interposer use(k);
  auto a = iomap_seal::acquire(f.fd(), 0, 0, allow_any_fs());
  REQUIRE(a);
  CHECK(a.value().kind() == seal_kind::stabilised);
  REQUIRE(a.value().release());
  CHECK(k.seal_calls == std::vector<long>{1});  // no unpin for a seal never pinned

  seal_options o = allow_any_fs();
  o.method = seal_method::native;
  auto n = iomap_seal::acquire(f.fd(), 0, 0, o);
  REQUIRE_FALSE(n);
  CHECK(n.error() == errc::mode_unavailable);
  CHECK(std::string(last_error_detail()).find("EINVAL") != std::string::npos);

  o.method = seal_method::stabilised;
  auto st = iomap_seal::acquire(f.fd(), 0, 0, o);
  REQUIRE(st);
  CHECK(st.value().kind() == seal_kind::stabilised);
  CHECK(k.seal_calls.size() == 2);  // stabilised never asks the kernel
}

TEST_CASE("native seal + MAP_DIRECT in one call: map(..., {seal}) pins, then maps direct", "[seal][native][direct]") {
  temp_file f(mdtest::test_dir(), 4u << 20);
  struct kernel : native_kernel {
    bool direct_seen_pinned = false;
    void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
      if (fd >= 0 && (flags & MAPDIRECT_MAP_DIRECT_FLAG)) {
        // MAP_DIRECT is only granted on a pinned block map.
        direct_seen_pinned = pinned.count(inode(fd)) == 1;
        if (!direct_seen_pinned) {
          errno = EPERM;
          return MAP_FAILED;
        }
        return syscall_interposer::mmap(addr, len, prot, MAP_SHARED | (flags & MAP_FIXED), fd, off);
      }
      return syscall_interposer::mmap(addr, len, prot, flags, fd, off);
    }
  } k;
  scoped_syscall_interposer use(k);
  map_options o;
  o.seal = allow_any_fs();
  {
    auto m = direct_mapping::map(f.fd(), 0, 0, o);
    INFO(last_error_detail());
    REQUIRE(m);
    CHECK(m.value().mode() == map_mode::direct);
    CHECK(k.direct_seen_pinned);
    CHECK(m.value().seal().kind() == seal_kind::native);
    REQUIRE(m.value().copy_persist(100, "pinned", 6));
  }
  CHECK(k.pinned.empty());
  CHECK(k.seal_calls == std::vector<long>{1, 0});
  CHECK(f.read_all().substr(100, 6) == "pinned");
}
