// SPDX-License-Identifier: MIT
// Finding the file behind a faulting address (error path of guarded_copy and
// with_guard when the caller did not name the file): /proc/self/maps gives
// the mapping, its file offset and the file's identity.
#ifndef MAPDIRECT_DETAIL_GUARD_MAPS_HPP
#define MAPDIRECT_DETAIL_GUARD_MAPS_HPP

#include "../config.hpp"
#include "syscall.hpp"

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <sys/stat.h>
#include <sys/sysmacros.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// One line of /proc/self/maps.
struct vma_info {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  std::uint64_t file_offset = 0;  // file offset mapped at `start`
  dev_t dev = 0;
  std::uint64_t inode = 0;  // 0 for anonymous memory
  char path[PATH_MAX + 16] = {};
};

inline bool parse_hex(const char*& p, const char* end, std::uint64_t& out) noexcept {
  const char* begin = p;
  out = 0;
  for (; p < end; ++p) {
    const char c = *p;
    unsigned d;
    if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
    else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
    else break;
    out = out * 16 + d;
  }
  return p != begin;
}

inline bool parse_dec(const char*& p, const char* end, std::uint64_t& out) noexcept {
  const char* begin = p;
  out = 0;
  for (; p < end && *p >= '0' && *p <= '9'; ++p) out = out * 10 + static_cast<unsigned>(*p - '0');
  return p != begin;
}

inline bool skip(const char*& p, const char* end, char c) noexcept {
  if (p >= end || *p != c) return false;
  ++p;
  return true;
}

inline void skip_spaces(const char*& p, const char* end) noexcept {
  while (p < end && *p == ' ') ++p;
}

// "start-end perms offset major:minor inode   path"
inline bool parse_maps_line(const char* p, const char* end, vma_info& v) noexcept {
  std::uint64_t start, stop, off, major, minor, inode;
  if (!parse_hex(p, end, start) || !skip(p, end, '-') || !parse_hex(p, end, stop) || !skip(p, end, ' ')) return false;
  while (p < end && *p != ' ') ++p;  // permissions
  skip_spaces(p, end);
  if (!parse_hex(p, end, off)) return false;
  skip_spaces(p, end);
  if (!parse_hex(p, end, major) || !skip(p, end, ':') || !parse_hex(p, end, minor)) return false;
  skip_spaces(p, end);
  if (!parse_dec(p, end, inode)) return false;
  skip_spaces(p, end);
  v.start = static_cast<std::uintptr_t>(start);
  v.end = static_cast<std::uintptr_t>(stop);
  v.file_offset = off;
  v.dev = makedev(static_cast<unsigned>(major), static_cast<unsigned>(minor));
  v.inode = inode;
  const std::size_t n =
      static_cast<std::size_t>(end - p) < sizeof v.path - 1 ? static_cast<std::size_t>(end - p) : sizeof v.path - 1;
  std::memcpy(v.path, p, n);
  v.path[n] = '\0';
  return true;
}

/// Finds the mapping containing `addr`. False if none (or /proc is absent).
inline bool find_vma(std::uintptr_t addr, vma_info& out) noexcept {
  const int fd = sys::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[PATH_MAX + 256];
  std::size_t have = 0;
  off_t pos = 0;
  bool found = false;
  for (;;) {
    const ssize_t n = sys::pread(fd, buf + have, sizeof buf - have, pos);  // seq_file honours the position
    if (n <= 0) break;
    have += static_cast<std::size_t>(n);
    pos += static_cast<off_t>(n);
    std::size_t begin = 0;
    for (;;) {
      const void* nl = std::memchr(buf + begin, '\n', have - begin);
      if (!nl) break;
      const char* line_end = static_cast<const char*>(nl);
      vma_info v;
      if (parse_maps_line(buf + begin, line_end, v) && addr >= v.start && addr < v.end) {
        out = v;
        found = true;
        break;
      }
      begin = static_cast<std::size_t>(line_end - buf) + 1;
    }
    if (found) break;
    if (begin == 0 && have == sizeof buf) break;  // a line longer than any real one: give up
    std::memmove(buf, buf + begin, have - begin);
    have -= begin;
  }
  sys::close_quietly(fd);
  return found;
}

/// Opens (O_PATH) the file mapped by `v`, checked to be the same file
/// (device and inode): via /proc/self/map_files (works for deleted or renamed
/// files, needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), else via the path.
/// Returns the fd, or -1.
inline int open_vma_file(const vma_info& v) noexcept {
  if (v.inode == 0) return -1;
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/map_files/%lx-%lx", static_cast<unsigned long>(v.start),
                static_cast<unsigned long>(v.end));
  const char* candidates[2] = {link, v.path[0] == '/' ? v.path : nullptr};
  for (const char* path : candidates) {
    if (!path) continue;
    const int fd = sys::open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    if (sys::fstat(fd, &st) == 0 && st.st_dev == v.dev && static_cast<std::uint64_t>(st.st_ino) == v.inode) return fd;
    sys::close_quietly(fd);
  }
  return -1;
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_GUARD_MAPS_HPP
