// SPDX-License-Identifier: MIT
// Process-wide "durability lost" per file (st_dev, st_ino).
//
// Why: Linux reports a write-back error once per open file description, so
// whichever consumer checks first (a mapping's msync, the group committer's
// fdatasync, the caller's own fdatasync on a shared description) consumes
// it. Any mapdirect consumer that sees one marks the file here, and every
// later persist of that file, through any mapping, committer or seal, fails
// with errc::durability_lost until the file is cleared.
//
// Each entry pins its file with an O_PATH descriptor while it is marked, so
// the inode cannot be freed and its number reused by an unrelated new file
// (which would otherwise inherit the loss). Closing an O_PATH descriptor
// never releases POSIX record locks. A lost file stays pinned (its blocks
// are not freed after unlink) until it is cleared.
//
// Lock-free fixed table: usable from any thread and after fork().
#ifndef MAPDIRECT_DETAIL_DURABILITY_HPP
#define MAPDIRECT_DETAIL_DURABILITY_HPP

#include "../config.hpp"
#include "syscall.hpp"

#include <cstdio>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <sys/types.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

class durability_registry {
 public:
  static constexpr std::size_t capacity = 256;

  /// Marks (dev, ino) as having lost data; `fd` (a descriptor of that file,
  /// or -1) is used to pin the inode. If the table is full, every file
  /// counts as lost from then on, for the life of the process (never a
  /// false "durable").
  static void mark_lost(dev_t dev, ino_t ino, int fd) noexcept {
    if (find(dev, ino)) return;
    for (auto& s : table().slots) {
      int expected = empty;
      if (s.state.compare_exchange_strong(expected, claiming, std::memory_order_acq_rel)) {
        s.dev.store(static_cast<std::uint64_t>(dev), std::memory_order_relaxed);
        s.ino.store(static_cast<std::uint64_t>(ino), std::memory_order_relaxed);
        s.pin.store(pin_inode(fd, dev, ino), std::memory_order_relaxed);
        s.state.store(lost, std::memory_order_release);
        table().used.fetch_add(1, std::memory_order_acq_rel);
        return;
      }
    }
    table().overflow.store(true, std::memory_order_release);
  }

  /// True when (dev, ino) lost data and was not cleared since.
  static bool is_lost(dev_t dev, ino_t ino) noexcept {
    if (table().used.load(std::memory_order_acquire) == 0) return table().overflow.load(std::memory_order_acquire);
    return table().overflow.load(std::memory_order_acquire) || find(dev, ino);
  }

  /// Forgets the loss of (dev, ino): the caller rewrote what was lost.
  static void clear(dev_t dev, ino_t ino) noexcept {
    for (auto& s : table().slots) {
      if (s.state.load(std::memory_order_acquire) == lost &&
          s.dev.load(std::memory_order_relaxed) == static_cast<std::uint64_t>(dev) &&
          s.ino.load(std::memory_order_relaxed) == static_cast<std::uint64_t>(ino)) {
        int expected = lost;
        if (s.state.compare_exchange_strong(expected, claiming, std::memory_order_acq_rel)) {
          const int pin = s.pin.exchange(-1, std::memory_order_relaxed);
          if (pin >= 0) sys::close_quietly(pin);  // O_PATH: never drops record locks
          s.state.store(empty, std::memory_order_release);
          table().used.fetch_sub(1, std::memory_order_acq_rel);
        }
      }
    }
    // The overflow stays: the files it stands for were never recorded, so
    // clearing one file cannot clear them.
  }

  /// Forgets losses that did not fit in the table. Only for tests: in a
  /// program those files' data is gone, and only a restart (after recovery)
  /// may forget them.
  static void forget_overflow_for_tests() noexcept { table().overflow.store(false, std::memory_order_release); }

 private:
  static constexpr int empty = 0, claiming = 1, lost = 2;
  struct slot {
    std::atomic<int> state{empty};
    std::atomic<int> pin{-1};
    std::atomic<std::uint64_t> dev{0}, ino{0};
  };
  struct state_table {
    slot slots[capacity];
    std::atomic<std::size_t> used{0};
    std::atomic<bool> overflow{false};
  };
  static state_table& table() noexcept {
    static state_table t;
    return t;
  }
  // An O_PATH descriptor of the file behind fd (checked to be dev/ino), or -1.
  static int pin_inode(int fd, dev_t dev, ino_t ino) noexcept {
    if (fd < 0) return -1;
    const int saved = errno;
    int pin = sys::open(sys::proc_fd_path(fd).c_str(), O_PATH | O_CLOEXEC);
    struct stat st {};
    if (pin >= 0 && (sys::fstat(pin, &st) != 0 || st.st_dev != dev || st.st_ino != ino)) {
      sys::close_quietly(pin);
      pin = -1;
    }
    errno = saved;
    return pin;
  }
  static bool find(dev_t dev, ino_t ino) noexcept {
    for (auto& s : table().slots)
      if (s.state.load(std::memory_order_acquire) == lost &&
          s.dev.load(std::memory_order_relaxed) == static_cast<std::uint64_t>(dev) &&
          s.ino.load(std::memory_order_relaxed) == static_cast<std::uint64_t>(ino))
        return true;
    return false;
  }
};

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_DURABILITY_HPP
