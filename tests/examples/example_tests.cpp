// The examples as tools run on untrusted files, and seal_broker as a root
// program handing a file to a less-trusted worker (issue 20, issue 10 item 9).
//
// The tools are run as processes (ASan+UBSan builds of durable_log and kv,
// paths in $MDX_DURABLE_LOG, $MDX_KV, $MDX_SEAL_BROKER, set by ctest). Every
// crafted file is generated here, byte by byte, from the documented formats:
// no binary blobs. A run "survives" when it exits with one of the tool's own
// statuses (no signal, no sanitizer report) before a generous anti-hang alarm.
#include "catch.hpp"
#include "loopfs.hpp"
#include "test_support.hpp"

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

namespace {

using bytes = std::vector<unsigned char>;

// ---------------------------------------------------------------------------
// Running the tools
// ---------------------------------------------------------------------------
std::string tool(const char* var) {
  const char* p = std::getenv(var);
  return p ? p : "";
}

struct outcome_t {
  int status = -1;  // exit code, or 128 + signal
  std::string output;
  bool signaled() const { return status >= 128 || status < 0; }
  bool sanitizer() const {
    return output.find("Sanitizer") != std::string::npos || output.find("runtime error") != std::string::npos;
  }
};

// Runs argv with stdin from `input`, capturing stdout+stderr (the first MiB).
// The child gets an anti-hang alarm of `alarm_s` seconds (kept across exec).
// as_uid >= 0: the child drops to that user (and group, no supplementary
// groups) before exec, as an unprivileged reader would run the tool.
outcome_t run(const std::vector<std::string>& argv, const std::string& input = {}, unsigned alarm_s = 120,
              int as_uid = -1) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int out[2], in[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::alarm(alarm_s);
    if (as_uid >= 0 && (::setgroups(0, nullptr) != 0 || ::setgid(static_cast<gid_t>(as_uid)) != 0 ||
                        ::setuid(static_cast<uid_t>(as_uid)) != 0))
      ::_exit(126);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(in[0]);
  if (!input.empty()) (void)!::write(in[1], input.data(), input.size());
  ::close(in[1]);
  outcome_t o;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (o.output.size() < (1u << 20)) o.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return o;
}

// The tool handled the file: one of its own exit statuses, no sanitizer report.
void require_survived(const outcome_t& o, const std::string& what) {
  INFO(what << "\nexit status " << o.status << "\n" << o.output.substr(0, 4000));
  REQUIRE(!o.signaled());
  REQUIRE(o.status <= 3);
  REQUIRE(!o.sanitizer());
}

// A private scratch directory, removed (with its files) on destruction.
struct scratch_dir {
  std::string path;
  scratch_dir() {
    std::string t = mdtest::test_dir() + "/mdx-examples-XXXXXX";
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~scratch_dir() { (void)mdtest::run_command({"rm", "-rf", "--", path}); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

void write_file(const std::string& path, const bytes& b, mode_t mode = 0600) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
  REQUIRE(fd >= 0);
  if (!b.empty()) REQUIRE(::write(fd, b.data(), b.size()) == static_cast<ssize_t>(b.size()));
  ::close(fd);
}

bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.st_size);
}

// ---------------------------------------------------------------------------
// Formats (from examples/durable_log/main.cpp and examples/kv/main.cpp)
// ---------------------------------------------------------------------------
std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

template <class T>
void put(bytes& b, std::size_t off, T v) {
  if (b.size() < off + sizeof v) b.resize(off + sizeof v);
  std::memcpy(b.data() + off, &v, sizeof v);
}
template <class T>
T get(const bytes& b, std::size_t off) {
  T v{};
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

// durable_log: 4 KiB header area, then 8-byte aligned 32-byte record headers + payload.
constexpr std::size_t kLogHeader = 4096;
constexpr std::uint32_t kRecordMagic = 0x3152444D;

struct log_builder {
  bytes b;
  std::size_t off = kLogHeader;
  std::uint32_t prev = 0;
  std::uint64_t seq = 0;

  explicit log_builder(std::uint32_t seed = 0x1234567u) {
    b.assign(kLogHeader, 0);
    std::memcpy(b.data(), "MDWAL001", 8);
    put<std::uint32_t>(b, 8, 1);      // version
    put<std::uint32_t>(b, 12, 4096);  // header_size
    put<std::uint64_t>(b, 16, 0);     // capacity (not checked)
    put<std::uint32_t>(b, 24, seed);  // chain seed
    put<std::uint32_t>(b, 28, crc32c(0, b.data(), 28));
    prev = seed;
  }
  // Appends an intact text record; `pad` fills the alignment padding.
  std::size_t add(const std::string& payload, unsigned char pad = 0) {
    const std::size_t at = off;
    bytes h(32, 0);
    put<std::uint32_t>(h, 0, kRecordMagic);
    put<std::uint32_t>(h, 4, static_cast<std::uint32_t>(payload.size()));
    put<std::uint64_t>(h, 8, ++seq);
    put<std::uint32_t>(h, 16, prev);
    put<std::uint32_t>(h, 20, 0);           // flags: text
    put<std::uint32_t>(h, 24, 0xABCD0001);  // session
    std::uint32_t c = crc32c(0, h.data(), 28);
    c = crc32c(c, payload.data(), payload.size());
    put<std::uint32_t>(h, 28, c);
    prev = c;
    b.resize(at);
    b.insert(b.end(), h.begin(), h.end());
    b.insert(b.end(), payload.begin(), payload.end());
    while (b.size() % 8) b.push_back(pad);
    off = b.size();
    return at;
  }
};

// kv: 4 KiB header (magic, slots, crc), then slots of two 128-byte versions.
constexpr std::size_t kKvHeader = 4096;
constexpr std::size_t kKvSlot = 256;

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

bytes kv_header(std::uint64_t slots) {
  bytes b(kKvHeader, 0);
  std::memcpy(b.data(), "MDKV0001", 8);
  put<std::uint64_t>(b, 8, slots);
  put<std::uint32_t>(b, 16, crc32c(0, b.data(), 16));
  return b;
}

bytes kv_version(std::uint64_t seq, const std::string& key, const std::string& value, std::uint16_t klen_override = 0,
                 std::uint16_t vlen_override = 0) {
  bytes v(128, 0);
  put<std::uint64_t>(v, 0, seq);
  put<std::uint16_t>(v, 12, klen_override ? klen_override : static_cast<std::uint16_t>(key.size()));
  put<std::uint16_t>(v, 14, vlen_override ? vlen_override : static_cast<std::uint16_t>(value.size()));
  std::memcpy(v.data() + 16, key.data(), std::min<std::size_t>(key.size(), 48));
  std::memcpy(v.data() + 64, value.data(), std::min<std::size_t>(value.size(), 64));
  put<std::uint32_t>(v, 8, crc32c(0, v.data(), 128));  // crc computed with the field zero
  return v;
}

// A table of `slots` slots with `keys` placed where kv's linear probing puts them.
bytes kv_table(std::uint64_t slots, const std::vector<std::pair<std::string, std::string>>& keys) {
  bytes b = kv_header(slots);
  b.resize(kKvHeader + slots * kKvSlot, 0);
  for (const auto& kvp : keys) {
    for (std::uint64_t i = 0; i < slots; ++i) {
      const std::uint64_t at = (fnv1a(kvp.first) % slots + i) % slots;
      const std::size_t off = kKvHeader + at * kKvSlot;
      if (get<std::uint64_t>(b, off) != 0) continue;
      const bytes v = kv_version(1, kvp.first, kvp.second);
      std::copy(v.begin(), v.end(), b.begin() + static_cast<std::ptrdiff_t>(off));
      break;
    }
  }
  return b;
}

// Deterministic mutations: flip `n` bytes chosen by a seeded generator.
bytes mutate(bytes b, std::uint64_t seed, int n) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int i = 0; i < n && !b.empty(); ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[x % b.size()] ^= static_cast<unsigned char>((x >> 32) | 1);
  }
  return b;
}

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------
std::map<std::string, bytes> durable_log_corpus() {
  std::map<std::string, bytes> c;
  log_builder valid;
  for (int i = 0; i < 12; ++i)
    valid.add("record " + std::to_string(i) + std::string(static_cast<std::size_t>(i * 37), 'x'));
  valid.b.resize(3 * 4096, 0);
  c["valid"] = valid.b;
  // Size classes: every boundary the scan checks, and sizes not a multiple of 8.
  const std::size_t sizes[] = {0,    1,    7,    8,    31,   32,   4095, 4096, 4097, 4127,
                               4128, 4129, 4133, 4135, 5000, 8188, 8191, 8193, 12283};
  for (std::size_t size : sizes) {
    bytes b = valid.b;
    b.resize(size, 0);
    c["size-" + std::to_string(size)] = b;
  }
  // Truncated records: cut inside the header and inside the payload of record 3.
  {
    log_builder l;
    for (int i = 0; i < 3; ++i) l.add("abc" + std::to_string(i));
    const std::size_t r3 = l.add(std::string(300, 'p'));
    for (std::size_t cut : {r3 + 1, r3 + 20, r3 + 32, r3 + 33, r3 + 200, r3 + 331})
      c["truncated-" + std::to_string(cut)] = bytes(l.b.begin(), l.b.begin() + static_cast<std::ptrdiff_t>(cut));
  }
  // The last intact record ends where the file ends, the file size is not a
  // multiple of 8: its padding would lie past the mapping.
  for (std::size_t pages : {std::size_t{2}, std::size_t{3}, std::size_t{5}}) {
    log_builder l;
    const std::size_t size = pages * 4096 - 4;
    while (l.off + 32 + 100 + 200 < size) l.add(std::string(100, 'q'));
    l.add(std::string(size - l.off - 32, 'z'));
    REQUIRE(l.b.size() == size + 4);  // padded past the end...
    l.b.resize(size);                 // ...which the file does not hold
    c["exact-fit-" + std::to_string(pages)] = l.b;
  }
  // Huge and impossible length fields (header otherwise intact).
  for (std::uint32_t len :
       {0xFFFFFFFFu, 0x80000000u, 0x7FFFFFF0u, (1u << 20), (1u << 20) + 1, 4096u - 32, 4096u - 31}) {
    log_builder l;
    l.add("one");
    const std::size_t r = l.add("two");
    put<std::uint32_t>(l.b, r + 4, len);
    l.b.resize(2 * 4096, 0);
    char name[32];
    std::snprintf(name, sizeof name, "length-%08" PRIx32, len);
    c[name] = l.b;
  }
  // Wrapped and extreme counters.
  for (std::uint64_t seq : {std::uint64_t{0}, UINT64_MAX, UINT64_MAX - 1, std::uint64_t{1} << 63}) {
    log_builder l;
    l.seq = seq - 1;  // the first record gets `seq`
    l.add("first");
    l.add("second");  // seq + 1: wraps for UINT64_MAX
    l.b.resize(2 * 4096, 0);
    char name[40];
    std::snprintf(name, sizeof name, "seq-%016" PRIx64, seq);
    c[name] = l.b;
  }
  // Header variants.
  {
    bytes b = valid.b;
    put<std::uint64_t>(b, 16, UINT64_MAX);  // capacity (CRC now fails)
    c["header-capacity"] = b;
    b = valid.b;
    put<std::uint32_t>(b, 12, 0xFFFFFFFFu);  // header_size
    put<std::uint32_t>(b, 28, crc32c(0, b.data(), 28));
    c["header-size"] = b;
    b = valid.b;
    std::memset(b.data(), 0, 32);  // no header, records after it
    c["header-zero"] = b;
  }
  // Random mutations of the valid log.
  for (std::uint64_t s = 1; s <= 24; ++s)
    c["mutated-" + std::to_string(s)] = mutate(valid.b, s, 1 + static_cast<int>(s % 6));
  // Mutations restricted to the record headers (where lengths and offsets live).
  for (std::uint64_t s = 1; s <= 12; ++s) {
    bytes b = valid.b;
    const bytes part = mutate(bytes(b.begin() + 4096, b.begin() + 4096 + 64), s, 2);
    std::copy(part.begin(), part.end(), b.begin() + 4096);
    c["mutated-header-" + std::to_string(s)] = b;
  }
  return c;
}

