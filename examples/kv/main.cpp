// SPDX-License-Identifier: MIT
// kv: a small persistent hash table in a mapped file, showing mapdirect's
// copy_persist, iomap_seal and guarded reads working together.
//
//   kv FILE init [SLOTS]    create a table (default 1024 slots)
//   kv FILE put KEY VALUE   insert or replace (durable when it returns)
//   kv FILE get KEY         print the value; exit 1 when absent
//   kv FILE del KEY         delete (durable when it returns)
//   kv FILE list            print every live key and value
//   kv FILE check           scan every slot; report torn or unreadable ones
//                           (get, list and check map the table read-only:
//                           they work on a 0444 file or a read-only mount)
//   kv selftest DIR         exercise all of the above in a private directory
//                           created in DIR (mkdtemp; the ctest test)
//
// Layout: a 4 KiB header (magic, slot count, CRC), then SLOTS slots of two
// 128-byte versions each. An update writes the slot's older version with a
// higher sequence number and its own CRC, then persists it (copy_persist).
// Readers take the valid version with the highest sequence number, so a crash
// in the middle of an update leaves a torn version whose CRC fails, and the
// previous value survives. This works at every granularity mapdirect reports:
// copy_persist does what the mapping needs (a fence, cache-line flushes or
// msync) and returns only once the version is durable.
//
// The seal keeps the table's block map stable while it is mapped: no holes to
// allocate on a page fault (which would SIGBUS on a full file system) and no
// copy-on-write extents. Reads go through direct_mapping::read, so a poisoned
// or truncated page becomes an error naming the slot instead of a SIGBUS that
// kills the process.
//
// Limits, to stay small: keys up to 46 bytes, values up to 64; linear probing;
// a deleted key keeps its slot (reused only when the same key returns), so a
// table can fill up: "table full" then, and nothing changes.
#include <mapdirect/mapdirect.hpp>

#include <mapdirect/seal.hpp>

#include <boost/crc.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "../common/cli.hpp"

namespace md = mapdirect;

namespace {

constexpr std::size_t kHeaderSize = 4096;
constexpr std::size_t kMaxKey = 46;
constexpr std::size_t kMaxValue = 64;
constexpr std::uint16_t kTombstone = 0xFFFF;
constexpr char kMagic[8] = {'M', 'D', 'K', 'V', '0', '0', '0', '1'};

// CRC32C (Castagnoli, reflected), from Boost.CRC.
std::uint32_t crc32c(const void* data, std::size_t n) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> c;
  c.process_bytes(data, n);
  return c.checksum();
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

struct header {
  char magic[8];
  std::uint64_t slots;
  std::uint32_t crc;  // over the bytes before it
  std::uint32_t reserved;
};

// One version of a slot: exactly two cache lines.
struct version {
  std::uint64_t seq;  // 0: never written
  std::uint32_t crc;  // over every byte except this field
  std::uint16_t klen;
  std::uint16_t vlen;  // kTombstone: deleted
  char key[kMaxKey + 2];
  char value[kMaxValue];
};
static_assert(sizeof(version) == 128, "a version is two cache lines");
constexpr std::size_t kSlotSize = 2 * sizeof(version);

std::uint32_t version_crc(const version& v) {
  version copy = v;
  copy.crc = 0;
  return crc32c(&copy, sizeof copy);
}

int fail(const char* what, const std::error_code& ec) {
  std::fprintf(stderr, "kv: %s: %s", what, ec.message().c_str());
  const char* detail = md::last_error_detail();
  if (detail && *detail) std::fprintf(stderr, " (%s)", detail);
  std::fprintf(stderr, "\n");
  return 2;
}

// The state of one slot as read (under the guard) from the mapping.
struct slot_view {
  bool unreadable = false;  // the read faulted: media error, truncation, I/O error
  md::access_error error{};
  int current = -1;   // index of the valid version with the highest seq, or -1
  bool torn = false;  // a version was written (seq != 0) but its CRC fails
  version v[2]{};
};

class table {
 public:
  // Creates FILE with `slots` slots (fails if it exists) and returns it open.
  static int create(const std::string& path, std::uint64_t slots, table& out) {
    if (slots == 0 || slots > (std::uint64_t{1} << 24)) {
      std::fprintf(stderr, "kv: SLOTS must be between 1 and %llu\n", 1ull << 24);
      return 2;
    }
    md::open_options o;
    o.create = true;
    o.exclusive = true;
    o.size = kHeaderSize + slots * kSlotSize;
    auto m = md::direct_mapping::open(path, o);
    if (!m) return fail(("create " + path).c_str(), m.error());
    out.map_ = std::move(m).value();
    if (int rc = out.seal()) return rc;
    header h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.slots = slots;
    h.crc = crc32c(&h, offsetof(header, crc));
    // The slots are zero (seq 0 = empty) from the file's creation; the header
    // is written last, so a table without a valid header was never finished.
    if (auto r = out.map_.copy_persist(0, &h, sizeof h); !r) return fail("write header", r.error());
    out.slots_ = slots;
    return 0;
  }

