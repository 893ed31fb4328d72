// SPDX-License-Identifier: MIT
// Known bad blocks: sysfs badblocks lists (512-byte sectors) translated into
// file offsets (fsdax: through FIEMAP) or device offsets (device DAX: through
// the region). Every read goes through the syscall seam.
#ifndef MAPDIRECT_DETAIL_BADBLOCKS_HPP
#define MAPDIRECT_DETAIL_BADBLOCKS_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "devdax.hpp"
#include "fiemap.hpp"
#include "syscall.hpp"

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

constexpr std::uint64_t kBadblockSector = 512;  // the badblocks attribute's unit, whatever the block size

/// Parses a badblocks attribute ("<sector> <count>" per line) and calls
/// visit(first_byte, byte_length) for each entry. Returns 0 or EINVAL (malformed).
template <class Visit>
int parse_badblocks(const char* text, Visit&& visit) noexcept {
  const char* p = text;
  while (*p) {
    while (*p == ' ' || *p == '\n' || *p == '\t') ++p;
    if (!*p) break;
    char* end = nullptr;
    errno = 0;
    const unsigned long long sector = std::strtoull(p, &end, 10);
    if (errno || end == p) return EINVAL;
    p = end;
    const unsigned long long count = std::strtoull(p, &end, 10);
    if (errno || end == p) return EINVAL;
    p = end;
    if (count == 0 || sector > UINT64_MAX / kBadblockSector / 2 || count > UINT64_MAX / kBadblockSector / 2)
      return EINVAL;
    if (const int r = visit(sector * kBadblockSector, count * kBadblockSector)) return r;
  }
  return 0;
}

/// Calls visit(physical, logical, length) for each extent of fd in
/// [offset, offset+length) that has a known device location (no holes,
/// delayed allocations, inline or encoded data). Returns 0 or the FIEMAP errno.
template <class Visit>
int walk_physical_extents(int fd, std::uint64_t offset, std::uint64_t length, Visit&& visit) noexcept {
  return for_each_fiemap_extent(fd, offset, offset + length, 0, [&](const struct fiemap_extent& e) {
    if (e.fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE |
                      FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED))
      return 0;
    return visit(e.fe_physical, e.fe_logical, e.fe_length);
  });
}

/// Where a block device's bad blocks are listed, and the device's first
/// sector there (a partition's start; 0 for a whole disk). Returns 0, or
/// ENOENT when the device lists none (no badblocks attribute).
inline int locate_block_badblocks(dev_t dev, char* path, std::size_t cap, std::uint64_t& start_sector) noexcept {
  char dir[64];
  std::snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u", major(dev), minor(dev));
  start_sector = 0;
  char probe[96];
  std::snprintf(probe, sizeof probe, "%s/partition", dir);
  char text[32];
  if (sys::read_text(probe, text, sizeof text) >= 0) {
    // A partition: its sectors are counted from the whole disk's start,
    // and the disk (the parent directory) holds the list.
    if (!read_sysfs_u64(dir, "start", start_sector)) return errno ? errno : EINVAL;
    std::snprintf(path, cap, "%s/../badblocks", dir);
  } else {
    std::snprintf(path, cap, "%s/badblocks", dir);
  }
  const int fd = sys::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  sys::close_quietly(fd);
  return 0;
}

}  // namespace detail

// The public part (declared here so that mapping.hpp can name poisoned
// ranges in read()'s errors; include mapdirect/badblocks.hpp).
/// One bad range: [offset, offset+length), in the offsets the call names.
struct bad_range {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  friend bool operator==(const bad_range& a, const bad_range& b) noexcept {
    return a.offset == b.offset && a.length == b.length;
  }
};

/// What the platform says about bad blocks under a range.
struct bad_blocks_report {
  /// True: the device reports bad blocks and `ranges` is every range it
  /// lists under the asked range (empty: none known). False: the platform
  /// does not report them here (not pmem, a stacked device, no permission
  /// to read the region's addresses): `ranges` is empty and means nothing.
  bool known = false;
  /// Sorted, merged, clipped to the asked range. Sector-granular (512 bytes);
  /// poison is consumed a page (or cache line) at a time, so a repair
  /// should cover the whole pages around each range.
  std::vector<bad_range> ranges;
  /// The sysfs list read ("/sys/dev/block/259:0/badblocks"), or why unknown.
  std::string source;
};

