// SPDX-License-Identifier: MIT
// direct_mapping: a shared file mapping with the strongest durability the
// kernel and file system give (MAP_DIRECT -> MAP_SYNC -> MAP_SHARED + msync),
// and a precise report of which one it got.
//
//   mapdirect::open_options o;
//   o.size = 1 << 20;
//   o.create = true;
//   auto m = mapdirect::direct_mapping::open("/mnt/pmem/log", o);  // result<direct_mapping>
//   if (!m) return report(m.error(), mapdirect::last_error_detail());
//   std::memcpy(m.value().data() + off, rec, n);        // plain stores into the file...
//   if (auto r = m.value().persist(off, n); !r) ...     // ...durable now, or EIO/durability_lost
//   m.value().copy_persist(off, rec, n);                // the same in one call
//   // m.value().mode(): direct, sync or shared; store_granularity(): byte, cache_line or page
#ifndef MAPDIRECT_MAPPING_HPP
#define MAPDIRECT_MAPPING_HPP

#include "config.hpp"
#include "detail/address_reservation.hpp"
#include "detail/badblocks.hpp"
#include "detail/descriptor.hpp"
#include "detail/devdax.hpp"
#include "detail/durability.hpp"
#include "detail/file_io.hpp"
#include "detail/linux_abi.hpp"
#include "detail/nd.hpp"
#include "detail/open_file.hpp"
#include "detail/restore_size.hpp"
#include "detail/seal_registry.hpp"
#include "detail/syscall.hpp"
#include "error.hpp"
#include "file.hpp"
#include "guard.hpp"
#include "persist.hpp"
#include "seal.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include <fcntl.h>
#include <linux/stat.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

MAPDIRECT_BEGIN_NAMESPACE

/// How stores to a mapping become durable; strongest first.
enum class map_mode {
  direct,  ///< kernel MAP_DIRECT: block map pinned, CPU flush makes stores durable
  sync,    ///< MAP_SHARED_VALIDATE|MAP_SYNC: synchronous faults, CPU flush makes stores durable
  shared,  ///< MAP_SHARED: page cache (or DAX without sync faults); msync/fdatasync makes stores durable
};

/// The smallest unit a persist must cover to be correct (PMDK's meaning).
enum class granularity {
  byte,        ///< stores are durable once visible (eADR): persist is a fence
  cache_line,  ///< stores are durable after a cache-line flush and a fence
  page,        ///< stores are durable after msync/fdatasync of their pages
};

/// Name of a mode ("sync").
constexpr const char* to_string(map_mode m) noexcept {
  switch (m) {
    case map_mode::direct: return "direct";
    case map_mode::sync: return "sync";
    case map_mode::shared: return "shared";
  }
  return "?";
}

/// Name of a granularity ("cache_line").
constexpr const char* to_string(granularity g) noexcept {
  switch (g) {
    case granularity::byte: return "byte";
    case granularity::cache_line: return "cache_line";
    case granularity::page: return "page";
  }
  return "?";
}

/// The store granularity a mapping of `mode` has over nd regions whose
/// combined persistence domain is `domain` (PMDK's rule).
constexpr granularity granularity_for(map_mode mode, persistence_domain domain) noexcept {
  return mode == map_mode::shared                  ? granularity::page
         : domain == persistence_domain::cpu_cache ? granularity::byte
                                                   : granularity::cache_line;
}

/// Who may store through a mapping.
enum class map_access {
  read_write,  ///< PROT_READ|PROT_WRITE from an O_RDWR descriptor (the default)
  read_only,   ///< PROT_READ from any readable descriptor: every write-side call fails with errc::read_only
};

/// Name of an access mode ("read_only").
constexpr const char* to_string(map_access a) noexcept {
  switch (a) {
    case map_access::read_write: return "read_write";
    case map_access::read_only: return "read_only";
  }
  return "?";
}

/// Options for direct_mapping::map.
struct map_options {
  /// The strongest mode to try. map_mode::direct is attempted only when the
  /// build defines MAPDIRECT_MAP_DIRECT_FLAG; otherwise it is skipped (and reported).
  map_mode strongest = map_mode::direct;
  /// The weakest mode acceptable; below it map() fails with errc::mode_unavailable.
  map_mode weakest = map_mode::shared;
  /// The coarsest store granularity the caller can handle (errc::granularity_unavailable if coarser).
  granularity coarsest = granularity::page;
  /// Prefault the whole mapping (MAP_POPULATE).
  bool populate = false;
  /// copy_persist/fill_persist use non-temporal stores from this many bytes up.
  std::size_t movnt_threshold = MAPDIRECT_MOVNT_THRESHOLD;
  /// Test/diagnostic override of the flush instruction (default: CPUID/HWCAP).
  std::optional<flush_instruction> flush = std::nullopt;
  /// Test/diagnostic override of the nd persistence domain (default: sysfs).
  std::optional<persistence_domain> domain = std::nullopt;
  /// Seal the mapped range first (iomap_seal::acquire), so that faults never
  /// allocate: with MAP_SYNC, "synchronous faults and no allocating faults"
  /// in one call. The mapping owns the seal until close().
  std::optional<seal_options> seal = std::nullopt;
  /// read_only maps PROT_READ (the descriptor may be O_RDONLY; open() then
  /// opens O_RDONLY): loads and guarded read() work, every write-side call
  /// (persist, drain, copy_persist, fill_persist, write, repair, grow past
  /// the file's end, shrink with truncate) fails with errc::read_only and
  /// never faults, flush() does nothing. A reader needs no synchronous
  /// faults, so the mapping is MAP_SHARED: the ladder reports the stronger
  /// rungs as not applicable, and weakest/coarsest do not apply. seal must be
  /// empty (errc::invalid_argument).
  map_access access = map_access::read_write;
  /// Address space to reserve, in bytes from the mapped offset, so that
  /// grow() can extend the mapping in place up to this length: PROT_NONE and
  /// MAP_NORESERVE (costs no memory), owned by the mapping, never placed over
  /// anything else. 0, or no more than the mapped length: no room to grow.
  std::size_t reserve = 0;
};

/// Options for direct_mapping::grow.
struct grow_options {
  /// Extend the file when it is shorter than the grown range (else
  /// errc::beyond_eof). A mapping that owns a seal extends it by a seal of
  /// the new range (iomap_seal::acquire with extend), so the grown part is
  /// sealed too.
  bool extend_file = true;
  /// Allocate the extension's blocks (fallocate; sparse where unsupported),
  /// so that stores never need an allocation. Ignored for a sealed mapping
  /// (sealing allocates).
  bool preallocate = true;
  /// Growing past the reserved address space moves the mapping to a new,
  /// larger reservation (grow_report::moved) instead of failing with
  /// errc::reservation_exhausted. Every pointer into the old mapping is then
  /// invalid.
  bool allow_relocation = false;
};

/// What grow() did.
struct grow_report {
  bool moved = false;          ///< the mapping moved (allow_relocation): data() changed, old pointers are invalid
  bool file_extended = false;  ///< the file was extended (and its new size made durable)
};

/// Options for direct_mapping::shrink.
struct shrink_options {
  /// Also truncate the file to the mapping's new end (never below it).
  bool truncate = false;
};

/// One rung of the ladder as map() tried it.
struct map_attempt {
  map_mode mode = map_mode::shared;  ///< the rung
  bool attempted = false;            ///< false: skipped (see cause)
  int error = 0;                     ///< errno of the attempt, 0 on success
  const char* cause = "";            ///< likely cause, in words
};

/// What map() tried, strongest first.
struct map_ladder {
  map_attempt steps[3];   ///< the rungs tried or skipped, steps[0] first
  std::size_t count = 0;  ///< how many of steps are filled in
};

/// Something that can make a page-granular range durable on map()'s behalf
/// (the group committer of mapdirect/async.hpp implements it).
class page_persister {
 public:
  /// Makes [file_offset, file_offset+length) of fd durable; `addr` is its mapped address, and
  /// (dev, ino) fd's file as fstat gave them when it was mapped (no fstat per persist).
  virtual result<void> persist_pages(int fd, dev_t dev, ino_t ino, std::uint64_t file_offset, void* addr,
                                     std::size_t length) noexcept = 0;

 protected:
  ~page_persister() = default;
};

/// Options for direct_mapping::open.
///
/// Rules open() follows (so that a privileged program can open files in
/// directories other users write to):
///  - A new file is created unnamed (O_TMPFILE in the parent directory),
///    sized, sealed if map.seal asks, and mapped; only then is it linked
///    into place (linkat, which never replaces an existing name) and the
///    parent directory fsynced, before open() returns. A failure before the
///    link leaves nothing behind. Where O_TMPFILE is unsupported (EOPNOTSUPP,
///    EISDIR, EINVAL) the file is created by name with O_CREAT|O_EXCL, and on
///    failure it is removed only if provably still this call's own file (same
///    inode, one link, no other opener: a write lease is granted); otherwise
///    it is left in place. last_error_detail() says which path was taken.
///  - An existing file is looked at first through an O_PATH descriptor:
///    anything but a regular file (directory, FIFO, device, socket) is
///    refused without being opened; another user's file in a sticky
///    directory others can write to (/tmp, /var/tmp, /dev/shm; the rule of
///    the kernel's fs.protected_regular, applied whatever the sysctl says) is
///    refused with EACCES unless allow_foreign_owner. With create, the real
///    open of an existing file passes O_CREAT, so the kernel's own
///    protections apply too; without create it reopens the checked inode.
///  - no_follow refuses a symbolic link as the last component (ELOOP).
///    Symbolic links in the directory part are always followed.
///  - An extension (grow) is never rolled back: shrinking could cut off data
///    another process already mapped at the new size. After a failed
///    extension or mapping the file may be larger than before.
///  - With map.access == map_access::read_only the file is opened O_RDONLY
///    (so a 0444 file, another user's readable file or a read-only mount
///    can be mapped); create and grow are then refused (errc::invalid_argument)
///    and a size beyond the file's end fails with errc::beyond_eof.
struct open_options {
  /// Bytes to map from offset 0; 0 maps the whole existing file (and then a
  /// missing file is not created: ENOENT).
  std::uint64_t size = 0;
  /// Create the file if it does not exist (it is then sized to `size`).
  bool create = false;
  /// With create: fail with EEXIST if the file exists.
  bool exclusive = false;
  /// Extend an existing file shorter than `size` (never shrinks). Off by
  /// default so that a wrong size cannot change a file on disk.
  bool grow = false;
  /// Allocate the blocks of any extension (fallocate), so stores never need
  /// an allocation; else the extension is sparse.
  bool preallocate = true;
  /// Refuse a symbolic link as the last path component (O_NOFOLLOW; ELOOP).
  bool no_follow = false;
  /// Accept an existing file owned by another user in a sticky directory
  /// that others can write to (refused with EACCES by default).
  bool allow_foreign_owner = false;
  /// Permission bits of a created file (the umask still applies). 0600:
  /// engine data is private, and any process that can open the file can
  /// also break a lease-based seal.
  mode_t permissions = 0600;
  /// If not null: set to true when this call created the file, false when it
  /// opened an existing one (also on failure).
  bool* created = nullptr;
  /// How to map it.
  map_options map = {};
};

