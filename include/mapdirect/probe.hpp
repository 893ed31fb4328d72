// SPDX-License-Identifier: MIT
// probe(): what direct_mapping would give for a file or directory, and why.
//
//   auto r = mapdirect::probe("/mnt/pmem");   // a directory: a temporary file in it is tried
//   if (r) std::printf("%s on %s\n%s", mapdirect::to_string(r.value().mode),
//                      r.value().file_system.c_str(), r.value().ladder.c_str());
#ifndef MAPDIRECT_PROBE_HPP
#define MAPDIRECT_PROBE_HPP

#include "config.hpp"
#include "descriptor.hpp"
#include "detail/linux_abi.hpp"
#include "detail/nd.hpp"
#include "detail/open_file.hpp"
#include "detail/syscall.hpp"
#include "error.hpp"
#include "mapping.hpp"
#include "persist.hpp"

#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>

#include <cstdio>
#include <optional>
#include <string>

MAPDIRECT_BEGIN_NAMESPACE

/// Everything probe() learned about a file (or a new file in a directory).
struct probe_report {
  std::string kernel_release;        ///< uname -r
  std::string file_system;           ///< "ext4", "xfs", "tmpfs", ... or the hex magic
  bool directory = false;            ///< the probed object was a directory (a temporary file in it was tested)
  bool writable = false;             ///< the file could be opened for writing (needed to test the ladder)
  map_mode mode = map_mode::shared;  ///< what direct_mapping::map would obtain
  granularity store_granularity = granularity::page;  ///< and its store granularity
  bool mode_known = false;                            ///< true when mode was found with a writable mapping
  /// True when mode/store_granularity are what a writer would get, found
  /// without writing: the descriptor is read-only, so each rung was tried
  /// with a PROT_READ mapping, for which the kernel checks MAP_SYNC support
  /// as for a writer's (mode_known stays false; `untested` says what is left).
  bool mode_inferred = false;
  std::string ladder;                  ///< each rung tried, with errno and cause
  map_ladder rungs;                    ///< the same ladder as data: mode, attempted, errno, cause per rung
  bool map_sync = false;               ///< MAP_SHARED_VALIDATE|MAP_SYNC accepted for this file (see map_sync_tested)
  bool map_sync_tested = false;        ///< false: MAP_SYNC was not tried at all, map_sync means nothing (see untested)
  bool read_only_mount = false;        ///< the file system is mounted read-only: no writer can map anything here
  std::string untested;                ///< what could not be tested and why ("" when everything was)
  bool map_direct_configured = false;  ///< the build defines MAPDIRECT_MAP_DIRECT_FLAG
  std::optional<bool> dax;             ///< statx STATX_ATTR_DAX, when the kernel reports it
  persistence_domain persistence = persistence_domain::unknown;  ///< of the nd regions behind the device
  int nd_regions = 0;                                            ///< nd regions found behind the device
  flush_instruction flush = flush_instruction::none;             ///< what persist() would use
  std::size_t cache_line = 0;                                    ///< flush stride in bytes
  bool io_uring = false;                                         ///< io_uring_setup succeeded
  std::string io_uring_detail;                                   ///< why not, when not
  /// Backend a group_committer (async.hpp) runs here: "io_uring", or
  /// "thread" (fdatasync on a committer thread) when io_uring is refused.
  std::string group_commit_backend = "thread";
  /// A device DAX character device (/dev/daxX.Y): mode is sync (no page
  /// cache, no file-system metadata; MAP_SYNC not needed), file_system is
  /// "device_dax", and device_size/device_align come from sysfs.
  bool device_dax = false;
  std::uint64_t device_size = 0;   ///< bytes (sysfs `size`)
  std::uint64_t device_align = 0;  ///< mapping offsets and lengths must be multiples (sysfs `align`)
};