namespace detail {
inline void merge_bad_ranges(std::vector<bad_range>& v) {
  std::sort(v.begin(), v.end(), [](const bad_range& a, const bad_range& b) { return a.offset < b.offset; });
  std::size_t out = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (out > 0 && v[i].offset <= v[out - 1].offset + v[out - 1].length) {
      const std::uint64_t end = std::max(v[out - 1].offset + v[out - 1].length, v[i].offset + v[i].length);
      v[out - 1].length = end - v[out - 1].offset;
    } else {
      v[out++] = v[i];
    }
  }
  v.resize(out);
}

// Adds [lo, hi) clipped to [clip_lo, clip_hi) (when not empty).
inline void add_clipped(std::vector<bad_range>& v, std::uint64_t lo, std::uint64_t hi, std::uint64_t clip_lo,
                        std::uint64_t clip_hi) {
  if (lo < clip_lo) lo = clip_lo;
  if (hi > clip_hi) hi = clip_hi;
  if (lo < hi) v.push_back(bad_range{lo, hi - lo});
}

inline std::error_code bad_blocks_of_devdax(const struct stat& st, std::uint64_t offset, std::uint64_t length,
                                            bad_blocks_report& r) {
  devdax_info info;
  const int q = query_devdax(st.st_rdev, info);
  if (q == ENODEV)
    return fail(errc::invalid_argument, "bad_blocks: character device %u:%u is not a device DAX", major(st.st_rdev),
                minor(st.st_rdev));
  if (q != 0) return fail_errno(q, "bad_blocks: reading the device DAX size from sysfs");
  if (!info.region_path[0]) {
    r.source = "unknown: no nd region found above the device DAX in sysfs";
    return {};
  }
  if (!info.resource_known || !info.region_resource_known || info.resource < info.region_resource) {
    r.source = std::string("unknown: the physical start of ") + info.name + " or of " + info.region +
               " is unreadable (sysfs `resource`, readable by root only): region bad blocks cannot be placed";
    return {};
  }
  const std::uint64_t base = info.resource - info.region_resource;  // the device's first byte in the region
  std::string path = std::string(info.region_path) + "/badblocks";
  char text[8192];
  if (sys::read_text(path.c_str(), text, sizeof text) < 0) {
    r.source = std::string("unknown: ") + path + ": " + errno_name(errno);
    return {};
  }
  r.known = true;
  r.source = path;
  const std::uint64_t end = info.size < offset + length ? info.size : offset + length;
  std::vector<bad_range>& v = r.ranges;
  const int e = parse_badblocks(text, [&](std::uint64_t lo, std::uint64_t n) {
    // Region bytes to device bytes: entries before the device are not its.
    if (lo + n <= base) return 0;
    const std::uint64_t dlo = lo > base ? lo - base : 0;
    add_clipped(v, dlo, lo + n - base, offset, end);
    return 0;
  });
  if (e) return fail(errc::io_error, "bad_blocks: %s is malformed", path.c_str());
  return {};
}

inline std::error_code bad_blocks_of_file(int fd, const struct stat& st, std::uint64_t offset, std::uint64_t length,
                                          bad_blocks_report& r) {
  char path[128];
  std::uint64_t start_sector = 0;
  const int where = locate_block_badblocks(st.st_dev, path, sizeof path, start_sector);
  if (where != 0) {
    char why[400];
    std::snprintf(why, sizeof why,
                  "unknown: the block device %u:%u lists no bad blocks (%s: %s; not pmem, a stacked device, or no "
                  "block device at all)",
                  major(st.st_dev), minor(st.st_dev), path, errno_name(where));
    r.source = why;
    return {};
  }
  char text[8192];
  if (sys::read_text(path, text, sizeof text) < 0) return fail_errno(errno, "bad_blocks: reading badblocks");
  r.known = true;
  r.source = path;
  // Device bytes (relative to the partition the file system is on) of each bad range.
  std::vector<bad_range> device;
  const std::uint64_t start = start_sector * kBadblockSector;
  int e = parse_badblocks(text, [&](std::uint64_t lo, std::uint64_t n) {
    if (lo + n <= start) return 0;  // before the partition
    const std::uint64_t plo = lo > start ? lo - start : 0;
    device.push_back(bad_range{plo, lo + n - start - plo});
    return 0;
  });
  if (e) return fail(errc::io_error, "bad_blocks: %s is malformed", path);
  if (device.empty()) return {};
  const std::uint64_t end = offset + length;
  e = walk_physical_extents(fd, offset, length, [&](std::uint64_t phys, std::uint64_t logical, std::uint64_t n) {
    for (const bad_range& b : device) {
      const std::uint64_t lo = b.offset > phys ? b.offset : phys;
      const std::uint64_t hi = b.offset + b.length < phys + n ? b.offset + b.length : phys + n;
      if (lo < hi) add_clipped(r.ranges, logical + (lo - phys), logical + (hi - phys), offset, end);
    }
    return 0;
  });
  if (e && fiemap_unsupported(e)) {
    r.known = false;
    r.ranges.clear();
    return fail(errc::block_map_unverifiable,
                "bad_blocks: the device lists %zu bad range(s) but the file system cannot report where the file "
                "lies (FIEMAP: %s)",
                device.size(), errno_name(e));
  }
  if (e) return fail_errno(e, "bad_blocks: FIEMAP");
  return {};
}
}  // namespace detail

