// SPDX-License-Identifier: MIT
// Descriptors mapdirect opens on the caller's files: a description of its
// own (so write-back errors and O_APPEND/O_DIRECT flags are not shared with
// the caller), and a close that never releases the caller's POSIX record locks.
//
// Why: POSIX record locks (fcntl F_SETLK, lockf) belong to the process and
// the inode, and closing *any* descriptor of that inode releases all of them.
// So mapdirect never closes a descriptor of a file on which this process
// holds a POSIX lock (read from /proc/locks); such a close is deferred and
// retried by later mapdirect calls and by release_deferred_descriptors().
#ifndef MAPDIRECT_DETAIL_DESCRIPTOR_HPP
#define MAPDIRECT_DETAIL_DESCRIPTOR_HPP

#include "../config.hpp"
#include "syscall.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// True when /proc/locks lists a POSIX record lock (held or waited for) of
/// this process on inode `ino`. Conservative: any device with that inode
/// number counts (st_dev and /proc/locks' device differ on btrfs), and an
/// unreadable /proc/locks counts as "held". Async-signal-unsafe; not for handlers.
inline bool process_holds_posix_lock(ino_t ino) noexcept {
  const int fd = sys::open("/proc/locks", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  const long self = static_cast<long>(::getpid());
  char buf[8192];
  std::size_t have = 0;
  bool held = false, eof = false;
  // Line: "1: POSIX  ADVISORY  WRITE 1234 08:02:56789 0 EOF", waiters: "1: -> POSIX ...".
  while (!held && !(eof && have == 0)) {
    if (!eof) {
      const ssize_t n = sys::read(fd, buf + have, sizeof buf - 1 - have);
      if (n < 0) {
        if (errno == EINTR) continue;
        held = true;
        break;
      }
      if (n == 0) eof = true;
      have += static_cast<std::size_t>(n);
    }
    buf[have] = '\0';
    char* line = buf;
    char* nl = nullptr;
    while ((nl = std::strchr(line, '\n')) != nullptr || (eof && *line)) {
      if (nl) *nl = '\0';
      char* p = std::strchr(line, ':');
      if (p) {
        ++p;
        while (*p == ' ') ++p;
        if (p[0] == '-' && p[1] == '>') p += 2;
        while (*p == ' ') ++p;
        if (std::strncmp(p, "POSIX", 5) == 0 && p[5] == ' ') {
          // skip "POSIX", the advisory/mandatory word and the access word
          char* q = p;
          for (int field = 0; field < 3 && q; ++field) {
            q = std::strchr(q, ' ');
            while (q && *q == ' ') ++q;
          }
          if (q) {
            char* end = nullptr;
            const long pid = std::strtol(q, &end, 10);
            // device "MAJ:MIN:INODE" follows
            char* dev = end;
            while (dev && *dev == ' ') ++dev;
            char* colon = dev ? std::strrchr(dev, ':') : nullptr;
            char* space = dev ? std::strchr(dev, ' ') : nullptr;
            if (colon && (!space || colon < space)) {
              const unsigned long long lock_ino = std::strtoull(colon + 1, nullptr, 10);
              if (pid == self && lock_ino == static_cast<unsigned long long>(ino)) held = true;
            }
          }
        }
      }
      if (!nl) {
        line += std::strlen(line);
        break;
      }
      line = nl + 1;
      if (held) break;
    }
    // keep the unfinished tail
    const std::size_t consumed = static_cast<std::size_t>(line - buf);
    std::memmove(buf, line, have - consumed);
    have -= consumed;
    if (have == sizeof buf - 1) have = 0;  // a line longer than the buffer: drop it
    if (eof && have > 0 && !std::strchr(buf, '\n')) have = 0;
  }
  sys::close_quietly(fd);
  return held;
}

/// Descriptors whose close was deferred because this process held POSIX
/// locks on their file. Lock-free fixed table, so it is usable after fork()
/// and from any thread; when full, a descriptor stays open (a leak, never a
/// dropped lock).
class deferred_closes {
 public:
  static constexpr std::size_t capacity = 1024;

  /// Remembers fd for a later close.
  static void add(int fd) noexcept {
    for (auto& slot : slots()) {
      int expected = -1;
      if (slot.compare_exchange_strong(expected, fd, std::memory_order_acq_rel)) {
        count().fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
    // Table full: keep it open rather than drop a lock.
  }

  /// Closes every deferred descriptor whose file is no longer locked by this
  /// process; returns how many remain deferred.
  static std::size_t retry() noexcept {
    if (count().load(std::memory_order_relaxed) == 0) return 0;
    std::size_t remaining = 0;
    for (auto& slot : slots()) {
      const int fd = slot.exchange(-1, std::memory_order_acq_rel);
      if (fd < 0) continue;
      struct stat st {};
      const bool locked = sys::fstat(fd, &st) != 0 || process_holds_posix_lock(st.st_ino);
      if (!locked) {
        count().fetch_sub(1, std::memory_order_relaxed);
        sys::close_quietly(fd);
        continue;
      }
      int expected = -1;
      if (!slot.compare_exchange_strong(expected, fd, std::memory_order_acq_rel)) {
        count().fetch_sub(1, std::memory_order_relaxed);
        add(fd);
      }
      ++remaining;
    }
    return remaining;
  }

  /// How many descriptors are deferred now.
  static std::size_t pending() noexcept { return count().load(std::memory_order_relaxed); }

 private:
  struct table {
    std::atomic<int> s[capacity];
    table() noexcept {
      for (auto& x : s) x.store(-1, std::memory_order_relaxed);
    }
    std::atomic<int>* begin() noexcept { return s; }
    std::atomic<int>* end() noexcept { return s + capacity; }
  };
  static table& slots() noexcept {
    static table t;
    return t;
  }
  static std::atomic<std::size_t>& count() noexcept {
    static std::atomic<std::size_t> c{0};
    return c;
  }
};

/// Closes a descriptor of a caller's file without releasing the process's
/// POSIX record locks on it: if this process holds any on that inode, the
/// close is deferred (see deferred_closes). Returns 0, or -1 with errno from
/// close(). Also retries earlier deferred closes.
inline int close_keeping_locks(int fd) noexcept {
  if (fd < 0) return 0;
  struct stat st {};
  if (sys::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && process_holds_posix_lock(st.st_ino)) {
    deferred_closes::add(fd);
    (void)deferred_closes::retry();
    return 0;
  }
  const int rc = sys::close(fd);
  const int saved = errno;
  (void)deferred_closes::retry();
  errno = saved;
  return rc;
}

/// close_keeping_locks() that keeps the caller's errno (cleanup paths).
inline void close_keeping_locks_quietly(int fd) noexcept {
  const int saved = errno;
  (void)close_keeping_locks(fd);
  errno = saved;
}

/// A descriptor mapdirect opened for itself.
struct own_descriptor {
  int fd = -1;
  /// True: a new open file description (its own write-back error cursor,
  /// none of the caller's O_APPEND/O_DIRECT/O_NONBLOCK). False: a dup that
  /// shares the caller's description (the reopen was refused: see `why`).
  bool own_description = false;
  /// errno of the refused reopen (0 when own_description).
  int reopen_error = 0;
};

/// Opens a new description of the file behind `fd` (through /proc/self/fd),
/// with `access` (O_RDWR or O_RDONLY), close-on-exec. O_NONBLOCK on the open
/// means a file leased by another process is not waited for (EWOULDBLOCK).
/// Never reopens a file whose description `fd` holds a lease (that would
/// break it), nor one for which `avoid_reopen` is true: those get a dup.
/// Falls back to a dup on any refusal; fails only if the dup fails.
inline own_descriptor reopen_description(int fd, int access, bool avoid_reopen = false) noexcept {
  own_descriptor out;
  struct stat want {};
  if (sys::fstat(fd, &want) != 0) {
    out.fd = -1;
    return out;
  }
  int why = 0;
  if (avoid_reopen) why = EBUSY;
  else if (const int lease = sys::fcntl(fd, F_GETLEASE); lease > 0 && lease != F_UNLCK) why = EBUSY;
  if (why == 0) {
    char path[40];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const int nfd = sys::open(path, access | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0);
    if (nfd >= 0) {
      struct stat got {};
      if (sys::fstat(nfd, &got) == 0 && got.st_dev == want.st_dev && got.st_ino == want.st_ino) {
        const int fl = sys::fcntl(nfd, F_GETFL);
        if (fl >= 0) (void)sys::fcntl(nfd, F_SETFL, fl & ~O_NONBLOCK);
        // Keep the new descriptor off 0..2 like F_DUPFD_CLOEXEC(3) does.
        if (nfd < 3) {
          const int moved = sys::fcntl(nfd, F_DUPFD_CLOEXEC, 3);
          close_keeping_locks_quietly(nfd);
          if (moved < 0) {
            out.fd = -1;
            return out;
          }
          out.fd = moved;
        } else {
          out.fd = nfd;
        }
        out.own_description = true;
        return out;
      }
      why = EXDEV;  // the /proc link named another file: never use it
      close_keeping_locks_quietly(nfd);
    } else {
      why = errno;
    }
  }
  out.fd = sys::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  out.reopen_error = why;
  return out;
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_DESCRIPTOR_HPP
