// mapdirect-info: what direct_mapping would give for a file or directory.
//
//   mapdirect-info [--json] PATH
//   mapdirect-info --help | --version
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
//
// --json prints one JSON object (schema "mapdirect-info/1", see
// kJsonSchema): every probe_report field, the ladder as an array of
// {mode, attempted, errno, errno_name, cause}, and strings escaped so that
// the output is valid UTF-8 JSON whatever bytes the path holds (invalid
// UTF-8 becomes U+FFFD). Exit status: 0 ok, 1 probe failed, 2 bad usage.
#include <mapdirect/mapdirect.hpp>

#include <getopt.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "../common/cli.hpp"

namespace {
constexpr const char* kJsonSchema = "mapdirect-info/1";

// Length of the valid UTF-8 sequence at s[i..n), 0 if it is not one
// (overlong forms, surrogates and code points past U+10FFFF included).
std::size_t utf8_sequence(const unsigned char* s, std::size_t i, std::size_t n) {
  const unsigned char c = s[i];
  std::size_t len;
  std::uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1Fu;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0Fu;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07u;
  else return 0;
  if (n - i < len) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    if ((s[i + k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i + k] & 0x3Fu);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return len;
}

// A JSON string literal (with quotes) for arbitrary bytes.
std::string json_string(const std::string& in) {
  std::string out = "\"";
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  const std::size_t n = in.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    if (c == '"') out += "\\\"", ++i;
    else if (c == '\\') out += "\\\\", ++i;
    else if (c == '\n') out += "\\n", ++i;
    else if (c == '\t') out += "\\t", ++i;
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
    } else if (const std::size_t len = utf8_sequence(s, i, n)) {
      out.append(in, i, len);
      i += len;
    } else {
      out += "\\ufffd";  // not UTF-8: JSON text must be
      ++i;
    }
  }
  return out + "\"";
}
std::string json_string(const char* s) { return json_string(std::string(s ? s : "")); }

const char* json_bool(bool b) { return b ? "true" : "false"; }

const char* dax_text(const std::optional<bool>& dax) { return !dax ? "unknown" : *dax ? "yes" : "no"; }

void print_json(const char* path, const mapdirect::probe_report& r) {
  using mapdirect::to_string;
  const bool known = r.mode_known || r.mode_inferred;
  std::printf("{\n");
  std::printf("  \"schema\": %s,\n", json_string(kJsonSchema).c_str());
  std::printf("  \"tool_version\": %s,\n", json_string(MAPDIRECT_EXAMPLES_VERSION).c_str());
  std::printf("  \"path\": %s,\n", json_string(path).c_str());
  std::printf("  \"kernel_release\": %s,\n", json_string(r.kernel_release).c_str());
  std::printf("  \"file_system\": %s,\n", json_string(r.file_system).c_str());
  std::printf("  \"directory\": %s,\n", json_bool(r.directory));
  std::printf("  \"device_dax\": %s,\n", json_bool(r.device_dax));
  std::printf("  \"device_size\": %llu,\n  \"device_align\": %llu,\n", static_cast<unsigned long long>(r.device_size),
              static_cast<unsigned long long>(r.device_align));
  std::printf("  \"writable\": %s,\n", json_bool(r.writable));
  std::printf("  \"read_only_mount\": %s,\n", json_bool(r.read_only_mount));
  std::printf("  \"mode\": %s,\n", known ? json_string(to_string(r.mode)).c_str() : "null");
  std::printf("  \"granularity\": %s,\n", known ? json_string(to_string(r.store_granularity)).c_str() : "null");
  std::printf("  \"mode_known\": %s,\n", json_bool(r.mode_known));
  std::printf("  \"mode_inferred_read_only\": %s,\n", json_bool(r.mode_inferred));
  std::printf("  \"ladder\": [");
  for (std::size_t i = 0; i < r.rungs.count; ++i) {
    const auto& a = r.rungs.steps[i];
    std::printf("%s\n    {\"mode\": %s, \"attempted\": %s, \"errno\": %d, \"errno_name\": %s, \"cause\": %s}",
                i ? "," : "", json_string(to_string(a.mode)).c_str(), json_bool(a.attempted), a.error,
                a.error ? json_string(mapdirect::detail::errno_name(a.error)).c_str() : "null",
                json_string(a.cause).c_str());
  }
  std::printf("%s],\n", r.rungs.count ? "\n  " : "");
  std::printf("  \"ladder_text\": %s,\n", json_string(r.ladder).c_str());
  std::printf("  \"map_sync\": %s,\n", !r.map_sync_tested ? "null" : json_bool(r.map_sync));
  std::printf("  \"map_sync_tested\": %s,\n", json_bool(r.map_sync_tested));
  std::printf("  \"untested\": %s,\n", r.untested.empty() ? "null" : json_string(r.untested).c_str());
  std::printf("  \"map_direct_configured\": %s,\n", json_bool(r.map_direct_configured));
  std::printf("  \"dax\": %s,\n", !r.dax ? "null" : json_bool(*r.dax));
  std::printf("  \"persistence_domain\": %s,\n", json_string(to_string(r.persistence)).c_str());
  std::printf("  \"nd_regions\": %d,\n", r.nd_regions);
  std::printf("  \"flush_instruction\": %s,\n", json_string(to_string(r.flush)).c_str());
  std::printf("  \"cache_line\": %zu,\n", r.cache_line);
  std::printf("  \"io_uring\": %s,\n", json_bool(r.io_uring));
  std::printf("  \"io_uring_detail\": %s,\n",
              r.io_uring_detail.empty() ? "null" : json_string(r.io_uring_detail).c_str());
  std::printf("  \"group_commit_backend\": %s\n", json_string(r.group_commit_backend).c_str());
  std::printf("}\n");
}

