#!/usr/bin/env bash
# aarch64 portability check: cross-compiles every public header (one TU each),
# the unit tests (tests/unit + tests/support/main.cpp, and tests/direct as its
# own binary) and the examples with g++-aarch64-linux-gnu, statically, then
# runs the unit tests under qemu-aarch64 so the DC CVAC / DC CVAP path is
# compiled and executed. Exits 77 (skip) when the cross compiler or qemu-user
# is missing.
#
# usage: tests/cross/run.sh [workdir]
#   CROSS_CXX=aarch64-linux-gnu-g++   QEMU=qemu-aarch64   CROSS_JOBS=2
#   CROSS_DC_CVAP=0: qemu-user 7.2 advertises DCPOP but traps DC CVAP, so the
#   tests run with MAPDIRECT_AARCH64_DC_CVAP=0 (DC CVAC) unless set to 1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cxx=${CROSS_CXX:-aarch64-linux-gnu-g++}
qemu=${QEMU:-qemu-aarch64}
jobs=${CROSS_JOBS:-2}
dc_cvap=${CROSS_DC_CVAP:-0}

command -v "$cxx" >/dev/null || { echo "skipped: $cxx not installed (Debian g++-aarch64-linux-gnu)"; exit 77; }
command -v "$qemu" >/dev/null || { echo "skipped: $qemu not installed (Debian qemu-user)"; exit 77; }

work=${1:-}
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/mapdirect-cross.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/inc" "$work/obj" "$work/bin"

# Only Boost and Catch2 from the host: both header-only and architecture
# independent. Never -isystem /usr/include, which would mix the host's glibc
# headers into the aarch64 build.
boost_hdr=$(echo '#include <boost/version.hpp>' | g++ -x c++ -M - 2>/dev/null | tr ' ' '\n' | grep 'boost/version.hpp' | head -1)
[ -n "$boost_hdr" ] || { echo "skipped: Boost headers not found on the host"; exit 77; }
ln -sfn "$(dirname "$boost_hdr")" "$work/inc/boost"
catch_dir=""
for d in /usr/include/catch2 /usr/local/include/catch2; do [ -f "$d/catch.hpp" ] && catch_dir=$d && break; done

warn=(-Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Werror)
common=(-std=c++17 -O1 -g0 -pthread -I"$root/include" -isystem "$work/inc" "-DMAPDIRECT_AARCH64_DC_CVAP=$dc_cvap")
echo "cross compiler: $($cxx --version | head -1)"

compile() {  # compile <out.o> <src> [extra flags...]
  local out=$1 src=$2
  shift 2
  "$cxx" "${common[@]}" "${warn[@]}" "$@" -c "$src" -o "$out"
}
export -f compile
export cxx
export common_str="${common[*]}" warn_str="${warn[*]}"

# 1. Every public header on its own.
hdrs=$(cd "$root/include" && find mapdirect -name '*.hpp' | sort)
n=0
for h in $hdrs; do
  id=$(echo "$h" | tr '/.' '__')
  printf '#include <%s>\n#include <%s>\n' "$h" "$h" >"$work/obj/hdr_$id.cpp"
  n=$((n + 1))
done
ls "$work"/obj/hdr_*.cpp | xargs -P "$jobs" -I{} sh -c \
  '"$cxx" $common_str $warn_str -fsyntax-only "$1"' _ {}
echo "headers: $n compiled for aarch64"

# 2. Unit tests (and the emulated MAP_DIRECT tests) as static binaries.
run_tests=1
if [ -z "$catch_dir" ]; then
  echo "skipped part: Catch2 v2 header (catch2/catch.hpp) not found; unit tests not cross-built"
  run_tests=0
