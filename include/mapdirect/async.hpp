// SPDX-License-Identifier: MIT
// Asynchronous durability and group commit for page-granular (shared)
// mappings: persist_async() and group_committer. The only mapdirect header
// that includes liburing; link mapdirect::uring.
//
// The guarantee. A request for [offset, offset+length) of a shared mapping
// completes successfully only after an fdatasync of the file (io_uring
// IORING_OP_FSYNC with IORING_FSYNC_DATASYNC, or fdatasync(2) on the fallback
// thread or on a thread blocked in persist()/wait()) that was *started after
// the request was enqueued* has returned 0, and no earlier flush of that file
// through the committer (nor, at the call, the mapping's own msync) has
// failed. Hence every store to the range made before
// the persist_async()/persist() call is durable to the extent fdatasync makes
// it so: the data plus the metadata needed to read it back, on a device that
// honours cache flushes. Stores made after the call may or may not be
// included; nothing is claimed for them. fdatasync covers the whole file, so a
// completion in fact covers every earlier store to the file, but only the
// requested range is promised. Requests enqueued while a flush is in flight
// wait for the next one, which covers them all at once (group commit); at most
// one flush per file is in flight.
//
// Waiting. persist_handle::wait() blocks, ready() polls, a callback runs once
// at completion, and notify_fd() is an eventfd that turns readable after
// completions, so an event loop needs no blocked thread. A thread blocked in
// persist()/wait() while its file has no flush in flight runs the fdatasync
// itself (committer_options::inline_flush); other flushes run on the backend:
// IORING_OP_FSYNC reaped by the committer's one thread, or fdatasync(2) on
// that thread when io_uring is unavailable. Destroying the committer waits for
// every pending request (and its callback); handles stay valid afterwards.
//
// On sync or direct mappings (cache-line or byte granularity) persist_async()
// runs the CPU flush and fence at once and returns a handle that is already
// complete (a callback is invoked before persist_async returns).
//
// Failures (fsyncgate). A flush error (EIO, ENOSPC, EDQUOT) reaches every
// request that flush covered, with that errno. Linux reports a write-back
// error once per open file and may already have dropped the dirty pages
// (marked them clean), so a later fdatasync would return 0 for data that never
// reached the disk. Therefore every request still pending on that file, and
// every later one, fails with errc::durability_lost until
// clear_durability_error(). What the user must do: treat every store since the
// last successful completion as lost, rewrite it from its own copy (log,
// memory), then call clear_durability_error(mapping) and persist again; if it
// cannot be rewritten, close the mapping and recover the file as after a crash.
//
// Whose errors are seen. The committer flushes each file through an open file
// description of its own (detail::reopen_description): one opened now sees
// every write-back error from now on, whoever else consumes it. Every
// write-back error it sees marks the file lost process-wide
// (detail::durability_registry, by st_dev/st_ino), and every request on a
// file marked lost, through any committer or mapping, fails with
// errc::durability_lost until clear_durability_error(). Where the reopen is
// refused (EACCES: a 0600 file of another user received over SCM_RIGHTS; no
// /proc; a file this process holds a lease on, see below) the committer
// flushes through a dup of the mapping's descriptor, i.e. the mapping's
// description. The limit, precisely: on that shared description Linux
// reports an error once, to whichever fsync/fdatasync/msync/sync_file_range
// (or close) on it checks first. If a mapdirect consumer checks first, the
// registry carries the error to the committer; if code outside mapdirect does
// (the caller's own fdatasync on the fd it passed, or on a dup of it), the
// error is gone and the committer's next flush reports success for data the
// kernel may have dropped. So where the reopen can be refused, do not flush
// that descriptor yourself: persist through mapdirect only.
//
// Leases. A file on which this process holds a lease (an iomap_seal with
// seal_options::lease, on this description or another) is never reopened
// (the open would break the process's own lease and block for the
// lease-break time): the committer reuses a dup instead. No open ever runs
// under the committer's lock.
//
// fork(). A child process inherits the committer's memory but none of its
// threads, and its lock may be held by a thread that exists only in the
// parent. In a child, an inherited group_committer never touches its lock,
// ring or thread: persist()/persist_async() and an attached mapping's persist
// run msync(MS_SYNC) on the calling thread and complete at once (success
// means durable, as for an unattached mapping; last_error_detail() and
// backend_detail() say "inherited across fork()"); wait() on a handle
// inherited pending runs fdatasync on the calling thread (an fdatasync
// started after the request covers it), ready() stays false until then, and
// its callback never runs in the child (the parent runs it); notify_fd() is
// -1; destroying it closes the child's copies of its descriptors and frees
// nothing else. The child can create committers of its own. The parent is
// unaffected. Every descriptor mapdirect opens is close-on-exec.
#ifndef MAPDIRECT_ASYNC_HPP
#define MAPDIRECT_ASYNC_HPP

#include "config.hpp"
#include "detail/descriptor.hpp"
#include "detail/durability.hpp"
#include "detail/seal_registry.hpp"
#include "detail/syscall.hpp"
#include "error.hpp"
#include "mapping.hpp"

#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <sched.h>
#include <cstring>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>

MAPDIRECT_BEGIN_NAMESPACE

/// What runs a group_committer's flushes.
enum class commit_backend {
  io_uring,  ///< IORING_OP_FSYNC (datasync) and IORING_OP_SYNC_FILE_RANGE on a ring, reaped by one thread
  thread,    ///< a committer thread calling fdatasync(2) (io_uring unavailable or refused)
};

/// Name of a backend ("io_uring").
constexpr const char* to_string(commit_backend b) noexcept {
  return b == commit_backend::io_uring ? "io_uring" : "thread";
}

/// Options for group_committer::create.
struct committer_options {
  /// Use the fdatasync thread even when io_uring works (tests, or to compare).
  bool force_thread = false;
  /// When a request arrives while its file's flush is in flight, start
  /// write-back of its pages at once (SYNC_FILE_RANGE_WRITE) so that the next
  /// flush has less left to write. Off by default: on the development
  /// machine's disk it gained nothing for 128 B and 1 MiB records and cost
  /// 15-40% for 64 KiB ones (pages written twice); try it where write-back and
  /// the device flush overlap.
  bool early_writeback = false;
  /// A thread blocked in persist()/wait() while its file has no flush in
  /// flight runs the fdatasync itself, saving two thread hand-offs per flush;
  /// false sends every flush through the backend.
  bool inline_flush = true;
  /// With inline_flush: a thread that ran a flush runs up to this many in a
  /// row while other threads wait for the next one (no wake-up between
  /// flushes), at the cost of that many flush times of extra latency for
  /// itself and of its own appends meanwhile. 1 (hand the next flush to a
  /// waiter) measured as good or better with 2-8 writers on this disk.
  unsigned inline_rounds = 1;
  /// Submission queue size of the ring.
  unsigned ring_entries = 64;
};

