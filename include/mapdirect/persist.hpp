// SPDX-License-Identifier: MIT
// CPU persistence primitives: cache-line flush, drain fence, and copies that
// leave their destination flushed. They work on any memory; on a mapping
// whose granularity is cache_line they make stores durable.
//
//   const auto f = mapdirect::detect_flush_instruction();   // CLWB, CLFLUSHOPT, ...
//   std::memcpy(dst, src, n);
//   mapdirect::flush_lines(dst, n, f);                      // write the lines back...
//   mapdirect::drain(f);                                    // ...and wait for them
//   mapdirect::memcpy_flush(dst, src, n, f);                // copy + write-back in one
//   mapdirect::drain(f);
#ifndef MAPDIRECT_PERSIST_HPP
#define MAPDIRECT_PERSIST_HPP

#include "config.hpp"
#include "detail/linux_abi.hpp"
#include "detail/observer.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(MAPDIRECT_ARCH_X86_64)
#include <cpuid.h>
#include <emmintrin.h>
#include <immintrin.h>

#include <atomic>
#elif defined(MAPDIRECT_ARCH_AARCH64)
#include <sys/auxv.h>
#endif

MAPDIRECT_BEGIN_NAMESPACE

/// The instruction that writes a cache line back towards memory.
enum class flush_instruction {
  none,        ///< no flush instruction (unsupported architecture): only msync can persist
  clflush,     ///< x86 CLFLUSH: serialised, evicts; needs no fence afterwards
  clflushopt,  ///< x86 CLFLUSHOPT: weakly ordered, evicts; SFENCE to drain
  clwb,        ///< x86 CLWB: weakly ordered, may keep the line; SFENCE to drain
  dc_cvac,     ///< Arm DC CVAC: clean to point of coherency; DSB SY to drain
  dc_cvap,     ///< Arm DC CVAP (ARMv8.2 DCPoP): clean to point of persistence; DSB SY to drain
};

/// Name of a flush instruction ("clwb").
constexpr const char* to_string(flush_instruction f) noexcept {
  switch (f) {
    case flush_instruction::none: return "none";
    case flush_instruction::clflush: return "clflush";
    case flush_instruction::clflushopt: return "clflushopt";
    case flush_instruction::clwb: return "clwb";
    case flush_instruction::dc_cvac: return "dc cvac";
    case flush_instruction::dc_cvap: return "dc cvap";
  }
  return "?";
}

/// Where a store becomes persistent (the nd region's persistence_domain).
enum class persistence_domain {
  unknown,            ///< not persistent memory, or not resolvable: assume the least
  memory_controller,  ///< ADR: stores persist once flushed from the CPU caches
  cpu_cache,          ///< eADR: stores persist once globally visible (a fence suffices)
};

/// Name of a persistence domain ("cpu_cache").
constexpr const char* to_string(persistence_domain d) noexcept {
  switch (d) {
    case persistence_domain::unknown: return "unknown";
    case persistence_domain::memory_controller: return "memory_controller";
    case persistence_domain::cpu_cache: return "cpu_cache";
  }
  return "?";
}

namespace detail {
inline flush_instruction detect_flush_instruction_uncached() noexcept {
#if defined(MAPDIRECT_ARCH_X86_64)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    if (b & (1u << 24)) return flush_instruction::clwb;
    if (b & (1u << 23)) return flush_instruction::clflushopt;
  }
  if (__get_cpuid(1, &a, &b, &c, &d) && (d & (1u << 19))) return flush_instruction::clflush;
  return flush_instruction::none;
#elif defined(MAPDIRECT_ARCH_AARCH64)
  if (MAPDIRECT_AARCH64_DC_CVAP && (::getauxval(AT_HWCAP) & detail::linux_abi::hwcap_dcpop))
    return flush_instruction::dc_cvap;
  return flush_instruction::dc_cvac;
#else
  return flush_instruction::none;
#endif
}

