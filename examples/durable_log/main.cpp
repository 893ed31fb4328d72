// durable_log: an append-only write-ahead log on a file mapped with
// mapdirect::direct_mapping.
//
// Each record is checksummed (CRC32C) and carries a sequence number; a record
// is acknowledged only after persist() has returned for it, so an
// acknowledged record survives a crash or power loss. Recovery scans from the
// start and stops at the first record that is missing or torn.
//
//   durable_log write  FILE [--size BYTES] [--count N] [--group N] [--print-acks] [--seed S]
//                     [--unsafe-cpu-flush-only]
//       Appends synthetic records (content derived from the sequence number,
//       so verify can check it) forever or N times, persisting every
//       record (--group 1) or every N records with a single persist.
//   durable_log append FILE [--size BYTES] [--group N] [--print-acks]
//       Appends one record per line of standard input.
//   durable_log verify FILE [--expect-last N]
//       Read-only scan; prints "recovered records=... last_seq=... stop=...".
//       Exits 1 if the log is corrupt before its tail, or ends before N.
//   durable_log recover FILE
//       As verify, then clears a torn tail so the next scan ends cleanly.
//   durable_log dump FILE
//       Prints every intact record.
//
// --size BYTES is the log's maximum size (default 64M). A new log is created
// sparse with min(BYTES, 1 MiB) and grows in place on demand
// (direct_mapping::grow inside address space reserved up to BYTES: records
// never move, the file stays sparse) until BYTES; only then is it "full". An
// existing log keeps its size and grows the same way up to BYTES.
// verify and dump map the log read-only (map_access::read_only): they work
// on a 0444 file, another user's readable log and a read-only mount.
//
// The log is untrusted input: every read of the mapping is a guarded copy
// (direct_mapping::read) into a local buffer that is validated and then used
// (never read twice), and every length and offset from the file is checked
// against the mapping, padding included. Stores are guarded too
// (direct_mapping::write): on a full file system the first store to a page
// of this sparse file cannot get a block; write/append then make the records
// before it durable and exit 1 with "cannot store record seq N ...", and a
// read that faults makes verify/dump/recover exit 1 with "cannot read offset
// ..." instead of dying of SIGBUS.
//
// --unsafe-cpu-flush-only replaces persist() by a CPU cache flush of the
// record, which is what a library that ignores the mapping mode would do. It
// is correct only for map_mode::sync; on a page-granular mapping (virtio-pmem,
// ordinary disks) block allocations and page-cache data are then never made
// durable, and the power-loss test (tests/vm/run.sh --negative-control) shows
// acknowledged records being lost. Never use it for real data.
//
// --print-acks prints "ack <seq>" on stdout for each record once it is
// durable. tests/vm/run.sh uses this on the serial console of a QEMU guest,
// kills the guest at random moments and checks that every acknowledged record
// is recovered.
//
// File layout (all integers little-endian, as x86-64/aarch64 store them):
//
//   [0, 4096)   file header: magic, version, capacity, chain seed, CRC32C
//   [4096, ..)  records, each 8-byte aligned:
//               record_header (32 bytes) + payload (length bytes) + padding
//
// Every record's header holds the CRC of the previous record (prev_crc; the
// chain seed for the first), and its own CRC covers header and payload. After
// a crash the writer resumes right after the last intact record and
// overwrites the torn one. Stale records further on, left from before the
// crash, must never come back: each writer session stamps its records with a
// random session number (covered by the CRC), so even a rewritten record with
// the same sequence number and payload differs from the stale one, and the
// stale record after it no longer chains to its predecessor.
#include <mapdirect/mapdirect.hpp>

#include <boost/crc.hpp>

#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "../common/cli.hpp"

namespace {

// ---------------------------------------------------------------------------
// CRC32C (Castagnoli, reflected, as iSCSI and ext4 use it), from Boost.CRC.
// ---------------------------------------------------------------------------
using crc32c_engine = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

std::uint32_t crc32c(const void* data, std::size_t n) {
  crc32c_engine c;
  c.process_bytes(data, n);
  return c.checksum();
}

// ---------------------------------------------------------------------------
// On-media format
// ---------------------------------------------------------------------------
constexpr char kFileMagic[8] = {'M', 'D', 'W', 'A', 'L', '0', '0', '1'};
constexpr std::uint32_t kRecordMagic = 0x3152444D;  // "MDR1"
constexpr std::size_t kHeaderArea = 4096;           // records start here
constexpr std::size_t kAlign = 8;
constexpr std::uint32_t kMaxPayload = 1u << 20;
constexpr std::uint32_t kFlagSynthetic = 1;       // payload = synthetic_byte(seq, i)
constexpr std::uint64_t kInitialSize = 1u << 20;  // a new log starts this small (or --size if smaller)

struct file_header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_size;  // == kHeaderArea
  std::uint64_t capacity;     // file size when created (the log grows later; informational)
  std::uint32_t chain_seed;   // prev_crc of the first record
  std::uint32_t crc;          // CRC32C of the bytes before this field
};
static_assert(sizeof(file_header) == 32, "file_header layout");

