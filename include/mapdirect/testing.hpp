// SPDX-License-Identifier: MIT
// The test seam, for mapdirect's tests and yours: every system call mapdirect
// makes goes through a syscall_interposer, so a test can inject any errno a
// kernel can return (EIO from fdatasync, ENOSPC from fallocate, EPERM from
// io_uring_setup, ...) or observe which calls ran, without a faulty device.
//
//   struct eio_on_fdatasync : mapdirect::syscall_interposer {
//     int fdatasync(int fd) noexcept override { (void)fd; errno = EIO; return -1; }
//   };
//   eio_on_fdatasync fail;
//   mapdirect::scoped_syscall_interposer scope(fail);   // process-wide until scope ends
//   auto r = m.persist(0, n);                           // r.error() == EIO; m.durability_failed()
//
// The machinery that routes each call here (detail::sys::*) is in
// detail/syscall.hpp; adding a syscall means a virtual member below and one
// MAPDIRECT_SYSCALL line there.
#ifndef MAPDIRECT_TESTING_HPP
#define MAPDIRECT_TESTING_HPP

#include "config.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

MAPDIRECT_BEGIN_NAMESPACE

/// Intercepts mapdirect's system calls. Every member behaves like the libc
/// call of the same name (returns -1 or MAP_FAILED and sets errno on failure);
/// the defaults make the real call. Derive, override what a test needs, and
/// install with scoped_syscall_interposer. For tests only: not for production.
/// Thread safety: once installed, its members are called from every thread
/// mapdirect runs on (the caller's, the group committer's thread, and write()
/// from a lease-break signal handler), so overrides must be thread-safe (and
/// write() async-signal-safe). fork(): a child inherits the installed one.
class syscall_interposer {
 public:
  virtual ~syscall_interposer() = default;
  /// @name System calls
  /// @{

