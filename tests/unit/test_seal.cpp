// iomap_seal, stabilised kind: sparse, unwritten and reflinked files made
// allocated, written and unshared (checked with a FIEMAP independent of the
// library), data preserved, ENOSPC leaving size and data unchanged, tmpfs
// reported as unverifiable, and every failure path through the seam.
#include "catch.hpp"
#include "loopfs.hpp"
#include "refusals.hpp"
#include "rollback_check.hpp"
#include "test_support.hpp"

#include <mapdirect/seal.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

using namespace mapdirect;
using mdtest::temp_file;

namespace {

struct raw_extent {
  std::uint64_t logical, length;
  std::uint32_t flags;
};

// FIEMAP straight from the kernel (not through the library under test).
// Returns false when the file system has no FIEMAP.
bool raw_fiemap(int fd, std::uint64_t off, std::uint64_t len, std::vector<raw_extent>& out) {
  out.clear();
  const std::uint32_t cap = 4096;
  std::vector<unsigned char> buf(sizeof(struct fiemap) + cap * sizeof(struct fiemap_extent));
  auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
  fm->fm_start = off;
  fm->fm_length = len;
  fm->fm_extent_count = cap;
  if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) return false;
  for (std::uint32_t i = 0; i < fm->fm_mapped_extents; ++i)
    out.push_back({fm->fm_extents[i].fe_logical, fm->fm_extents[i].fe_length, fm->fm_extents[i].fe_flags});
  return true;
}

// Empty string when [off, off+len) is covered by extents that are all
// allocated, written and unshared; else what is wrong.
std::string stability_problem(int fd, std::uint64_t off, std::uint64_t len) {
  std::vector<raw_extent> ext;
  if (!raw_fiemap(fd, off, len, ext)) return "no FIEMAP";
  std::uint64_t pos = off;
  const std::uint32_t bad = FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_SHARED |
                            FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_ENCODED;
  for (const auto& e : ext) {
    if (e.logical > pos) return "hole at " + std::to_string(pos);
    if (e.flags & bad) return "extent at " + std::to_string(e.logical) + " has flags " + std::to_string(e.flags);
    pos = std::max(pos, e.logical + e.length);
  }
  if (pos < off + len) return "hole at " + std::to_string(pos) + " to the end";
  return {};
}

bool any_extent_with(int fd, std::uint64_t off, std::uint64_t len, std::uint32_t flag) {
  std::vector<raw_extent> ext;
  if (!raw_fiemap(fd, off, len, ext)) return false;
  for (const auto& e : ext)
    if (e.flags & flag) return true;
  return false;
}