/// A move-only RAII shared mapping of a file range with a known durability
/// guarantee. The destructor unmaps and never throws; close() reports errors.
///
/// Thread safety: persist(), flush(), drain(), copy_persist(), fill_persist(),
/// read(), write(), repair() and the const accessors may run concurrently on
/// one object from any number of threads (stores to overlapping bytes are the
/// caller's to order). A drain() returns success only once every range the
/// calling thread flushed before it is durable; on a page-granular mapping
/// also every range other threads flushed before it (it waits for an msync
/// already covering them, or issues one). Move, swap, close(),
/// attach_persister() and clear_durability_error() must not run concurrently
/// with any other call on the same object. grow() and shrink() must not run
/// concurrently with each other, move, swap or close(); while an in-place
/// grow() runs, other threads may keep using the existing part: loads and
/// stores through pointers into it, and read(), write(), persist(), flush(),
/// drain(), copy_persist(), fill_persist() of ranges inside the old size (a
/// relocating grow() and shrink() allow no concurrent use at all).
///
/// Durability state is per file: a write-back error seen through any mapping,
/// committer or seal of a file makes every later persist of that file, through
/// any of them, fail with errc::durability_lost until clear_durability_error().
///
/// Fork: the child inherits the mapping (MAP_SHARED, same file pages) and the
/// descriptor; persist in the child works, but a drain() must not be running
/// in another parent thread at the time of fork(). The reserved room after
/// the mapping (map_options::reserve) is inherited as well: grow() in the
/// child maps into the child's copy of it.
class direct_mapping {
 public:
  /// An empty object (no mapping).
  direct_mapping() noexcept = default;
  /// Takes over `other`'s mapping; `other` becomes empty.
  direct_mapping(direct_mapping&& other) noexcept { swap(other); }
  /// Unmaps this object's mapping (as close(), errors dropped), then takes over `other`'s.
  direct_mapping& operator=(direct_mapping&& other) noexcept;
  direct_mapping(const direct_mapping&) = delete;
  direct_mapping& operator=(const direct_mapping&) = delete;
  ~direct_mapping();

  /// Maps [offset, offset+length) of fd (opened O_RDWR; for
  /// options.access == read_only, any readable descriptor) with the strongest
  /// mode options allow. length 0 maps to the end of the file. The mapping
  /// opens its own file description of the file (so that no other user of
  /// fd consumes its write-back errors), or falls back to a duplicate of fd
  /// (see own_description()); either way the caller may close its own fd.
  /// Never maps over address space it does not own (safe against other
  /// threads' concurrent mmap).
  /// Errors: errc::misaligned_offset, errc::beyond_eof (range past EOF),
  /// errc::invalid_argument, errc::mode_unavailable (every step named in
  /// last_error_detail()), errc::granularity_unavailable, errc::sealed (ETXTBSY),
  /// errno codes (EACCES: fd not writable, ENOMEM, EBADF, ...); with
  /// options.seal, iomap_seal::acquire's errors (ENOSPC, errc::block_map_unverifiable, ...).
  /// With options.reserve, ENOMEM when the address space cannot be reserved.
  /// fd may be a device DAX character device (/dev/daxX.Y): size and
  /// alignment then come from sysfs, the mode is sync (device_dax()), and
  /// offset/length must be multiples of its align (errc::misaligned_offset,
  /// errc::invalid_argument); seal and reserve are refused
  /// (errc::invalid_argument); another character device: errc::invalid_argument.
  static result<direct_mapping> map(int fd, std::uint64_t offset, std::size_t length,
                                    map_options options = {}) noexcept;

  /// Opens (or creates, atomically and durably) `path` and maps it; see
  /// open_options for the rules. Never releases the process's record locks.
  /// Errors: as map(), plus EEXIST (exclusive), ENOENT, ELOOP (no_follow),
  /// EACCES (another user's file in a shared sticky directory, or the
  /// kernel's protections), errc::invalid_argument (not a regular file,
  /// device DAX), EAGAIN (the name was replaced while opening), and
  /// open/linkat/fsync/fallocate/ftruncate errno codes (ENOSPC, EIO, ...).
  /// Thread-safe (calls may run concurrently, also on one path); descriptors
  /// it opens are close-on-exec and never 0..2.
  static result<direct_mapping> open(const char* path, open_options options = {}) noexcept;
  /// As open(const char*, open_options).
  static result<direct_mapping> open(const std::string& path, open_options options = {}) noexcept;

  /// First byte of the mapping (nullptr when empty).
  std::byte* data() const noexcept { return data_; }
  /// Mapped length in bytes.
  std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  /// Bytes the mapping can grow to in place (its reserved address space,
  /// page-rounded; at least size()). 0 when empty.
  std::size_t capacity() const noexcept { return data_ ? reserved_ : 0; }
  /// read_write, or read_only (map_options::access).
  map_access access() const noexcept { return access_; }
  /// True when this object holds a mapping (false when default-constructed,
  /// moved-from or closed); every mapdirect type spells emptiness this way.
  explicit operator bool() const noexcept { return data_ != nullptr; }
  /// File offset of data()[0].
  std::uint64_t file_offset() const noexcept { return offset_; }
  /// The mapping's own file descriptor, or -1.
  int native_handle() const noexcept { return fd_; }
  /// True when native_handle() is an open file description of the mapping's
  /// own; false when it is a dup of the caller's (the reopen was refused, the
  /// caller's fd is not O_RDWR, or a lease forbids a second description: see
  /// describe()). Write-back errors are tracked per file either way.
  bool own_description() const noexcept { return own_description_; }
  /// The durability mode obtained.
  map_mode mode() const noexcept { return mode_; }
  /// True when the mapping is of a device DAX character device (/dev/daxX.Y):
  /// mode() is then map_mode::sync (no page cache, no file-system metadata:
  /// every fault is synchronous without MAP_SYNC), file offsets are device
  /// offsets, and grow/shrink/seal/repair are refused.
  bool device_dax() const noexcept { return device_dax_; }
  /// The store granularity obtained.
  granularity store_granularity() const noexcept { return granularity_; }
  /// The nd persistence domain behind a sync/direct mapping (unknown for shared).
  persistence_domain domain() const noexcept { return domain_; }
  /// The flush instruction persist() uses.
  flush_instruction flush_with() const noexcept { return flush_; }
  /// Every rung map() tried, with errno and likely cause.
  const map_ladder& ladder() const noexcept { return ladder_; }
  /// The seal taken because options.seal was set (empty otherwise).
  const iomap_seal& seal() const noexcept { return seal_; }
  /// The seal of the part grow() added to a sealed mapping: it covers the
  /// file from the end of seal() to the mapping's end (empty otherwise).
  const iomap_seal& grown_seal() const noexcept { return grown_seal_; }

  /// Extends the mapping to new_length bytes in place: the file is extended
  /// first when shorter (grow_options), the new part is mapped right after
  /// the existing one, in the same mode (same mmap flags, MAP_SYNC included)
  /// with the same granularity, inside the address space map_options::reserve
  /// reserved. data() and every pointer into the mapping stay valid. A
  /// mapping that owns a seal gets the new range sealed too (grown_seal()).
  /// An extended file's new size is made durable (fdatasync) before grow()
  /// returns. On failure nothing changes: size, mapping, file size (an
  /// extension is put back; blocks it allocated stay allocated) and seals.
  /// Growing past capacity() fails with errc::reservation_exhausted unless
  /// options.allow_relocation (then the mapping moves: see grow_report).
  /// On a read-only mapping, grows only over bytes the file already has
  /// (another writer extended it); errc::read_only otherwise.
  /// Errors: errc::not_mapped, errc::invalid_argument (new_length below
  /// size(), overflow), errc::beyond_eof (file too short, extend_file off),
  /// errc::read_only, errc::reservation_exhausted, errc::sealed (another seal
  /// of this process covers the file, unless this mapping owns it), seal
  /// errors, ENOSPC/EDQUOT/EFBIG (nothing changed), fdatasync codes (EIO),
  /// mmap codes (ENOMEM; if the address space after the mapping could then not
  /// be re-reserved exactly, capacity() drops to size(), said in the detail).
  /// Thread-safety: see the class comment (readers of the old part may run).
  result<grow_report> grow(std::size_t new_length, grow_options options = {}) noexcept;

  /// Shrinks the mapping to new_length bytes (1..size()): the tail pages are
  /// unmapped and re-reserved (capacity() is unchanged, so grow() can map them
  /// again); with options.truncate the file is then cut to the new end.
  /// Pointers into the tail become invalid. Refused with errc::sealed while
  /// the mapping owns a seal. Should another thread map into the tail between
  /// the unmap and the re-reservation, capacity() drops to the new size.
  /// Errors: errc::not_mapped, errc::invalid_argument (0 or above size()),
  /// errc::sealed, errc::read_only (truncate on a read-only mapping), munmap
  /// codes (nothing changed), truncate_file's errors (the mapping is then
  /// already shrunk and the file keeps its size: the detail says so).
  /// Not concurrent-safe: no other call on the object may run meanwhile.
  result<void> shrink(std::size_t new_length, shrink_options options = {}) noexcept;
  /// One line per rung, e.g. "sync: EOPNOTSUPP (not on a DAX file system (statx DAX=0))",
  /// plus a "descriptor:" line when the mapping shares the caller's description.
  std::string describe() const;

  /// Makes [offset, offset+length) durable: a fence (byte), cache-line
  /// flushes and a fence (cache_line), or msync/the attached persister (page).
  /// Errors: errc::out_of_range, errc::not_mapped, errc::read_only, errc::durability_lost
  /// (an earlier flush of this file failed, through any mapping, committer or
  /// seal), msync errno codes (EIO, ENOSPC, ENOMEM). Thread-safe.
  result<void> persist(std::size_t offset, std::size_t length) noexcept;

  /// Starts writing back [offset, offset+length) (clamped to the mapping);
  /// durable only after the next drain(). Batch many flushes, then drain once.
  /// Does nothing on a read-only mapping (drain() then reports it). Thread-safe.
  void flush(std::size_t offset, std::size_t length) noexcept;

  /// Makes every flush() this thread made before this call durable (page
  /// granularity: every flush() made before it by any thread). Thread-safe:
  /// a concurrent drain waits for the msync in flight when that covers the
  /// caller's flushes, and otherwise issues the next one after it.
  /// Errors: errc::not_mapped, errc::read_only, errc::durability_lost, msync
  /// errno codes (also when another thread's msync that covered this caller's
  /// flushes failed).
  result<void> drain() noexcept;

  /// Copies n bytes from src to offset and makes them durable.
  /// Errors: as persist(). Thread-safe.
  result<void> copy_persist(std::size_t offset, const void* src, std::size_t n) noexcept;

  /// Fills n bytes at offset with `byte` and makes them durable.
  /// Errors: as persist(). Thread-safe.
  result<void> fill_persist(std::size_t offset, int byte, std::size_t n) noexcept;

  /// Routes page-granular persists through `p` (for example a group
  /// committer); nullptr restores msync. `p` must outlive the attachment.
  /// Not concurrent-safe: attach before other threads use the mapping. On a
  /// read-only mapping it has no effect (every persist fails with errc::read_only).
  void attach_persister(page_persister* p) noexcept { persister_ = p; }
  /// The attached page persister, or nullptr.
  page_persister* persister() const noexcept { return persister_; }

  /// After a failed msync or persister flush (EIO, ENOSPC, EDQUOT) of this
  /// file, through this or any other mapping, committer or seal of it, every
  /// later persist fails with errc::durability_lost, because the kernel may
  /// have dropped the dirty pages and reports that only once per description.
  /// Call this once the data written since the last successful persist has
  /// been rewritten: it clears the state for the whole file (every mapping).
  void clear_durability_error() noexcept;
  /// True after a failed msync/persister flush of this file (through any
  /// mapping, committer or seal), until clear_durability_error().
  bool durability_failed() const noexcept { return data_ != nullptr && file_lost(); }