void print_table(const char* path, const mapdirect::probe_report& r) {
  using mapdirect::to_string;
  std::printf("%-20s %s\n", "path", path);
  std::printf("%-20s %s%s\n", "file system", r.file_system.c_str(),
              r.directory ? " (probed via a temporary file)" : "");
  std::printf("%-20s %s\n", "kernel", r.kernel_release.c_str());
  if (r.device_dax)
    std::printf("%-20s %llu bytes, align %llu (no page cache, no file-system metadata: MAP_SYNC not needed)\n",
                "device DAX", static_cast<unsigned long long>(r.device_size),
                static_cast<unsigned long long>(r.device_align));
  const char* inferred = r.mode_inferred ? " (what a writer would get; tested with a read-only mapping)" : "";
  const std::string not_tested =
      "not tested (" + (r.untested.empty() ? std::string("unknown reason") : r.untested) + ")";
  std::printf("%-20s %s\n", "writable",
              r.writable          ? "yes"
              : r.read_only_mount ? "no (read-only mount)"
                                  : "no (not open for writing)");
  std::printf("%-20s %s%s\n", "mode", r.mode_known || r.mode_inferred ? to_string(r.mode) : "unknown",
              r.mode_known      ? ""
              : r.mode_inferred ? inferred
                                : (", " + not_tested).c_str());
  std::printf("%-20s %s%s\n", "store granularity",
              r.mode_known || r.mode_inferred ? to_string(r.store_granularity) : "unknown", inferred);
  if (r.map_sync_tested)
    std::printf("%-20s %s%s\n", "MAP_SYNC", r.map_sync ? "yes" : "no",
                r.mode_inferred ? " (tested with a read-only mapping)" : "");
  else std::printf("%-20s %s\n", "MAP_SYNC", not_tested.c_str());
  std::printf("%-20s %s\n", "MAP_DIRECT",
              r.map_direct_configured ? "configured in this build" : "not configured (never probed)");
  std::printf("%-20s %s\n", "DAX (statx)", dax_text(r.dax));
  std::printf("%-20s %s (%d nd region%s)\n", "persistence domain", to_string(r.persistence), r.nd_regions,
              r.nd_regions == 1 ? "" : "s");
  std::printf("%-20s %s (%zu-byte lines)\n", "flush instruction", to_string(r.flush), r.cache_line);
  std::printf("%-20s %s%s%s\n", "io_uring", r.io_uring ? "available" : "unavailable",
              r.io_uring_detail.empty() ? "" : ": ", r.io_uring_detail.c_str());
  std::printf("%-20s %s\n", "group commit", r.group_commit_backend.c_str());
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
  mdx::program_name() = "mapdirect-info";
  static const struct option longopts[] = {{"json", no_argument, nullptr, 'j'},
                                           {"help", no_argument, nullptr, 'h'},
                                           {"version", no_argument, nullptr, 'V'},
                                           {nullptr, 0, nullptr, 0}};
  bool json = false;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":h", longopts, nullptr)) != -1) {
    switch (c) {
      case 'j': json = true; break;
      case 'h':
        std::printf("usage: mapdirect-info [--json] PATH\n"
                    "What direct_mapping would give for the file PATH, or for a new file in the directory\n"
                    "PATH: mode, store granularity, every rung of the ladder and why, DAX, persistence\n"
                    "domain, flush instruction, io_uring. --json: one JSON object (schema %s).\n",
                    kJsonSchema);
        return 0;
      case 'V': mdx::print_version();
      default: mdx::usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc) mdx::usage_error("missing PATH");
  const char* path = argv[optind++];
  if (optind < argc) mdx::usage_error("unexpected argument '%s'", argv[optind]);
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
