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

#include <pthread.h>
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
  //
  // fork(): a thread holding it at that instant does not exist in the child,
  // so the lock would stay taken there for ever. pthread_atfork handlers take
  // it before fork() (the list is then consistent in the child) and release it
  // on both sides; a fork() from a signal handler that interrupted this
  // thread's own critical section skips the take (the child resets the flag).
  struct guard {
    guard() noexcept {
      install_fork_handlers();
      lock();
    }
    ~guard() { unlock(); }
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
  };
  static void lock() noexcept {
    while (flag().test_and_set(std::memory_order_acquire)) {
    }
    held_here() = true;
  }
  static void unlock() noexcept {
    held_here() = false;
    flag().clear(std::memory_order_release);
  }
  static bool& held_here() noexcept {
    static thread_local bool held = false;
    return held;
  }
  static bool& fork_took() noexcept {
    static bool took = false;  // written only by the forking thread
    return took;
  }
  static void before_fork() noexcept {
    fork_took() = !held_here();
    if (fork_took()) lock();
  }
  static void after_fork_parent() noexcept {
    if (fork_took()) unlock();
  }
  static void after_fork_child() noexcept {
    held_here() = false;
    flag().clear(std::memory_order_release);
  }
  static void install_fork_handlers() noexcept {
    static const bool installed = ::pthread_atfork(&before_fork, &after_fork_parent, &after_fork_child) == 0;
    (void)installed;
  }
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