  // --- guarded access (see guard.hpp)
  /// Copies n bytes at offset into dst; a SIGBUS becomes an error whose
  /// offset() is relative to data(). On error dst's contents are unspecified.
  /// Errors: errc::beyond_eof (truncated: offset() is where the file now ends),
  /// errc::media_error (offset()/length(): the poisoned range; also a plain
  /// SIGBUS on a page the device lists as bad, see list_bad_blocks), errc::io_error,
  /// errc::out_of_range, errc::not_mapped, sigaction errno codes.
  access_result<void> read(std::size_t offset, void* dst, std::size_t n) const noexcept;
  /// read() into a whole byte range (std::span, vector, string, array...). Errors: as read().
  template <class Buffer, class = std::enable_if_t<detail::is_byte_range<std::remove_reference_t<Buffer>>::value>>
  access_result<void> read(std::size_t offset, Buffer&& buffer) const noexcept {
    return read(offset, static_cast<void*>(buffer.data()), detail::byte_size(buffer));
  }
  /// Stores n bytes from src at offset (not yet durable: persist() after);
  /// a SIGBUS (e.g. no block left on the file system) becomes an error.
  /// Errors: as read() (a full file system gives errc::io_error), errc::read_only.
  access_result<void> write(std::size_t offset, const void* src, std::size_t n) noexcept;
  /// write() of a whole byte range. Errors: as write().
  template <class Buffer, class = std::enable_if_t<detail::is_byte_range<std::remove_reference_t<Buffer>>::value>>
  access_result<void> write(std::size_t offset, const Buffer& buffer) noexcept {
    return write(offset, static_cast<const void*>(buffer.data()), detail::byte_size(buffer));
  }
  /// Rewrites a poisoned range [offset, offset+n) (page-aligned) with `src`
  /// through pwrite, which clears poison on DAX (recovery write, Linux 5.19+),
  /// makes it durable (fdatasync) and checks that the mapping reads it back.
  /// Errors: errc::misaligned_offset, errc::out_of_range, errc::not_mapped,
  /// errc::invalid_argument, errc::media_error (the kernel could not clear the
  /// poison, or the range still faults), errc::io_error, errc::read_only,
  /// pwrite/fdatasync errno codes.
  access_result<void> repair(std::size_t offset, const void* src, std::size_t n) noexcept;
  /// repair() from a whole byte range. Errors: as repair().
  template <class Buffer, class = std::enable_if_t<detail::is_byte_range<std::remove_reference_t<Buffer>>::value>>
  access_result<void> repair(std::size_t offset, const Buffer& buffer) noexcept {
    return repair(offset, static_cast<const void*>(buffer.data()), detail::byte_size(buffer));
  }

  /// Unmaps now (and closes the mapping's fd, keeping the process's POSIX
  /// record locks on the file: README "mapdirect and your record locks"). Closing an
  /// empty object succeeds and does nothing. Not concurrent-safe.
  /// Errors: munmap/close errno codes; the object is empty afterwards either way.
  result<void> close() noexcept;

  /// Exchanges two mappings. Not concurrent-safe (the synchronisation
  /// primitives stay with each object; the state they guard moves).
  void swap(direct_mapping& o) noexcept;
  /// Exchanges two mappings.
  friend void swap(direct_mapping& a, direct_mapping& b) noexcept { a.swap(b); }

  /// Which mode map() would obtain for fd (opened O_RDWR), found by mapping
  /// one page at offset 0 (the file may be empty; nothing is touched) and
  /// unmapping it. `ladder` receives every rung tried.
  /// Errors: as map()'s ladder (errc::mode_unavailable, errno codes).
  static result<map_mode> try_modes(int fd, const map_options& options, map_ladder& ladder) noexcept;

  /// What a writer would get, tested without writing: each rung from
  /// options.strongest to options.weakest is mapped PROT_READ (one page at
  /// offset 0) from `fd`, which may be O_RDONLY. The kernel checks MAP_SYNC
  /// support on such a mapping as on a writable one, so a rung accepted here
  /// is what a writer would get, with two things left untested (see probe()):
  /// MAP_DIRECT (it needs a writable mapping: reported skipped) and whether a
  /// writer may open the file at all. `ladder` receives every rung tried.
  /// Errors: as try_modes.
  static result<map_mode> try_modes_read_only(int fd, map_options options, map_ladder& ladder) noexcept;

  /// Renders a ladder as text, one rung per line.
  static std::string describe_ladder(const map_ladder& ladder);
  /// As describe_ladder(ladder), into out[0, size) (truncated, NUL-terminated;
  /// never allocates); returns the length the whole text needs, as snprintf.
  static std::size_t describe_ladder(const map_ladder& ladder, char* out, std::size_t size) noexcept;

 private:
  // The checks that open each ranged call: a mapping, [off, +len) inside it;
  // a writable mapping for the write side. Return the error to give back.
  std::error_code check_range(std::size_t off, std::size_t len) const noexcept;
  std::error_code check_writable(const char* what) const noexcept;

  // The state that orders flush() and drain() between threads, guarded by
  // pin_.lock. Generations number the flushes: a drain that starts when
  // flush_gen == T is done once done_gen >= T (an msync that began after all
  // flushes up to T completed). At most one msync of the pending range runs
  // at a time (syncing); the others wait on pin_.cond.
  struct page_sync {
    std::size_t lo = 0, hi = 0;   // pending range not yet taken by an msync
    std::uint64_t flush_gen = 0;  // flushes so far
    std::uint64_t done_gen = 0;   // every flush up to here is durable
    std::uint64_t fail_gen = 0;   // the last failed msync covered flushes up to here
    std::uint64_t fail_seq = 0;   // failed msyncs so far
    std::error_code fail_code{};  // the last failed msync's error
    bool syncing = false;         // an msync of a taken range is in flight
  };
  // Stays with its object (never swapped): a mutex cannot move. pthread, not
  // std::mutex: no exceptions in -fno-exceptions builds.
  struct pinned_sync {
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
  };

  // A plain SIGBUS (io_error) on a page the platform lists as bad (the pmem
  // driver refuses such a page without a machine check) is poisoned media:
  // errc::media_error with the listed range (detail/badblocks.hpp).
  access_error media_error_if_listed(const access_error& e, const char* what) const noexcept;

  // The per-file state is the only one: a mapping's own flag could disagree
  // with a clear_durability_error() made through another mapping of the file.
  bool file_lost() const noexcept;

  void note_pending(std::size_t lo, std::size_t hi) noexcept;

  // The page-granular drain: see page_sync.
  result<void> drain_pages() noexcept;

  // This thread's report of a failed msync that another thread's drain made
  // on its behalf (the detail text is per thread).
  static result<void> another_threads_failure(std::error_code ec) noexcept;

  result<void> persist_pages(std::size_t offset, std::size_t length) noexcept;

  // A write-back error is the file's: every mapping, committer and seal of it
  // must see it (Linux reports it once per open file description).
  void note_flush_failure(std::error_code ec) noexcept;

  void reset_fields() noexcept;

  // Validates map()'s arguments against the file; returns the length to map.
  static result<std::size_t> check_map_request(int fd, std::uint64_t offset, std::size_t length,
                                               const map_options& options, struct stat& st) noexcept;
  // Takes the mapping's own descriptor of fd's file (see own_description()).
  std::error_code take_descriptor(int fd, const struct stat& st, const map_options& options) noexcept;
  // Fills domain_/granularity_/flush_ and checks them against options.
  std::error_code settle_granularity(const map_options& options, dev_t dev) noexcept;

  // The mmap flags of a rung, or 0 with `cause` set when the build lacks it.
  static int rung_flags(map_mode mode, const char*& cause) noexcept;

  static int prot_for(map_access a) noexcept;

  // Never MAP_FIXED: the kernel picks the address (see align_mapping).
  static int try_map(std::size_t len, int flags, int fd, std::uint64_t off, bool populate, void*& out,
                     int prot = PROT_READ | PROT_WRITE) noexcept;

  // Records why rung `a` was refused with errno e; true when that only means
  // "this mode is not offered here" (step down), false for a real error.
  static bool classify_refusal(int fd, map_attempt& a) noexcept;

  // Tries each rung from options.strongest to options.weakest, each mapped
  // wherever the kernel chooses, so that a refused rung (the kernel may unmap
  // the target before refusing MAP_SYNC) never touches anyone's memory. On
  // success sets mapped/mode; on failure returns the error with the detail set.
  // A read-only mapping tries only MAP_SHARED (PROT_READ): the stronger
  // rungs are reported as not applicable, weakest does not apply.
  static std::error_code climb(int fd, std::uint64_t offset, std::size_t map_length, const map_options& options,
                               map_ladder& ladder, void*& mapped, map_mode& mode_out) noexcept;

  // Moves a large mapping to a 2 MiB-aligned address (DAX PMD faults)
  // without mapping over address space this object does not own: a second
  // mapping of the same range, with the rung climb() found, goes with
  // MAP_FIXED_NOREPLACE into a slot carved out of a fresh reservation. On
  // EEXIST (another thread mapped into the slot meanwhile) it retries; after
  // a few tries, or any other refusal, the unaligned mapping stays (correct,
  // only without PMD faults).
  void align_mapping(bool populate) noexcept;

  // grow()'s steps: what growing needs (or why it cannot), the file
  // extended (and sealed when the mapping owns a seal), undoing that, and the
  // new pages mapped right after the old ones.
  struct grow_plan {
    std::size_t new_map = 0;     // mapping length, page-rounded
    bool in_place = false;       // fits the reserved address space
    std::uint64_t old_file = 0;  // the file's size before
    std::uint64_t want_end = 0;  // offset_ + new_length
  };
  std::error_code plan_growth(std::size_t new_length, const grow_options& options, grow_plan& plan) const noexcept;
  std::error_code grow_file(const grow_plan& plan, const grow_options& options, iomap_seal& new_seal,
                            bool& extended) noexcept;
  void undo_grow_file(const grow_plan& plan, iomap_seal& new_seal, bool extended) noexcept;
  std::error_code map_tail_in_place(std::size_t new_map) noexcept;

  // Maps [offset_, offset_+new_map_length) with the mapping's own flags at the
  // start of a fresh reservation of `capacity` bytes (2 MiB-aligned when that
  // large), keeps the rest of the reservation as room to grow, and unmaps the
  // old mapping and its room. Never over anything it does not own: the slot
  // is carved out of the reservation and mapped with MAP_FIXED_NOREPLACE; on
  // EEXIST (another thread mapped into the slot) it retries elsewhere. On
  // failure nothing changes.
  std::error_code relocate(std::size_t capacity, std::size_t new_map_length) noexcept;

  // After a failed MAP_FIXED into [at, from) the range may be a hole another
  // thread can map into, or still our reservation (newer kernels restore it):
  // undecidable, so the room from `at` on is given up (never mapped over
  // again); the part after `from`, certainly still ours, is unmapped.
  void forfeit_room(char* from) noexcept;

  // Drops pending page flushes past `length` (shrink unmapped them).
  void clamp_pending(std::size_t length) noexcept;

  // Why MAP_SYNC was refused, in words, from statx's DAX attribute.
  static const char* sync_refusal_cause(int fd, int e) noexcept;

