#!/bin/sh
# Host tests of examples/rocksdb_wal (ctest label "rocksdb").
#   rocksdb_tests.sh CASE PLUGIN.so DRIVER WORKDIR
# CASE: dbbench | driver | group | crash | tail | enospc
# Exit 0 pass, 1 fail, 77 skip (with the reason on stdout).
set -u
case_=$1 plugin=$2 driver=$3 work=$4
dir=$work/$case_
rm -rf "$dir"
mkdir -p "$dir"

fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

# Highest acknowledged key + 1 from a writer's stdout.
acked() { awk '/^ack /{n=$2+1} END{print n+0}' "$1"; }

case $case_ in
dbbench)
  # Debian's unmodified db_bench with the plugin preloaded.
  command -v db_bench >/dev/null 2>&1 || skip "db_bench not installed (Debian package rocksdb-tools)"
  LD_PRELOAD=$plugin db_bench --fs_uri=mapdirect --db="$dir/db" --wal_dir="$dir/db" \
    --benchmarks=fillseq,readrandom --sync=1 --num=3000 --threads=1 >"$dir/run1.out" 2>&1 ||
    { cat "$dir/run1.out"; fail "db_bench fillseq,readrandom"; }
  grep -q "(3000 of 3000 found)" "$dir/run1.out" || { cat "$dir/run1.out"; fail "readrandom did not find every key"; }
  grep -q "Options.fs: mapdirect" "$dir/db/LOG" || fail "db_bench did not use the mapdirect file system"
  grep -q "mapdirect: WAL .*mapped: mode=" "$dir/db/LOG" || fail "no per-WAL mode/granularity line in the info log"
  [ "$(grep -c 'mapdirect: WAL .*mapped' "$dir/db/LOG")" -eq 1 ] || fail "expected exactly one line for the one WAL"
  # The WAL was truncated to its logical size at Close.
  for f in "$dir"/db/*.log; do
    [ "$(stat -c %s "$f")" -lt 1048576 ] || fail "$f keeps its preallocated size after Close"
  done
  # Second run: reopen (WAL replay through RocksDB's reader) and read everything back.
  LD_PRELOAD=$plugin db_bench --fs_uri=mapdirect --db="$dir/db" --wal_dir="$dir/db" --use_existing_db=1 \
    --benchmarks=readseq,readrandom --num=3000 >"$dir/run2.out" 2>&1 || { cat "$dir/run2.out"; fail "db_bench reopen"; }
  grep -q "(3000 of 3000 found)" "$dir/run2.out" || { cat "$dir/run2.out"; fail "keys missing after reopen"; }
  grep -E "fillseq|readrandom|readseq" "$dir/run1.out" "$dir/run2.out" | sed 's/.*\.\.\. finished.*//'
  echo "PASS dbbench"
  ;;
driver)
  "$driver" write "$dir/db" mapdirect 2000 >"$dir/w.out" || fail "writer"
  n=$(acked "$dir/w.out")
  [ "$n" -eq 2000 ] || fail "writer acknowledged $n of 2000"
  "$driver" write "$dir/db" mapdirect 500 >"$dir/w2.out" || fail "second writer (reopen, new WAL)"
  "$driver" verify "$dir/db" mapdirect 2500 || fail "verify"
  echo "PASS driver"
  ;;
group)
  # "mapdirect-group": WAL persists through a group_committer.
  "$driver" write "$dir/db" mapdirect-group 1000 >"$dir/w.out" 2>"$dir/w.err"
  rc=$?
  if [ $rc -eq 2 ] && grep -q "file system mapdirect-group" "$dir/w.err"; then
    skip "the plugin was built without mapdirect::uring (liburing-dev): no mapdirect-group"
  fi
  [ $rc -eq 0 ] || { cat "$dir/w.err"; fail "writer"; }
  grep -q "mapdirect: WAL .*group commit: " "$dir/db/LOG" || fail "no group-commit note in the info log"
  "$driver" verify "$dir/db" mapdirect-group 1000 || fail "verify"
  echo "PASS group"
  ;;