struct record_header {
  std::uint32_t magic;     // kRecordMagic
  std::uint32_t length;    // payload bytes
  std::uint64_t seq;       // 1, 2, 3, ... without gaps
  std::uint32_t prev_crc;  // crc of the previous record (chain)
  std::uint32_t flags;     // kFlagSynthetic, ...
  std::uint32_t session;   // random per writer session (see below)
  std::uint32_t crc;       // CRC32C of the 28 bytes before it + payload
};
static_assert(sizeof(record_header) == 32, "record_header layout");

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }

std::uint32_t record_crc(const record_header& h, const std::byte* payload) {
  crc32c_engine c;
  c.process_bytes(&h, offsetof(record_header, crc));
  c.process_bytes(payload, h.length);
  return c.checksum();
}

// Synthetic payloads: byte i of record seq is a hash of (seq, i), and the
// length is a hash of (seed, seq), so verify can check content without
// knowing how the writer was run.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
unsigned char synthetic_byte(std::uint64_t seq, std::size_t i) {
  return static_cast<unsigned char>(mix(seq * 0x9E3779B97F4A7C15ULL + (i >> 3)) >> (8 * (i & 7)));
}

// ---------------------------------------------------------------------------
// Recovery: scan from the first record and stop at the first one that is not
// intact. Never writes.
// ---------------------------------------------------------------------------
struct scan_result {
  bool header_ok = false;  // the file header is present and valid
  std::uint64_t records = 0;
  std::uint64_t last_seq = 0;
  std::size_t end = kHeaderArea;  // offset just past the last intact record
  std::uint32_t last_crc = 0;     // chain value for the next record
  const char* stop = "empty";     // why the scan stopped
  std::string detail;
  bool content_error = false;  // an intact-looking record with wrong synthetic content
  bool unreadable = false;     // a guarded read failed (I/O error, truncation, no space)
};

bool all_zero(const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != 0) return false;
  return true;
}

// Called with each intact record, from the scan's own copy of it.
using record_visitor = void (*)(const record_header& h, const std::byte* payload, void* ctx);