  std::byte* data_ = nullptr;
  // Atomic: an in-place grow() publishes the new size while other threads
  // access (and range-check against) the old part.
  std::atomic<std::size_t> size_{0};
  void* map_base_ = nullptr;
  std::size_t map_length_ = 0;
  std::size_t reserved_ = 0;  // owned address space from map_base_: the mapping, then PROT_NONE room to grow
  map_access access_ = map_access::read_write;
  int map_flags_ = 0;  // the mmap flags of the obtained rung: the grown part uses exactly these
  bool populate_ = false;
  std::optional<seal_options> seal_options_;  // how seal_ was taken (grow seals the new part alike)
  iomap_seal grown_seal_{};
  std::uint64_t offset_ = 0;
  int fd_ = -1;
  bool own_description_ = false;
  const char* shared_cause_ = "";  // why fd_ is a dup (static text)
  dev_t dev_ = 0;                  // the file, for the per-file durability state
  ino_t ino_ = 0;
  friend class group_committer;  // reads dev_/ino_ (async.hpp: no fstat per request)
  map_mode mode_ = map_mode::shared;
  granularity granularity_ = granularity::page;
  persistence_domain domain_ = persistence_domain::unknown;
  flush_instruction flush_ = flush_instruction::none;
  std::size_t movnt_threshold_ = MAPDIRECT_MOVNT_THRESHOLD;
  map_ladder ladder_{};
  page_sync sync_{};
  pinned_sync pin_{};
  page_persister* persister_ = nullptr;
  iomap_seal seal_{};
  bool device_dax_ = false;  // a device DAX character device (map_device_dax)

  // map() of a device DAX character device (detail/devdax_map.hpp).
  static result<direct_mapping> map_device_dax(int fd, std::uint64_t offset, std::size_t length,
                                               const map_options& options, const struct stat& st) noexcept;
};

// direct_mapping: definitions of the members declared above.
inline direct_mapping& direct_mapping::operator=(direct_mapping&& other) noexcept {
  if (this != &other) {
    direct_mapping tmp(std::move(other));
    swap(tmp);
  }
  return *this;
}

inline direct_mapping::~direct_mapping() {
  (void)close();
  pthread_cond_destroy(&pin_.cond);
  pthread_mutex_destroy(&pin_.lock);
}

inline result<direct_mapping> direct_mapping::open(const std::string& path, open_options options) noexcept {
  return open(path.c_str(), options);
}

inline std::string direct_mapping::describe() const {
  std::string out = describe_ladder(ladder_);
  if (data_ && !own_description_) {
    out += "descriptor: shares the caller's open file description (";
    out += shared_cause_;
    out += "); write-back errors still reach every mapping through the per-file durability state\n";
  }
  return out;
}

inline std::error_code direct_mapping::check_range(std::size_t off, std::size_t len) const noexcept {
  if (!data_) return detail::fail(errc::not_mapped, "no mapping");
  const std::size_t mapped_now = size_.load(std::memory_order_acquire);
  if (off > mapped_now || len > mapped_now - off)
    return detail::fail(errc::out_of_range, "range [%zu, +%zu) outside mapping of %zu bytes", off, len, mapped_now);
  return {};
}

inline std::error_code direct_mapping::check_writable(const char* what) const noexcept {
  if (access_ == map_access::read_only)
    return detail::fail(errc::read_only, "%s: the mapping is read-only (map_options::access)", what);
  return {};
}

inline result<void> direct_mapping::persist(std::size_t offset, std::size_t length) noexcept {
  if (auto ec = check_range(offset, length)) return ec;
  if (auto ec = check_writable("persist")) return ec;
  switch (granularity_) {
    case granularity::byte: store_fence(); return outcome::success();
    case granularity::cache_line:
      flush_lines(data_ + offset, length, flush_);
      mapdirect::drain(flush_);
      return outcome::success();
    case granularity::page: break;
  }
  return persist_pages(offset, length);
}

inline void direct_mapping::flush(std::size_t offset, std::size_t length) noexcept {
  const std::size_t now = size_.load(std::memory_order_acquire);
  if (!data_ || offset >= now || access_ == map_access::read_only) return;
  if (length > now - offset) length = now - offset;
  if (length == 0) return;
  switch (granularity_) {
    case granularity::byte: return;
    case granularity::cache_line: flush_lines(data_ + offset, length, flush_); return;
    case granularity::page: note_pending(offset, offset + length); return;
  }
}

inline result<void> direct_mapping::drain() noexcept {
  if (!data_) return detail::fail(errc::not_mapped, "drain: no mapping");
  if (auto ec = check_writable("drain")) return ec;
  if (granularity_ == granularity::byte) {
    store_fence();
    return outcome::success();
  }
  if (granularity_ != granularity::page) {
    mapdirect::drain(flush_);
    return outcome::success();
  }
  return drain_pages();
}

inline result<void> direct_mapping::copy_persist(std::size_t offset, const void* src, std::size_t n) noexcept {
  if (auto ec = check_range(offset, n)) return ec;
  if (auto ec = check_writable("copy_persist")) return ec;
  if (n == 0) return outcome::success();
  switch (granularity_) {
    case granularity::byte:
      std::memcpy(data_ + offset, src, n);
      store_fence();
      return outcome::success();
    case granularity::cache_line:
      memcpy_flush(data_ + offset, src, n, flush_, movnt_threshold_);
      mapdirect::drain(flush_);
      return outcome::success();
    case granularity::page: break;
  }
  std::memcpy(data_ + offset, src, n);
  return persist_pages(offset, n);
}

inline result<void> direct_mapping::fill_persist(std::size_t offset, int byte, std::size_t n) noexcept {
  if (auto ec = check_range(offset, n)) return ec;
  if (auto ec = check_writable("fill_persist")) return ec;
  if (n == 0) return outcome::success();
  switch (granularity_) {
    case granularity::byte:
      std::memset(data_ + offset, byte, n);
      store_fence();
      return outcome::success();
    case granularity::cache_line:
      memset_flush(data_ + offset, byte, n, flush_, movnt_threshold_);
      mapdirect::drain(flush_);
      return outcome::success();
    case granularity::page: break;
  }
  std::memset(data_ + offset, byte, n);
  return persist_pages(offset, n);
}

inline void direct_mapping::clear_durability_error() noexcept {
  if (data_) detail::durability_registry::clear(dev_, ino_);
}

inline access_result<void> direct_mapping::read(std::size_t offset, void* dst, std::size_t n) const noexcept {
  if (auto ec = check_range(offset, n)) return ec;
  const guard_range target{data_, size_, fd_, offset_};
  auto r = detail::copy_guarded(dst, data_ + offset, n, nullptr, &target, "direct_mapping::read");
  if (!r && r.error().code() == errc::io_error) return media_error_if_listed(r.error(), "direct_mapping::read");
  return r;
}

inline access_result<void> direct_mapping::write(std::size_t offset, const void* src, std::size_t n) noexcept {
  if (auto ec = check_range(offset, n)) return ec;
  if (auto ec = check_writable("direct_mapping::write")) return ec;
  const guard_range target{data_, size_, fd_, offset_};
  return detail::copy_guarded(data_ + offset, src, n, &target, nullptr, "direct_mapping::write");
}

inline access_result<void> direct_mapping::repair(std::size_t offset, const void* src, std::size_t n) noexcept {
  if (auto ec = check_range(offset, n)) return ec;
  if (auto ec = check_writable("repair")) return ec;
  if (device_dax_)
    return access_error(detail::fail(errc::invalid_argument,
                                     "repair: device DAX has no write(2) path that clears poison; clear the "
                                     "region's bad blocks with the platform (ndctl clear-errors / ARS), then "
                                     "rewrite the range through the mapping"));
  return detail::repair_range(guard_range{data_, size_, fd_, offset_}, offset, src, n, detail::sys::page_size());
}

inline result<void> direct_mapping::close() noexcept {
  if (!map_base_ && fd_ < 0) return outcome::success();
  std::error_code ec;
  // The reservation after the mapping goes too: it is ours (reserved_).
  if (map_base_ && detail::sys::munmap(map_base_, reserved_) != 0) ec = detail::fail_errno(errno, "munmap");
  if (fd_ >= 0 && detail::close_keeping_locks(fd_) != 0 && !ec) ec = detail::fail_errno(errno, "close");
  if (auto released = grown_seal_.release(); !released && !ec) ec = released.error();
  if (auto released = seal_.release(); !released && !ec) ec = released.error();
  reset_fields();
  if (ec) return ec;
  return outcome::success();
}

inline void direct_mapping::swap(direct_mapping& o) noexcept {
  using std::swap;
  swap(data_, o.data_);
  o.size_.store(size_.exchange(o.size_.load(std::memory_order_relaxed), std::memory_order_relaxed),
                std::memory_order_relaxed);
  swap(map_base_, o.map_base_);
  swap(map_length_, o.map_length_);
  swap(reserved_, o.reserved_);
  swap(access_, o.access_);
  swap(map_flags_, o.map_flags_);
  swap(populate_, o.populate_);
  swap(seal_options_, o.seal_options_);
  swap(grown_seal_, o.grown_seal_);
  swap(offset_, o.offset_);
  swap(fd_, o.fd_);
  swap(own_description_, o.own_description_);
  swap(shared_cause_, o.shared_cause_);
  swap(dev_, o.dev_);
  swap(ino_, o.ino_);
  swap(mode_, o.mode_);
  swap(granularity_, o.granularity_);
  swap(domain_, o.domain_);
  swap(flush_, o.flush_);
  swap(movnt_threshold_, o.movnt_threshold_);
  swap(ladder_, o.ladder_);
  swap(sync_, o.sync_);
  swap(persister_, o.persister_);
  swap(seal_, o.seal_);
  swap(device_dax_, o.device_dax_);
}

// direct_mapping: the private members declared above.
inline access_error direct_mapping::media_error_if_listed(const access_error& e, const char* what) const noexcept {
  bad_range hit;
  if (!detail::listed_bad_range(fd_, offset_, e.offset(), e.length(), hit) || hit.offset < offset_) return e;
  const std::uint64_t off = hit.offset - offset_;
  detail::set_detail("%s: poisoned media at offset %llu, %llu bytes (listed in the device's bad blocks; the "
                     "device refused the page); rewrite the range to clear it (direct_mapping::repair)",
                     what, static_cast<unsigned long long>(off), static_cast<unsigned long long>(hit.length));
  return access_error(make_error_code(errc::media_error), off, static_cast<std::size_t>(hit.length), e.address());
}

inline bool direct_mapping::file_lost() const noexcept { return detail::durability_registry::is_lost(dev_, ino_); }

inline void direct_mapping::note_pending(std::size_t lo, std::size_t hi) noexcept {
  pthread_mutex_lock(&pin_.lock);
  if (sync_.hi <= sync_.lo) {
    sync_.lo = lo;
    sync_.hi = hi;
  } else {
    if (lo < sync_.lo) sync_.lo = lo;
    if (hi > sync_.hi) sync_.hi = hi;
  }
  ++sync_.flush_gen;
  pthread_mutex_unlock(&pin_.lock);
}