inline std::size_t detect_cache_line_size() noexcept {
#if defined(MAPDIRECT_ARCH_AARCH64)
  std::uint64_t ctr = 0;
  __asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
  return std::size_t{4} << ((ctr >> 16) & 0xF);  // DminLine: log2 of words
#else
  return 64;
#endif
}
}  // namespace detail

/// The best flush instruction this CPU offers (CPUID / HWCAP, read once).
inline flush_instruction detect_flush_instruction() noexcept {
  static const flush_instruction cached = detail::detect_flush_instruction_uncached();
  return cached;
}

/// The smallest data cache line of this CPU (64 on x86-64; CTR_EL0 on Arm).
inline std::size_t cache_line_size() noexcept {
  static const std::size_t cached = detail::detect_cache_line_size();
  return cached;
}

/// Writes back every cache line overlapping [addr, addr+len) with instruction
/// `f`. Call drain() once after a batch of flushes.
inline void flush_lines(const void* addr, std::size_t len, flush_instruction f) noexcept {
  if (len == 0) return;
#if defined(MAPDIRECT_ARCH_X86_64)
  constexpr std::size_t line = 64;  // a constant stride: no load of the cached size per call
#else
  const std::size_t line = cache_line_size();
#endif
  auto p = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{line} - 1);
  const auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
  switch (f) {
#if defined(MAPDIRECT_ARCH_X86_64)
    case flush_instruction::clwb:
      for (; p < end; p += line) {
        MAPDIRECT_OBSERVE_FLUSH(reinterpret_cast<const void*>(p), f);
        __asm__ volatile("clwb %0" : "+m"(*reinterpret_cast<volatile char*>(p)));
      }
      break;
    case flush_instruction::clflushopt:
      for (; p < end; p += line) {
        MAPDIRECT_OBSERVE_FLUSH(reinterpret_cast<const void*>(p), f);
        __asm__ volatile("clflushopt %0" : "+m"(*reinterpret_cast<volatile char*>(p)));
      }
      break;
    case flush_instruction::clflush:
      for (; p < end; p += line) {
        MAPDIRECT_OBSERVE_FLUSH(reinterpret_cast<const void*>(p), f);
        __asm__ volatile("clflush %0" : "+m"(*reinterpret_cast<volatile char*>(p)));
      }
      break;
#elif defined(MAPDIRECT_ARCH_AARCH64)
    case flush_instruction::dc_cvap:
      // "sys #3, c7, c12, #1" is DC CVAP, spelled so that pre-ARMv8.2 assemblers accept it.
      for (; p < end; p += line) {
        MAPDIRECT_OBSERVE_FLUSH(reinterpret_cast<const void*>(p), f);
        __asm__ volatile("sys #3, c7, c12, #1, %0" : : "r"(p) : "memory");
      }
      break;
    case flush_instruction::dc_cvac:
      for (; p < end; p += line) {
        MAPDIRECT_OBSERVE_FLUSH(reinterpret_cast<const void*>(p), f);
        __asm__ volatile("dc cvac, %0" : : "r"(p) : "memory");
      }
      break;
#endif
    default: break;
  }
}