// The log file is input that may be crafted or changed under us by another
// process: every byte is copied out of the mapping once, through a guarded
// read (a SIGBUS becomes an error), and only the copy is validated and used.
// Every length and offset taken from the file is checked against the mapping
// before it is used, so the result always satisfies end <= size.
scan_result scan(const mapdirect::direct_mapping& m, record_visitor visit = nullptr, void* ctx = nullptr) {
  scan_result r;
  const std::size_t size = m.size();
  auto unreadable = [&](std::size_t at, const mapdirect::access_error& e) {
    r.unreadable = true;
    r.stop = "unreadable";
    char why[160];
    std::snprintf(why, sizeof why, "cannot read offset %zu: %s", at, e.message().c_str());
    r.detail = why;
    std::fprintf(stderr, "durable_log: %s (%s)\n", why, mapdirect::last_error_detail());
  };
  if (size < kHeaderArea + sizeof(record_header)) {
    r.stop = "too-small";
    return r;
  }
  file_header fh;
  if (auto rd = m.read(0, &fh, sizeof fh); !rd) {
    unreadable(0, rd.error());
    return r;
  }
  if (all_zero(&fh, sizeof fh)) return r;  // never initialised: an empty log
  if (std::memcmp(fh.magic, kFileMagic, sizeof kFileMagic) != 0 || fh.version != 1 || fh.header_size != kHeaderArea ||
      fh.crc != crc32c(&fh, offsetof(file_header, crc))) {
    // The header is written and persisted before the first record, so a
    // torn header with no record after it is a crash during creation: the
    // log is empty (nothing was acknowledged yet).
    record_header first;
    if (auto rd = m.read(kHeaderArea, &first, sizeof first); !rd) {
      unreadable(kHeaderArea, rd.error());
      return r;
    }
    if (all_zero(&first, sizeof first)) return r;
    r.stop = "bad-header";
    r.detail = "file header is not a durable_log v1 header";
    return r;
  }
  r.header_ok = true;
  r.last_crc = fh.chain_seed;
  std::vector<std::byte> payload;
  std::size_t off = kHeaderArea;
  for (;;) {
    // Invariant: off <= size (each record below is checked to fit, padding included).
    if (size - off < sizeof(record_header)) {
      r.stop = "full";
      break;
    }
    record_header h;
    if (auto rd = m.read(off, &h, sizeof h); !rd) {
      unreadable(off, rd.error());
      break;
    }
    if (all_zero(&h, sizeof h)) {
      r.stop = "end";  // nothing was ever written here
      break;
    }
    // Anything else that is not an intact, chained, in-sequence record is
    // the torn tail of an interrupted append.
    r.stop = "torn";
    char why[160];
    why[0] = 0;
    const std::size_t room = size - off - sizeof h;
    if (h.magic != kRecordMagic) {
      std::snprintf(why, sizeof why, "bad magic at offset %zu", off);
    } else if (h.length > kMaxPayload || h.length > room || align_up(sizeof h + h.length) > size - off) {
      // The padded length must fit too: a writer never pads past the end, and
      // the next record's offset must stay inside the mapping.
      std::snprintf(why, sizeof why, "impossible length %" PRIu32 " at offset %zu", h.length, off);
    } else if (h.seq != r.last_seq + 1) {
      std::snprintf(why, sizeof why, "seq %" PRIu64 " at offset %zu, expected %" PRIu64, h.seq, off, r.last_seq + 1);
    } else if (h.prev_crc != r.last_crc) {
      std::snprintf(why, sizeof why, "seq %" PRIu64 " at offset %zu does not chain to its predecessor", h.seq, off);
    }
    if (why[0]) {
      r.detail = why;
      break;
    }
    payload.resize(h.length);
    if (auto rd = m.read(off + sizeof h, payload.data(), h.length); !rd) {
      unreadable(off + sizeof h, rd.error());
      break;
    }
    if (h.crc != record_crc(h, payload.data())) {
      std::snprintf(why, sizeof why, "seq %" PRIu64 " at offset %zu fails its checksum", h.seq, off);
      r.detail = why;
      break;
    }
    // Intact. A synthetic record must also hold exactly the bytes written.
    if (h.flags & kFlagSynthetic) {
      for (std::size_t i = 0; i < h.length; ++i) {
        if (static_cast<unsigned char>(payload[i]) != synthetic_byte(h.seq, i)) {
          r.content_error = true;
          std::snprintf(why, sizeof why, "seq %" PRIu64 " has a valid checksum but wrong content at byte %zu", h.seq,
                        i);
          r.detail = why;
          break;
        }
      }
      if (r.content_error) {
        r.stop = "content";
        break;
      }
    }
    if (visit) visit(h, payload.data(), ctx);
    r.records++;
    r.last_seq = h.seq;
    r.last_crc = h.crc;
    off += align_up(sizeof h + h.length);
    r.end = off;
    if (off >= size) {
      r.stop = "full";
      break;
    }
  }
  return r;
}

