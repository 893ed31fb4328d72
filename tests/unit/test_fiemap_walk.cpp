// The FIEMAP batch walker shared by the block-map walk (seal, fiemap.hpp) and
// the physical-extent walk (bad blocks, badblocks.hpp): a scripted extent
// table served through the syscall seam in batches as the kernel does
// (extents overlapping [fm_start, +fm_length), at most fm_extent_count,
// FIEMAP_EXTENT_LAST on the file's last one), more extents than one batch
// holds, an EINTR first. Both walks must see exactly what the table says.
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include <linux/fiemap.h>
#include <linux/fs.h>

using namespace mapdirect;

namespace {
constexpr std::uint64_t blk = 4096;
constexpr int fake_fd = 987654;  // never a real descriptor: the fake answers every FIEMAP

struct extent {
  std::uint64_t logical, physical, length;
  std::uint32_t flags;
};

struct piece {
  std::uint64_t start, length;
  unsigned problem;
  bool operator==(const piece& o) const { return start == o.start && length == o.length && problem == o.problem; }
};

std::string show(const std::vector<piece>& v) {
  std::string out;
  for (const piece& p : v)
    out += std::to_string(p.start / blk) + "+" + std::to_string(p.length / blk) + ":" + std::to_string(p.problem) + " ";
  return out;
}

// 80 extents (more than two batches of 32): runs of adjacent extents, holes
// between some, and every kind of flag a walk tells apart.
std::vector<extent> table() {
  std::vector<extent> t;
  std::uint64_t at = 2 * blk;  // a hole at the start
  for (std::uint32_t i = 0; i < 80; ++i) {
    const std::uint64_t len = (1 + i % 3) * blk;
    std::uint32_t flags = 0;
    if (i % 7 == 3) flags |= FIEMAP_EXTENT_UNWRITTEN;
    if (i % 11 == 5) flags |= FIEMAP_EXTENT_SHARED;
    if (i == 40) flags |= FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN;
    if (i == 61) flags |= FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED;
    t.push_back(extent{at, 1000 * blk + i * 17 * blk, len, flags});
    at += len + (i % 4 == 0 ? blk : 0);
  }
  return t;
}

struct fake_fiemap : mdtest::recording_interposer {
  std::vector<extent> extents = table();
  int calls = 0;
  int eintr_left = 1;
  bool stale = false;  // every call answers as if fm_start were 0 (a batch that makes no progress)
  std::uint32_t seen_flags = 0;
  int ioctl(int fd, unsigned long request, void* arg) noexcept override {
    if (fd != fake_fd || request != FS_IOC_FIEMAP) return mdtest::recording_interposer::ioctl(fd, request, arg);
    ++calls;
    if (eintr_left > 0) {
      --eintr_left;
      errno = EINTR;
      return -1;
    }
    auto* fm = static_cast<struct fiemap*>(arg);
    seen_flags = fm->fm_flags;
    const std::uint64_t lo = stale ? 0 : fm->fm_start, hi = fm->fm_start + fm->fm_length;
    std::uint32_t n = 0;
    for (std::size_t i = 0; i < extents.size() && n < fm->fm_extent_count; ++i) {
      const extent& e = extents[i];
      if (e.logical + e.length <= lo || e.logical >= hi) continue;
      struct fiemap_extent& out = fm->fm_extents[n++];
      out.fe_logical = e.logical;
      out.fe_physical = e.physical;
      out.fe_length = e.length;
      out.fe_flags = e.flags | (i + 1 == extents.size() ? FIEMAP_EXTENT_LAST : 0u);
    }
    fm->fm_mapped_extents = n;
    return 0;
  }
};

// What walk_block_map must report for [off, off+len), from the table alone.
std::vector<piece> expected_pieces(const std::vector<extent>& t, std::uint64_t off, std::uint64_t len) {
  std::vector<piece> v;
  const std::uint64_t end = off + len;
  std::uint64_t pos = off;
  for (const extent& e : t) {
    if (pos >= end) break;
    if (e.logical + e.length <= pos) continue;
    if (e.logical > pos) {
      const std::uint64_t h = e.logical < end ? e.logical : end;
      v.push_back(piece{pos, h - pos, detail::extent_hole});
      pos = h;
      if (pos >= end) break;
    }
    const std::uint64_t pe = e.logical + e.length < end ? e.logical + e.length : end;
    v.push_back(piece{pos, pe - pos, detail::classify_extent_flags(e.flags)});
    pos = pe;
  }
  if (pos < end) v.push_back(piece{pos, end - pos, detail::extent_hole});
  return v;
}

std::vector<piece> walk(std::uint64_t off, std::uint64_t len, int& rc, std::uint32_t flags = 0) {
  std::vector<piece> v;
  rc = detail::walk_block_map(fake_fd, off, len, flags, [&](std::uint64_t s, std::uint64_t n, unsigned p) {
    v.push_back(piece{s, n, p});
    return 0;
  });
  return v;
}
}  // namespace

