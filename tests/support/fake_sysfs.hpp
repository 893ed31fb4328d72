// A fake /sys tree for the device DAX and bad-block tests: paths under /sys
// (open, readlink) are redirected into a temporary directory, and, for one
// chosen file (by inode), fstat's st_dev and FIEMAP's extents are scripted.
#pragma once

#include <mapdirect/mapdirect.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace mdtest {

class fake_sysfs : public mapdirect::syscall_interposer {
 public:
  struct extent {
    std::uint64_t logical, physical, length;
    std::uint32_t flags;
  };

  fake_sysfs() {
    char tmpl[] = "/tmp/mapdirect-fakesys-XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    root_ = tmpl;
  }
  ~fake_sysfs() override {
    const std::string cmd = "rm -rf '" + root_ + "'";
    if (std::system(cmd.c_str()) != 0) {
    }
  }
  fake_sysfs(const fake_sysfs&) = delete;
  fake_sysfs& operator=(const fake_sysfs&) = delete;

  const std::string& root() const { return root_; }

  /// Writes root/rel (creating directories).
  void file(const std::string& rel, const std::string& text) {
    mkdirs(parent(rel));
    std::ofstream(root_ + "/" + rel) << text;
  }
  /// Creates directory root/rel.
  void dir(const std::string& rel) { mkdirs(rel); }
  /// Symbolic link root/rel -> target (as given: relative or absolute).
  void link(const std::string& rel, const std::string& target) {
    mkdirs(parent(rel));
    if (::symlink(target.c_str(), (root_ + "/" + rel).c_str()) != 0) std::abort();
  }

  /// fstat of the file with inode `ino` reports st_dev `dev`; FIEMAP on it returns `extents`.
  void script_file(ino_t ino, dev_t dev, std::vector<extent> extents) {
    ino_ = ino;
    dev_ = dev;
    extents_ = std::move(extents);
  }
  int fiemap_errno = 0;  // nonzero: FIEMAP on the scripted file fails with it
  off_t fake_size = -1;  // >= 0: fstat of the scripted file reports this size

  int open(const char* path, int flags, mode_t mode) noexcept override {
    return ::open(redirect(path).c_str(), flags, mode);
  }
  ssize_t readlink(const char* path, char* buf, std::size_t n) noexcept override {
    return ::readlink(redirect(path).c_str(), buf, n);
  }
  int fstat(int fd, struct stat* st) noexcept override {
    const int rc = ::fstat(fd, st);
    if (rc == 0 && ino_ != 0 && st->st_ino == ino_ && S_ISREG(st->st_mode)) {
      st->st_dev = dev_;
      if (fake_size >= 0) st->st_size = fake_size;
    }
    return rc;
  }
  int ioctl(int fd, unsigned long request, void* arg) noexcept override {
    struct stat st {};
    if (request != FS_IOC_FIEMAP || ino_ == 0 || ::fstat(fd, &st) != 0 || st.st_ino != ino_)
      return ::ioctl(fd, request, arg);
    if (fiemap_errno) {
      errno = fiemap_errno;
      return -1;
    }
    auto* fm = static_cast<struct fiemap*>(arg);
    const std::uint64_t lo = fm->fm_start, hi = fm->fm_start + fm->fm_length;
    std::uint32_t n = 0;
    for (std::size_t i = 0; i < extents_.size(); ++i) {
      const extent& e = extents_[i];
      if (e.logical + e.length <= lo || e.logical >= hi) continue;
      if (n == fm->fm_extent_count) break;
      struct fiemap_extent& out = fm->fm_extents[n++];
      out.fe_logical = e.logical;
      out.fe_physical = e.physical;
      out.fe_length = e.length;
      out.fe_flags = e.flags | (i + 1 == extents_.size() ? FIEMAP_EXTENT_LAST : 0u);
    }
    fm->fm_mapped_extents = n;
    return 0;
  }

 private:
  std::string redirect(const char* path) const {
    if (path && std::strncmp(path, "/sys/", 5) == 0) return root_ + path;
    return path ? path : "";
  }
  static std::string parent(const std::string& rel) {
    const auto slash = rel.rfind('/');
    return slash == std::string::npos ? std::string() : rel.substr(0, slash);
  }
  void mkdirs(const std::string& rel) {
    std::string at = root_;
    std::size_t pos = 0;
    while (pos < rel.size()) {
      const auto next = rel.find('/', pos);
      at += "/" + rel.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
      ::mkdir(at.c_str(), 0755);
      if (next == std::string::npos) break;
      pos = next + 1;
    }
  }

  std::string root_;
  ino_t ino_ = 0;
  dev_t dev_ = 0;
  std::vector<extent> extents_;
};

/// A fake device DAX for character device `rdev` (major:minor) under `sys`:
/// /sys/dev/char/M:m -> .../region0/dax0.1/dax0.0 with size, align,
/// resource, and region0 with persistence_domain, resource and badblocks.
inline void fake_devdax(fake_sysfs& sys, dev_t rdev, std::uint64_t size, std::uint64_t align,
                        const char* domain = "memory_controller", std::uint64_t dax_resource = 0x110200000ull,
                        std::uint64_t region_resource = 0x110000000ull, const std::string& region_badblocks = "") {
  const std::string region = "sys/devices/platform/ACPI0012:00/ndbus0/region0";
  const std::string dax = region + "/dax0.1/dax0.0";
  sys.file(dax + "/size", std::to_string(size) + "\n");
  sys.file(dax + "/align", std::to_string(align) + "\n");
  char hex[32];
  std::snprintf(hex, sizeof hex, "0x%llx\n", static_cast<unsigned long long>(dax_resource));
  sys.file(dax + "/resource", hex);
  sys.file(dax + "/uevent",
           "MAJOR=" + std::to_string(major(rdev)) + "\nMINOR=" + std::to_string(minor(rdev)) + "\nDEVNAME=dax0.0\n");
  sys.link(dax + "/subsystem", "../../../../../../bus/dax");
  sys.file(region + "/persistence_domain", std::string(domain) + "\n");
  std::snprintf(hex, sizeof hex, "0x%llx\n", static_cast<unsigned long long>(region_resource));
  sys.file(region + "/resource", hex);
  sys.file(region + "/badblocks", region_badblocks);
  sys.link("sys/dev/char/" + std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev)),
           "../../devices/platform/ACPI0012:00/ndbus0/region0/dax0.1/dax0.0");
}

}  // namespace mdtest
