// seal_broker: the fd-passing permission model of the block-map seal.
//
//   seal_broker DIR               broker: runs the whole demo, exits 0 on success
//   seal_broker --self-check DIR  as above; the worker also prints what it can
//                                 still reach after its drop ("worker-check:" lines)
//   seal_broker --worker FD [--self-check]
//                                 worker: started by the broker (do not run by hand)
//
// The broker (privileged: root, or the file's owner) creates DIR/seal_broker.log
// exclusively (O_CREAT|O_EXCL|O_NOFOLLOW: a name planted in DIR, symlink or
// hard link, makes it refuse instead of truncating someone else's file), mode
// 0600, and removes it when done. It seals its block map with mapdirect::iomap_seal (natively with
// F_MAY_SEAL_IOMAP on a MAP_DIRECT kernel, which needs CAP_LINUX_IMMUTABLE;
// otherwise stabilised: allocated, written, unshared, FIEMAP-verified) and
// takes a lease to hear of conflicting opens. It then starts the worker, which
// drops to "nobody" (when run as root), shows that it cannot open the file by
// its path, receives the descriptor over a Unix socket (SCM_RIGHTS), maps it
// with direct_mapping and appends checksummed records, each made durable
// before the next. The permission to write the file, and (natively) to map
// its sealed block map, travels with the descriptor, not with the worker's
// credentials. The broker finally checks every record and that the seal held.
//
// The worker is confined before it sees the descriptor: a new session without
// a controlling terminal (no TIOCSTI into the invoker's shell), stdin
// /dev/null and stdout/stderr a pipe the broker relays (never the invoker's
// terminal), no descriptor but the socket (close_range), cwd "/", a minimal
// environment, PR_SET_NO_NEW_PRIVS, then setgroups(0), setgid, setuid, and a
// check that root cannot be regained.
#include <mapdirect/mapdirect.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

// The worker's whole environment, and the fd the socket has in it.
constexpr int worker_sock_fd = 3;
constexpr const char* worker_path_env = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

// Closes every descriptor from `first` up (close_range; a loop where the
// kernel lacks it). Async-signal-safe: used between fork and exec.
void close_from(unsigned first) {
  if (::syscall(SYS_close_range, first, ~0u, 0u) == 0) return;
  const long max = ::sysconf(_SC_OPEN_MAX);
  for (long fd = first; fd < (max > 0 ? max : 65536); ++fd) (void)::close(static_cast<int>(fd));
}

// Confines the worker (again: the broker already did most of this before
// exec, but the worker must not rely on how it was started): own session and
// no controlling terminal, only stdin/stdout/stderr (none a terminal) and the
// socket, cwd "/", a minimal environment, no new privileges on exec.
int confine_worker(int sock) {
  if (::getsid(0) != ::getpid() && ::setsid() < 0) return die("worker: setsid");
  const int tty = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (tty >= 0) {
    ::close(tty);
    std::fprintf(stderr, "seal_broker: worker: still has a controlling terminal\n");
    return 1;
  }
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) return die("worker: /dev/null");
  for (int fd = 0; fd <= 2; ++fd)
    if (::isatty(fd) && ::dup2(null, fd) < 0) return die("worker: dup2");
  ::close(null);
  if (sock != worker_sock_fd) {
    std::fprintf(stderr, "seal_broker: worker: the socket must be descriptor %d\n", worker_sock_fd);
    return 1;
  }
  close_from(worker_sock_fd + 1);
  if (::chdir("/") != 0) return die("worker: chdir /");
  if (::clearenv() != 0 || ::putenv(const_cast<char*>(worker_path_env)) != 0) return die("worker: environment");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return die("worker: PR_SET_NO_NEW_PRIVS");
  return 0;
}

// Effective and permitted capability masks from /proc/self/status ("" if unknown).
std::string capabilities() {
  std::ifstream in("/proc/self/status");
  std::string line, eff, prm;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) eff = line.substr(7);
    if (line.rfind("CapPrm:", 0) == 0) prm = line.substr(7);
  }
  auto trim = [](std::string v) { return v.erase(0, v.find_first_not_of(" \t")); };
  return trim(eff) + "/" + trim(prm);
}

