// SPDX-License-Identifier: MIT
// The syscall seam: every system call mapdirect makes goes through here, so a
// test can inject any errno a kernel can return.
#ifndef MAPDIRECT_DETAIL_SYSCALL_HPP
#define MAPDIRECT_DETAIL_SYSCALL_HPP

#include "../config.hpp"

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
class syscall_interposer {
 public:
  virtual ~syscall_interposer() = default;
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
  virtual ssize_t pwrite(int fd, const void* buf, std::size_t n, off_t off) noexcept { return ::pwrite(fd, buf, n, off); }
  virtual int fsync(int fd) noexcept { return ::fsync(fd); }
  virtual off_t lseek(int fd, off_t off, int whence) noexcept { return ::lseek(fd, off, whence); }
  virtual int fdatasync(int fd) noexcept { return ::fdatasync(fd); }
  virtual int sync_file_range(int fd, off_t off, off_t n, unsigned flags) noexcept {
    return ::sync_file_range(fd, off, n, flags);
  }
  virtual int ioctl(int fd, unsigned long request, void* arg) noexcept { return ::ioctl(fd, request, arg); }
  virtual int fcntl(int fd, int cmd, long arg) noexcept { return ::fcntl(fd, cmd, arg); }
  virtual int unlink(const char* path) noexcept { return ::unlink(path); }
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
  // The group committer's io_uring (async.hpp), observable and scriptable by tests:
  // ring_sqe: each SQE, as queued (IORING_OP_* opcode, its fd, op flags such as
  // IORING_FSYNC_DATASYNC, user_data); ring_submit: io_uring_submit's result, returns
  // the one acted upon (a failure here leaves submitted SQEs in flight, as a real one
  // can); ring_cqe: each CQE just before it is acted upon, on the reaping thread (may
  // block to hold that completion, or change res to inject a failure).
  virtual void ring_sqe(unsigned opcode, int fd, unsigned op_flags, std::uint64_t user_data) noexcept {
    (void)opcode, (void)fd, (void)op_flags, (void)user_data;
  }
  virtual int ring_submit(int result) noexcept { return result; }
  virtual void ring_cqe(std::uint64_t& user_data, int& res) noexcept { (void)user_data, (void)res; }
};

namespace detail {
inline std::atomic<syscall_interposer*>& active_interposer() noexcept {
  static std::atomic<syscall_interposer*> current{nullptr};
  return current;
}
}  // namespace detail

/// Installs an interposer for the lifetime of this object (process-wide;
/// restores the previous one on destruction). For tests.
class scoped_syscall_interposer {
 public:
  explicit scoped_syscall_interposer(syscall_interposer& i) noexcept
      : previous_(detail::active_interposer().exchange(&i, std::memory_order_acq_rel)) {}
  ~scoped_syscall_interposer() { detail::active_interposer().store(previous_, std::memory_order_release); }
  scoped_syscall_interposer(const scoped_syscall_interposer&) = delete;
  scoped_syscall_interposer& operator=(const scoped_syscall_interposer&) = delete;

 private:
  syscall_interposer* previous_;
};