/// Counters of a group_committer (monotonic).
struct committer_stats {
  std::uint64_t requests = 0;    ///< page-granular requests enqueued
  std::uint64_t flushes = 0;     ///< fdatasyncs started
  std::uint64_t writebacks = 0;  ///< early write-backs started
};

namespace detail {
class commit_core;
struct commit_lane;

// One enqueued request. Owned by reference count: the handle, and the core
// while the request is pending.
struct commit_request {
  commit_request() noexcept = default;
  commit_request(const commit_request&) = delete;
  commit_request& operator=(const commit_request&) = delete;
  virtual ~commit_request() = default;
  // Runs the user's callback, if any (never under the core's lock).
  virtual void on_complete(const std::error_code&) noexcept {}

  void retain() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
  inline void release() noexcept;

  std::atomic<unsigned> refs{1};
  std::atomic<bool> done{false};
  std::error_code error;        // written under the core's lock before `done`
  std::uint64_t ticket = 0;     // order of arrival on its lane
  bool waited = false;          // a thread blocks on it (may run the flush itself)
  commit_request* next = nullptr;
  commit_lane* lane = nullptr;
  commit_core* core = nullptr;  // holds a reference on the core
};

template <class F>
struct commit_request_with final : commit_request {
  explicit commit_request_with(F&& f) noexcept : fn(std::move(f)) {}
  void on_complete(const std::error_code& ec) noexcept override {
    if (ec) fn(result<void>(ec));
    else fn(result<void>(outcome::success()));
  }
  F fn;
};

// Fork detection. A child of fork() has none of the committer's threads, its
// mutex may be held by a thread that does not exist there, and its ring is
// the parent's (shared memory): an inherited core must touch none of them.
// The atfork child handler bumps a generation that each core compares with
// the one it was created in (the pid is compared where the handler could not
// be registered).
inline std::atomic<unsigned long>& fork_generation() noexcept {
  static std::atomic<unsigned long> generation{0};
  return generation;
}
inline void on_fork_child() noexcept { fork_generation().fetch_add(1, std::memory_order_relaxed); }
inline bool fork_hook_installed() noexcept {
  static const bool installed = ::pthread_atfork(nullptr, nullptr, &on_fork_child) == 0;
  return installed;
}

// One file (by device and inode): its flush sequence and pending requests.
struct commit_lane {
  commit_lane* next_lane = nullptr;
  dev_t dev = 0;
  ino_t ino = 0;
  int fd = -1;                 // the committer's descriptor of the file (see open_lane)
  bool own_description = false;  // fd is a description of its own (else a dup: see reopen_error)
  int reopen_error = 0;        // why the reopen was refused (EACCES, EBUSY: leased, ...)
  std::uint32_t index = 0;
  std::uint64_t issued = 0;    // last ticket handed out
  std::uint64_t covered = 0;   // tickets <= covered belong to a flush already started
  std::uint32_t flight = 0;    // id of the flush in flight (stale ring completions are ignored)
  bool in_flight = false;      // a flush is running (or queued for the fallback thread)
  bool queued = false;         // fallback thread: waiting to be picked up
  int failed = 0;              // sticky errno of a failed flush (fsyncgate)
  // Requesters' descriptors already checked once through fdatasync after this
  // lane's own description existed (see enqueue). A reused number names a
  // description opened after the checked one was closed, hence after the
  // lane's: nothing before the lane's own description can hide behind it.
  int checked_fds[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
  unsigned checked_next = 0;
  bool was_checked(int f) const noexcept {
    for (int c : checked_fds)
      if (c == f) return true;
    return false;
  }
  void note_checked(int f) noexcept { checked_fds[checked_next++ % 8] = f; }
  commit_request* head = nullptr;
  commit_request* tail = nullptr;
};

// Completed requests collected under the lock, finished after it is released.
struct done_list {
  commit_request* head = nullptr;
  commit_request* tail = nullptr;
  void push(commit_request* r) noexcept {
    r->next = nullptr;
    if (tail) tail->next = r;
    else head = r;
    tail = r;
  }
};


class commit_core final : public page_persister {
 public:
  // user_data of ring entries: kind in the top bits, lane index, flush id.
  static constexpr std::uint64_t kind_fsync = 1, kind_writeback = 2, kind_stop = 3;

  commit_core() noexcept = default;
  commit_core(const commit_core&) = delete;
  commit_core& operator=(const commit_core&) = delete;
  ~commit_core() = default;

  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Never deleted in a forked child: its mutex and condition variables may be
  // in use by threads that exist only in the parent (destroying them can block).
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1 && !inherited()) delete this;
  }

  // True in a child of fork() (this core belongs to an ancestor process).
  bool inherited() const noexcept {
    if (fork_hooked_) return fork_generation().load(std::memory_order_relaxed) != fork_gen_;
    return ::getpid() != owner_pid_;
  }