namespace detail {
inline const char* file_system_name(unsigned long magic) noexcept {
  switch (magic) {
    case linux_abi::ext4_super_magic: return "ext4";
    case linux_abi::xfs_super_magic: return "xfs";
    case TMPFS_MAGIC: return "tmpfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case NFS_SUPER_MAGIC: return "nfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    case 0x65735546: return "fuse";
    case 0x2fc12fc1: return "zfs";
    case 0xf2f52010: return "f2fs";
    default: return nullptr;
  }
}

constexpr const char* kNotOpenForWriting = "(the descriptor is not open for writing)";

// Replaces every `from` in `s` by `to`.
inline void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// Sets map_sync/map_sync_tested from the sync rung of a ladder.
inline void note_map_sync(const map_ladder& ladder, probe_report& r) noexcept {
  for (std::size_t i = 0; i < ladder.count; ++i) {
    if (ladder.steps[i].mode != map_mode::sync || !ladder.steps[i].attempted) continue;
    r.map_sync_tested = true;
    r.map_sync = ladder.steps[i].error == 0;
  }
  if (!r.map_sync_tested && r.untested.empty()) {
    for (std::size_t i = 0; i < ladder.count; ++i)
      if (ladder.steps[i].mode == map_mode::sync) r.untested = std::string("MAP_SYNC: ") + ladder.steps[i].cause;
  }
}

inline void probe_io_uring(probe_report& r) noexcept {
  char disabled[16] = {};
  if (sys::read_text("/proc/sys/kernel/io_uring_disabled", disabled, sizeof disabled) > 0 && disabled[0] != '0') {
    r.io_uring_detail = std::string("disabled by sysctl kernel.io_uring_disabled=") + disabled;
    // Value 1 still allows the io_uring group; try anyway below.
  }
  unsigned char params[120] = {};  // struct io_uring_params; zeroed asks for defaults
  const long ring = sys::io_uring_setup(1, params);
  if (ring >= 0) {
    sys::close_quietly(static_cast<int>(ring));
    r.io_uring = true;
    r.io_uring_detail.clear();
    r.group_commit_backend = "io_uring";
    return;
  }
  const int e = errno;
  if (r.io_uring_detail.empty()) {
    r.io_uring_detail = e == ENOSYS  ? "io_uring_setup: ENOSYS (kernel without io_uring, or blocked by seccomp)"
                        : e == EPERM ? "io_uring_setup: EPERM (disabled by sysctl or policy)"
                                     : std::string("io_uring_setup: ") + errno_name(e);
  }
}
}  // namespace detail

namespace detail {
// probe() of a device DAX: sysfs facts, then one mapping of its first
// `align` bytes (read-write when the descriptor allows, else read-only).
inline result<probe_report> probe_device_dax(int fd, const struct stat& st, probe_report& r) noexcept {
  devdax_info info;
  if (const int q = query_devdax(st.st_rdev, info)) return fail_errno(q, "probe: device DAX sysfs attributes");
  r.device_dax = true;
  r.file_system = "device_dax";
  r.device_size = info.size;
  r.device_align = info.align;
  r.persistence = info.domain;
  r.nd_regions = info.region[0] ? 1 : 0;
  r.dax = true;
  r.flush = detect_flush_instruction();
  r.cache_line = cache_line_size();
  const int fl = sys::fcntl(fd, F_GETFL);
  r.writable = fl >= 0 && (fl & O_ACCMODE) == O_RDWR;
  r.untested = "MAP_SYNC: not needed on device DAX (no page cache, no file-system metadata: every fault is "
               "synchronous)";
  map_options o;
  o.access = r.writable ? map_access::read_write : map_access::read_only;
  auto m = direct_mapping::map(fd, 0, static_cast<std::size_t>(info.align), o);
  if (m) {
    r.ladder = m.value().describe();
    r.mode = m.value().mode();
    r.store_granularity = granularity_for(r.mode, r.persistence);
    (r.writable ? r.mode_known : r.mode_inferred) = true;
    if (!r.writable) r.untested += std::string("; a writable mapping ") + kNotOpenForWriting;
  } else {
    r.ladder = std::string("error: ") + last_error_detail() + "\n";
  }
  probe_io_uring(r);
  return r;
}
}  // namespace detail

