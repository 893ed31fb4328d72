// The persistence observer: built only into mapdirect_tests_observer (with
// MAPDIRECT_TEST_OBSERVER defined), where persist.hpp reports every cache-line
// flush, non-temporal store, cached store of memcpy_flush/memset_flush and
// fence. The tests replay that trace and prove that every byte a call stores
// is covered by a flush or a non-temporal store issued after the store and
// followed by a fence before the call returns (CLFLUSH orders itself; on a
// byte-granular mapping a fence after the store is enough).
#if defined(MAPDIRECT_TEST_OBSERVER)
#include "catch.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using namespace mapdirect;

namespace {
struct event {
  enum kind_t { flush, nt, store, fence } kind;
  std::uintptr_t addr;
  std::size_t len;
  flush_instruction f;
};

// Single-threaded by construction: only the observer tests record, and they
// start no threads.
struct recorder {
  std::vector<event> events;
  bool on = false;
  void start() {
    events.clear();
    events.reserve(1u << 16);
    on = true;
  }
  std::vector<event> stop() {
    on = false;
    return std::move(events);
  }
};
recorder& rec() {
  static recorder r;
  return r;
}
}  // namespace

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {
namespace observer {
void on_flush(const void* line, flush_instruction f) noexcept {
  if (rec().on) rec().events.push_back({event::flush, reinterpret_cast<std::uintptr_t>(line), 0, f});
}
void on_nt_store(const void* addr, std::size_t len) noexcept {
  if (rec().on)
    rec().events.push_back({event::nt, reinterpret_cast<std::uintptr_t>(addr), len, flush_instruction::none});
}
void on_store(const void* addr, std::size_t len) noexcept {
  if (rec().on)
    rec().events.push_back({event::store, reinterpret_cast<std::uintptr_t>(addr), len, flush_instruction::none});
}
void on_fence() noexcept {
  if (rec().on) rec().events.push_back({event::fence, 0, 0, flush_instruction::none});
}
}  // namespace observer
}  // namespace detail
MAPDIRECT_END_NAMESPACE

namespace {
// On x86-64 the observer's flush stride is 64 (flush_lines' constant);
// elsewhere the CPU's data cache line.
std::size_t line_size() {
#if defined(MAPDIRECT_ARCH_X86_64)
  return 64;
#else
  return cache_line_size();
#endif
}

// Replays `ev` for the bytes [b, b+n), which were stored before the trace
// began (the caller's stores, or a memcpy inside the call that the observer
// does not see) and again by any store/nt event of the trace. Returns "" when
// every byte is durable at the end of the trace, else a description of the
// first byte that is not.
std::string uncovered(const std::vector<event>& ev, std::uintptr_t b, std::size_t n, bool byte_domain) {
  if (n == 0) return "";
  const std::size_t line = line_size();
  // Index (+1) and kind of the last store of each byte; 0 = before the trace.
  std::vector<std::size_t> last(n, 0);
  std::vector<bool> last_nt(n, false);
  const std::uintptr_t first_line = b & ~(std::uintptr_t{line} - 1);
  std::vector<std::vector<std::size_t>> flushes((b + n - first_line + line - 1) / line);
  std::size_t last_fence = 0;  // index (+1) of the last fence
  for (std::size_t i = 0; i < ev.size(); ++i) {
    const event& e = ev[i];
    switch (e.kind) {
      case event::fence: last_fence = i + 1; break;
      case event::flush:
        if (e.addr % line != 0) return "flush of an address that is not a line start";
        if (e.addr >= first_line && e.addr < b + n) flushes[(e.addr - first_line) / line].push_back(i + 1);
        break;
      case event::nt:
      case event::store: {
        const std::uintptr_t lo = std::max(e.addr, b), hi = std::min(e.addr + e.len, b + n);
        for (std::uintptr_t a = lo; a < hi; ++a) {
          last[a - b] = i + 1;
          last_nt[a - b] = e.kind == event::nt;
        }
        break;
      }
    }
  }
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t s = last[k];
    bool ok = false;
    if (byte_domain || last_nt[k]) {
      ok = last_fence > s;
    } else {
      for (std::size_t i : flushes[(b + k - first_line) / line]) {
        if (i <= s) continue;
        if (ev[i - 1].f == flush_instruction::clflush || last_fence > i) {
          ok = true;
          break;
        }
      }
    }
    if (!ok) {
      std::ostringstream os;
      os << "byte " << k << " of " << n << " (stored at event " << s << ", " << (last_nt[k] ? "non-temporal" : "cached")
         << ") is not covered; trace of " << ev.size() << " events, last fence at " << last_fence;
      return os.str();
    }
  }
  return "";
}

