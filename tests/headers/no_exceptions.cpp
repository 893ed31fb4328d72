// Built with -fno-exceptions: the whole API must compile and work without them.
#include <mapdirect/mapdirect.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main() {
  char path[] = "/var/tmp/mapdirect-noexc-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return 1;
  ::close(fd);
  mapdirect::open_options opts;
  opts.size = 8192;
  opts.grow = true;
  auto m = mapdirect::direct_mapping::open(path, opts);
  int rc = 0;
  if (!m) {
    std::fprintf(stderr, "open failed: %s (%s)\n", m.error().message().c_str(), mapdirect::last_error_detail());
    rc = 1;
  } else {
    const char msg[] = "no exceptions";
    if (!m.value().copy_persist(100, msg, sizeof msg)) rc = 2;
    if (std::string(reinterpret_cast<const char*>(m.value().data()) + 100) != msg) rc = 3;
    if (!m.value().close()) rc = 4;
  }
  ::unlink(path);
  if (rc == 0) std::puts("no_exceptions: ok");
  return rc;
}