bool all_zero_caps(const std::string& caps) {
  return !caps.empty() && caps.find_first_not_of("0/") == std::string::npos;
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
  // Groups first (needs CAP_SETGID), then the gid, then the uid last.
  if (::setgroups(0, nullptr) != 0) return die("worker: setgroups");
  if (::setgid(gid) != 0) return die("worker: setgid");
  if (::setuid(uid) != 0) return die("worker: setuid");
  // Nothing may lead back: not setuid/setgid to root, not a saved id, not a
  // supplementary group, not a capability.
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  const bool ids_ok = ::getresuid(&ru, &eu, &su) == 0 && ::getresgid(&rg, &eg, &sg) == 0 && ru == uid && eu == uid &&
                      su == uid && rg == gid && eg == gid && sg == gid && ::getgroups(0, nullptr) == 0;
  if (!ids_ok || ::setuid(0) == 0 || ::seteuid(0) == 0 || ::setgid(0) == 0 || ::setgroups(0, nullptr) == 0 ||
      !all_zero_caps(capabilities())) {
    std::fprintf(stderr, "seal_broker: worker: could regain privileges after dropping them\n");
    return 1;
  }
  std::printf("worker: dropped privileges to uid %u gid %u\n", static_cast<unsigned>(uid), static_cast<unsigned>(gid));
  return 0;
}

// --self-check: what the worker can still reach, one "worker-check: KEY VALUE"
// line each, for tests/examples to assert from the worker's side.
void report_worker_view() {
  const int tty = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  const int tty_errno = errno;
  if (tty >= 0) ::close(tty);
  std::printf("worker-check: session_leader %s\n", ::getsid(0) == ::getpid() ? "yes" : "no");
  std::printf("worker-check: ctty %s\n", tty >= 0 ? "present" : tty_errno == ENXIO ? "none" : std::strerror(tty_errno));
  std::string fds;
  int tty_fds = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      const int fd = std::atoi(e->d_name);
      if (fd == ::dirfd(d)) continue;
      fds += (fds.empty() ? "" : ",") + std::string(e->d_name);
      if (::isatty(fd)) ++tty_fds;
    }
    ::closedir(d);
  }
  std::printf("worker-check: fds %s\n", fds.c_str());
  std::printf("worker-check: tty_fds %d\n", tty_fds);
  char cwd[4096];
  std::printf("worker-check: cwd %s\n", ::getcwd(cwd, sizeof cwd) ? cwd : "?");
  std::size_t env_count = 0;
  for (char** e = environ; *e; ++e, ++env_count) std::printf("worker-check: env %s\n", *e);
  std::printf("worker-check: env_count %zu\n", env_count);
  std::printf("worker-check: no_new_privs %d\n", ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
  std::printf("worker-check: uid %u euid %u gid %u egid %u groups %d\n", static_cast<unsigned>(::getuid()),
              static_cast<unsigned>(::geteuid()), static_cast<unsigned>(::getgid()), static_cast<unsigned>(::getegid()),
              ::getgroups(0, nullptr));
  const int su = ::setuid(0);
  std::printf("worker-check: setuid0 %s\n", su == 0 ? "succeeded" : std::strerror(errno));
  const int sg = ::setgid(0);
  std::printf("worker-check: setgid0 %s\n", sg == 0 ? "succeeded" : std::strerror(errno));
  std::printf("worker-check: caps %s\n", capabilities().c_str());
}

int run_worker(int sock, bool self_check) {
  if (int rc = confine_worker(sock)) return rc;
  if (int rc = drop_privileges()) return rc;
  if (self_check) report_worker_view();
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
    if (auto ok = map.copy_persist(i * sizeof(record), &r, sizeof r); !ok)
      return die_md("worker: copy_persist", ok.error());
  }
  std::printf("worker: %zu records durable\n", record_count);
  if (auto ok = map.close(); !ok) return die_md("worker: close", ok.error());
  const char done = 'k';
  if (::send(sock, &done, 1, MSG_NOSIGNAL) != 1) return die("worker: reporting back");
  return 0;
}

// Copies the worker's output to ours until the worker closes it, with
// control characters (other than newline and tab) replaced: the worker is
// less trusted and must not drive the invoker's terminal.
void relay_output(int from) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      const auto c = static_cast<unsigned char>(buf[i]);
      if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) buf[i] = '?';
    }
    std::fwrite(buf, 1, static_cast<std::size_t>(n), stdout);
    std::fflush(stdout);
  }
  ::close(from);
}

