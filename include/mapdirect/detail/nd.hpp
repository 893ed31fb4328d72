// SPDX-License-Identifier: MIT
// Resolves which NVDIMM (nd) regions back a block device, through sysfs.
#ifndef MAPDIRECT_DETAIL_ND_HPP
#define MAPDIRECT_DETAIL_ND_HPP

#include "../config.hpp"
#include "../persist.hpp"  // persistence_domain (public; defined next to flush_instruction)
#include "syscall.hpp"

#include <dirent.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <cstring>

MAPDIRECT_BEGIN_NAMESPACE

namespace detail {
// Aggregate over every region found: cpu_cache only if all say so.
struct nd_scan {
  int regions = 0;
  int cpu_cache = 0;
  int memory_controller = 0;
  int unknown = 0;
};

// Walks from a sysfs block-device directory up to its nd region; follows
// "slaves" for stacked devices (dm, md) up to a small depth.
inline void scan_block_dir(int dirfd, nd_scan& scan, int depth) noexcept {
  // Upward walk: the first ancestor with a persistence_domain file is the region.
  int cur = sys::openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  bool found = false;
  for (int level = 0; cur >= 0 && level < 16; ++level) {
    const int pd = sys::openat(cur, "persistence_domain", O_RDONLY | O_CLOEXEC);
    if (pd >= 0) {
      char buf[64] = {};
      const ssize_t n = sys::pread(pd, buf, sizeof buf - 1, 0);
      sys::close_quietly(pd);
      ++scan.regions;
      found = true;
      if (n > 0 && std::strncmp(buf, "cpu_cache", 9) == 0) ++scan.cpu_cache;
      else if (n > 0 && std::strncmp(buf, "memory_controller", 17) == 0) ++scan.memory_controller;
      else ++scan.unknown;
      break;
    }
    const int up = sys::openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    sys::close_quietly(cur);
    cur = up;
  }
  if (cur >= 0) sys::close_quietly(cur);
  if (found || depth >= 4) return;
  // Stacked device: every component must be resolved.
  const int slaves = sys::openat(dirfd, "slaves", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (slaves < 0) return;
  DIR* dir = ::fdopendir(slaves);
  if (!dir) {
    sys::close_quietly(slaves);
    return;
  }
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const int child = sys::openat(slaves, e->d_name, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (child < 0) {
      ++scan.unknown;
      continue;
    }
    nd_scan sub;
    scan_block_dir(child, sub, depth + 1);
    sys::close_quietly(child);
    if (sub.regions == 0) ++scan.unknown;
    scan.regions += sub.regions;
    scan.cpu_cache += sub.cpu_cache;
    scan.memory_controller += sub.memory_controller;
    scan.unknown += sub.unknown;
  }
  ::closedir(dir);
}

/// The persistence domain of the nd regions backing device `dev`; unknown
/// when the device is not persistent memory or cannot be resolved.
inline persistence_domain domain_of_device(dev_t dev, int* regions_found = nullptr) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/sys/dev/block/%u:%u", major(dev), minor(dev));
  nd_scan scan;
  const int fd = sys::open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    scan_block_dir(fd, scan, 0);
    sys::close_quietly(fd);
  }
  if (regions_found) *regions_found = scan.regions;
  if (scan.regions == 0 || scan.unknown > 0) return persistence_domain::unknown;
  if (scan.cpu_cache == scan.regions) return persistence_domain::cpu_cache;
  if (scan.cpu_cache + scan.memory_controller == scan.regions) return persistence_domain::memory_controller;
  return persistence_domain::unknown;
}
}  // namespace detail

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_ND_HPP
