// Refusals, real and simulated: a host that gives no leases (the test is
// skipped, with the reason) and a file system without O_TMPFILE (an
// interposer that refuses it).
#pragma once

#include "test_support.hpp"

#include <cerrno>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mdtest {

/// Base, with every open of an O_TMPFILE refused (EOPNOTSUPP, as on a file
/// system without it), so open(create) must create the file by name; counts
/// the refusals.
template <class Base>
struct no_tmpfile : Base {
  int tmpfile_refusals = 0;
  int openat(int dirfd, const char* path, int flags, mode_t mode) noexcept override {
    if ((flags & O_TMPFILE) == O_TMPFILE) {
      ++tmpfile_refusals;
      errno = EOPNOTSUPP;
      return -1;
    }
    return this->mapdirect::syscall_interposer::openat(dirfd, path, flags, mode);
  }
};

/// Base, with every ftruncate that would shrink the file refused (EIO) while
/// `refuse_shrink` is set: a size rollback that fails. Growing still works.
template <class Base>
struct no_shrink : Base {
  bool refuse_shrink = true;
  int ftruncate(int fd, off_t len) noexcept override {
    struct stat now {};
    if (refuse_shrink && ::fstat(fd, &now) == 0 && len < now.st_size) {
      errno = EIO;
      return -1;
    }
    return this->Base::ftruncate(fd, len);
  }
};

/// True if a leased seal failed because this host gives no leases: EACCES
/// (not the owner, no CAP_LEASE) or EINVAL (no leases on this file system).
inline bool leases_unavailable(const std::error_code& e) {
  return e.category() == std::system_category() && (e.value() == EACCES || e.value() == EINVAL);
}

}  // namespace mdtest

/// In a test case: skips it (a WARN with the reason, then return) when the
/// leased seal result `s` failed because leases are unavailable here.
#define MDTEST_SKIP_WITHOUT_LEASES(s)                                               \
  do {                                                                              \
    if (!(s) && mdtest::leases_unavailable((s).error())) {                          \
      WARN("skipped: leases unavailable here: " << mapdirect::last_error_detail()); \
      return;                                                                       \
    }                                                                               \
  } while (false)