std::map<std::string, bytes> kv_corpus() {
  std::map<std::string, bytes> c;
  const std::vector<std::pair<std::string, std::string>> keys = {{"k1", "v1"}, {"k2", "v2"}, {"k3", "v3"}};
  const bytes valid = kv_table(8, keys);
  c["valid"] = valid;
  const std::size_t sizes[] = {0,          1,          100,        4095,        4096,        4097,
                               4096 + 255, 4096 + 256, 4096 + 257, 4096 + 2047, 4096 + 2049, 4096 + 2304};
  for (std::size_t size : sizes) {
    bytes b = valid;
    b.resize(size, 0);
    c["size-" + std::to_string(size)] = b;
  }
  // Slot counts whose `header + slots * 256` wraps to the file's size.
  for (std::uint64_t slots : {(std::uint64_t{1} << 56) + 1, (std::uint64_t{1} << 56) + 8, std::uint64_t{1} << 56,
                              UINT64_MAX, (UINT64_MAX / 256) + 2}) {
    bytes b = valid;
    const bytes h = kv_header(slots);
    std::copy(h.begin(), h.begin() + 32, b.begin());
    char name[40];
    std::snprintf(name, sizeof name, "slots-%016" PRIx64, slots);
    c[name] = b;
  }
  // Versions with out-of-range fields and extreme sequence numbers, valid CRCs.
  auto with_slot0 = [&](const bytes& v0, const bytes& v1) {
    bytes b = kv_table(1, {});
    std::copy(v0.begin(), v0.end(), b.begin() + kKvHeader);
    std::copy(v1.begin(), v1.end(), b.begin() + kKvHeader + 128);
    return b;
  };
  c["klen-huge"] = with_slot0(kv_version(1, "k1", "v", 0xFFFF), bytes(128, 0));
  c["vlen-huge"] = with_slot0(kv_version(1, "k1", "v", 0, 0xFFFE), bytes(128, 0));
  c["vlen-65"] = with_slot0(kv_version(1, "k1", "v", 0, 65), bytes(128, 0));
  c["tombstone"] = with_slot0(kv_version(1, "k1", "", 0, 0xFFFF), bytes(128, 0));
  c["seq-max"] = with_slot0(kv_version(UINT64_MAX, "k1", "old"), bytes(128, 0));
  c["seq-max-both"] = with_slot0(kv_version(UINT64_MAX, "k1", "a"), kv_version(UINT64_MAX, "k1", "b"));
  c["seq-max-and-1"] = with_slot0(kv_version(UINT64_MAX, "k1", "a"), kv_version(1, "k1", "b"));
  for (std::uint64_t s = 1; s <= 24; ++s)
    c["mutated-" + std::to_string(s)] = mutate(valid, s, 1 + static_cast<int>(s % 5));
  return c;
}

