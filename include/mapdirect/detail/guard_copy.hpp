// SPDX-License-Identifier: MIT
// The guarded copy itself. On x86-64 a small assembly routine whose faulting
// instructions the SIGBUS handler recognises by address and resumes at a
// fix-up label (as the kernel's exception tables do): entering the guard is
// two stores, no sigsetjmp. Elsewhere, and under AddressSanitizer (which
// must see the memcpy to check it), sigsetjmp + memcpy: MAPDIRECT_GUARD_COPY_ASM
// and MAPDIRECT_GUARD_REP_MOVSB_FROM (config.hpp) choose.
#ifndef MAPDIRECT_DETAIL_GUARD_COPY_HPP
#define MAPDIRECT_DETAIL_GUARD_COPY_HPP

#include "../config.hpp"
#include "sigbus.hpp"

#include <cstddef>
#include <cstring>

MAPDIRECT_BEGIN_NAMESPACE
namespace detail {

/// Copies n bytes under `frame` (ranges already set). False when a fault was
/// caught (frame.fault_* tell where); the destination is then partly written.
// function_lengths: whole. One asm routine (66 lines): its labels 10..19
// bound the instructions the SIGBUS handler may resume from, so it cannot be
// split into separate functions.
inline bool copy_in_frame(guard_frame& frame, void* dst, const void* src, std::size_t n) noexcept {
#if MAPDIRECT_GUARD_COPY_ASM
  // The routine stores its own addresses into the frame and only then
  // publishes it (the store to *slot), so the handler never sees it half set.
  guard_frame** slot = &current_guard();
  frame.outer = *slot == &frame ? nullptr : *slot;  // a record at our own address is a dead one
  unsigned faulted;
  // rep movsb from 256 bytes (fast with ERMS/FSRM, and the instruction is
  // restartable, so a fault stops it precisely); 16-byte SSE2 moves with an
  // overlapping tail below; bytes under 16. Every load and store lies between
  // labels 10 and 19; the handler moves a faulting one to label 20.
  // One instruction per line, laid out by hand:
  // clang-format off
  __asm__ volatile(
      "leaq 10f(%%rip), %%rax\n\t"
      "movq %%rax, %[lo]\n\t"
      "leaq 19f(%%rip), %%rax\n\t"
      "movq %%rax, %[hi]\n\t"
      "leaq 20f(%%rip), %%rax\n\t"
      "movq %%rax, %[resume]\n\t"
      "movq %[self], (%[slot])\n\t"
      "10:\n\t"
      "cmpq %[rep_from], %%rcx\n\t"
      "jae 14f\n\t"
      "cmpq $16, %%rcx\n\t"
      "jb 12f\n\t"
      "movdqu -16(%%rsi,%%rcx), %%xmm1\n\t"
      "leaq -16(%%rdi,%%rcx), %%r8\n\t"
      "11:\n\t"
      "movdqu (%%rsi), %%xmm0\n\t"
      "movdqu %%xmm0, (%%rdi)\n\t"
      "addq $16, %%rsi\n\t"
      "addq $16, %%rdi\n\t"
      "subq $16, %%rcx\n\t"
      "cmpq $16, %%rcx\n\t"
      "ja 11b\n\t"
      "movdqu %%xmm1, (%%r8)\n\t"
      "jmp 19f\n\t"
      "12:\n\t"
      "testq %%rcx, %%rcx\n\t"
      "jz 19f\n\t"
      "13:\n\t"
      "movb (%%rsi), %%al\n\t"
      "movb %%al, (%%rdi)\n\t"
      "incq %%rsi\n\t"
      "incq %%rdi\n\t"
      "decq %%rcx\n\t"
      "jnz 13b\n\t"
      "jmp 19f\n\t"
      "14:\n\t"
      "rep movsb\n\t"
      "19:\n\t"
      "xorl %%eax, %%eax\n\t"
      "jmp 21f\n\t"
      "20:\n\t"
      "movl $1, %%eax\n\t"
      "21:\n\t"
      : "+D"(dst), "+S"(src), "+c"(n), "=&a"(faulted), [lo] "=m"(frame.ip_lo), [hi] "=m"(frame.ip_hi),
        [resume] "=m"(frame.resume_ip)
      : [rep_from] "i"(MAPDIRECT_GUARD_REP_MOVSB_FROM), [self] "r"(&frame), [slot] "r"(slot)
      : "r8", "xmm0", "xmm1", "memory", "cc");
  // clang-format on
  pop_guard(frame);  // after a fault the handler already popped: same store again
  return faulted == 0;
#else
  auto copy = [dst, src, n]() noexcept { std::memcpy(dst, src, n); };
  return run_guarded(frame, copy);
#endif
}

}  // namespace detail
MAPDIRECT_END_NAMESPACE

#endif  // MAPDIRECT_DETAIL_GUARD_COPY_HPP