std::string read_range(int fd, std::uint64_t off, std::size_t n) {
  std::string s(n, '\0');
  REQUIRE(::pread(fd, s.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
  return s;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

void write_at(int fd, std::uint64_t off, const std::string& s) {
  REQUIRE(::pwrite(fd, s.data(), s.size(), static_cast<off_t>(off)) == static_cast<ssize_t>(s.size()));
}

bool dir_has_fiemap(const std::string& dir) {
  temp_file probe(dir, 4096);
  std::vector<raw_extent> ext;
  return raw_fiemap(probe.fd(), 0, 4096, ext);
}

constexpr std::uint64_t MiB = 1u << 20;
// A loop-mounted XFS with reflink, for shared (FICLONE) extents.
auto reflink_xfs(std::string& why) {
  mdtest::loopfs_options o;
  o.fstype = "xfs";
  o.mkfs_args = {"-m", "reflink=1"};
  o.size = 320 * MiB;
  return mdtest::loopfs::create(o, why);
}
}  // namespace

TEST_CASE("seal: sparse file becomes allocated and written, data unchanged", "[seal]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  temp_file f(mdtest::test_dir(), MiB);
  const std::string data = random_bytes(5000, 1);
  write_at(f.fd(), 64 * 1024 + 123, data);  // left dirty in the page cache on purpose
  const std::string before = f.read_all();
  REQUIRE_FALSE(stability_problem(f.fd(), 0, MiB).empty());

  auto s = iomap_seal::acquire(f.fd(), 0, MiB);
  INFO(last_error_detail());
  REQUIRE(s);
  CHECK(s.value().kind() == seal_kind::stabilised);
  CHECK(s.value().verified());
  CHECK(s.value().report().allocated_bytes > 0);
  CHECK(s.value().report().extents >= 1);
  CHECK(stability_problem(f.fd(), 0, MiB).empty());
  mdtest::check_file_holds(f.fd(), before);
  auto v = s.value().verify();
  REQUIRE(v);
  CHECK(v.value() == s.value().report().extents);
  REQUIRE(s.value().release());
  CHECK_FALSE(static_cast<bool>(s.value()));
  CHECK(s.value().release());  // releasing twice is harmless
}

TEST_CASE("seal: preallocated (unwritten) extents are written, dirty data over them survives", "[seal]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  temp_file f(mdtest::test_dir());
  if (::fallocate(f.fd(), 0, 0, static_cast<off_t>(MiB)) != 0) {
    WARN("skipped: fallocate unsupported in the test directory");
    return;
  }
  if (!any_extent_with(f.fd(), 0, MiB, FIEMAP_EXTENT_UNWRITTEN)) {
    WARN("skipped: this file system does not report unwritten extents after fallocate");
    return;
  }
  // Written through the page cache only: FIEMAP may still say "unwritten"
  // here, and a blind zero-fill would destroy it.
  const std::string data = random_bytes(10000, 2);
  write_at(f.fd(), 300000, data);
  const std::string before = f.read_all();

  auto s = iomap_seal::acquire(f.fd(), 0, 0);  // 0: to end of file
  INFO(last_error_detail());
  REQUIRE(s);
  CHECK(s.value().length() == MiB);
  CHECK(s.value().report().zeroed_bytes > 0);
  CHECK(s.value().report().allocated_bytes == 0);
  CHECK(stability_problem(f.fd(), 0, MiB).empty());
  CHECK((f.read_all() == before));  // as bool: printing megabytes would drown the report
}

TEST_CASE("seal: reflinked extents on XFS are unshared, both files keep their data", "[seal][loopfs]") {
  std::string why;
  auto fs = reflink_xfs(why);
  if (!fs) {
    WARN("skipped: " << why);
    return;
  }
  const std::string a_path = fs->path() + "/a", b_path = fs->path() + "/b";
  const int a = ::open(a_path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(a >= 0);
  const std::string data = random_bytes(MiB, 3);
  write_at(a, 0, data);
  REQUIRE(::fsync(a) == 0);
  const int b = ::open(b_path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(b >= 0);
  REQUIRE(::ioctl(b, FICLONE, a) == 0);
  // b: 1 MiB shared with a, then 1 MiB hole.
  REQUIRE(::ftruncate(b, static_cast<off_t>(2 * MiB)) == 0);
  REQUIRE(any_extent_with(b, 0, MiB, FIEMAP_EXTENT_SHARED));
  {
    auto s = iomap_seal::acquire(b, 0, 2 * MiB);
    INFO(last_error_detail());
    REQUIRE(s);
    CHECK(s.value().report().unshared_bytes == MiB);
    CHECK_FALSE(s.value().report().rewrote_shared);  // XFS has FALLOC_FL_UNSHARE_RANGE
    CHECK(s.value().report().allocated_bytes == MiB);
    CHECK(stability_problem(b, 0, 2 * MiB).empty());
    CHECK_FALSE(any_extent_with(a, 0, MiB, FIEMAP_EXTENT_SHARED));
  }
  CHECK((read_range(b, 0, MiB) == data));                      // as bool: printing megabytes would drown the report
  CHECK((read_range(b, MiB, MiB) == std::string(MiB, '\0')));  // as bool: printing megabytes would drown the report
  CHECK((read_range(a, 0, MiB) == data));                      // as bool: printing megabytes would drown the report
  ::close(a);
  ::close(b);
}

TEST_CASE("seal: shared extents fall back to a copy-on-write rewrite without FALLOC_FL_UNSHARE_RANGE",
          "[seal][loopfs]") {
  std::string why;
  auto fs = reflink_xfs(why);
  if (!fs) {
    WARN("skipped: " << why);
    return;
  }
  // A kernel without unshare (btrfs, older XFS) answers EOPNOTSUPP.
  struct no_unshare : syscall_interposer {
    int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
      if (mode & FALLOC_FL_UNSHARE_RANGE) {
        errno = EOPNOTSUPP;
        return -1;
      }
      return syscall_interposer::fallocate(fd, mode, off, len);
    }
  } ip;
  const std::string a_path = fs->path() + "/a", b_path = fs->path() + "/b";
  const int a = ::open(a_path.c_str(), O_RDWR | O_CREAT, 0644);
  const int b = ::open(b_path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE((a >= 0 && b >= 0));
  const std::string data = random_bytes(512 * 1024, 4);
  write_at(a, 0, data);
  REQUIRE(::fsync(a) == 0);
  REQUIRE(::ioctl(b, FICLONE, a) == 0);
  {
    scoped_syscall_interposer use(ip);
    auto s = iomap_seal::acquire(b, 0, 0);
    INFO(last_error_detail());
    REQUIRE(s);
    CHECK(s.value().report().rewrote_shared);
    CHECK(s.value().report().unshared_bytes == data.size());
  }
  CHECK(stability_problem(b, 0, data.size()).empty());
  CHECK(read_range(b, 0, data.size()) == data);
  CHECK(read_range(a, 0, data.size()) == data);
  ::close(a);
  ::close(b);
}

TEST_CASE("seal: ENOSPC on a tiny file system is a clear error and changes neither size nor data", "[seal][loopfs]") {
  std::string why;
  mdtest::loopfs_options o;
  o.fstype = "ext4";
  o.size = 16 * MiB;
  auto fs = mdtest::loopfs::create(o, why);
  if (!fs) {
    WARN("skipped: " << why);
    return;
  }
  const std::string path = fs->path() + "/big";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  const std::string data = random_bytes(MiB, 5);
  write_at(fd, 0, data);
  REQUIRE(::fsync(fd) == 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(64 * MiB)) == 0);  // 63 MiB of holes on a 16 MiB file system

  auto s = iomap_seal::acquire(fd, 0, 0);
  REQUIRE_FALSE(s);
  CHECK(s.error() == std::errc::no_space_on_device);
  const std::string detail = last_error_detail();
  INFO(detail);
  CHECK(detail.find("ENOSPC") != std::string::npos);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == static_cast<off_t>(64 * MiB));
  CHECK((read_range(fd, 0, MiB) == data));  // as bool: printing megabytes would drown the report
  CHECK_FALSE(is_sealed(fd).value());

  // With extend, a range past EOF that cannot be allocated leaves the size alone too.
  REQUIRE(::ftruncate(fd, static_cast<off_t>(MiB)) == 0);
  seal_options grow;
  grow.extend = true;
  auto g = iomap_seal::acquire(fd, 0, 64 * MiB, grow);
  REQUIRE_FALSE(g);
  CHECK(g.error() == std::errc::no_space_on_device);
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == static_cast<off_t>(MiB));
  CHECK((read_range(fd, 0, MiB) == data));  // as bool: printing megabytes would drown the report
  ::close(fd);
}

TEST_CASE("seal: ENOSPC midway (after some holes were filled) keeps size and data", "[seal]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  temp_file f(mdtest::test_dir(), 4 * MiB);
  // Data, hole, data, hole: two separate hole fills.
  const std::string d1 = random_bytes(MiB, 6), d2 = random_bytes(MiB, 7);
  write_at(f.fd(), 0, d1);
  write_at(f.fd(), 2 * MiB, d2);
  REQUIRE(::fsync(f.fd()) == 0);
  const std::string before = f.read_all();
  struct enospc_on_second : syscall_interposer {
    int calls = 0;
    int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
      if (++calls == 2) {
        errno = ENOSPC;
        return -1;
      }
      return syscall_interposer::fallocate(fd, mode, off, len);
    }
  } ip;
  {
    scoped_syscall_interposer use(ip);
    auto s = iomap_seal::acquire(f.fd(), 0, 4 * MiB);
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::errc::no_space_on_device);
    INFO(last_error_detail());
    CHECK(std::string(last_error_detail()).find("fallocate") != std::string::npos);
  }
  CHECK(ip.calls == 2);
  mdtest::check_file_holds(f.fd(), before);

  // Extending: ENOSPC while writing back the converted pages after the file
  // grew rolls the size back (the first fdatasync is the one before scanning).
  struct enospc_on_write : syscall_interposer {
    int calls = 0;
    int fdatasync(int fd) noexcept override {
      if (++calls >= 2) {
        errno = ENOSPC;
        return -1;
      }
      return syscall_interposer::fdatasync(fd);
    }
  } wp;
  REQUIRE(::fallocate(f.fd(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(4 * MiB), static_cast<off_t>(MiB)) == 0);
  seal_options grow;
  grow.extend = true;
  {
    scoped_syscall_interposer use(wp);
    auto s = iomap_seal::acquire(f.fd(), 0, 5 * MiB, grow);
    if (s) {
      WARN("skipped: the preallocated tail was not unwritten here, so no write was needed");
      return;
    }
    CHECK(s.error() == std::errc::no_space_on_device);
  }
  struct stat st {};
  REQUIRE(::fstat(f.fd(), &st) == 0);
  detail::durability_registry::clear(st.st_dev, st.st_ino);  // marked by the injected ENOSPC; inode numbers get reused
  mdtest::check_file_holds(f.fd(), before);
}