bool have_tools() {
  for (const char* v : {"MDX_DURABLE_LOG", "MDX_KV", "MDX_SEAL_BROKER"})
    if (tool(v).empty() || ::access(tool(v).c_str(), X_OK) != 0) return false;
  return true;
}

#define REQUIRE_TOOLS()                                                                           \
  do {                                                                                            \
    if (!have_tools()) {                                                                          \
      WARN("skipped: MDX_DURABLE_LOG, MDX_KV and MDX_SEAL_BROKER must name the example binaries " \
           "(ctest sets them)");                                                                  \
      return;                                                                                     \
    }                                                                                             \
  } while (0)

}  // namespace

// ---------------------------------------------------------------------------
// Fuzz corpus
// ---------------------------------------------------------------------------
TEST_CASE("durable_log survives a corpus of crafted logs under ASan+UBSan", "[examples][durable_log][fuzz]") {
  REQUIRE_TOOLS();
  const std::string dl = tool("MDX_DURABLE_LOG");
  scratch_dir dir;
  for (const auto& [name, content] : durable_log_corpus()) {
    const std::string f = dir / name;
    write_file(f, content);
    require_survived(run({dl, "verify", f}), "verify " + name);
    require_survived(run({dl, "dump", f}), "dump " + name);
    REQUIRE(read_file(f) == content);  // read-only commands change nothing
    // Writers on the crafted file: stores stay inside the file, which keeps
    // its size (--size caps growth at the crafted size: the log may not grow;
    // a file under durable_log's 8 KiB minimum --size may grow to 8 KiB).
    write_file(f, content);
    const std::uint64_t capn = content.size() < 8192 ? 8192 : content.size();
    const std::string cap = std::to_string(capn);
    require_survived(run({dl, "write", f, "--count", "5", "--group", "2", "--size", cap}), "write " + name);
    if (content.size() >= 8192) REQUIRE(file_size(f) == content.size());
    else if (!content.empty()) REQUIRE(file_size(f) <= capn);
    if (content.size() > 0) require_survived(run({dl, "verify", f}), "verify after write " + name);
    write_file(f, content);
    require_survived(run({dl, "append", f}, "line one\nline two\n"), "append " + name);
    write_file(f, content);
    require_survived(run({dl, "recover", f}), "recover " + name);
  }
}

TEST_CASE("kv survives a corpus of crafted tables under ASan+UBSan", "[examples][kv][fuzz]") {
  REQUIRE_TOOLS();
  const std::string kv = tool("MDX_KV");
  scratch_dir dir;
  for (const auto& [name, content] : kv_corpus()) {
    const std::string f = dir / name;
    write_file(f, content);
    // 60 s: a wrapped slot count made check/list loop about 2^56 times.
    require_survived(run({kv, f, "check"}, {}, 60), "check " + name);
    require_survived(run({kv, f, "list"}, {}, 60), "list " + name);
    require_survived(run({kv, f, "get", "k1"}, {}, 60), "get " + name);
    require_survived(run({kv, f, "get", "absent"}, {}, 60), "get absent " + name);
    write_file(f, content);
    require_survived(run({kv, f, "put", "k1", "new"}, {}, 60), "put " + name);
    require_survived(run({kv, f, "del", "k2"}, {}, 60), "del " + name);
  }
}

// ---------------------------------------------------------------------------
// Crafted files with a precise expected outcome
// ---------------------------------------------------------------------------
TEST_CASE("durable_log write never stores past the end of a log whose size is not a multiple of 8",
          "[examples][durable_log]") {
  REQUIRE_TOOLS();
  const std::string dl = tool("MDX_DURABLE_LOG");
  scratch_dir dir;
  // One intact record ends exactly at the file's end (8188 bytes): its
  // padding, and so the next record's offset, lies past the mapping. The old
  // writer resumed there and stored records into whatever memory followed.
  log_builder l;
  l.add(std::string(8188 - kLogHeader - 32, 'z'));
  l.b.resize(8188);
  const std::string f = dir / "exact-fit.log";
  write_file(f, l.b);
  const outcome_t w = run({dl, "write", f, "--count", "2"});
  require_survived(w, "write");
  INFO(w.output);
  REQUIRE(w.status == 0);
  REQUIRE(file_size(f) == 8188);
  // Everything the writer acknowledged is in the file.
  const outcome_t v = run({dl, "verify", f, "--expect-last", "2"});
  INFO(v.output);
  REQUIRE(v.status == 0);
}

