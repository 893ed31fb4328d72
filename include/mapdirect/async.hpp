// SPDX-License-Identifier: MIT
// Asynchronous durability and group commit for page-granular (shared)
// mappings: persist_async() and group_committer. The only mapdirect header
// that includes liburing; link mapdirect::uring.
//
//   auto gc = mapdirect::group_committer::create();          // result<group_committer>
//   if (!gc) return gc.error();
//   auto h = gc.value().persist_async(m, offset, length);     // result<persist_handle>
//   ...                                                       // more stores, more requests
//   if (auto r = h.value().wait(); !r) handle(r.error());     // durable, or EIO/ENOSPC/durability_lost
//   gc.value().attach(m);          // or: m.persist() now shares flushes with other threads
//
// The engine (requests, per-file lanes, the io_uring and thread backends)
// lives in detail/commit_core.hpp and detail/uring_backend.hpp.
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
// Merging cohorts. Writers blocked in persist()/wait() cannot enqueue while
// the flush that will release them runs, so starting the next flush at once
// would cover only those that arrived meanwhile (two half cohorts alternate).
// After a flush that released blocked writers, while other blocked writers
// exist, the next flush of the file starts once as many requests as that
// flush released are queued again, or after a bound derived from the measured
// flush time (their share of the next group times its duration, so never
// more than one flush), whichever comes first. No knob: a lone writer,
// requests without a blocked writer (pipelined, callbacks), inline_rounds > 1,
// and without inline_flush the fallback thread and io_uring before Linux 5.11
// (no timed wait that submits nothing) never wait. It only delays a flush's
// start: the guarantee above is unchanged. committer_stats::merge_windows
// counts.
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
#include "detail/commit_core.hpp"
#include "error.hpp"
#include "mapping.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <system_error>
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
  switch (b) {
    case commit_backend::io_uring: return "io_uring";
    case commit_backend::thread: return "thread";
  }
  return "?";
}

/// Options for group_committer::create.
struct committer_options {
  /// Use the fdatasync thread even when io_uring works (tests, or to compare).
  bool force_thread = false;
  /// When a request arrives while its file's flush is in flight, start
  /// write-back of its pages at once (SYNC_FILE_RANGE_WRITE) so that the next
  /// flush has less left to write. Off by default (pages may be written
  /// twice; measurements: docs/bench/option_defaults.md); try it where
  /// write-back and the device flush overlap.
  bool early_writeback = false;
  /// A thread blocked in persist()/wait() while its file has no flush in
  /// flight runs the fdatasync itself, saving two thread hand-offs per flush;
  /// false sends every flush through the backend.
  bool inline_flush = true;
  /// With inline_flush: a thread that ran a flush runs up to this many in a
  /// row while other threads wait for the next one (no wake-up between
  /// flushes), at the cost of that many flush times of extra latency for
  /// itself and of its own appends meanwhile. 1: hand the next flush to a
  /// waiter (why: docs/bench/option_defaults.md).
  unsigned inline_rounds = 1;
  /// Submission queue size of the ring.
  unsigned ring_entries = 64;
};

/// Counters of a group_committer (monotonic).
struct committer_stats {
  std::uint64_t requests = 0;    ///< page-granular requests enqueued
  std::uint64_t flushes = 0;     ///< fdatasyncs started
  std::uint64_t writebacks = 0;  ///< early write-backs started
  /// Times a flush start was held back for the blocked writers the previous
  /// flush released to enqueue again (merging cohorts; see group_committer).
  std::uint64_t merge_windows = 0;
  std::uint64_t merge_expired = 0;  ///< of those, ended by the time bound, not by their arrival
};

/// The outcome of one persist_async(): wait for it, poll it, or ignore it (a
/// callback given to persist_async still runs). Move-only; destroying it
/// neither waits for nor cancels the request.
/// Thread safety: one handle is not for concurrent use, except that ready()
/// and wait() may run concurrently on it (the request is shared safely).
class persist_handle {
 public:
  /// An empty handle (converts to false).
  persist_handle() noexcept = default;
  /// Takes over `o`'s request; `o` becomes empty.
  persist_handle(persist_handle&& o) noexcept;
  /// Releases this handle's request (as its destructor does), then takes over `o`'s.
  persist_handle& operator=(persist_handle&& o) noexcept;
  persist_handle(const persist_handle&) = delete;
  persist_handle& operator=(const persist_handle&) = delete;
  ~persist_handle();

  /// True unless empty (default-constructed or moved-from).
  explicit operator bool() const noexcept { return state_ != empty; }