  std::error_code start(const committer_options& o) noexcept {
    early_writeback_ = o.early_writeback;
    inline_flush_ = o.inline_flush;
    inline_rounds_ = o.inline_rounds == 0 ? 1 : o.inline_rounds;
    fork_hooked_ = fork_hook_installed();
    fork_gen_ = fork_generation().load(std::memory_order_relaxed);
    owner_pid_ = ::getpid();
    event_fd_ = sys::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (event_fd_ < 0) return fail_errno(errno, "group_committer: eventfd");
    if (o.force_thread) {
      std::snprintf(backend_detail_, sizeof backend_detail_, "thread: forced by committer_options::force_thread");
    } else if (open_ring(o.ring_entries == 0 ? 64 : o.ring_entries)) {
      backend_ = commit_backend::io_uring;
    }
    // Block every signal in the committer thread: user handlers must not run there.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    const int rc = pthread_create(&thread_, nullptr, &commit_core::thread_main, this);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (rc != 0) {
      if (ring_ok_) io_uring_queue_exit(&ring_);
      ring_ok_ = false;
      sys::close_quietly(event_fd_);
      event_fd_ = -1;
      return fail_errno(rc, "group_committer: pthread_create");
    }
    thread_started_ = true;
    return {};
  }

  // Waits for every pending request, stops the thread, releases the ring.
  void shutdown() noexcept {
    if (inherited()) return abandon_inherited();
    {
      std::unique_lock<std::mutex> lk(mu_);
      closing_ = true;
      for (commit_lane* l = lanes_; l; l = l->next_lane) kick_locked(*l);
      done_list failed = deferred_.take();
      lk.unlock();
      complete(failed);
      lk.lock();
      cv_.wait(lk, [&] {
        for (commit_lane* l = lanes_; l; l = l->next_lane)
          if (l->in_flight || l->head) return false;
        return completing_ == 0;
      });
      stop_ = true;
      if (backend_ == commit_backend::io_uring) {
        // The reap thread leaves on this NOP's completion; retry until the
        // queue has room and the submit is taken (it drains as it completes).
        for (int attempt = 0;; ++attempt) {
          io_uring_sqe* sqe = get_sqe_locked();
          if (sqe) {
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data64(sqe, kind_stop << 62);
            note_sqe(sqe);
            if (submit_locked() >= 0 || attempt >= 1000) break;
          } else if (attempt >= 1000) {
            break;
          }
          ::sched_yield();
        }
      }
      worker_cv_.notify_all();
    }
    if (thread_started_) pthread_join(thread_, nullptr);
    thread_started_ = false;
    if (ring_ok_) io_uring_queue_exit(&ring_);
    ring_ok_ = false;
    sys::close_quietly(event_fd_);
    event_fd_ = -1;
    while (commit_lane* l = lanes_) {
      lanes_ = l->next_lane;
      close_keeping_locks_quietly(l->fd);
      delete l;
    }
  }

  commit_backend backend() const noexcept { return backend_; }
  const char* backend_detail() const noexcept {
    return inherited() ? inherited_detail : backend_detail_;
  }
  int notify_fd() const noexcept { return inherited() ? -1 : event_fd_; }

  committer_stats stats() noexcept {
    if (inherited()) return stats_;  // only this thread exists in the child
    std::lock_guard<std::mutex> g(mu_);
    return stats_;
  }

  static constexpr const char* inherited_detail =
      "inherited across fork(): this process has no committer thread; each persist runs msync(MS_SYNC) on the "
      "calling thread (create a group_committer in this process for group commit)";

  // A forked child's persist through an inherited core: msync of the range on
  // the calling thread, as an unattached mapping does.
  std::error_code persist_inherited(int fd, void* addr, std::size_t length) noexcept {
    struct stat st {};
    if (sys::fstat(fd, &st) != 0) return fail_errno(errno, "group_committer (inherited across fork): fstat");
    if (durability_registry::is_lost(st.st_dev, st.st_ino)) return registry_lost_error();
    if (length && sys::msync(addr, length, MS_SYNC) != 0) {
      const int e = errno;
      if (is_writeback_error(e)) durability_registry::mark_lost(st.st_dev, st.st_ino, fd);
      set_detail("group_committer (inherited across fork): msync(MS_SYNC) failed: %s (errno %d)", errno_name(e), e);
      return errno_code(e);
    }
    set_detail("group_committer: %s", inherited_detail);
    return {};
  }

  // Enqueues a request for [file_offset, +length) of fd. On success the core
  // holds its own reference on `req`.
  std::error_code enqueue(int fd, std::uint64_t file_offset, std::size_t length, commit_request* req,
                          bool waited) noexcept {
    struct stat st {};
    if (sys::fstat(fd, &st) != 0) return fail_errno(errno, "group_committer: fstat");
    // A write-back error some mapdirect consumer saw on this file (issue 10 item 2).
    if (durability_registry::is_lost(st.st_dev, st.st_ino)) return registry_lost_error();
    std::uint64_t wb_off = 0, wb_len = 0;
    done_list failed;
    // A file's first request opens its descriptor outside the lock: an open
    // can block (a lease break, FUSE), and nobody may wait on mu_ meanwhile.
    commit_lane* fresh = nullptr;
    for (;;) {
      std::unique_lock<std::mutex> lk(mu_);
      if (closing_) {
        lk.unlock();
        discard_lane(fresh);
        return fail(errc::not_mapped, "group_committer: closed (being destroyed)");
      }
      commit_lane* l = find_lane_locked(st.st_dev, st.st_ino);
      if (!l && fresh) {
        l = fresh;
        fresh = nullptr;
        l->index = next_lane_index_++;
        l->next_lane = lanes_;
        lanes_ = l;
      }
      if (!l) {
        lk.unlock();
        std::error_code ec;
        fresh = open_lane(fd, st, ec);
        if (!fresh) return ec;
        continue;
      }
      // A write-back error that happened after the requester's description
      // was opened but before this lane's own description existed is
      // reported only to the requester's: check it once, now that the lane's
      // description exists, so that no error falls between the two.
      // sync_file_range(WAIT_AFTER) waits for write-back in flight and
      // reports (and consumes) the description's unseen write-back error.
      if (!l->was_checked(fd)) {
        lk.unlock();
        if (sys::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
          const int e = errno;
          discard_lane(fresh);
          if (is_writeback_error(e)) {
            durability_registry::mark_lost(st.st_dev, st.st_ino, fd);
            return fail_errno(e, "group_committer: a write-back error reported to the mapping's own description "
                                 "before this committer flushed the file");
          }
          return fail_errno(e, "group_committer: sync_file_range(WAIT_AFTER) on the mapping's description");
        }
        lk.lock();
        l->note_checked(fd);
        continue;
      }
      // Every lane failure is also in the registry, which was clear just now:
      // the loss was cleared through another committer or mapping.
      if (l->failed && !durability_registry::is_lost(st.st_dev, st.st_ino)) l->failed = 0;
      if (l->failed) {
        const int e = l->failed;
        lk.unlock();
        discard_lane(fresh);
        return lost_error(e);
      }
      req->ticket = ++l->issued;
      req->lane = l;
      req->waited = waited;
      req->retain();
      req->next = nullptr;
      if (l->tail) l->tail->next = req;
      else l->head = req;
      l->tail = req;
      ++stats_.requests;
      if (l->in_flight && early_writeback_) {
        ++stats_.writebacks;
        if (backend_ == commit_backend::io_uring) {
          submit_writeback_locked(*l, file_offset, length);
        } else {
          wb_off = file_offset;
          wb_len = length;
        }
      }
      kick_locked(*l);
      failed = deferred_.take();
      break;
    }
    discard_lane(fresh);  // another thread added the file's lane meanwhile
    complete(failed);
    // Fallback backend: the early write-back runs on the caller (it only
    // starts I/O; its errors surface in the next fdatasync).
    if (wb_len) (void)sys::sync_file_range(fd, static_cast<off_t>(wb_off), static_cast<off_t>(wb_len),
                                           SYNC_FILE_RANGE_WRITE);
    return {};
  }

  // Blocks until `req` completes; may run its lane's flush on this thread.
  std::error_code wait(commit_request* req) noexcept {
    if (inherited()) return wait_inherited(req);
    if (!req->done.load(std::memory_order_acquire)) {
      std::unique_lock<std::mutex> lk(mu_);
      req->waited = true;
      while (!req->done.load(std::memory_order_relaxed)) {
        commit_lane& l = *req->lane;
        if (inline_flush_ && !l.in_flight && !l.failed && req->ticket > l.covered) {
          flush_inline(l, lk);
          continue;
        }
        cv_.wait(lk);
      }
    }
    return req->error;
  }

  // page_persister: synchronous persist through the committer (group commit).
  result<void> persist_pages(int fd, std::uint64_t file_offset, void* addr, std::size_t length) noexcept override {
    if (inherited()) {
      if (auto ec = persist_inherited(fd, addr, length)) return ec;
      return outcome::success();
    }
    auto* req = new (std::nothrow) commit_request;
    if (!req) return fail_errno(ENOMEM, "group_committer: allocating a request");
    req->core = this;
    retain();
    if (auto ec = enqueue(fd, file_offset, length, req, true)) {
      req->release();
      return ec;
    }
    const std::error_code ec = wait(req);
    req->release();
    if (ec) {
      describe_error(ec);
      return ec;
    }
    return outcome::success();
  }

  void clear_failure(int fd) noexcept {
    struct stat st {};
    if (sys::fstat(fd, &st) != 0) return;
    durability_registry::clear(st.st_dev, st.st_ino);
    if (inherited()) return;  // the lanes belong to the parent's threads
    std::lock_guard<std::mutex> g(mu_);
    if (commit_lane* l = find_lane_locked(st.st_dev, st.st_ino)) l->failed = 0;
  }

  // Records the detail of a request's error for the calling thread.
  static void describe_error(const std::error_code& ec) noexcept {
    if (ec == errc::durability_lost)
      set_detail("group_committer: an earlier flush of this file failed (through this committer or another "
                 "mapdirect consumer of the file); the kernel may have dropped dirty pages (rewrite the data, then "
                 "clear_durability_error())");
    else if (ec.category() == std::system_category())
      set_detail("group_committer: fdatasync of the file failed: %s (errno %d)", errno_name(ec.value()), ec.value());
  }

 private:
  bool open_ring(unsigned entries) noexcept {
    io_uring_params p{};
    p.flags = IORING_SETUP_CLAMP;
    const long fd = sys::io_uring_setup(entries, &p);
    if (fd < 0) {
      const int e = errno;
      char disabled[16] = {};
      const bool sysctl = sys::read_text("/proc/sys/kernel/io_uring_disabled", disabled, sizeof disabled) > 0 &&
                          disabled[0] != '0';
      std::snprintf(backend_detail_, sizeof backend_detail_, "thread: io_uring_setup failed with %s%s",
                    errno_name(e),
                    e == ENOSYS   ? " (kernel without io_uring, or blocked by seccomp)"
                    : e == EPERM  ? (sysctl ? " (kernel.io_uring_disabled)" : " (refused by policy or seccomp)")
                    : e == ENOMEM ? " (locked-memory limit)"
                                  : "");
      return false;
    }
    if (const int rc = io_uring_queue_mmap(static_cast<int>(fd), &p, &ring_); rc < 0) {
      sys::close_quietly(static_cast<int>(fd));
      std::snprintf(backend_detail_, sizeof backend_detail_, "thread: mapping the io_uring failed with %s",
                    errno_name(-rc));
      return false;
    }
    ring_ok_ = true;
    // io_uring_queue_init does this after mapping; io_uring_queue_mmap (2.3) does
    // not: without it every submission would reuse the first SQE.
    for (unsigned i = 0; i < p.sq_entries; ++i) ring_.sq.array[i] = i;
    // The opcodes we need (fsync 5.1, sync_file_range 5.2); probing needs 5.6.
    bool have_fsync = true;
    if (io_uring_probe* pr = io_uring_get_probe_ring(&ring_)) {
      have_fsync = io_uring_opcode_supported(pr, IORING_OP_FSYNC) != 0;
      if (!io_uring_opcode_supported(pr, IORING_OP_SYNC_FILE_RANGE)) early_writeback_ = false;
      io_uring_free_probe(pr);
    } else {
      early_writeback_ = false;  // pre-5.6 kernel: cannot tell whether 5.2's opcode exists
    }
    // A round trip proves io_uring_enter works (seccomp may allow setup only).
    int rt = -EINVAL;
    if (have_fsync) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, 0);
      io_uring_cqe* cqe = nullptr;
      rt = io_uring_submit_and_wait(&ring_, 1);
      if (rt >= 0) rt = io_uring_wait_cqe(&ring_, &cqe);
      if (rt >= 0 && cqe) {
        rt = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
      }
    }
    if (!have_fsync || rt < 0) {
      io_uring_queue_exit(&ring_);
      ring_ok_ = false;
      std::snprintf(backend_detail_, sizeof backend_detail_, "thread: %s",
                    !have_fsync ? "kernel's io_uring lacks IORING_OP_FSYNC"
                    : rt == -ENOSYS || rt == -EPERM ? "io_uring_enter refused (seccomp or policy)"
                                                    : "io_uring round trip failed");
      return false;
    }
    std::snprintf(backend_detail_, sizeof backend_detail_, "io_uring: IORING_OP_FSYNC(DATASYNC)%s",
                  early_writeback_ ? " + IORING_OP_SYNC_FILE_RANGE(WRITE)" : "");
    return true;
  }

  static std::error_code lost_error(int e) noexcept {
    return fail(errc::durability_lost,
                "group_committer: an earlier flush of this file failed with %s; the kernel may have dropped dirty "
                "pages (rewrite the data, then clear_durability_error())",
                errno_name(e));
  }

  static std::error_code registry_lost_error() noexcept {
    return fail(errc::durability_lost,
                "group_committer: a write-back error of this file was reported earlier (to this committer or another "
                "mapdirect consumer of the file); the kernel may have dropped dirty pages (rewrite the data, then "
                "clear_durability_error())");
  }

  // A lane for the file behind fd, with a description of its own where
  // possible (issue 10 item 2): Linux reports a write-back error once per open
  // file description, and one opened now sees every error from now on. Never
  // reopens a file this process holds a lease on, which would break that
  // lease (issue 10 item 4): then, and when the reopen is refused (EACCES on a
  // 0600 file received over SCM_RIGHTS, no /proc), a dup of fd (see the
  // header comment for what a shared description can miss). Called without mu_.
  static commit_lane* open_lane(int fd, const struct stat& st, std::error_code& ec) noexcept {
    auto* l = new (std::nothrow) commit_lane;
    if (!l) {
      ec = fail_errno(ENOMEM, "group_committer: allocating a file lane");
      return nullptr;
    }
    const own_descriptor d = reopen_description(fd, O_RDONLY, seal_registry::leased(st.st_dev, st.st_ino));
    if (d.fd < 0) {
      const int e = errno;
      delete l;
      ec = fail_errno(e, "group_committer: opening the file for flushing");
      return nullptr;
    }
    l->fd = d.fd;
    l->own_description = d.own_description;
    l->reopen_error = d.reopen_error;
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    return l;
  }

  static void discard_lane(commit_lane* l) noexcept {
    if (!l) return;
    close_keeping_locks_quietly(l->fd);
    delete l;
  }

  // The ring's SQE as queued, for the seam (read back from the SQE itself).
  static void note_sqe(const io_uring_sqe* sqe) noexcept {
    sys::ring_sqe(sqe->opcode, sqe->fd, sqe->fsync_flags, sqe->user_data);
  }
  int submit_locked() noexcept { return sys::ring_submit(io_uring_submit(&ring_)); }

  commit_lane* find_lane_locked(dev_t dev, ino_t ino) noexcept {
    for (commit_lane* l = lanes_; l; l = l->next_lane)
      if (l->dev == dev && l->ino == ino) return l;
    return nullptr;
  }

  commit_lane* lane_by_index_locked(std::uint32_t index) noexcept {
    for (commit_lane* l = lanes_; l; l = l->next_lane)
      if (l->index == index) return l;
    return nullptr;
  }

  io_uring_sqe* get_sqe_locked() noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
      // Every submission is flushed at once, so the queue frees on submit.
      (void)submit_locked();
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void submit_writeback_locked(commit_lane& l, std::uint64_t off, std::size_t len) noexcept {
    io_uring_sqe* sqe = get_sqe_locked();
    if (!sqe) return;  // advisory only
    // The opcode's length is 32 bits; 0 means "to the end of the file".
    const unsigned n = len > 0xffffffffu ? 0u : static_cast<unsigned>(len);
    io_uring_prep_sync_file_range(sqe, l.fd, n, off, SYNC_FILE_RANGE_WRITE);
    io_uring_sqe_set_data64(sqe, kind_writeback << 62);
    note_sqe(sqe);
    // Counted once prepared: a failed submit leaves the SQE in the ring, and
    // the next submit sends it, so its completion will still arrive.
    ++writebacks_in_ring_;
    (void)submit_locked();
  }

  // Starts a flush of `l` if it has uncovered requests and none is running:
  // leaves it to a blocked waiter (inline_flush) or hands it to the backend.
  void kick_locked(commit_lane& l) noexcept {
    if (l.in_flight || l.issued <= l.covered || !l.head) return;
    if (inline_flush_) {
      for (commit_request* r = l.head; r; r = r->next)
        if (r->waited && r->ticket > l.covered) {
          cv_.notify_all();
          return;
        }
    }
    l.in_flight = true;
    ++l.flight;
    if (backend_ == commit_backend::thread) {
      l.queued = true;
      worker_cv_.notify_one();
      return;
    }
    io_uring_sqe* sqe = get_sqe_locked();
    int rc = -EBUSY;
    if (sqe) {
      io_uring_prep_fsync(sqe, l.fd, IORING_FSYNC_DATASYNC);
      io_uring_sqe_set_data64(sqe, (kind_fsync << 62) | (std::uint64_t{l.index} << 32) | l.flight);
      // Everything enqueued so far is written before this submission.
      const std::uint64_t cover = l.issued;
      note_sqe(sqe);
      rc = submit_locked();
      if (rc >= 0) {
        l.covered = cover;
        ++stats_.flushes;
        return;
      }
    }
    // Not submitted: fail the requests it would have covered (nothing is lost
    // on disk, so this is not sticky); a stale completion is ignored by id.
    done_list done;
    const std::uint64_t cover = l.issued;
    l.covered = cover;
    finish_flush_locked(l, cover, -rc, false, done);
    deferred_.push_list(done);
  }

  // Ends the flush of `l` that covered tickets <= cover with errno `e`.
  void finish_flush_locked(commit_lane& l, std::uint64_t cover, int e, bool sticky_allowed, done_list& done) noexcept {
    l.in_flight = false;
    l.queued = false;
    const bool sticky = e != 0 && sticky_allowed && is_writeback_error(e);
    // Every write-back error is recorded process-wide; a file some other
    // mapdirect consumer lost data of is never reported durable.
    if (sticky) durability_registry::mark_lost(l.dev, l.ino, l.fd);
    const bool lost = l.failed || durability_registry::is_lost(l.dev, l.ino);
    while (commit_request* r = l.head) {
      std::error_code ec;
      if (r->ticket <= cover)
        ec = e ? errno_code(e) : lost ? make_error_code(errc::durability_lost) : std::error_code{};
      else if (sticky || lost) ec = make_error_code(errc::durability_lost);
      else break;
      l.head = r->next;
      if (!l.head) l.tail = nullptr;
      r->error = ec;
      ++completing_;
      done.push(r);
    }
    if (sticky) l.failed = e;
    cv_.notify_all();
  }

  // Fails every pending request of `l` with durability_lost (a write-back
  // error was consumed where no request could receive it). A flush in flight
  // stays in flight; its completion then finds nothing left to finish.
  void fail_pending_locked(commit_lane& l, done_list& done) noexcept {
    while (commit_request* r = l.head) {
      l.head = r->next;
      r->error = make_error_code(errc::durability_lost);
      ++completing_;
      done.push(r);
    }
    l.tail = nullptr;
    cv_.notify_all();
  }

  // Runs the callbacks outside the lock, then marks the requests done (so
  // that wait() returns only after its callback), signals the eventfd and
  // drops the core's references.
  void complete(done_list& done) noexcept {
    if (!done.head) return;
    for (commit_request* r = done.head; r; r = r->next) r->on_complete(r->error);
    {
      std::lock_guard<std::mutex> g(mu_);
      for (commit_request* r = done.head; r; r = r->next) {
        r->done.store(true, std::memory_order_release);
        --completing_;
      }
      // Under the lock, so that shutdown cannot close the descriptor meanwhile.
      const std::uint64_t one = 1;
      (void)sys::write(event_fd_, &one, sizeof one);
      cv_.notify_all();
    }
    commit_request* r = done.head;
    while (r) {
      commit_request* next = r->next;
      r->release();
      r = next;
    }
    done.head = done.tail = nullptr;
  }

  static bool has_uncovered_waiter(const commit_lane& l) noexcept {
    for (const commit_request* r = l.head; r; r = r->next)
      if (r->waited && r->ticket > l.covered) return true;
    return false;
  }

  // The calling (blocked) thread runs the flush of `l`, and keeps flushing
  // (up to inline_rounds_ times) while other threads wait for a next flush:
  // the device then never waits for a thread to wake up between flushes.
  void flush_inline(commit_lane& l, std::unique_lock<std::mutex>& lk) noexcept {
    for (unsigned round = 1;; ++round) {
      l.in_flight = true;
      const std::uint32_t id = ++l.flight;
      const std::uint64_t cover = l.issued;
      l.covered = cover;
      ++stats_.flushes;
      const int fd = l.fd;
      lk.unlock();
      const int e = sys::fdatasync(fd) == 0 ? 0 : errno;
      lk.lock();
      done_list done;
      if (l.flight == id) finish_flush_locked(l, cover, e, true, done);
      const bool again = round < inline_rounds_ && !l.in_flight && !l.failed && has_uncovered_waiter(l);
      if (again) {
        // Claim the next flush before releasing the lock for the callbacks.
        l.in_flight = true;
        ++l.flight;
      } else {
        kick_locked(l);
      }
      done_list more = deferred_.take();
      lk.unlock();
      complete(done);
      complete(more);
      lk.lock();
      if (!again) return;
      l.in_flight = false;
    }
  }

  static void* thread_main(void* self) noexcept {
    auto* c = static_cast<commit_core*>(self);
    if (c->backend_ == commit_backend::io_uring) c->reap_loop();
    else c->worker_loop();
    return nullptr;
  }

  // io_uring backend: reaps completions, starts the next flushes.
  void reap_loop() noexcept {
    bool stopping = false;
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc < 0) {
        if (rc == -EINTR || rc == -EAGAIN || rc == -ETIME) continue;
        // The ring is unusable: fail whatever is in flight rather than hang.
        std::unique_lock<std::mutex> lk(mu_);
        done_list done;
        for (commit_lane* l = lanes_; l; l = l->next_lane)
          if (l->in_flight) finish_flush_locked(*l, l->covered, -rc, false, done);
        const bool quit = stop_;
        lk.unlock();
        complete(done);
        if (quit) return;
        continue;
      }
      struct entry {
        std::uint64_t data;
        int res;
      } batch[32];
      unsigned n = 0;
      while (n < 32 && io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe) {
        batch[n++] = {io_uring_cqe_get_data64(cqe), cqe->res};
        io_uring_cqe_seen(&ring_, cqe);
      }
      // One entry at a time, each shown to the seam first (outside the lock)
      // so that a test can hold or fail one completion while others proceed.
      bool quit = false;
      for (unsigned i = 0; i < n; ++i) {
        sys::ring_cqe(batch[i].data, batch[i].res);
        std::unique_lock<std::mutex> lk(mu_);
        done_list done;
        const std::uint64_t kind = batch[i].data >> 62;
        if (kind == kind_stop) {
          stopping = true;
        } else if (kind == kind_writeback) {
          --writebacks_in_ring_;  // its errors surface in the next fdatasync
        } else if (kind == kind_fsync) {
          const auto index = static_cast<std::uint32_t>((batch[i].data >> 32) & 0x3fffffffu);
          const auto id = static_cast<std::uint32_t>(batch[i].data);
          commit_lane* l = lane_by_index_locked(index);
          const int e = batch[i].res < 0 ? -batch[i].res : 0;
          if (l && l->in_flight && l->flight == id) {
            finish_flush_locked(*l, l->covered, e, true, done);
            kick_locked(*l);
          } else if (l && is_writeback_error(e)) {
            // A stale fsync (its submit had been reported failed, yet the SQE
            // went out later) consumed a write-back error: no later flush can
            // see it, so the file's durability is lost from here on, and every
            // pending request fails now (a waiter never flushes a failed lane,
            // so leaving them would hang it and shutdown).
            l->failed = e;
            durability_registry::mark_lost(l->dev, l->ino, l->fd);
            fail_pending_locked(*l, done);
          }
        }
        done_list more = deferred_.take();
        quit = stopping && writebacks_in_ring_ == 0;
        lk.unlock();
        complete(done);
        complete(more);
      }
      if (quit) return;
    }
  }

  // Fallback backend: one fdatasync at a time, lanes in turn.
  void worker_loop() noexcept {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      commit_lane* l = nullptr;
      worker_cv_.wait(lk, [&] {
        for (commit_lane* x = lanes_; x; x = x->next_lane)
          if (x->queued) {
            l = x;
            return true;
          }
        return stop_;
      });
      if (!l) return;
      l->queued = false;
      const std::uint32_t id = l->flight;
      // Picked up now: everything enqueued so far is covered.
      const std::uint64_t cover = l->issued;
      l->covered = cover;
      ++stats_.flushes;
      const int fd = l->fd;
      lk.unlock();
      const int e = sys::fdatasync(fd) == 0 ? 0 : errno;
      lk.lock();
      done_list done;
      if (l->in_flight && l->flight == id) finish_flush_locked(*l, cover, e, true, done);
      kick_locked(*l);
      done_list more = deferred_.take();
      lk.unlock();
      complete(done);
      complete(more);
      lk.lock();
    }
  }

  // Requests finished where callbacks could not run (inside kick_locked).
  struct deferred_list {
    done_list list;
    void push_list(done_list& d) noexcept {
      while (commit_request* r = d.head) {
        d.head = r->next;
        list.push(r);
      }
      d.tail = nullptr;
    }
    done_list take() noexcept {
      done_list out = list;
      list = done_list{};
      return out;
    }
  };

  // A forked child's wait for a request it inherited: the parent's threads
  // will never complete it here, so this thread flushes the file itself (an
  // fdatasync started now covers every store made before the request), and
  // its callback never runs in the child.
  std::error_code wait_inherited(commit_request* req) noexcept {
    if (req->done.load(std::memory_order_acquire)) return req->error;  // completed before fork()
    std::error_code ec;
    commit_lane* l = req->lane;
    if (abandoned_ || !l) {
      ec = fail(errc::not_mapped, "persist_handle::wait: the committer was destroyed in this (forked) process");
      return ec;
    }
    if (l->failed || durability_registry::is_lost(l->dev, l->ino)) {
      ec = make_error_code(errc::durability_lost);
    } else if (sys::fdatasync(l->fd) != 0) {
      const int e = errno;
      if (is_writeback_error(e)) durability_registry::mark_lost(l->dev, l->ino, l->fd);
      ec = errno_code(e);
    }
    req->error = ec;
    req->done.store(true, std::memory_order_release);
    if (!ec) set_detail("persist_handle::wait: request inherited across fork(); flushed with fdatasync on this thread");
    return ec;
  }

  // shutdown() in a forked child: closes this process's copies of the
  // descriptors and nothing else (no lock, no join, the ring's memory is the
  // parent's: no munmap); the core itself is never freed here.
  void abandon_inherited() noexcept {
    if (abandoned_) return;
    abandoned_ = true;
    if (ring_ok_) sys::close_quietly(ring_.ring_fd);
    sys::close_quietly(event_fd_);
    for (commit_lane* l = lanes_; l; l = l->next_lane) close_keeping_locks_quietly(l->fd);
  }

  std::atomic<long> refs_{1};
  bool fork_hooked_ = false;
  unsigned long fork_gen_ = 0;
  pid_t owner_pid_ = 0;
  bool abandoned_ = false;  // set in a forked child only
  std::mutex mu_;
  std::condition_variable cv_;         // request completions, idle lanes
  std::condition_variable worker_cv_;  // fallback thread: work or stop
  commit_backend backend_ = commit_backend::thread;
  char backend_detail_[160] = {};
  bool early_writeback_ = false;
  bool inline_flush_ = true;
  unsigned inline_rounds_ = 1;
  io_uring ring_{};
  bool ring_ok_ = false;
  unsigned writebacks_in_ring_ = 0;
  pthread_t thread_{};
  bool thread_started_ = false;
  int event_fd_ = -1;
  bool closing_ = false;
  bool stop_ = false;
  std::size_t completing_ = 0;  // finished requests whose callbacks have not yet returned
  commit_lane* lanes_ = nullptr;
  std::uint32_t next_lane_index_ = 0;
  committer_stats stats_{};
  deferred_list deferred_{};
};

