// SPDX-License-Identifier: MIT
// The syscall seam's machinery: every system call mapdirect makes goes
// through detail::sys::*, which calls the installed syscall_interposer, or
// the real call when none is installed. The interposer and its scope, for
// tests, are public: mapdirect/testing.hpp.
#ifndef MAPDIRECT_DETAIL_SYSCALL_HPP
#define MAPDIRECT_DETAIL_SYSCALL_HPP

#include "../config.hpp"
#include "../testing.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>

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

namespace detail {
namespace sys {
// Each wrapper: the interposer when one is installed, else the real call.
#define MAPDIRECT_SYSCALL(name, params, args)                                                             \
  inline auto name params noexcept {                                                                      \
    if (syscall_interposer* i = active_interposer().load(std::memory_order_acquire)) return i->name args; \
    return syscall_interposer{}.name args;                                                                \
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
MAPDIRECT_SYSCALL(unlinkat, (int dirfd, const char* path, int flags), (dirfd, path, flags))
MAPDIRECT_SYSCALL(linkat, (int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags),
                  (olddirfd, oldpath, newdirfd, newpath, flags))
MAPDIRECT_SYSCALL(fstatat, (int dirfd, const char* path, struct stat* st, int flags), (dirfd, path, st, flags))
MAPDIRECT_SYSCALL(readlink, (const char* path, char* buf, std::size_t n), (path, buf, n))
MAPDIRECT_SYSCALL(uname, (struct utsname * u), (u))
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

/// "/proc/self/fd/N": the path that reopens or links the file behind fd N
/// (built in place, no allocation).
struct proc_fd_path {
  explicit proc_fd_path(int fd) noexcept { std::snprintf(text, sizeof text, "/proc/self/fd/%d", fd); }
  const char* c_str() const noexcept { return text; }
  char text[32];
};
}  // namespace sys

/// Calls `call` (a sys:: call that fails with -1 and errno) again while it
/// fails with EINTR; the real call stays named at each call site. EINTR is
/// never a write-back error, so retrying fsync/fdatasync loses no report.
template <class Call>
inline auto retry_eintr(Call&& call) noexcept -> decltype(call()) {
  decltype(call()) rc;
  do {
    rc = call();
  } while (rc < 0 && errno == EINTR);
  return rc;
}
}  // namespace detail

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_SYSCALL_HPP
