// seal_broker: the fd-passing permission model of the block-map seal.
//
//   seal_broker DIR            broker: runs the whole demo, exits 0 on success
//   seal_broker --worker FD    worker: started by the broker (do not run by hand)
//
// The broker (privileged: root, or the file's owner) creates DIR/seal_broker.log
// mode 0600, seals its block map with mapdirect::iomap_seal (natively with
// F_MAY_SEAL_IOMAP on a MAP_DIRECT kernel, which needs CAP_LINUX_IMMUTABLE;
// otherwise stabilised: allocated, written, unshared, FIEMAP-verified) and
// takes a lease to hear of conflicting opens. It then starts the worker, which
// drops to "nobody" (when run as root), shows that it cannot open the file by
// its path, receives the descriptor over a Unix socket (SCM_RIGHTS), maps it
// with direct_mapping and appends checksummed records, each made durable
// before the next. The permission to write the file, and (natively) to map
// its sealed block map, travels with the descriptor, not with the worker's
// credentials. The broker finally checks every record and that the seal held.
#include <mapdirect/mapdirect.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

constexpr std::size_t record_count = 1000;
constexpr std::size_t file_size = 1 << 20;

// One 64-byte record: sequence number, payload, and an FNV-1a checksum over both.
struct record {
  std::uint64_t seq;
  char payload[48];
  std::uint64_t checksum;
};
static_assert(sizeof(record) == 64, "records are one cache line");

std::uint64_t fnv1a(const void* data, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

record make_record(std::uint64_t seq) {
  record r{};
  r.seq = seq;
  std::snprintf(r.payload, sizeof r.payload, "record %llu written by the unprivileged worker",
                static_cast<unsigned long long>(seq));
  r.checksum = fnv1a(&r, offsetof(record, checksum));
  return r;
}

int die(const char* what) {
  std::fprintf(stderr, "seal_broker: %s: %s\n", what, std::strerror(errno));
  return 1;
}

int die_md(const char* what, const std::error_code& ec) {
  std::fprintf(stderr, "seal_broker: %s: %s\n  %s\n", what, ec.message().c_str(), mapdirect::last_error_detail());
  return 1;
}

// Sends one descriptor (and the file's path, for the demonstration) over a Unix socket.
bool send_fd(int sock, int fd, const std::string& path) {
  iovec iov{const_cast<char*>(path.c_str()), path.size() + 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0;
}

int recv_fd(int sock, std::string& path) {
  char buf[4096] = {};
  iovec iov{buf, sizeof buf - 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  if (::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) <= 0) return -1;
  path = buf;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return fd;
    }
  }
  errno = EPROTO;
  return -1;
}

