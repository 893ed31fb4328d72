// SPDX-License-Identifier: MIT
// Known bad blocks (poisoned media) of a file or device DAX, in file/device
// offsets and in mapping offsets, before anything touches them.
//
//   auto bad = mapdirect::bad_ranges(m);   // m: a direct_mapping
//   if (bad && bad.value().known)
//     for (const mapdirect::bad_range& b : bad.value().ranges)
//       restore(b.offset, b.length);       // e.g. m.repair() of the whole pages around it
#ifndef MAPDIRECT_BADBLOCKS_HPP
#define MAPDIRECT_BADBLOCKS_HPP

#include "config.hpp"
#include "detail/badblocks.hpp"  // bad_range, bad_blocks_report, list_bad_blocks
#include "error.hpp"
#include "mapping.hpp"

MAPDIRECT_BEGIN_NAMESPACE

/// The known bad blocks under a mapping, in mapping offsets (relative to
/// data()). Errors: errc::not_mapped, and those of list_bad_blocks.
/// Each range, widened to whole pages, is what direct_mapping::repair()
/// takes (fsdax); a device DAX range is cleared by the platform instead.
inline result<bad_blocks_report> bad_ranges(const direct_mapping& m) noexcept {
  if (!m) return detail::fail(errc::not_mapped, "bad_ranges: no mapping");
  auto r = list_bad_blocks(m.native_handle(), m.file_offset(), m.size());
  if (!r) return r;
  for (bad_range& b : r.value().ranges) b.offset -= m.file_offset();
  return r;
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_BADBLOCKS_HPP
