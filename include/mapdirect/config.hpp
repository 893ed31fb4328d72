// mapdirect: durable, byte-granular updates to mapped files on Linux.
// SPDX-License-Identifier: MIT
// Configuration: the MAPDIRECT_* macros the library reads, each with its
// default. Define one before the first mapdirect include (or with -D):
//
//   #define MAPDIRECT_MOVNT_THRESHOLD 256   // PMDK's non-temporal threshold
//   #include <mapdirect/mapdirect.hpp>
#ifndef MAPDIRECT_CONFIG_HPP
#define MAPDIRECT_CONFIG_HPP

// Configuration macros. Each one may be defined by the user before the first
// mapdirect include (or on the command line) to override the default.

#define MAPDIRECT_VERSION_MAJOR 0
#define MAPDIRECT_VERSION_MINOR 1
#define MAPDIRECT_VERSION_PATCH 0
#define MAPDIRECT_VERSION (MAPDIRECT_VERSION_MAJOR * 10000 + MAPDIRECT_VERSION_MINOR * 100 + MAPDIRECT_VERSION_PATCH)

#if !defined(__linux__)
#error "mapdirect supports Linux only"
#endif

// The versioned inline namespace: symbols from two incompatible versions can
// then coexist in one program without ODR violations.
#ifndef MAPDIRECT_ABI_NAMESPACE
#define MAPDIRECT_ABI_NAMESPACE v0
#endif
#define MAPDIRECT_BEGIN_NAMESPACE \
  namespace mapdirect {           \
  inline namespace MAPDIRECT_ABI_NAMESPACE {
#define MAPDIRECT_END_NAMESPACE \
  }                             \
  }

// Kernel MAP_DIRECT (never merged into mainline). Define MAPDIRECT_MAP_DIRECT_FLAG
// to the mmap flag value of a kernel that carries the series, and
// MAPDIRECT_F_MAY_SEAL_IOMAP to its fcntl command, to enable map_mode::direct
// and the native iomap seal. They are never probed by default: both proposed
// values (0x43 and 0x80000) mean something else on mainline kernels.
// #define MAPDIRECT_MAP_DIRECT_FLAG 0x80000
// #define MAPDIRECT_F_MAY_SEAL_IOMAP 1039

// Derived, not to be defined by the user: 1 when both halves of the series
// are configured (the native iomap_seal needs the fcntl and the mmap flag).
#if defined(MAPDIRECT_F_MAY_SEAL_IOMAP) && defined(MAPDIRECT_MAP_DIRECT_FLAG)
#define MAPDIRECT_HAS_NATIVE_SEAL 1
#else
#define MAPDIRECT_HAS_NATIVE_SEAL 0
#endif

// MAP_SYNC exists only on architectures using the generic mman flags. Never
// invent a value on alpha, mips, parisc or xtensa, where 0x80000 means
// MAP_HUGETLB or MAP_STACK.
#ifndef MAPDIRECT_HAS_MAP_SYNC
#if defined(__alpha__) || defined(__mips__) || defined(__hppa__) || defined(__xtensa__)
#define MAPDIRECT_HAS_MAP_SYNC 0
#else
#define MAPDIRECT_HAS_MAP_SYNC 1
#endif
#endif

// Copies at least this long use non-temporal stores on the cache-line path
// (whole lines, and partial lines whose address and length are multiples of
// 4); shorter ones are stored through the cache and flushed. Why 0, and when
// 256 may suit better: docs/bench/option_defaults.md. Per mapping:
// map_options::movnt_threshold.
#ifndef MAPDIRECT_MOVNT_THRESHOLD
#define MAPDIRECT_MOVNT_THRESHOLD 0
#endif

// Mappings at least this long are placed at a 2 MiB-aligned address so that
// DAX can serve PMD (huge page) faults.
#ifndef MAPDIRECT_HUGE_ALIGN_THRESHOLD
#define MAPDIRECT_HUGE_ALIGN_THRESHOLD (std::size_t{2} << 20)
#endif

// Size of the per-thread buffer that holds the detail of the last error.
#ifndef MAPDIRECT_ERROR_DETAIL_SIZE
#define MAPDIRECT_ERROR_DETAIL_SIZE 768
#endif

// aarch64: use DC CVAP when HWCAP reports DCPOP. Define to 0 to always use
// DC CVAC, e.g. under qemu-user 7.2, which advertises DCPOP but raises
// SIGILL on DC CVAP.
#ifndef MAPDIRECT_AARCH64_DC_CVAP
#define MAPDIRECT_AARCH64_DC_CVAP 1
#endif

// Leased seals one process can hold at once (the lease signal handler scans
// a fixed table: it may not allocate or lock).
#ifndef MAPDIRECT_MAX_LEASES
#define MAPDIRECT_MAX_LEASES 64
#endif

#if defined(__x86_64__)
#define MAPDIRECT_ARCH_X86_64 1
#elif defined(__aarch64__)
#define MAPDIRECT_ARCH_AARCH64 1
#endif

// The guarded copy (detail/guard_copy.hpp): 1, the x86-64 assembly routine
// whose faulting instructions the SIGBUS handler resumes at a fix-up label;
// 0, sigsetjmp + memcpy. Defaults to 1 on x86-64, and is always 0 under
// AddressSanitizer (which must see the memcpy to check it). The tests build
// one binary with 0 so both routines run on x86-64.
#if defined(__SANITIZE_ADDRESS__)
#define MAPDIRECT_GUARD_COPY_ASM 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MAPDIRECT_GUARD_COPY_ASM 0
#endif
#endif
#if !defined(MAPDIRECT_GUARD_COPY_ASM)
#if defined(MAPDIRECT_ARCH_X86_64)
#define MAPDIRECT_GUARD_COPY_ASM 1
#else
#define MAPDIRECT_GUARD_COPY_ASM 0
#endif
#endif

// Guarded copies at least this long use rep movsb (x86-64 assembly routine).
#ifndef MAPDIRECT_GUARD_REP_MOVSB_FROM
#define MAPDIRECT_GUARD_REP_MOVSB_FROM 256
#endif

// Test builds only: MAPDIRECT_TEST_OBSERVER makes persist.hpp report every
// flush, non-temporal store and fence to functions the test defines
// (detail/observer.hpp). Undefined by default.

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define MAPDIRECT_HAS_EXCEPTIONS 1
#else
#define MAPDIRECT_HAS_EXCEPTIONS 0
#endif

#endif  // MAPDIRECT_CONFIG_HPP
