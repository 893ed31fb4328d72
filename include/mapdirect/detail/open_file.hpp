// SPDX-License-Identifier: MIT
// Safe opening and atomic creation of files by path for direct_mapping::open
// and probe(path): the object's type and owner are checked on an O_PATH
// descriptor before anything is opened for real, a file is created unnamed
// (O_TMPFILE) and linked into place only once it is complete, and no
// descriptor close ever drops the process's record locks.
#ifndef MAPDIRECT_DETAIL_OPEN_FILE_HPP
#define MAPDIRECT_DETAIL_OPEN_FILE_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "descriptor.hpp"
#include "syscall.hpp"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// What open_existing() may do.
struct open_rules {
  bool no_follow = false;            ///< O_NOFOLLOW on the last component
  bool allow_foreign_owner = false;  ///< accept another user's file in a sticky shared directory
  bool may_create = false;           ///< the open passes O_CREAT (kernel protected_regular applies)
  mode_t permissions = 0600;         ///< mode if O_CREAT creates after all
  int access = O_RDWR;               ///< O_RDWR or O_RDONLY
};

/// A descriptor closed with close_keeping_locks at scope exit.
class scoped_fd {
 public:
  scoped_fd() noexcept = default;
  explicit scoped_fd(int fd) noexcept : fd_(fd) {}
  ~scoped_fd() { reset(); }
  scoped_fd(const scoped_fd&) = delete;
  scoped_fd& operator=(const scoped_fd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) close_keeping_locks_quietly(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/// The parent directory of a path (opened O_RDONLY|O_DIRECTORY, so that it
/// can be fsynced and used with openat/linkat) and the last component.
struct parent_dir {
  scoped_fd fd;
  char name[NAME_MAX + 1] = {};
};

/// Opens the parent of `path` ("." for a bare name). Fails with EISDIR for a
/// path ending in '/' and ENAMETOOLONG for an over-long path or name.
inline std::error_code open_parent(const char* path, parent_dir& out, const char* what) noexcept {
  const std::size_t len = std::strlen(path);
  if (len == 0) return fail(errc::invalid_argument, "%s: empty path", what);
  if (path[len - 1] == '/') {
    set_detail("%s: %s names a directory (ends in '/'), not a file", what, path);
    return errno_code(EISDIR);
  }
  const char* slash = std::strrchr(path, '/');
  const char* name = slash ? slash + 1 : path;
  if (std::strlen(name) > NAME_MAX || len >= PATH_MAX) {
    set_detail("%s: path or file name too long: %s", what, path);
    return errno_code(ENAMETOOLONG);
  }
  std::memcpy(out.name, name, std::strlen(name) + 1);
  char dir[PATH_MAX];
  if (!slash) {
    dir[0] = '.';
    dir[1] = '\0';
  } else if (slash == path) {
    dir[0] = '/';
    dir[1] = '\0';
  } else {
    const auto n = static_cast<std::size_t>(slash - path);
    std::memcpy(dir, path, n);
    dir[n] = '\0';
  }
  const stdio_placeholders low;
  const int fd = sys::open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY, 0);
  if (fd < 0) {
    return fail_errno(errno, "%s: opening the parent directory %s", what, dir);
  }
  out.fd.reset(fd);
  return {};
}

/// Name of a file type, for messages.
inline const char* file_type_name(mode_t m) noexcept {
  return S_ISREG(m)    ? "a regular file"
         : S_ISDIR(m)  ? "a directory"
         : S_ISCHR(m)  ? "a character device"
         : S_ISBLK(m)  ? "a block device"
         : S_ISFIFO(m) ? "a FIFO"
         : S_ISSOCK(m) ? "a socket"
         : S_ISLNK(m)  ? "a symbolic link"
                       : "of unknown type";
}

/// A sticky directory others (or the group) may write to: /tmp, /var/tmp,
/// /dev/shm. Another user can plant files there (the kernel's
/// fs.protected_regular rule, applied whatever the sysctl says).
inline bool shared_sticky_dir(const struct stat& dir) noexcept {
  return (dir.st_mode & S_ISVTX) && (dir.st_mode & (S_IWOTH | S_IWGRP));
}

/// Refuses `file` when it is owned by neither this user nor the directory's
/// owner and sits in a shared sticky directory `dir`. EACCES with detail.
inline std::error_code check_owner(const struct stat& dir, const struct stat& file, const char* path,
                                   const char* what) noexcept {
  const uid_t me = ::geteuid();
  if (!shared_sticky_dir(dir) || file.st_uid == me || file.st_uid == dir.st_uid) return {};
  set_detail("%s: refusing %s: it is owned by uid %u (not this user, uid %u) and sits in a sticky directory other "
             "users can write to, where anyone can plant a file or link; set open_options::allow_foreign_owner to "
             "accept it",
             what, path, static_cast<unsigned>(file.st_uid), static_cast<unsigned>(me));
  return errno_code(EACCES);
}

/// For a last component that is a symbolic link (followed): the stat of the
/// directory that holds the file it resolved to (through /proc/self/fd).
inline bool resolved_parent_stat(int opath, struct stat& dir) noexcept {
  char target[PATH_MAX];
  const ssize_t n = sys::readlink(sys::proc_fd_path(opath).c_str(), target, sizeof target - 1);
  if (n <= 0 || target[0] != '/') return false;
  target[n] = '\0';
  char* slash = std::strrchr(target, '/');
  if (slash == target) slash[1] = '\0';
  else *slash = '\0';
  const int d = sys::open(target, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (d < 0) return false;
  const bool ok = sys::fstat(d, &dir) == 0;
  sys::close_quietly(d);  // O_PATH: closing it never touches record locks
  return ok;
}

/// Opens an existing file `name` in `dir` for mapping, safely:
///  1. O_PATH open (O_NOFOLLOW with rules.no_follow): nothing is opened for
///     real yet; refuses anything but a regular file (a symlink to a device
///     or FIFO is never opened), a dangling symlink, and, in a shared sticky
///     directory unless rules.allow_foreign_owner: another user's file,
///     another user's symlink, or a file with several hard links;
///  2. the real open: with rules.may_create by name with O_CREAT (so the
///     kernel's fs.protected_regular applies) and then checked to be the same
///     inode, else through /proc/self/fd of the O_PATH descriptor. Always
///     O_NONBLOCK|O_NOCTTY, cleared afterwards.
/// While the process holds record locks on the file, a descriptor mapdirect
/// kept open for them is reused instead. On success fd/st are set.
/// ENOENT: the name does not exist (or is a dangling symlink); EAGAIN: the
/// name was replaced while opening.
// Step 1a: the O_PATH descriptor of `name` (nothing opened for real). A
// dangling symbolic link is ENOENT (EEXIST when the caller may create:
// nothing is ever created through a link).
inline std::error_code open_path_only(int dirfd, const char* name, const char* path, const open_rules& rules,
                                      const char* what, scoped_fd& opath) noexcept {
  const int follow = rules.no_follow ? O_NOFOLLOW : 0;
  {
    const stdio_placeholders low;
    opath.reset(sys::openat(dirfd, name, O_PATH | O_CLOEXEC | follow, 0));
  }
  if (opath.get() >= 0) return {};
  const int e = errno;
  struct stat dangling {};
  if (e == ENOENT && sys::fstatat(dirfd, name, &dangling, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(dangling.st_mode)) {
    // Never create through a symbolic link: its target is someone else's choice.
    set_detail("%s: %s is a dangling symbolic link; nothing is created through it", what, path);
    return errno_code(rules.may_create ? EEXIST : ENOENT);
  }
  return fail_errno(e, "%s: %s", what, path);
}

// Step 1b: only a regular file is opened for real.
inline std::error_code require_regular(const struct stat& st, const char* path, const char* what) noexcept {
  if (S_ISLNK(st.st_mode)) {
    set_detail("%s: %s is a symbolic link and open_options::no_follow is set; refused", what, path);
    return errno_code(ELOOP);
  }
  if (S_ISREG(st.st_mode)) return {};
  if (S_ISCHR(st.st_mode))
    return fail(errc::invalid_argument, "%s: %s is a character device: refused without opening it%s", what, path,
                " (a device DAX is mapped with direct_mapping::map on a descriptor you open)");
  return fail(errc::invalid_argument, "%s: %s is %s, not a regular file: refused without opening it", what, path,
              file_type_name(st.st_mode));
}

// Step 1c (unless rules.allow_foreign_owner): in a sticky directory other
// users can write to, refuse another user's file or symbolic link and a
// file with several hard links, for the name and for a link's target.
inline std::error_code check_foreign(int dirfd, int opath, const struct stat& st, bool last_is_link,
                                     const struct stat& link, const char* path, const char* what) noexcept {
  struct stat dir {};
  if (sys::fstat(dirfd, &dir) != 0) return fail_errno(errno, "%s", what);
  const uid_t me = ::geteuid();
  if (shared_sticky_dir(dir) && last_is_link && link.st_uid != me && link.st_uid != dir.st_uid) {
    set_detail("%s: refusing %s: a symbolic link owned by uid %u in a sticky directory other users can write to "
               "(the kernel's fs.protected_symlinks rule); set open_options::allow_foreign_owner to accept it",
               what, path, static_cast<unsigned>(link.st_uid));
    return errno_code(EACCES);
  }
  if (auto ec = check_owner(dir, st, path, what)) return ec;
  if (shared_sticky_dir(dir) && st.st_nlink > 1) {
    set_detail("%s: refusing %s: it has %lu hard links and sits in a sticky directory other users can write to (a "
               "planted link to another file); set open_options::allow_foreign_owner to accept it",
               what, path, static_cast<unsigned long>(st.st_nlink));
    return errno_code(EACCES);
  }
  if (!last_is_link) return {};
  struct stat real_dir {};
  if (!resolved_parent_stat(opath, real_dir))
    return fail(errc::invalid_argument, "%s: %s is a symbolic link whose target directory cannot be checked", what,
                path);
  if (auto ec = check_owner(real_dir, st, path, what)) return ec;
  if (shared_sticky_dir(real_dir) && st.st_nlink > 1) {
    set_detail("%s: refusing %s: its target has %lu hard links in a sticky shared directory", what, path,
               static_cast<unsigned long>(st.st_nlink));
    return errno_code(EACCES);
  }
  return {};
}

// Step 2: the real open (by name with O_CREAT when the caller may create, so
// fs.protected_regular applies; else through /proc/self/fd of the O_PATH
// descriptor), then checked to be the inode step 1 examined.
inline std::error_code open_checked(int dirfd, const char* name, const char* path, const open_rules& rules,
                                    const char* what, int opath, const struct stat& st, bool last_is_link, int& fd_out,
                                    struct stat& st_out) noexcept {
  int fd = -1;
  {
    const stdio_placeholders low;
    const int flags = rules.access | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    if (rules.may_create) {
      // Follow only a link the checks above saw: one planted since then
      // fails (ELOOP) instead of creating its target.
      fd = sys::openat(dirfd, name, flags | O_CREAT | (last_is_link ? 0 : O_NOFOLLOW), rules.permissions);
    } else {
      fd = sys::open(sys::proc_fd_path(opath).c_str(), flags, 0);
    }
  }
  if (fd < 0) {
    const int e = errno;
    return fail_errno(e, "%s: %s%s", what, path,
                      e == EACCES && rules.may_create ? " (fs.protected_regular refuses O_CREAT opens of other users' "
                                                        "files in sticky directories)"
                                                      : "");
  }
  scoped_fd real(fd);
  if (rules.may_create && last_is_link) {
    // Created through a link that was dangling by now? Never keep it.
    struct stat again {};
    if (sys::fstatat(dirfd, name, &again, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISLNK(again.st_mode)) {
      set_detail("%s: %s changed while it was being opened; not using it", what, path);
      return errno_code(EAGAIN);
    }
  }
  struct stat got {};
  if (sys::fstat(fd, &got) != 0) return fail_errno(errno, "%s", what);
  if (got.st_dev != st.st_dev || got.st_ino != st.st_ino) {
    set_detail("%s: %s was replaced while it was being opened; not using it", what, path);
    return errno_code(EAGAIN);
  }
  const int fl = sys::fcntl(fd, F_GETFL);
  if (fl >= 0) (void)sys::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  fd_out = real.release();
  st_out = got;
  return {};
}

inline std::error_code open_existing(int dirfd, const char* name, const char* path, const open_rules& rules,
                                     const char* what, int& fd_out, struct stat& st_out) noexcept {
  fd_out = -1;
  scoped_fd opath;
  if (auto ec = open_path_only(dirfd, name, path, rules, what, opath)) return ec;
  struct stat st {};
  if (sys::fstat(opath.get(), &st) != 0) return fail_errno(errno, "%s", what);
  if (auto ec = require_regular(st, path, what)) return ec;
  struct stat link {};
  const bool last_is_link =
      !rules.no_follow && sys::fstatat(dirfd, name, &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode);
  if (!rules.allow_foreign_owner) {
    if (auto ec = check_foreign(dirfd, opath.get(), st, last_is_link, link, path, what)) return ec;
  }
  // Reuse a descriptor kept open for the process's record locks (no new one
  // that could not be closed until they are released).
  if (deferred_closes::pending() != 0 && proc_locks_lists_posix_lock(st.st_ino)) {
    const int again = deferred_closes::take(st.st_dev, st.st_ino, rules.access);
    if (again >= 0) {
      fd_out = again;
      st_out = st;
      return {};
    }
  }
  return open_checked(dirfd, name, path, rules, what, opath.get(), st, last_is_link, fd_out, st_out);
}

/// fsync of a directory, so that a new entry survives a power cut.
inline std::error_code fsync_dir(int dirfd, const char* path, const char* what) noexcept {
  if (retry_eintr([&] { return sys::fsync(dirfd); }) == 0) return {};
  const int e = errno;
  return fail_errno(e,
                    "%s: fsync of the directory of %s failed (the file exists but its name may not survive a "
                    "power cut)",
                    what, path);
}

/// Gives the unnamed file `fd` (O_TMPFILE) the name `name` in `dirfd`
/// (never replacing an existing entry: EEXIST). linkat(AT_EMPTY_PATH) needs
/// CAP_DAC_READ_SEARCH; without it, /proc/self/fd/N with AT_SYMLINK_FOLLOW.
/// Returns 0 or an errno.
inline int link_tmpfile(int fd, int dirfd, const char* name) noexcept {
  if (sys::linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0) return 0;
  int e = errno;
  if (e != ENOENT && e != EPERM && e != EACCES && e != EINVAL) return e;
  if (sys::linkat(AT_FDCWD, sys::proc_fd_path(fd).c_str(), dirfd, name, AT_SYMLINK_FOLLOW) == 0) return 0;
  e = errno;
  return e;
}

/// Removes `name` from `dirfd` only if it provably still is the file this
/// process created and nobody else has: same device and inode as `fd`, one
/// link, and a write lease granted on `fd` (the kernel grants it only while
/// no other open file description or mapping of the file exists; an opener
/// arriving meanwhile waits for the lease, and mapdirect's own open checks
/// the link count after opening). Returns true if removed; else leaves it
/// and appends why to `why`.
inline bool unlink_if_still_ours(int dirfd, const char* name, int fd, char* why, std::size_t cap) noexcept {
  struct stat mine {
  }, named{};
  if (sys::fstat(fd, &mine) != 0 || sys::fstatat(dirfd, name, &named, AT_SYMLINK_NOFOLLOW) != 0 ||
      mine.st_dev != named.st_dev || mine.st_ino != named.st_ino) {
    std::snprintf(why, cap, "the name no longer refers to the file this call created");
    return false;
  }
  if (mine.st_nlink != 1) {
    std::snprintf(why, cap, "the file has %lu links", static_cast<unsigned long>(mine.st_nlink));
    return false;
  }
  if (sys::fcntl(fd, F_SETLEASE, F_WRLCK) != 0) {
    std::snprintf(why, cap, "another process may have it open (write lease refused: %s)", errno_name(errno));
    return false;
  }
  const bool removed = sys::unlinkat(dirfd, name, 0) == 0;
  if (!removed) std::snprintf(why, cap, "unlink failed: %s", errno_name(errno));
  (void)sys::fcntl(fd, F_SETLEASE, F_UNLCK);
  return removed;
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_OPEN_FILE_HPP