  // Opens an existing table, checking its header. A reader (get, list,
  // check) maps it read-only and takes no seal: that works on a 0444 file,
  // another user's readable file and a read-only mount, and never changes it.
  static int open(const std::string& path, table& out, bool writable = true) {
    md::open_options o;
    if (!writable) o.map.access = md::map_access::read_only;
    auto m = md::direct_mapping::open(path, o);
    if (!m) return fail(("open " + path).c_str(), m.error());
    out.map_ = std::move(m).value();
    header h{};
    if (out.map_.size() < kHeaderSize) {
      std::fprintf(stderr, "kv: %s is too small to be a table\n", path.c_str());
      return 2;
    }
    if (auto r = out.map_.read(0, &h, sizeof h); !r) return fail("read header", r.error().code());
    // The file is untrusted input: compare the slot count with what the
    // mapping holds by division, so that a crafted count cannot wrap
    // `header + slots * 256` around to the file's size.
    const std::uint64_t room = out.map_.size() - kHeaderSize;
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.crc != crc32c(&h, offsetof(header, crc)) ||
        h.slots == 0 || room % kSlotSize != 0 || h.slots != room / kSlotSize) {
      std::fprintf(stderr, "kv: %s is not a kv table (bad magic, header CRC or size)\n", path.c_str());
      return 2;
    }
    out.slots_ = h.slots;
    return writable ? out.seal() : 0;
  }

  const md::direct_mapping& mapping() const { return map_; }
  const md::iomap_seal& block_seal() const { return seal_; }
  std::uint64_t slots() const { return slots_; }

  slot_view view(std::uint64_t slot) const {
    slot_view s;
    if (auto r = map_.read(slot_offset(slot), s.v, sizeof s.v); !r) {
      s.unreadable = true;
      s.error = r.error();
      return s;
    }
    for (int i = 0; i < 2; ++i) {
      if (s.v[i].seq == 0) continue;
      if (s.v[i].crc != version_crc(s.v[i]) || s.v[i].klen > kMaxKey ||
          (s.v[i].vlen > kMaxValue && s.v[i].vlen != kTombstone)) {
        s.torn = true;
        continue;
      }
      if (s.current < 0 || s.v[i].seq > s.v[s.current].seq) s.current = i;
    }
    return s;
  }

