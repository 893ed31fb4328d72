#!/bin/bash
# Side-by-side db_bench comparison (docs/bench/rocksdb.md): Debian's stock
# db_bench, synchronous writes (--sync=1), fillseq and fillrandom with 1 and
# 8 threads, RocksDB's POSIX file system vs --fs_uri=mapdirect (and
# mapdirect-group when the plugin has it), interleaved round by round so that
# load from other processes hits every file system alike. Prints a markdown
# table: records/s and p99 write latency (median over rounds), and ratios.
#
#   examples/rocksdb_wal/bench.sh PLUGIN.so WORKDIR [NUM] [ROUNDS]
#
# NUM: writes per thread per run (default 2000); ROUNDS: default 3.
set -uo pipefail
plugin=$1 work=$2 num=${3:-2000} rounds=${4:-3}
command -v db_bench >/dev/null || { echo "db_bench not installed (Debian: rocksdb-tools)" >&2; exit 2; }
mkdir -p "$work"
fss="posix mapdirect"
LD_PRELOAD=$plugin db_bench --fs_uri=mapdirect-group --db="$work/probe" --benchmarks=fillseq --num=1 >/dev/null 2>&1 &&
  fss="$fss mapdirect-group"
rm -rf "$work/probe"

declare -A ops p99
run() { # run FS BENCH THREADS ROUND
  local fs=$1 b=$2 t=$3 r=$4 out="$work/$1.$2.t$3.r$4.out" uri=()
  [ "$fs" = posix ] || uri=(--fs_uri="$fs")
  rm -rf "$work/db"
  LD_PRELOAD=$plugin db_bench "${uri[@]}" --db="$work/db" --wal_dir="$work/db" --benchmarks="$b" --sync=1 \
    --threads="$t" --num="$num" --histogram=1 --compression_type=none >"$out" 2>&1 || { echo "db_bench failed: $out" >&2; tail "$out" >&2; exit 1; }
  ops[$fs.$b.$t.$r]=$(awk -v b="$b" '$1 == b && $2 == ":" { for (i = 1; i <= NF; i++) if ($(i+1) == "ops/sec") { print $i; exit } }' "$out")
  p99[$fs.$b.$t.$r]=$(awk '/^Percentiles:/ { for (i = 1; i <= NF; i++) if ($i == "P99:") { print $(i+1); exit } }' "$out")
}
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

for r in $(seq 1 "$rounds"); do
  for t in 1 8; do
    for b in fillseq fillrandom; do
      for fs in $fss; do run "$fs" "$b" "$t" "$r"; done
    done
  done
done

echo "| benchmark | threads | file system | records/s | p99 write (us) | records/s ratio vs posix | p99 ratio vs posix |"
echo "|---|---:|---|---:|---:|---:|---:|"
for t in 1 8; do
  for b in fillseq fillrandom; do
    base_o= base_p=
    for fs in $fss; do
      os=() ps=()
      for r in $(seq 1 "$rounds"); do os+=("${ops[$fs.$b.$t.$r]}"); ps+=("${p99[$fs.$b.$t.$r]}"); done
      o=$(median "${os[@]}") p=$(median "${ps[@]}")
      [ "$fs" = posix ] && base_o=$o base_p=$p
      printf '| %s | %d | %s | %s | %s | %s | %s |\n' "$b" "$t" "$fs" "$o" "$p" \
        "$(awk -v a="$o" -v b="$base_o" 'BEGIN { printf "%.2f", a / b }')" \
        "$(awk -v a="$p" -v b="$base_p" 'BEGIN { printf "%.2f", a / b }')"
    done
  done
done
echo
echo "($rounds rounds, median; $num writes per thread per run; each run on a fresh database; $(nproc) CPUs; $(uname -r))"
