// SPDX-License-Identifier: MIT
// Test-only persistence observer. When a test binary is built with
// MAPDIRECT_TEST_OBSERVER defined, the CPU persistence primitives in
// persist.hpp report every cache-line flush, non-temporal store, cached store
// of memcpy_flush/memset_flush and fence to these functions, which the test
// defines. Without the macro the hooks expand to nothing (zero cost).
#ifndef MAPDIRECT_DETAIL_OBSERVER_HPP
#define MAPDIRECT_DETAIL_OBSERVER_HPP

#include "../config.hpp"

#include <cstddef>

#if defined(MAPDIRECT_TEST_OBSERVER)
MAPDIRECT_BEGIN_NAMESPACE
enum class flush_instruction;
namespace detail {
namespace observer {
/// A flush instruction `f` was issued for the cache line at `line`.
void on_flush(const void* line, flush_instruction f) noexcept;
/// A non-temporal store of [addr, addr+len) was issued.
void on_nt_store(const void* addr, std::size_t len) noexcept;
/// An ordinary (cached) store of [addr, addr+len) by memcpy_flush/memset_flush completed.
void on_store(const void* addr, std::size_t len) noexcept;
/// A store fence (SFENCE, DMB ISH, a full fence) was issued.
void on_fence() noexcept;
}  // namespace observer
}  // namespace detail
MAPDIRECT_END_NAMESPACE
#define MAPDIRECT_OBSERVE_FLUSH(line, f) ::mapdirect::detail::observer::on_flush((line), (f))
#define MAPDIRECT_OBSERVE_NT(addr, len) ::mapdirect::detail::observer::on_nt_store((addr), (len))
#define MAPDIRECT_OBSERVE_STORE(addr, len) ::mapdirect::detail::observer::on_store((addr), (len))
#define MAPDIRECT_OBSERVE_FENCE() ::mapdirect::detail::observer::on_fence()
#else
#define MAPDIRECT_OBSERVE_FLUSH(line, f) ((void)0)
#define MAPDIRECT_OBSERVE_NT(addr, len) ((void)0)
#define MAPDIRECT_OBSERVE_STORE(addr, len) ((void)0)
#define MAPDIRECT_OBSERVE_FENCE() ((void)0)
#endif

#endif  // MAPDIRECT_DETAIL_OBSERVER_HPP