  // Finds the slot holding `key`, or the first never-used slot after it.
  // Returns 0 and sets found/slot, or an error code. `seen` receives the
  // copy of the slot that was examined: callers use it rather than reading
  // the mapping again, which another process may have changed in between.
  int find(std::string_view key, bool& found, std::uint64_t& slot, slot_view* seen = nullptr) const {
    const std::uint64_t start = fnv1a(key) % slots_;
    for (std::uint64_t i = 0; i < slots_; ++i) {
      const std::uint64_t at = (start + i) % slots_;
      const slot_view s = view(at);
      if (s.unreadable) {
        std::fprintf(stderr, "kv: slot %" PRIu64 " is unreadable: %s (bytes %" PRIu64 "+%zu of the file)\n", at,
                     s.error.message().c_str(), static_cast<std::uint64_t>(s.error.offset()), s.error.length());
        return 3;
      }
      if (s.current < 0) {
        if (s.torn) continue;  // a first write that never completed: the slot stays claimed
        found = false;
        slot = at;
        if (seen) *seen = s;
        return 0;
      }
      const version& v = s.v[s.current];
      if (std::string_view(v.key, v.klen) == key) {
        found = true;
        slot = at;
        if (seen) *seen = s;
        return 0;
      }
    }
    found = false;
    slot = slots_;  // full
    return 0;
  }

  // Writes a new version of `slot` (value == nullptr: tombstone), durably.
  int write(std::uint64_t slot, std::string_view key, const std::string_view* value) {
    const slot_view s = view(slot);
    if (s.unreadable) return fail("read slot", s.error.code());
    version v{};
    const int target = s.current < 0 ? 0 : 1 - s.current;
    const std::uint64_t last = s.current < 0 ? 0 : s.v[s.current].seq;
    if (last == UINT64_MAX) {
      // seq + 1 would wrap to 0, "never written": the update would be lost
      // while put reported success.
      std::fprintf(stderr, "kv: slot %" PRIu64 " has used up its sequence numbers; nothing changed\n", slot);
      return 2;
    }
    v.seq = last + 1;
    v.klen = static_cast<std::uint16_t>(key.size());
    std::memcpy(v.key, key.data(), key.size());
    if (value) {
      v.vlen = static_cast<std::uint16_t>(value->size());
      std::memcpy(v.value, value->data(), value->size());
    } else {
      v.vlen = kTombstone;
    }
    v.crc = version_crc(v);
    const std::size_t off = slot_offset(slot) + static_cast<std::size_t>(target) * sizeof(version);
    if (auto r = map_.copy_persist(off, &v, sizeof v); !r) return fail("persist", r.error());
    return 0;
  }

  // Writes a version that fails its CRC, as a crash in the middle of
  // copy_persist would leave it (for the self-test).
  int write_torn(std::uint64_t slot) {
    const slot_view s = view(slot);
    version v = s.current < 0 ? version{} : s.v[s.current];
    v.seq += 1;
    v.crc = version_crc(v) ^ 1u;
    std::memcpy(v.value, "torn!", 5);
    const int target = s.current < 0 ? 0 : 1 - s.current;
    const std::size_t off = slot_offset(slot) + static_cast<std::size_t>(target) * sizeof(version);
    if (auto r = map_.copy_persist(off, &v, sizeof v); !r) return fail("persist", r.error());
    return 0;
  }

 private:
  std::size_t slot_offset(std::uint64_t slot) const { return static_cast<std::size_t>(kHeaderSize + slot * kSlotSize); }

  // Seals the block map of the whole table. On tmpfs (no FIEMAP) the seal is
  // still taken (blocks allocated and synced) but cannot be verified.
  int seal() {
    md::seal_options so;
    so.allow_unverifiable = true;
    auto s = md::iomap_seal::acquire(map_.native_handle(), 0, 0, so);
    if (!s) return fail("seal the block map", s.error());
    seal_ = std::move(s).value();
    return 0;
  }

  md::direct_mapping map_;
  md::iomap_seal seal_;
  std::uint64_t slots_ = 0;
};

bool valid_key(std::string_view k) {
  if (k.empty() || k.size() > kMaxKey) {
    std::fprintf(stderr, "kv: a key must have 1 to %zu bytes\n", kMaxKey);
    return false;
  }
  return true;
}