std::size_t count(const std::vector<event>& ev, event::kind_t k) {
  return static_cast<std::size_t>(std::count_if(ev.begin(), ev.end(), [k](const event& e) { return e.kind == k; }));
}

// Whether drain(f) issues a fence instruction (not after CLFLUSH on x86-64).
bool drain_fences(flush_instruction f) {
#if defined(MAPDIRECT_ARCH_X86_64)
  return f != flush_instruction::clflush;
#else
  (void)f;
  return true;
#endif
}

// The flush instructions this CPU can execute.
std::vector<flush_instruction> instructions() {
  const auto best = detect_flush_instruction();
#if defined(MAPDIRECT_ARCH_X86_64)
  std::vector<flush_instruction> out{flush_instruction::clflush};
  if (best == flush_instruction::clflushopt || best == flush_instruction::clwb)
    out.push_back(flush_instruction::clflushopt);
  if (best == flush_instruction::clwb) out.push_back(flush_instruction::clwb);
  return out;
#elif defined(MAPDIRECT_ARCH_AARCH64)
  std::vector<flush_instruction> out{flush_instruction::dc_cvac};
  if (best == flush_instruction::dc_cvap) out.push_back(flush_instruction::dc_cvap);
  return out;
#else
  return {best};
#endif
}

const std::size_t sizes[] = {1, 3, 4, 8, 12, 60, 63, 64, 65, 100, 127, 128, 200, 256, 1000, 4096, 4100};

#if defined(MAPDIRECT_ARCH_X86_64)
// The non-temporal body variants this CPU runs. MAPDIRECT_TEST_NT_ISA=sse2|avx2|avx512
// in the environment forces one for the whole binary (every test then runs
// on it); without it the tests that loop over variants try each.
std::vector<detail::nt_isa> nt_variants() {
  std::vector<detail::nt_isa> out;
  for (auto i : {detail::nt_isa::sse2, detail::nt_isa::avx2, detail::nt_isa::avx512})
    if (detail::cpu_has_nt_isa(i)) out.push_back(i);
  return out;
}
const bool nt_isa_from_env = [] {
  const char* e = std::getenv("MAPDIRECT_TEST_NT_ISA");
  if (!e) return false;
  for (auto i : {detail::nt_isa::sse2, detail::nt_isa::avx2, detail::nt_isa::avx512})
    if (std::strcmp(e, detail::to_string(i)) == 0) {
      if (!detail::force_nt_isa(i)) {
        std::fprintf(stderr, "MAPDIRECT_TEST_NT_ISA=%s: this CPU cannot run it\n", e);
        std::exit(2);
      }
      std::fprintf(stderr, "observer tests: non-temporal variant forced to %s\n", e);
      return true;
    }
  std::fprintf(stderr, "MAPDIRECT_TEST_NT_ISA=%s: not sse2, avx2 or avx512\n", e);
  std::exit(2);
}();
// Runs `body` once per variant (once, on the forced one, when the environment forces one).
template <class F>
void for_each_nt_variant(F&& body) {
  if (nt_isa_from_env) {
    body(detail::current_nt_isa());
    return;
  }
  const auto saved = detail::current_nt_isa();
  for (auto i : nt_variants()) {
    REQUIRE(detail::force_nt_isa(i));
    body(i);
  }
  REQUIRE(detail::force_nt_isa(saved));
}
#else
template <class F>
void for_each_nt_variant(F&& body) {
  body(0);
}
#endif
const std::size_t aligns[] = {0, 1, 3, 4, 8, 12, 32, 60, 63};
const std::size_t no_nt = std::numeric_limits<std::size_t>::max();
}  // namespace

