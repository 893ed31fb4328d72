// A scratch file system on a loop device for tests: image file, losetup,
// mkfs, mount in a temporary directory, and cleanup on every path.
//
//   std::string why;
//   auto fs = mdtest::loopfs::create({"xfs", {"-m", "reflink=1"}}, why);
//   if (!fs) { WARN("skipped: " << why); return; }
//   use fs->path() ...
//
// create() returns nullopt with `why` naming what is missing (root, a tool,
// a free loop device, kernel support for the file system) so that the test
// can skip with that message instead of failing.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mdtest {

/// What to build: file system type, extra mkfs arguments, image size, mount options.
struct loopfs_options {
  std::string fstype = "ext4";                   ///< "ext4", "xfs", ... (mkfs.<fstype> must exist)
  std::vector<std::string> mkfs_args = {};       ///< e.g. {"-m", "reflink=1"} for xfs
  std::uint64_t size = std::uint64_t{64} << 20;  ///< image size (sparse); xfs needs >= 300 MiB
  std::string mount_options = {};                ///< passed as mount -o when not empty
  std::string image_dir = "/var/tmp";            ///< where the (sparse) image file lives
};

/// Full path of `tool` found in $PATH or the sbin directories (which a
/// non-login environment may leave out), or "" when absent.
inline std::string find_tool(const std::string& tool) {
  if (tool.find('/') != std::string::npos) return ::access(tool.c_str(), X_OK) == 0 ? tool : std::string();
  std::string path = "/usr/local/sbin:/usr/sbin:/sbin:";
  if (const char* p = std::getenv("PATH")) path += p;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t end = path.find(':', start);
    const std::string dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!dir.empty() && ::access((dir + "/" + tool).c_str(), X_OK) == 0) return dir + "/" + tool;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return {};
}

/// True when `tool` can be found by find_tool.
inline bool have_tool(const std::string& tool) { return !find_tool(tool).empty(); }

/// Runs argv (no shell), capturing stdout and stderr together. Returns the
/// exit status (127 when the program could not be executed, -1 on fork failure).
inline int run_command(const std::vector<std::string>& argv, std::string* output = nullptr) {
  if (argv.empty()) return -1;
  // Everything the child needs is prepared before fork: only async-signal-safe calls after it.
  const std::string program = find_tool(argv[0]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return -1;
  }
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    if (!program.empty()) ::execv(program.c_str(), args.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n > 0) out.append(buf, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (output) *output = out;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/// A mounted loop-device file system, torn down (umount, losetup -d, image
/// and mount point removed) by the destructor. Move-only.
class loopfs {
 public:
  /// Builds and mounts the file system, or returns nullopt with `why` saying
  /// what is missing or what failed (suitable for a "skipped: ..." message).
  static std::optional<loopfs> create(const loopfs_options& options, std::string& why) {
    if (::geteuid() != 0) {
      why = "loop-mounted " + options.fstype + " needs root (losetup, mount)";
      return std::nullopt;
    }
    for (const std::string& tool :
         {std::string("losetup"), std::string("mount"), std::string("umount"), "mkfs." + options.fstype}) {
      if (!have_tool(tool)) {
        why = tool + " is not installed";
        return std::nullopt;
      }
    }
    loopfs fs;
    std::string tmpl = options.image_dir + "/mapdirect-loopfs-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const int fd = ::mkstemp(buf.data());
    if (fd < 0) {
      why = "cannot create an image file in " + options.image_dir + ": " + std::strerror(errno);
      return std::nullopt;
    }
    fs.image_ = buf.data();
    const bool sized = ::ftruncate(fd, static_cast<off_t>(options.size)) == 0;
    ::close(fd);
    if (!sized) {
      why = "cannot size the image file: " + std::string(std::strerror(errno));
      return std::nullopt;
    }
    std::string out;
    if (run_command({"losetup", "--find", "--show", fs.image_}, &out) != 0) {
      why = "losetup failed (no free loop device?): " + trim(out);
      return std::nullopt;
    }
    fs.device_ = trim(out);
    std::vector<std::string> mkfs = {"mkfs." + options.fstype};
    if (options.fstype == "xfs") mkfs.push_back("-q");
    if (options.fstype.rfind("ext", 0) == 0) mkfs.insert(mkfs.end(), {"-q", "-F"});
    mkfs.insert(mkfs.end(), options.mkfs_args.begin(), options.mkfs_args.end());
    mkfs.push_back(fs.device_);
    if (run_command(mkfs, &out) != 0) {
      why = "mkfs." + options.fstype + " failed: " + trim(out);
      return std::nullopt;
    }
    std::string mtmpl = "/tmp/mapdirect-mnt-XXXXXX";
    std::vector<char> mbuf(mtmpl.begin(), mtmpl.end());
    mbuf.push_back('\0');
    if (!::mkdtemp(mbuf.data())) {
      why = "mkdtemp failed: " + std::string(std::strerror(errno));
      return std::nullopt;
    }
    fs.mount_point_ = mbuf.data();
    std::vector<std::string> mount = {"mount", "-t", options.fstype};
    if (!options.mount_options.empty()) mount.insert(mount.end(), {"-o", options.mount_options});
    mount.insert(mount.end(), {fs.device_, fs.mount_point_});
    if (run_command(mount, &out) != 0) {
      why = "mounting " + options.fstype + " failed (kernel support?): " + trim(out);
      return std::nullopt;
    }
    fs.mounted_ = true;
    return std::optional<loopfs>(std::move(fs));
  }

  loopfs(loopfs&& o) noexcept { swap(o); }
  loopfs& operator=(loopfs&& o) noexcept {
    if (this != &o) {
      loopfs tmp(std::move(o));
      swap(tmp);
    }
    return *this;
  }
  loopfs(const loopfs&) = delete;
  loopfs& operator=(const loopfs&) = delete;
  ~loopfs() { teardown(); }

  /// The mount point (a directory to create files in).
  const std::string& path() const { return mount_point_; }
  /// The loop device ("/dev/loop3").
  const std::string& device() const { return device_; }

  void swap(loopfs& o) noexcept {
    std::swap(image_, o.image_);
    std::swap(device_, o.device_);
    std::swap(mount_point_, o.mount_point_);
    std::swap(mounted_, o.mounted_);
  }

 private:
  loopfs() = default;

  static std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
    return s;
  }

  // Best effort on every step: a failed test must not leak a mount or a loop device.
  void teardown() noexcept {
    try {
      if (mounted_ && run_command({"umount", mount_point_}) != 0) run_command({"umount", "-l", mount_point_});
      mounted_ = false;
      if (!device_.empty()) run_command({"losetup", "-d", device_});
    } catch (...) {
    }
    if (!mount_point_.empty()) ::rmdir(mount_point_.c_str());
    if (!image_.empty()) ::unlink(image_.c_str());
    device_.clear();
    mount_point_.clear();
    image_.clear();
  }

  std::string image_;
  std::string device_;
  std::string mount_point_;
  bool mounted_ = false;
};

}  // namespace mdtest