int put(table& t, std::string_view key, std::string_view value) {
  if (!valid_key(key)) return 2;
  if (value.size() > kMaxValue) {
    std::fprintf(stderr, "kv: a value must have at most %zu bytes\n", kMaxValue);
    return 2;
  }
  bool found = false;
  std::uint64_t slot = 0;
  if (int rc = t.find(key, found, slot)) return rc;
  if (slot == t.slots()) {
    std::fprintf(stderr, "kv: table full (%" PRIu64 " slots); nothing changed\n", t.slots());
    return 2;
  }
  return t.write(slot, key, &value);
}

// 0: found (value set); 1: absent; other: error.
int get(const table& t, std::string_view key, std::string& value) {
  if (!valid_key(key)) return 2;
  bool found = false;
  std::uint64_t slot = 0;
  slot_view s;
  if (int rc = t.find(key, found, slot, &s)) return rc;
  if (!found || s.current < 0) return 1;
  // The copy find() validated, not a second read of the mapping.
  const version& v = s.v[s.current];
  if (v.vlen == kTombstone) return 1;
  value.assign(v.value, v.vlen);
  return 0;
}

int del(table& t, std::string_view key) {
  if (!valid_key(key)) return 2;
  bool found = false;
  std::uint64_t slot = 0;
  if (int rc = t.find(key, found, slot)) return rc;
  if (!found) return 1;
  return t.write(slot, key, nullptr);
}

// Returns the number of unreadable slots; counts live and torn ones.
std::uint64_t scan(const table& t, bool print, std::uint64_t& live, std::uint64_t& torn) {
  std::uint64_t bad = 0;
  live = torn = 0;
  for (std::uint64_t i = 0; i < t.slots(); ++i) {
    const slot_view s = t.view(i);
    if (s.unreadable) {
      ++bad;
      std::fprintf(stderr, "kv: slot %" PRIu64 ": %s\n", i, s.error.message().c_str());
      continue;
    }
    torn += s.torn ? 1 : 0;
    if (s.current < 0 || s.v[s.current].vlen == kTombstone) continue;
    ++live;
    if (print)
      std::printf("%.*s\t%.*s\n", static_cast<int>(s.v[s.current].klen), s.v[s.current].key,
                  static_cast<int>(s.v[s.current].vlen), s.v[s.current].value);
  }
  return bad;
}

void describe(const table& t) {
  if (t.mapping().access() == md::map_access::read_only) {
    std::fprintf(stderr, "kv: %" PRIu64 " slots; mapping %s, read-only (no seal)\n", t.slots(),
                 md::to_string(t.mapping().mode()));
    return;
  }
  std::fprintf(stderr, "kv: %" PRIu64 " slots; mapping %s, granularity %s; seal %s%s\n", t.slots(),
               md::to_string(t.mapping().mode()), md::to_string(t.mapping().store_granularity()),
               md::to_string(t.block_seal().kind()), t.block_seal().verified() ? " (verified)" : " (unverified)");
}

#define SELFTEST_CHECK(cond)                                                       \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::fprintf(stderr, "kv selftest: %s failed (line %d)\n", #cond, __LINE__); \
      return 1;                                                                    \
    }                                                                              \
  } while (0)

int selftest_in(const std::string& dir);

// The self-test may run as root in a shared directory: its files live in a
// fresh private directory (mkdtemp: unpredictable name, mode 0700) and are
// created exclusively, so nothing planted in DIR is followed or overwritten.
int selftest(const std::string& parent) {
  std::string tmpl = parent + "/kv-selftest.XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    std::fprintf(stderr, "kv selftest: mkdtemp in %s: %s\n", parent.c_str(), std::strerror(errno));
    return 1;
  }
  const int rc = selftest_in(tmpl);
  (void)::unlink((tmpl + "/kv-selftest.tbl").c_str());
  (void)::unlink((tmpl + "/kv-selftest.not").c_str());
  (void)::rmdir(tmpl.c_str());
  return rc;
}