TEST_CASE("seal: extend grows the file over a stable range; without it a range past EOF is refused", "[seal]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  temp_file f(mdtest::test_dir(), 8192);
  write_at(f.fd(), 0, "head");
  auto refused = iomap_seal::acquire(f.fd(), 4096, MiB);
  REQUIRE_FALSE(refused);
  CHECK(refused.error() == errc::beyond_eof);
  CHECK(f.size() == 8192);

  seal_options o;
  o.extend = true;
  auto s = iomap_seal::acquire(f.fd(), 4096, MiB, o);
  INFO(last_error_detail());
  REQUIRE(s);
  CHECK(s.value().report().extended);
  CHECK(f.size() == 4096 + MiB);
  CHECK(stability_problem(f.fd(), 4096, MiB).empty());
  CHECK(read_range(f.fd(), 0, 4) == "head");
}

namespace {
// Records every progress call; cancels at call number `cancel_at` (0: never).
struct progress_log {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  std::size_t cancel_at = 0;
  static bool record(std::uint64_t done, std::uint64_t total, void* ctx) noexcept {
    auto* self = static_cast<progress_log*>(ctx);
    self->calls.emplace_back(done, total);
    return self->cancel_at == 0 || self->calls.size() < self->cancel_at;
  }
};
}  // namespace