inline result<void> direct_mapping::drain_pages() noexcept {
  if (file_lost()) return detail::fail_durability_lost("drain");
  pthread_mutex_lock(&pin_.lock);
  const std::uint64_t ticket = sync_.flush_gen;
  const std::uint64_t seen_failures = sync_.fail_seq;
  result<void> r = outcome::success();
  while (sync_.done_gen < ticket) {
    if (sync_.fail_seq != seen_failures && sync_.fail_gen >= ticket) {
      r = another_threads_failure(sync_.fail_code);
      break;
    }
    if (sync_.syncing) {
      pthread_cond_wait(&pin_.cond, &pin_.lock);
      continue;
    }
    const std::size_t lo = sync_.lo, hi = sync_.hi;
    const std::uint64_t gen = sync_.flush_gen;
    sync_.lo = sync_.hi = 0;
    sync_.syncing = true;
    pthread_mutex_unlock(&pin_.lock);
    r = hi > lo ? persist_pages(lo, hi - lo) : outcome::success();
    pthread_mutex_lock(&pin_.lock);
    sync_.syncing = false;
    if (r) {
      sync_.done_gen = gen;
    } else {
      // Keep the range pending so that a later drain retries it.
      if (sync_.hi <= sync_.lo) sync_.lo = lo, sync_.hi = hi;
      else sync_.lo = lo < sync_.lo ? lo : sync_.lo, sync_.hi = hi > sync_.hi ? hi : sync_.hi;
      sync_.fail_gen = gen;
      sync_.fail_code = r.error();
      ++sync_.fail_seq;
    }
    pthread_cond_broadcast(&pin_.cond);
    if (!r) break;
  }
  pthread_mutex_unlock(&pin_.lock);
  if (r && file_lost()) return detail::fail_durability_lost("drain");
  return r;
}

inline result<void> direct_mapping::another_threads_failure(std::error_code ec) noexcept {
  if (ec == errc::durability_lost) return detail::fail_durability_lost("drain");
  if (ec.category() == std::system_category())
    return detail::fail_errno(ec.value(), "drain: msync(MS_SYNC) by a concurrent drain covering this flush");
  detail::set_detail("drain: a concurrent drain covering this flush failed (%s error %d)", ec.category().name(),
                     ec.value());
  return ec;
}

inline result<void> direct_mapping::persist_pages(std::size_t offset, std::size_t length) noexcept {
  if (file_lost()) return detail::fail_durability_lost("persist");
  if (length == 0) return outcome::success();
  // Whole pages: msync needs a page-aligned start, and rounding the end
  // ourselves (within the page-rounded mapping) makes the range explicit.
  const std::size_t page = detail::sys::page_size();
  const std::size_t lo = offset & ~(page - 1);
  const std::size_t hi = (offset + length + page - 1) & ~(page - 1);
  if (persister_) {
    auto r = persister_->persist_pages(fd_, dev_, ino_, offset_ + lo, data_ + lo, hi - lo);
    if (!r) note_flush_failure(r.error());
    return r;
  }
  if (detail::sys::msync(data_ + lo, hi - lo, MS_SYNC) != 0) {
    const int e = errno;
    note_flush_failure(detail::errno_code(e));
    return detail::fail_errno(e, "msync(MS_SYNC)");
  }
  // A consumer sharing the description may have taken the error first.
  if (file_lost()) return detail::fail_durability_lost("persist");
  return outcome::success();
}

inline void direct_mapping::note_flush_failure(std::error_code ec) noexcept {
  const bool lost = ec == errc::durability_lost ||
                    (ec.category() == std::system_category() && detail::is_writeback_error(ec.value()));
  if (lost) detail::durability_registry::mark_lost(dev_, ino_, fd_);
}

inline void direct_mapping::reset_fields() noexcept {
  data_ = nullptr;
  size_ = 0;
  map_base_ = nullptr;
  map_length_ = 0;
  reserved_ = 0;
  access_ = map_access::read_write;
  map_flags_ = 0;
  populate_ = false;
  seal_options_ = std::nullopt;
  offset_ = 0;
  fd_ = -1;
  own_description_ = false;
  shared_cause_ = "";
  dev_ = 0;
  ino_ = 0;
  sync_ = page_sync{};
  persister_ = nullptr;
  device_dax_ = false;
  // Every accessor reads as a default-constructed object's (as after a move).
  mode_ = map_mode::shared;
  granularity_ = granularity::page;
  domain_ = persistence_domain::unknown;
  flush_ = flush_instruction::none;
  movnt_threshold_ = MAPDIRECT_MOVNT_THRESHOLD;
  ladder_ = map_ladder{};
}

inline int direct_mapping::rung_flags(map_mode mode, const char*& cause) noexcept {
  (void)cause;  // every rung may be configured in
  switch (mode) {
    case map_mode::direct:
#ifdef MAPDIRECT_MAP_DIRECT_FLAG
      return detail::linux_abi::map_shared_validate | (MAPDIRECT_MAP_DIRECT_FLAG);
#else
      cause = "not configured: build does not define MAPDIRECT_MAP_DIRECT_FLAG (MAP_DIRECT is not in mainline)";
      return 0;
#endif
    case map_mode::sync:
#if MAPDIRECT_HAS_MAP_SYNC
      return detail::linux_abi::map_shared_validate | detail::linux_abi::map_sync;
#else
      cause = "no MAP_SYNC on this architecture";
      return 0;
#endif
    case map_mode::shared: return MAP_SHARED;
  }
  return 0;
}

inline int direct_mapping::prot_for(map_access a) noexcept {
  return a == map_access::read_only ? PROT_READ : PROT_READ | PROT_WRITE;
}

inline int direct_mapping::try_map(std::size_t len, int flags, int fd, std::uint64_t off, bool populate, void*& out,
                                   int prot) noexcept {
  if (populate) flags |= MAP_POPULATE;
  void* p = detail::sys::mmap(nullptr, len, prot, flags, fd, static_cast<off_t>(off));
  if (p == MAP_FAILED) return errno;
  out = p;
  return 0;
}

inline bool direct_mapping::classify_refusal(int fd, map_attempt& a) noexcept {
  const int e = a.error;
  bool step_down = false;
  if (a.mode == map_mode::direct) {
    step_down = (e == EOPNOTSUPP || e == EINVAL || e == EPERM || e == ENODEV);
    a.cause = e == EOPNOTSUPP ? "file system does not support MAP_DIRECT"
              : e == EINVAL   ? "kernel does not know MAP_DIRECT"
              : e == EPERM    ? "file not eligible (not DAX, or reflinked)"
              : e == EACCES   ? "MAP_DIRECT needs a writable mapping of a file opened O_RDWR"
                              : "";
  } else if (a.mode == map_mode::sync) {
    step_down = (e == EOPNOTSUPP || e == EINVAL);
    a.cause = sync_refusal_cause(fd, e);
  }
  if (e == EACCES && !*a.cause)
    a.cause =
        "file descriptor not open O_RDWR (a writable shared mapping needs it; map_access::read_only maps a read-only one)";
  if (e == ETXTBSY) a.cause = "block map is sealed or busy";
  if (e == ENOMEM && !*a.cause) a.cause = "out of memory or address space";
  return step_down;
}

inline std::error_code direct_mapping::climb(int fd, std::uint64_t offset, std::size_t map_length,
                                             const map_options& options, map_ladder& ladder, void*& mapped,
                                             map_mode& mode_out) noexcept {
  ladder = map_ladder{};
  const bool reader = options.access == map_access::read_only;
  const int weakest = reader ? static_cast<int>(map_mode::shared) : static_cast<int>(options.weakest);
  for (int rung = static_cast<int>(options.strongest); rung <= weakest; ++rung) {
    const auto mode = static_cast<map_mode>(rung);
    map_attempt& a = ladder.steps[ladder.count++];
    a.mode = mode;
    if (reader && mode != map_mode::shared) {
      a.cause = mode == map_mode::sync
                    ? "not applicable to a read-only mapping: MAP_SYNC makes write faults synchronous, and loads "
                      "need none (a writer's rung is what probe() reports)"
                    : "not applicable to a read-only mapping: MAP_DIRECT pins the block map for stores";
      continue;
    }
    const int flags = rung_flags(mode, a.cause);
    if (flags == 0) continue;
    a.attempted = true;
    a.error = try_map(map_length, flags, fd, offset, options.populate, mapped, prot_for(options.access));
    if (a.error == 0) {
      mode_out = mode;
      return {};
    }
    if (!classify_refusal(fd, a)) {
      char steps[MAPDIRECT_ERROR_DETAIL_SIZE];
      (void)describe_ladder(ladder, steps, sizeof steps);
      detail::set_detail("map: %s mapping failed with %s; tried:\n%s", to_string(mode), detail::errno_name(a.error),
                         steps);
      return a.error == ETXTBSY ? make_error_code(errc::sealed) : detail::errno_code(a.error);
    }
  }
  char steps[MAPDIRECT_ERROR_DETAIL_SIZE];
  (void)describe_ladder(ladder, steps, sizeof steps);
  return detail::fail(errc::mode_unavailable, "map: no mode from %s to %s is available; tried:\n%s",
                      to_string(options.strongest), to_string(options.weakest), steps);
}

inline void direct_mapping::align_mapping(bool populate) noexcept {
  constexpr std::size_t huge = MAPDIRECT_HUGE_ALIGN_THRESHOLD;
  if (reinterpret_cast<std::uintptr_t>(map_base_) % huge == 0) return;
  const char* unused = "";
  const int base_flags = rung_flags(mode_, unused);
  // MAP_SHARED_VALIDATE refuses MAP_FIXED_NOREPLACE (EOPNOTSUPP): MAP_FIXED
  // over the slot, still our reservation, instead (see relocate()).
  const bool validated = (base_flags & MAP_TYPE) == detail::linux_abi::map_shared_validate;
  const int flags =
      base_flags | (validated ? MAP_FIXED : detail::linux_abi::map_fixed_noreplace) | (populate ? MAP_POPULATE : 0);
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto slot = detail::address_reservation::reserve(map_length_ + huge);
    if (!slot) return;
    char* at = slot.aligned(huge);
    if (!slot.carve(at, map_length_, /*unmap=*/!validated)) return;
    void* p = detail::sys::mmap(at, map_length_, PROT_READ | PROT_WRITE, flags, fd_, static_cast<off_t>(offset_));
    if (validated && p != at) {
      if (p != MAP_FAILED) (void)detail::sys::munmap(p, map_length_);
      if (detail::reserve_exactly(at, map_length_)) (void)detail::sys::munmap(at, map_length_);
      return;
    }
    if (p == at) {
      (void)detail::sys::munmap(map_base_, map_length_);
      map_base_ = p;
      data_ = static_cast<std::byte*>(p);
      return;
    }
    if (p != MAP_FAILED) {  // a pre-4.17 kernel took the address as a hint
      (void)detail::sys::munmap(p, map_length_);
      return;
    }
    if (errno != EEXIST) return;
  }
}

// Appends to the detail whether the size is back (call it after the failure's
// own detail is set).
inline void direct_mapping::undo_grow_file(const grow_plan& plan, iomap_seal& new_seal, bool extended) noexcept {
  (void)new_seal.release();
  if (extended) (void)detail::restore_size(fd_, plan.old_file);
}

