// SPDX-License-Identifier: MIT
// Address space that this process reserved (anonymous PROT_NONE) and so owns:
// the only range mapdirect ever unmaps or maps over on its own initiative.
//
// Why: a MAP_FIXED mmap replaces whatever is at its target, and a failed one
// may already have unmapped it. Another thread's mmap(NULL, ...) can land in
// any hole in between, so mapdirect never MAP_FIXEDs over a range it does
// not own at that instant; it places mappings with MAP_FIXED_NOREPLACE into
// a slot carved out of a reservation and retries elsewhere on EEXIST.
#ifndef MAPDIRECT_DETAIL_ADDRESS_RESERVATION_HPP
#define MAPDIRECT_DETAIL_ADDRESS_RESERVATION_HPP

#include "../config.hpp"
#include "linux_abi.hpp"
#include "syscall.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <utility>

#include <sys/mman.h>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// A move-only RAII PROT_NONE reservation. After carve() it owns the parts
/// before and after the carved slot (never the slot itself, which anyone may
/// have mapped since). The destructor unmaps what it still owns.
class address_reservation {
 public:
  address_reservation() noexcept = default;
  address_reservation(address_reservation&& o) noexcept { swap(o); }
  address_reservation& operator=(address_reservation&& o) noexcept {
    if (this != &o) {
      address_reservation tmp(std::move(o));
      swap(tmp);
    }
    return *this;
  }
  address_reservation(const address_reservation&) = delete;
  address_reservation& operator=(const address_reservation&) = delete;
  ~address_reservation() { release(); }

  /// Reserves `length` bytes anywhere (no MAP_FIXED). Empty on failure, errno set.
  static address_reservation reserve(std::size_t length) noexcept {
    address_reservation r;
    void* p = sys::mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return r;
    r.piece_[0] = {static_cast<char*>(p), length};
    return r;
  }

  explicit operator bool() const noexcept { return piece_[0].base != nullptr; }
  /// The first `align`-aligned address inside the reservation (before any carve).
  char* aligned(std::size_t align) const noexcept {
    const auto b = reinterpret_cast<std::uintptr_t>(piece_[0].base);
    return reinterpret_cast<char*>((b + align - 1) & ~(std::uintptr_t{align} - 1));
  }

  /// Unmaps [at, at+length), which must lie inside the uncarved reservation,
  /// and gives up ownership of it; keeps the lead and trail. False (errno
  /// set, nothing given up) when munmap fails or the slot does not fit.
  /// With unmap false the slot stays reserved (PROT_NONE) for the caller to
  /// MAP_FIXED over: ownership passes to the caller (validated mappings,
  /// which refuse MAP_FIXED_NOREPLACE).
  bool carve(char* at, std::size_t length, bool unmap = true) noexcept {
    piece& whole = piece_[0];
    if (piece_[1].base || at < whole.base || length > whole.length ||
        static_cast<std::size_t>(at - whole.base) > whole.length - length) {
      errno = EINVAL;
      return false;
    }
    if (unmap && sys::munmap(at, length) != 0) return false;
    const std::size_t lead = static_cast<std::size_t>(at - whole.base);
    const piece trail{at + length, whole.length - lead - length};
    whole.length = lead;
    if (lead == 0) whole.base = trail.length ? trail.base : nullptr, whole.length = trail.length;
    else piece_[1] = trail.length ? trail : piece{};
    return true;
  }

  /// Gives up ownership of the piece that starts at `base` (after carve: the
  /// trail right after the slot) without unmapping it, and returns its length
  /// (0 when no owned piece starts there). The caller then owns that range:
  /// direct_mapping keeps the trail as the room a mapping grows into.
  std::size_t detach(char* base) noexcept {
    for (auto& p : piece_) {
      if (p.base == base && p.length) {
        const std::size_t n = p.length;
        p = piece{};
        return n;
      }
    }
    return 0;
  }

  /// Unmaps everything still owned.
  void release() noexcept {
    for (auto& p : piece_) {
      if (p.base && p.length) (void)sys::munmap(p.base, p.length);
      p = piece{};
    }
  }

  void swap(address_reservation& o) noexcept {
    for (int i = 0; i < 2; ++i) {
      const piece t = piece_[i];
      piece_[i] = o.piece_[i];
      o.piece_[i] = t;
    }
  }

 private:
  struct piece {
    char* base = nullptr;
    std::size_t length = 0;
  };
  piece piece_[2];
};

/// Reserves exactly [at, at+length) (PROT_NONE, MAP_NORESERVE: no memory)
/// with MAP_FIXED_NOREPLACE, so never over anything mapped there. True when
/// the range is now owned by the caller; false (errno set) when anything
/// occupies part of it or the kernel refused.
inline bool reserve_exactly(char* at, std::size_t length) noexcept {
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | linux_abi::map_fixed_noreplace;
  void* p = sys::mmap(at, length, PROT_NONE, flags, -1, 0);
  if (p == at) return true;
  if (p != MAP_FAILED) {  // a pre-4.17 kernel took the address as a hint
    (void)sys::munmap(p, length);
    errno = EEXIST;
  }
  return false;
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_ADDRESS_RESERVATION_HPP
