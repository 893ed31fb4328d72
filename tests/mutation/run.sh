#!/usr/bin/env bash
# Mutation check: breaks a copy of include/ on purpose, once per mutant listed
# in mutants.py (no flush, no fence, NT stores without a fence, ring fsync as
# a no-op, ...), rebuilds only the unit test TU that guards that code against
# the broken copy, runs its tests, and requires them to FAIL. The unbroken
# headers must pass the same tests first (baseline), and a mutant that does
# not compile or whose pattern no longer matches is an error, never a kill.
# Prints "N of N mutants killed"; any survivor or error fails the run.
#
# usage: tests/mutation/run.sh [mutant...]   (default: all)
#   CXX=g++  MUTATION_JOBS=2  MUTATION_KEEP=1 (keep the work directory)
#   MAPDIRECT_CATCH2_INCLUDE=<dir holding catch2/catch.hpp>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cxx=${CXX:-g++}
jobs=${MUTATION_JOBS:-2}
start=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/mapdirect-mutation.XXXXXX")
if [ "${MUTATION_KEEP:-0}" = 1 ]; then echo "work directory: $work"; else trap 'rm -rf "$work"' EXIT; fi

catch_inc=()
# A system directory (/usr/include) must not be repeated with -isystem: that
# reorders the search path and breaks libstdc++'s #include_next <stdlib.h>.
case "${MAPDIRECT_CATCH2_INCLUDE:-}" in
  "" | /usr/include | /usr/local/include) ;;
  *) catch_inc=(-isystem "$MAPDIRECT_CATCH2_INCLUDE") ;;
esac
# -O1 and no warnings: a mutant only has to compile and run.
flags=(-std=c++17 -O1 -g0 -pthread -w "${catch_inc[@]}" -I"$root/tests/support")

# The test TU, extra flags and Catch2 filter of each group.
group_src() {
  case $1 in
    observer) echo "$root/tests/unit/test_observer.cpp" ;;
    seam) echo "$root/tests/unit/test_seam.cpp" ;;
    async) echo "$root/tests/unit/test_async.cpp" ;;
    ring) echo "$root/tests/unit/test_ring_seam.cpp" ;;
    guard) echo "$root/tests/unit/test_guard.cpp" ;;
    seal) echo "$root/tests/unit/test_seal.cpp" ;;
    claims) echo "$root/tests/unit/test_claims.cpp" ;;
    mapping) echo "$root/tests/unit/test_mapping.cpp" ;;
    fiemap) echo "$root/tests/unit/test_fiemap_walk.cpp" ;;
    *) echo "unknown group $1" >&2; return 1 ;;
  esac
}
group_defs() {
  case $1 in
    observer) echo "-DMAPDIRECT_TEST_OBSERVER=1" ;;
    async | ring) echo "-DMAPDIRECT_TEST_URING=1" ;;
    *) echo "" ;;
  esac
}
group_libs() { case $1 in async | ring) echo "-luring" ;; *) echo "" ;; esac; }
group_filter() {
  case $1 in
    observer) echo "[observer]" ;;
    seam) echo "[seam]" ;;
    async) echo "[async]" ;;
    ring) echo "[ring]" ;;
    guard) echo "[guard],[poison]" ;;
    seal) echo "[seal]" ;;
    claims) echo "[claims]" ;;
    mapping) echo "[mapping]" ;;
    fiemap) echo "[fiemap]" ;;
  esac
}

build() {  # build <include dir> <group> <binary>
  local inc=$1 group=$2 bin=$3
  # shellcheck disable=SC2046
  "$cxx" "${flags[@]}" -I"$inc" $(group_defs "$group") -c "$(group_src "$group")" -o "$bin.o" &&
    "$cxx" -pthread -o "$bin" "$bin.o" "$work/main.o" $(group_libs "$group")
}
run_tests() {  # run_tests <binary> <group>: the group's tests, --warn NoTests so an empty filter fails
  local bin=$1 group=$2
  env -u MAPDIRECT_SKIP_LOG timeout "${MUTATION_TEST_TIMEOUT:-300}" "$bin" --warn NoTests "$(group_filter "$group")"
}

all=$(python3 "$here/mutants.py" list)
if [ $# -gt 0 ]; then
  sel=""
  for m in "$@"; do
    line=$(printf '%s\n' "$all" | awk -F'\t' -v m="$m" '$1 == m') || true
    [ -n "$line" ] || { echo "no mutant $m"; exit 2; }
    sel+="$line"$'\n'
  done
  all=${sel%$'\n'}
fi
groups=$(printf '%s\n' "$all" | cut -f2 | sort -u)

echo "mutation check: $(printf '%s\n' "$all" | wc -l) mutants, groups: $(echo $groups), $jobs jobs"
"$cxx" "${flags[@]}" -c "$root/tests/support/main.cpp" -o "$work/main.o"

# Runs "$@" as a background job, at most $jobs at once.
throttle() {
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  "$@" &
}

# 1. Baseline: the unbroken headers pass every group's tests.
baseline() {
  local g=$1 d="$work/base-$1"
  mkdir -p "$d"
  if ! build "$root/include" "$g" "$d/bin" >"$d/build.log" 2>&1; then
    echo "error: baseline build failed" >"$d/result"
  elif ! run_tests "$d/bin" "$g" >"$d/run.log" 2>&1; then
    echo "error: baseline tests fail without any mutant" >"$d/result"
  else
    echo "ok" >"$d/result"
  fi
}
for g in $groups; do throttle baseline "$g"; done
wait
base_ok=1
for g in $groups; do
  r=$(cat "$work/base-$g/result")
  echo "baseline $g: $r"
  if [ "$r" != ok ]; then
    base_ok=0
    tail -30 "$work/base-$g/build.log" "$work/base-$g/run.log" 2>/dev/null || true
  fi
done
[ "$base_ok" = 1 ] || { echo "mutation check: baseline failed, no mutant judged"; exit 1; }

# 2. Each mutant: break a copy, rebuild the group's TU, its tests must fail.
mutate() {
  local name=$1 group=$2 d="$work/m-$1"
  mkdir -p "$d"
  cp -r "$root/include" "$d/include"
  if ! python3 "$here/mutants.py" apply "$name" "$d/include" >"$d/apply.log" 2>&1; then
    echo "error: $(tail -1 "$d/apply.log")" >"$d/result"
  elif ! build "$d/include" "$group" "$d/bin" >"$d/build.log" 2>&1; then
    echo "error: the mutant does not compile ($(grep -m1 'error' "$d/build.log"))" >"$d/result"
  elif run_tests "$d/bin" "$group" >"$d/run.log" 2>&1; then
    echo "survived" >"$d/result"
  else
    # Name the first failing check, so the log shows what caught it.
    echo "killed ($(grep -m1 -E 'FAILED|failed|No tests ran' "$d/run.log" | cut -c1-100))" >"$d/result"
  fi
  rm -f "$d/bin" "$d/bin.o"
}
while IFS=$'\t' read -r name group _; do throttle mutate "$name" "$group"; done <<<"$all"
wait

total=0 killed=0
while IFS=$'\t' read -r name group desc; do
  total=$((total + 1))
  r=$(cat "$work/m-$name/result")
  case $r in killed*) killed=$((killed + 1)) ;; esac
  printf '%-26s %-9s %s: %s\n' "$name" "[$group]" "$desc" "$r"
done <<<"$all"
echo "mutation check took $(($(date +%s) - start)) s"
echo "$killed of $total mutants killed"
[ "$killed" = "$total" ]
