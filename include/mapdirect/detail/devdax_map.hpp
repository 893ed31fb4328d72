// SPDX-License-Identifier: MIT
// direct_mapping::map of a device DAX character device. mapping.hpp
// includes it at its end (it defines a member of direct_mapping); included
// on its own, it includes mapping.hpp first, which then skips it.
#ifndef MAPDIRECT_DETAIL_DEVDAX_MAP_HPP
#define MAPDIRECT_DETAIL_DEVDAX_MAP_HPP

#include "../mapping.hpp"

MAPDIRECT_BEGIN_NAMESPACE

namespace detail {
// map_device_dax: `info` of the device behind `st`, and the request checked
// against it (options a device cannot honour, alignment, the device's end);
// length 0 becomes "to the end of the device".
inline std::error_code check_devdax_request(const struct stat& st, const map_options& options, std::uint64_t offset,
                                            std::size_t& length, devdax_info& info) noexcept {
  const int q = query_devdax(st.st_rdev, info);
  if (q == ENODEV)
    return fail(errc::invalid_argument,
                "map: character device %u:%u is not a device DAX (its sysfs subsystem is not the dax bus); "
                "only regular files and /dev/daxX.Y can be mapped",
                major(st.st_rdev), minor(st.st_rdev));
  if (q != 0) {
    char what[128];
    std::snprintf(what, sizeof what, "map: device DAX %u:%u: reading its size from /sys/dev/char/%u:%u/size",
                  major(st.st_rdev), minor(st.st_rdev), major(st.st_rdev), minor(st.st_rdev));
    return fail_errno(q, "%s", what);
  }
  if (options.seal)
    return fail(errc::invalid_argument,
                "map: %s is device DAX: no file system, so no block map to seal (options.seal must be empty; "
                "faults never allocate there)",
                info.name);
  if (offset % info.align != 0)
    return fail(errc::misaligned_offset,
                "map: offset %llu on device DAX %s is not a multiple of its alignment %llu (%s)",
                static_cast<unsigned long long>(offset), info.name, static_cast<unsigned long long>(info.align),
                info.align_known ? "sysfs align" : "no align attribute: page size assumed");
  if (offset >= info.size)
    return fail(errc::beyond_eof, "map: offset %llu is at or past the end of device DAX %s (%llu bytes)",
                static_cast<unsigned long long>(offset), info.name, static_cast<unsigned long long>(info.size));
  if (length == 0) {
    if (info.size - offset > std::numeric_limits<std::size_t>::max())
      return fail(errc::invalid_argument, "map: device too large for the address space");
    length = static_cast<std::size_t>(info.size - offset);
  }
  if (length > info.size - offset)
    return fail(errc::beyond_eof, "map: range [%llu, %llu) extends past the end of device DAX %s (%llu bytes)",
                static_cast<unsigned long long>(offset), static_cast<unsigned long long>(offset + length), info.name,
                static_cast<unsigned long long>(info.size));
  if (length % info.align != 0)
    return fail(errc::invalid_argument, "map: length %zu on device DAX %s is not a multiple of its alignment %llu (%s)",
                length, info.name, static_cast<unsigned long long>(info.align),
                info.align_known ? "sysfs align" : "no align attribute: page size assumed");
  if (options.reserve > length)
    return fail(errc::invalid_argument,
                "map: %s is device DAX: a device mapping cannot grow (options.reserve must not exceed the "
                "length)",
                info.name);
  return {};
}
}  // namespace detail

// Device DAX: no file system, so no block map to seal or allocate, no page
// cache, and no MAP_SYNC needed: every fault maps device memory directly and
// stores persist by CPU flush alone. The mode is reported as map_mode::sync
// (what a writer can rely on), the ladder says why, and device_dax() is true.
// Offsets and lengths must be multiples of the device's `align` (the kernel
// refuses anything else with EINVAL; we say why first).
inline result<direct_mapping> direct_mapping::map_device_dax(int fd, std::uint64_t offset, std::size_t length,
                                                             const map_options& options,
                                                             const struct stat& st) noexcept {
  detail::clear_detail();
  detail::devdax_info info;
  if (auto ec = detail::check_devdax_request(st, options, offset, length, info)) return ec;

  direct_mapping m;
  if (auto ec = m.take_descriptor(fd, st, options)) return ec;
  m.device_dax_ = true;
  m.offset_ = offset;
  m.size_ = length;
  m.map_length_ = length;
  m.movnt_threshold_ = options.movnt_threshold;
  m.access_ = options.access;
  m.populate_ = options.populate;

  m.ladder_ = map_ladder{};
  map_attempt& direct = m.ladder_.steps[m.ladder_.count++];
  direct.mode = map_mode::direct;
  direct.cause = "not applicable: device DAX has no file system and no block map to pin";
  map_attempt& sync = m.ladder_.steps[m.ladder_.count++];
  sync.mode = map_mode::sync;
  sync.attempted = true;
  sync.cause = "device DAX: MAP_SHARED of the character device; no page cache, no file-system metadata, so every "
               "fault is synchronous and stores persist by CPU flush (MAP_SYNC not needed)";
  void* mapped = nullptr;
  // The kernel picks an address aligned to the device's align (its
  // get_unmapped_area); never MAP_FIXED.
  sync.error = try_map(length, MAP_SHARED, m.fd_, offset, options.populate, mapped, prot_for(options.access));
  if (sync.error != 0) {
    if (sync.error == EINVAL) sync.cause = "device DAX refused the mapping (EINVAL: alignment, or a private mapping)";
    else if (sync.error == EACCES)
      sync.cause = "descriptor not open O_RDWR (map_access::read_only maps a read-only one)";
    else if (sync.error == ENXIO) sync.cause = "range outside the device";
    char steps[MAPDIRECT_ERROR_DETAIL_SIZE];
    (void)describe_ladder(m.ladder_, steps, sizeof steps);
    detail::set_detail("map: device DAX %s: mmap failed with %s; tried:\n%s", info.name, detail::errno_name(sync.error),
                       steps);
    return detail::errno_code(sync.error);
  }
  m.mode_ = map_mode::sync;
  m.map_base_ = mapped;
  m.data_ = static_cast<std::byte*>(mapped);
  m.reserved_ = m.map_length_;
  m.map_flags_ = MAP_SHARED;
  map_options settle = options;
  if (!settle.domain) settle.domain = info.domain;
  if (auto ec = m.settle_granularity(settle, st.st_rdev)) return ec;
  if (!m.own_description_)
    detail::set_detail("map: the mapping shares the caller's open file description (%s)", m.shared_cause_);
  return m;
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_DEVDAX_MAP_HPP
