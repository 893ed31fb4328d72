// SPDX-License-Identifier: MIT
// mapdirect and your record locks: descriptors whose close mapdirect defers.
//
//   ::fcntl(fd, F_SETLK, &lock);                        // your POSIX record lock
//   auto m = mapdirect::direct_mapping::map(fd, 0, n);  // map, use, close: the lock stays
//   ...
//   ::fcntl(fd, F_SETLK, &unlock);
//   mapdirect::release_deferred_descriptors();          // close what mapdirect kept open
//
// POSIX record locks (fcntl F_SETLK/F_SETLKW, lockf) belong to the process
// and the inode, and closing *any* descriptor of that inode releases all of
// them. mapdirect never does that: when it would close a descriptor of a file
// on which this process holds (or waits for) a POSIX lock, it keeps the
// descriptor open instead and closes it later, once the locks are gone (at
// its next close, or when you call release_deferred_descriptors()). While the
// locks are held, new mapdirect descriptors of that file reuse the deferred
// ones, so repeated map/close cycles do not accumulate descriptors.
// Open-file-description locks (F_OFD_SETLK) and flock() are not affected by
// other descriptors' closes and need none of this.
#ifndef MAPDIRECT_DESCRIPTOR_HPP
#define MAPDIRECT_DESCRIPTOR_HPP

#include "config.hpp"
#include "detail/descriptor.hpp"

#include <cstddef>

MAPDIRECT_BEGIN_NAMESPACE

/// Closes every descriptor whose close mapdirect deferred to keep this
/// process's POSIX record locks, if the process no longer holds a POSIX lock
/// on its file; returns how many are still deferred. Call it after releasing
/// record locks on files mapdirect used, when no other mapdirect call will
/// follow soon. Never fails; thread-safe (any number of threads). After
/// fork() the child holds none of the parent's locks, so a call in the child
/// closes its inherited copies without affecting the parent. The deferred
/// descriptors are close-on-exec. At most 1024 can be deferred; beyond that a
/// descriptor simply stays open (a leak rather than a dropped lock).
inline std::size_t release_deferred_descriptors() noexcept { return detail::deferred_closes::retry(); }

/// How many descriptors are deferred now (see release_deferred_descriptors()).
inline std::size_t deferred_descriptor_count() noexcept { return detail::deferred_closes::pending(); }

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DESCRIPTOR_HPP
