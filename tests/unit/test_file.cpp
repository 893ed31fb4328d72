// file.hpp: the block-map-changing helpers, their argument checks, and their
// refusal (errc::sealed == std::errc::text_file_busy) while a seal is held.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/file.hpp>
#include <mapdirect/seal.hpp>

#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {
std::uint64_t allocated_bytes(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}
}  // namespace

TEST_CASE("file helpers: resize, truncate, extend and punch_hole do what they say", "[file]") {
  temp_file f(mdtest::test_dir());
  REQUIRE(extend_file(f.fd(), 1 << 20));
  CHECK(f.size() == 1 << 20);
  const std::uint64_t preallocated = allocated_bytes(f.fd());
  CHECK(preallocated >= (1u << 20));
  REQUIRE(::pwrite(f.fd(), "abcd", 4, 8192) == 4);

  auto punched = punch_hole(f.fd(), 0, 512 * 1024);
  if (punched) {
    CHECK(allocated_bytes(f.fd()) < preallocated);
    CHECK(f.size() == 1 << 20);
  } else {
    CHECK(punched.error() == std::errc::operation_not_supported);
    WARN("punch_hole unsupported in the test directory: " << last_error_detail());
  }
  REQUIRE(truncate_file(f.fd(), 4096));
  CHECK(f.size() == 4096);
  REQUIRE(resize_file(f.fd(), 3 * 4096));
  CHECK(f.size() == 3 * 4096);
  REQUIRE(resize_file(f.fd(), 4096));
  CHECK(f.size() == 4096);
  REQUIRE(extend_file(f.fd(), 8192, false));
  CHECK(f.size() == 8192);
  REQUIRE(extend_file(f.fd(), 8192));  // no change is fine
}

TEST_CASE("file helpers: bad input gives a clear error and changes nothing", "[file]") {
  temp_file f(mdtest::test_dir(), 8192);
  REQUIRE(::pwrite(f.fd(), "keep", 4, 0) == 4);
  auto t = truncate_file(f.fd(), 10000);
  REQUIRE_FALSE(t);
  CHECK(t.error() == errc::invalid_argument);
  CHECK(std::string(last_error_detail()).find("extend_file") != std::string::npos);
  auto e = extend_file(f.fd(), 100);
  REQUIRE_FALSE(e);
  CHECK(e.error() == errc::invalid_argument);
  auto p0 = punch_hole(f.fd(), 0, 0);
  REQUIRE_FALSE(p0);
  CHECK(p0.error() == errc::invalid_argument);
  auto pe = punch_hole(f.fd(), 8192, 4096);
  REQUIRE_FALSE(pe);
  CHECK(pe.error() == errc::beyond_eof);
  auto po = punch_hole(f.fd(), 4096, ~std::uint64_t{0});
  REQUIRE_FALSE(po);
  CHECK(po.error() == errc::invalid_argument);
  auto r = resize_file(f.fd(), ~std::uint64_t{0});
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::invalid_argument);
  auto bad = resize_file(-1, 0);
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::invalid_argument);
  CHECK(f.size() == 8192);
  CHECK(f.read_all().substr(0, 4) == "keep");
}

TEST_CASE("file helpers refuse with errc::sealed while a seal is held, on any descriptor of the file", "[file][seal]") {
  temp_file f(mdtest::test_dir(), 64 * 1024);
  REQUIRE(::pwrite(f.fd(), "data", 4, 100) == 4);
  seal_options o;
  o.allow_unverifiable = true;  // the seal check does not depend on FIEMAP
  auto s = iomap_seal::acquire(f.fd(), 0, 0, o);
  INFO(last_error_detail());
  REQUIRE(s);
  REQUIRE(is_sealed(f.fd()).value());

  // Another open file description of the same file: identified by st_dev+st_ino.
  const int other = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(other >= 0);
  for (const int fd : {f.fd(), other}) {
    auto r = resize_file(fd, 4096);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::sealed);
    CHECK(r.error() == std::errc::text_file_busy);
    CHECK(std::string(last_error_detail()).find("iomap_seal") != std::string::npos);
    auto t = truncate_file(fd, 0);
    REQUIRE_FALSE(t);
    CHECK(t.error() == errc::sealed);
    auto e = extend_file(fd, 1 << 20);
    REQUIRE_FALSE(e);
    CHECK(e.error() == errc::sealed);
    auto p = punch_hole(fd, 0, 4096);
    REQUIRE_FALSE(p);
    CHECK(p.error() == errc::sealed);
  }
  CHECK(f.size() == 64 * 1024);
  CHECK(f.read_all().substr(100, 4) == "data");

  // Two seals on one file: refused until both are gone.
  auto s2 = iomap_seal::acquire(other, 0, 4096, o);
  REQUIRE(s2);
  REQUIRE(s.value().release());
  CHECK(resize_file(f.fd(), 4096).error() == errc::sealed);
  REQUIRE(s2.value().release());
  CHECK_FALSE(is_sealed(other).value());

  // Allowed again after release.
  CHECK(resize_file(other, 32 * 1024));
  CHECK(f.size() == 32 * 1024);
  CHECK(extend_file(f.fd(), 64 * 1024));
  CHECK(f.size() == 64 * 1024);
  ::close(other);
}

TEST_CASE("file helpers map the kernel's ETXTBSY (a native seal) to errc::sealed", "[file]") {
  temp_file f(mdtest::test_dir(), 8192);
  struct txtbsy : syscall_interposer {
    int ftruncate(int, off_t) noexcept override {
      errno = ETXTBSY;
      return -1;
    }
    int fallocate(int, int, off_t, off_t) noexcept override {
      errno = ETXTBSY;
      return -1;
    }
  } ip;
  scoped_syscall_interposer use(ip);
  for (auto r : {resize_file(f.fd(), 4096), truncate_file(f.fd(), 0), extend_file(f.fd(), 1 << 20),
                 extend_file(f.fd(), 1 << 20, false), punch_hole(f.fd(), 0, 4096)}) {
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::sealed);
    CHECK(r.error() == std::errc::text_file_busy);
  }
  CHECK(f.size() == 8192);
}

TEST_CASE("extend_file: a failed preallocation leaves the size unchanged", "[file]") {
  temp_file f(mdtest::test_dir(), 8192);
  struct enospc : syscall_interposer {
    int fallocate(int fd, int, off_t off, off_t len) noexcept override {
      // Grow part-way like a real fallocate that ran out of space, then fail.
      (void)syscall_interposer::ftruncate(fd, off + len / 2);
      errno = ENOSPC;
      return -1;
    }
  } ip;
  scoped_syscall_interposer use(ip);
  auto e = extend_file(f.fd(), 1 << 20);
  REQUIRE_FALSE(e);
  CHECK(e.error() == std::errc::no_space_on_device);
  CHECK(f.size() == 8192);
}
