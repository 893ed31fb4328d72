// SPDX-License-Identifier: MIT
// Device DAX (/dev/daxX.Y) facts from sysfs: size, alignment, the nd region
// behind it and the device's offset in that region. Every read goes through
// the syscall seam, so tests can fake the /sys tree.
#ifndef MAPDIRECT_DETAIL_DEVDAX_HPP
#define MAPDIRECT_DETAIL_DEVDAX_HPP

#include "../config.hpp"
#include "nd.hpp"
#include "syscall.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// What sysfs says about a device DAX character device.
struct devdax_info {
  char name[32] = {};          ///< "dax0.0"
  std::uint64_t size = 0;      ///< bytes (the `size` attribute; st_size is 0 on a character device)
  std::uint64_t align = 0;     ///< mapping offsets and lengths must be multiples (the `align` attribute)
  bool align_known = false;    ///< false: no `align` attribute (old kernel): the page size is assumed
  std::uint64_t resource = 0;  ///< physical start of the device's range (`resource`), 0 if unknown
  bool resource_known = false;
  char region[32] = {};               ///< the nd region ("region0"), "" if not found
  char region_path[256] = {};         ///< its sysfs directory (resolved), "" if not found
  std::uint64_t region_resource = 0;  ///< physical start of that region
  bool region_resource_known = false;
  persistence_domain domain = persistence_domain::unknown;
};

/// Parses an unsigned decimal or 0x-hex sysfs value; false if malformed.
inline bool parse_sysfs_u64(const char* text, std::uint64_t& out) noexcept {
  if (!text || !*text) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 0);
  if (errno != 0 || end == text) return false;
  while (*end == ' ' || *end == '\n') ++end;
  if (*end != '\0') return false;
  out = v;
  return true;
}

/// Reads "<dir>/<attr>" as a number; false (errno set) if missing or malformed.
inline bool read_sysfs_u64(const char* dir, const char* attr, std::uint64_t& out) noexcept {
  char path[256];
  std::snprintf(path, sizeof path, "%s/%s", dir, attr);
  char text[64];
  if (sys::read_text(path, text, sizeof text) < 0) return false;
  if (!parse_sysfs_u64(text, out)) {
    errno = EINVAL;
    return false;
  }
  return true;
}

/// Copies src into dst (cap bytes, NUL-terminated, truncated).
inline void copy_text(char* dst, std::size_t cap, const char* src) noexcept {
  if (cap == 0) return;
  std::size_t i = 0;
  for (; src[i] && i + 1 < cap; ++i) dst[i] = src[i];
  dst[i] = '\0';
}

/// The last component of a symbolic link's target ("dax" for ../../bus/dax).
inline bool link_basename(const char* path, char* out, std::size_t cap) noexcept {
  char target[256];
  const ssize_t n = sys::readlink(path, target, sizeof target - 1);
  if (n <= 0) return false;
  target[n] = '\0';
  const char* slash = std::strrchr(target, '/');
  copy_text(out, cap, slash ? slash + 1 : target);
  return true;
}

/// True when the character device `rdev` is a device DAX (its sysfs
/// subsystem is the dax bus, or the dax class of older kernels).
inline bool is_device_dax(dev_t rdev) noexcept {
  char path[96];
  std::snprintf(path, sizeof path, "/sys/dev/char/%u:%u/subsystem", major(rdev), minor(rdev));
  char sub[64];
  return link_basename(path, sub, sizeof sub) && std::strcmp(sub, "dax") == 0;
}

// query_devdax: the device's name from uevent's DEVNAME=, else the link's target.
inline void read_devdax_name(const char* dir, devdax_info& out) noexcept {
  char path[128];
  std::snprintf(path, sizeof path, "%s/uevent", dir);
  char text[256];
  if (sys::read_text(path, text, sizeof text) >= 0) {
    if (const char* at = std::strstr(text, "DEVNAME=")) {
      at += 8;
      std::size_t i = 0;
      while (at[i] && at[i] != '\n' && i + 1 < sizeof out.name) {
        out.name[i] = at[i];
        ++i;
      }
      out.name[i] = '\0';
    }
  }
  if (!out.name[0]) (void)link_basename(dir, out.name, sizeof out.name);
}

// query_devdax: `cur` is the nd region's directory (it has
// persistence_domain): its resource and name, for bad blocks.
inline void read_devdax_region(int cur, devdax_info& out) noexcept {
  const int res = sys::openat(cur, "resource", O_RDONLY | O_CLOEXEC);
  if (res >= 0) {
    char text[64] = {};
    const ssize_t n = sys::pread(res, text, sizeof text - 1, 0);
    sys::close_quietly(res);
    if (n > 0) {
      text[n] = '\0';
      out.region_resource_known = parse_sysfs_u64(text, out.region_resource);
    }
  }
  // The region's own name: /proc/self/fd/N of the O_PATH descriptor.
  const ssize_t n = sys::readlink(sys::proc_fd_path(cur).c_str(), out.region_path, sizeof out.region_path - 1);
  if (n > 0) {
    out.region_path[n] = '\0';
    const char* slash = std::strrchr(out.region_path, '/');
    copy_text(out.region, sizeof out.region, slash ? slash + 1 : out.region_path);
  } else {
    out.region_path[0] = '\0';
  }
}

// query_devdax: upward from the device to the first directory with
// persistence_domain, the nd region (as for an fsdax block device,
// detail/nd.hpp): its domain, resource and name.
inline void find_devdax_region(const char* dir, devdax_info& out) noexcept {
  const int fd = sys::open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  nd_scan scan;
  scan_block_dir(fd, scan, 4);  // depth 4: no "slaves" to follow on a dax device
  if (scan.regions == 1)
    out.domain = scan.cpu_cache           ? persistence_domain::cpu_cache
                 : scan.memory_controller ? persistence_domain::memory_controller
                                          : persistence_domain::unknown;
  int cur = sys::openat(fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  for (int level = 0; cur >= 0 && level < 16; ++level) {
    const int pd = sys::openat(cur, "persistence_domain", O_RDONLY | O_CLOEXEC);
    if (pd >= 0) {
      sys::close_quietly(pd);
      read_devdax_region(cur, out);
      break;
    }
    const int up = sys::openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    sys::close_quietly(cur);
    cur = up;
  }
  if (cur >= 0) sys::close_quietly(cur);
  sys::close_quietly(fd);
}

/// Fills `out` for the device DAX `rdev`. Returns 0, or an errno: ENODEV
/// (not a device DAX), or the errno of an unreadable `size` attribute.
/// Everything else is best effort (see the *_known flags).
inline int query_devdax(dev_t rdev, devdax_info& out) noexcept {
  out = devdax_info{};
  if (!is_device_dax(rdev)) return ENODEV;
  char dir[64];
  std::snprintf(dir, sizeof dir, "/sys/dev/char/%u:%u", major(rdev), minor(rdev));
  read_devdax_name(dir, out);
  if (!read_sysfs_u64(dir, "size", out.size)) return errno ? errno : EINVAL;
  // `align` is the dev_dax's own attribute since Linux 5.10; before, the
  // nd_dax parent ("device") carried it.
  out.align_known = read_sysfs_u64(dir, "align", out.align) || read_sysfs_u64(dir, "device/align", out.align);
  if (!out.align_known || out.align == 0 || (out.align & (out.align - 1)) != 0) {
    out.align_known = false;
    out.align = sys::page_size();
  }
  out.resource_known = read_sysfs_u64(dir, "resource", out.resource);
  find_devdax_region(dir, out);
  return 0;
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_DEVDAX_HPP
