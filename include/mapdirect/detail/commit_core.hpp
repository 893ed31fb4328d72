// SPDX-License-Identifier: MIT
// The engine of the group committer (async.hpp): requests, one lane per file
// (its flush sequence and pending requests), and the core that runs flushes
// on the io_uring backend (detail/uring_backend.hpp, reaped by one thread) or
// on the thread backend (one thread calling fdatasync), or inline on a thread
// blocked in wait(). async.hpp states the guarantee this code keeps.
//
// Thread safety: commit_core's members may run concurrently from any threads
// (one mutex, mu_, guards lanes and counters; no open or callback runs under
// it). fork(): a core inherited by a child never touches its lock, ring or
// thread (see inherited()).
#ifndef MAPDIRECT_DETAIL_COMMIT_CORE_HPP
#define MAPDIRECT_DETAIL_COMMIT_CORE_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "../mapping.hpp"
#include "descriptor.hpp"
#include "durability.hpp"
#include "seal_registry.hpp"
#include "syscall.hpp"
#include "uring_backend.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <new>
#include <utility>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {
class commit_core;
struct commit_lane;

// What group_committer::create asks of the core (from committer_options).
struct core_settings {
  bool force_thread = false;
  bool early_writeback = false;
  bool inline_flush = true;
  unsigned inline_rounds = 1;
  unsigned ring_entries = 64;
};