else
  ln -sfn "$catch_dir" "$work/inc/catch2"
  build_binary() {  # build_binary <name> <defines...> -- <sources...>
    local name=$1
    shift
    local defs=()
    while [ "$1" != "--" ]; do defs+=("$1"); shift; done
    shift
    local objs=()
    for src in "$@"; do
      local o="$work/obj/${name}_$(basename "$src" .cpp).o"
      objs+=("$o")
      echo "$src $o"
    done >"$work/obj/$name.list"
    # (no trailing blanks: xargs -L joins a line ending in one with the next)
    defs_str="${defs[*]:-}" xargs -P "$jobs" -L 1 sh -c \
      '"$cxx" $common_str $warn_str -I'"$root"'/tests/support $defs_str -c "$1" -o "$2"' _ <"$work/obj/$name.list"
    "$cxx" -static -pthread -o "$work/bin/$name" "${objs[@]}"
  }
  build_binary mapdirect_tests -- "$root"/tests/unit/*.cpp "$root/tests/support/main.cpp"
  # The persistence observer (DC CVAC/CVAP + DMB ISH traced under qemu).
  build_binary mapdirect_tests_observer -DMAPDIRECT_TEST_OBSERVER=1 -- \
    "$root/tests/unit/test_observer.cpp" "$root/tests/support/main.cpp"
  if ls "$root"/tests/direct/*.cpp >/dev/null 2>&1; then
    build_binary mapdirect_tests_direct -DMAPDIRECT_MAP_DIRECT_FLAG=0x400000 -DMAPDIRECT_F_MAY_SEAL_IOMAP=1039 -- \
      "$root"/tests/direct/*.cpp "$root/tests/support/main.cpp"
  fi
  file "$work/bin/mapdirect_tests" | grep -q 'ARM aarch64' || { echo "not an aarch64 binary"; exit 1; }
fi

# 3. Examples (each directory's sources into one static binary; an example
# that needs liburing or libsqlite3 is compiled only, since neither exists for aarch64 here).
for dir in "$root"/examples/*/; do
  name=$(basename "$dir")
  srcs=("$dir"*.cpp)
  [ -e "${srcs[0]}" ] || continue
  if grep -q 'liburing\|mapdirect/async.hpp\|sqlite3.h' "${srcs[@]}"; then
    for s in "${srcs[@]}"; do "$cxx" "${common[@]}" "${warn[@]}" -fsyntax-only "$s"; done
    echo "example $name: compiled (needs liburing or libsqlite3, not linked)"
  else
    "$cxx" "${common[@]}" "${warn[@]}" -static -o "$work/bin/ex_$name" "${srcs[@]}"
    echo "example $name: built"
  fi
done

# 4. Run under qemu-aarch64.
export MAPDIRECT_TEST_DIR=${MAPDIRECT_TEST_DIR:-$work}
# Tests drop to nobody in a child (planted files, read-only probe): it must
# be able to reach the test directory (mktemp -d makes it 0700).
chmod 0755 "$work"
if [ -x "$work/bin/ex_mapdirect-info" ]; then
  "$qemu" "$work/bin/ex_mapdirect-info" "$MAPDIRECT_TEST_DIR" || { echo "mapdirect-info failed under qemu"; exit 1; }