/// Waits until every preceding flush and non-temporal store has reached the
/// persistence domain. No-op after CLFLUSH, which is already ordered.
inline void drain(flush_instruction f) noexcept {
#if defined(MAPDIRECT_ARCH_X86_64)
  if (f != flush_instruction::clflush) {
    MAPDIRECT_OBSERVE_FENCE();
    _mm_sfence();
  } else {
    __asm__ volatile("" ::: "memory");
  }
#elif defined(MAPDIRECT_ARCH_AARCH64)
  (void)f;
  MAPDIRECT_OBSERVE_FENCE();
  // DSB, not DMB: the Arm architecture guarantees completion of DC CVAP/CVAC
  // only after a DSB (Linux's pmem flush ends with one too).
  __asm__ volatile("dsb sy" ::: "memory");
#else
  (void)f;
  MAPDIRECT_OBSERVE_FENCE();
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/// A store fence whatever the flush instruction: what makes stores durable
/// on byte-granular (eADR) memory, where no flush is needed but the stores
/// must be globally visible before the caller acknowledges them.
inline void store_fence() noexcept {
  MAPDIRECT_OBSERVE_FENCE();
#if defined(MAPDIRECT_ARCH_X86_64)
  _mm_sfence();
#elif defined(MAPDIRECT_ARCH_AARCH64)
  __asm__ volatile("dsb sy" ::: "memory");
#else
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

namespace detail {
#if defined(MAPDIRECT_ARCH_X86_64)
// Stores 64-byte blocks with MOVNTDQ; dst must be 64-byte aligned, n a multiple of 64.
inline void stream_copy_blocks(char* dst, const char* src, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; i += 64) {
    MAPDIRECT_OBSERVE_NT(dst + i, 64);
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), d);
  }
}

inline void stream_fill_blocks(char* dst, int byte, std::size_t n) noexcept {
  const __m128i v = _mm_set1_epi8(static_cast<char>(byte));
  for (std::size_t i = 0; i < n; i += 64) {
    MAPDIRECT_OBSERVE_NT(dst + i, 64);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), v);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), v);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), v);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), v);
  }
}

// Non-temporal 4/8-byte stores (MOVNTI) for a partial line; dst and n must be
// multiples of 4. Cheaper than store + flush + reload of the line.
inline void stream_copy_words(char* dst, const char* src, std::size_t n) noexcept {
  std::size_t i = 0;
  if ((reinterpret_cast<std::uintptr_t>(dst) & 7) && n >= 4) {
    int v;
    std::memcpy(&v, src, 4);
    MAPDIRECT_OBSERVE_NT(dst, 4);
    _mm_stream_si32(reinterpret_cast<int*>(dst), v);
    i = 4;
  }
  for (; i + 8 <= n; i += 8) {
    long long v;
    std::memcpy(&v, src + i, 8);
    MAPDIRECT_OBSERVE_NT(dst + i, 8);
    _mm_stream_si64(reinterpret_cast<long long*>(dst + i), v);
  }
  if (i + 4 <= n) {  // n is a multiple of 4: the last word
    int v;
    std::memcpy(&v, src + i, 4);
    MAPDIRECT_OBSERVE_NT(dst + i, 4);
    _mm_stream_si32(reinterpret_cast<int*>(dst + i), v);
  }
}

inline void stream_fill_words(char* dst, int byte, std::size_t n) noexcept {
  const unsigned long long pattern = 0x0101010101010101ULL * static_cast<unsigned char>(byte);
  std::size_t i = 0;
  if ((reinterpret_cast<std::uintptr_t>(dst) & 7) && n >= 4) {
    MAPDIRECT_OBSERVE_NT(dst, 4);
    _mm_stream_si32(reinterpret_cast<int*>(dst), static_cast<int>(static_cast<unsigned>(pattern)));
    i = 4;
  }
  for (; i + 8 <= n; i += 8) {
    MAPDIRECT_OBSERVE_NT(dst + i, 8);
    _mm_stream_si64(reinterpret_cast<long long*>(dst + i), static_cast<long long>(pattern));
  }
  if (i + 4 <= n) {  // n is a multiple of 4: the last word
    MAPDIRECT_OBSERVE_NT(dst + i, 4);
    _mm_stream_si32(reinterpret_cast<int*>(dst + i), static_cast<int>(static_cast<unsigned>(pattern)));
  }
}

// ---- Run-time dispatch of the non-temporal body (AVX2 / AVX-512 / SSE2) ----
// The whole-line body of memcpy_flush/memset_flush picks its loop once per
// process by CPUID (and XGETBV: the OS must save the wider registers). The
// variants are ordinary inline functions compiled for their ISA with a target
// attribute, so the header needs no -mavx2 and runs on any x86-64. Every
// 64-byte line stored is reported to the observer exactly as the SSE2 loop does.