crash)
  # SIGKILL the writer mid-run (page-cache level: the kernel keeps the
  # mapping's dirty pages; this is not a power cut, see tests/vm), 5 times on
  # one DB, each time reopening with RocksDB's default recovery mode.
  total=0
  for i in 1 2 3 4 5; do
    "$driver" write "$dir/db" mapdirect 0 >"$dir/w$i.out" 2>"$dir/w$i.err" &
    pid=$!
    # Wait for some acknowledgements, then kill.
    t=0
    while [ "$(acked "$dir/w$i.out")" -le "$total" ] || [ "$(acked "$dir/w$i.out")" -lt $((total + 200)) ]; do
      sleep 0.2
      t=$((t + 1))
      [ $t -lt 600 ] || { kill -9 $pid; fail "writer made no progress"; }
      kill -0 $pid 2>/dev/null || { cat "$dir/w$i.err"; fail "writer died"; }
    done
    kill -9 $pid
    wait $pid 2>/dev/null
    total=$(acked "$dir/w$i.out")
    ls -l "$dir"/db/*.log
    "$driver" verify "$dir/db" mapdirect "$total" || fail "cut $i: acknowledged keys lost"
  done
  echo "PASS crash: 5 kills, $total keys acknowledged, 0 lost"
  ;;
tail)
  # Which WAL recovery mode a preallocated zero-filled tail needs, and what a
  # torn record in front of it does. write-noclose exits after its last ack
  # without closing: the WAL keeps its 1 MiB window with a zero tail and no
  # torn record. Then a torn record (valid header, wrong checksum, data cut
  # short by zeros: what a cut in the middle of an unsynced append leaves,
  # and what a SIGKILL during Append's copy leaves) is written after the last record.
  n=300
  "$driver" write-noclose "$dir/db" mapdirect $n >"$dir/w.out" 2>"$dir/w.err" || fail "writer"
  [ "$(acked "$dir/w.out")" -eq $n ] || fail "writer acknowledged $(acked "$dir/w.out") of $n"
  wal=$(ls "$dir"/db/*.log | tail -1)
  [ "$(stat -c %s "$wal")" -eq 1048576 ] || fail "expected the WAL to keep its 1 MiB preallocated window"
  cp -a "$dir/db" "$dir/pristine"
  for mode in point-in-time tolerate-tail absolute; do
    rm -rf "$dir/try"; cp -a "$dir/pristine" "$dir/try"
    "$driver" verify "$dir/try" mapdirect "$n" "$mode" >"$dir/v.out" 2>&1 || { cat "$dir/v.out"; fail "zero tail: mode $mode failed"; }
    echo "zero-filled tail, $mode: opens, $n acknowledged keys present"
  done
  # Torn record: a header claiming 200 bytes of a full record with a wrong
  # checksum, then zeros (what a cut in the middle of an unsynced append leaves).
  python3 - "$dir/pristine/$(basename "$wal")" <<'EOF' || fail "could not craft a torn record"
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
end = len(b.rstrip(b'\0'))
block = 32768
if block - end % block < 7 + 200:
    end = (end // block + 1) * block
b[end:end + 7] = bytes([0x12, 0x34, 0x56, 0x78, 200, 0, 1])  # crc, length 200, kFullType
b[end + 7:end + 7 + 50] = b'x' * 50
open(p, 'wb').write(b)
EOF
  for mode in point-in-time tolerate-tail absolute; do
    rm -rf "$dir/try"; cp -a "$dir/pristine" "$dir/try"
    if "$driver" verify "$dir/try" mapdirect "$n" "$mode" >"$dir/v.out" 2>&1; then
      echo "torn record before the zero tail, $mode: opens, $n acknowledged keys present"
    else
      echo "torn record before the zero tail, $mode: refused: $(cat "$dir/v.out")"
      [ "$mode" != point-in-time ] || fail "RocksDB's default kPointInTimeRecovery refused a torn tail record"
    fi
  done
  echo "PASS tail: the default kPointInTimeRecovery recovers every acknowledged key in front of a zero tail, torn or not"
  ;;
enospc)
  [ "$(id -u)" -eq 0 ] || skip "needs root to loop-mount a small ext4 file system"
  command -v mkfs.ext4 >/dev/null 2>&1 || skip "mkfs.ext4 missing (e2fsprogs)"
  truncate -s 24M "$dir/img"
  mkfs.ext4 -q -F -m 0 "$dir/img" || fail "mkfs"
  mkdir -p "$dir/mnt"
  mount -o loop "$dir/img" "$dir/mnt" 2>"$dir/mount.err" || skip "loop mount unavailable: $(cat "$dir/mount.err")"
  trap 'umount "$dir/mnt" 2>/dev/null' EXIT
  # Leave ~1.5 MiB: the first 1 MiB WAL window fits, growing it does not.
  # The fill command appends+syncs through the plugin directly: RocksDB
  # 7.8's own WAL writer (Debian builds it with assertions) aborts on the
  # write after a failed WAL append, with the default file system as well.
  free=$(df -B1 --output=avail "$dir/mnt" | tail -1)
  fallocate -l $((free - 1536 * 1024)) "$dir/mnt/filler" || fail "fallocate filler"
  "$driver" fill "$dir/mnt/000009.log" mapdirect || fail "growing the WAL on a full file system did not give IOStatus::NoSpace"
  # The first window cannot be allocated either: DB::Open (which creates a
  # WAL) must fail with NoSpace, not crash or succeed.
  rm -f "$dir/mnt/000009.log"
  free=$(df -B1 --output=avail "$dir/mnt" | tail -1)
  fallocate -l $((free - 96 * 1024)) "$dir/mnt/filler2" || fail "fallocate filler2"
  mkdir "$dir/mnt/db"
  if "$driver" write "$dir/mnt/db" mapdirect 10 >"$dir/w.out" 2>"$dir/w.err"; then fail "DB::Open succeeded on a full file system"; fi
  cat "$dir/w.err"
  grep -q "\[nospace\]" "$dir/w.err" || fail "ENOSPC creating the WAL did not reach RocksDB as IOStatus::NoSpace"
  echo "PASS enospc"
  ;;
*) echo "unknown case $case_"; exit 2 ;;
esac
exit 0
