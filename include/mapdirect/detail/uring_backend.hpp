// SPDX-License-Identifier: MIT
// The io_uring backend of the group committer (async.hpp): one ring, set up
// and proved usable (opcode probe, NOP round trip) or refused with the
// reason, and the few submissions the committer makes (datasync fsync,
// early sync_file_range write-back, the stop NOP). Every submission is shown
// to the syscall seam (sys::ring_sqe, sys::ring_submit).
//
// Not thread-safe: the commit core calls it under its lock, or from its one
// reap thread for completions (io_uring allows one submitter and one reaper).
#ifndef MAPDIRECT_DETAIL_URING_BACKEND_HPP
#define MAPDIRECT_DETAIL_URING_BACKEND_HPP

#include "../config.hpp"
#include "../error.hpp"
#include "syscall.hpp"

#include <liburing.h>
#include <sched.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

class uring_backend {
 public:
  // Sets up a ring of `entries`; false (and the reason in `why`) if io_uring
  // is unusable here. Clears `early_writeback` if the kernel lacks
  // IORING_OP_SYNC_FILE_RANGE (or cannot say).
  bool open(unsigned entries, bool& early_writeback, char* why, std::size_t why_size) noexcept {
    io_uring_params p{};
    p.flags = IORING_SETUP_CLAMP;
    const long fd = sys::io_uring_setup(entries, &p);
    if (fd < 0) {
      describe_setup_failure(errno, why, why_size);
      return false;
    }
    if (const int rc = io_uring_queue_mmap(static_cast<int>(fd), &p, &ring_); rc < 0) {
      sys::close_quietly(static_cast<int>(fd));
      std::snprintf(why, why_size, "thread: mapping the io_uring failed with %s", errno_name(-rc));
      return false;
    }
    ok_ = true;
    // io_uring_queue_init does these after mapping; io_uring_queue_mmap (2.3)
    // does not. Without the array every submission would reuse the first SQE;
    // without the features liburing assumes a pre-5.11 kernel, and
    // io_uring_wait_cqe_timeout then queues a timeout SQE and submits the
    // whole queue from the waiting thread, racing the threads that submit
    // under the committer's lock (a flush prepared meanwhile went out as the
    // slot's stale contents and never completed: a hang).
    for (unsigned i = 0; i < p.sq_entries; ++i) ring_.sq.array[i] = i;
    ring_.features = p.features;
    const bool have_fsync = probe_opcodes(early_writeback);
    const int rt = have_fsync ? round_trip() : -EINVAL;
    if (!have_fsync || rt < 0) {
      close();
      std::snprintf(why, why_size, "thread: %s",
                    !have_fsync                     ? "kernel's io_uring lacks IORING_OP_FSYNC"
                    : rt == -ENOSYS || rt == -EPERM ? "io_uring_enter refused (seccomp or policy)"
                                                    : "io_uring round trip failed");
      return false;
    }
    std::snprintf(why, why_size, "io_uring: IORING_OP_FSYNC(DATASYNC)%s",
                  early_writeback ? " + IORING_OP_SYNC_FILE_RANGE(WRITE)" : "");
    return true;
  }

  bool ok() const noexcept { return ok_; }

  // Releases the ring (unmaps it, closes its descriptor).
  void close() noexcept {
    if (ok_) io_uring_queue_exit(&ring_);
    ok_ = false;
  }

  // In a forked child: closes this process's copy of the ring descriptor
  // only (the ring's memory is shared with the parent: no munmap).
  void close_inherited() noexcept {
    if (ok_) sys::close_quietly(ring_.ring_fd);
  }

