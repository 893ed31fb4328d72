// SPDX-License-Identifier: MIT
// The Linux ABI values mapdirect needs that an older libc may not name.
// Namespaced constants, never macros: a header that defined MAP_SYNC itself
// would change what a user's own `#ifdef MAP_SYNC` means. Each value is the
// kernel's (its uapi header in the comment); where the system headers define
// the name too, a static_assert checks that they agree, so a wrong value here
// fails the build instead of passing a wrong flag to the kernel.
#ifndef MAPDIRECT_DETAIL_LINUX_ABI_HPP
#define MAPDIRECT_DETAIL_LINUX_ABI_HPP

#include "../config.hpp"

#include <cstdint>

// Only for the static_asserts (glibc's <fcntl.h> and <sys/stat.h> carry the
// <linux/falloc.h> and <linux/stat.h> names; musl's would clash with them).
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#if defined(MAPDIRECT_ARCH_AARCH64)
#include <sys/auxv.h>
#endif

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {
namespace linux_abi {

/// mmap: a shared mapping whose unknown flags fail (EOPNOTSUPP) instead of
/// being ignored (include/uapi/linux/mman.h, every architecture; Linux 4.15).
inline constexpr int map_shared_validate = 0x03;
#ifdef MAP_SHARED_VALIDATE
static_assert(map_shared_validate == MAP_SHARED_VALIDATE, "linux_abi: MAP_SHARED_VALIDATE differs from <sys/mman.h>");
#endif

#if MAPDIRECT_HAS_MAP_SYNC
/// mmap: synchronous page faults (asm-generic/mman-common.h; Linux 4.15).
/// Absent where MAPDIRECT_HAS_MAP_SYNC is 0 (0x80000 is another flag there).
inline constexpr int map_sync = 0x80000;
#ifdef MAP_SYNC
static_assert(map_sync == MAP_SYNC, "linux_abi: MAP_SYNC differs from <sys/mman.h>");
#endif
#endif

/// mmap: MAP_FIXED that fails (EEXIST) instead of replacing a mapping
/// (asm-generic/mman-common.h, alpha's asm/mman.h; Linux 4.17).
#if defined(__alpha__)
inline constexpr int map_fixed_noreplace = 0x200000;
#else
inline constexpr int map_fixed_noreplace = 0x100000;
#endif
#ifdef MAP_FIXED_NOREPLACE
static_assert(map_fixed_noreplace == MAP_FIXED_NOREPLACE, "linux_abi: MAP_FIXED_NOREPLACE differs from <sys/mman.h>");
#endif

/// statx stx_attributes: the file is in DAX mode (include/uapi/linux/stat.h; Linux 5.8).
inline constexpr std::uint64_t statx_attr_dax = 0x00200000;
#ifdef STATX_ATTR_DAX
static_assert(statx_attr_dax == STATX_ATTR_DAX, "linux_abi: STATX_ATTR_DAX differs from <sys/stat.h>");
#endif

/// fallocate: unshare the range's shared (reflinked) extents
/// (include/uapi/linux/falloc.h).
inline constexpr int falloc_fl_unshare_range = 0x40;
#ifdef FALLOC_FL_UNSHARE_RANGE
static_assert(falloc_fl_unshare_range == FALLOC_FL_UNSHARE_RANGE,
              "linux_abi: FALLOC_FL_UNSHARE_RANGE differs from <fcntl.h>");
#endif

/// statfs f_type of XFS and of ext2/3/4 (include/uapi/linux/magic.h).
inline constexpr unsigned long xfs_super_magic = 0x58465342;
inline constexpr unsigned long ext4_super_magic = 0xEF53;
#ifdef XFS_SUPER_MAGIC
static_assert(xfs_super_magic == XFS_SUPER_MAGIC, "linux_abi: XFS_SUPER_MAGIC differs from <linux/magic.h>");
#endif
#ifdef EXT4_SUPER_MAGIC
static_assert(ext4_super_magic == EXT4_SUPER_MAGIC, "linux_abi: EXT4_SUPER_MAGIC differs from <linux/magic.h>");
#endif

/// SIGBUS si_code: memory poison consumed by this access (action required)
/// and reported asynchronously (action optional) (asm-generic/siginfo.h).
inline constexpr int bus_mceerr_ar = 4;
inline constexpr int bus_mceerr_ao = 5;
#ifdef BUS_MCEERR_AR
static_assert(bus_mceerr_ar == BUS_MCEERR_AR, "linux_abi: BUS_MCEERR_AR differs from <signal.h>");
#endif
#ifdef BUS_MCEERR_AO
static_assert(bus_mceerr_ao == BUS_MCEERR_AO, "linux_abi: BUS_MCEERR_AO differs from <signal.h>");
#endif

#if defined(MAPDIRECT_ARCH_AARCH64)
/// aarch64 AT_HWCAP: DC CVAP is implemented (arch/arm64/include/uapi/asm/hwcap.h).
inline constexpr unsigned long hwcap_dcpop = 1UL << 16;
#ifdef HWCAP_DCPOP
static_assert(hwcap_dcpop == HWCAP_DCPOP, "linux_abi: HWCAP_DCPOP differs from <sys/auxv.h>");
#endif
#endif

}  // namespace linux_abi
}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_LINUX_ABI_HPP
