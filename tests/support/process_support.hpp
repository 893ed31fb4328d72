// Helpers shared by the unit tests for other processes and refused reopens:
// a child-process runner, "does another process see this lock?", and an
// interposer that refuses mapdirect's reopen through /proc/self/fd.
#pragma once

#include <mapdirect/testing.hpp>

#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mdtest {

/// Runs fn() (returning an int exit status, 0..255) in a forked child under
/// an anti-hang alarm; returns that status, or -1 if the fork failed or the
/// child did not exit normally. fn must not use Catch2 assertions.
template <class F>
int run_in_child(F&& fn, unsigned alarm_seconds = 30) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::alarm(alarm_seconds);  // anti-hang only
    ::_exit(fn());
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// F_GETLK from another process: does it see a write-conflicting lock on
/// [start, start+len) of the file at `path`, held by `holder` (any process
/// when holder is 0)?
inline bool child_sees_lock(const std::string& path, off_t start, off_t len, pid_t holder = 0) {
  return run_in_child([&]() -> int {
           const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
           if (fd < 0) return 2;
           struct flock l {};
           l.l_type = F_WRLCK;
           l.l_whence = SEEK_SET;
           l.l_start = start;
           l.l_len = len;
           if (::fcntl(fd, F_GETLK, &l) != 0) return 3;
           return l.l_type != F_UNLCK && (holder == 0 || l.l_pid == holder) ? 0 : 1;
         }) == 0;
}

/// True for the path mapdirect reopens a descriptor's file through.
inline bool is_reopen_path(const char* path) { return std::strncmp(path, "/proc/self/fd/", 14) == 0; }

/// Refuses every reopen through /proc/self/fd with EACCES (an unprivileged
/// worker given a 0600 file of another user over SCM_RIGHTS).
struct no_reopen : mapdirect::syscall_interposer {
  int open(const char* path, int flags, mode_t mode) noexcept override {
    if (is_reopen_path(path)) {
      errno = EACCES;
      return -1;
    }
    return mapdirect::syscall_interposer::open(path, flags, mode);
  }
};

}  // namespace mdtest
