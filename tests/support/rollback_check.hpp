// What a failed call must leave behind (its rollback), checked the same way
// everywhere: the file's size and every byte, no mapping of it left, no
// descriptor leaked, no stray name in its directory.
//
//   const mdtest::rollback_witness before(mdtest::private_dir());
//   auto m = direct_mapping::open(path, options);   // made to fail
//   REQUIRE_FALSE(m);
//   before.check_nothing_left(interposer, path);
//   mdtest::check_file_holds(path, expected_bytes);
#pragma once

#include "catch.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mdtest {

/// Descriptors open in this process (a leaked one shows up here).
inline std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

/// The names in `dir`, sorted (a stray file, temporary or not, shows up here).
inline std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

/// Taken before a call that is made to fail; check_nothing_left() after it.
class rollback_witness {
 public:
  /// Now: the descriptors open in this process and, when `dir` is not empty,
  /// the names in that directory.
  explicit rollback_witness(std::string dir = {})
      : dir_(std::move(dir)),
        fds_(open_fd_count()),
        entries_(dir_.empty() ? std::vector<std::string>{} : dir_entries(dir_)) {}

  /// After the failed call: nothing `rec` saw mapped is still mapped, `path`
  /// (when not empty) is in no mapping of this process, no descriptor leaked,
  /// and the directory holds the names it held before.
  void check_nothing_left(recording_interposer& rec, const std::string& path = {}) const {
    CHECK(rec.bytes_still_mapped() == 0);
    if (!path.empty()) {
      INFO("mapped: " << path);
      CHECK_FALSE(path_is_mapped(path));
    }
    CHECK(open_fd_count() == fds_);
    if (!dir_.empty()) {
      INFO("names in " << dir_);
      CHECK(dir_entries(dir_) == entries_);
    }
  }

 private:
  std::string dir_;
  std::size_t fds_;
  std::vector<std::string> entries_;
};

/// The file open as `fd` holds exactly `bytes`: its size, and every byte
/// (reported as the offset of the first that differs, not two long strings).
inline void check_file_holds(int fd, const std::string& bytes) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(static_cast<std::uint64_t>(st.st_size) == bytes.size());
  std::string got(bytes.size(), '\0');
  const ssize_t n = got.empty() ? 0 : ::pread(fd, got.data(), got.size(), 0);
  got.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  const auto diff = std::mismatch(got.begin(), got.end(), bytes.begin(), bytes.end());
  const std::size_t first_difference = diff.first == got.end() && diff.second == bytes.end()
                                           ? std::string::npos
                                           : static_cast<std::size_t>(diff.second - bytes.begin());
  CHECK(first_difference == std::string::npos);
}

/// The file at `path` holds exactly `bytes` (see above).
inline void check_file_holds(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  INFO(path);
  REQUIRE(fd >= 0);
  check_file_holds(fd, bytes);
  ::close(fd);
}

}  // namespace mdtest