TEST_CASE("seal: progress reports monotonic work up to the total over a large sparse range", "[seal][progress]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  // 140 MiB sparse with data islands: holes to allocate across several
  // 64 MiB steps (fallocate of holes costs no writes).
  const std::uint64_t len = 140 * MiB;
  temp_file f(mdtest::test_dir(), len);
  for (std::uint64_t at = 0; at < len; at += 32 * MiB) write_at(f.fd(), at + 4096, "island");
  ::fsync(f.fd());
  progress_log log;
  seal_options o;
  o.progress = &progress_log::record;
  o.progress_context = &log;
  auto s = iomap_seal::acquire(f.fd(), 0, len, o);
  INFO(last_error_detail());
  if (!s && s.error() == std::errc::no_space_on_device) {
    WARN("skipped: no room for 140 MiB in the test directory");
    return;
  }
  REQUIRE(s);
  REQUIRE(log.calls.size() >= 3);  // two steps of 64 MiB inside a 140 MiB pass, plus the end of each pass
  for (std::size_t i = 0; i < log.calls.size(); ++i) {
    CHECK(log.calls[i].second == 2 * len);
    if (i) CHECK(log.calls[i].first > log.calls[i - 1].first);
  }
  CHECK(log.calls.back().first == 2 * len);
  CHECK(s.value().report().allocated_bytes > 0);
  CHECK(read_range(f.fd(), 32 * MiB + 4096, 6) == "island");
}

TEST_CASE("seal: a progress callback that cancels leaves size and data unchanged", "[seal][progress]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  for (std::size_t cancel_at : {std::size_t{1}, std::size_t{2}}) {
    // Past EOF with extend: the second pass runs after the file grew, so a
    // cancel there must shrink it back.
    temp_file f(mdtest::test_dir(), 8192);
    write_at(f.fd(), 0, "head");
    const std::string before = f.read_all();
    progress_log log;
    log.cancel_at = cancel_at;
    seal_options o;
    o.extend = true;
    o.progress = &progress_log::record;
    o.progress_context = &log;
    auto s = iomap_seal::acquire(f.fd(), 4096, 4 * MiB, o);
    INFO("cancel at call " << cancel_at << ": " << last_error_detail());
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::errc::operation_canceled);
    CHECK(log.calls.size() == cancel_at);
    mdtest::check_file_holds(f.fd(), before);
    CHECK(std::string(last_error_detail()).find("canceled by seal_options::progress") != std::string::npos);
    // Nothing stays sealed: the size can change again.
    CHECK(::ftruncate(f.fd(), 16384) == 0);
  }
}