TEST_CASE("observer: the checker rejects traces without flush, without fence, or flushing before the store",
          "[observer]") {
  const std::size_t L = line_size();  // 64 on x86-64; CTR_EL0's line on Arm
  std::vector<char> mem(4 * L);
  const auto b = (reinterpret_cast<std::uintptr_t>(mem.data()) + L - 1) & ~(std::uintptr_t{L} - 1);
  const auto f = flush_instruction::clflushopt;
  using ev = std::vector<event>;
  CHECK(uncovered(ev{{event::flush, b, 0, f}, {event::fence, 0, 0, f}}, b, L, false).empty());
  CHECK_FALSE(uncovered(ev{{event::fence, 0, 0, f}}, b, L, false).empty());  // no flush
  CHECK_FALSE(uncovered(ev{{event::flush, b, 0, f}}, b, L, false).empty());  // no fence
  CHECK_FALSE(
      uncovered(ev{{event::flush, b, 0, f}, {event::fence, 0, 0, f}}, b, L + 1, false).empty());  // a line short
  CHECK_FALSE(uncovered(ev{{event::flush, b, 0, f}, {event::store, b, 8, f}, {event::fence, 0, 0, f}}, b, L, false)
                  .empty());  // flushed before the store
  CHECK(uncovered(ev{{event::flush, b, 0, flush_instruction::clflush}}, b, L, false).empty());  // CLFLUSH is ordered
  CHECK(uncovered(ev{{event::nt, b, L, f}, {event::fence, 0, 0, f}}, b, L, false).empty());
  CHECK_FALSE(uncovered(ev{{event::nt, b, L, f}}, b, L, false).empty());  // NT store, no fence
  CHECK_FALSE(uncovered(ev{{event::flush, b, 0, flush_instruction::clflush}, {event::nt, b, L, f}}, b, L, false)
                  .empty());                                          // CLFLUSH does not order a later NT store
  CHECK(uncovered(ev{{event::fence, 0, 0, f}}, b, L, true).empty());  // byte: a fence is enough
  CHECK_FALSE(uncovered(ev{}, b, L, true).empty());                   // byte: but it is needed
}

TEST_CASE("observer: flush_lines reports exactly the overlapping lines and drain its fence", "[observer]") {
  const std::size_t line = line_size();
  std::vector<char> mem(8 * line + line);
  auto* base = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(mem.data()) + line - 1) & ~(line - 1));
  for (auto f : instructions()) {
    INFO(to_string(f));
    rec().start();
    flush_lines(base + 10, 2 * line, f);  // touches lines 0, 1 and 2
    drain(f);
    const auto ev = rec().stop();
    REQUIRE(count(ev, event::flush) == 3);
    CHECK(ev[0].addr == reinterpret_cast<std::uintptr_t>(base));
    CHECK(ev[1].addr == reinterpret_cast<std::uintptr_t>(base + line));
    CHECK(ev[2].addr == reinterpret_cast<std::uintptr_t>(base + 2 * line));
    for (std::size_t i = 0; i < 3; ++i) CHECK(ev[i].f == f);
    CHECK(count(ev, event::fence) == (drain_fences(f) ? 1u : 0u));
    rec().start();
    flush_lines(base, 0, f);
    CHECK(rec().stop().empty());
  }
}

