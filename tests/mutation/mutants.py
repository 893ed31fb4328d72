#!/usr/bin/env python3
"""The deliberate breakages of tests/mutation/run.sh.

usage: mutants.py list                 -> "name<TAB>group<TAB>description" per mutant
       mutants.py apply NAME INCLUDE   -> breaks the copy of include/ at INCLUDE

Each edit is a regular expression anchored on stable identifiers, with the
number of matches it must find. An edit that no longer matches makes `apply`
fail loudly (exit 2): the mutant is then reported as an error, never as killed.
Hooks of the persistence observer (MAPDIRECT_OBSERVE_*) sit next to the
instruction they report, so a mutant removes both together.
"""
import re
import sys

# group: which unit test TU and Catch2 filter kill it (see run.sh).
# edits: (file under include/mapdirect, pattern, replacement, min matches, max matches)
MUTANTS = [
    ("persist-no-flush", "observer", "no cache-line flush in direct_mapping::persist (cache_line)", [
        ("mapping.hpp",
         r"(result<void> direct_mapping::persist\(std::size_t offset, std::size_t length\) noexcept \{.*?"
         r"case granularity::cache_line:\s*)flush_lines\([^;]*\);",
         r"\1(void)0;", 1, 1),
    ]),
    ("drain-no-fence", "observer", "drain() issues no fence", [
        ("persist.hpp", r"(inline void drain\(flush_instruction f\) noexcept \{)",
         r"\1\n  (void)f;\n  if ((true)) return;", 1, 1),
    ]),
    ("nt-no-fence", "observer", "non-temporal stores without their SFENCE (split_nt after CLFLUSH)", [
        ("persist.hpp",
         r"if \(f == flush_instruction::clflush\) \{\s*MAPDIRECT_OBSERVE_FENCE\(\);\s*_mm_sfence\(\);\s*\}",
         r"(void)0;", 1, 1),
    ]),
    ("ring-fsync-nop", "ring", "ring fsync replaced by a no-op (io_uring_prep_fsync -> io_uring_prep_nop)", [
        ("detail/uring_backend.hpp", r"io_uring_prep_fsync\(\s*(\w+)\s*,[^;]*\);", r"io_uring_prep_nop(\1);", 1, 9),
    ]),
    ("ring-covers-late", "async", "a flush completion also completes requests enqueued after it started", [
        ("detail/commit_core.hpp", r"r->ticket <= cover\b", r"(r->ticket <= cover || true)", 1, 1),
    ]),
    # The hang the issue-16 benchmark found: liburing's timed wait, without the
    # ring's feature bits, submits from the reap thread outside the lock.
    ("ring-timed-wait-submits", "ring", "ring feature bits left clear with merge windows on the ring kept", [
        ("detail/uring_backend.hpp", r"ring_\.features = p\.features;", r"(void)p.features;", 1, 1),
        ("detail/commit_core.hpp", r"\(uring_ && ring_\.has_timed_wait\(\)\)", r"uring_", 1, 1),
    ]),
    ("size-restore-claims-success", "mapping", "a failed size rollback is reported as restored", [
        ("detail/restore_size.hpp",
         r"if \(retry_eintr\((\[&\] \{ return sys::ftruncate\(fd, static_cast<off_t>\(old_size\)\); \})\) == 0\) \{",
         r"if ((void)retry_eintr(\1), true) {", 1, 1),
    ]),
    ("page-persist-no-msync", "seam", "msync removed from page-granular persist", [
        ("mapping.hpp", r"(?:detail::)?sys::msync\([^;]*?MS_SYNC\)", r"0", 1, 9),
    ]),
    ("durability-never-lost", "seam", "durability_lost never set (mapping flag and process-wide registry)", [
        ("mapping.hpp", r"durability_failed_ = true;", r"(void)0;", 0, 9),
        ("detail/durability.hpp", r"(static void mark_lost\(dev_t dev, ino_t ino, int fd\) noexcept \{)",
         r"\1\n    (void)dev; (void)ino; (void)fd;\n    if ((true)) return;", 1, 1),
    ]),
    ("guard-swallows-fault", "guard", "the guarded copy reports success after a fault", [
        ("detail/guard_copy.hpp", r"return faulted == 0;", r"(void)faulted; return true;", 1, 1),
        ("detail/guard_copy.hpp", r"return run_guarded\(frame, copy\);",
         r"(void)run_guarded(frame, copy); return true;", 1, 1),
    ]),
    # The pass still runs (so the report keeps its extent count): only its
    # verdict is dropped, as a seal that never looked would do.
    ("seal-no-verify", "seam", "seal ignores its verify pass (block map after stabilising not checked)", [
        ("detail/fiemap.hpp", r"!after\.stable\(\)", r"false", 1, 1),
    ]),
    ("repair-writes-nothing", "guard", "repair pretends to pwrite and writes nothing", [
        ("detail/file_io.hpp", r"sys::pwrite\(out\.fd,[^;]*\)(?=;)", r"static_cast<ssize_t>(n - done)", 1, 1),
    ]),
    # Documented claims (tests/unit/test_claims.cpp, test_mapping.cpp).
    ("repair-efault-not-media", "claims", "repair treats EFAULT from the recovery write as a plain errno, not media_error", [
        ("detail/file_io.hpp", r"\(errno == EIO \|\| errno == EFAULT\)", r"errno == EIO", 1, 1),
    ]),
    ("seal-no-free-space-check", "claims", "seal does not check free space before allocating", [
        ("detail/fiemap.hpp", r"if \(needed <= free_bytes\) return \{\};", r"return {};", 1, 1),
    ]),
    ("statx-mask-ignored", "claims", "STATX_ATTR_DAX trusted without its stx_attributes_mask bit", [
        ("mapping.hpp", r"\(stx\.stx_attributes_mask & detail::linux_abi::statx_attr_dax\)", r"(true)", 1, 1),
        ("probe.hpp", r"\(stx\.stx_attributes_mask & detail::linux_abi::statx_attr_dax\)", r"(true)", 1, 1),
    ]),
    ("populate-ignored", "claims", "map_options::populate does not pass MAP_POPULATE", [
        ("mapping.hpp", r"if \(populate\) flags \|= MAP_POPULATE;", r"(void)populate;", 1, 1),
    ]),
    ("grow-populate-ignored", "claims", "grow() maps its in-place extension without MAP_POPULATE", [
        ("mapping.hpp", r"(map_flags_ \| MAP_FIXED) \| \(populate_ \? MAP_POPULATE : 0\)", r"\1", 1, 1),
    ]),
    ("nd-mixed-as-cpu-cache", "claims", "mixed nd regions (cpu_cache + memory_controller) reported as cpu_cache", [
        ("detail/nd.hpp", r"if \(scan\.cpu_cache == scan\.regions\)", r"if (scan.cpu_cache > 0)", 1, 1),
    ]),
    ("nd-stacked-ignored", "claims", "slaves of stacked block devices not followed", [
        ("detail/nd.hpp", r"if \(found \|\| depth >= 4\) return;", r"(void)found; return;", 1, 1),
    ]),
    ("nd-unresolved-ignored", "claims", "an unresolvable component of a stacked device does not make the domain unknown", [
        ("detail/nd.hpp", r"if \(scan\.regions == 0 \|\| scan\.unknown > 0\)", r"if (scan.regions == 0)", 1, 1),
    ]),
    ("edquot-not-writeback-error", "claims", "EDQUOT from a flush does not make durability lost", [
        ("error.hpp", r"\|\| e == EDQUOT", r"|| false", 1, 1),
    ]),
    ("extend-keeps-partial-growth", "claims", "a failed fallocate (EDQUOT, ENOSPC) leaves the file grown", [
        ("file.hpp", r"else \(void\)detail::restore_size\(fd, old_size\);", r"else (void)0;", 1, 1),
    ]),
    ("open-failure-keeps-named-file", "mapping", "open() leaves a file it created by name when the map fails", [
        ("mapping.hpp", r"if \(!m\) return undo\(m\.error\(\)\);", r"if (!m) return m.error();", 1, 1),
    ]),
    ("failed-map-leaks-descriptor", "mapping", "a map that fails after taking its descriptor never closes it", [
        ("mapping.hpp", r"if \(fd_ >= 0 && detail::close_keeping_locks\(fd_\) != 0 && !ec\)",
         r"if (fd_ >= 0 && map_base_ && detail::close_keeping_locks(fd_) != 0 && !ec)", 1, 1),
    ]),
    ("fiemap-one-batch", "fiemap", "the FIEMAP walker stops after its first full batch (both block-map walks)", [
        ("detail/fiemap.hpp", r"(if \(last \|\| fm->fm_mapped_extents < batch \|\| next <= pos\) return 0;\s*)pos = next;",
         r"\1return 0;", 1, 1),
    ]),
    ("ladder-eacces-steps-down", "seam", "the mapping ladder treats EACCES as 'mode not offered, step down'", [
        ("mapping.hpp", r"step_down = \(", r"step_down = (e == EACCES || ", 1, 9),
    ]),
]


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "list":
        for name, group, desc, _ in MUTANTS:
            print(f"{name}\t{group}\t{desc}")
        return 0
    if len(sys.argv) != 4 or sys.argv[1] != "apply":
        print(__doc__, file=sys.stderr)
        return 2
    name, inc = sys.argv[2], sys.argv[3]
    found = [m for m in MUTANTS if m[0] == name]
    if not found:
        print(f"mutants.py: no mutant {name}", file=sys.stderr)
        return 2
    total = 0
    for rel, pattern, repl, lo, hi in found[0][3]:
        path = f"{inc}/mapdirect/{rel}"
        with open(path) as f:
            text = f.read()
        new, n = re.subn(pattern, repl, text, flags=re.S)
        if not lo <= n <= hi:
            print(f"mutants.py: {name}: pattern /{pattern}/ matched {n} times in {rel} "
                  f"(expected {lo}..{hi}); the header changed, update tests/mutation/mutants.py",
                  file=sys.stderr)
            return 2
        total += n
        with open(path, "w") as f:
            f.write(new)
    if total == 0:
        print(f"mutants.py: {name}: nothing changed", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
