// SPDX-License-Identifier: MIT
// CPU persistence primitives: cache-line flush, drain fence, and copies that
// leave their destination flushed. They work on any memory; on a mapping
// whose granularity is cache_line they make stores durable.
#ifndef MAPDIRECT_PERSIST_HPP
#define MAPDIRECT_PERSIST_HPP

#include "config.hpp"
#include "detail/observer.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(MAPDIRECT_ARCH_X86_64)
#include <cpuid.h>
#include <emmintrin.h>
#elif defined(MAPDIRECT_ARCH_AARCH64)
#include <sys/auxv.h>
#ifndef HWCAP_DCPOP
#define HWCAP_DCPOP (1 << 16)
#endif
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
  if (MAPDIRECT_AARCH64_DC_CVAP && (::getauxval(AT_HWCAP) & HWCAP_DCPOP)) return flush_instruction::dc_cvap;
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
    default:
      break;
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
#endif

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
  if (head) store_edge(0, head);
  if (mid) body(head, mid);
  if (tail) store_edge(head + mid, tail);
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
        d, n, f,
        [&](std::size_t off, std::size_t len) {
#if defined(MAPDIRECT_ARCH_X86_64)
          detail::stream_copy_blocks(d + off, s + off, len);
#else
          (void)off, (void)len;
#endif
        },
        [&](std::size_t off, std::size_t len) {
#if defined(MAPDIRECT_ARCH_X86_64)
          detail::stream_copy_words(d + off, s + off, len);
#else
          (void)off, (void)len;
#endif
        },
        [&](std::size_t off, std::size_t len) { std::memcpy(d + off, s + off, len); });
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
        d, n, f,
        [&](std::size_t off, std::size_t len) {
#if defined(MAPDIRECT_ARCH_X86_64)
          detail::stream_fill_blocks(d + off, byte, len);
#else
          (void)off, (void)len;
#endif
        },
        [&](std::size_t off, std::size_t len) {
#if defined(MAPDIRECT_ARCH_X86_64)
          detail::stream_fill_words(d + off, byte, len);
#else
          (void)off, (void)len;
#endif
        },
        [&](std::size_t off, std::size_t len) { std::memset(d + off, byte, len); });
    if (done) return;
  }
  std::memset(d, byte, n);
  MAPDIRECT_OBSERVE_STORE(d, n);
  flush_lines(d, n, f);
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_PERSIST_HPP