// The core's monotonic counters (committer_stats).
struct commit_counters {
  std::uint64_t requests = 0;
  std::uint64_t flushes = 0;
  std::uint64_t writebacks = 0;
  std::uint64_t merge_windows = 0;  // merge windows opened (see commit_lane::merging)
  std::uint64_t merge_expired = 0;  // of those, closed by their time bound with a flush pending
};

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
  std::error_code error;     // written under the core's lock before `done`
  std::uint64_t ticket = 0;  // order of arrival on its lane
  bool waited = false;       // a thread blocks on it (may run the flush itself)
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
  int fd = -1;                   // the committer's descriptor of the file (see open_lane)
  bool own_description = false;  // fd is a description of its own (else a dup: see reopen_error)
  int reopen_error = 0;          // why the reopen was refused (EACCES, EBUSY: leased, ...)
  std::uint32_t index = 0;
  std::uint64_t issued = 0;   // last ticket handed out
  std::uint64_t covered = 0;  // tickets <= covered belong to a flush already started
  std::uint32_t flight = 0;   // id of the flush in flight (stale ring completions are ignored)
  bool in_flight = false;     // a flush is running (or queued for the fallback thread)
  bool queued = false;        // fallback thread: waiting to be picked up
  int failed = 0;             // sticky errno of a failed flush (fsyncgate)
  // Merging cohorts of blocking writers. While a flush runs, the writers it
  // will release cannot enqueue; starting the next flush at once would cover
  // only those that arrived meanwhile, and two half cohorts would alternate.
  // So after a flush that released blocked writers, the next flush waits
  // until as many requests as it released have been enqueued again
  // (merge_target) or until a bound derived from the measured flush time
  // (merge_deadline), whichever comes first. It only delays the start: a
  // flush still covers exactly the requests enqueued before it starts.
  using clock = std::chrono::steady_clock;
  clock::time_point flush_started{};   // start of the flush in flight
  bool merging = false;                // a merge window is open
  std::uint64_t merge_target = 0;      // the window closes once issued reaches this
  clock::time_point merge_deadline{};  // ... or at this time
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

  std::error_code start(const core_settings& o) noexcept {
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
    } else if (ring_.open(o.ring_entries == 0 ? 64 : o.ring_entries, early_writeback_, backend_detail_,
                          sizeof backend_detail_)) {
      uring_ = true;
    }
    // Block every signal in the committer thread: user handlers must not run there.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    const int rc = pthread_create(&thread_, nullptr, &commit_core::thread_main, this);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (rc != 0) {
      ring_.close();
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
      if (uring_) ring_.submit_stop(kind_stop << 62);  // the reap thread leaves on its completion
      worker_cv_.notify_all();
    }
    if (thread_started_) pthread_join(thread_, nullptr);
    thread_started_ = false;
    ring_.close();
    sys::close_quietly(event_fd_);
    event_fd_ = -1;
    while (commit_lane* l = lanes_) {
      lanes_ = l->next_lane;
      close_keeping_locks_quietly(l->fd);
      delete l;
    }
  }

  // True on the io_uring backend, false on the thread backend.
  bool uses_uring() const noexcept { return uring_; }
  const char* backend_detail() const noexcept { return inherited() ? inherited_detail : backend_detail_; }
  int notify_fd() const noexcept { return inherited() ? -1 : event_fd_; }

  commit_counters stats() noexcept {
    if (inherited()) return stats_;  // only this thread exists in the child
    std::lock_guard<std::mutex> g(mu_);
    return stats_;
  }

  static constexpr const char* inherited_detail =
      "inherited across fork(): this process has no committer thread; each persist runs msync(MS_SYNC) on the "
      "calling thread (create a group_committer in this process for group commit)";

  // A forked child's persist through an inherited core: msync of the range on
  // the calling thread, as an unattached mapping does.
  // (dev, ino) identify fd's file.
  std::error_code persist_inherited(int fd, dev_t dev, ino_t ino, void* addr, std::size_t length) noexcept {
    if (durability_registry::is_lost(dev, ino)) return fail_durability_lost("group_committer");
    if (length && sys::msync(addr, length, MS_SYNC) != 0) {
      const int e = errno;
      if (is_writeback_error(e)) durability_registry::mark_lost(dev, ino, fd);
      return fail_errno(e, "group_committer (inherited across fork): msync(MS_SYNC) failed with %s", errno_name(e));
    }
    set_detail("group_committer: %s", inherited_detail);
    return {};
  }

  // Enqueues a request for [file_offset, +length) of fd, whose file is (dev,
  // ino) as its mapping recorded them (no fstat per request). On success the
  // core holds its own reference on `req`.
  std::error_code enqueue(int fd, dev_t dev, ino_t ino, std::uint64_t file_offset, std::size_t length,
                          commit_request* req, bool waited) noexcept {
    // A write-back error some mapdirect consumer saw on this file (issue 10 item 2).
    if (durability_registry::is_lost(dev, ino)) return fail_durability_lost("group_committer");
    std::size_t wb_len = 0;
    done_list failed;
    // A file's first request opens its descriptor outside the lock: an open
    // can block (a lease break, FUSE), and nobody may wait on mu_ meanwhile.
    commit_lane* fresh = nullptr;
    for (;;) {
      std::unique_lock<std::mutex> lk(mu_);
      if (closing_) {
        lk.unlock();
        discard_lane(fresh);
        return fail(errc::empty_object, "group_committer: closed (being destroyed)");
      }
      commit_lane* l = find_lane_locked(dev, ino);
      if (!l && fresh) l = adopt_lane_locked(std::exchange(fresh, nullptr));
      if (!l) {
        lk.unlock();
        std::error_code ec;
        fresh = open_lane(fd, dev, ino, ec);
        if (!fresh) return ec;
        continue;
      }
      if (!l->was_checked(fd)) {
        lk.unlock();
        if (auto ec = check_requester_description(fd, dev, ino)) {
          discard_lane(fresh);
          return ec;
        }
        lk.lock();
        l->note_checked(fd);
        continue;
      }
      // Every lane failure is also in the registry, which was clear just now:
      // the loss was cleared through another committer or mapping.
      if (l->failed && !durability_registry::is_lost(dev, ino)) l->failed = 0;
      if (l->failed) {
        const int e = l->failed;
        lk.unlock();
        discard_lane(fresh);
        return fail_durability_lost("group_committer", e);
      }
      wb_len = queue_locked(*l, req, waited, file_offset, length);
      failed = deferred_.take();
      break;
    }
    discard_lane(fresh);  // another thread added the file's lane meanwhile
    complete(failed);
    // Fallback backend: the early write-back runs on the caller (it only
    // starts I/O; its errors surface in the next fdatasync).
    if (wb_len)
      (void)sys::sync_file_range(fd, static_cast<off_t>(file_offset), static_cast<off_t>(wb_len),
                                 SYNC_FILE_RANGE_WRITE);
    return {};
  }

  // enqueue's step under mu_: appends `req` to `l`, starts the early
  // write-back of [file_offset, +length) while a flush of the lane is in
  // flight (on the ring here), and kicks the lane. Returns the length the
  // caller writes back itself after unlocking (fallback backend), else 0.
  std::size_t queue_locked(commit_lane& l, commit_request* req, bool waited, std::uint64_t file_offset,
                           std::size_t length) noexcept {
    std::size_t wb_len = 0;
    append_locked(l, req, waited);
    if (l.in_flight && early_writeback_) {
      ++stats_.writebacks;
      if (uring_) {
        submit_writeback_locked(l, file_offset, length);
      } else {
        wb_len = length;
      }
    }
    kick_locked(l);
    return wb_len;
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
          if (merge_window_open_locked(l)) {
            // Enqueues notify cv_ (kick_locked); the deadline bounds the wait.
            const commit_lane::clock::time_point until = l.merge_deadline;
            cv_.wait_until(lk, until);
            continue;
          }
          flush_inline(l, lk);
          continue;
        }
        cv_.wait(lk);
      }
    }
    return req->error;
  }

  // page_persister: synchronous persist through the committer (group commit).
  result<void> persist_pages(int fd, dev_t dev, ino_t ino, std::uint64_t file_offset, void* addr,
                             std::size_t length) noexcept override {
    if (inherited()) {
      if (auto ec = persist_inherited(fd, dev, ino, addr, length)) return ec;
      return outcome::success();
    }
    auto* req = new (std::nothrow) commit_request;
    if (!req) return fail_errno(ENOMEM, "group_committer: allocating a request");
    req->core = this;
    retain();
    if (auto ec = enqueue(fd, dev, ino, file_offset, length, req, true)) {
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

  // Clears the loss of the file (dev, ino), process-wide and on its lane.
  void clear_failure(dev_t dev, ino_t ino) noexcept {
    durability_registry::clear(dev, ino);
    if (inherited()) return;  // the lanes belong to the parent's threads
    std::lock_guard<std::mutex> g(mu_);
    if (commit_lane* l = find_lane_locked(dev, ino)) l->failed = 0;
  }

  // Records the detail of a request's error for the calling thread.
  static void describe_error(const std::error_code& ec) noexcept {
    if (ec == errc::durability_lost) (void)fail_durability_lost("group_committer");
    else if (ec.category() == std::system_category())
      (void)fail_errno(ec.value(), "group_committer: fdatasync of the file failed with %s", errno_name(ec.value()));
  }

 private:
  // A lane for the file behind fd, with a description of its own where
  // possible (issue 10 item 2): Linux reports a write-back error once per open
  // file description, and one opened now sees every error from now on. Never
  // reopens a file this process holds a lease on, which would break that
  // lease (issue 10 item 4): then, and when the reopen is refused (EACCES on a
  // 0600 file received over SCM_RIGHTS, no /proc), a dup of fd (see the
  // header comment for what a shared description can miss). Called without mu_.
  static commit_lane* open_lane(int fd, dev_t dev, ino_t ino, std::error_code& ec) noexcept {
    auto* l = new (std::nothrow) commit_lane;
    if (!l) {
      ec = fail_errno(ENOMEM, "group_committer: allocating a file lane");
      return nullptr;
    }
    const own_descriptor d = reopen_description(fd, O_RDONLY, seal_registry::leased(dev, ino));
    if (d.fd < 0) {
      const int e = errno;
      delete l;
      ec = fail_errno(e, "group_committer: opening the file for flushing");
      return nullptr;
    }
    l->fd = d.fd;
    l->own_description = d.own_description;
    l->reopen_error = d.reopen_error;
    l->dev = dev;
    l->ino = ino;
    return l;
  }

  // Links a lane open_lane made into the lane list; returns it.
  commit_lane* adopt_lane_locked(commit_lane* l) noexcept {
    l->index = next_lane_index_++;
    l->next_lane = lanes_;
    lanes_ = l;
    return l;
  }

  // A write-back error that happened after the requester's description was
  // opened but before the lane's own description existed is reported only to
  // the requester's: checked once, after the lane's description exists, so
  // that no error falls between the two. sync_file_range(WAIT_AFTER) waits
  // for write-back in flight and reports (and consumes) the description's
  // unseen write-back error. Called without mu_.
  static std::error_code check_requester_description(int fd, dev_t dev, ino_t ino) noexcept {
    if (sys::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_AFTER) == 0) return {};
    const int e = errno;
    if (is_writeback_error(e)) {
      durability_registry::mark_lost(dev, ino, fd);
      return fail_errno(e, "group_committer: a write-back error reported to the mapping's own description "
                           "before this committer flushed the file");
    }
    return fail_errno(e, "group_committer: sync_file_range(WAIT_AFTER) on the mapping's description");
  }

  // Appends `req` to the lane's queue with the next ticket; the core takes a
  // reference on it.
  void append_locked(commit_lane& l, commit_request* req, bool waited) noexcept {
    req->ticket = ++l.issued;
    req->lane = &l;
    req->waited = waited;
    req->retain();
    req->next = nullptr;
    if (l.tail) l.tail->next = req;
    else l.head = req;
    l.tail = req;
    ++stats_.requests;
  }

  static void discard_lane(commit_lane* l) noexcept {
    if (!l) return;
    close_keeping_locks_quietly(l->fd);
    delete l;
  }

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

  // Early write-back of [off, +len) on the ring (advisory only). Counted
  // once queued: its completion will arrive even if this submit failed.
  void submit_writeback_locked(commit_lane& l, std::uint64_t off, std::size_t len) noexcept {
    if (ring_.submit_writeback(l.fd, off, len, kind_writeback << 62)) ++writebacks_in_ring_;
  }

  // Starts a flush of `l` if it has uncovered requests and none is running:
  // leaves it to a blocked waiter (inline_flush) or hands it to the backend.
  void kick_locked(commit_lane& l) noexcept {
    if (l.in_flight || l.issued <= l.covered || !l.head) return;
    if (inline_flush_) {
      // A blocked waiter runs it (and keeps the lane's merge window).
      for (commit_request* r = l.head; r; r = r->next)
        if (r->waited && r->ticket > l.covered) {
          cv_.notify_all();
          return;
        }
    } else if (uring_ && merge_window_open_locked(l)) {
      return;  // started by the enqueue that reaches the target, or by the reap thread at the deadline
    }
    l.in_flight = true;
    ++l.flight;
    l.flush_started = commit_lane::clock::now();
    if (!uring_) {
      l.queued = true;
      worker_cv_.notify_one();
      return;
    }
    // Everything enqueued so far is written before this submission.
    const int rc = ring_.submit_fsync(l.fd, (kind_fsync << 62) | (std::uint64_t{l.index} << 32) | l.flight);
    if (rc >= 0) {
      l.covered = l.issued;
      ++stats_.flushes;
      return;
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
    std::uint64_t released_waiters = 0;
    while (commit_request* r = l.head) {
      std::error_code ec;
      if (r->ticket <= cover) {
        ec = e ? errno_code(e) : lost ? make_error_code(errc::durability_lost) : std::error_code{};
        released_waiters += r->waited;
      } else if (sticky || lost) ec = make_error_code(errc::durability_lost);
      else break;
      l.head = r->next;
      if (!l.head) l.tail = nullptr;
      r->error = ec;
      ++completing_;
      done.push(r);
    }
    if (sticky) l.failed = e;
    l.merging = false;
    if (e == 0 && !sticky && !lost) open_merge_window_locked(l, released_waiters);
    cv_.notify_all();
  }

  // After a successful flush that released `released` blocked writers: opens
  // the lane's merge window when those writers are likely to enqueue again
  // soon, i.e. when requests here come from blocking writers (every writer
  // waits for its own record). Not with a lone writer (nobody else to merge
  // with), nor when most queued requests have no blocked writer (pipelined
  // requests: the next flush then has plenty to cover and starts at once).
  // The bound: the share of the next group those writers would add, times the
  // last flush's duration (so never more than one flush): a merge saves one
  // flush, so waiting costs at most what the merge can gain. (Half a flush, the
  // first bound, expired in 9-74% of the windows with 8 writers on 2 CPUs,
  // where waking 7 writers takes about that long: 0.78-0.98 N records per
  // flush, against 0.998 N with this one and no lower throughput.)
  void open_merge_window_locked(commit_lane& l, std::uint64_t released) noexcept {
    // Enforced by a blocked waiter (inline flushes) or by the reap thread,
    // which needs a timed wait that submits nothing (Linux 5.11); the
    // fallback thread without inline flushes starts every flush at once.
    if (released == 0 || closing_ || (!inline_flush_ && !(uring_ && ring_.has_timed_wait()))) return;
    std::uint64_t queued = 0, queued_waiters = 0;
    for (const commit_request* r = l.head; r; r = r->next) {
      ++queued;
      queued_waiters += r->waited;
    }
    if (released + queued_waiters < 2 || queued - queued_waiters > queued_waiters) return;
    const auto now = commit_lane::clock::now();
    const auto took = now - l.flush_started;
    const auto bound = took * static_cast<std::int64_t>(released) / static_cast<std::int64_t>(queued + released);
    l.merging = true;
    l.merge_target = l.issued + released;
    l.merge_deadline = now + bound;
    ++stats_.merge_windows;
  }

  // True while the lane's merge window holds back its next flush; closes the
  // window once its target or deadline is reached (or the core is closing).
  bool merge_window_open_locked(commit_lane& l) noexcept {
    if (!l.merging) return false;
    if (!closing_ && l.issued < l.merge_target) {
      if (commit_lane::clock::now() < l.merge_deadline) return true;
      if (l.issued > l.covered) ++stats_.merge_expired;
    }
    l.merging = false;
    return false;
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
      l.flush_started = commit_lane::clock::now();
      const int fd = l.fd;
      lk.unlock();
      const int e = retry_eintr([&] { return sys::fdatasync(fd); }) == 0 ? 0 : errno;
      lk.lock();
      done_list done;
      if (l.flight == id) finish_flush_locked(l, cover, e, true, done);
      const bool again = round < inline_rounds_ && !l.in_flight && !l.failed && has_uncovered_waiter(l);
      if (again) {
        // Claim the next flush before releasing the lock for the callbacks
        // (inline_rounds asks for back-to-back flushes: no merge window).
        l.merging = false;
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
    if (c->uring_) c->reap_loop();
    else c->worker_loop();
    return nullptr;
  }

  // io_uring backend: reaps completions, starts the next flushes.
  void reap_loop() noexcept {
    bool stopping = false;
    for (;;) {
      const int rc = reap_wait();
      if (rc < 0) {
        if (rc == -EINTR || rc == -EAGAIN || rc == -ETIME) continue;
        if (fail_in_flight(-rc)) return;
        continue;
      }
      uring_backend::completion batch[32];
      const unsigned n = ring_.reap(batch, 32);
      // One entry at a time, each shown to the seam first (outside the lock)
      // so that a test can hold or fail one completion while others proceed.
      bool quit = false;
      for (unsigned i = 0; i < n; ++i) {
        sys::ring_cqe(batch[i].data, batch[i].res);
        std::unique_lock<std::mutex> lk(mu_);
        done_list done;
        on_completion_locked(batch[i], stopping, done);
        done_list more = deferred_.take();
        quit = stopping && writebacks_in_ring_ == 0;
        lk.unlock();
        complete(done);
        complete(more);
      }
      if (quit) return;
    }
  }

  // Waits for a completion; while a merge window holds back a lane's flush
  // (only without inline flushes: then nobody else watches its deadline),
  // no longer than until that deadline, and starts the flushes whose window
  // has closed.
  int reap_wait() noexcept {
    if (inline_flush_) return ring_.wait();
    commit_lane::clock::time_point deadline{};
    bool timed = false;
    done_list failed;
    {
      std::lock_guard<std::mutex> g(mu_);
      for (commit_lane* l = lanes_; l; l = l->next_lane) {
        if (!l->merging || l->in_flight) continue;
        if (!merge_window_open_locked(*l)) {
          kick_locked(*l);
          continue;
        }
        if (!timed || l->merge_deadline < deadline) deadline = l->merge_deadline;
        timed = true;
      }
      failed = deferred_.take();  // a submit that failed in kick_locked
    }
    complete(failed);
    if (!timed) return ring_.wait();
    const auto left = deadline - commit_lane::clock::now();
    const long long ns = left.count() > 0 ? std::chrono::duration_cast<std::chrono::nanoseconds>(left).count() : 0;
    return ring_.wait_for(ns);
  }

  // The ring is unusable (wait failed with `e`): fails whatever is in flight
  // rather than hang. True if the core is stopping (the reap thread leaves).
  bool fail_in_flight(int e) noexcept {
    std::unique_lock<std::mutex> lk(mu_);
    done_list done;
    for (commit_lane* l = lanes_; l; l = l->next_lane)
      if (l->in_flight) finish_flush_locked(*l, l->covered, e, false, done);
    const bool quit = stop_;
    lk.unlock();
    complete(done);
    return quit;
  }

  // Acts on one ring completion (its kind is in the top bits of its data).
  void on_completion_locked(const uring_backend::completion& c, bool& stopping, done_list& done) noexcept {
    const std::uint64_t kind = c.data >> 62;
    if (kind == kind_stop) {
      stopping = true;
    } else if (kind == kind_writeback) {
      --writebacks_in_ring_;  // its errors surface in the next fdatasync
    } else if (kind == kind_fsync) {
      const auto index = static_cast<std::uint32_t>((c.data >> 32) & 0x3fffffffu);
      const auto id = static_cast<std::uint32_t>(c.data);
      commit_lane* l = lane_by_index_locked(index);
      const int e = c.res < 0 ? -c.res : 0;
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
      l->flush_started = commit_lane::clock::now();
      const int fd = l->fd;
      lk.unlock();
      const int e = retry_eintr([&] { return sys::fdatasync(fd); }) == 0 ? 0 : errno;
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
      ec = fail(errc::empty_object, "persist_handle::wait: the committer was destroyed in this (forked) process");
      return ec;
    }
    if (l->failed || durability_registry::is_lost(l->dev, l->ino)) {
      ec = make_error_code(errc::durability_lost);
    } else if (retry_eintr([&] { return sys::fdatasync(l->fd); }) != 0) {
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
    ring_.close_inherited();
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
  bool uring_ = false;                 // io_uring backend (else the thread backend)
  char backend_detail_[160] = {};
  bool early_writeback_ = false;
  bool inline_flush_ = true;
  unsigned inline_rounds_ = 1;
  uring_backend ring_{};
  unsigned writebacks_in_ring_ = 0;
  pthread_t thread_{};
  bool thread_started_ = false;
  int event_fd_ = -1;
  bool closing_ = false;
  bool stop_ = false;
  std::size_t completing_ = 0;  // finished requests whose callbacks have not yet returned
  commit_lane* lanes_ = nullptr;
  std::uint32_t next_lane_index_ = 0;
  commit_counters stats_{};
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
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_COMMIT_CORE_HPP