// Attack finding: when putting the size back fails (EIO), acquire must not
// claim it was restored; the detail names the size the file has.
TEST_CASE("seal: a cancel whose size restore fails says so, with the size the file has", "[seal][progress]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  mdtest::no_shrink<syscall_interposer> refuse;
  temp_file f(mdtest::test_dir(), 8192);
  progress_log log;
  log.cancel_at = 2;  // the second pass: after acquire grew the file
  seal_options o;
  o.extend = true;
  o.progress = &progress_log::record;
  o.progress_context = &log;
  std::string detail;
  {
    scoped_syscall_interposer scope(refuse);
    auto s = iomap_seal::acquire(f.fd(), 4096, 4 * MiB, o);
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::errc::operation_canceled);
    detail = last_error_detail();
  }
  INFO(detail);
  struct stat st {};
  REQUIRE(::fstat(f.fd(), &st) == 0);
  REQUIRE(st.st_size == static_cast<off_t>(4096 + 4 * MiB));  // the restore really failed
  CHECK(detail.find("is restored") == std::string::npos);
  CHECK(detail.find("restoring the file's size to 8192 failed with EIO") != std::string::npos);
  CHECK(detail.find(std::to_string(4096 + 4 * MiB) + " bytes now") != std::string::npos);
  // Without the failure, the detail says the size is back.
  temp_file g(mdtest::test_dir(), 8192);
  progress_log again;
  again.cancel_at = 2;
  o.progress_context = &again;
  auto s = iomap_seal::acquire(g.fd(), 4096, 4 * MiB, o);
  REQUIRE_FALSE(s);
  CHECK(std::string(last_error_detail()).find("size is restored to 8192") != std::string::npos);
}

TEST_CASE("seal: tmpfs has no FIEMAP: a distinct unverifiable result, never a silent success", "[seal]") {
  if (::access("/dev/shm", W_OK) != 0) {
    WARN("skipped: /dev/shm (tmpfs) is not writable here");
    return;
  }
  temp_file f("/dev/shm", 64 * 1024);
  struct stat st {};
  REQUIRE(::fstat(f.fd(), &st) == 0);
  const auto blocks_before = st.st_blocks;
  auto s = iomap_seal::acquire(f.fd(), 0, 0);
  REQUIRE_FALSE(s);
  CHECK(s.error() == errc::block_map_unverifiable);
  CHECK(s.error() == std::errc::operation_not_supported);
  CHECK(std::string(last_error_detail()).find("nothing was changed") != std::string::npos);
  REQUIRE(::fstat(f.fd(), &st) == 0);
  CHECK(st.st_blocks == blocks_before);

  seal_options o;
  o.allow_unverifiable = true;
  auto u = iomap_seal::acquire(f.fd(), 0, 0, o);
  REQUIRE(u);
  CHECK_FALSE(u.value().verified());
  CHECK(u.value().report().extents == 0);
  REQUIRE(::fstat(f.fd(), &st) == 0);
  CHECK(st.st_blocks >= 128);  // the pages were allocated
  auto v = u.value().verify();
  REQUIRE_FALSE(v);
  CHECK(v.error() == errc::block_map_unverifiable);
}

TEST_CASE("seal: verify notices a block-map change made behind the seal's back", "[seal]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  temp_file f(mdtest::test_dir(), 256 * 1024);
  auto s = iomap_seal::acquire(f.fd(), 0, 0);
  REQUIRE(s);
  REQUIRE(s.value().verify());
  // Raw syscalls bypass file.hpp: nothing in user space can stop them.
  REQUIRE(::fallocate(f.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 65536, 65536) == 0);
  auto v = s.value().verify();
  REQUIRE_FALSE(v);
  CHECK(v.error() == errc::block_map_unstable);
  CHECK(std::string(last_error_detail()).find("65536") != std::string::npos);
  REQUIRE(::ftruncate(f.fd(), 4096) == 0);
  v = s.value().verify();
  REQUIRE_FALSE(v);
  CHECK(std::string(last_error_detail()).find("shrank") != std::string::npos);
}