TEST_CASE("observer: raw memcpy_flush/memset_flush/flush_lines + drain cover every byte stored", "[observer]") {
  std::vector<unsigned char> mem(8192 + 256), src(8192 + 256), ref(8192 + 256);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 131 + 17);
  auto* base =
      reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(mem.data()) + 63) & ~std::uintptr_t{63});
  for_each_nt_variant([&](auto isa) {
    for (auto f : instructions()) {
      for (std::size_t threshold : {std::size_t{0}, std::size_t{128}, no_nt}) {
        for (std::size_t n : sizes) {
          for (std::size_t a : aligns) {
            INFO("variant " << static_cast<int>(isa) << " " << to_string(f) << " nt_threshold " << threshold << " size "
                            << n << " alignment " << a);
            const auto at = reinterpret_cast<std::uintptr_t>(base + a);
            rec().start();
            memcpy_flush(base + a, src.data() + 5, n, f, threshold);
            drain(f);
            auto ev = rec().stop();
            REQUIRE(std::memcmp(base + a, src.data() + 5, n) == 0);
            const std::string copy = uncovered(ev, at, n, false);
            if (!copy.empty()) FAIL("memcpy_flush: " << copy);
            rec().start();
            memset_flush(base + a, 0x5a, n, f, threshold);
            drain(f);
            ev = rec().stop();
            std::memset(ref.data(), 0x5a, n);
            REQUIRE(std::memcmp(base + a, ref.data(), n) == 0);
            const std::string fill = uncovered(ev, at, n, false);
            if (!fill.empty()) FAIL("memset_flush: " << fill);
            // The caller's own stores, then flush_lines + drain.
            std::memset(base + a, 0x33, n);
            rec().start();
            flush_lines(base + a, n, f);
            drain(f);
            ev = rec().stop();
            const std::string lines = uncovered(ev, at, n, false);
            if (!lines.empty()) FAIL("flush_lines: " << lines);
          }
        }
      }
    }
  });
}

#if defined(MAPDIRECT_ARCH_X86_64)
namespace {
bool same_trace(const std::vector<event>& a, const std::vector<event>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].kind != b[i].kind || a[i].addr != b[i].addr || a[i].len != b[i].len || a[i].f != b[i].f) return false;
  return true;
}
}  // namespace

// The AVX2/AVX-512 body loops must store exactly what the SSE2 loop stores and
// report it the same way: the same NT ranges, flushes and fences, in order.
TEST_CASE("observer: every non-temporal variant reports the same trace as SSE2 and stores the same bytes",
          "[observer]") {
  const std::size_t big[] = {256, 320, 1000, 4096, 4100, 65536 + 13};
  std::vector<unsigned char> mem(65536 + 512), src(65536 + 512), ref(65536 + 512);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 131 + 17);
  auto* base =
      reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(mem.data()) + 63) & ~std::uintptr_t{63});
  const auto saved = detail::current_nt_isa();
  const auto variants = nt_variants();
  WARN("non-temporal variants this CPU runs: " << variants.size() << " (best: " << detail::to_string(variants.back())
                                               << ")");
  for (auto f : instructions()) {
    for (std::size_t n : big) {
      for (std::size_t a : {std::size_t{0}, std::size_t{7}, std::size_t{32}, std::size_t{60}}) {
        std::vector<event> want_copy, want_fill;
        for (auto isa : variants) {
          INFO(detail::to_string(isa) << " " << to_string(f) << " size " << n << " alignment " << a);
          REQUIRE(detail::force_nt_isa(isa));
          std::memset(base, 0, n + a + 64);
          rec().start();
          memcpy_flush(base + a, src.data() + 3, n, f, 0);
          drain(f);
          auto copy = rec().stop();
          REQUIRE(std::memcmp(base + a, src.data() + 3, n) == 0);
          CHECK(base[a + n] == 0);
          if (a) CHECK(base[a - 1] == 0);
          CHECK(uncovered(copy, reinterpret_cast<std::uintptr_t>(base + a), n, false).empty());
          rec().start();
          memset_flush(base + a, 0xc3, n, f, 0);
          drain(f);
          auto fill = rec().stop();
          std::memset(ref.data(), 0xc3, n);
          REQUIRE(std::memcmp(base + a, ref.data(), n) == 0);
          CHECK(base[a + n] == 0);
          CHECK(uncovered(fill, reinterpret_cast<std::uintptr_t>(base + a), n, false).empty());
          if (isa == detail::nt_isa::sse2) {
            want_copy = std::move(copy);
            want_fill = std::move(fill);
          } else {
            CHECK(same_trace(copy, want_copy));
            CHECK(same_trace(fill, want_fill));
          }
        }
      }
    }
  }
  REQUIRE(detail::force_nt_isa(saved));
}
#endif