/// The instruction set of the non-temporal body loop.
enum class nt_isa : int { sse2 = 0, avx2 = 1, avx512 = 2 };

inline const char* to_string(nt_isa i) noexcept {
  switch (i) {
    case nt_isa::sse2: return "sse2";
    case nt_isa::avx2: return "avx2";
    case nt_isa::avx512: return "avx512";
  }
  return "?";
}

/// Whether this CPU and OS can run the `isa` variant (SSE2: always on x86-64).
inline bool cpu_has_nt_isa(nt_isa isa) noexcept {
  if (isa == nt_isa::sse2) return true;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  if (!(c & (1u << 27)) || !(c & (1u << 28))) return false;  // OSXSAVE, AVX
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0x6u) != 0x6u) return false;  // XMM and YMM state saved by the OS
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (isa == nt_isa::avx2) return (b & (1u << 5)) != 0;
  return (b & (1u << 16)) != 0 && (lo & 0xe0u) == 0xe0u;  // AVX512F; opmask, ZMM state
}

// 256 bytes (four lines) per iteration: all loads first, so a cold source
// has four lines in flight before the first store waits on one.
__attribute__((target("avx2"))) inline void stream_copy_blocks_avx2(char* dst, const char* src,
                                                                    std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    // Software prefetch 2 KiB ahead, within the source only (as the AVX-512 loop).
    for (std::size_t k = i + 2048, e = std::min(i + 2304, n); k < e; k += 64) _mm_prefetch(src + k, _MM_HINT_T0);
    const __m256i* s = reinterpret_cast<const __m256i*>(src + i);
    const __m256i a0 = _mm256_loadu_si256(s + 0), a1 = _mm256_loadu_si256(s + 1);
    const __m256i a2 = _mm256_loadu_si256(s + 2), a3 = _mm256_loadu_si256(s + 3);
    const __m256i a4 = _mm256_loadu_si256(s + 4), a5 = _mm256_loadu_si256(s + 5);
    const __m256i a6 = _mm256_loadu_si256(s + 6), a7 = _mm256_loadu_si256(s + 7);
    __m256i* d = reinterpret_cast<__m256i*>(dst + i);
    MAPDIRECT_OBSERVE_NT(dst + i, 64);
    _mm256_stream_si256(d + 0, a0);
    _mm256_stream_si256(d + 1, a1);
    MAPDIRECT_OBSERVE_NT(dst + i + 64, 64);
    _mm256_stream_si256(d + 2, a2);
    _mm256_stream_si256(d + 3, a3);
    MAPDIRECT_OBSERVE_NT(dst + i + 128, 64);
    _mm256_stream_si256(d + 4, a4);
    _mm256_stream_si256(d + 5, a5);
    MAPDIRECT_OBSERVE_NT(dst + i + 192, 64);
    _mm256_stream_si256(d + 6, a6);
    _mm256_stream_si256(d + 7, a7);
  }
  for (; i < n; i += 64) {
    const __m256i* s = reinterpret_cast<const __m256i*>(src + i);
    const __m256i a0 = _mm256_loadu_si256(s), a1 = _mm256_loadu_si256(s + 1);
    MAPDIRECT_OBSERVE_NT(dst + i, 64);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), a0);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 32), a1);
  }
}

__attribute__((target("avx2"))) inline void stream_fill_blocks_avx2(char* dst, int byte, std::size_t n) noexcept {
  const __m256i v = _mm256_set1_epi8(static_cast<char>(byte));
  for (std::size_t i = 0; i < n; i += 64) {
    MAPDIRECT_OBSERVE_NT(dst + i, 64);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), v);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 32), v);
  }
}