void print_scan(const scan_result& r) {
  std::printf("recovered records=%" PRIu64 " last_seq=%" PRIu64 " end_offset=%zu stop=%s%s%s\n", r.records, r.last_seq,
              r.end, r.stop, r.detail.empty() ? "" : " detail=", r.detail.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// Opening and writing
// ---------------------------------------------------------------------------
[[noreturn]] void fail(const char* what, const std::error_code& ec) {
  std::fprintf(stderr, "durable_log: %s: %s (%s)\n", what, ec.message().c_str(), mapdirect::last_error_detail());
  std::exit(1);
}

// fsync a file's directory, so that a newly created file's name is durable.
void sync_parent_dir(const std::string& path) {
  std::string dir = path.substr(0, path.find_last_of('/') + 1);
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    std::perror("durable_log: fsync of the directory");
    std::exit(1);
  }
  ::close(fd);
}

struct log_writer {
  mapdirect::direct_mapping map;
  std::size_t end = kHeaderArea;  // where the next record goes
  std::uint64_t next_seq = 1;
  std::uint32_t prev_crc = 0;
  bool print_acks = false;
  bool cpu_flush_only = false;  // --unsafe-cpu-flush-only (negative control)
  std::size_t group = 1;
  std::uint32_t session = static_cast<std::uint32_t>(std::random_device{}());
  // The current group: records written but not yet persisted.
  std::size_t group_start = kHeaderArea;
  std::uint64_t group_first_seq = 1;
  std::size_t group_count = 0;
  std::string ack_buffer;
  std::vector<std::byte> record_buffer;

  // The most the log may grow to (--size).
  std::uint64_t cap = 0;
  // A growth failed (not the cap): the writer stops with an error.
  bool grow_failed = false;

  // Opens FILE (creating a sparse file of min(cap, 1 MiB) bytes if it does
  // not exist, with address space reserved for `cap`), recovers it and
  // positions the writer after the last intact record.
  void open(const std::string& path, std::uint64_t size) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode)) return open_device(path, size);
    // An empty file is what a crash between creating and sizing leaves:
    // nothing was acknowledged yet, so start it afresh.
    const bool exists = ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
    cap = size;
    mapdirect::open_options o;
    o.create = true;
    o.grow = !exists;
    const std::uint64_t initial = size < kInitialSize ? size : kInitialSize;
    o.size = exists ? 0 : initial;  // an existing log keeps its size (and grows from there)
    const std::uint64_t have = exists ? static_cast<std::uint64_t>(st.st_size) : initial;
    o.map.reserve = static_cast<std::size_t>(cap > have ? cap : have);
    // Sparse: blocks are allocated by the first store to each page. With
    // map_mode::sync the page fault itself makes that allocation durable;
    // with map_mode::shared persist() (msync) does.
    o.preallocate = false;
    auto m = mapdirect::direct_mapping::open(path, o);
    if (!m) fail("open", m.error());
    map = std::move(m).value();
    if (!exists) {
      // The new file's size and name must be durable before any record can
      // be acknowledged: fsync the file, then its directory. A failure
      // leaves no file behind (nothing was acknowledged in it).
      if (::fsync(map.native_handle()) != 0) {
        const int e = errno;
        ::unlink(path.c_str());
        fail("fsync of the new log", std::error_code(e, std::generic_category()));
      }
      sync_parent_dir(path);
    }
    std::fprintf(stderr, "durable_log: %s mapped %zu bytes, mode=%s granularity=%s\n", path.c_str(), map.size(),
                 mapdirect::to_string(map.mode()), mapdirect::to_string(map.store_granularity()));

    scan_result r = scan(map);
    if (std::strcmp(r.stop, "bad-header") == 0 || r.content_error || r.unreadable ||
        std::strcmp(r.stop, "too-small") == 0) {
      print_scan(r);
      std::fprintf(stderr, "durable_log: refusing to append to a corrupt log\n");
      if (!exists) ::unlink(path.c_str());  // ours, just created: leave nothing behind
      std::exit(1);
    }
    resume_after(r);
  }

  // A device DAX (/dev/daxX.Y): the log is the first `size` bytes of the
  // device (a multiple of its align), mapped with mode sync and no growth:
  // no file to create, size or fsync.
  void open_device(const std::string& path, std::uint64_t size) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      std::perror("durable_log: open");
      std::exit(1);
    }
    auto m = mapdirect::direct_mapping::map(fd, 0, static_cast<std::size_t>(size));
    ::close(fd);  // the mapping has its own descriptor
    if (!m) fail("map (device DAX)", m.error());
    map = std::move(m).value();
    cap = map.size();
    std::fprintf(stderr, "durable_log: %s (device DAX) mapped %zu bytes, mode=%s granularity=%s\n", path.c_str(),
                 map.size(), mapdirect::to_string(map.mode()), mapdirect::to_string(map.store_granularity()));
    scan_result r = scan(map);
    if (std::strcmp(r.stop, "bad-header") == 0 || r.content_error || r.unreadable ||
        std::strcmp(r.stop, "too-small") == 0) {
      print_scan(r);
      std::fprintf(stderr, "durable_log: refusing to append to a corrupt log\n");
      std::exit(1);
    }
    resume_after(r);
  }

  // The scan found an intact log (or none yet): position the writer after
  // its last record, writing the header first for a new log.
  void resume_after(const scan_result& r) {
    if (!r.header_ok) init_header();
    else prev_crc = r.last_crc;
    print_scan(r);
    end = r.end;
    next_seq = r.last_seq + 1;
    group_start = end;
    group_first_seq = next_seq;
  }

  void init_header() {
    file_header fh{};
    std::memcpy(fh.magic, kFileMagic, sizeof kFileMagic);
    fh.version = 1;
    fh.header_size = kHeaderArea;
    fh.capacity = map.size();
    // A fresh random chain seed: records left in reused blocks by an older
    // log can never chain into this one.
    fh.chain_seed = static_cast<std::uint32_t>(std::random_device{}());
    fh.crc = crc32c(&fh, offsetof(file_header, crc));
    // A guarded store: on a full file system the first store to a page of
    // this sparse file cannot get a block, and that is an error, not a SIGBUS.
    if (auto w = map.write(0, &fh, sizeof fh); !w) store_failed("the file header", 0, w.error());
    if (auto r = map.persist(0, sizeof fh); !r) fail("persisting the file header", r.error());
    prev_crc = fh.chain_seed;
  }

  // A guarded store failed: make the records before it durable (they are
  // complete), then stop with the reason. The failed record was never
  // acknowledged; recovery sees it as a torn tail.
  [[noreturn]] void store_failed(const char* what, std::size_t at, const mapdirect::access_error& e) {
    std::fprintf(stderr, "durable_log: cannot store %s at offset %zu: %s (%s)\n", what, at, e.message().c_str(),
                 mapdirect::last_error_detail());
    if (group_count > 0 && !cpu_flush_only) {
      if (auto r = map.persist(group_start, end - group_start); r) {
        std::fprintf(stderr, "durable_log: records up to seq %" PRIu64 " are durable\n", next_seq - 1);
        ack_group();
      }
    }
    std::exit(1);
  }

  // Grows the log in place so that `need` more bytes fit at `end`: doubling,
  // at most to the cap. The file stays sparse (blocks come with the first
  // store, as for the rest of the log); grow() makes the new size durable
  // before any record is stored past the old end. False at the cap, or when
  // growing failed (grow_failed, reported).
  bool make_room(std::size_t need) {
    const std::uint64_t want = static_cast<std::uint64_t>(end) + need;
    if (want > cap) return false;
    std::uint64_t next = static_cast<std::uint64_t>(map.size()) * 2;
    if (next < want) next = want;
    next = (next + 4095) & ~std::uint64_t{4095};
    if (next > cap) next = cap;
    mapdirect::grow_options g;
    g.preallocate = false;
    auto r = map.grow(static_cast<std::size_t>(next), g);
    if (!r) {
      std::fprintf(stderr, "durable_log: cannot grow the log to %" PRIu64 " bytes: %s (%s)\n", next,
                   r.error().message().c_str(), mapdirect::last_error_detail());
      grow_failed = true;
      return false;
    }
    return true;
  }

  // Appends one record; returns false when the log is full (at --size) or
  // could not grow (grow_failed).
  bool append(const void* payload, std::uint32_t length, std::uint32_t flags) {
    const std::size_t need = align_up(sizeof(record_header) + length);
    if ((end > map.size() || need > map.size() - end) && (end > map.size() || !make_room(need))) {
      // Make what we have durable before reporting "full".
      commit();
      return false;
    }
    record_header h{};
    h.magic = kRecordMagic;
    h.length = length;
    h.seq = next_seq;
    h.prev_crc = prev_crc;
    h.flags = flags;
    h.session = session;
    h.crc = record_crc(h, static_cast<const std::byte*>(payload));
    // Header, payload and zero padding in one buffer, stored with one guarded
    // write (a full file system is an error here, not a SIGBUS); persist()
    // below makes them durable.
    record_buffer.assign(need, std::byte{0});
    std::memcpy(record_buffer.data(), &h, sizeof h);
    if (length) std::memcpy(record_buffer.data() + sizeof h, payload, length);
    if (auto w = map.write(end, record_buffer.data(), need); !w) {
      char what[64];
      std::snprintf(what, sizeof what, "record seq %" PRIu64, next_seq);
      store_failed(what, end, w.error());
    }
    prev_crc = h.crc;
    end += need;
    next_seq++;
    if (++group_count >= group) commit();
    return true;
  }

  // Makes the current group durable with one persist, then acknowledges it.
  void commit() {
    if (group_count == 0) return;
    if (cpu_flush_only) {
      // Deliberately wrong for page granularity (see --unsafe-cpu-flush-only).
      mapdirect::flush_lines(map.data() + group_start, end - group_start, map.flush_with());
      mapdirect::drain(map.flush_with());
    } else if (auto r = map.persist(group_start, end - group_start); !r) {
      fail("persist", r.error());
    }
    ack_group();
  }

  // The current group is durable: acknowledge it and start the next.
  void ack_group() {
    if (print_acks) {
      ack_buffer.clear();
      for (std::uint64_t s = group_first_seq; s < next_seq; ++s) ack_buffer += "ack " + std::to_string(s) + "\n";
      // One write(2) per group, unbuffered: the ack must not sit in stdio.
      const char* p = ack_buffer.data();
      std::size_t n = ack_buffer.size();
      while (n > 0) {
        ssize_t w = ::write(STDOUT_FILENO, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) std::exit(1);
        p += w;
        n -= static_cast<std::size_t>(w);
      }
    }
    group_start = end;
    group_first_seq = next_seq;
    group_count = 0;
  }
};

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------
constexpr std::uint64_t kMinLogSize = kHeaderArea + 4096;  // the header and one page of records
constexpr std::uint64_t kMaxLogSize = 1ull << 40;          // address space is reserved for --size