inline std::error_code direct_mapping::relocate(std::size_t capacity, std::size_t new_map_length) noexcept {
  constexpr std::size_t huge = MAPDIRECT_HUGE_ALIGN_THRESHOLD;
  const std::size_t slack = capacity >= huge ? huge : 0;
  // MAP_SHARED_VALIDATE (sync, direct) refuses MAP_FIXED_NOREPLACE with
  // EOPNOTSUPP (it is not in the kernel's LEGACY_MAP_MASK): map those with
  // MAP_FIXED over the slot, which is our own reservation (atomic, as grow()).
  const bool validated = (map_flags_ & MAP_TYPE) == detail::linux_abi::map_shared_validate;
  const int flags =
      map_flags_ | (validated ? MAP_FIXED : detail::linux_abi::map_fixed_noreplace) | (populate_ ? MAP_POPULATE : 0);
  int e = EEXIST;
  for (int attempt = 0; attempt < 8 && e == EEXIST; ++attempt) {
    auto slot = detail::address_reservation::reserve(capacity + slack);
    if (!slot) {
      e = errno;
      break;
    }
    char* at = slot.aligned(slack ? huge : detail::sys::page_size());
    if (!slot.carve(at, new_map_length, /*unmap=*/!validated)) {
      e = errno;
      break;
    }
    void* p = detail::sys::mmap(at, new_map_length, prot_for(access_), flags, fd_, static_cast<off_t>(offset_));
    if (validated && p != at) {
      // The range may now be a hole or still reserved: re-reserve it, else give it up (never unmapped).
      e = p == MAP_FAILED ? errno : EINVAL;
      if (p != MAP_FAILED) (void)detail::sys::munmap(p, new_map_length);
      if (detail::reserve_exactly(at, new_map_length)) (void)detail::sys::munmap(at, new_map_length);
      break;
    }
    if (p == at) {
      const std::size_t room = slot.detach(at + new_map_length);
      (void)detail::sys::munmap(map_base_, reserved_);
      map_base_ = p;
      data_ = static_cast<std::byte*>(p);
      map_length_ = new_map_length;
      reserved_ = new_map_length + room;
      return {};
    }
    if (p != MAP_FAILED) {  // a pre-4.17 kernel took the address as a hint
      (void)detail::sys::munmap(p, new_map_length);
      e = EINVAL;
      break;
    }
    e = errno;
  }
  char what[160];
  std::snprintf(what, sizeof what, "map: placing %zu mapped bytes in %zu bytes of reserved address space",
                new_map_length, capacity);
  return detail::fail_errno(e, "%s", what);
}

inline void direct_mapping::forfeit_room(char* from) noexcept {
  char* end = static_cast<char*>(map_base_) + reserved_;
  if (from < end) (void)detail::sys::munmap(from, static_cast<std::size_t>(end - from));
  reserved_ = map_length_;
}

inline void direct_mapping::clamp_pending(std::size_t length) noexcept {
  pthread_mutex_lock(&pin_.lock);
  if (sync_.hi > length) sync_.hi = length;
  if (sync_.lo >= sync_.hi) sync_.lo = sync_.hi = 0;
  pthread_mutex_unlock(&pin_.lock);
}

inline const char* direct_mapping::sync_refusal_cause(int fd, int e) noexcept {
  if (e == EINVAL) return "kernel older than 4.15 (MAP_SHARED_VALIDATE unknown)";
  if (e != EOPNOTSUPP) return "";
  struct statx stx {};
  if (detail::sys::statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0 &&
      (stx.stx_attributes_mask & detail::linux_abi::statx_attr_dax)) {
    return (stx.stx_attributes & detail::linux_abi::statx_attr_dax)
               ? "DAX file without synchronous faults (virtio-pmem or similar): persist uses msync"
               : "not on a DAX file system (statx DAX=0)";
  }
  return "file system or device has no synchronous faults (DAX state unknown: statx lacks STATX_ATTR_DAX)";
}

inline result<map_mode> direct_mapping::try_modes(int fd, const map_options& options, map_ladder& ladder) noexcept {
  detail::clear_detail();
  void* mapped = nullptr;
  map_mode mode = map_mode::shared;
  const std::size_t page = detail::sys::page_size();
  if (auto ec = climb(fd, 0, page, options, ladder, mapped, mode)) return ec;
  detail::sys::munmap(mapped, page);
  return mode;
}

inline result<map_mode> direct_mapping::try_modes_read_only(int fd, map_options options, map_ladder& ladder) noexcept {
  detail::clear_detail();
  ladder = map_ladder{};
  const std::size_t page = detail::sys::page_size();
  for (int rung = static_cast<int>(options.strongest); rung <= static_cast<int>(options.weakest); ++rung) {
    const auto mode = static_cast<map_mode>(rung);
    map_attempt& a = ladder.steps[ladder.count++];
    a.mode = mode;
    if (mode == map_mode::direct) {
      const int flags = rung_flags(mode, a.cause);
      if (flags != 0) a.cause = "not tested: MAP_DIRECT needs a writable mapping of a file opened O_RDWR";
      continue;
    }
    const int flags = rung_flags(mode, a.cause);
    if (flags == 0) continue;
    a.attempted = true;
    void* mapped = nullptr;
    a.error = try_map(page, flags, fd, 0, false, mapped, PROT_READ);
    if (a.error == 0) {
      detail::sys::munmap(mapped, page);
      return mode;
    }
    if (!classify_refusal(fd, a)) {
      char steps[MAPDIRECT_ERROR_DETAIL_SIZE];
      (void)describe_ladder(ladder, steps, sizeof steps);
      detail::set_detail("probe: %s mapping failed with %s; tried:\n%s", to_string(mode), detail::errno_name(a.error),
                         steps);
      return detail::errno_code(a.error);
    }
  }
  char steps[MAPDIRECT_ERROR_DETAIL_SIZE];
  (void)describe_ladder(ladder, steps, sizeof steps);
  return detail::fail(errc::mode_unavailable, "probe: no mode from %s to %s is available; tried:\n%s",
                      to_string(options.strongest), to_string(options.weakest), steps);
}

inline std::string direct_mapping::describe_ladder(const map_ladder& ladder) {
  std::string out(describe_ladder(ladder, nullptr, 0) + 1, '\0');
  out.resize(describe_ladder(ladder, &out[0], out.size()));
  return out;
}

inline std::size_t direct_mapping::describe_ladder(const map_ladder& ladder, char* out, std::size_t size) noexcept {
  std::size_t need = 0;
  for (std::size_t i = 0; i < ladder.count; ++i) {
    const map_attempt& a = ladder.steps[i];
    const char* result = !a.attempted ? "skipped" : a.error == 0 ? "ok" : detail::errno_name(a.error);
    const bool cause = a.cause && *a.cause;
    const int n = std::snprintf(need < size ? out + need : nullptr, need < size ? size - need : 0, "%s: %s%s%s%s\n",
                                to_string(a.mode), result, cause ? " (" : "", cause ? a.cause : "", cause ? ")" : "");
    if (n > 0) need += static_cast<std::size_t>(n);
  }
  if (size > 0 && need < size) out[need] = '\0';
  return need;
}

inline result<std::size_t> direct_mapping::check_map_request(int fd, std::uint64_t offset, std::size_t length,
                                                             const map_options& options, struct stat& st) noexcept {
  if (fd < 0) return detail::fail(errc::invalid_argument, "map: negative file descriptor %d", fd);
  if (static_cast<int>(options.strongest) > static_cast<int>(options.weakest))
    return detail::fail(errc::invalid_argument, "map: options.strongest (%s) is weaker than options.weakest (%s)",
                        to_string(options.strongest), to_string(options.weakest));
  if (options.access == map_access::read_only && options.seal)
    return detail::fail(errc::invalid_argument, "map: a read-only mapping cannot take a seal (options.seal needs "
                                                "O_RDWR and changes the file)");
  const std::size_t page = detail::sys::page_size();
  if (offset % page != 0)
    return detail::fail(errc::misaligned_offset, "map: file offset %llu is not a multiple of the page size %zu",
                        static_cast<unsigned long long>(offset), page);
  if (detail::sys::fstat(fd, &st) != 0) return detail::fail_errno(errno, "map: fstat");
  if (!S_ISREG(st.st_mode)) return detail::fail(errc::invalid_argument, "map: not a regular file");
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (length == 0) {
    if (offset >= file_size)
      return detail::fail(errc::beyond_eof, "map: length 0 (to end of file) but offset %llu is at or past EOF (%llu)",
                          static_cast<unsigned long long>(offset), static_cast<unsigned long long>(file_size));
    if (file_size - offset > std::numeric_limits<std::size_t>::max())
      return detail::fail(errc::invalid_argument, "map: file too large for the address space");
    length = static_cast<std::size_t>(file_size - offset);
  }
  if (offset > file_size || length > file_size - offset)
    return detail::fail(errc::beyond_eof,
                        "map: range [%llu, %llu) extends past end of file (%llu bytes); grow the file first "
                        "(direct_mapping::open with grow) so that no access can SIGBUS",
                        static_cast<unsigned long long>(offset), static_cast<unsigned long long>(offset + length),
                        static_cast<unsigned long long>(file_size));
  if (options.reserve > std::numeric_limits<std::size_t>::max() - 2 * MAPDIRECT_HUGE_ALIGN_THRESHOLD)
    return detail::fail(errc::invalid_argument, "map: options.reserve too large");
  if (length > std::numeric_limits<std::size_t>::max() - 2 * MAPDIRECT_HUGE_ALIGN_THRESHOLD)
    return detail::fail(errc::invalid_argument, "map: length too large");
  return length;
}

inline std::error_code direct_mapping::take_descriptor(int fd, const struct stat& st,
                                                       const map_options& options) noexcept {
  // A reopen must never widen access (a read-only fd keeps mmap's EACCES),
  // nor break a lease: a seal's write lease needs the only description.
  const int fl = detail::sys::fcntl(fd, F_GETFL);
  const bool reader = options.access == map_access::read_only;
  // A reader reopens O_RDONLY, and only from a readable descriptor.
  const bool not_rdwr = reader ? (fl < 0 || (fl & O_ACCMODE) == O_WRONLY) : (fl < 0 || (fl & O_ACCMODE) != O_RDWR);
  const bool leased = detail::seal_registry::leased(st.st_dev, st.st_ino);
  const bool wants_lease = options.seal && options.seal->lease;
  const detail::own_descriptor own =
      detail::reopen_description(fd, reader ? O_RDONLY : O_RDWR, not_rdwr || leased || wants_lease);
  if (own.fd < 0) return detail::fail_errno(errno, "map: duplicating the file descriptor");
  fd_ = own.fd;
  own_description_ = own.own_description;
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  if (own_description_) return {};
  shared_cause_ = not_rdwr && reader ? "the caller's descriptor is not open for reading"
                  : not_rdwr         ? "the caller's descriptor is not open O_RDWR"
                  : leased           ? "a seal of this process holds a lease on the file; a reopen would break it"
                  : wants_lease      ? "options.seal.lease: a write lease needs the file's only description"
                  : own.reopen_error == EACCES ? "reopening through /proc/self/fd was refused (EACCES)"
                  : own.reopen_error == ENOENT ? "/proc is not mounted"
                  : own.reopen_error == EXDEV  ? "/proc/self/fd named another file"
                  : own.reopen_error == EBUSY  ? "the caller's description holds a lease"
                                               : "reopening through /proc/self/fd failed";
  return {};
}

