#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds every configuration
# (unit tests as C++17, C++20 and ASan+UBSan, the emulated MAP_DIRECT binary,
# header and -fno-exceptions checks, examples, benchmarks), then runs ctest:
# unit, examples, packaging consumers, the aarch64 cross check, and the QEMU
# emulated-pmem tier, and the mutation check (tests/mutation). Set
# MAPDIRECT_SKIP_VM=1 to leave the VM tier out when iterating locally (CI never
# does). Ends with every skip and its reason, "N passed, N failed, N skipped",
# and last the line "ctest: N passed, N failed".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=deps.sh
. "$root/scripts/deps.sh"
mapdirect_install "${MAPDIRECT_BUILD_PACKAGES[@]}" "${MAPDIRECT_TEST_PACKAGES[@]}"
build="$root/build/tests"
vm=ON
if [ "${MAPDIRECT_SKIP_VM:-0}" = 1 ]; then
  vm=OFF
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPDIRECT_BUILD_TESTS=ON \
  -DMAPDIRECT_BUILD_EXAMPLES=ON -DMAPDIRECT_BUILD_BENCHMARKS=ON -DMAPDIRECT_VM_TESTS="$vm" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
# Every Catch2 binary appends its skip notes (WARN) here (tests/support/main.cpp);
# ctest shows no output of passing tests, so this is how skips reach the log.
export MAPDIRECT_SKIP_LOG="$build/skips.log"
: >"$MAPDIRECT_SKIP_LOG"

# run_phase <name> <ctest args...>: runs ctest, keeps its log and LastTest.log.
run_phase() {
  local name=$1 rc
  shift
  set +e
  ctest "$@" --output-on-failure --timeout 1800 | tee "$name-tests.log"
  rc=${PIPESTATUS[0]}
  set -e
  cp Testing/Temporary/LastTest.log "$name-LastTest.log" 2>/dev/null || : >"$name-LastTest.log"
  echo "$rc" >"$name.rc"
}

# summarize <phase...>: the skip list, "N passed, N failed, N skipped", and
# last "ctest: N passed, N failed" (passed excludes skipped tests). Returns
# non-zero if any phase failed.
summarize() {
  local total=0 failed=0 skipped_tests=0 rc_all=0 p line n k list="" name why
  for p in "$@"; do
    [ "$(cat "$p.rc")" = 0 ] || rc_all=1
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$p-tests.log" | tail -n 1 || true)
    n=$(echo "$line" | sed -nE 's/.*out of ([0-9]+).*/\1/p')
    k=$(echo "$line" | sed -nE 's/.*passed, ([0-9]+) tests? failed.*/\1/p')
    total=$((total + ${n:-0})) failed=$((failed + ${k:-0}))
    # ctest lists skipped tests as "  <n> - <name> (Skipped)"; the reason is
    # the test's own "skipped: ..." line in LastTest.log.
    while read -r name; do
      [ -n "$name" ] || continue
      why=$(awk '
        /^[0-9]+\/[0-9]+ Test: / { want = substr($0, index($0, " Test: ") + 7) == t_line; out = 0; next }
        want && /^Output:$/ { out = 1; next }
        out && /^<end of output>$/ { out = 0; want = 0 }
        out && /^skipped/ { print; exit }' t_line="$name" "$p-LastTest.log")
      list+="  [test] $name: ${why:-no reason printed (a test that skips must say why)}"$'\n'
      skipped_tests=$((skipped_tests + 1))
    done < <(sed -nE 's/^[[:space:]]*[0-9]+ - ([^ ]+) \(Skipped\)$/\1/p' "$p-tests.log")
  done
  # Skip notes of test cases inside passing binaries, one line per case and reason.
  local cases=0
  if [ -s "$MAPDIRECT_SKIP_LOG" ]; then
    cases=$(sort -u "$MAPDIRECT_SKIP_LOG" | cut -f1,2 | sort -u | wc -l)
    list+=$(sort -u "$MAPDIRECT_SKIP_LOG" | awk -F'\t' '{ printf "  [case] %s / %s: %s\n", $1, $2, $3 }')$'\n'
  fi
  if [ $rc_all != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
  local passed=$((total - failed - skipped_tests))
  echo
  echo "Skipped: $((skipped_tests + cases)) ($skipped_tests ctest tests, $cases test cases inside passing tests)"
  printf '%s' "$list"
  # A failing test's own FAIL lines, again at the end: a CI log that keeps only
  # its head and tail must still say why (the VM tier prints pages per guest).
  if [ $rc_all != 0 ]; then
    echo "Failures (each failing test's FAIL lines, at most 20 per phase):"
    for p in "$@"; do
      grep -E '(^|[] ])FAIL' "$p-tests.log" | head -n 20 | sed "s/^/  [$p] /" || true
    done
  fi
  echo "$passed passed, $failed failed, $((skipped_tests + cases)) skipped"
  echo "ctest: $passed passed, $failed failed"
  return $rc_all
}

if [ "$vm" = ON ]; then
  # Everything but the VM tier first, then the tier's QEMU guests two at a
  # time (each is single-threaded TCG); one summary covers both runs.
  run_phase host -LE vm
  run_phase vm -L vm -j2
  summarize host vm
else
  run_phase host
  summarize host
fi