  // Queues a datasync fsync of fd tagged `data` and submits it; the submit's
  // result (< 0: not submitted), -EBUSY when the queue has no room.
  int submit_fsync(int fd, std::uint64_t data) noexcept {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, data);
    note_sqe(sqe);
    return submit();
  }

  // Starts write-back of [off, +len) of fd (advisory); true once queued (a
  // failed submit leaves the SQE in the ring and the next submit sends it,
  // so its completion will still arrive).
  bool submit_writeback(int fd, std::uint64_t off, std::size_t len, std::uint64_t data) noexcept {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return false;
    // The opcode's length is 32 bits; 0 means "to the end of the file".
    const unsigned n = len > 0xffffffffu ? 0u : static_cast<unsigned>(len);
    io_uring_prep_sync_file_range(sqe, fd, n, off, SYNC_FILE_RANGE_WRITE);
    io_uring_sqe_set_data64(sqe, data);
    note_sqe(sqe);
    (void)submit();
    return true;
  }

  // Submits a NOP tagged `data` (the reap thread leaves on its completion);
  // retries until the queue has room and the submit is taken (it drains as
  // it completes), at most 1000 times.
  void submit_stop(std::uint64_t data) noexcept {
    for (int attempt = 0;; ++attempt) {
      io_uring_sqe* sqe = get_sqe();
      if (sqe) {
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, data);
        note_sqe(sqe);
        if (submit() >= 0 || attempt >= 1000) break;
      } else if (attempt >= 1000) {
        break;
      }
      ::sched_yield();
    }
  }

  // One reaped completion.
  struct completion {
    std::uint64_t data;
    int res;
  };

  // Blocks until a completion is ready; 0, or a negative errno.
  int wait() noexcept {
    io_uring_cqe* cqe = nullptr;
    return io_uring_wait_cqe(&ring_, &cqe);
  }

  // True when wait_for() waits without submitting (IORING_FEAT_EXT_ARG,
  // Linux 5.11): only then may it run outside the lock the submitters hold.
  bool has_timed_wait() const noexcept { return ok_ && (ring_.features & IORING_FEAT_EXT_ARG) != 0; }

  // As wait(), for at most `ns` nanoseconds (-ETIME when none came). Only
  // where has_timed_wait(): otherwise liburing would submit from here.
  int wait_for(long long ns) noexcept {
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts{};
    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    return io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
  }

  // Takes up to `max` ready completions into `out`; how many.
  unsigned reap(completion* out, unsigned max) noexcept {
    unsigned n = 0;
    io_uring_cqe* cqe = nullptr;
    while (n < max && io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe) {
      out[n++] = {io_uring_cqe_get_data64(cqe), cqe->res};
      io_uring_cqe_seen(&ring_, cqe);
    }
    return n;
  }

 private:
  static void describe_setup_failure(int e, char* why, std::size_t why_size) noexcept {
    char disabled[16] = {};
    const bool sysctl =
        sys::read_text("/proc/sys/kernel/io_uring_disabled", disabled, sizeof disabled) > 0 && disabled[0] != '0';
    std::snprintf(why, why_size, "thread: io_uring_setup failed with %s%s", errno_name(e),
                  e == ENOSYS   ? " (kernel without io_uring, or blocked by seccomp)"
                  : e == EPERM  ? (sysctl ? " (kernel.io_uring_disabled)" : " (refused by policy or seccomp)")
                  : e == ENOMEM ? " (locked-memory limit)"
                                : "");
  }

  // The opcodes we need (fsync 5.1, sync_file_range 5.2); probing needs 5.6.
  // Whether IORING_OP_FSYNC is there (assumed where the probe is missing).
  bool probe_opcodes(bool& early_writeback) noexcept {
    bool have_fsync = true;
    if (io_uring_probe* pr = io_uring_get_probe_ring(&ring_)) {
      have_fsync = io_uring_opcode_supported(pr, IORING_OP_FSYNC) != 0;
      if (!io_uring_opcode_supported(pr, IORING_OP_SYNC_FILE_RANGE)) early_writeback = false;
      io_uring_free_probe(pr);
    } else {
      early_writeback = false;  // pre-5.6 kernel: cannot tell whether 5.2's opcode exists
    }
    return have_fsync;
  }

  // A round trip proves io_uring_enter works (seccomp may allow setup only).
  int round_trip() noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, 0);
    io_uring_cqe* cqe = nullptr;
    int rt = io_uring_submit_and_wait(&ring_, 1);
    if (rt >= 0) rt = io_uring_wait_cqe(&ring_, &cqe);
    if (rt >= 0 && cqe) {
      rt = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
    }
    return rt;
  }

  io_uring_sqe* get_sqe() noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
      // Every submission is flushed at once, so the queue frees on submit.
      (void)submit();
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  // The ring's SQE as queued, for the seam (read back from the SQE itself).
  static void note_sqe(const io_uring_sqe* sqe) noexcept {
    sys::ring_sqe(sqe->opcode, sqe->fd, sqe->fsync_flags, sqe->user_data);
  }
  int submit() noexcept { return sys::ring_submit(io_uring_submit(&ring_)); }

  io_uring ring_{};
  bool ok_ = false;
};

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_URING_BACKEND_HPP