inline void commit_request::release() noexcept {
  if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    commit_core* c = core;
    delete this;
    if (c) c->release();
  }
}
}  // namespace detail

/// The outcome of one persist_async(): wait for it, poll it, or ignore it (a
/// callback given to persist_async still runs). Move-only; destroying it
/// neither waits for nor cancels the request.
class persist_handle {
 public:
  /// An empty handle (valid() is false).
  persist_handle() noexcept = default;
  persist_handle(persist_handle&& o) noexcept
      : req_(std::exchange(o.req_, nullptr)), immediate_(o.immediate_), state_(std::exchange(o.state_, empty)) {}
  persist_handle& operator=(persist_handle&& o) noexcept {
    if (this != &o) {
      persist_handle tmp(std::move(o));
      std::swap(req_, tmp.req_);
      std::swap(immediate_, tmp.immediate_);
      std::swap(state_, tmp.state_);
    }
    return *this;
  }
  persist_handle(const persist_handle&) = delete;
  persist_handle& operator=(const persist_handle&) = delete;
  ~persist_handle() {
    if (req_) req_->release();
  }

  /// True unless empty (default-constructed or moved-from).
  bool valid() const noexcept { return state_ != empty; }

  /// True once the request has completed (durable, or failed) and its
  /// callback, if any, has returned; never blocks. In a child of fork(), a
  /// handle inherited pending stays false until wait().
  bool ready() const noexcept {
    if (state_ == immediate) return true;
    return req_ && req_->done.load(std::memory_order_acquire);
  }

