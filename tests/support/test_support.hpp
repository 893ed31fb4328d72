// Helpers shared by the unit tests: temporary files, expectations from the
// environment (set by the VM tier), and a syscall interposer that injects errnos.
#pragma once

#include <mapdirect/mapdirect.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
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

/// A directory of this test process's own (mkdtemp, 0700) inside test_dir():
/// for fixed file names, which must never be predictable in a shared
/// directory (another user could plant a symlink there). Removed at exit
/// when empty (only by the process that created it, not by forked children).
inline const std::string& private_dir() {
  static std::string dir;
  static pid_t creator = 0;
  if (dir.empty()) {
    std::string tmpl = test_dir() + "/mapdirect-private-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp in " + test_dir() + " failed");
    dir = buf.data();
    creator = ::getpid();
    std::atexit([] {
      if (::getpid() == creator) ::rmdir(dir.c_str());
    });
  }
  return dir;
}

/// The mode/granularity the host must give (set by the VM tier), if any.
inline std::optional<std::string> expected(const char* var) {
  if (const char* v = std::getenv(var); v && *v) return std::string(v);
  return std::nullopt;
}

/// Options that map page-granular (MAP_SHARED) on any host, DAX ones too.
inline mapdirect::map_options shared_only() {
  mapdirect::map_options o;
  o.strongest = mapdirect::map_mode::shared;
  return o;
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
  /// Emulates a DAX host: MAP_SHARED_VALIDATE|MAP_SYNC succeeds (backed by a
  /// real MAP_SHARED mapping so stores work); everything else passes through.
  void emulate_map_sync() {
    on_file_mmap = [](int flags) { return flags == (MAP_SHARED_VALIDATE | MAP_SYNC) ? 0 : -1; };
  }
  std::vector<mmap_call> mmaps;
  // Successful mmaps and every munmap, as [begin, end) address ranges: what
  // mapdirect mapped must all have been unmapped (other threads' and the
  // sanitizers' mappings do not matter, unlike a /proc/self/maps count).
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> mapped_ranges, unmapped_ranges;
  std::vector<range_call> msyncs;
  std::vector<range_call> munmaps;
  std::mutex lock;

  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept override {
    {
      std::lock_guard<std::mutex> g(lock);
      mmaps.push_back({flags, prot, len, (flags & MAP_FIXED) != 0});
    }
    if (fd >= 0) {
      const int r = on_file_mmap(flags & ~(MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_POPULATE));
      if (r > 0) {
        errno = r;
        return MAP_FAILED;
      }
      if (r == 0) {
        const int keep = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_POPULATE);
        return note_mapped(syscall_interposer::mmap(addr, len, prot, MAP_SHARED | keep, fd, off), len);
      }
    }
    return note_mapped(syscall_interposer::mmap(addr, len, prot, flags, fd, off), len);
  }
  void* note_mapped(void* p, std::size_t len) {
    if (p != MAP_FAILED) {
      std::lock_guard<std::mutex> g(lock);
      const auto b = reinterpret_cast<std::uintptr_t>(p);
      mapped_ranges.emplace_back(b, b + len);
    }
    return p;
  }
  /// Bytes that a successful mmap mapped and no munmap has covered since.
  std::size_t bytes_still_mapped() {
    std::lock_guard<std::mutex> g(lock);
    auto un = unmapped_ranges;
    std::sort(un.begin(), un.end());
    std::size_t left = 0;
    for (auto [b, e] : mapped_ranges) {
      std::uintptr_t at = b;
      for (auto [ub, ue] : un) {
        if (ue <= at || ub >= e) continue;
        if (ub > at) left += ub - at;
        at = std::max(at, ue);
        if (at >= e) break;
      }
      if (at < e) left += e - at;
    }
    return left;
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
      const auto b = reinterpret_cast<std::uintptr_t>(addr);
      unmapped_ranges.emplace_back(b, b + ((len + 4095) & ~std::size_t{4095}));
    }
    return syscall_interposer::munmap(addr, len);
  }
};

}  // namespace mdtest
