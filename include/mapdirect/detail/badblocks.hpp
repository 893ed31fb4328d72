// SPDX-License-Identifier: MIT
// Known bad blocks: sysfs badblocks lists (512-byte sectors) translated into
// file offsets (fsdax: through FIEMAP) or device offsets (device DAX: through
// the region). Every read goes through the syscall seam.
#ifndef MAPDIRECT_DETAIL_BADBLOCKS_HPP
#define MAPDIRECT_DETAIL_BADBLOCKS_HPP

#include "../config.hpp"
#include "devdax.hpp"
#include "fiemap.hpp"
#include "syscall.hpp"

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

/// Reads a whole sysfs badblocks file (up to one page: the kernel's limit
/// for a show()). Returns its length or -1 with errno.
inline ssize_t read_badblocks_file(const char* path, char* buf, std::size_t cap) noexcept {
  return sys::read_text(path, buf, cap);
}

/// Calls visit(physical, logical, length) for each extent of fd in
/// [offset, offset+length) that has a known device location (no holes,
/// delayed allocations, inline or encoded data). Returns 0 or the FIEMAP errno.
template <class Visit>
int walk_physical_extents(int fd, std::uint64_t offset, std::uint64_t length, Visit&& visit) noexcept {
  constexpr std::uint32_t batch = 32;
  alignas(struct fiemap) unsigned char storage[sizeof(struct fiemap) + batch * sizeof(struct fiemap_extent)];
  const std::uint64_t end = offset + length;
  std::uint64_t pos = offset;
  while (pos < end) {
    std::memset(storage, 0, sizeof storage);
    auto* fm = reinterpret_cast<struct fiemap*>(storage);
    fm->fm_start = pos;
    fm->fm_length = end - pos;
    fm->fm_extent_count = batch;
    int rc;
    do {
      rc = sys::ioctl(fd, FS_IOC_FIEMAP, fm);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return errno;
    if (fm->fm_mapped_extents == 0) return 0;
    bool last = false;
    std::uint64_t next = pos;
    for (std::uint32_t i = 0; i < fm->fm_mapped_extents && i < batch; ++i) {
      const struct fiemap_extent& e = fm->fm_extents[i];
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
      const std::uint64_t e_end = e.fe_logical + e.fe_length;
      if (e_end > next) next = e_end;
      if (e.fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE |
                        FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED))
        continue;
      if (const int r = visit(e.fe_physical, e.fe_logical, e.fe_length)) return r;
    }
    if (last || fm->fm_mapped_extents < batch || next <= pos) return 0;
    pos = next;
  }
  return 0;
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
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_BADBLOCKS_HPP