int selftest_in(const std::string& dir) {
  const std::string path = dir + "/kv-selftest.tbl";
  {
    table t;
    SELFTEST_CHECK(table::create(path, 64, t) == 0);
    describe(t);
    for (int i = 0; i < 40; ++i) SELFTEST_CHECK(put(t, "key" + std::to_string(i), "value" + std::to_string(i)) == 0);
    for (int i = 0; i < 40; i += 2) SELFTEST_CHECK(put(t, "key" + std::to_string(i), "new" + std::to_string(i)) == 0);
    for (int i = 0; i < 40; i += 5) SELFTEST_CHECK(del(t, "key" + std::to_string(i)) == 0);
    SELFTEST_CHECK(put(t, std::string(kMaxKey + 1, 'k'), "x") == 2);  // rejected, nothing written
    SELFTEST_CHECK(put(t, "k", std::string(kMaxValue + 1, 'v')) == 2);
  }
  {
    table t;  // reopen: everything must have been durable
    SELFTEST_CHECK(table::open(path, t) == 0);
    std::string v;
    for (int i = 0; i < 40; ++i) {
      const int rc = get(t, "key" + std::to_string(i), v);
      if (i % 5 == 0) {
        SELFTEST_CHECK(rc == 1);
      } else {
        SELFTEST_CHECK(rc == 0);
        SELFTEST_CHECK(v == (i % 2 == 0 ? "new" : "value") + std::to_string(i));
      }
    }
    SELFTEST_CHECK(get(t, "absent", v) == 1);
    // A crash mid-update leaves a torn newer version: the old value survives.
    bool found = false;
    std::uint64_t slot = 0;
    SELFTEST_CHECK(t.find("key7", found, slot) == 0 && found);
    SELFTEST_CHECK(t.write_torn(slot) == 0);
    SELFTEST_CHECK(get(t, "key7", v) == 0 && v == "value7");
    std::uint64_t live = 0, torn = 0;
    SELFTEST_CHECK(scan(t, false, live, torn) == 0);
    SELFTEST_CHECK(live == 32 && torn == 1);
    SELFTEST_CHECK(put(t, "key7", "after") == 0);  // overwrites the torn version
    SELFTEST_CHECK(get(t, "key7", v) == 0 && v == "after");
    // Fill the table: the 65th distinct key finds no slot and changes nothing.
    for (int i = 40; i < 64 + 8; ++i) (void)put(t, "key" + std::to_string(i), "f");
    SELFTEST_CHECK(put(t, "one-too-many", "x") == 2);
    // Another program truncates the file under the mapping: reads past the
    // new end fault, and the guard turns each fault into an error for its slot.
    const int fd = ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    SELFTEST_CHECK(fd >= 0);
    SELFTEST_CHECK(::ftruncate(fd, static_cast<off_t>(kHeaderSize + 16 * kSlotSize)) == 0);
    ::close(fd);
    SELFTEST_CHECK(scan(t, false, live, torn) == 64 - 16);
    const slot_view gone = t.view(20);
    SELFTEST_CHECK(gone.unreadable && gone.error == md::errc::beyond_eof);
  }
  {
    // A file that is not a table is refused without being changed.
    const std::string other = dir + "/kv-selftest.not";
    const int fd = ::open(other.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    SELFTEST_CHECK(fd >= 0);
    SELFTEST_CHECK(::ftruncate(fd, 8192) == 0);
    ::close(fd);
    table t;
    SELFTEST_CHECK(table::open(other, t) == 2);
    ::unlink(other.c_str());
  }
  std::printf("kv selftest: ok\n");
  return 0;
}

[[noreturn]] void help() {
  std::printf("usage: kv FILE init [SLOTS]    create a table (SLOTS from 1 to 16777216, default 1024)\n"
              "       kv FILE put KEY VALUE   insert or replace (durable when it returns)\n"
              "       kv FILE get KEY         print the value; exit 1 when absent\n"
              "       kv FILE del KEY         delete (durable when it returns)\n"
              "       kv FILE list            print every live key and value\n"
              "       kv FILE check           scan every slot; report torn or unreadable ones\n"
              "       kv selftest DIR         exercise all of the above in a private directory in DIR\n"
              "       kv --help | --version\n"
              "Keys hold 1 to %zu bytes, values up to %zu. Exit status: 0 ok, 1 absent or refused, 2 bad usage,\n"
              "3 unreadable or torn slots.\n",
              kMaxKey, kMaxValue);
  std::exit(0);
}

// Exits 2 unless argc is exactly `want` for `cmd`.
void expect_args(int argc, int want, const char* cmd, const char* form) {
  if (argc < want) mdx::usage_error("%s: missing arguments (kv FILE %s)", cmd, form);
  if (argc > want) mdx::usage_error("%s: too many arguments (kv FILE %s)", cmd, form);
}

}  // namespace

