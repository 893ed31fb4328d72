// nc_writer: the deliberately wrong writer of the power-loss negative
// controls (tests/vm/run.sh --negative-control). It acknowledges records that
// are NOT durable, and the power-loss checker must catch the loss; if it does
// not, the power-loss test of that configuration proves nothing.
//
//   nc_writer write  FILE --method mmap|pwrite [--size BYTES] [--stride BYTES]
//                    [--interval-us N] [--count N]
//   nc_writer verify FILE
//
// --method mmap   maps the file MAP_SHARED without MAP_SYNC, stores each
//                 record, flushes its cache lines (clflush + sfence) and
//                 acknowledges: correct on MAP_SYNC, wrong everywhere else,
//                 because the blocks the page fault allocated in the sparse
//                 file are only in the file system's running transaction.
// --method pwrite writes each record with pwrite and never calls fdatasync:
//                 the record sits in the guest page cache, which dies with
//                 QEMU.
//
// Each record lives alone at offset seq * stride (a fresh page, so a fresh
// allocation), chained to its predecessor by a checksum and stamped with a
// per-run session number, so a stale record from an earlier run never passes
// for a recovered one. The file, its size and its header are made durable
// (fsync of the file and its directory) before the first record: only the
// records' own durability is missing.
//
// Output: "ack <seq>" per acknowledged record; verify prints
// "recovered records=N last_seq=N end_offset=N stop=end|torn|full|empty"
// as examples/durable_log does, so run.sh checks both the same way.
// Self-contained on purpose (no mapdirect): it must stay wrong.
#include <fcntl.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace {
constexpr char kMagic[8] = {'M', 'D', 'N', 'C', 'W', '1', 0, 0};
constexpr std::uint64_t kRecordMagic = 0x315243574e444dULL;  // "MDNWCR1"

struct header {
  char magic[8];
  std::uint64_t size;
  std::uint64_t stride;
  std::uint64_t check;  // hash of the fields before it
};
struct record {
  std::uint64_t magic;
  std::uint64_t seq;
  std::uint32_t session;
  std::uint32_t prev;  // check of the previous record (0 for seq 1)
  std::uint32_t check;
  std::uint32_t pad;
};

std::uint32_t fnv(const void* p, std::size_t n, std::uint32_t h = 2166136261u) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 16777619u;
  return h;
}
std::uint32_t record_check(const record& r) { return fnv(&r, offsetof(record, check)); }
std::uint64_t header_check(const header& h) { return fnv(&h, offsetof(header, check)) | 0x100000000ULL; }

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "nc_writer: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

std::uint64_t parse_size(const char* s) {
  char* end = nullptr;
  std::uint64_t v = std::strtoull(s, &end, 0);
  if (*end == 'K' || *end == 'k') v <<= 10;
  if (*end == 'M' || *end == 'm') v <<= 20;
  if (*end == 'G' || *end == 'g') v <<= 30;
  return v;
}

struct scan_result {
  std::uint64_t last_seq = 0;
  std::uint32_t last_check = 0;
  const char* stop = "empty";
};

scan_result scan(int fd, const header& h) {
  scan_result s;
  for (std::uint64_t seq = 1;; ++seq) {
    const std::uint64_t off = seq * h.stride;
    if (off + sizeof(record) > h.size) {
      s.stop = "full";
      break;
    }
    record r{};
    if (::pread(fd, &r, sizeof r, static_cast<off_t>(off)) != static_cast<ssize_t>(sizeof r)) die("pread");
    static const record zero{};
    if (std::memcmp(&r, &zero, sizeof r) == 0) {
      s.stop = "end";
      break;
    }
    if (r.magic != kRecordMagic || r.seq != seq || r.prev != s.last_check || r.check != record_check(r)) {
      s.stop = "torn";
      break;
    }
    s.last_seq = seq;
    s.last_check = r.check;
  }
  return s;
}