// Removes DIR/seal_broker.log when the broker is done, by name relative to
// the directory it was created in.
struct remove_log {
  int dir = -1;
  const char* name = nullptr;
  bool created = false;
  ~remove_log() {
    if (created) (void)::unlinkat(dir, name, 0);
    if (dir >= 0) ::close(dir);
  }
};

int run_broker(const char* dir, bool self_check) {
  constexpr const char* log_name = "seal_broker.log";
  remove_log cleanup;
  cleanup.name = log_name;
  cleanup.dir = ::open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cleanup.dir < 0) return die("broker: open DIR");
  char* real = ::realpath(dir, nullptr);  // absolute: the worker runs in "/"
  const std::string path = std::string(real ? real : dir) + "/" + log_name;
  std::free(real);
  // Exclusive and without following a symlink: whatever already sits at the
  // name (a leftover, or a symlink or hard link planted in a shared DIR) is
  // refused, never truncated or handed to the worker.
  const int fd = ::openat(cleanup.dir, log_name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      std::fprintf(stderr,
                   "seal_broker: broker: %s already exists (a leftover, or planted by someone else); "
                   "refusing to use it: remove it or choose another DIR\n",
                   path.c_str());
      return 1;
    }
    return die("broker: create");
  }
  cleanup.created = true;
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
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return die("broker: pipe");
  // The worker's descriptors, prepared above 2 so that the dup2s below cannot
  // clobber one another whatever the invoker left open or closed.
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  const int child_sock = ::fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
  const int child_out = ::fcntl(out[1], F_DUPFD_CLOEXEC, 10);
  const int child_null = null_fd < 0 ? -1 : ::fcntl(null_fd, F_DUPFD_CLOEXEC, 10);
  if (child_sock < 0 || child_out < 0 || child_null < 0) return die("broker: preparing the worker's descriptors");
  char sock_arg[16];
  std::snprintf(sock_arg, sizeof sock_arg, "%d", worker_sock_fd);
  const char* const worker_argv[] = {"seal_broker", "--worker", sock_arg, self_check ? "--self-check" : nullptr,
                                     nullptr};
  const char* const worker_env[] = {worker_path_env, nullptr};
  const pid_t pid = ::fork();
  if (pid < 0) return die("broker: fork");
  if (pid == 0) {
    // Only async-signal-safe calls until exec. The worker gets a session of
    // its own (no controlling terminal), stdin /dev/null, stdout/stderr the
    // relay pipe, the socket as fd 3 and nothing else, cwd "/", a minimal
    // environment, and no way to gain privileges through exec.
    if (::setsid() < 0 || ::dup2(child_null, 0) < 0 || ::dup2(child_out, 1) < 0 || ::dup2(child_out, 2) < 0 ||
        ::dup2(child_sock, worker_sock_fd) < 0)
      ::_exit(127);
    close_from(worker_sock_fd + 1);
    if (::chdir("/") != 0 || ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(127);
    ::execve("/proc/self/exe", const_cast<char* const*>(worker_argv), const_cast<char* const*>(worker_env));
    ::_exit(127);
  }
  ::close(sv[1]);
  ::close(out[1]);
  ::close(null_fd);
  ::close(child_sock);
  ::close(child_out);
  ::close(child_null);
  // Relay the worker's output from a thread that takes no signals (the
  // seal's lease signal must reach the broker's own handling).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  std::thread relay(relay_output, out[0]);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  // On every return: close our end of the socket (so a waiting worker sees
  // EOF and exits, closing the pipe), then wait for the relay.
  struct relay_joiner {
    std::thread& thread;
    int sock;
    ~relay_joiner() {
      ::close(sock);
      if (thread.joinable()) thread.join();
    }
  } join_relay{relay, sv[0]};
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
  relay.join();
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
                                      : seal.lease_broken()
                                          ? "BROKEN"
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
  if ((argc == 3 || (argc == 4 && std::strcmp(argv[3], "--self-check") == 0)) && std::strcmp(argv[1], "--worker") == 0)
    return run_worker(std::atoi(argv[2]), argc == 4);
  if (argc == 3 && std::strcmp(argv[1], "--self-check") == 0 && argv[2][0] != '-') return run_broker(argv[2], true);
  if (argc != 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: %s [--self-check] DIR\n", argv[0]);
    return 2;
  }
  return run_broker(argv[1], false);
}