TEST_CASE("seal: bad input is refused with a clear error and changes nothing", "[seal]") {
  temp_file f(mdtest::test_dir(), 4096);
  auto neg = iomap_seal::acquire(-1, 0, 4096);
  REQUIRE_FALSE(neg);
  CHECK(neg.error() == errc::invalid_argument);

  const int ro = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(ro >= 0);
  auto r = iomap_seal::acquire(ro, 0, 4096);
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::invalid_argument);
  CHECK(std::string(last_error_detail()).find("O_RDWR") != std::string::npos);
  ::close(ro);

  const int dir = ::open(mdtest::test_dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(dir >= 0);
  auto d = iomap_seal::acquire(dir, 0, 4096);
  REQUIRE_FALSE(d);
  CHECK(d.error() == errc::invalid_argument);
  ::close(dir);

  auto past = iomap_seal::acquire(f.fd(), 4096, 0);
  REQUIRE_FALSE(past);
  CHECK(past.error() == errc::beyond_eof);
  auto overflow = iomap_seal::acquire(f.fd(), ~std::uint64_t{0} - 10, 100);
  REQUIRE_FALSE(overflow);
  CHECK(overflow.error() == errc::invalid_argument);

  seal_options bad_signal;
  bad_signal.lease = true;
  bad_signal.lease_signal = SIGUSR1;
  auto b = iomap_seal::acquire(f.fd(), 0, 4096, bad_signal);
  REQUIRE_FALSE(b);
  CHECK(b.error() == errc::invalid_argument);
  CHECK(f.size() == 4096);
  CHECK_FALSE(is_sealed(f.fd()).value());
}

#if !MAPDIRECT_HAS_NATIVE_SEAL
TEST_CASE("seal: method native without a configured kernel ABI is mode_unavailable", "[seal]") {
  temp_file f(mdtest::test_dir(), 4096);
  seal_options o;
  o.method = seal_method::native;
  auto s = iomap_seal::acquire(f.fd(), 0, 4096, o);
  REQUIRE_FALSE(s);
  CHECK(s.error() == errc::mode_unavailable);
  CHECK(std::string(last_error_detail()).find("MAPDIRECT_F_MAY_SEAL_IOMAP") != std::string::npos);
}
#endif

TEST_CASE("seal: kernel errors through the seam", "[seal]") {
  temp_file f(mdtest::test_dir(), 64 * 1024);
  struct scripted : syscall_interposer {
    int fiemap_errno = 0, fdatasync_errno = 0, fallocate_errno = 0;
    int ioctl(int fd, unsigned long request, void* arg) noexcept override {
      if (request == FS_IOC_FIEMAP && fiemap_errno) {
        errno = fiemap_errno;
        return -1;
      }
      return syscall_interposer::ioctl(fd, request, arg);
    }
    int fdatasync(int fd) noexcept override {
      if (fdatasync_errno) {
        errno = fdatasync_errno;
        return -1;
      }
      return syscall_interposer::fdatasync(fd);
    }
    int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
      if (fallocate_errno) {
        errno = fallocate_errno;
        return -1;
      }
      return syscall_interposer::fallocate(fd, mode, off, len);
    }
  } ip;
  scoped_syscall_interposer use(ip);

  ip.fiemap_errno = ENOTTY;
  auto a = iomap_seal::acquire(f.fd(), 0, 0);
  REQUIRE_FALSE(a);
  CHECK(a.error() == errc::block_map_unverifiable);

  ip.fiemap_errno = EIO;
  auto b = iomap_seal::acquire(f.fd(), 0, 0);
  REQUIRE_FALSE(b);
  CHECK(b.error() == std::errc::io_error);

  ip.fiemap_errno = 0;
  ip.fdatasync_errno = EIO;
  auto c = iomap_seal::acquire(f.fd(), 0, 0);
  REQUIRE_FALSE(c);
  CHECK(c.error() == std::errc::io_error);
  CHECK(std::string(last_error_detail()).find("fdatasync") != std::string::npos);
  {
    // A write-back error may be the only report of lost data: it is sticky for the file.
    struct stat st {};
    REQUIRE(::fstat(f.fd(), &st) == 0);
    CHECK(detail::durability_registry::is_lost(st.st_dev, st.st_ino));
    detail::durability_registry::clear(st.st_dev, st.st_ino);  // inode numbers get reused by later tests
  }

  ip.fdatasync_errno = 0;
  ip.fallocate_errno = ETXTBSY;  // natively sealed by another holder
  auto d = iomap_seal::acquire(f.fd(), 0, 0);
  if (!d) {
    CHECK(d.error() == errc::sealed);
    CHECK(d.error() == std::errc::text_file_busy);
  } else {
    WARN("skipped: the range had no holes, so fallocate was not called");
  }
  CHECK(f.size() == 64 * 1024);
  CHECK_FALSE(is_sealed(f.fd()).value());
}