TEST_CASE("fiemap walk: block map pieces across batches, clipped, with holes and EINTR", "[fiemap][seam]") {
  const std::vector<extent> t = table();
  const std::uint64_t file_end = t.back().logical + t.back().length;
  struct range {
    std::uint64_t off, len;
  };
  const range ranges[] = {
      {0, file_end + 5 * blk},                               // every extent, leading and trailing holes
      {t[3].logical + blk / 2, 90 * blk},                    // starts inside an extent: clipped
      {t[10].logical, t[75].logical - t[10].logical + blk},  // ends inside an extent
      {t[0].logical + t[0].length, blk / 2},                 // inside the hole after extent 0
      {file_end + blk, 8 * blk},                             // past the last extent
      {t[5].logical, 0},                                     // empty
  };
  for (const range& r : ranges) {
    fake_fiemap fake;
    mapdirect::scoped_syscall_interposer scope(fake);
    int rc = -1;
    const auto got = walk(r.off, r.len, rc, FIEMAP_FLAG_SYNC);
    const auto want = expected_pieces(t, r.off, r.len);
    INFO("range " << r.off << "+" << r.len << "\n got " << show(got) << "\nwant " << show(want));
    CHECK(rc == 0);
    CHECK(got == want);
    if (r.len > 0) CHECK(fake.seen_flags == FIEMAP_FLAG_SYNC);
  }
  // The whole file takes three batches (80 extents, 32 a batch) after the EINTR.
  fake_fiemap fake;
  mapdirect::scoped_syscall_interposer scope(fake);
  int rc = -1;
  (void)walk(0, file_end, rc);
  CHECK(rc == 0);
  CHECK(fake.calls == 1 + 3);
}

TEST_CASE("fiemap walk: a batch that makes no progress ends the walk with a hole", "[fiemap][seam]") {
  fake_fiemap fake;
  fake.stale = true;
  mapdirect::scoped_syscall_interposer scope(fake);
  const std::vector<extent> t = table();
  const std::uint64_t end = t.back().logical + t.back().length;
  int rc = -1;
  const auto got = walk(0, end, rc);
  // The first batch (extents 0..31) is walked; the second repeats it (no
  // progress): the rest of the range is reported as a hole, not looped on.
  std::vector<piece> want = expected_pieces(std::vector<extent>(t.begin(), t.begin() + 32), 0, end);
  INFO(" got " << show(got) << "\nwant " << show(want));
  CHECK(rc == 0);
  CHECK(got == want);
  CHECK(fake.calls == 1 + 2);
}

TEST_CASE("fiemap walk: errors from FIEMAP and from the visitor stop both walks", "[fiemap][seam]") {
  struct no_fiemap : fake_fiemap {
    int ioctl(int fd, unsigned long request, void* arg) noexcept override {
      if (fd == fake_fd && request == FS_IOC_FIEMAP) {
        errno = EOPNOTSUPP;
        return -1;
      }
      return fake_fiemap::ioctl(fd, request, arg);
    }
  } none;
  {
    mapdirect::scoped_syscall_interposer scope(none);
    int rc = 0;
    CHECK(walk(0, 64 * blk, rc).empty());
    CHECK(rc == EOPNOTSUPP);
    CHECK(detail::walk_physical_extents(fake_fd, 0, 64 * blk,
                                        [](std::uint64_t, std::uint64_t, std::uint64_t) { return 0; }) == EOPNOTSUPP);
  }
  fake_fiemap fake;
  mapdirect::scoped_syscall_interposer scope(fake);
  int seen = 0;
  const int rc = detail::walk_block_map(
      fake_fd, 0, 1000 * blk, 0, [&](std::uint64_t, std::uint64_t, unsigned) { return ++seen == 40 ? ENOSPC : 0; });
  CHECK(rc == ENOSPC);
  CHECK(seen == 40);
  int physical = 0;
  CHECK(detail::walk_physical_extents(fake_fd, 0, 1000 * blk, [&](std::uint64_t, std::uint64_t, std::uint64_t) {
          return ++physical == 35 ? EIO : 0;
        }) == EIO);
  CHECK(physical == 35);
}

TEST_CASE("fiemap walk: physical extents across batches, unclipped, without unknown locations", "[fiemap][seam]") {
  const std::vector<extent> t = table();
  const std::uint64_t off = t[2].logical + blk / 2, len = t[70].logical - off + blk;
  fake_fiemap fake;
  mapdirect::scoped_syscall_interposer scope(fake);
  std::vector<extent> got;
  const int rc =
      detail::walk_physical_extents(fake_fd, off, len, [&](std::uint64_t phys, std::uint64_t logical, std::uint64_t n) {
        got.push_back(extent{logical, phys, n, 0});
        return 0;
      });
  CHECK(rc == 0);
  std::vector<extent> want;
  for (const extent& e : t) {
    if (e.logical + e.length <= off || e.logical >= off + len) continue;
    if (e.flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE)) continue;
    want.push_back(extent{e.logical, e.physical, e.length, 0});
  }
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("extent " << i);
    CHECK(got[i].logical == want[i].logical);
    CHECK(got[i].physical == want[i].physical);
    CHECK(got[i].length == want[i].length);
  }
  CHECK(fake.calls == 1 + 3);  // the EINTR, then 68 overlapping extents in three batches
}