[[noreturn]] void help() {
  std::printf(
      "usage: durable_log write   FILE [--size BYTES] [--count N] [--group N] [--print-acks] [--seed S]\n"
      "                                [--quiet] [--unsafe-cpu-flush-only]\n"
      "       durable_log append  FILE [--size BYTES] [--group N] [--print-acks] [--quiet]   (records from stdin)\n"
      "       durable_log verify  FILE [--expect-last N]\n"
      "       durable_log recover FILE\n"
      "       durable_log dump    FILE\n"
      "       durable_log --help | --version\n"
      "\n"
      "write appends synthetic records until --count N records are written (exit 1 if the log fills\n"
      "first) or, without --count, until the log is full at --size (exit 0) or the process is killed.\n"
      "append writes one record per line of standard input (a line holds at most 1 MiB).\n"
      "verify scans the log read-only: exit 1 if it is corrupt before its tail or ends before N.\n"
      "recover verifies, then clears a torn tail. dump prints every intact record (exit 1 if FILE is\n"
      "not a durable_log log).\n"
      "\n"
      "BYTES takes a K, M, G or T suffix (powers of 1024), from 8K to 1T; --size is the most the log\n"
      "grows to (default 64M): a new log starts at 1M (or BYTES if smaller) and grows in place on\n"
      "demand. --group N persists every N records at once (1 to 1000000, default 1). On a terminal,\n"
      "operations longer than 2 s show a progress line unless --quiet is given.\n");
  std::exit(0);
}