namespace {
// persist, copy_persist, fill_persist and flush+drain on one mapping: every
// byte each call stores (or was asked to make durable) is covered when it returns.
void check_mapping_calls(direct_mapping& m) {
  const bool byte = m.store_granularity() == granularity::byte;
  auto* base = reinterpret_cast<unsigned char*>(m.data());
  std::vector<unsigned char> src(8192);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 7 + 1);
  for (std::size_t n : sizes) {
    for (std::size_t a : aligns) {
      INFO("size " << n << " alignment " << a);
      const std::size_t off = 64 + a;  // inside the mapping, not at its start
      const auto at = reinterpret_cast<std::uintptr_t>(base + off);
      std::vector<event> ev;
      auto run = [&](const char* what, auto&& call) {
        rec().start();
        const bool ok = static_cast<bool>(call());
        ev = rec().stop();
        INFO(what);
        REQUIRE(ok);
        const std::string why = uncovered(ev, at, n, byte);
        if (!why.empty()) FAIL(what << ": " << why);
        if (byte) CHECK(count(ev, event::fence) >= 1);
      };
      run("copy_persist", [&] { return m.copy_persist(off, src.data() + a, n); });
      REQUIRE(std::memcmp(base + off, src.data() + a, n) == 0);
      run("fill_persist", [&] { return m.fill_persist(off, 0xa5, n); });
      for (std::size_t k = 0; k < n; ++k)
        if (base[off + k] != 0xa5) FAIL("fill_persist left byte " << k << " unwritten");
      std::memset(base + off, 0x11, n);
      run("persist", [&] { return m.persist(off, n); });
      std::memset(base + off, 0x22, n);
      run("flush + drain", [&] {
        m.flush(off, n);
        return m.drain();
      });
    }
  }
}
}  // namespace

TEST_CASE("observer: direct_mapping persist/copy_persist/fill_persist/flush+drain cover every byte",
          "[observer][seam]") {
  const std::size_t length = 3 * 4096;
  mdtest::temp_file f(mdtest::test_dir(), length);
  mdtest::recording_interposer seam;
  seam.emulate_map_sync();
  mapdirect::scoped_syscall_interposer guard(seam);
  for (auto fi : instructions()) {
    for (std::size_t threshold : {std::size_t{0}, std::size_t{256}, no_nt}) {
      SECTION(std::string("cache_line, ") + to_string(fi) + ", movnt_threshold " +
              (threshold == no_nt ? std::string("max") : std::to_string(threshold))) {
        map_options o;
        o.domain = persistence_domain::memory_controller;  // ADR: cache-line granularity
        o.flush = fi;
        o.movnt_threshold = threshold;
        auto m = direct_mapping::map(f.fd(), 0, length, o);
        REQUIRE(m);
        REQUIRE(m.value().mode() == map_mode::sync);
        REQUIRE(m.value().store_granularity() == granularity::cache_line);
        REQUIRE(m.value().flush_with() == fi);
        const auto msyncs = seam.msyncs.size();
        check_mapping_calls(m.value());
        CHECK(seam.msyncs.size() == msyncs);  // the CPU path makes no syscall
      }
    }
    // A byte-granular mapping needs a fence after its stores, whatever the
    // flush instruction (store_fence(), also with CLFLUSH).
    SECTION(std::string("byte (eADR), ") + to_string(fi)) {
      map_options o;
      o.domain = persistence_domain::cpu_cache;
      o.flush = fi;
      auto m = direct_mapping::map(f.fd(), 0, length, o);
      REQUIRE(m);
      REQUIRE(m.value().store_granularity() == granularity::byte);
      check_mapping_calls(m.value());
    }
  }
}
#endif
