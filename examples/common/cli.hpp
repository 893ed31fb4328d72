// Command-line helpers shared by the examples (not part of the library).
//
// Every bad argument is a short error naming the option and the value, then
// "Try 'PROG --help'." and exit status 2; numbers are range-checked and unit
// suffixes cannot overflow. progress_line draws "records/s, percent, ETA" on
// a terminal for work that lasts longer than about two seconds.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <mapdirect/config.hpp>

// The library's version (config.hpp), the one version number of the project.
#define MDX_STR2(x) #x
#define MDX_STR(x) MDX_STR2(x)
#define MAPDIRECT_EXAMPLES_VERSION \
  MDX_STR(MAPDIRECT_VERSION_MAJOR) "." MDX_STR(MAPDIRECT_VERSION_MINOR) "." MDX_STR(MAPDIRECT_VERSION_PATCH)

namespace mdx {

/// The program name used in messages ("durable_log", "kv", ...).
inline const char*& program_name() {
  static const char* name = "mapdirect-example";
  return name;
}

/// Prints "PROG: MESSAGE" and "Try 'PROG --help'." on stderr and exits 2.
[[noreturn]] inline void usage_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void usage_error(const char* fmt, ...) {
  std::fprintf(stderr, "%s: ", program_name());
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\nTry '%s --help'.\n", program_name());
  std::exit(2);
}

/// Prints "PROG VERSION" and exits 0.
[[noreturn]] inline void print_version() {
  std::printf("%s (mapdirect examples) %s\n", program_name(), MAPDIRECT_EXAMPLES_VERSION);
  std::exit(0);
}

/// Parses a decimal unsigned number in [min, max] for option `opt`; with
/// `suffixes`, K/M/G/T (powers of 1024) are accepted. Exits 2 on anything
/// else: a sign, a fraction, trailing text, an empty value, an overflow.
inline std::uint64_t parse_number(const char* opt, const char* text, std::uint64_t min, std::uint64_t max,
                                  bool suffixes = false) {
  const char* p = text;
  if (*p < '0' || *p > '9') usage_error("%s: '%s' is not a non-negative whole number", opt, text);
  std::uint64_t v = 0;
  bool overflow = false;
  for (; *p >= '0' && *p <= '9'; ++p) {
    const auto digit = static_cast<std::uint64_t>(*p - '0');
    if (v > (UINT64_MAX - digit) / 10) overflow = true;
    else v = v * 10 + digit;
  }
  unsigned shift = 0;
  if (suffixes && *p) {
    switch (*p) {
      case 'K':
      case 'k': shift = 10; break;
      case 'M':
      case 'm': shift = 20; break;
      case 'G':
      case 'g': shift = 30; break;
      case 'T':
      case 't': shift = 40; break;
      default: break;
    }
    if (shift) ++p;
  }
  if (*p) {
    usage_error("%s: '%s' is not a %s", opt, text,
                suffixes ? "size (a whole number with an optional K, M, G or T suffix)" : "whole number");
  }
  if (!overflow && shift && v > (UINT64_MAX >> shift)) overflow = true;
  if (!overflow) v <<= shift;
  if (overflow || v > max) usage_error("%s: '%s' is too large (at most %" PRIu64 ")", opt, text, max);
  if (v < min) usage_error("%s: '%s' is too small (at least %" PRIu64 ")", opt, text, min);
  return v;
}

/// A one-line progress display on stderr, drawn only when stderr is a
/// terminal, not quiet, and the work has run for `delay` already; redrawn at
/// most 4 times a second. finish() clears the line.
class progress_line {
 public:
  progress_line(const char* unit, std::uint64_t total, bool quiet,
                std::chrono::milliseconds delay = std::chrono::milliseconds(2000)) noexcept
      : unit_(unit),
        total_(total),
        enabled_(!quiet && ::isatty(STDERR_FILENO) == 1),
        delay_(delay),
        start_(std::chrono::steady_clock::now()),
        next_(start_ + delay) {}
  progress_line(const progress_line&) = delete;
  progress_line& operator=(const progress_line&) = delete;
  ~progress_line() { finish(); }

  /// `done` units of `total` (0: unknown total) are complete.
  void update(std::uint64_t done) noexcept {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return;
    next_ = now + std::chrono::milliseconds(250);
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
    char line[160];
    int n = std::snprintf(line, sizeof line, "\r%" PRIu64 " %s, %.0f %s/s", done, unit_, rate, unit_);
    if (total_ > 0 && n > 0 && static_cast<std::size_t>(n) < sizeof line) {
      const double pct = 100.0 * static_cast<double>(done) / static_cast<double>(total_);
      const double eta = rate > 0 ? static_cast<double>(total_ - (done < total_ ? done : total_)) / rate : 0.0;
      std::snprintf(line + n, sizeof line - static_cast<std::size_t>(n), ", %.1f%%, ETA %.0f s", pct, eta);
    }
    std::fprintf(stderr, "%s\033[K", line);
    drawn_ = true;
  }

  /// Sets the total (for a total learnt late, e.g. a log's capacity).
  void set_total(std::uint64_t total) noexcept { total_ = total; }

  /// Clears the line if one was drawn.
  void finish() noexcept {
    if (drawn_) std::fprintf(stderr, "\r\033[K");
    drawn_ = false;
  }

 private:
  const char* unit_;
  std::uint64_t total_;
  bool enabled_;
  std::chrono::milliseconds delay_;
  std::chrono::steady_clock::time_point start_, next_;
  bool drawn_ = false;
};

}  // namespace mdx