namespace detail {
namespace sys {
// Each wrapper: the interposer when one is installed, else the real call.
#define MAPDIRECT_SYSCALL(name, params, args)                                               \
  inline auto name params noexcept {                                                        \
    if (syscall_interposer* i = active_interposer().load(std::memory_order_acquire)) return i->name args; \
    return syscall_interposer{}.name args;                                                  \
  }
MAPDIRECT_SYSCALL(open, (const char* path, int flags, mode_t mode = 0), (path, flags, mode))
MAPDIRECT_SYSCALL(openat, (int dirfd, const char* path, int flags, mode_t mode = 0), (dirfd, path, flags, mode))
MAPDIRECT_SYSCALL(close, (int fd), (fd))
MAPDIRECT_SYSCALL(fstat, (int fd, struct stat* st), (fd, st))
MAPDIRECT_SYSCALL(fstatfs, (int fd, struct statfs* st), (fd, st))
MAPDIRECT_SYSCALL(statx, (int dirfd, const char* path, int flags, unsigned mask, struct statx* st),
                  (dirfd, path, flags, mask, st))
MAPDIRECT_SYSCALL(mmap, (void* addr, std::size_t len, int prot, int flags, int fd, off_t off),
                  (addr, len, prot, flags, fd, off))
MAPDIRECT_SYSCALL(munmap, (void* addr, std::size_t len), (addr, len))
MAPDIRECT_SYSCALL(msync, (void* addr, std::size_t len, int flags), (addr, len, flags))
MAPDIRECT_SYSCALL(madvise, (void* addr, std::size_t len, int advice), (addr, len, advice))
MAPDIRECT_SYSCALL(fallocate, (int fd, int mode, off_t off, off_t len), (fd, mode, off, len))
MAPDIRECT_SYSCALL(ftruncate, (int fd, off_t len), (fd, len))
MAPDIRECT_SYSCALL(pread, (int fd, void* buf, std::size_t n, off_t off), (fd, buf, n, off))
MAPDIRECT_SYSCALL(pwrite, (int fd, const void* buf, std::size_t n, off_t off), (fd, buf, n, off))
MAPDIRECT_SYSCALL(fsync, (int fd), (fd))
MAPDIRECT_SYSCALL(lseek, (int fd, off_t off, int whence), (fd, off, whence))
MAPDIRECT_SYSCALL(fdatasync, (int fd), (fd))
MAPDIRECT_SYSCALL(sync_file_range, (int fd, off_t off, off_t n, unsigned flags), (fd, off, n, flags))
MAPDIRECT_SYSCALL(ioctl, (int fd, unsigned long request, void* arg), (fd, request, arg))
MAPDIRECT_SYSCALL(fcntl, (int fd, int cmd, long arg = 0), (fd, cmd, arg))
MAPDIRECT_SYSCALL(unlink, (const char* path), (path))
MAPDIRECT_SYSCALL(unlinkat, (int dirfd, const char* path, int flags), (dirfd, path, flags))
MAPDIRECT_SYSCALL(linkat, (int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags),
                  (olddirfd, oldpath, newdirfd, newpath, flags))
MAPDIRECT_SYSCALL(fstatat, (int dirfd, const char* path, struct stat* st, int flags), (dirfd, path, st, flags))
MAPDIRECT_SYSCALL(readlink, (const char* path, char* buf, std::size_t n), (path, buf, n))
MAPDIRECT_SYSCALL(uname, (struct utsname* u), (u))
MAPDIRECT_SYSCALL(io_uring_setup, (unsigned entries, void* params), (entries, params))
MAPDIRECT_SYSCALL(sigaction, (int sig, const struct sigaction* act, struct sigaction* old), (sig, act, old))
MAPDIRECT_SYSCALL(eventfd, (unsigned initval, int flags), (initval, flags))
MAPDIRECT_SYSCALL(read, (int fd, void* buf, std::size_t n), (fd, buf, n))
MAPDIRECT_SYSCALL(write, (int fd, const void* buf, std::size_t n), (fd, buf, n))
MAPDIRECT_SYSCALL(ring_sqe, (unsigned opcode, int fd, unsigned op_flags, std::uint64_t user_data),
                  (opcode, fd, op_flags, user_data))
MAPDIRECT_SYSCALL(ring_submit, (int result), (result))
MAPDIRECT_SYSCALL(ring_cqe, (std::uint64_t & user_data, int& res), (user_data, res))
#undef MAPDIRECT_SYSCALL

/// The page size (sysconf, read once).
inline std::size_t page_size() noexcept {
  static const std::size_t cached = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return cached;
}

/// close() that keeps the caller's errno (for cleanup paths).
inline void close_quietly(int fd) noexcept {
  const int saved = errno;
  if (fd >= 0) close(fd);
  errno = saved;
}

/// Reads a small text file (sysfs, procfs) into buf, NUL-terminated, trailing
/// newline stripped. Returns the length, or -1 with errno set.
inline ssize_t read_text(const char* path, char* buf, std::size_t cap) noexcept {
  if (cap == 0) return -1;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const ssize_t n = pread(fd, buf, cap - 1, 0);
  close_quietly(fd);
  if (n < 0) return -1;
  std::size_t len = static_cast<std::size_t>(n);
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) --len;
  buf[len] = '\0';
  return static_cast<ssize_t>(len);
}
}  // namespace sys
}  // namespace detail

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_SYSCALL_HPP
