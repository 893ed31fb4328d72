// Catch2 v2 main (v3 builds link Catch2::Catch2WithMain instead), plus a
// listener that appends every WARN (the suite's way of saying "skipped: why")
// to $MAPDIRECT_SKIP_LOG, one line "binary<TAB>test case<TAB>message", so
// that scripts/run-tests.sh can print the skips that ctest would hide.
#define CATCH_CONFIG_MAIN
#include "catch.hpp"

#include <cstdlib>
#include <string>

#include <fcntl.h>
#include <unistd.h>

namespace {
struct skip_log_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseStarting(Catch::TestCaseInfo const& info) override { test_name = info.name; }

  bool assertionEnded(Catch::AssertionStats const& stats) override {
    if (stats.assertionResult.getResultType() != Catch::ResultWas::Warning) return true;
    const char* path = std::getenv("MAPDIRECT_SKIP_LOG");
    if (!path || !*path) return true;
    std::string line = binary_name() + "\t" + test_name + "\t" + stats.assertionResult.getMessage();
    for (char& c : line)
      if (c == '\n') c = ' ';
    line += '\n';
    const int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      // One write with O_APPEND: lines of concurrent test processes do not interleave.
      (void)!::write(fd, line.data(), line.size());
      ::close(fd);
    }
    return true;
  }

  static std::string binary_name() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "?";
    const std::string exe(buf, static_cast<std::size_t>(n));
    return exe.substr(exe.rfind('/') + 1);
  }

  std::string test_name;
};
}  // namespace
CATCH_REGISTER_LISTENER(skip_log_listener)