struct options {
  std::string cmd, file;
  std::uint64_t size = 64ull << 20;
  std::uint64_t count = 0;  // 0: until killed or full
  std::size_t group = 1;
  bool print_acks = false;
  bool cpu_flush_only = false;
  bool quiet = false;
  std::uint64_t seed = 1;
  std::uint64_t expect_last = 0;
  bool has_expect_last = false;
};

// durable_log COMMAND FILE [options]; options may also come before FILE.
options parse(int argc, char** argv) {
  mdx::program_name() = "durable_log";
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) help();
  if (argc >= 2 && std::strcmp(argv[1], "--version") == 0) mdx::print_version();
  if (argc < 2) mdx::usage_error("missing command (write, append, verify, recover or dump)");
  options o;
  o.cmd = argv[1];
  // Which options each command takes (a bit per option below).
  enum : unsigned { SIZE = 1, COUNT = 2, GROUP = 4, ACKS = 8, SEED = 16, UNSAFE = 32, EXPECT = 64, QUIET = 128 };
  unsigned allowed = 0;
  if (o.cmd == "write") allowed = SIZE | COUNT | GROUP | ACKS | SEED | UNSAFE | QUIET;
  else if (o.cmd == "append") allowed = SIZE | GROUP | ACKS | QUIET;
  else if (o.cmd == "verify") allowed = EXPECT;
  else if (o.cmd == "recover" || o.cmd == "dump") allowed = 0;
  else mdx::usage_error("unknown command '%s' (write, append, verify, recover or dump)", o.cmd.c_str());
  static const struct option longopts[] = {{"size", required_argument, nullptr, 's'},
                                           {"count", required_argument, nullptr, 'c'},
                                           {"group", required_argument, nullptr, 'g'},
                                           {"print-acks", no_argument, nullptr, 'a'},
                                           {"seed", required_argument, nullptr, 'S'},
                                           {"unsafe-cpu-flush-only", no_argument, nullptr, 'U'},
                                           {"expect-last", required_argument, nullptr, 'e'},
                                           {"quiet", no_argument, nullptr, 'q'},
                                           {"help", no_argument, nullptr, 'h'},
                                           {"version", no_argument, nullptr, 'V'},
                                           {nullptr, 0, nullptr, 0}};
  // getopt_long sees "durable_log FILE options..." (the command removed);
  // opterr off: our own messages name the option.
  argv[1] = argv[0];
  argc -= 1;
  argv += 1;
  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, ":", longopts, nullptr)) != -1) {
    const char* name = optind - 1 < argc ? argv[optind - 1] : "";
    auto need = [&](unsigned bit, const char* opt) {
      if (!(allowed & bit)) mdx::usage_error("%s is not an option of '%s'", opt, o.cmd.c_str());
    };
    switch (c) {
      case 's':
        need(SIZE, "--size");
        o.size = mdx::parse_number("--size", optarg, kMinLogSize, kMaxLogSize, true);
        break;
      case 'c':
        need(COUNT, "--count");
        o.count = mdx::parse_number("--count", optarg, 1, UINT64_MAX);
        break;
      case 'g':
        need(GROUP, "--group");
        o.group = static_cast<std::size_t>(mdx::parse_number("--group", optarg, 1, 1000000));
        break;
      case 'a':
        need(ACKS, "--print-acks");
        o.print_acks = true;
        break;
      case 'S':
        need(SEED, "--seed");
        o.seed = mdx::parse_number("--seed", optarg, 0, UINT64_MAX);
        break;
      case 'U':
        need(UNSAFE, "--unsafe-cpu-flush-only");
        o.cpu_flush_only = true;
        break;
      case 'e':
        need(EXPECT, "--expect-last");
        o.expect_last = mdx::parse_number("--expect-last", optarg, 0, UINT64_MAX);
        o.has_expect_last = true;
        break;
      case 'q':
        need(QUIET, "--quiet");
        o.quiet = true;
        break;
      case 'h': help();
      case 'V': mdx::print_version();
      case ':': mdx::usage_error("%s needs a value", name);
      default: mdx::usage_error("unknown option '%s'", name);
    }
  }
  if (optind >= argc) mdx::usage_error("%s: missing FILE", o.cmd.c_str());
  o.file = argv[optind++];
  if (optind < argc) mdx::usage_error("unexpected argument '%s'", argv[optind]);
  if (o.file.empty()) mdx::usage_error("%s: FILE is empty", o.cmd.c_str());
  return o;
}