// One ZMM store is one whole line; eight lines are loaded before the first
// store (eight registers, no spill).
__attribute__((target("avx512f"))) inline void stream_copy_blocks_avx512(char* dst, const char* src,
                                                                         std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 512 <= n; i += 512) {
    const char* s = src + i;
    char* d = dst + i;
    // Software prefetch 2 KiB (four iterations) ahead, within the source
    // only: on a cold source the hardware prefetcher has not ramped up on a
    // few KiB, and it stops at each 4 KiB page. 2 KiB measured best of
    // 0.5/1/2/3 KiB on cold 16 KiB-16 MiB copies (docs/bench/cold.md).
    for (std::size_t k = i + 2048, e = std::min(i + 2560, n); k < e; k += 64) _mm_prefetch(src + k, _MM_HINT_T0);
    const __m512i a0 = _mm512_loadu_si512(s), a1 = _mm512_loadu_si512(s + 64);
    const __m512i a2 = _mm512_loadu_si512(s + 128), a3 = _mm512_loadu_si512(s + 192);
    const __m512i a4 = _mm512_loadu_si512(s + 256), a5 = _mm512_loadu_si512(s + 320);
    const __m512i a6 = _mm512_loadu_si512(s + 384), a7 = _mm512_loadu_si512(s + 448);
    MAPDIRECT_OBSERVE_NT(d, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d), a0);
    MAPDIRECT_OBSERVE_NT(d + 64, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 64), a1);
    MAPDIRECT_OBSERVE_NT(d + 128, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 128), a2);
    MAPDIRECT_OBSERVE_NT(d + 192, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 192), a3);
    MAPDIRECT_OBSERVE_NT(d + 256, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 256), a4);
    MAPDIRECT_OBSERVE_NT(d + 320, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 320), a5);
    MAPDIRECT_OBSERVE_NT(d + 384, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 384), a6);
    MAPDIRECT_OBSERVE_NT(d + 448, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 448), a7);
  }
  for (; i < n; i += 64) {
    const __m512i a0 = _mm512_loadu_si512(src + i);
    MAPDIRECT_OBSERVE_NT(dst + i, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), a0);
  }
}

__attribute__((target("avx512f"))) inline void stream_fill_blocks_avx512(char* dst, int byte, std::size_t n) noexcept {
  const __m512i v = _mm512_set1_epi32(static_cast<int>(0x01010101u * static_cast<unsigned char>(byte)));
  for (std::size_t i = 0; i < n; i += 64) {
    MAPDIRECT_OBSERVE_NT(dst + i, 64);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), v);
  }
}

struct nt_kernels {
  void (*copy)(char*, const char*, std::size_t) noexcept;
  void (*fill)(char*, int, std::size_t) noexcept;
  nt_isa isa;
};

inline const nt_kernels& nt_kernels_for(nt_isa isa) noexcept {
  static constexpr nt_kernels table[] = {
      {&stream_copy_blocks, &stream_fill_blocks, nt_isa::sse2},
      {&stream_copy_blocks_avx2, &stream_fill_blocks_avx2, nt_isa::avx2},
      {&stream_copy_blocks_avx512, &stream_fill_blocks_avx512, nt_isa::avx512},
  };
  return table[static_cast<int>(isa)];
}

inline nt_isa detect_nt_isa() noexcept {
  if (cpu_has_nt_isa(nt_isa::avx512)) return nt_isa::avx512;
  if (cpu_has_nt_isa(nt_isa::avx2)) return nt_isa::avx2;
  return nt_isa::sse2;
}

// The one cached choice: initialised on first use (thread-safe static), then
// one relaxed load per call. An atomic only so that force_nt_isa can switch it.
inline std::atomic<const nt_kernels*>& nt_dispatch_slot() noexcept {
  static std::atomic<const nt_kernels*> slot{&nt_kernels_for(detect_nt_isa())};
  return slot;
}