// GCC 12 at -O2 falsely reports the defaulted optionals of a by-value
// map_options as maybe-uninitialized once inlined into callers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
inline std::error_code direct_mapping::settle_granularity(const map_options& options, dev_t dev) noexcept {
  // The nd domain matters only where CPU flushes persist (sync, direct).
  if (mode_ != map_mode::shared) domain_ = options.domain ? *options.domain : detail::domain_of_device(dev);
  granularity_ = granularity_for(mode_, domain_);
  flush_ = options.flush ? *options.flush : detect_flush_instruction();
  if (options.access == map_access::read_only) return {};  // nothing is ever persisted through it
  if (granularity_ == granularity::cache_line && flush_ == flush_instruction::none)
    return detail::fail(errc::granularity_unavailable,
                        "map: %s mapping needs a cache-line flush instruction and this CPU has none", to_string(mode_));
  if (static_cast<int>(granularity_) > static_cast<int>(options.coarsest)) {
    char steps[MAPDIRECT_ERROR_DETAIL_SIZE];
    (void)describe_ladder(ladder_, steps, sizeof steps);
    return detail::fail(errc::granularity_unavailable,
                        "map: granularity %s is coarser than the required %s; tried:\n%s", to_string(granularity_),
                        to_string(options.coarsest), steps);
  }
  return {};
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

inline result<direct_mapping> direct_mapping::map(int fd, std::uint64_t offset, std::size_t length,
                                                  map_options options) noexcept {
  detail::clear_detail();
  struct stat st {};
  auto checked = check_map_request(fd, offset, length, options, st);
  if (!checked && S_ISCHR(st.st_mode)) return map_device_dax(fd, offset, length, options, st);
  if (!checked) return checked.error();
  length = checked.value();

  direct_mapping m;
  if (auto ec = m.take_descriptor(fd, st, options)) return ec;
  if (options.seal) {
    auto sealed = iomap_seal::acquire(m.fd_, offset, length, *options.seal);
    if (!sealed) return sealed.error();
    m.seal_ = std::move(sealed.value());
  }
  const std::size_t page = detail::sys::page_size();
  m.offset_ = offset;
  m.size_ = length;
  m.map_length_ = (length + page - 1) & ~(page - 1);
  m.movnt_threshold_ = options.movnt_threshold;
  m.access_ = options.access;
  m.populate_ = options.populate;
  m.seal_options_ = options.seal;

  void* mapped = nullptr;
  if (auto ec = climb(m.fd_, offset, m.map_length_, options, m.ladder_, mapped, m.mode_)) return ec;
  m.map_base_ = mapped;
  m.data_ = static_cast<std::byte*>(mapped);
  m.reserved_ = m.map_length_;
  const char* unused = "";
  m.map_flags_ = rung_flags(m.mode_, unused);
  const std::size_t room = options.reserve > length ? (options.reserve + page - 1) & ~(page - 1) : 0;
  if (room > m.map_length_) {
    // The rung is settled (climb mapped it wherever the kernel chose): map
    // the same range again, same flags, at the start of a reservation.
    if (auto ec = m.relocate(room, m.map_length_)) return ec;
  } else if (m.map_length_ >= MAPDIRECT_HUGE_ALIGN_THRESHOLD) {
    m.align_mapping(options.populate);
  }
  if (auto ec = m.settle_granularity(options, st.st_dev)) return ec;
  if (!m.own_description_) {
    // Not a failure: say so where a caller looks for why.
    detail::set_detail("map: the mapping shares the caller's open file description (%s)", m.shared_cause_);
  }
  return m;
}

namespace detail {
// Sizes a file this call just created: fallocate (preallocate) or ftruncate.
inline std::error_code size_new_file(int fd, std::uint64_t size, bool preallocate) noexcept {
  if (preallocate) {
    if (sys::fallocate(fd, 0, 0, static_cast<off_t>(size)) == 0) return {};
    if (errno != EOPNOTSUPP) return fail_errno(errno, "open: fallocate (allocating blocks for the new file)");
  }
  if (sys::ftruncate(fd, static_cast<off_t>(size)) != 0)
    return fail_errno(errno, "open: ftruncate (sizing the new file)");
  return {};
}

// True (with the detail set) when the file was unlinked meanwhile (for
// example another creator's rollback): mapping a file without a name would
// lose whatever is written to it.
inline bool unlinked_while_opening(int fd, const char* path) noexcept {
  struct stat now {};
  if (sys::fstat(fd, &now) != 0 || now.st_nlink != 0) return false;
  set_detail("open: %s was removed while it was being opened", path);
  return true;
}

// open() of an existing file. `retry` is set when, in create mode, the name
// vanished or was replaced meanwhile (the caller tries creating again).
inline result<direct_mapping> open_existing_and_map(const parent_dir& parent, const char* path,
                                                    const open_options& options, const open_rules& rules,
                                                    bool& retry) noexcept {
  retry = false;
  int raw = -1;
  struct stat st {};
  if (auto ec = open_existing(parent.fd.get(), parent.name, path, rules, "open", raw, st)) {
    retry = options.create &&
            (ec == std::errc::no_such_file_or_directory || ec == std::errc::resource_unavailable_try_again);
    if (options.size == 0 && ec == std::errc::no_such_file_or_directory)
      append_detail("nothing is created without create and a size");
    return ec;
  }
  const scoped_fd fd(raw);
  std::uint64_t size = options.size;
  if (size == 0) {
    if (st.st_size == 0) return fail(errc::invalid_argument, "open: %s is empty and no size was given", path);
    size = static_cast<std::uint64_t>(st.st_size);
  }
  if (size > static_cast<std::uint64_t>(st.st_size)) {
    if (options.map.access == map_access::read_only)
      return fail(errc::beyond_eof,
                  "open: %s has %lld bytes, fewer than the requested %llu (a read-only open never "
                  "extends a file)",
                  path, static_cast<long long>(st.st_size), static_cast<unsigned long long>(size));
    if (!options.grow)
      return fail(errc::beyond_eof, "open: %s has %lld bytes, fewer than the requested %llu; set grow to extend it",
                  path, static_cast<long long>(st.st_size), static_cast<unsigned long long>(size));
    // extend_file refuses while a seal is held (counted in, so a seal acquired
    // meanwhile waits for the change) and leaves the size unchanged on failure.
    if (auto grown = extend_file(fd.get(), size, options.preallocate); !grown) {
      if (grown.error() == errc::sealed)
        return fail(errc::sealed, "open: refusing to grow %s: iomap_seal(s) held on it", path);
      struct stat now {};  // another process may have grown it past `size` meanwhile: fine
      const bool big_enough = grown.error() == errc::invalid_argument && sys::fstat(fd.get(), &now) == 0 &&
                              static_cast<std::uint64_t>(now.st_size) >= size;
      if (!big_enough) {  // extend_file's detail says what the size is now
        append_detail("(open: growing %s to %llu bytes)", path, static_cast<unsigned long long>(size));
        return grown.error();
      }
    }
  }
  if (size > std::numeric_limits<std::size_t>::max())
    return fail(errc::invalid_argument, "open: size too large for the address space");
  auto m = direct_mapping::map(fd.get(), 0, static_cast<std::size_t>(size), options.map);
  if (m && options.create && unlinked_while_opening(fd.get(), path)) {
    retry = true;
    return errno_code(ENOENT);
  }
  return m;
}
}  // namespace detail

inline std::error_code direct_mapping::plan_growth(std::size_t new_length, const grow_options& options,
                                                   grow_plan& plan) const noexcept {
  const std::size_t old_length = size_.load(std::memory_order_relaxed);
  if (new_length < old_length)
    return detail::fail(errc::invalid_argument, "grow: %zu bytes is below the mapping's %zu; use shrink()", new_length,
                        old_length);
  const auto max_off = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());
  if (new_length > std::numeric_limits<std::size_t>::max() - 2 * MAPDIRECT_HUGE_ALIGN_THRESHOLD ||
      new_length > max_off - offset_)
    return detail::fail(errc::invalid_argument, "grow: %zu bytes at file offset %llu overflow", new_length,
                        static_cast<unsigned long long>(offset_));
  const std::size_t page = detail::sys::page_size();
  plan.new_map = (new_length + page - 1) & ~(page - 1);
  plan.in_place = plan.new_map <= reserved_;
  if (!plan.in_place && !options.allow_relocation)
    return detail::fail(errc::reservation_exhausted,
                        "grow: %zu bytes need %zu bytes of address space and the mapping reserved %zu "
                        "(map_options::reserve); nothing changed. Set grow_options::allow_relocation to let it move",
                        new_length, plan.new_map, reserved_);
  struct stat st {};
  if (detail::sys::fstat(fd_, &st) != 0) return detail::fail_errno(errno, "grow: fstat");
  plan.old_file = static_cast<std::uint64_t>(st.st_size);
  plan.want_end = offset_ + new_length;
  if (plan.want_end <= plan.old_file) return {};
  if (access_ == map_access::read_only)
    return detail::fail(errc::read_only,
                        "grow: the file has %llu bytes, fewer than the %llu that %zu mapped bytes at offset %llu "
                        "need, and a read-only mapping cannot extend it (a writer must grow the file first)",
                        static_cast<unsigned long long>(plan.old_file), static_cast<unsigned long long>(plan.want_end),
                        new_length, static_cast<unsigned long long>(offset_));
  if (!options.extend_file)
    return detail::fail(errc::beyond_eof,
                        "grow: the file has %llu bytes, fewer than the %llu needed; set grow_options::extend_file",
                        static_cast<unsigned long long>(plan.old_file), static_cast<unsigned long long>(plan.want_end));
  return {};
}

inline std::error_code direct_mapping::grow_file(const grow_plan& plan, const grow_options& options,
                                                 iomap_seal& new_seal, bool& extended) noexcept {
  const std::uint64_t sealed_end = seal_ ? seal_.offset() + seal_.length() : 0;
  if (seal_ && plan.want_end > sealed_end) {
    // One seal of everything past seal(): what grown_seal() covered is stable
    // already, so acquiring re-verifies it. No second lease: a lease is per
    // file, and seal()'s already covers the new range.
    seal_options so = seal_options_ ? *seal_options_ : seal_options{};
    so.extend = true;
    so.lease = false;
    auto acquired = iomap_seal::acquire(fd_, sealed_end, plan.want_end - sealed_end, so);
    if (!acquired) return acquired.error();  // size and bytes unchanged (acquire's guarantee)
    new_seal = std::move(acquired.value());
    extended = new_seal.report().extended;
  } else if (plan.want_end > plan.old_file) {
    auto ext = extend_file(fd_, plan.want_end, options.preallocate);
    if (!ext) return ext.error();  // size unchanged (extend_file's guarantee)
    extended = true;
  }
  if (extended && detail::retry_eintr([&] { return detail::sys::fdatasync(fd_); }) != 0) {
    // The new size must be durable before anything is stored past the old end.
    const int e = errno;
    note_flush_failure(detail::errno_code(e));
    const std::error_code ec = detail::fail_errno(e, "grow: fdatasync (making the new size durable)");
    undo_grow_file(plan, new_seal, extended);
    extended = false;
    return ec;
  }
  return {};
}

inline std::error_code direct_mapping::map_tail_in_place(std::size_t new_map) noexcept {
  if (new_map <= map_length_) return {};
  char* at = static_cast<char*>(map_base_) + map_length_;
  const std::size_t add = new_map - map_length_;
  // MAP_FIXED only over our own reservation (atomic: no other thread can
  // map into it meanwhile), with exactly the flags the existing part got.
  void* p = detail::sys::mmap(at, add, prot_for(access_), map_flags_ | MAP_FIXED | (populate_ ? MAP_POPULATE : 0), fd_,
                              static_cast<off_t>(offset_ + map_length_));
  if (p != at) {
    const int e = p == MAP_FAILED ? errno : EINVAL;
    const bool still_ours = detail::reserve_exactly(at, add);
    if (!still_ours) forfeit_room(at + add);
    char what[200];
    std::snprintf(what, sizeof what,
                  "grow: mapping %zu more bytes (%s) at the end of the mapping failed; size and file unchanged%s", add,
                  to_string(mode_),
                  still_ours ? "" : "; the reserved room after the mapping was given up (capacity() == size())");
    return detail::fail_errno(e, "%s", what);
  }
  map_length_ = new_map;
  return {};
}