// verify and dump only read: a read-only mapping, so they work on a 0444
// file, another user's readable log and a read-only mount.
mapdirect::direct_mapping open_existing(const std::string& path, bool writable) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode)) {
    // Device DAX: map the whole device (the log's zeroed tail ends the scan).
    const int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
      std::perror("durable_log: open");
      std::exit(1);
    }
    mapdirect::map_options mo;
    if (!writable) mo.access = mapdirect::map_access::read_only;
    auto m = mapdirect::direct_mapping::map(fd, 0, 0, mo);
    ::close(fd);
    if (!m) fail("map (device DAX)", m.error());
    return std::move(m).value();
  }
  mapdirect::open_options o;
  if (!writable) o.map.access = mapdirect::map_access::read_only;
  auto m = mapdirect::direct_mapping::open(path, o);
  if (!m) fail("open", m.error());
  return std::move(m).value();
}

int cmd_verify(const options& o, bool repair) {
  auto m = open_existing(o.file, repair);
  scan_result r = scan(m);
  print_scan(r);
  bool ok = !(r.content_error || r.unreadable || std::strcmp(r.stop, "bad-header") == 0 ||
              std::strcmp(r.stop, "too-small") == 0);
  if (ok && o.has_expect_last && r.last_seq < o.expect_last) {
    std::printf("LOST: expected records up to seq %" PRIu64 ", the log ends at %" PRIu64 "\n", o.expect_last,
                r.last_seq);
    ok = false;
  }
  if (ok && repair && std::strcmp(r.stop, "torn") == 0) {
    // Clear the torn record's header: the next scan then ends cleanly here.
    const record_header zero{};
    if (auto w = m.write(r.end, &zero, sizeof zero); !w) {
      std::fprintf(stderr, "durable_log: cannot clear the torn tail at offset %zu: %s (%s)\n", r.end,
                   w.error().message().c_str(), mapdirect::last_error_detail());
      return 1;
    }
    if (auto rr = m.persist(r.end, sizeof zero); !rr) fail("clearing the torn tail", rr.error());
    std::printf("cleared torn tail at offset %zu\n", r.end);
  }
  return ok ? 0 : 1;
}