  /// Each of these makes the libc call of the same name; override one to inject an errno.
  virtual int open(const char* path, int flags, mode_t mode) noexcept { return ::open(path, flags, mode); }
  virtual int openat(int dirfd, const char* path, int flags, mode_t mode) noexcept {
    return ::openat(dirfd, path, flags, mode);
  }
  virtual int close(int fd) noexcept { return ::close(fd); }
  virtual int fstat(int fd, struct stat* st) noexcept { return ::fstat(fd, st); }
  virtual int fstatfs(int fd, struct statfs* st) noexcept { return ::fstatfs(fd, st); }
  virtual int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* st) noexcept {
    return static_cast<int>(::syscall(SYS_statx, dirfd, path, flags, mask, st));
  }
  virtual void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept {
    return ::mmap(addr, len, prot, flags, fd, off);
  }
  virtual int munmap(void* addr, std::size_t len) noexcept { return ::munmap(addr, len); }
  virtual int msync(void* addr, std::size_t len, int flags) noexcept { return ::msync(addr, len, flags); }
  virtual int madvise(void* addr, std::size_t len, int advice) noexcept { return ::madvise(addr, len, advice); }
  virtual int fallocate(int fd, int mode, off_t off, off_t len) noexcept { return ::fallocate(fd, mode, off, len); }
  virtual int ftruncate(int fd, off_t len) noexcept { return ::ftruncate(fd, len); }
  virtual ssize_t pread(int fd, void* buf, std::size_t n, off_t off) noexcept { return ::pread(fd, buf, n, off); }
  virtual ssize_t pwrite(int fd, const void* buf, std::size_t n, off_t off) noexcept {
    return ::pwrite(fd, buf, n, off);
  }
  virtual int fsync(int fd) noexcept { return ::fsync(fd); }
  virtual off_t lseek(int fd, off_t off, int whence) noexcept { return ::lseek(fd, off, whence); }
  virtual int fdatasync(int fd) noexcept { return ::fdatasync(fd); }
  virtual int sync_file_range(int fd, off_t off, off_t n, unsigned flags) noexcept {
    return ::sync_file_range(fd, off, n, flags);
  }
  virtual int ioctl(int fd, unsigned long request, void* arg) noexcept { return ::ioctl(fd, request, arg); }
  virtual int fcntl(int fd, int cmd, long arg) noexcept { return ::fcntl(fd, cmd, arg); }
  virtual int unlinkat(int dirfd, const char* path, int flags) noexcept { return ::unlinkat(dirfd, path, flags); }
  virtual int linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) noexcept {
    return ::linkat(olddirfd, oldpath, newdirfd, newpath, flags);
  }
  virtual int fstatat(int dirfd, const char* path, struct stat* st, int flags) noexcept {
    return ::fstatat(dirfd, path, st, flags);
  }
  virtual ssize_t readlink(const char* path, char* buf, std::size_t n) noexcept { return ::readlink(path, buf, n); }
  virtual int uname(struct utsname* u) noexcept { return ::uname(u); }
  virtual long io_uring_setup(unsigned entries, void* params) noexcept {
#ifdef SYS_io_uring_setup
    return ::syscall(SYS_io_uring_setup, entries, params);
#else
    (void)entries;
    (void)params;
    errno = ENOSYS;
    return -1;
#endif
  }
  // Used to install mapdirect's SIGBUS handler (guard.hpp), never inside it.
  virtual int sigaction(int sig, const struct sigaction* act, struct sigaction* old) noexcept {
    return ::sigaction(sig, act, old);
  }
  virtual int eventfd(unsigned initval, int flags) noexcept { return ::eventfd(initval, flags); }
  virtual ssize_t read(int fd, void* buf, std::size_t n) noexcept { return ::read(fd, buf, n); }
  // Also called from seal.hpp's lease-break signal handler (write is async-signal-safe).
  virtual ssize_t write(int fd, const void* buf, std::size_t n) noexcept { return ::write(fd, buf, n); }
  /// @}
  // The group committer's io_uring (async.hpp), observable and scriptable by tests.
  /// Sees each SQE as queued: IORING_OP_* opcode, its fd, op flags such as
  /// IORING_FSYNC_DATASYNC, user_data.
  virtual void ring_sqe(unsigned opcode, int fd, unsigned op_flags, std::uint64_t user_data) noexcept {
    (void)opcode, (void)fd, (void)op_flags, (void)user_data;
  }
  /// Sees io_uring_submit's result and returns the one acted upon (a failure
  /// here leaves submitted SQEs in flight, as a real one can).
  virtual int ring_submit(int result) noexcept { return result; }
  /// Sees each CQE just before it is acted upon, on the reaping thread; may
  /// block to hold that completion, or change res to inject a failure.
  virtual void ring_cqe(std::uint64_t& user_data, int& res) noexcept { (void)user_data, (void)res; }
};

namespace detail {
inline std::atomic<syscall_interposer*>& active_interposer() noexcept {
  static std::atomic<syscall_interposer*> current{nullptr};
  return current;
}
}  // namespace detail

/// Installs an interposer for the lifetime of this object (process-wide;
/// restores the previous one on destruction). For tests. Never fails.
/// Thread safety: installing and restoring are atomic, but scopes must nest
/// (destroy them in reverse order of creation, on any thread); the
/// interposer must outlive the scope and every call already routed to it.
class scoped_syscall_interposer {
 public:
  /// Installs `i` until this object is destroyed.
  explicit scoped_syscall_interposer(syscall_interposer& i) noexcept
      : previous_(detail::active_interposer().exchange(&i, std::memory_order_acq_rel)) {}
  ~scoped_syscall_interposer() { detail::active_interposer().store(previous_, std::memory_order_release); }
  scoped_syscall_interposer(const scoped_syscall_interposer&) = delete;
  scoped_syscall_interposer& operator=(const scoped_syscall_interposer&) = delete;

 private:
  syscall_interposer* previous_;
};

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_TESTING_HPP
