// mapdirect-info: what direct_mapping would give for a file or directory.
//
//   mapdirect-info PATH [--json]
//
// Prints the mode and store granularity map() would obtain there and why
// (every rung of the ladder with its errno), DAX, the nd persistence domain,
// the flush instruction, the kernel release and io_uring availability.
// PATH is looked at through an O_PATH descriptor first: only a regular file
// or a directory is ever opened for real (a FIFO, device or socket, also
// behind a symbolic link, is refused untouched), and a file that cannot be
// opened for writing (0444, another user's, a read-only mount) is probed with
// read-only mappings: the mode a writer would get is then shown as inferred,
// and whatever could not be tried is printed as "not tested (why)", never as
// a plain "no".
#include <mapdirect/mapdirect.hpp>

#include <cstdio>
#include <cstring>
#include <string>

namespace {
std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

const char* dax_text(const std::optional<bool>& dax) { return !dax ? "unknown" : *dax ? "yes" : "no"; }

void print_json(const char* path, const mapdirect::probe_report& r) {
  using mapdirect::to_string;
  std::printf("{\n");
  std::printf("  \"path\": \"%s\",\n", json_escape(path).c_str());
  std::printf("  \"kernel_release\": \"%s\",\n", json_escape(r.kernel_release).c_str());
  std::printf("  \"file_system\": \"%s\",\n", json_escape(r.file_system).c_str());
  std::printf("  \"directory\": %s,\n", r.directory ? "true" : "false");
  std::printf("  \"device_dax\": %s,\n", r.device_dax ? "true" : "false");
  std::printf("  \"device_size\": %llu,\n  \"device_align\": %llu,\n", static_cast<unsigned long long>(r.device_size),
              static_cast<unsigned long long>(r.device_align));
  const bool known = r.mode_known || r.mode_inferred;
  std::printf("  \"mode\": %s%s%s,\n", known ? "\"" : "", known ? to_string(r.mode) : "null", known ? "\"" : "");
  std::printf("  \"granularity\": %s%s%s,\n", known ? "\"" : "", known ? to_string(r.store_granularity) : "null",
              known ? "\"" : "");
  std::printf("  \"mode_inferred_read_only\": %s,\n", r.mode_inferred ? "true" : "false");
  std::printf("  \"writable\": %s,\n", r.writable ? "true" : "false");
  std::printf("  \"read_only_mount\": %s,\n", r.read_only_mount ? "true" : "false");
  std::printf("  \"ladder\": \"%s\",\n", json_escape(r.ladder).c_str());
  std::printf("  \"map_sync\": %s,\n", !r.map_sync_tested ? "null" : r.map_sync ? "true" : "false");
  std::printf("  \"untested\": \"%s\",\n", json_escape(r.untested).c_str());
  std::printf("  \"map_direct_configured\": %s,\n", r.map_direct_configured ? "true" : "false");
  std::printf("  \"dax\": %s,\n", !r.dax ? "null" : *r.dax ? "true" : "false");
  std::printf("  \"persistence_domain\": \"%s\",\n", to_string(r.persistence));
  std::printf("  \"nd_regions\": %d,\n", r.nd_regions);
  std::printf("  \"flush_instruction\": \"%s\",\n", to_string(r.flush));
  std::printf("  \"cache_line\": %zu,\n", r.cache_line);
  std::printf("  \"io_uring\": %s,\n", r.io_uring ? "true" : "false");
  std::printf("  \"io_uring_detail\": \"%s\"\n", json_escape(r.io_uring_detail).c_str());
  std::printf("}\n");
}

void print_table(const char* path, const mapdirect::probe_report& r) {
  using mapdirect::to_string;
  std::printf("%-20s %s\n", "path", path);
  std::printf("%-20s %s%s\n", "file system", r.file_system.c_str(), r.directory ? " (probed via a temporary file)" : "");
  std::printf("%-20s %s\n", "kernel", r.kernel_release.c_str());
  if (r.device_dax)
    std::printf("%-20s %llu bytes, align %llu (no page cache, no file-system metadata: MAP_SYNC not needed)\n",
                "device DAX", static_cast<unsigned long long>(r.device_size),
                static_cast<unsigned long long>(r.device_align));
  const char* inferred = r.mode_inferred ? " (what a writer would get; tested with a read-only mapping)" : "";
  const std::string not_tested = "not tested (" + (r.untested.empty() ? std::string("unknown reason") : r.untested) + ")";
  std::printf("%-20s %s\n", "writable",
              r.writable ? "yes" : r.read_only_mount ? "no (read-only mount)" : "no (not open for writing)");
  std::printf("%-20s %s%s\n", "mode", r.mode_known || r.mode_inferred ? to_string(r.mode) : "unknown",
              r.mode_known ? "" : r.mode_inferred ? inferred : (", " + not_tested).c_str());
  std::printf("%-20s %s%s\n", "store granularity",
              r.mode_known || r.mode_inferred ? to_string(r.store_granularity) : "unknown", inferred);
  if (r.map_sync_tested)
    std::printf("%-20s %s%s\n", "MAP_SYNC", r.map_sync ? "yes" : "no",
                r.mode_inferred ? " (tested with a read-only mapping)" : "");
  else
    std::printf("%-20s %s\n", "MAP_SYNC", not_tested.c_str());
  std::printf("%-20s %s\n", "MAP_DIRECT", r.map_direct_configured ? "configured in this build" : "not configured (never probed)");
  std::printf("%-20s %s\n", "DAX (statx)", dax_text(r.dax));
  std::printf("%-20s %s (%d nd region%s)\n", "persistence domain", to_string(r.persistence), r.nd_regions,
              r.nd_regions == 1 ? "" : "s");
  std::printf("%-20s %s (%zu-byte lines)\n", "flush instruction", to_string(r.flush), r.cache_line);
  std::printf("%-20s %s%s%s\n", "io_uring", r.io_uring ? "available" : "unavailable",
              r.io_uring_detail.empty() ? "" : ": ", r.io_uring_detail.c_str());
  std::printf("why:\n");
  std::string ladder = r.ladder;
  std::size_t start = 0;
  while (start < ladder.size()) {
    const std::size_t nl = ladder.find('\n', start);
    const std::size_t end = nl == std::string::npos ? ladder.size() : nl;
    std::printf("  %s\n", ladder.substr(start, end - start).c_str());
    start = end + 1;
  }
}
}  // namespace

int main(int argc, char** argv) {
  const char* path = nullptr;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) json = true;
    else if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      std::printf("usage: %s PATH [--json]\n", argv[0]);
      return 0;
    } else if (!path) path = argv[i];
    else {
      std::fprintf(stderr, "mapdirect-info: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!path) {
    std::fprintf(stderr, "usage: %s PATH [--json]\n", argv[0]);
    return 2;
  }
  auto report = mapdirect::probe(path);
  if (!report) {
    std::fprintf(stderr, "mapdirect-info: %s: %s (%s)\n", path, report.error().message().c_str(),
                 mapdirect::last_error_detail());
    return 1;
  }
  if (json) print_json(path, report.value());
  else print_table(path, report.value());
  return 0;
}
