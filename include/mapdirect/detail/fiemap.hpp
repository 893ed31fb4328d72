// SPDX-License-Identifier: MIT
// FS_IOC_FIEMAP, read in fixed-size batches on the stack (no allocation), and
// a classification of a file range into what a MAP_SYNC fault could still
// have to change: holes, unwritten, delayed-allocation and shared extents.
#ifndef MAPDIRECT_DETAIL_FIEMAP_HPP
#define MAPDIRECT_DETAIL_FIEMAP_HPP

#include "../config.hpp"
#include "syscall.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <linux/fiemap.h>
#include <linux/fs.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// What a block-map range needs before it is stable, as one bit per problem.
enum extent_problem : unsigned {
  extent_ok = 0,
  extent_hole = 1u << 0,       ///< no extent at all: a fault would allocate
  extent_unwritten = 1u << 1,  ///< allocated, not written: a fault or store would convert it
  extent_delalloc = 1u << 2,   ///< delayed allocation (or location unknown): writeback would allocate
  extent_shared = 1u << 3,     ///< reflinked/deduplicated: a store would copy-on-write (allocate)
  extent_not_plain = 1u << 4,  ///< inline, tail-packed, encoded or unaligned data: no block to map
};

/// Problem bits of one extent's FIEMAP flags.
inline unsigned classify_extent_flags(std::uint32_t flags) noexcept {
  unsigned p = extent_ok;
  if (flags & FIEMAP_EXTENT_UNWRITTEN) p |= extent_unwritten;
  if (flags & (FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN)) p |= extent_delalloc;
  if (flags & FIEMAP_EXTENT_SHARED) p |= extent_shared;
  if (flags & (FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_ENCODED |
               FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_ENCRYPTED))
    p |= extent_not_plain;
  return p;
}

/// Names of the problem bits, for messages ("hole", "unwritten|shared").
inline const char* extent_problem_name(unsigned p) noexcept {
  if (p == extent_ok) return "allocated and written";
  if (p & extent_hole) return "hole";
  if (p & extent_not_plain) return "inline/encoded data";
  if ((p & extent_unwritten) && (p & extent_shared)) return "unwritten and shared";
  if (p & extent_unwritten) return "unwritten";
  if (p & extent_shared) return "shared (reflinked)";
  if (p & extent_delalloc) return "delayed allocation";
  return "unknown";
}

/// Totals over a range, from walk_block_map.
struct block_map_summary {
  std::uint64_t extents = 0;          ///< extents (clipped to the range) that FIEMAP reported
  std::uint64_t hole_bytes = 0;       ///< bytes with no extent
  std::uint64_t unwritten_bytes = 0;  ///< bytes in unwritten extents
  std::uint64_t delalloc_bytes = 0;   ///< bytes in delayed-allocation/unknown extents
  std::uint64_t shared_bytes = 0;     ///< bytes in shared extents
  std::uint64_t not_plain_bytes = 0;  ///< bytes in inline/encoded extents
  std::uint64_t first_problem = 0;    ///< offset of the first problem byte (when any)
  unsigned first_problem_kind = extent_ok;

  /// True when every byte of the range is allocated, written, unshared and plain.
  bool stable() const noexcept {
    return hole_bytes == 0 && unwritten_bytes == 0 && delalloc_bytes == 0 && shared_bytes == 0 &&
           not_plain_bytes == 0;
  }
};

/// Walks [offset, offset+length) of fd's block map in order, calling
/// visit(start, length, problem_bits) for every piece: extents (clipped to
/// the range) and the holes between them. `visit` returns 0 to go on or an
/// errno to stop (walk_block_map then returns it). Returns 0, or the FIEMAP
/// errno (EOPNOTSUPP/ENOTTY: the file system has no FIEMAP). fiemap_flags may
/// hold FIEMAP_FLAG_SYNC. The file may change between batches; each batch
/// resumes at the end of the last piece visited.
template <class Visit>
int walk_block_map(int fd, std::uint64_t offset, std::uint64_t length, std::uint32_t fiemap_flags,
                   Visit&& visit) noexcept {
  constexpr std::uint32_t batch = 32;
  // struct fiemap ends in a flexible array: reserve room for `batch` extents.
  alignas(struct fiemap) unsigned char storage[sizeof(struct fiemap) + batch * sizeof(struct fiemap_extent)];
  const std::uint64_t end = offset + length;
  std::uint64_t pos = offset;
  while (pos < end) {
    std::memset(storage, 0, sizeof storage);
    auto* fm = reinterpret_cast<struct fiemap*>(storage);
    fm->fm_start = pos;
    fm->fm_length = end - pos;
    fm->fm_flags = fiemap_flags;
    fm->fm_extent_count = batch;
    int rc;
    do {
      rc = sys::ioctl(fd, FS_IOC_FIEMAP, fm);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return errno;
    if (fm->fm_mapped_extents == 0) return visit(pos, end - pos, unsigned{extent_hole});
    bool last = false;
    const std::uint64_t batch_start = pos;
    for (std::uint32_t i = 0; i < fm->fm_mapped_extents && pos < end; ++i) {
      const struct fiemap_extent& e = fm->fm_extents[i];
      const std::uint64_t e_start = e.fe_logical;
      const std::uint64_t e_end = e.fe_logical + e.fe_length;
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
      if (e_end <= pos) continue;
      if (e_start > pos) {
        const std::uint64_t hole_end = e_start < end ? e_start : end;
        if (const int r = visit(pos, hole_end - pos, unsigned{extent_hole})) return r;
        pos = hole_end;
        if (pos >= end) break;
      }
      const std::uint64_t piece_end = e_end < end ? e_end : end;
      if (const int r = visit(pos, piece_end - pos, classify_extent_flags(e.fe_flags))) return r;
      pos = piece_end;
    }
    // Past the file's last extent (or a short batch) everything left is a hole.
    // A batch that made no progress would loop forever: nothing lies at pos.
    if (pos < end && (last || fm->fm_mapped_extents < batch || pos == batch_start))
      return visit(pos, end - pos, unsigned{extent_hole});
  }
  return 0;
}

/// Summarises [offset, offset+length) of fd's block map. Returns 0 or the FIEMAP errno.
inline int summarise_block_map(int fd, std::uint64_t offset, std::uint64_t length, block_map_summary& out,
                               std::uint32_t fiemap_flags = 0) noexcept {
  out = block_map_summary{};
  return walk_block_map(fd, offset, length, fiemap_flags, [&](std::uint64_t start, std::uint64_t n, unsigned p) {
    if (p != extent_hole) ++out.extents;
    if (p != extent_ok && out.first_problem_kind == extent_ok) {
      out.first_problem = start;
      out.first_problem_kind = p;
    }
    if (p & extent_hole) out.hole_bytes += n;
    if (p & extent_unwritten) out.unwritten_bytes += n;
    if (p & extent_delalloc) out.delalloc_bytes += n;
    if (p & extent_shared) out.shared_bytes += n;
    if (p & extent_not_plain) out.not_plain_bytes += n;
    return 0;
  });
}

/// True for the FIEMAP errnos that mean "this file system cannot report its block map".
inline bool fiemap_unsupported(int e) noexcept { return e == EOPNOTSUPP || e == ENOTTY || e == ENOSYS; }

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_FIEMAP_HPP