int main(int argc, char** argv) {
  mdx::program_name() = "kv";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) help();
    if (std::strcmp(argv[i], "--version") == 0) mdx::print_version();
  }
  if (argc < 2) mdx::usage_error("missing FILE and command");
  if (argc < 3) mdx::usage_error("missing command (init, put, get, del, list or check)");
  const std::string first = argv[1];
  const std::string cmd = argv[2];
  if (first == "selftest") {
    expect_args(argc, 3, "selftest", "DIR");
    return selftest(cmd);
  }
  if (cmd == "init") {
    if (argc > 4) mdx::usage_error("init: too many arguments (kv FILE init [SLOTS])");
    const std::uint64_t slots = argc > 3 ? mdx::parse_number("SLOTS", argv[3], 1, std::uint64_t{1} << 24) : 1024;
    table t;
    if (int rc = table::create(first, slots, t)) return rc;
    describe(t);
    return 0;
  }
  if (cmd == "put") expect_args(argc, 5, "put", "put KEY VALUE");
  else if (cmd == "get") expect_args(argc, 4, "get", "get KEY");
  else if (cmd == "del") expect_args(argc, 4, "del", "del KEY");
  else if (cmd == "list") expect_args(argc, 3, "list", "list");
  else if (cmd == "check") expect_args(argc, 3, "check", "check");
  else mdx::usage_error("unknown command '%s' (init, put, get, del, list, check or selftest)", cmd.c_str());
  // Keys and values are checked before the table is opened: bad input changes nothing.
  if (argc > 3 && (std::strlen(argv[3]) == 0 || std::strlen(argv[3]) > kMaxKey))
    mdx::usage_error("%s: KEY must hold 1 to %zu bytes (got %zu)", cmd.c_str(), kMaxKey, std::strlen(argv[3]));
  if (argc > 4 && std::strlen(argv[4]) > kMaxValue)
    mdx::usage_error("put: VALUE holds at most %zu bytes (got %zu)", kMaxValue, std::strlen(argv[4]));
  table t;
  const bool reader = cmd == "get" || cmd == "list" || cmd == "check";
  if (int rc = table::open(first, t, !reader)) return rc;
  if (cmd == "put") return put(t, argv[3], argv[4]);
  if (cmd == "get") {
    std::string v;
    const int rc = get(t, argv[3], v);
    if (rc == 0) std::printf("%s\n", v.c_str());
    return rc;
  }
  if (cmd == "del") return del(t, argv[3]);
  std::uint64_t live = 0, torn = 0;
  if (cmd == "list") return scan(t, true, live, torn) ? 3 : 0;
  describe(t);
  const std::uint64_t bad = scan(t, false, live, torn);
  std::printf("slots=%" PRIu64 " live=%" PRIu64 " torn=%" PRIu64 " unreadable=%" PRIu64 "\n", t.slots(), live, torn,
              bad);
  return bad ? 3 : 0;
}
