// SPDX-License-Identifier: MIT
// The consumer program every packaging test builds: maps a file, writes and
// persists a record, unmaps, and checks the bytes reached the file.
#include <mapdirect/mapdirect.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  const std::string path = std::string(argc > 1 ? argv[1] : ".") + "/consumer.dat";
  const char record[] = "mapdirect consumer record";
  {
    mapdirect::open_options o;
    o.create = true;
    o.size = 4096;
    auto m = mapdirect::direct_mapping::open(path, o);
    if (!m) {
      std::fprintf(stderr, "open %s: %s (%s)\n", path.c_str(), m.error().message().c_str(),
                   mapdirect::last_error_detail());
      return 1;
    }
    if (auto r = m.value().copy_persist(100, record, sizeof record); !r) {
      std::fprintf(stderr, "copy_persist: %s\n", r.error().message().c_str());
      return 1;
    }
    std::printf("mapped %s: mode %s, granularity %s\n", path.c_str(), mapdirect::to_string(m.value().mode()),
                mapdirect::to_string(m.value().store_granularity()));
    if (auto r = m.value().close(); !r) {
      std::fprintf(stderr, "close: %s\n", r.error().message().c_str());
      return 1;
    }
  }
  char back[sizeof record] = {};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  const bool ok = fd >= 0 && ::pread(fd, back, sizeof back, 100) == static_cast<ssize_t>(sizeof back) &&
                  std::memcmp(back, record, sizeof record) == 0;
  if (fd >= 0) ::close(fd);
  ::unlink(path.c_str());
  if (!ok) {
    std::fprintf(stderr, "record not found in the file after close\n");
    return 1;
  }
#ifdef CONSUMER_HAS_URING
  std::printf("mapdirect::uring available\n");
#endif
  std::printf("ok\n");
  return 0;
}
