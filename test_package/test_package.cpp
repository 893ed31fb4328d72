// Maps a small temporary file and reports what mapdirect obtained.
#include <mapdirect/mapdirect.hpp>

#include <cstdio>

int main() {
  auto report = mapdirect::probe("/tmp");
  if (!report) {
    std::printf("probe failed: %s\n", report.error().message().c_str());
    return 1;
  }
  std::printf("mapdirect %d.%d.%d: mode %s, granularity %s\n", MAPDIRECT_VERSION_MAJOR, MAPDIRECT_VERSION_MINOR,
              MAPDIRECT_VERSION_PATCH, mapdirect::to_string(report.value().mode),
              mapdirect::to_string(report.value().store_granularity));
  return 0;
}