// Root -> nobody, irrevocably (groups, gid, uid; then prove it cannot come back).
int drop_privileges() {
  if (::geteuid() != 0) {
    std::printf("worker: not started as root; keeping uid %u (nothing to drop)\n", static_cast<unsigned>(::getuid()));
    return 0;
  }
  uid_t uid = 65534;
  gid_t gid = 65534;
  if (const passwd* pw = ::getpwnam("nobody")) {
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  if (::setgroups(0, nullptr) != 0) return die("worker: setgroups");
  if (::setgid(gid) != 0) return die("worker: setgid");
  if (::setuid(uid) != 0) return die("worker: setuid");
  if (::setuid(0) == 0) {
    std::fprintf(stderr, "seal_broker: worker: could regain root after dropping it\n");
    return 1;
  }
  std::printf("worker: dropped privileges to uid %u gid %u\n", static_cast<unsigned>(uid), static_cast<unsigned>(gid));
  return 0;
}

int run_worker(int sock) {
  if (int rc = drop_privileges()) return rc;
  std::string path;
  const int fd = recv_fd(sock, path);
  if (fd < 0) return die("worker: receiving the descriptor");
  // The worker's own credentials do not reach the file...
  const int own = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (own >= 0) {
    std::printf("worker: note: could open %s by path (run as root to see the permission model)\n", path.c_str());
    ::close(own);
  } else {
    std::printf("worker: open(%s) by path: %s -- but the received descriptor works:\n", path.c_str(),
                std::strerror(errno));
  }
  // ...the descriptor does.
  auto m = mapdirect::direct_mapping::map(fd, 0, 0);
  if (!m) return die_md("worker: map", m.error());
  ::close(fd);  // the mapping holds its own duplicate
  auto& map = m.value();
  std::printf("worker: mapped %zu bytes, mode %s, granularity %s\n", map.size(), mapdirect::to_string(map.mode()),
              mapdirect::to_string(map.store_granularity()));
  for (std::size_t i = 0; i < record_count; ++i) {
    const record r = make_record(i + 1);
    if (auto ok = map.copy_persist(i * sizeof(record), &r, sizeof r); !ok) return die_md("worker: copy_persist", ok.error());
  }
  std::printf("worker: %zu records durable\n", record_count);
  if (auto ok = map.close(); !ok) return die_md("worker: close", ok.error());
  const char done = 'k';
  if (::send(sock, &done, 1, MSG_NOSIGNAL) != 1) return die("worker: reporting back");
  return 0;
}

int run_broker(const char* dir) {
  const std::string path = std::string(dir) + "/seal_broker.log";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return die("broker: open");
  if (::ftruncate(fd, static_cast<off_t>(file_size)) != 0) return die("broker: ftruncate");

  // Seal first: the file is sparse, so the worker's faults would allocate.
  mapdirect::seal_options o;
  o.allow_unverifiable = true;  // DIR may be tmpfs: then say so instead of failing
  o.lease = true;
  auto s = mapdirect::iomap_seal::acquire(fd, 0, 0, o);
  if (!s && s.error().category() == std::system_category()) {
    std::printf("broker: no lease here (%s); sealing without conflict notice\n", mapdirect::last_error_detail());
    o.lease = false;
    s = mapdirect::iomap_seal::acquire(fd, 0, 0, o);
  }
  if (!s) return die_md("broker: iomap_seal::acquire", s.error());
  auto& seal = s.value();
  const auto& rep = seal.report();
  std::printf("broker: sealed %s: kind %s, %s, %llu extent(s); allocated %llu, wrote %llu, unshared %llu bytes\n",
              path.c_str(), mapdirect::to_string(seal.kind()),
              rep.verified ? "verified with FIEMAP" : "NOT verifiable (no FIEMAP on this file system)",
              static_cast<unsigned long long>(rep.extents), static_cast<unsigned long long>(rep.allocated_bytes),
              static_cast<unsigned long long>(rep.zeroed_bytes), static_cast<unsigned long long>(rep.unshared_bytes));

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return die("broker: socketpair");
  const pid_t pid = ::fork();
  if (pid < 0) return die("broker: fork");
  if (pid == 0) {
    // A fresh image: the worker inherits nothing but the socket (all else is CLOEXEC).
    const int sock = ::dup(sv[1]);  // dup clears FD_CLOEXEC
    char arg[16];
    std::snprintf(arg, sizeof arg, "%d", sock);
    ::execl("/proc/self/exe", "seal_broker", "--worker", arg, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(sv[1]);
  // The worker gets the leased open file description itself: a write lease
  // is granted only to a file's sole description, so a separately opened one
  // for the worker would make the lease impossible. Through it the worker
  // could release the lease or change its signal/owner (even to a deadly
  // signal): the lease is advisory against the worker, and the broker checks
  // for such changes on every notice and periodically (lease_compromised()).
  if (!send_fd(sv[0], fd, path)) return die("broker: sendmsg(SCM_RIGHTS)");
  ::close(fd);  // from here on only the seal's and the worker's descriptors remain
  char done = 0;
  ssize_t got = -1;
  bool compromised = false;
  for (;;) {
    pollfd p[2] = {{sv[0], POLLIN, 0}, {seal.lease_event_fd(), POLLIN, 0}};
    const int n = ::poll(p, seal.has_lease() ? 2 : 1, 200);
    if (n < 0 && errno != EINTR) return die("broker: poll");
    if (!compromised && seal.has_lease() && seal.lease_compromised()) {
      compromised = true;
      std::fprintf(stderr, "seal_broker: lease COMPROMISED: its signal or owner was changed through the worker's "
                           "descriptor; conflicting opens may go unnoticed\n");
    }
    if (seal.has_lease() && (p[1].revents & POLLIN)) {
      std::uint64_t count = 0;  // drain: the break is remembered by lease_broken()
      (void)!::read(p[1].fd, &count, sizeof count);
    }
    if (n > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      got = ::recv(sv[0], &done, 1, 0);
      break;
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != 1) {
    std::fprintf(stderr, "seal_broker: worker failed (status %d)\n", status);
    return 1;
  }

  // Check the worker's records and that the seal held throughout.
  const int check = seal.native_handle();
  std::size_t good = 0;
  for (std::size_t i = 0; i < record_count; ++i) {
    record r{};
    if (::pread(check, &r, sizeof r, static_cast<off_t>(i * sizeof r)) != static_cast<ssize_t>(sizeof r))
      return die("broker: pread");
    if (r.seq == i + 1 && r.checksum == fnv1a(&r, offsetof(record, checksum))) ++good;
  }
  std::printf("broker: %zu/%zu records intact\n", good, record_count);
  if (seal.has_lease())
    std::printf("broker: lease %s\n", seal.lease_compromised() ? "COMPROMISED"
                                       : seal.lease_broken()    ? "BROKEN"
                                                                : "intact (no conflicting open, signal and owner unchanged)");
  if (compromised) return 1;
  if (seal.verified()) {
    auto v = seal.verify();
    if (!v) return die_md("broker: verify", v.error());
    std::printf("broker: block map still stable (%llu extent(s))\n", static_cast<unsigned long long>(v.value()));
  }
  if (auto r = seal.release(); !r) return die_md("broker: release", r.error());
  if (good != record_count) return 1;
  std::printf("seal_broker: ok\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc == 3 && std::strcmp(argv[1], "--worker") == 0) return run_worker(std::atoi(argv[2]));
  if (argc != 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  return run_broker(argv[1]);
}