/// The variant memcpy_flush/memset_flush use for bodies of at least
/// nt_dispatch_min bytes.
inline nt_isa current_nt_isa() noexcept { return nt_dispatch_slot().load(std::memory_order_relaxed)->isa; }

/// Test-only: makes every later call use `isa`. Returns false (and changes
/// nothing) when this CPU cannot run it. Not meant to race with copies.
inline bool force_nt_isa(nt_isa isa) noexcept {
  if (!cpu_has_nt_isa(isa)) return false;
  nt_dispatch_slot().store(&nt_kernels_for(isa), std::memory_order_relaxed);
  return true;
}

// Bodies shorter than this stay on the inlined SSE2 loop: no indirect call
// and no AVX state transition where a copy is a few lines.
constexpr std::size_t nt_dispatch_min = 256;

inline void stream_copy_body(char* dst, const char* src, std::size_t n) noexcept {
  if (n < nt_dispatch_min) stream_copy_blocks(dst, src, n);
  else nt_dispatch_slot().load(std::memory_order_relaxed)->copy(dst, src, n);
}

inline void stream_fill_body(char* dst, int byte, std::size_t n) noexcept {
  if (n < nt_dispatch_min) stream_fill_blocks(dst, byte, n);
  else nt_dispatch_slot().load(std::memory_order_relaxed)->fill(dst, byte, n);
}
// ---- end of run-time dispatch ----
#else
// No non-temporal stores here: split_nt() returns false without calling
// these, which exist so that its callers' lambdas need no #if.
inline void stream_copy_body(char*, const char*, std::size_t) noexcept {}
inline void stream_copy_words(char*, const char*, std::size_t) noexcept {}
inline void stream_fill_body(char*, int, std::size_t) noexcept {}
inline void stream_fill_words(char*, int, std::size_t) noexcept {}
#endif

// Cached edges of the non-temporal path (fewer than 64 bytes): a few
// overlapping fixed-size moves the compiler inlines, instead of a libc call
// with a variable length. All loads come before the stores.
// One such move: the first and the last W bytes of [s, s+n), W <= n <= 2W.
// Always inlined, so that each fixed-size memcpy stays one load or store.
template <std::size_t W>
__attribute__((always_inline)) inline void copy_overlapping(char* d, const char* s, std::size_t n) noexcept {
  char a[W], b[W];
  std::memcpy(a, s, W);
  std::memcpy(b, s + n - W, W);
  std::memcpy(d, a, W);
  std::memcpy(d + n - W, b, W);
}

inline void copy_edge(char* d, const char* s, std::size_t n) noexcept {
  if (n >= 32) {
    copy_overlapping<32>(d, s, n);
  } else if (n >= 16) {
    copy_overlapping<16>(d, s, n);
  } else if (n >= 8) {
    copy_overlapping<8>(d, s, n);
  } else if (n >= 4) {
    copy_overlapping<4>(d, s, n);
  } else if (n >= 2) {
    copy_overlapping<2>(d, s, n);
  } else if (n == 1) {
    d[0] = s[0];
  }
}

// fill_edge's move: the first and the last W bytes of [d, d+n), W <= n <= 2W.
template <std::size_t W>
__attribute__((always_inline)) inline void fill_overlapping(char* d, int byte, std::size_t n) noexcept {
  std::memset(d, byte, W);
  std::memset(d + n - W, byte, W);
}

inline void fill_edge(char* d, int byte, std::size_t n) noexcept {
  if (n >= 32) {
    fill_overlapping<32>(d, byte, n);
  } else if (n >= 16) {
    fill_overlapping<16>(d, byte, n);
  } else if (n >= 8) {
    fill_overlapping<8>(d, byte, n);
  } else if (n >= 4) {
    fill_overlapping<4>(d, byte, n);
  } else if (n >= 2) {
    fill_overlapping<2>(d, byte, n);
  } else if (n == 1) {
    d[0] = static_cast<char>(byte);
  }
}