  /// Blocks until the range is durable, or the flush failed; may run the
  /// file's fdatasync on this thread (always, in a child of fork() for a
  /// request inherited pending). Repeatable.
  /// Errors: flush errno codes (EIO, ENOSPC, EDQUOT, ...) for the flush that
  /// covered the request, errc::durability_lost (an earlier flush of the file
  /// failed), errc::invalid_argument (empty handle).
  result<void> wait() noexcept {
    std::error_code ec;
    if (state_ == empty) return detail::fail(errc::invalid_argument, "persist_handle::wait: empty handle");
    if (state_ == immediate) ec = immediate_;
    else ec = req_->core->wait(req_);
    if (ec) {
      detail::commit_core::describe_error(ec);
      return ec;
    }
    return outcome::success();
  }

 private:
  friend class group_committer;
  enum state_t : unsigned char { empty, immediate, pending };
  explicit persist_handle(detail::commit_request* r) noexcept : req_(r), state_(pending) {}
  explicit persist_handle(std::error_code ec) noexcept : immediate_(ec), state_(immediate) {}

  detail::commit_request* req_ = nullptr;
  std::error_code immediate_{};
  state_t state_ = empty;
};

/// Group commit for shared (page-granular) mappings: persists requested from
/// any number of threads while a flush of their file is in flight share the
/// next single fdatasync. Runs on io_uring when the kernel allows it, else on
/// a committer thread calling fdatasync (backend() says which, and why).
/// Serves any number of files; keeps a descriptor of each file it has flushed
/// (its own description, else a dup: see the header comment) until
/// destroyed. Move-only; the destructor waits for every pending request to
/// complete (their handles stay usable afterwards).
/// Thread safety: every member except move/destruction may run concurrently
/// from any threads. fork(): see the header comment (an inherited committer
/// persists with msync on the calling thread and never blocks on the parent's
/// threads).
class group_committer {
 public:
  /// An empty committer (every call fails with errc::not_mapped).
  group_committer() noexcept = default;
  group_committer(group_committer&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  group_committer& operator=(group_committer&& o) noexcept {
    if (this != &o) {
      reset();
      core_ = std::exchange(o.core_, nullptr);
    }
    return *this;
  }
  group_committer(const group_committer&) = delete;
  group_committer& operator=(const group_committer&) = delete;
  ~group_committer() { reset(); }

  /// Starts a committer: io_uring unless unavailable (ENOSYS, EPERM,
  /// kernel.io_uring_disabled, seccomp) or options.force_thread.
  /// Errors: eventfd/pthread_create errno codes (EMFILE, EAGAIN), ENOMEM.
  static result<group_committer> create(committer_options options = {}) noexcept {
    detail::clear_detail();
    auto* core = new (std::nothrow) detail::commit_core;
    if (!core) return detail::fail_errno(ENOMEM, "group_committer: allocating");
    if (auto ec = core->start(options)) {
      core->release();
      return ec;
    }
    group_committer g;
    g.core_ = core;
    return g;
  }

  /// The backend running the flushes.
  commit_backend backend() const noexcept { return core_ ? core_->backend() : commit_backend::thread; }
  /// Why this backend runs ("thread: io_uring_setup failed with EPERM (kernel.io_uring_disabled)").
  const char* backend_detail() const noexcept { return core_ ? core_->backend_detail() : "no committer"; }

  /// Routes m's synchronous page-granular persist/copy_persist/fill_persist/
  /// drain through this committer (group commit for unchanged code). The
  /// committer must outlive the attachment; detach() or close the mapping first.
  void attach(direct_mapping& m) noexcept {
    if (core_) m.attach_persister(core_);
  }
  /// Restores msync for m if this committer is attached to it.
  void detach(direct_mapping& m) noexcept {
    if (core_ && m.persister() == core_) m.attach_persister(nullptr);
  }

  /// Requests durability of [offset, offset+length) of m (stores made before
  /// this call; see the guarantee at the top of async.hpp). On a sync/direct
  /// mapping the CPU flush runs now and the handle is already complete.
  /// Errors: errc::not_mapped (empty mapping or committer, or committer being
  /// destroyed), errc::out_of_range, errc::durability_lost (an earlier flush of
  /// the file failed, through this committer or any mapdirect consumer),
  /// fstat/fcntl errno codes, ENOMEM; in a child of fork() (completes at once)
  /// msync errno codes.
  result<persist_handle> persist_async(direct_mapping& m, std::size_t offset, std::size_t length) noexcept {
    return submit(
        m, offset, length, []() noexcept -> detail::commit_request* { return new (std::nothrow) detail::commit_request; },
        nullptr, false);
  }

  /// As persist_async(m, offset, length), and calls on_durable(result<void>)
  /// once, when the request completes: on the committer's thread, on a thread
  /// blocked in wait()/persist(), or (sync/direct mapping) before returning.
  /// The handle becomes ready() only after it returns. It must not block for
  /// long, wait for another request, nor destroy the committer. Not called
  /// when persist_async itself returns an error.
  /// Errors: as persist_async(m, offset, length).
  template <class F>
  result<persist_handle> persist_async(direct_mapping& m, std::size_t offset, std::size_t length,
                                       F&& on_durable) noexcept {
    using fn_t = std::decay_t<F>;
    return submit(
        m, offset, length,
        [&]() noexcept -> detail::commit_request* {
          return new (std::nothrow) detail::commit_request_with<fn_t>(fn_t(std::forward<F>(on_durable)));
        },
        [&](const std::error_code& ec) noexcept {
          if (ec) on_durable(result<void>(ec));
          else on_durable(result<void>(outcome::success()));
        },
        false);
  }

  /// Makes [offset, offset+length) of m durable, sharing the flush with
  /// concurrent requests (what an attached mapping's persist() does).
  /// Errors: as persist_async(), plus the flush's errno codes (EIO, ENOSPC, EDQUOT).
  result<void> persist(direct_mapping& m, std::size_t offset, std::size_t length) noexcept {
    // Enqueued as waited: if no flush is running this thread runs it itself.
    auto h = submit(
        m, offset, length, []() noexcept -> detail::commit_request* { return new (std::nothrow) detail::commit_request; },
        nullptr, true);
    if (!h) return h.error();
    return h.value().wait();
  }

  /// An eventfd (non-blocking) that becomes readable whenever requests
  /// complete: poll it in an event loop, read it to reset, then check your
  /// handles with ready(). -1 for an empty committer.
  int notify_fd() const noexcept { return core_ ? core_->notify_fd() : -1; }

  /// After the data stored since the last successful completion has been
  /// rewritten: lets m's file (and m itself) claim durability again, through
  /// every committer and mapping of this process (clears the process-wide record).
  void clear_durability_error(direct_mapping& m) noexcept {
    if (core_ && m.is_mapped()) core_->clear_failure(m.native_handle());
    m.clear_durability_error();
  }

  /// Requests, flushes and early write-backs so far.
  committer_stats stats() const noexcept { return core_ ? core_->stats() : committer_stats{}; }

 private:
  template <class Make, class Immediate>
  result<persist_handle> submit(direct_mapping& m, std::size_t offset, std::size_t length, Make make,
                                Immediate immediate, bool waited) noexcept {
    if (!core_) return detail::fail(errc::not_mapped, "persist_async: empty group_committer");
    if (!m.is_mapped()) return detail::fail(errc::not_mapped, "persist_async: no mapping");
    if (offset > m.size() || length > m.size() - offset)
      return detail::fail(errc::out_of_range, "persist_async: range [%zu, +%zu) outside mapping of %zu bytes",
                          offset, length, m.size());
    if (m.store_granularity() != granularity::page) {
      // CPU-flush durability: nothing to wait for.
      auto r = m.persist(offset, length);
      const std::error_code ec = r ? std::error_code{} : r.error();
      call_immediate(immediate, ec);
      return persist_handle(ec);
    }
    if (m.durability_failed()) return detail::fail_durability_lost("persist_async");
    if (length == 0) {
      call_immediate(immediate, std::error_code{});
      return persist_handle(std::error_code{});
    }
    const std::size_t page = detail::sys::page_size();
    const std::size_t lo = offset & ~(page - 1);
    if (core_->inherited()) {
      // A forked child: no committer thread here; msync now, complete at once.
      const std::size_t hi = std::min(m.size(), (offset + length + page - 1) & ~(page - 1));
      const std::error_code ec = core_->persist_inherited(m.native_handle(), m.data() + lo, hi - lo);
      call_immediate(immediate, ec);
      return persist_handle(ec);
    }
    detail::commit_request* req = make();
    if (!req) return detail::fail_errno(ENOMEM, "persist_async: allocating a request");
    req->core = core_;
    core_->retain();
    if (auto ec = core_->enqueue(m.native_handle(), m.file_offset() + lo, offset + length - lo, req, waited)) {
      req->release();
      return ec;
    }
    return persist_handle(req);
  }

  template <class Immediate>
  static void call_immediate(Immediate& f, const std::error_code& ec) noexcept {
    f(ec);
  }
  static void call_immediate(std::nullptr_t, const std::error_code&) noexcept {}

  void reset() noexcept {
    if (!core_) return;
    core_->shutdown();
    core_->release();
    core_ = nullptr;
  }

  detail::commit_core* core_ = nullptr;
};

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_ASYNC_HPP