// Prints one intact record from the scan's private copy (never from the
// mapping, which another process may change between a check and a use).
void print_record(const record_header& h, const std::byte* payload, void*) {
  if (h.flags & kFlagSynthetic) std::printf("%" PRIu64 "\t(%" PRIu32 " synthetic bytes)\n", h.seq, h.length);
  else std::printf("%" PRIu64 "\t%.*s\n", h.seq, static_cast<int>(h.length), reinterpret_cast<const char*>(payload));
}

int cmd_dump(const options& o) {
  auto m = open_existing(o.file, false);
  scan_result r = scan(m, print_record, nullptr);
  print_scan(r);
  // Not a log (or a corrupt one) is an error, not an empty listing.
  const bool bad = r.unreadable || r.content_error || std::strcmp(r.stop, "bad-header") == 0 ||
                   std::strcmp(r.stop, "too-small") == 0;
  if (bad) std::fprintf(stderr, "durable_log: %s is not an intact durable_log log (stop=%s)\n", o.file.c_str(), r.stop);
  return bad ? 1 : 0;
}

int cmd_write(const options& o) {
  log_writer w;
  w.print_acks = o.print_acks;
  w.cpu_flush_only = o.cpu_flush_only;
  w.group = o.group;
  w.open(o.file, o.size);
  std::vector<unsigned char> payload;
  std::uint64_t written = 0;
  // With --count: records of N; without: bytes of the log's capacity, in KiB.
  mdx::progress_line progress(o.count ? "records" : "KiB", o.count ? o.count : w.cap / 1024, o.quiet);
  while (o.count == 0 || written < o.count) {
    progress.update(o.count ? written : w.end / 1024);
    const std::uint64_t seq = w.next_seq;
    // 16..1039 bytes: records straddle cache lines and pages.
    const std::uint32_t len = 16 + static_cast<std::uint32_t>(mix(o.seed * 1000003 + seq) % 1024);
    payload.resize(len);
    for (std::uint32_t i = 0; i < len; ++i) payload[i] = synthetic_byte(seq, i);
    if (!w.append(payload.data(), len, kFlagSynthetic)) {
      progress.finish();
      if (w.grow_failed) return 1;
      std::fprintf(stderr, "durable_log: log full at seq %" PRIu64 " (%zu bytes)\n", w.next_seq - 1, w.map.size());
      if (o.count == 0) return 0;  // "until full" was the request
      std::fprintf(stderr, "durable_log: only %" PRIu64 " of the %" PRIu64 " records asked for were written\n", written,
                   o.count);
      return 1;
    }
    ++written;
  }
  w.commit();
  progress.finish();
  std::fprintf(stderr, "durable_log: appended %" PRIu64 " records, last seq %" PRIu64 "\n", written, w.next_seq - 1);
  return 0;
}

int cmd_append(const options& o) {
  log_writer w;
  w.print_acks = o.print_acks;
  w.group = o.group;
  w.open(o.file, o.size);
  std::string line;
  std::uint64_t lineno = 0;
  mdx::progress_line progress("lines", 0, o.quiet);
  while (std::getline(std::cin, line)) {
    ++lineno;
    progress.update(lineno);
    if (line.size() > kMaxPayload) {
      // Never store part of a record: what came before is made durable and
      // acknowledged, this line and the rest are refused.
      w.commit();
      progress.finish();
      std::fprintf(stderr,
                   "durable_log: line %" PRIu64 " is %zu bytes; a record holds at most %" PRIu32
                   " (lines before it are durable, it and the rest were not appended)\n",
                   lineno, line.size(), kMaxPayload);
      return 1;
    }
    if (!w.append(line.data(), static_cast<std::uint32_t>(line.size()), 0)) {
      progress.finish();
      if (!w.grow_failed) std::fprintf(stderr, "durable_log: log full at line %" PRIu64 "\n", lineno);
      return 1;
    }
  }
  w.commit();
  progress.finish();
  if (std::cin.bad()) {
    std::fprintf(stderr, "durable_log: reading standard input failed after line %" PRIu64 "\n", lineno);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  if (o.cmd == "write") return cmd_write(o);
  if (o.cmd == "append") return cmd_append(o);
  if (o.cmd == "verify") return cmd_verify(o, false);
  if (o.cmd == "recover") return cmd_verify(o, true);
  return cmd_dump(o);  // parse() accepted no other command
}