namespace detail {
// probe(): the file system's name and whether it is mounted read-only.
inline void probe_file_system(int fd, probe_report& r) noexcept {
  struct statfs sfs {};
  if (sys::fstatfs(fd, &sfs) != 0) return;
  r.read_only_mount = (sfs.f_flags & ST_RDONLY) != 0;
  const auto magic = static_cast<unsigned long>(sfs.f_type);
  if (const char* name = file_system_name(magic)) {
    r.file_system = name;
  } else {
    char hex[24];
    std::snprintf(hex, sizeof hex, "0x%lx", magic);
    r.file_system = hex;
  }
}

// probe(): what a climb of the ladder found: the rungs, MAP_SYNC's verdict,
// and the mode (setting `found`: mode_known or mode_inferred) or the error.
inline void note_ladder_result(const result<map_mode>& mode, const map_ladder& ladder, probe_report& r,
                               bool& found) noexcept {
  r.rungs = ladder;
  note_map_sync(ladder, r);
  if (mode) {
    found = true;
    r.mode = mode.value();
    r.store_granularity = granularity_for(r.mode, r.persistence);
  } else {
    r.ladder += std::string("error: ") + last_error_detail() + "\n";
  }
}

// probe(): the ladder as map() climbs it on a writable descriptor.
inline void probe_ladder_writable(int test_fd, probe_report& r) noexcept {
  map_ladder ladder;
  auto mode = direct_mapping::try_modes(test_fd, map_options{}, ladder);
  r.ladder = direct_mapping::describe_ladder(ladder);
  note_ladder_result(mode, ladder, r, r.mode_known);
}

// probe(): what a writer would get, without writing: the kernel validates
// MAP_SYNC on a PROT_READ mapping of an O_RDONLY descriptor as on a
// writable one (file system support, DAX, synchronous faults).
inline void probe_ladder_read_only(int test_fd, probe_report& r) noexcept {
  r.untested = std::string("a writable mapping ") + kNotOpenForWriting;
  if (r.read_only_mount)
    r.untested += "; the file system is mounted read-only: no writer can map it until it is remounted read-write";
#ifdef MAPDIRECT_MAP_DIRECT_FLAG
  r.untested += "; MAP_DIRECT (it needs a writable mapping)";
#endif
  map_ladder ladder;
  auto mode = direct_mapping::try_modes_read_only(test_fd, map_options{}, ladder);
  r.ladder = "not tested: " + r.untested +
             "; each rung was tried with a read-only mapping instead, which the kernel checks for MAP_SYNC "
             "as it would a writer's:\n" +
             direct_mapping::describe_ladder(ladder);
  note_ladder_result(mode, ladder, r, r.mode_inferred);
}

// probe(const char*): says why the descriptor is read-only (the open for
// writing was refused with rw_errno) where the report says it was not opened for writing.
inline void note_write_refused(probe_report& rep, int rw_errno) noexcept {
  const std::string why = std::string("(opening the file for writing was refused: ") + errno_name(rw_errno) +
                          (rw_errno == EROFS ? ", read-only file system" : "") + ")";
  replace_all(rep.untested, kNotOpenForWriting, why);
  replace_all(rep.ladder, kNotOpenForWriting, why);
}
}  // namespace detail

