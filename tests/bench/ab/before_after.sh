#!/usr/bin/env bash
# The group committer before and after a change (issue 16: "no regression at
# 1 writer", "the pipelined path keeps its current rate"): builds
# tests/bench/ab/committer.cpp against REV's headers and against the working
# tree, runs the two alternately PAIRS times, and prints each method's median
# records/s and median p50 latency for both, with the ratio after/before.
#
# usage: tests/bench/ab/before_after.sh REV [PAIRS (default 5)] [SECONDS per cell (default 1)]
# Needs: git, a C++17 compiler, liburing-dev. Writes its file under /var/tmp.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
rev=${1:?usage: before_after.sh REV [PAIRS] [SECONDS]}
pairs=${2:-5}
secs=${3:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/before"
git -C "$root" archive "$rev" include | tar -x -C "$work/before"
for side in before after; do
  inc=$work/before/include
  [ "$side" = after ] && inc=$root/include
  c++ -O2 -std=c++17 -I "$inc" "$here/committer.cpp" -o "$work/bin_$side" -luring -lpthread
done
# Pairs alternate their order (before-after, after-before, ...): a disk that
# is slower for the second process of a pair hits both sides alike.
for ((i = 0; i < pairs; ++i)); do
  order="before after"
  ((i % 2)) && order="after before"
  for side in $order; do "$work/bin_$side" "$secs" | sed "s/^/$side /"; done
done | tee "$work/out.txt"
python3 - "$work/out.txt" "$rev" <<'PY'
import statistics, sys
runs = {"before": [], "after": []}  # one dict per process: method -> (rec/s, p50)
for line in open(sys.argv[1]):
    side, method, rate, p50 = line.split()
    if method == "a":
        runs[side].append({})
    runs[side][-1][method] = (float(rate), float(p50))
med = statistics.median
print(f"\nmedians over the runs (before = {sys.argv[2]}, after = working tree, {len(runs['after'])} pairs); "
      "'vs a' divides by the")
print("same process's msync cell, which cancels the disk's drift between processes")
print("method | before rec/s | after rec/s | after/before | before p50 us | after p50 us | after/before "
      "| rec/s vs a, before / after | p50 vs a, before / after")
for m in ("a", "d", "e", "f8"):
    b, a = runs["before"], runs["after"]
    br, ar = med(x[m][0] for x in b), med(x[m][0] for x in a)
    bl, al = med(x[m][1] for x in b), med(x[m][1] for x in a)
    rel = lambda side, k: med(x[m][k] / x["a"][k] for x in side)
    lat = f"{bl:.0f} | {al:.0f} | {al / bl:.3f}" if bl > 0 else "- | - | -"
    rlat = f"{rel(b, 1):.3f} / {rel(a, 1):.3f}" if bl > 0 else "-"
    print(f"{m} | {br:.0f} | {ar:.0f} | {ar / br:.3f} | {lat} | {rel(b, 0):.3f} / {rel(a, 0):.3f} | {rlat}")
PY