/// The known bad blocks under [offset, offset+length) of fd, in file offsets
/// (a regular file: the block device's list, `/sys/block/<dev>/badblocks`,
/// less a partition's start, placed through FIEMAP; extents without a device
/// location are skipped) or device offsets (device DAX: the nd region's list
/// less the device's start in the region, which needs root to read).
/// length 0: to the end of the file or device. report.known is false, with
/// the reason in report.source, where the platform does not say.
/// Errors: fstat errno codes, errc::invalid_argument (neither a regular file
/// nor device DAX), errc::block_map_unverifiable (bad blocks exist on the
/// device but the file system has no FIEMAP), errc::io_error (a malformed
/// list), FIEMAP errno codes, ENOMEM. Thread-safe; reads only.
inline result<bad_blocks_report> list_bad_blocks(int fd, std::uint64_t offset = 0, std::uint64_t length = 0) noexcept {
  detail::clear_detail();
#if MAPDIRECT_HAS_EXCEPTIONS
  try {
#endif
    struct stat st {};
    if (detail::sys::fstat(fd, &st) != 0) return detail::fail_errno(errno, "bad_blocks: fstat");
    bad_blocks_report r;
    std::error_code ec;
    if (S_ISREG(st.st_mode)) {
      const auto size = static_cast<std::uint64_t>(st.st_size);
      if (length == 0) length = offset < size ? size - offset : 0;
      if (length == 0) {
        r.known = true;
        r.source = "empty range";
        return r;
      }
      if (length > UINT64_MAX - offset) return detail::fail(errc::invalid_argument, "bad_blocks: range overflows");
      ec = detail::bad_blocks_of_file(fd, st, offset, length, r);
    } else if (S_ISCHR(st.st_mode)) {
      if (length == 0 || length > UINT64_MAX - offset) length = UINT64_MAX - offset;
      ec = detail::bad_blocks_of_devdax(st, offset, length, r);
    } else {
      return detail::fail(errc::invalid_argument, "bad_blocks: neither a regular file nor device DAX");
    }
    if (ec) return ec;
    detail::merge_bad_ranges(r.ranges);
    return r;
#if MAPDIRECT_HAS_EXCEPTIONS
  } catch (const std::bad_alloc&) {
    return detail::fail_errno(ENOMEM, "bad_blocks");
  }
#endif
}

namespace detail {
/// The first listed bad range under [base+off, base+off+len) of fd, in file
/// offsets, clipped to it; false when none is listed (or nothing is known).
/// For turning a guarded access's plain SIGBUS on a bad page (the pmem
/// driver refuses it without a machine check) into errc::media_error. The
/// thread's error detail is left as it was.
inline bool listed_bad_range(int fd, std::uint64_t base, std::uint64_t off, std::uint64_t len,
                             bad_range& hit) noexcept {
  char saved[MAPDIRECT_ERROR_DETAIL_SIZE];
  std::snprintf(saved, sizeof saved, "%s", error_detail_buffer());
  const int saved_errno = errno;
  bool found = false;
  if (len != 0 && off <= UINT64_MAX - base) {
    auto r = list_bad_blocks(fd, base + off, len);
    if (r && r.value().known && !r.value().ranges.empty()) {
      hit = r.value().ranges.front();
      found = true;
    }
  }
  set_detail("%s", saved);
  errno = saved_errno;
  return found;
}
}  // namespace detail

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_BADBLOCKS_HPP