TEST_CASE("kv refuses a slot count that wraps header + slots * 256", "[examples][kv]") {
  REQUIRE_TOOLS();
  scratch_dir dir;
  bytes b = kv_table(1, {{"k1", "v1"}});
  const bytes h = kv_header((std::uint64_t{1} << 56) + 1);  // * 256 + 4096 wraps to 4352, the file's size
  std::copy(h.begin(), h.end(), b.begin());
  const std::string f = dir / "wrap.tbl";
  write_file(f, b);
  for (const char* cmd : {"check", "list"}) {
    const outcome_t o = run({tool("MDX_KV"), f, cmd}, {}, 60);
    INFO(cmd << ": status " << o.status << "\n" << o.output.substr(0, 2000));
    REQUIRE(o.status == 2);
    REQUIRE(o.output.find("not a kv table") != std::string::npos);
  }
}

TEST_CASE("kv put refuses an update whose sequence number would wrap", "[examples][kv]") {
  REQUIRE_TOOLS();
  const std::string kv = tool("MDX_KV");
  scratch_dir dir;
  bytes b = kv_table(1, {});
  const bytes v = kv_version(UINT64_MAX, "k1", "old");
  std::copy(v.begin(), v.end(), b.begin() + kKvHeader);
  const std::string f = dir / "seq.tbl";
  write_file(f, b);
  const outcome_t p = run({kv, f, "put", "k1", "new"});
  INFO(p.output);
  REQUIRE(p.status == 2);  // not "success" with the update lost
  REQUIRE(p.output.find("sequence numbers") != std::string::npos);
  const outcome_t g = run({kv, f, "get", "k1"});
  REQUIRE(g.status == 0);
  REQUIRE(g.output.find("old") != std::string::npos);
}

TEST_CASE("kv selftest follows nothing planted in its directory", "[examples][kv]") {
  REQUIRE_TOOLS();
  scratch_dir dir;
  scratch_dir elsewhere;
  const std::string secret = elsewhere / "root-only";
  const bytes content = {'s', 'e', 'c', 'r', 'e', 't', '\n'};
  write_file(secret, content, 0600);
  for (const char* name : {"kv-selftest.tbl", "kv-selftest.not"})
    REQUIRE(::symlink(secret.c_str(), (dir / name).c_str()) == 0);
  const outcome_t o = run({tool("MDX_KV"), "selftest", dir.path});
  INFO(o.output);
  REQUIRE(o.status == 0);
  REQUIRE(read_file(secret) == content);
  struct stat st {};
  REQUIRE(::lstat((dir / "kv-selftest.not").c_str(), &st) == 0);
  REQUIRE(S_ISLNK(st.st_mode));
}

// ---------------------------------------------------------------------------
// Concurrent mutation: another process flips length fields during dump/get
// ---------------------------------------------------------------------------
namespace {

// Forks a process that toggles `n` bytes at `off` of `path` between their
// value and `alt` until told to stop (bounded by `max_flips` and an alarm).
struct flipper {
  pid_t pid = -1;
  std::atomic<int>* stop = nullptr;
  flipper(const std::string& path, std::size_t off, const bytes& alt, long max_flips) {
    void* shared = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(shared != MAP_FAILED);
    stop = new (shared) std::atomic<int>(0);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    auto* m = static_cast<unsigned char*>(
        ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    REQUIRE(m != MAP_FAILED);
    ::close(fd);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::alarm(300);
      bytes orig(m + off, m + off + alt.size());
      for (long i = 0; i < max_flips && stop->load(std::memory_order_relaxed) == 0; ++i) {
        std::memcpy(m + off, alt.data(), alt.size());
        for (volatile int k = 0; k < 50; ++k) {
        }
        std::memcpy(m + off, orig.data(), orig.size());
        for (volatile int k = 0; k < 50; ++k) {
        }
      }
      std::memcpy(m + off, orig.data(), orig.size());
      ::_exit(0);
    }
    ::munmap(m, static_cast<std::size_t>(st.st_size));
  }
  ~flipper() {
    stop->store(1);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    ::munmap(stop, 4096);
  }
};

}  // namespace

TEST_CASE("durable_log dump survives a writer flipping length fields", "[examples][durable_log][concurrent]") {
  REQUIRE_TOOLS();
  scratch_dir dir;
  // Records packed with no NUL in their payloads, the file ending with the log.
  log_builder l;
  for (int i = 0; i < 400; ++i)
    l.add(std::string(static_cast<std::size_t>(24 + (i % 5) * 8), static_cast<char>('A' + i % 26)), 'P');
  l.b.resize((l.b.size() + 4095) / 4096 * 4096, 'P');
  const std::string f = dir / "flip.log";
  write_file(f, l.b);
  // Flip the length of a record near the end: 0x7FFFFFF0 sends an unchecked
  // offset 2 GiB past the mapping.
  std::size_t target = kLogHeader;
  for (int i = 0; i < 390; ++i) target += (32 + get<std::uint32_t>(l.b, target + 4) + 7) / 8 * 8;
  const bytes alt = {0xF0, 0xFF, 0xFF, 0x7F};
  flipper fl(f, target + 4, alt, 2000000000L);
  for (int i = 0; i < 60; ++i) require_survived(run({tool("MDX_DURABLE_LOG"), "dump", f}), "dump under mutation");
}