inline result<grow_report> direct_mapping::grow(std::size_t new_length, grow_options options) noexcept {
  detail::clear_detail();
  if (!data_) return detail::fail(errc::not_mapped, "grow: no mapping");
  if (device_dax_)
    return detail::fail(errc::invalid_argument, "grow: a device DAX mapping has the device's fixed size (no file to "
                                                "extend); map the range you need up front");
  grow_report report;
  if (new_length == size_.load(std::memory_order_relaxed)) return report;
  grow_plan plan;
  if (auto ec = plan_growth(new_length, options, plan)) return ec;
  // 1. The file: extended (and the grown range sealed, when the mapping owns
  //    a seal), all undone on a later failure.
  iomap_seal new_seal;
  bool extended = false;
  if (auto ec = grow_file(plan, options, new_seal, extended)) return ec;
  // 2. The mapping: the new pages, in the same mode, right after the old ones
  //    (or, with allow_relocation, all of it somewhere larger).
  if (plan.in_place) {
    if (auto ec = map_tail_in_place(plan.new_map)) {
      // (the detail names the failed mmap; the file is put back as it was)
      undo_grow_file(plan, new_seal, extended);
      return ec;
    }
  } else {
    std::size_t capacity = reserved_ > std::numeric_limits<std::size_t>::max() / 4 ? plan.new_map : reserved_ * 2;
    if (capacity < plan.new_map) capacity = plan.new_map;
    if (auto ec = relocate(capacity, plan.new_map)) {
      undo_grow_file(plan, new_seal, extended);
      return ec;
    }
    report.moved = true;
  }
  if (new_seal) {
    (void)grown_seal_.release();
    grown_seal_ = std::move(new_seal);
  }
  report.file_extended = extended;
  size_.store(new_length, std::memory_order_release);
  return report;
}

inline result<void> direct_mapping::shrink(std::size_t new_length, shrink_options options) noexcept {
  detail::clear_detail();
  if (!data_) return detail::fail(errc::not_mapped, "shrink: no mapping");
  if (device_dax_)
    return detail::fail(errc::invalid_argument, "shrink: not supported on a device DAX mapping (its length must stay "
                                                "a multiple of the device's align); close() and map again");
  const std::size_t old_length = size_.load(std::memory_order_relaxed);
  if (new_length == 0 || new_length > old_length)
    return detail::fail(errc::invalid_argument, "shrink: new length %zu is not in 1..%zu (close() unmaps everything)",
                        new_length, old_length);
  if (seal_ || grown_seal_)
    return detail::fail(errc::sealed,
                        "shrink: the mapping owns a seal of its range; close() it (releasing the seal) before "
                        "shrinking");
  if (options.truncate && access_ == map_access::read_only)
    return detail::fail(errc::read_only, "shrink: a read-only mapping cannot truncate the file");
  const std::size_t page = detail::sys::page_size();
  const std::size_t new_map = (new_length + page - 1) & ~(page - 1);
  if (new_map < map_length_) {
    char* at = static_cast<char*>(map_base_) + new_map;
    const std::size_t tail = map_length_ - new_map;
    // munmap, then re-reserve with MAP_FIXED_NOREPLACE: exact either way
    // (a failed munmap changes nothing; a failed re-reservation means
    // another thread mapped into the tail, which is then not ours).
    if (detail::sys::munmap(at, tail) != 0)
      return detail::fail_errno(errno, "shrink: munmap of the tail (nothing changed)");
    clamp_pending(new_length);
    const std::size_t old_map = map_length_;
    map_length_ = new_map;
    if (!detail::reserve_exactly(at, tail)) {
      char* rest = static_cast<char*>(map_base_) + old_map;
      if (reserved_ > old_map) (void)detail::sys::munmap(rest, reserved_ - old_map);
      reserved_ = new_map;
    }
  }
  size_.store(new_length, std::memory_order_release);
  if (options.truncate) {
    struct stat st {};
    if (detail::sys::fstat(fd_, &st) != 0) return detail::fail_errno(errno, "shrink: fstat (the mapping is shrunk)");
    if (static_cast<std::uint64_t>(st.st_size) > offset_ + new_length) {
      auto t = truncate_file(fd_, offset_ + new_length);
      if (!t) {
        detail::append_detail("shrink: the mapping is shrunk to %zu bytes; the file keeps its size", new_length);
        return t.error();
      }
    }
  }
  return outcome::success();
}

namespace detail {
// open() found the name taken: EEXIST under exclusive, else the existing
// file is opened and mapped; `retry` is set when it vanished or was replaced
// meanwhile (the caller tries creating again).
inline result<direct_mapping> open_taken_name(const parent_dir& parent, const char* path, const open_options& options,
                                              const open_rules& rules, bool& retry) noexcept {
  retry = false;
  if (options.exclusive) {
    set_detail("open: %s exists (exclusive)", path);
    return errno_code(EEXIST);
  }
  return open_existing_and_map(parent, path, options, rules, retry);
}

// open() creating the file unnamed (O_TMPFILE): sized, synced, mapped, then
// linked into place. Sets `refused` (its errno) when O_TMPFILE is
// unsupported here (the caller creates by name); `retry` as open_taken_name.
inline result<direct_mapping> create_unnamed(const parent_dir& parent, const char* path, const open_options& options,
                                             const open_rules& rules, int& refused, bool& retry) noexcept {
  retry = false;
  int raw = -1;
  {
    const stdio_placeholders low;
    raw = sys::openat(parent.fd.get(), ".", O_TMPFILE | O_RDWR | O_CLOEXEC, options.permissions);
  }
  if (raw < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    refused = errno;
    return errno_code(refused);
  }
  if (raw < 0) return fail_errno(errno, "open: O_TMPFILE in the parent directory");
  const scoped_fd tmp(raw);
  if (auto ec = size_new_file(raw, options.size, options.preallocate)) return ec;
  if (retry_eintr([&] { return sys::fsync(raw); }) != 0) return fail_errno(errno, "open: fsync of the new file");
  auto m = direct_mapping::map(raw, 0, static_cast<std::size_t>(options.size), options.map);
  if (!m) return m.error();  // the unnamed file vanishes with its descriptors
  const int e = link_tmpfile(raw, parent.fd.get(), parent.name);
  if (e == 0) {
    if (options.created) *options.created = true;
    if (auto ec = fsync_dir(parent.fd.get(), path, "open")) return ec;
    return m;
  }
  if (e != EEXIST) {
    return detail::fail_errno(e, "open: linking the new file into place as %s", path);
  }
  (void)m.value().close();
  return open_taken_name(parent, path, options, rules, retry);
}

// open() where O_TMPFILE is unsupported (errno `refused`): creates the file
// by name, exclusively; on failure removes it only if provably still ours.
// `retry` as open_taken_name.
inline result<direct_mapping> create_by_name(const parent_dir& parent, const char* path, const open_options& options,
                                             const open_rules& rules, int refused, bool& retry) noexcept {
  retry = false;
  int raw = -1;
  {
    const stdio_placeholders low;
    raw = sys::openat(parent.fd.get(), parent.name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
                      options.permissions);
  }
  if (raw < 0) {
    if (errno != EEXIST) return fail_errno(errno, "open: creating file (O_CREAT|O_EXCL)");
    return open_taken_name(parent, path, options, rules, retry);
  }
  if (options.created) *options.created = true;
  const scoped_fd fd(raw);
  auto undo = [&](std::error_code ec) noexcept -> result<direct_mapping> {
    char why[160] = "";
    const bool removed = unlink_if_still_ours(parent.fd.get(), parent.name, raw, why, sizeof why);
    if (removed) {
      (void)retry_eintr([&] { return sys::fsync(parent.fd.get()); });
      if (options.created) *options.created = false;
    }
    append_detail("O_TMPFILE unsupported here (%s), so %s was created by name; %s%s", errno_name(refused), path,
                  removed ? "it was removed again" : "it was left in place: ", why);
    return ec;
  };
  if (auto ec = size_new_file(raw, options.size, options.preallocate)) return undo(ec);
  if (retry_eintr([&] { return sys::fsync(raw); }) != 0) return undo(fail_errno(errno, "open: fsync of the new file"));
  auto m = direct_mapping::map(raw, 0, static_cast<std::size_t>(options.size), options.map);
  if (!m) return undo(m.error());
  if (auto ec = fsync_dir(parent.fd.get(), path, "open")) return ec;
  set_detail("open: O_TMPFILE unsupported in the directory of %s (%s): created by name with "
             "O_CREAT|O_EXCL (not atomic: the name existed before the file was complete)",
             path, errno_name(refused));
  return m;
}
}  // namespace detail

inline result<direct_mapping> direct_mapping::open(const char* path, open_options options) noexcept {
  detail::clear_detail();
  if (options.created) *options.created = false;
  if (!path || !*path) return detail::fail(errc::invalid_argument, "open: empty path");
  if (options.exclusive && !options.create)
    return detail::fail(errc::invalid_argument, "open: exclusive requires create");
  if (options.size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) ||
      options.size > std::numeric_limits<std::size_t>::max())
    return detail::fail(errc::invalid_argument, "open: size too large");
  detail::parent_dir parent;
  if (auto ec = detail::open_parent(path, parent, "open")) return ec;
  detail::open_rules rules;
  rules.no_follow = options.no_follow;
  rules.allow_foreign_owner = options.allow_foreign_owner;
  rules.permissions = options.permissions;
  const bool reader = options.map.access == map_access::read_only;
  if (reader && (options.create || options.grow))
    return detail::fail(errc::invalid_argument,
                        "open: %s with map.access read_only: a read-only open never creates "
                        "or extends a file",
                        options.create ? "create" : "grow");
  rules.access = reader ? O_RDONLY : O_RDWR;
  // Without a size nothing can be created: such an open never passes O_CREAT.
  const bool may_create = options.create && options.size != 0;
  rules.may_create = may_create;
  bool retry = false;
  if (!may_create) {
    if (options.exclusive) return detail::fail(errc::invalid_argument, "open: exclusive creation needs a size");
    return detail::open_existing_and_map(parent, path, options, rules, retry);
  }
  int tmpfile_refused = 0;  // errno of an unsupported O_TMPFILE
  for (int attempt = 0; attempt < 8; ++attempt) {
    // An existing name is opened directly: building (and preallocating) a
    // complete unnamed file only to find the name taken would cost a second
    // copy's space. linkat below still catches a name that appears meanwhile.
    struct stat existing_entry {};
    if (detail::sys::fstatat(parent.fd.get(), parent.name, &existing_entry, AT_SYMLINK_NOFOLLOW) == 0) {
      auto existing = detail::open_taken_name(parent, path, options, rules, retry);
      if (retry) continue;
      return existing;
    }
    if (!tmpfile_refused) {
      auto created = detail::create_unnamed(parent, path, options, rules, tmpfile_refused, retry);
      if (retry) continue;
      if (!tmpfile_refused) return created;
    }
    // Fallback: create by name, exclusively.
    auto created = detail::create_by_name(parent, path, options, rules, tmpfile_refused, retry);
    if (retry) continue;
    return created;
  }
  detail::set_detail("open: %s kept vanishing or being replaced while it was being opened; gave up", path);
  return detail::errno_code(EAGAIN);
}

MAPDIRECT_END_NAMESPACE

// direct_mapping::map_device_dax (kept apart: device DAX specifics).
#include "detail/devdax_map.hpp"

#endif  // MAPDIRECT_MAPPING_HPP