  /// True once the request has completed (durable, or failed) and its
  /// callback, if any, has returned; never blocks. In a child of fork(), a
  /// handle inherited pending stays false until wait().
  bool ready() const noexcept;

  /// Blocks until the range is durable, or the flush failed; may run the
  /// file's fdatasync on this thread (always, in a child of fork() for a
  /// request inherited pending). Repeatable.
  /// Errors: flush errno codes (EIO, ENOSPC, EDQUOT, ...) for the flush that
  /// covered the request, errc::durability_lost (an earlier flush of the file
  /// failed), errc::empty_object (empty handle, or its committer was destroyed
  /// in this forked process).
  result<void> wait() noexcept;

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
  /// An empty committer (converts to false; every call fails with errc::empty_object).
  group_committer() noexcept = default;
  /// Takes over `o`'s committer; `o` becomes empty.
  group_committer(group_committer&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  /// Stops this committer (as its destructor does), then takes over `o`'s.
  group_committer& operator=(group_committer&& o) noexcept;
  group_committer(const group_committer&) = delete;
  group_committer& operator=(const group_committer&) = delete;
  ~group_committer() { reset(); }

  /// True unless empty (default-constructed or moved-from).
  explicit operator bool() const noexcept { return core_ != nullptr; }

  /// Starts a committer: io_uring unless unavailable (ENOSYS, EPERM,
  /// kernel.io_uring_disabled, seccomp) or options.force_thread.
  /// Errors: eventfd/pthread_create errno codes (EMFILE, EAGAIN), ENOMEM.
  static result<group_committer> create(committer_options options = {}) noexcept;

  /// The backend running the flushes.
  commit_backend backend() const noexcept;
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
  /// Errors: errc::not_mapped (empty mapping), errc::read_only (a read-only
  /// mapping), errc::empty_object (empty
  /// committer, or committer being destroyed), errc::out_of_range, errc::durability_lost (an earlier flush of
  /// the file failed, through this committer or any mapdirect consumer),
  /// fcntl/sync_file_range errno codes, ENOMEM; in a child of fork() (completes
  /// at once) msync errno codes.
  result<persist_handle> persist_async(direct_mapping& m, std::size_t offset, std::size_t length) noexcept;

  /// As persist_async(m, offset, length), and calls on_durable(result<void>)
  /// once, when the request completes: on the committer's thread, on a thread
  /// blocked in wait()/persist(), or (sync/direct mapping) before returning.
  /// The handle becomes ready() only after it returns. It must not block for
  /// long, wait for another request, nor destroy the committer. Not called
  /// when persist_async itself returns an error.
  /// Errors: as persist_async(m, offset, length).
  template <class F>
  result<persist_handle> persist_async(direct_mapping& m, std::size_t offset, std::size_t length,
                                       F&& on_durable) noexcept;

  /// Makes [offset, offset+length) of m durable, sharing the flush with
  /// concurrent requests (what an attached mapping's persist() does).
  /// Errors: as persist_async(), plus the flush's errno codes (EIO, ENOSPC, EDQUOT).
  result<void> persist(direct_mapping& m, std::size_t offset, std::size_t length) noexcept;

  /// An eventfd (non-blocking) that becomes readable whenever requests
  /// complete: poll it in an event loop, read it to reset, then check your
  /// handles with ready(). -1 for an empty committer.
  int notify_fd() const noexcept { return core_ ? core_->notify_fd() : -1; }

  /// After the data stored since the last successful completion has been
  /// rewritten: lets m's file (and m itself) claim durability again, through
  /// every committer and mapping of this process (clears the process-wide record).
  void clear_durability_error(direct_mapping& m) noexcept;

  /// Requests, flushes and early write-backs so far.
  committer_stats stats() const noexcept;

 private:
  template <class Make, class Immediate>
  result<persist_handle> submit(direct_mapping& m, std::size_t offset, std::size_t length, Make make,
                                Immediate immediate, bool waited) noexcept;
  template <class Immediate>
  static void call_immediate(Immediate& f, const std::error_code& ec) noexcept {
    f(ec);
  }
  static void call_immediate(std::nullptr_t, const std::error_code&) noexcept {}
  static detail::commit_request* make_request() noexcept { return new (std::nothrow) detail::commit_request; }
  void reset() noexcept;

  detail::commit_core* core_ = nullptr;
};

// ---------------------------------------------------------------------------
// Definitions.

inline persist_handle::persist_handle(persist_handle&& o) noexcept
    : req_(std::exchange(o.req_, nullptr)), immediate_(o.immediate_), state_(std::exchange(o.state_, empty)) {}

inline persist_handle& persist_handle::operator=(persist_handle&& o) noexcept {
  if (this != &o) {
    persist_handle tmp(std::move(o));
    std::swap(req_, tmp.req_);
    std::swap(immediate_, tmp.immediate_);
    std::swap(state_, tmp.state_);
  }
  return *this;
}

inline persist_handle::~persist_handle() {
  if (req_) req_->release();
}

inline bool persist_handle::ready() const noexcept {
  if (state_ == immediate) return true;
  return req_ && req_->done.load(std::memory_order_acquire);
}

inline result<void> persist_handle::wait() noexcept {
  std::error_code ec;
  if (state_ == empty) return detail::fail(errc::empty_object, "persist_handle::wait: empty handle");
  if (state_ == immediate) ec = immediate_;
  else ec = req_->core->wait(req_);
  if (ec) {
    detail::commit_core::describe_error(ec);
    return ec;
  }
  return outcome::success();
}

inline group_committer& group_committer::operator=(group_committer&& o) noexcept {
  if (this != &o) {
    reset();
    core_ = std::exchange(o.core_, nullptr);
  }
  return *this;
}

inline result<group_committer> group_committer::create(committer_options options) noexcept {
  detail::clear_detail();
  auto* core = new (std::nothrow) detail::commit_core;
  if (!core) return detail::fail_errno(ENOMEM, "group_committer: allocating");
  detail::core_settings s;
  s.force_thread = options.force_thread;
  s.early_writeback = options.early_writeback;
  s.inline_flush = options.inline_flush;
  s.inline_rounds = options.inline_rounds;
  s.ring_entries = options.ring_entries;
  if (auto ec = core->start(s)) {
    core->release();
    return ec;
  }
  group_committer g;
  g.core_ = core;
  return g;
}

inline commit_backend group_committer::backend() const noexcept {
  return core_ && core_->uses_uring() ? commit_backend::io_uring : commit_backend::thread;
}

inline result<persist_handle> group_committer::persist_async(direct_mapping& m, std::size_t offset,
                                                             std::size_t length) noexcept {
  return submit(m, offset, length, &make_request, nullptr, false);
}

template <class F>
result<persist_handle> group_committer::persist_async(direct_mapping& m, std::size_t offset, std::size_t length,
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

inline result<void> group_committer::persist(direct_mapping& m, std::size_t offset, std::size_t length) noexcept {
  // Enqueued as waited: if no flush is running this thread runs it itself.
  auto h = submit(m, offset, length, &make_request, nullptr, true);
  if (!h) return h.error();
  return h.value().wait();
}

inline void group_committer::clear_durability_error(direct_mapping& m) noexcept {
  if (core_ && m) core_->clear_failure(m.dev_, m.ino_);
  m.clear_durability_error();
}

inline committer_stats group_committer::stats() const noexcept {
  committer_stats out{};
  if (!core_) return out;
  const detail::commit_counters c = core_->stats();
  out.requests = c.requests;
  out.flushes = c.flushes;
  out.writebacks = c.writebacks;
  out.merge_windows = c.merge_windows;
  out.merge_expired = c.merge_expired;
  return out;
}

template <class Make, class Immediate>
result<persist_handle> group_committer::submit(direct_mapping& m, std::size_t offset, std::size_t length, Make make,
                                               Immediate immediate, bool waited) noexcept {
  if (!core_) return detail::fail(errc::empty_object, "persist_async: empty group_committer");
  if (!m) return detail::fail(errc::not_mapped, "persist_async: no mapping");
  if (m.access() == map_access::read_only)  // as m.persist(): nothing to make durable, say so
    return detail::fail(errc::read_only, "persist_async: the mapping is read-only (map_options::access)");
  if (offset > m.size() || length > m.size() - offset)
    return detail::fail(errc::out_of_range, "persist_async: range [%zu, +%zu) outside mapping of %zu bytes", offset,
                        length, m.size());
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
    const std::error_code ec = core_->persist_inherited(m.native_handle(), m.dev_, m.ino_, m.data() + lo, hi - lo);
    call_immediate(immediate, ec);
    return persist_handle(ec);
  }
  detail::commit_request* req = make();
  if (!req) return detail::fail_errno(ENOMEM, "persist_async: allocating a request");
  req->core = core_;
  core_->retain();
  const std::size_t n = offset + length - lo;
  if (auto ec = core_->enqueue(m.native_handle(), m.dev_, m.ino_, m.file_offset() + lo, n, req, waited)) {
    req->release();
    return ec;
  }
  return persist_handle(req);
}

inline void group_committer::reset() noexcept {
  if (!core_) return;
  core_->shutdown();
  core_->release();
  core_ = nullptr;
}

MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_ASYNC_HPP