TEST_CASE("kv get survives a writer tearing the slot it reads", "[examples][kv][concurrent]") {
  REQUIRE_TOOLS();
  scratch_dir dir;
  bytes b = kv_table(1, {});
  const bytes v = kv_version(1, "k1", "value");
  std::copy(v.begin(), v.end(), b.begin() + kKvHeader);
  const std::string f = dir / "flip.tbl";
  write_file(f, b);
  // Toggle the version's CRC: valid when find() looks, torn when get() used to look again.
  const bytes alt = {static_cast<unsigned char>(v[8] ^ 1)};
  flipper fl(f, kKvHeader + 8, alt, 2000000000L);
  for (int i = 0; i < 150; ++i) {
    const outcome_t o = run({tool("MDX_KV"), f, "get", "k1"});
    require_survived(o, "get under mutation");
    REQUIRE((o.status == 0 || o.status == 1));
    if (o.status == 0) REQUIRE(o.output.find("value") != std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// A full file system (issue 10 item 9): clear errors, not SIGBUS
// ---------------------------------------------------------------------------
TEST_CASE("durable_log on a full ext4 exits with an error instead of dying of SIGBUS",
          "[examples][durable_log][enospc]") {
  REQUIRE_TOOLS();
  std::string why;
  mdtest::loopfs_options o;
  o.size = std::uint64_t{16} << 20;
  auto fs = mdtest::loopfs::create(o, why);
  if (!fs) {
    WARN("skipped: a 16 MiB loop-mounted ext4 is unavailable: " << why);
    return;
  }
  const std::string f = fs->path() + "/wal";
  // A sparse 64 MiB log on a 16 MiB file system: a store runs out of blocks.
  const outcome_t w = run({tool("MDX_DURABLE_LOG"), "write", f, "--size", "64M", "--count", "200000", "--group", "4"});
  INFO(w.output.substr(0, 4000));
  REQUIRE(w.status == 1);
  REQUIRE(!w.sanitizer());
  REQUIRE(w.output.find("cannot store record") != std::string::npos);
  REQUIRE(w.output.find("full") != std::string::npos);
  const outcome_t v = run({tool("MDX_DURABLE_LOG"), "verify", f});
  INFO(v.output.substr(0, 4000));
  REQUIRE(!v.signaled());
  REQUIRE(v.status <= 1);
  REQUIRE(v.output.find("recovered records=") != std::string::npos);
  REQUIRE(v.output.find("recovered records=0 ") == std::string::npos);
}

TEST_CASE("durable_log write and verify on a full tmpfs exit with an error instead of dying of SIGBUS",
          "[examples][durable_log][enospc]") {
  REQUIRE_TOOLS();
  if (::geteuid() != 0) {
    WARN("skipped: mounting a small tmpfs needs root");
    return;
  }
  scratch_dir dir;
  if (::mount("mdx-tmpfs", dir.path.c_str(), "tmpfs", 0, "size=2m") != 0) {
    WARN("skipped: mounting a 2 MiB tmpfs failed: " << std::strerror(errno));
    return;
  }
  struct unmount {
    std::string p;
    ~unmount() { (void)::umount2(p.c_str(), MNT_DETACH); }
  } u{dir.path};
  const std::string f = dir / "wal";
  const outcome_t w = run({tool("MDX_DURABLE_LOG"), "write", f, "--size", "8M", "--count", "200000"});
  INFO(w.output.substr(0, 4000));
  REQUIRE(w.status == 1);
  REQUIRE(!w.sanitizer());
  REQUIRE(w.output.find("cannot store record") != std::string::npos);
  // Reading a hole of a tmpfs file needs a page too: verify reports it.
  const outcome_t v = run({tool("MDX_DURABLE_LOG"), "verify", f});
  INFO(v.output.substr(0, 4000));
  REQUIRE(!v.signaled());
  REQUIRE(v.status <= 1);
  REQUIRE(v.output.find("recovered records=") != std::string::npos);
  const outcome_t d = run({tool("MDX_DURABLE_LOG"), "dump", f});
  REQUIRE(!d.signaled());
  REQUIRE(d.status <= 1);
}

// ---------------------------------------------------------------------------
// Read-only use (issue 12 item 1): the readers map read-only
// ---------------------------------------------------------------------------
namespace {
// A durable_log with records 1..n and a kv table holding k1=v1, k2=v2.
void make_readonly_fixtures(const std::string& log, const std::string& table, int n) {
  const outcome_t w = run({tool("MDX_DURABLE_LOG"), "write", log, "--count", std::to_string(n), "--size", "1M"});
  INFO(w.output);
  REQUIRE(w.status == 0);
  REQUIRE(run({tool("MDX_KV"), table, "init", "16"}).status == 0);
  REQUIRE(run({tool("MDX_KV"), table, "put", "k1", "v1"}).status == 0);
  REQUIRE(run({tool("MDX_KV"), table, "put", "k2", "v2"}).status == 0);
}

// Every reader command works; `as_uid` < 0 runs them as the caller.
void check_readers(const std::string& log, const std::string& table, int n, int as_uid) {
  const std::string dl = tool("MDX_DURABLE_LOG"), kv = tool("MDX_KV");
  const outcome_t v = run({dl, "verify", log, "--expect-last", std::to_string(n)}, {}, 120, as_uid);
  INFO("verify: " << v.output);
  CHECK(v.status == 0);
  CHECK(v.output.find("recovered records=" + std::to_string(n) + " ") != std::string::npos);
  const outcome_t d = run({dl, "dump", log}, {}, 120, as_uid);
  INFO("dump: " << d.output);
  CHECK(d.status == 0);
  CHECK(d.output.find("\n" + std::to_string(n) + "\t(") != std::string::npos);
  const outcome_t g = run({kv, table, "get", "k2"}, {}, 120, as_uid);
  INFO("get: " << g.output);
  CHECK(g.status == 0);
  CHECK(g.output.find("v2\n") != std::string::npos);
  const outcome_t c = run({kv, table, "check"}, {}, 120, as_uid);
  INFO("check: " << c.output);
  CHECK(c.status == 0);
  CHECK(c.output.find("live=2 torn=0 unreadable=0") != std::string::npos);
  const outcome_t l = run({kv, table, "list"}, {}, 120, as_uid);
  INFO("list: " << l.output);
  CHECK(l.status == 0);
  CHECK(l.output.find("k1") != std::string::npos);
  // The writers fail cleanly (no write access), never by a signal.
  const outcome_t p = run({kv, table, "put", "k3", "v3"}, {}, 120, as_uid);
  CHECK(!p.signaled());
  CHECK(p.status != 0);
  const outcome_t r = run({dl, "recover", log}, {}, 120, as_uid);
  CHECK(!r.signaled());
  CHECK(r.status != 0);
}
}  // namespace

TEST_CASE("durable_log verify/dump and kv get/check/list read a 0444 file owned by another user",
          "[examples][readonly]") {
  REQUIRE_TOOLS();
  if (::geteuid() != 0) {
    WARN("skipped: needs root (to chown the files to another user and run the readers as nobody)");
    return;
  }
  scratch_dir dir;
  REQUIRE(::chmod(dir.path.c_str(), 0755) == 0);  // a private, non-sticky directory nobody may enter
  const std::string log = dir / "ro.log", table = dir / "ro.kv";
  make_readonly_fixtures(log, table, 40);
  for (const std::string& f : {log, table}) {
    REQUIRE(::chown(f.c_str(), 1234, 1234) == 0);
    REQUIRE(::chmod(f.c_str(), 0444) == 0);
  }
  check_readers(log, table, 40, 65534);
  // Unchanged by any of it.
  const outcome_t v = run({tool("MDX_DURABLE_LOG"), "verify", log, "--expect-last", "40"});
  CHECK(v.status == 0);
}

TEST_CASE("durable_log verify/dump and kv get/check/list read files on a read-only loop mount",
          "[examples][readonly]") {
  REQUIRE_TOOLS();
  std::string why;
  mdtest::loopfs_options o;
  o.size = std::uint64_t{16} << 20;
  auto fs = mdtest::loopfs::create(o, why);
  if (!fs) {
    WARN("skipped: a loop-mounted ext4 is unavailable: " << why);
    return;
  }
  const std::string log = fs->path() + "/ro.log", table = fs->path() + "/ro.kv";
  make_readonly_fixtures(log, table, 25);
  REQUIRE(mdtest::run_command({"mount", "-o", "remount,ro", fs->path()}) == 0);
  check_readers(log, table, 25, -1);  // root: EROFS is what stopped the readers before
  REQUIRE(mdtest::run_command({"mount", "-o", "remount,rw", fs->path()}) == 0);
}

// ---------------------------------------------------------------------------
// durable_log grows its log in place up to --size (issue 12 item 2)
// ---------------------------------------------------------------------------
TEST_CASE("durable_log starts small, grows its sparse log on demand and stops at --size",
          "[examples][durable_log][grow]") {
  REQUIRE_TOOLS();
  const std::string dl = tool("MDX_DURABLE_LOG");
  scratch_dir dir;
  const std::string f = dir / "growing.log";
  // A few records: the log is created at 1 MiB, not at --size, and sparse.
  const outcome_t small = run({dl, "write", f, "--size", "64M", "--count", "10"});
  INFO(small.output);
  REQUIRE(small.status == 0);
  CHECK(file_size(f) == (std::uint64_t{1} << 20));
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK(static_cast<std::uint64_t>(st.st_blocks) * 512 < (std::uint64_t{1} << 20));
  // Past 1 MiB the log grows instead of reporting "full" (the old writer stopped here).
  const outcome_t more = run({dl, "write", f, "--size", "64M", "--count", "6000", "--group", "5"});
  INFO(more.output);
  REQUIRE(more.status == 0);
  CHECK(more.output.find("full") == std::string::npos);
  CHECK(file_size(f) > (std::uint64_t{1} << 20));
  CHECK(file_size(f) <= (std::uint64_t{64} << 20));
  const outcome_t v = run({dl, "verify", f, "--expect-last", "6010"});
  INFO(v.output);
  CHECK(v.status == 0);
  // The cap holds: at --size the log is full, and everything before is intact.
  const outcome_t capped = run({dl, "write", f, "--size", "6M", "--count", "100000"});
  INFO(capped.output);
  // (fewer records than --count asked for: exit 1, saying so)
  REQUIRE(capped.status == 1);
  CHECK(capped.output.find("log full at seq") != std::string::npos);
  CHECK(capped.output.find("of the 100000 records asked for were written") != std::string::npos);
  CHECK(file_size(f) == (std::uint64_t{6} << 20));
  const outcome_t v2 = run({dl, "verify", f});
  INFO(v2.output);
  CHECK(v2.status == 0);
  CHECK(v2.output.find("stop=torn") == std::string::npos);
}

// ---------------------------------------------------------------------------
// seal_broker: file creation and the worker's confinement
// ---------------------------------------------------------------------------
TEST_CASE("seal_broker refuses a planted symlink or hard link at DIR/seal_broker.log", "[examples][seal_broker]") {
  REQUIRE_TOOLS();
  scratch_dir dir;
  scratch_dir elsewhere;
  REQUIRE(::chmod(dir.path.c_str(), 01777) == 0);  // a shared directory, like /tmp
  const std::string secret = elsewhere / "root-only";
  const bytes content = {'r', 'o', 'o', 't', ' ', 'o', 'n', 'l', 'y', '\n'};
  write_file(secret, content, 0600);
  const std::string planted = dir / "seal_broker.log";
  SECTION("symlink") { REQUIRE(::symlink(secret.c_str(), planted.c_str()) == 0); }
  SECTION("hard link") { REQUIRE(::link(secret.c_str(), planted.c_str()) == 0); }
  const outcome_t o = run({tool("MDX_SEAL_BROKER"), dir.path});
  INFO(o.output);
  REQUIRE(o.status == 1);
  REQUIRE(o.output.find("already exists") != std::string::npos);
  REQUIRE(read_file(secret) == content);
  struct stat st {};
  REQUIRE(::stat(secret.c_str(), &st) == 0);
  REQUIRE((st.st_mode & 07777) == 0600);
  REQUIRE(st.st_uid == ::geteuid());
  REQUIRE(::lstat(planted.c_str(), &st) == 0);  // left where it was
}

TEST_CASE("seal_broker's worker has no terminal, descriptors, cwd, environment or privileges of its invoker",
          "[examples][seal_broker]") {
  REQUIRE_TOOLS();
  scratch_dir dir;
  scratch_dir secrets;
  const std::string secret = secrets / "shadow";
  write_file(secret, {'x'}, 0600);
  int out[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  const std::string slave = ::ptsname(master);
  const std::string broker = tool("MDX_SEAL_BROKER");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The invoker a careless admin provides: a root shell's terminal as its
    // controlling tty and stdin, a secret file left open, its own cwd and env.
    ::alarm(120);
    if (::setsid() < 0) ::_exit(120);
    const int tty = ::open(slave.c_str(), O_RDWR);  // becomes the controlling terminal
    if (tty < 0 || ::ioctl(tty, TIOCSCTTY, 0) != 0) ::_exit(121);
    ::dup2(tty, 0);
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    const int leak = ::open(secret.c_str(), O_RDONLY);  // not CLOEXEC: inherited
    if (leak < 0 || ::dup2(leak, 20) < 0) ::_exit(122);
    if (::chdir(secrets.path.c_str()) != 0) ::_exit(123);
    ::setenv("MDX_SECRET_TOKEN", "hunter2", 1);
    ::execl(broker.c_str(), broker.c_str(), "--self-check", dir.path.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string output;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  ::close(master);
  INFO(output);
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);
  std::map<std::string, std::vector<std::string>> seen;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    const std::string tag = "worker-check: ";
    if (line.rfind(tag, 0) != 0) continue;
    line.erase(0, tag.size());
    const auto sp = line.find(' ');
    seen[line.substr(0, sp)].push_back(sp == std::string::npos ? "" : line.substr(sp + 1));
  }
  auto one = [&](const std::string& key) {
    REQUIRE(seen[key].size() == 1);
    return seen[key][0];
  };
  CHECK(one("session_leader") == "yes");
  CHECK(one("ctty") == "none");    // open("/dev/tty") fails: TIOCSTI has no terminal to reach
  CHECK(one("tty_fds") == "0");    // not even the inherited stdin
  CHECK(one("fds") == "0,1,2,3");  // stdin, stdout, stderr, the socket; not fd 20
  CHECK(one("cwd") == "/");
  CHECK(one("env_count") == "1");
  CHECK(one("env").rfind("PATH=", 0) == 0);
  CHECK(output.find("hunter2") == std::string::npos);
  CHECK(one("no_new_privs") == "1");
  if (::geteuid() != 0) {
    WARN("skipped the uid/gid/capability checks: the worker drops privileges only when started as root");
    return;
  }
  // "UID euid EUID gid GID egid EGID groups N": nothing 0 but the group count.
  const std::string ids = one("uid");
  CHECK(ids.rfind("0 ", 0) != 0);
  CHECK(ids.find("id 0 ") == std::string::npos);
  CHECK(ids.substr(ids.size() - 9) == " groups 0");
  CHECK(one("setuid0") != "succeeded");
  CHECK(one("setgid0") != "succeeded");
  CHECK(one("caps") == "0000000000000000/0000000000000000");
}

// ---------------------------------------------------------------------------
// Bad input on the command line (issue 15): every case a clear error naming
// what was wrong and a non-zero exit, never a crash, a hang or a silent
// success, and nothing left on disk.
// ---------------------------------------------------------------------------
namespace {
struct bad_input {
  std::vector<std::string> args;  // after the tool; "@F" is replaced by a file path
  std::string input;              // standard input
  int status;                     // expected exit status
  std::string message;            // must appear in the output
};

void run_bad_inputs(const char* tool_var, const std::vector<bad_input>& cases) {
  const std::string exe = tool(tool_var);
  for (const auto& c : cases) {
    scratch_dir dir;
    const std::string f = dir / "f";
    std::vector<std::string> argv{exe};
    std::string shown;
    for (const auto& a : c.args) {
      argv.push_back(a == "@F" ? f : a);
      shown += " " + a;
    }
    const outcome_t o = run(argv, c.input, 60);
    INFO(tool_var << shown << "\nexit status " << o.status << "\n" << o.output.substr(0, 2000));
    REQUIRE(!o.sanitizer());
    CHECK(o.status == c.status);
    CHECK(o.output.find(c.message) != std::string::npos);
    // A refused command line creates nothing.
    if (c.status == 2) CHECK(::access(f.c_str(), F_OK) != 0);
  }
}
}  // namespace

TEST_CASE("durable_log: every bad command line is a short error naming the option", "[examples][cli]") {
  if (!have_tools()) return;
  run_bad_inputs(
      "MDX_DURABLE_LOG",
      {
          {{"write", "@F", "--count", "-5"}, "", 2, "--count: '-5' is not a non-negative whole number"},
          {{"write", "@F", "--count", "0"}, "", 2, "--count: '0' is too small"},
          {{"write", "@F", "--count", "1.5"}, "", 2, "--count: '1.5' is not a whole number"},
          {{"write", "@F", "--count", "18446744073709551616"}, "", 2, "--count: '18446744073709551616' is too large"},
          {{"write", "@F", "--size", "17179869184G"}, "", 2, "--size: '17179869184G' is too large"},
          {{"write", "@F", "--size", "18446744073709551615K"}, "", 2, "is too large"},
          {{"write", "@F", "--size", "4K"}, "", 2, "--size: '4K' is too small (at least 8192)"},
          {{"write", "@F", "--size", "12X"}, "", 2, "--size: '12X' is not a size"},
          {{"write", "@F", "--size", ""}, "", 2, "--size: '' is not a non-negative whole number"},
          {{"write", "@F", "--size"}, "", 2, "--size needs a value"},
          {{"write", "@F", "--group", "0"}, "", 2, "--group: '0' is too small"},
          {{"write", "@F", "--bogus"}, "", 2, "unknown option '--bogus'"},
          {{"write", "@F", "extra"}, "", 2, "unexpected argument 'extra'"},
          {{"write"}, "", 2, "write: missing FILE"},
          {{}, "", 2, "missing command"},
          {{"frobnicate", "@F"}, "", 2, "unknown command 'frobnicate'"},
          {{"verify", "@F", "--count", "3"}, "", 2, "--count is not an option of 'verify'"},
          {{"dump", "@F", "--size", "1M"}, "", 2, "--size is not an option of 'dump'"},
      });
  // --help and --version succeed and say what they are.
  const outcome_t h = run({tool("MDX_DURABLE_LOG"), "--help"});
  CHECK(h.status == 0);
  CHECK(h.output.find("usage: durable_log write") != std::string::npos);
  const outcome_t v = run({tool("MDX_DURABLE_LOG"), "--version"});
  CHECK(v.status == 0);
  CHECK(v.output.find("durable_log (mapdirect examples) ") == 0);
}

TEST_CASE("durable_log: a full log, a non-log and an over-long line are errors", "[examples][cli]") {
  if (!have_tools()) return;
  const std::string dl = tool("MDX_DURABLE_LOG");
  scratch_dir dir;
  // --count N into a log that fills first: exit 1, naming what was written.
  const outcome_t w = run({dl, "write", dir / "small", "--size", "8K", "--count", "100"});
  INFO(w.output);
  CHECK(w.status == 1);
  CHECK(w.output.find("of the 100 records asked for were written") != std::string::npos);
  CHECK(run({dl, "verify", dir / "small"}).status == 0);  // what it wrote is intact
  // Without --count, "until full" is what was asked: exit 0.
  CHECK(run({dl, "write", dir / "full", "--size", "8K"}).status == 0);
  // dump of a file that is not a log.
  write_file(dir / "text", bytes{'h', 'e', 'l', 'l', 'o', '\n'});
  bytes noise(9000);
  for (std::size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<unsigned char>(i * 131 + 7);
  write_file(dir / "noise", noise);
  for (const char* name : {"text", "noise"}) {
    const outcome_t d = run({dl, "dump", dir / name});
    INFO(name << ": " << d.output);
    CHECK(d.status == 1);
    CHECK(d.output.find("is not an intact durable_log log") != std::string::npos);
    CHECK(read_file(dir / name) == (std::string(name) == "text" ? bytes{'h', 'e', 'l', 'l', 'o', '\n'} : noise));
  }
  // append: a line over 1 MiB is refused, never cut; lines before it are kept.
  const std::string big(1100000, 'x');
  const outcome_t a = run({dl, "append", dir / "text.wal", "--size", "8M"}, "first\n" + big + "\nlast\n");
  INFO(a.output.substr(0, 2000));
  CHECK(a.status == 1);
  CHECK(a.output.find("line 2 is 1100000 bytes; a record holds at most 1048576") != std::string::npos);
  const outcome_t d = run({dl, "dump", dir / "text.wal"});
  CHECK(d.status == 0);
  CHECK(d.output.find("1\tfirst\n") != std::string::npos);
  CHECK(d.output.find("xxxx") == std::string::npos);
  CHECK(d.output.find("\tlast") == std::string::npos);
  CHECK(d.output.find("recovered records=1 ") != std::string::npos);
}

TEST_CASE("kv: every bad command line is a short error and changes nothing", "[examples][cli]") {
  if (!have_tools()) return;
  run_bad_inputs("MDX_KV", {
                               {{"@F", "init", "-5"}, "", 2, "SLOTS: '-5' is not a non-negative whole number"},
                               {{"@F", "init", "0"}, "", 2, "SLOTS: '0' is too small"},
                               {{"@F", "init", "99999999999999999999"}, "", 2, "is too large"},
                               {{"@F", "init", "16", "17"}, "", 2, "init: too many arguments"},
                               {{"@F", "put", "k"}, "", 2, "put: missing arguments"},
                               {{"@F", "get"}, "", 2, "get: missing arguments"},
                               {{"@F", "list", "x"}, "", 2, "list: too many arguments"},
                               {{"@F", "frob"}, "", 2, "unknown command 'frob'"},
                               {{"@F"}, "", 2, "missing command"},
                               {{}, "", 2, "missing FILE and command"},
                           });
  // An over-long key or value is refused before the table is touched.
  const std::string kv = tool("MDX_KV");
  scratch_dir dir;
  const std::string t = dir / "t";
  REQUIRE(run({kv, t, "init", "16"}).status == 0);
  REQUIRE(run({kv, t, "put", "k1", "v1"}).status == 0);
  const bytes before = read_file(t);
  const outcome_t k = run({kv, t, "put", std::string(47, 'k'), "v"});
  CHECK(k.status == 2);
  CHECK(k.output.find("KEY must hold 1 to 46 bytes (got 47)") != std::string::npos);
  const outcome_t v = run({kv, t, "put", "k2", std::string(65, 'v')});
  CHECK(v.status == 2);
  CHECK(v.output.find("VALUE holds at most 64 bytes (got 65)") != std::string::npos);
  CHECK(read_file(t) == before);
  CHECK(run({kv, "--version"}).output.find("kv (mapdirect examples) ") == 0);
}

TEST_CASE("mapdirect-info --json is valid JSON with every field, whatever the path's bytes", "[examples][cli]") {
  const std::string info = tool("MDX_INFO");
  if (info.empty() || !have_tools()) {
    WARN("skipped: MDX_INFO must name the mapdirect-info binary (set by ctest)");
    return;
  }
  if (mdtest::run_command({"python3", "-c", "pass"}) != 0) {
    WARN("skipped: needs python3 (its json module is the independent JSON parser)");
    return;
  }
  scratch_dir dir;
  // A name that is not UTF-8, with a quote, a backslash and a control byte.
  const std::string name = dir / std::string("bad\xff\xfe\"\\\x01name");
  write_file(name, bytes(8192, 0));
  const outcome_t o = run({info, "--json", name});
  INFO(o.output.substr(0, 4000));
  REQUIRE(o.status == 0);
  write_file(dir / "out.json", bytes(o.output.begin(), o.output.end()));
  // python3 parses it and checks the schema's fields and types.
  const std::string check =
      "import json,sys\n"
      "d=json.load(open(sys.argv[1],encoding='utf-8',errors='strict'))\n"
      "assert d['schema']=='mapdirect-info/1', d['schema']\n"
      "for k in ['tool_version','path','kernel_release','file_system','directory','writable','read_only_mount',"
      "'mode','granularity','mode_known','mode_inferred_read_only','ladder','ladder_text','map_sync',"
      "'map_sync_tested','untested','map_direct_configured','dax','persistence_domain','nd_regions',"
      "'flush_instruction','cache_line','io_uring','io_uring_detail','group_commit_backend']:\n"
      "  assert k in d, k\n"
      "assert d['path'].endswith('bad\\ufffd\\ufffd\"\\\\\\x01name'), repr(d['path'])\n"
      "assert isinstance(d['ladder'],list) and len(d['ladder'])>=2\n"
      "for r in d['ladder']:\n"
      "  assert set(r)=={'mode','attempted','errno','errno_name','cause'}, r\n"
      "  assert (r['errno']==0)==(r['errno_name'] is None), r\n"
      "assert d['mode'] in ('direct','sync','shared'), d['mode']\n"
      "assert d['group_commit_backend'] in ('io_uring','thread')\n";
  write_file(dir / "check.py", bytes(check.begin(), check.end()));
  const outcome_t p = run({"/usr/bin/python3", dir / "check.py", dir / "out.json"});
  INFO(p.output);
  CHECK(p.status == 0);
  // Bad usage.
  const outcome_t u = run({info, "--frob", name});
  CHECK(u.status == 2);
  CHECK(u.output.find("unknown option '--frob'") != std::string::npos);
  CHECK(run({info}).status == 2);
  CHECK(run({info, "--version"}).status == 0);
}