TEST_CASE("seal: move-only RAII: moving transfers the seal, destruction releases it", "[seal]") {
  temp_file f(mdtest::test_dir(), 16384);
  seal_options o;
  o.allow_unverifiable = true;  // whatever the test directory is
  {
    auto s = iomap_seal::acquire(f.fd(), 0, 0, o);
    REQUIRE(s);
    iomap_seal a = std::move(s.value());
    CHECK(static_cast<bool>(a));
    CHECK_FALSE(static_cast<bool>(s.value()));
    CHECK(is_sealed(f.fd()).value());
    iomap_seal b;
    b = std::move(a);
    CHECK(static_cast<bool>(b));
    CHECK(b.native_handle() >= 0);
    CHECK(b.native_handle() != f.fd());
    CHECK(is_sealed(f.fd()).value());
  }
  CHECK_FALSE(is_sealed(f.fd()).value());
}

TEST_CASE("map with options.seal: the range is stable before mapping and the mapping owns the seal",
          "[seal][mapping]") {
  if (!dir_has_fiemap(mdtest::test_dir())) {
    WARN("skipped: the test directory's file system has no FIEMAP");
    return;
  }
  temp_file f(mdtest::test_dir(), 512 * 1024);  // sparse
  map_options o;
  o.seal = seal_options{};
  {
    auto m = direct_mapping::map(f.fd(), 0, 0, o);
    INFO(last_error_detail());
    REQUIRE(m);
    REQUIRE(static_cast<bool>(m.value().seal()));
    CHECK(m.value().seal().verified());
    CHECK(m.value().seal().offset() == 0);
    CHECK(m.value().seal().length() == 512 * 1024);
    CHECK(stability_problem(f.fd(), 0, 512 * 1024).empty());
    CHECK(is_sealed(f.fd()).value());
    REQUIRE(m.value().copy_persist(4096, "sealed", 6));
    direct_mapping moved = std::move(m.value());
    CHECK(static_cast<bool>(moved.seal()));
    CHECK_FALSE(static_cast<bool>(m.value().seal()));
    REQUIRE(moved.close());
    CHECK_FALSE(is_sealed(f.fd()).value());
  }
  CHECK(read_range(f.fd(), 4096, 6) == "sealed");
}

TEST_CASE("map with options.seal: a seal that cannot be had fails the map and leaves no mapping", "[seal][mapping]") {
  if (::access("/dev/shm", W_OK) != 0) {
    WARN("skipped: /dev/shm (tmpfs) is not writable here");
    return;
  }
  temp_file f("/dev/shm", 8192);
  mdtest::recording_interposer tracker;  // checks that everything mapped is unmapped
  mapdirect::scoped_syscall_interposer tracking(tracker);
  map_options o;
  o.seal = seal_options{};
  auto m = direct_mapping::map(f.fd(), 0, 0, o);
  REQUIRE_FALSE(m);
  CHECK(m.error() == errc::block_map_unverifiable);
  CHECK(tracker.bytes_still_mapped() == 0);
  CHECK_FALSE(mdtest::path_is_mapped(f.path()));
  o.seal->allow_unverifiable = true;
  auto ok = direct_mapping::map(f.fd(), 0, 0, o);
  REQUIRE(ok);
  CHECK_FALSE(ok.value().seal().verified());
}
