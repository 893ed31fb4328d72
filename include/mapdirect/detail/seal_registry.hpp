// SPDX-License-Identifier: MIT
// The files on which this process holds an iomap_seal, by (st_dev, st_ino),
// so that mapdirect's own block-map-changing helpers (file.hpp) can refuse
// with errc::sealed. Process-local: other processes are covered by the
// kernel (native seal) or only noticed through the lease (stabilised seal).
#ifndef MAPDIRECT_DETAIL_SEAL_REGISTRY_HPP
#define MAPDIRECT_DETAIL_SEAL_REGISTRY_HPP

#include "../config.hpp"

#include <atomic>
#include <cstddef>

#include <sys/types.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// One held seal; owned (heap-allocated) by its iomap_seal so that moving the
/// seal does not move the node.
struct seal_node {
  dev_t dev = 0;
  ino_t ino = 0;
  seal_node* prev = nullptr;
  seal_node* next = nullptr;
  bool registered = false;
  /// True while the seal holds a file lease on its description: mapdirect
  /// must not open the file again (the open would break its own lease).
  std::atomic<bool> leased{false};
};

class seal_registry {
 public:
  static void add(seal_node* n) noexcept {
    guard g;
    n->registered = true;
    n->prev = nullptr;
    n->next = head();
    if (head()) head()->prev = n;
    head() = n;
  }
  static void remove(seal_node* n) noexcept {
    guard g;
    if (n->prev) n->prev->next = n->next;
    else if (head() == n) head() = n->next;
    if (n->next) n->next->prev = n->prev;
    n->prev = n->next = nullptr;
    n->registered = false;
  }
  /// Number of seals held on (dev, ino).
  static std::size_t count(dev_t dev, ino_t ino) noexcept {
    guard g;
    std::size_t c = 0;
    for (seal_node* n = head(); n; n = n->next)
      if (n->dev == dev && n->ino == ino) ++c;
    return c;
  }
  /// True when a seal held on (dev, ino) holds a lease.
  static bool leased(dev_t dev, ino_t ino) noexcept {
    guard g;
    for (seal_node* n = head(); n; n = n->next)
      if (n->dev == dev && n->ino == ino && n->leased.load(std::memory_order_acquire)) return true;
    return false;
  }

 private:
  // A spin lock: the critical sections are a few pointer writes, and
  // std::mutex would bring exceptions into -fno-exceptions builds.
  struct guard {
    guard() noexcept {
      while (flag().test_and_set(std::memory_order_acquire)) {
      }
    }
    ~guard() { flag().clear(std::memory_order_release); }
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
  };
  static std::atomic_flag& flag() noexcept {
    static std::atomic_flag f = ATOMIC_FLAG_INIT;
    return f;
  }
  static seal_node*& head() noexcept {
    static seal_node* h = nullptr;
    return h;
  }
};

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_SEAL_REGISTRY_HPP