// Splits [dst, dst+n) into a head up to the first 64-byte boundary, a body of
// whole lines and a tail. The body goes through non-temporal stores, and so
// does an edge whose address and length are multiples of 4 (MOVNTI); other
// edges go through the cache and a flush. Returns false (nothing done) where
// non-temporal stores are not implemented.
template <class Body, class Words, class Edge>
inline bool split_nt(char* dst, std::size_t n, flush_instruction f, Body body, Words words, Edge edge) noexcept {
#if defined(MAPDIRECT_ARCH_X86_64)
  std::size_t head = (64 - (reinterpret_cast<std::uintptr_t>(dst) & 63)) & 63;
  if (head > n) head = n;
  const std::size_t mid = (n - head) & ~std::size_t{63};
  const std::size_t tail = n - head - mid;
  auto store_edge = [&](std::size_t off, std::size_t len) {
    if (((reinterpret_cast<std::uintptr_t>(dst + off) | len) & 3) == 0) {
      words(off, len);
    } else {
      edge(off, len);
      MAPDIRECT_OBSERVE_STORE(dst + off, len);
      flush_lines(dst + off, len, f);
    }
  };
  // Both edges before the body: a cached edge store on a cold line waits for
  // the line to be read (RFO); issued first, those reads overlap the body's
  // non-temporal stores instead of stalling the final fence.
  if (head) store_edge(0, head);
  if (tail) store_edge(head + mid, tail);
  if (mid) body(head, mid);
  // drain() does not fence after CLFLUSH (it is ordered by itself), but
  // non-temporal stores still need an SFENCE.
  if (f == flush_instruction::clflush) {
    MAPDIRECT_OBSERVE_FENCE();
    _mm_sfence();
  }
  return true;
#else
  (void)dst, (void)n, (void)f, (void)body, (void)words, (void)edge;
  return false;
#endif
}
}  // namespace detail

/// Copies n bytes and writes the destination back with `f` (no drain).
/// Copies of at least `nt_threshold` bytes bypass the cache with
/// non-temporal stores where the CPU has them (x86-64); unaligned edges that
/// MOVNTI cannot store go through the cache and a flush.
inline void memcpy_flush(void* dst, const void* src, std::size_t n, flush_instruction f,
                         std::size_t nt_threshold = MAPDIRECT_MOVNT_THRESHOLD) noexcept {
  if (n == 0) return;
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  if (n >= nt_threshold && f != flush_instruction::none) {
    const bool done = detail::split_nt(
        d, n, f, [&](std::size_t off, std::size_t len) { detail::stream_copy_body(d + off, s + off, len); },
        [&](std::size_t off, std::size_t len) { detail::stream_copy_words(d + off, s + off, len); },
        [&](std::size_t off, std::size_t len) { detail::copy_edge(d + off, s + off, len); });
    if (done) return;
  }
  std::memcpy(d, s, n);
  MAPDIRECT_OBSERVE_STORE(d, n);
  flush_lines(d, n, f);
}

/// Fills n bytes with `byte` and writes the destination back with `f` (no drain).
inline void memset_flush(void* dst, int byte, std::size_t n, flush_instruction f,
                         std::size_t nt_threshold = MAPDIRECT_MOVNT_THRESHOLD) noexcept {
  if (n == 0) return;
  auto* d = static_cast<char*>(dst);
  if (n >= nt_threshold && f != flush_instruction::none) {
    const bool done = detail::split_nt(
        d, n, f, [&](std::size_t off, std::size_t len) { detail::stream_fill_body(d + off, byte, len); },
        [&](std::size_t off, std::size_t len) { detail::stream_fill_words(d + off, byte, len); },
        [&](std::size_t off, std::size_t len) { detail::fill_edge(d + off, byte, len); });
    if (done) return;
  }
  std::memset(d, byte, n);
  MAPDIRECT_OBSERVE_STORE(d, n);
  flush_lines(d, n, f);
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_PERSIST_HPP