fi
# Each test case runs in its own qemu process (a crash names its test), by
# its exact name (every Catch2 special character escaped with a backslash),
# with --warn NoTests, and must report exactly one test case run.
# qemu-user is not a kernel: what it does not emulate is listed here with the
# reason and reported as skipped, never run. An entry names a whole case
# ("case|reason") or one section of it ("case|section|reason"); the other
# sections of that case still run, each on its own with -c.
qemu_limits=(
  "tmpfs gives shared mode with page granularity|qemu-user 7.2 rejects MAP_SHARED_VALIDATE with EINVAL where the kernel answers EOPNOTSUPP"
  "weakest = sync fails with mode_unavailable naming the cause when the host has no MAP_SYNC|qemu-user 7.2 rejects MAP_SHARED_VALIDATE with EINVAL where the kernel answers EOPNOTSUPP"
  "media_error carries the poisoned range from si_addr_lsb (BUS_MCEERR_AR queued to ourselves)|qemu-user 7.2 aborts (cpu == current_cpu) on a queued BUS_MCEERR_AR SIGBUS"
  "a store needing a block on a full file system is an error, not a crash|under qemu-user 7.2 open() on the loop-mounted ext4 reports mode sync where the kernel gives shared (qemu's mmap flag emulation; not investigated further)"
  "memory poison on a mapped page: media_error at its offset, repair, data back|qemu-user 7.2 accepts madvise(MADV_HWPOISON) as a no-op: no poison is injected"
  "a SIGBUS outside any guard kills the process as before ours was installed|SIG_IGN: a real fault still kills, as the kernel forces it|qemu-user 7.2 hangs on a forced SIGBUS while the handler is SIG_IGN"
  "kill(getpid(), SIGBUS) and asynchronous reports inside a guard are not swallowed|BUS_MCEERR_AO (asynchronous) at a guarded address goes to the user handler|qemu-user 7.2 asserts on a queued BUS_MCEERR_AO SIGBUS"
  "a SIGBUS outside any guard kills the process as before ours was installed|default disposition: the child dies of SIGBUS|qemu-user 7.2 asserts (cpu == current_cpu) when a fault is re-raised with rt_tgsigqueueinfo under the default disposition, which mapdirect does so that a non-repeating SIGBUS stays fatal"
  "{SA_SIGINFO, SIG_DFL} and {SA_SIGINFO, SIG_IGN} are the default and ignore actions|qemu-user 7.2 asserts (cpu == current_cpu) on a SIGBUS re-raised with rt_tgsigqueueinfo (the default-action path)"
  "a handler that chains to ours, then install_sigbus_handler() again: no mutual recursion|qemu-user 7.2 asserts (cpu == current_cpu) on a SIGBUS re-raised with rt_tgsigqueueinfo (the default-action path)"
  "a synchronous-looking SIGBUS that does not repeat: fatal stays fatal, ignored keeps the guards|qemu-user 7.2 asserts (cpu == current_cpu) on a SIGBUS re-raised with rt_tgsigqueueinfo (the default-action path)"
  "a non-local exit out of a guard: reset_thread_guards() at the recovery point, then all is as before|qemu-user 7.2 asserts (cpu == current_cpu) on a SIGBUS re-raised with rt_tgsigqueueinfo (the default-action path)"
  "fork: the child's guards work and an unguarded SIGBUS still kills|qemu-user 7.2 asserts (cpu == current_cpu) on a SIGBUS re-raised with rt_tgsigqueueinfo (the default-action path)"
  "map() never maps over another thread's memory (sync rung refused, large mapping)|qemu-user 7.2 manages the guest address space itself and does not honour MAP_FIXED_NOREPLACE (it replaces the range), so the race cannot be judged there"
  "seam: an unaligned large mapping is moved to a 2 MiB boundary with MAP_FIXED_NOREPLACE, retrying when the slot is taken|qemu-user 7.2 does not honour MAP_FIXED_NOREPLACE (see the race test)"
  "reserve: a MAP_SYNC mapping is placed in its reservation without MAP_FIXED_NOREPLACE|qemu-user 7.2 rejects MAP_SHARED_VALIDATE with EINVAL where the kernel answers EOPNOTSUPP"
  "align: a large MAP_SYNC mapping is moved to a 2 MiB boundary despite MAP_SHARED_VALIDATE|qemu-user 7.2 rejects MAP_SHARED_VALIDATE with EINVAL where the kernel answers EOPNOTSUPP"
  "claims: populate prefaults every page of the mapping; off by default|populate: every page resident right after map|qemu-user 7.2 passes /proc/self/pagemap through unchanged, indexed by host addresses, so the guest's resident pages read as absent"
  "claims: populate prefaults every page of the mapping; off by default|populate: what grow() adds in place is prefaulted too; without it, not|qemu-user 7.2 passes /proc/self/pagemap through unchanged, indexed by host addresses, so the guest's resident pages read as absent"
)
# The sections of a case that has a skipped section: every SECTION("...")
# between its TEST_CASE and the next one in the sources.
sections_of() {
  awk -v name="$1" '
    /TEST_CASE\(/ { inside = index($0, "TEST_CASE(\"" name "\"") > 0; next }
    inside && /SECTION\("/ { s = $0; sub(/.*SECTION\("/, "", s); sub(/"\).*/, "", s); print s }
  ' "$root"/tests/unit/*.cpp "$root"/tests/direct/*.cpp
}
catch_escape() { printf '%s' "$1" | sed 's/[][,"~*\\]/\\&/g'; }
run_case() {  # run_case <binary> <case> [section]; prints the output, fails unless exactly one case ran
  local t=$1 c=$2 out rc=0
  local args=(--warn NoTests "$(catch_escape "$c")")
  [ $# -lt 3 ] || args+=(-c "$3")
  out=$(timeout "${CROSS_TEST_TIMEOUT:-300}" "$qemu" "$t" "${args[@]}" 2>&1) || rc=$?
  printf '%s\n' "$out"
  [ "$rc" = 0 ] || return 1
  # "All tests passed (N assertions in 1 test case)": anything else ran nothing or too much.
  # (here-strings, not pipes: under pipefail a grep -q that stops early would
  # fail the pipeline through the writer's SIGPIPE)
  grep -qE '^All tests passed \([0-9]+ assertions? in 1 test case\)$' <<<"$out" && return 0
  # A case that skips before its first assertion (its WARN, which reaches the
  # skip log, names what is missing) passes with no assertions.
  grep -qE '^test cases: 1 \| 1 passed$' <<<"$out" && grep -q 'skipped' <<<"$out"
}
failed=0 passed=0 skipped=0 all_cases=()
# Skips also go to the caller's log (scripts/run-tests.sh lists them at the end).
parent_skip_log=${MAPDIRECT_SKIP_LOG:-}
note_skip() {  # note_skip <what> <reason>
  [ -z "$parent_skip_log" ] || printf 'cross_aarch64\t%s\t%s\n' "$1" "$2" >>"$parent_skip_log"
}
export MAPDIRECT_SKIP_LOG="$work/skips.log"
: >"$MAPDIRECT_SKIP_LOG"
if [ "$run_tests" = 1 ]; then
  for t in "$work"/bin/mapdirect_tests*; do
    echo "== $(basename "$t") under $qemu"
    mapfile -t cases < <("$qemu" "$t" --list-test-names-only | sed '/^$/d')
    all_cases+=("${cases[@]}")
    [ "${#cases[@]}" -gt 0 ] || { echo "FAILED: $(basename "$t") lists no test cases"; failed=$((failed + 1)); }
    for c in "${cases[@]}"; do
      whole="" skip_sections=()
      for entry in "${qemu_limits[@]}"; do
        IFS='|' read -r e_case e_a e_b <<<"$entry"
        [ "$e_case" = "$c" ] || continue
        if [ -z "$e_b" ]; then whole=$e_a; else skip_sections+=("$e_a|$e_b"); fi
      done
      if [ -n "$whole" ]; then
        echo "skipped: $c ($whole)"
        note_skip "$c" "skipped under qemu-aarch64: $whole"
        skipped=$((skipped + 1))
        continue
      fi
      runs=("")
      if [ "${#skip_sections[@]}" -gt 0 ]; then
        runs=()
        mapfile -t all_sections < <(sections_of "$c")
        for sk in "${skip_sections[@]}"; do
          grep -qxF "${sk%%|*}" <<<"$(printf '%s\n' "${all_sections[@]}")" ||
            { echo "FAILED: $c has no section '${sk%%|*}' (update qemu_limits)"; failed=$((failed + 1)); }
          echo "skipped section: $c / ${sk%%|*} (${sk#*|})"
          note_skip "$c / ${sk%%|*}" "skipped under qemu-aarch64: ${sk#*|}"
        done
        for sec in "${all_sections[@]}"; do
          keep=1
          for sk in "${skip_sections[@]}"; do [ "$sec" = "${sk%%|*}" ] && keep=0; done
          [ "$keep" = 1 ] && runs+=("$sec")
        done
      fi
      ok=1 out=""
      for sec in "${runs[@]}"; do
        if [ -z "$sec" ]; then out=$(run_case "$t" "$c") || ok=0; else out=$(run_case "$t" "$c" "$sec") || ok=0; fi
        [ "$ok" = 1 ] || { echo "FAILED: $c${sec:+ / $sec}"; echo "$out" | tail -40; break; }
      done
      if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    done
  done
  # A limit that names no case would hide nothing and say nothing: stale.
  for entry in "${qemu_limits[@]}"; do
    if ! grep -qxF "${entry%%|*}" <<<"$(printf '%s\n' "${all_cases[@]}")"; then
      echo "FAILED: qemu_limits names no test case: ${entry%%|*}"
      failed=$((failed + 1))
    fi
  done
  if [ -s "$MAPDIRECT_SKIP_LOG" ]; then
    echo "skips reported by the tests themselves (WARN):"
    sed 's/^/  /' "$MAPDIRECT_SKIP_LOG"
    [ -z "$parent_skip_log" ] || sed 's/^/qemu-aarch64 /' "$MAPDIRECT_SKIP_LOG" >>"$parent_skip_log"
  fi
  echo "aarch64 unit test cases: $passed passed (run), $failed failed, $skipped skipped (qemu-user limits)," \
    "$(sed -n '$=' "$MAPDIRECT_SKIP_LOG" | grep . || echo 0) skip notes from passing cases"
  [ "$failed" = 0 ] || exit 1
fi
echo "aarch64 portability check passed"