bool read_header(int fd, header& h) {
  if (::pread(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return false;
  return std::memcmp(h.magic, kMagic, sizeof kMagic) == 0 && h.check == header_check(h) && h.stride >= 64 &&
         h.size > h.stride;
}

int verify(const char* path) {
  const int fd = ::open(path, O_RDONLY);
  if (fd < 0) {
    // Created (and fsynced) before the first ack: a missing file after an
    // ack is a loss too, reported as an empty log.
    std::printf("recovered records=0 last_seq=0 end_offset=0 stop=empty detail=no-file\n");
    return 0;
  }
  header h{};
  if (!read_header(fd, h)) {
    std::printf("recovered records=0 last_seq=0 end_offset=0 stop=empty detail=no-header\n");
    return 0;
  }
  const scan_result s = scan(fd, h);
  std::printf("recovered records=%" PRIu64 " last_seq=%" PRIu64 " end_offset=%" PRIu64 " stop=%s\n", s.last_seq,
              s.last_seq, (s.last_seq + 1) * h.stride, s.stop);
  return 0;
}

void fsync_dir_of(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (d < 0 || ::fsync(d) != 0) die("fsync directory");
  ::close(d);
}

int write_log(const char* path, bool use_mmap, std::uint64_t size, std::uint64_t stride, unsigned interval_us,
              std::uint64_t count) {
  int fd = ::open(path, O_RDWR);
  header h{};
  if (fd < 0) {
    if (errno != ENOENT) die("open");
    fd = ::open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0) die("create");
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.size = size;
    h.stride = stride;
    h.check = header_check(h);
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) die("ftruncate");
    if (::pwrite(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) die("pwrite header");
    // The file itself is durable; the records will not be.
    if (::fsync(fd) != 0) die("fsync");
    fsync_dir_of(path);
  } else if (!read_header(fd, h)) {
    std::fprintf(stderr, "nc_writer: %s has no valid header\n", path);
    return 2;
  }
  const scan_result s = scan(fd, h);
  std::printf("resuming after seq %" PRIu64 " (stop=%s)\n", s.last_seq, s.stop);
  std::fflush(stdout);
  std::uint32_t session = 0;
  if (::getrandom(&session, sizeof session, 0) != static_cast<ssize_t>(sizeof session))
    session = static_cast<std::uint32_t>(::time(nullptr) ^ ::getpid());
  char* base = nullptr;
  if (use_mmap) {
    void* p = ::mmap(nullptr, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);  // no MAP_SYNC
    if (p == MAP_FAILED) die("mmap");
    base = static_cast<char*>(p);
  }
  std::uint32_t prev = s.last_check;
  for (std::uint64_t seq = s.last_seq + 1, n = 0; count == 0 || n < count; ++seq, ++n) {
    const std::uint64_t off = seq * h.stride;
    if (off + sizeof(record) > h.size) {
      std::printf("log full\n");
      return 0;
    }
    record r{};
    r.magic = kRecordMagic;
    r.seq = seq;
    r.session = session;
    r.prev = prev;
    r.check = record_check(r);
    if (use_mmap) {
      std::memcpy(base + off, &r, sizeof r);
      // A CPU cache flush and a fence: all a MAP_SYNC mapping would need.
      for (std::uint64_t line = off & ~std::uint64_t{63}; line < off + sizeof r; line += 64) _mm_clflush(base + line);
      _mm_sfence();
    } else if (::pwrite(fd, &r, sizeof r, static_cast<off_t>(off)) != static_cast<ssize_t>(sizeof r)) {
      die("pwrite");  // and no fdatasync, on purpose
    }
    prev = r.check;
    std::printf("ack %" PRIu64 "\n", seq);
    std::fflush(stdout);
    if (interval_us) ::usleep(interval_us);
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "verify") == 0) return verify(argv[2]);
  if (argc >= 3 && std::strcmp(argv[1], "write") == 0) {
    std::uint64_t size = 512ULL << 20, stride = 64 << 10, count = 0;
    unsigned interval_us = 2000;
    int method = -1;
    for (int i = 3; i < argc; ++i) {
      const std::string a = argv[i];
      const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
      if (!v) break;
      if (a == "--method") method = std::strcmp(v, "mmap") == 0 ? 1 : std::strcmp(v, "pwrite") == 0 ? 0 : -1;
      else if (a == "--size") size = parse_size(v);
      else if (a == "--stride") stride = parse_size(v);
      else if (a == "--interval-us") interval_us = static_cast<unsigned>(parse_size(v));
      else if (a == "--count") count = parse_size(v);
      else break;
      ++i;
    }
    if (method >= 0 && stride >= 64 && stride % 64 == 0 && size > stride)
      return write_log(argv[2], method == 1, size, stride, interval_us, count);
  }
  std::fprintf(stderr, "usage: nc_writer write FILE --method mmap|pwrite [--size BYTES] [--stride BYTES] "
                       "[--interval-us N] [--count N]\n"
                       "       nc_writer verify FILE\n");
  return 2;
}
