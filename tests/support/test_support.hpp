// Helpers shared by the unit tests: temporary files, expectations from the
// environment (set by the VM tier), and a syscall interposer that injects errnos.
#pragma once

#include <mapdirect/mapdirect.hpp>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mdtest {

/// Directory for test files: $MAPDIRECT_TEST_DIR, else $TMPDIR, else /var/tmp
/// (a disk-backed file system on Debian; /tmp may be tmpfs elsewhere).
inline std::string test_dir() {
  if (const char* d = std::getenv("MAPDIRECT_TEST_DIR"); d && *d) return d;
  if (const char* d = std::getenv("TMPDIR"); d && *d) return d;
  return "/var/tmp";
}

/// The mode/granularity the host must give (set by the VM tier), if any.
inline std::optional<std::string> expected(const char* var) {
  if (const char* v = std::getenv(var); v && *v) return std::string(v);
  return std::nullopt;
}

/// A uniquely named file removed on destruction.
class temp_file {
 public:
  explicit temp_file(const std::string& dir = test_dir(), std::size_t size = 0) {
    std::string tmpl = dir + "/mapdirect-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    fd_ = ::mkstemp(buf.data());
    if (fd_ < 0) {
      std::perror("mkstemp");
      std::abort();
    }
    path_ = buf.data();
    if (size && ::ftruncate(fd_, static_cast<off_t>(size)) != 0) std::abort();
  }
  ~temp_file() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  std::uint64_t size() const {
    struct stat st {};
    ::fstat(fd_, &st);
    return static_cast<std::uint64_t>(st.st_size);
  }
  std::string read_all() const {
    std::string out(size(), '\0');
    if (!out.empty() && ::pread(fd_, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size())) std::abort();
    return out;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

/// Number of lines in /proc/self/maps: detects mappings left behind.
inline std::size_t mapping_count() {
  std::ifstream maps("/proc/self/maps");
  std::size_t n = 0;
  std::string line;
  while (std::getline(maps, line)) ++n;
  return n;
}

/// True if any mapping of /proc/self/maps names `path`.
inline bool path_is_mapped(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(path) != std::string::npos) return true;
  return false;
}

/// An interposer whose mmap can be scripted per flags, recording every call.
struct recording_interposer : mapdirect::syscall_interposer {
  struct mmap_call {
    int flags;
    int prot;
    std::size_t len;
    bool fixed;
  };
  struct range_call {
    void* addr;
    std::size_t len;
    int flags;
  };
  // Returns an errno to fail the mmap with, 0 to fake success with a real
  // MAP_SHARED mapping (so stores work), or -1 to pass through.
  std::function<int(int flags)> on_file_mmap = [](int) { return -1; };
  std::function<int()> on_msync = [] { return 0; };
  std::vector<mmap_call> mmaps;
  std::vector<range_call> msyncs;
  std::vector<range_call> munmaps;
  std::mutex lock;

  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
    {
      std::lock_guard<std::mutex> g(lock);
      mmaps.push_back({flags, prot, len, (flags & MAP_FIXED) != 0});
    }
    if (fd >= 0) {
      const int r = on_file_mmap(flags & ~(MAP_FIXED | MAP_POPULATE));
      if (r > 0) {
        errno = r;
        return MAP_FAILED;
      }
      if (r == 0) {
        const int keep = flags & (MAP_FIXED | MAP_POPULATE);
        return syscall_interposer::mmap(addr, len, prot, MAP_SHARED | keep, fd, off);
      }
    }
    return syscall_interposer::mmap(addr, len, prot, flags, fd, off);
  }
  int msync(void* addr, std::size_t len, int flags) noexcept override {
    {
      std::lock_guard<std::mutex> g(lock);
      msyncs.push_back({addr, len, flags});
    }
    if (const int e = on_msync()) {
      errno = e;
      return -1;
    }
    return syscall_interposer::msync(addr, len, flags);
  }
  int munmap(void* addr, std::size_t len) noexcept override {
    {
      std::lock_guard<std::mutex> g(lock);
      munmaps.push_back({addr, len, 0});
    }
    return syscall_interposer::munmap(addr, len);
  }
};

}  // namespace mdtest