/// Probes an open file or directory: the mode and granularity map() would
/// give there and why, DAX, persistence domain, flush instruction, kernel
/// release and io_uring availability. A directory is probed through an
/// unnamed temporary file (O_TMPFILE) that vanishes afterwards; where none
/// can be made (read-only directory, no O_TMPFILE) the ladder is reported as
/// not tested, with the reason. A read-only fd (or a file on a read-only
/// mount) is probed with read-only mappings: mode_inferred, map_sync_tested
/// and `untested` say what a writer would get and what could not be tried. Never closes `fd` nor releases record locks.
/// A device DAX character device is probed by mapping its first `align`
/// bytes (probe_report::device_dax).
/// Errors: fstat errno codes (EBADF), errc::invalid_argument (neither a
/// regular file, a directory nor device DAX).
inline result<probe_report> probe(int fd) noexcept {
  probe_report r;
  struct utsname u {};
  if (detail::sys::uname(&u) == 0) r.kernel_release = u.release;
  struct stat st {};
  if (detail::sys::fstat(fd, &st) != 0) return detail::fail_errno(errno, "probe: fstat");
  detail::probe_file_system(fd, r);
  int test_fd = fd;
  int owned = -1;
  if (S_ISDIR(st.st_mode)) {
    r.directory = true;
    {
      const detail::stdio_placeholders low;
      owned = detail::sys::openat(fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    }
    if (owned < 0) {
      r.untested = std::string("no temporary file can be created in the directory (O_TMPFILE: ") +
                   detail::errno_name(errno) + ")";
      r.ladder = "not tested: " + r.untested + "\n";
      test_fd = -1;
    } else {
      test_fd = owned;
    }
  } else if (S_ISCHR(st.st_mode) && detail::is_device_dax(st.st_rdev)) {
    return detail::probe_device_dax(fd, st, r);
  } else if (!S_ISREG(st.st_mode)) {
    return detail::fail(errc::invalid_argument, "probe: not a regular file, directory or device DAX");
  }
  const int fl = test_fd >= 0 ? detail::sys::fcntl(test_fd, F_GETFL) : -1;
  r.writable = fl >= 0 && (fl & O_ACCMODE) == O_RDWR;
  struct statx stx {};
  if (detail::sys::statx(test_fd >= 0 ? test_fd : fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0 &&
      (stx.stx_attributes_mask & detail::linux_abi::statx_attr_dax))
    r.dax = (stx.stx_attributes & detail::linux_abi::statx_attr_dax) != 0;
#ifdef MAPDIRECT_MAP_DIRECT_FLAG
  r.map_direct_configured = true;
#endif
  r.persistence = detail::domain_of_device(st.st_dev, &r.nd_regions);
  r.flush = detect_flush_instruction();
  r.cache_line = cache_line_size();
  if (r.writable) detail::probe_ladder_writable(test_fd, r);
  else if (test_fd >= 0) detail::probe_ladder_read_only(test_fd, r);
  if (owned >= 0) detail::close_keeping_locks_quietly(owned);
  detail::probe_io_uring(r);
  return r;
}

/// As probe(int), opening `path` safely: an O_PATH descriptor is looked at
/// first, and only a directory or a regular file is then opened for real
/// (through /proc/self/fd, so the checked inode is the one opened): a FIFO,
/// device or socket (also behind a symbolic link) is refused without being
/// opened. A file is opened read-write when permitted, else read-only (the
/// report then says what could not be tested). Never releases the process's
/// record locks on the file.
/// Errors: open errno codes (ENOENT, EACCES, ELOOP), errc::invalid_argument
/// (not a regular file, directory or device DAX; a device DAX is opened
/// read-write when permitted, else read-only), and those of probe(int).
inline result<probe_report> probe(const char* path) noexcept {
  detail::clear_detail();
  if (!path || !*path) return detail::fail(errc::invalid_argument, "probe: empty path");
  int opath = -1;
  {
    const detail::stdio_placeholders low;
    opath = detail::sys::open(path, O_PATH | O_CLOEXEC, 0);
  }
  if (opath < 0) return detail::fail_errno(errno, "probe: open");
  struct stat st {};
  const int stat_rc = detail::sys::fstat(opath, &st);
  const int stat_errno = errno;
  const detail::sys::proc_fd_path proc_path(opath);
  const char* proc = proc_path.c_str();
  int fd = -1;
  int rw_errno = 0;
  if (stat_rc != 0) {
    detail::sys::close_quietly(opath);  // O_PATH: never touches record locks
    return detail::fail_errno(stat_errno, "probe: fstat");
  } else if (S_ISDIR(st.st_mode)) {
    const detail::stdio_placeholders low;
    fd = detail::sys::open(proc, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  } else if (S_ISREG(st.st_mode)) {
    if (detail::deferred_closes::pending() != 0 && detail::proc_locks_lists_posix_lock(st.st_ino))
      fd = detail::deferred_closes::take(st.st_dev, st.st_ino, O_RDWR);
    const detail::stdio_placeholders low;
    if (fd < 0) fd = detail::sys::open(proc, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0);
    if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS || errno == ETXTBSY)) {
      rw_errno = errno;
      fd = detail::sys::open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0);
    }
  } else if (S_ISCHR(st.st_mode) && detail::is_device_dax(st.st_rdev)) {
    const detail::stdio_placeholders low;
    fd = detail::sys::open(proc, O_RDWR | O_CLOEXEC | O_NOCTTY, 0);
    if (fd < 0 && (errno == EACCES || errno == EPERM)) {
      rw_errno = errno;
      fd = detail::sys::open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY, 0);
    }
  } else {
    detail::sys::close_quietly(opath);
    if (S_ISCHR(st.st_mode))
      return detail::fail(errc::invalid_argument,
                          "probe: %s is a character device but not a device DAX: refused without opening it", path);
    return detail::fail(errc::invalid_argument,
                        "probe: %s is %s, not a regular file or directory: refused without "
                        "opening it",
                        path, detail::file_type_name(st.st_mode));
  }
  const int open_errno = errno;
  detail::sys::close_quietly(opath);
  if (fd < 0) return detail::fail_errno(open_errno, "probe: open");
  auto r = probe(fd);
  detail::close_keeping_locks_quietly(fd);
  if (r && rw_errno != 0) detail::note_write_refused(r.value(), rw_errno);
  return r;
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_PROBE_HPP
