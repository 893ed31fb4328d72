#!/bin/sh
# SPDX-License-Identifier: MIT
# Tests of the mapdirect SQLite VFS driven by Debian's unmodified sqlite3
# shell (no code of ours in the shell: the VFS comes in with .load).
# Usage: shell_tests.sh TEST LIBRARY WORKDIR
#   TEST: basic | twoproc-wal | twoproc-rollback | truncate | diskfull | crash
#   LIBRARY: path of libmapdirect_vfs.so; WORKDIR: scratch directory.
# Exit 0 pass, 1 fail, 77 skip (ctest SKIP_RETURN_CODE).
set -u
test_name=$1
lib=$2
work=$3
shell=${SQLITE3:-/usr/bin/sqlite3}
[ -x "$shell" ] || { echo "SKIP: $shell missing (Debian package sqlite3)"; exit 77; }
lib=${lib%.so}
dir=$work/$test_name.$$
rm -rf "$dir" && mkdir -p "$dir" || exit 1
cleanup() {
  [ -n "${mounted:-}" ] && umount "$dir/mnt" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Runs the stock shell on stdin with the extension loaded, SQLite's log on
# stderr and $1 opened through the mapdirect VFS; stdout+stderr to $2. Returns the shell's exit status.
run_md() {
  db=$1
  out=$2
  { printf '.log stderr\n.load %s\n.open file:%s?vfs=mapdirect\n.timeout 20000\n' "$lib" "$db"; cat; } | "$shell" -batch >"$out" 2>&1
}
# The stock shell on the unix VFS (a second opinion on what the file holds).
run_unix() { "$shell" -batch "$@" 2>&1; }
# Fails unless the shell status $1 is an ordinary exit (not a signal).
not_killed() { [ "$1" -lt 128 ] || fail "$2: the shell died of signal $(($1 - 128))"; }
# counter_db DB JOURNAL_MODE: creates DB through the mapdirect VFS with the
# schema the concurrency and crash tests check: t, a row per transaction, and
# c.n, the number of transactions (count(t) = c.n in every consistent state).
counter_db() {
  run_md "$1" "$dir/init" <<SQL || { cat "$dir/init"; fail "init"; }
PRAGMA journal_mode=$2;
CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
CREATE TABLE c(n INTEGER);
INSERT INTO c VALUES(0);
SQL
}
# counter_txns N BLOB_BYTES BEGIN: N such transactions (BEGIN: the statement
# that opens each), one per line, on stdout.
counter_txns() {
  i=0
  while [ $i -lt "$1" ]; do
    echo "$3; INSERT INTO t(v) VALUES(randomblob($2)); UPDATE c SET n=n+1; COMMIT;"
    i=$((i + 1))
  done
}

case $test_name in
basic)
  db=$dir/basic.db
  run_md "$db" "$dir/out" <<'SQL'
.print mode=
PRAGMA mapdirect_mode;
PRAGMA page_size=4096;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE c(n INTEGER);
INSERT INTO c VALUES(0);
.print rollback
PRAGMA journal_mode;
BEGIN; INSERT INTO t(v) SELECT printf('r%06d', value) FROM generate_series(1,1000); UPDATE c SET n=n+1000; COMMIT;
BEGIN; INSERT INTO t(v) VALUES('rolled back'); ROLLBACK;
SELECT count(*), (SELECT n FROM c) FROM t;
.print wal
PRAGMA journal_mode=WAL;
BEGIN; INSERT INTO t(v) SELECT printf('w%06d', value) FROM generate_series(1,1000); UPDATE c SET n=n+1000; COMMIT;
BEGIN; INSERT INTO t(v) VALUES('rolled back'); ROLLBACK;
SELECT count(*), (SELECT n FROM c) FROM t;
.print growth
CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
INSERT INTO big(b) SELECT randomblob(1000) FROM generate_series(1,22000);
PRAGMA wal_checkpoint(TRUNCATE);
PRAGMA journal_mode=DELETE;
INSERT INTO big(b) SELECT randomblob(1000) FROM generate_series(1,2000);
SELECT count(*), sum(length(b)) FROM big;
PRAGMA integrity_check;
.print vacuum
DELETE FROM big WHERE id % 2 = 0;
VACUUM;
PRAGMA integrity_check;
SELECT count(*) FROM big;
SELECT 'pages', page_count FROM pragma_page_count;
.print vfsname
.vfsname
PRAGMA mapdirect_describe;
.print end
SQL
  st=$?
  cat "$dir/out"
  not_killed $st basic
  [ $st -eq 0 ] || fail "basic: shell exited $st"
  grep -Eq '^(direct|sync|shared)/(byte|cache_line|page)$' "$dir/out" || fail "PRAGMA mapdirect_mode gave no mode/granularity"
  grep -q '^1000|1000$' "$dir/out" || fail "rollback-journal transactions"
  grep -q '^2000|2000$' "$dir/out" || fail "WAL transactions"
  grep -q '^24000|24000000$' "$dir/out" || fail "growth past several mappings (24 MB)"
  [ "$(grep -c '^ok$' "$dir/out")" -eq 2 ] || fail "integrity_check"
  grep -q '^12000$' "$dir/out" || fail "VACUUM"
  grep -q 'mapdirect: .*basic.db (db):' "$dir/out" || fail "no per-file report through sqlite3_log"
  grep -Eq '^mapdirect\((direct|sync|shared)/' "$dir/out" || fail "SQLITE_FCNTL_VFSNAME (.vfsname)"
  grep -Eq '(sync|shared): (ok|E[A-Z]+|skipped)' "$dir/out" || fail "PRAGMA mapdirect_describe"
  size=$(stat -c %s "$db")
  pages=$(sed -n 's/^pages|//p' "$dir/out")
  [ -n "$pages" ] && [ "$size" -eq $((pages * 4096)) ] ||
    fail "database file has $size bytes, not page_count ($pages) x 4096 (sizes must be exact)"
  # The unix VFS reads the same file: same content, still consistent.
  res=$(run_unix "$db" "PRAGMA integrity_check; SELECT count(*) FROM t; SELECT count(*) FROM big;" | tr '\n' ' ')
  [ "$res" = "ok 2000 12000 " ] || fail "the unix VFS sees '$res'"
  # A file written by the unix VFS, then reopened through mapdirect.
  run_unix "$dir/u.db" "CREATE TABLE u(x); INSERT INTO u SELECT value FROM generate_series(1,5000);" >/dev/null
  run_md "$dir/u.db" "$dir/out2" <<'SQL'
INSERT INTO u VALUES(5001);
SELECT count(*), sum(x) FROM u;
PRAGMA integrity_check;
SQL
  st=$?
  cat "$dir/out2"
  [ $st -eq 0 ] && grep -q '^5001|12507501$' "$dir/out2" && grep -q '^ok$' "$dir/out2" || fail "reopening a unix-VFS file"
  # A read-only open passes through to unix (a mapping needs a writable descriptor).
  ro=$( { printf '.load %s\n.open file:%s?vfs=mapdirect&mode=ro\n' "$lib" "$dir/u.db";
          echo "PRAGMA mapdirect_mode; SELECT count(*) FROM u;"; } | "$shell" -batch 2>&1)
  echo "$ro"
  echo "$ro" | grep -q '^unix (pass-through: read-only' && echo "$ro" | grep -q '^5001$' || fail "read-only open"
  ;;

twoproc-wal | twoproc-rollback)
  # One shell writes (each transaction inserts a row and bumps a counter),
  # another reads concurrently: every read must see the invariant.
  mode=${test_name#twoproc-}
  [ "$mode" = rollback ] && jm=DELETE || jm=WAL
  db=$dir/two.db
  counter_db "$db" "$jm"
  [ "$mode" = rollback ] && n=400 || n=1500
  # Frequent checkpoints: the database file itself changes under the reader.
  echo "PRAGMA wal_autocheckpoint=16;" >"$dir/writer.sql"
  counter_txns "$n" 300 "BEGIN IMMEDIATE" >>"$dir/writer.sql"
  i=0
  while [ $i -lt 400 ]; do
    echo "SELECT 'check', (SELECT count(*) FROM t) = (SELECT n FROM c), (SELECT n FROM c);"
    i=$((i + 1))
  done >"$dir/reader.sql"
  # Reader shells, one after the other, from before the writer starts until
  # after it ended: they see the database before, during and after.
  : >"$dir/rout"
  (
    while :; do
      run_md "$db" "$dir/rbatch" <"$dir/reader.sql"
      r=$?
      cat "$dir/rbatch" >>"$dir/rout"
      echo 1 >>"$dir/batches"
      [ $r -eq 0 ] || { echo $r >"$dir/rst"; break; }
      [ -e "$dir/stop" ] && break
    done
  ) &
  rpid=$!
  waited=0
  while ! grep -q '^check|' "$dir/rout" && [ $waited -lt 600 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  run_md "$db" "$dir/wout" <"$dir/writer.sql"
  wst=$?
  touch "$dir/stop"
  wait $rpid
  rst=$(cat "$dir/rst" 2>/dev/null || echo 0)
  batches=$(wc -l <"$dir/batches")
  not_killed $wst writer
  not_killed $rst reader
  [ $wst -eq 0 ] || { cat "$dir/wout"; fail "writer exited $wst"; }
  [ $rst -eq 0 ] || { cat "$dir/rout"; fail "reader exited $rst"; }
  # Allowed besides the checks: the VFS's own mode notices, and SQLite's
  # notice 283 (SQLITE_NOTICE_RECOVER_WAL): when writer and reader close at
  # the same moment neither gets the lock to checkpoint and delete the WAL,
  # and the next reader rebuilds the WAL index from it (the unix VFS does the
  # same). Its rows are still checked above.
  bad=$(grep -v '^check|1|' "$dir/rout" | grep -v '^([0-9]*) mapdirect: ' |
    grep -vE '^\(283\) recovered [0-9]+ frames from WAL file ' | head -5)
  [ -z "$bad" ] || fail "reader saw an inconsistent state: $bad"
  [ "$(grep -c '^check|1|' "$dir/rout")" -eq $((batches * 400)) ] || fail "reader output incomplete"
  # The reader must have run while the writer wrote (else this proves little).
  distinct=$(grep '^check|' "$dir/rout" | cut -d'|' -f3 | sort -u | wc -l)
  echo "$batches reader shells saw $distinct distinct counter values"
  [ "$distinct" -ge 2 ] || fail "the reader never overlapped the writer"
  res=$(run_md "$db" "$dir/final" <<'SQL'
SELECT count(*), (SELECT n FROM c) FROM t;
PRAGMA integrity_check;
SQL
  )
  cat "$dir/final"
  grep -q "^$n|$n\$" "$dir/final" && grep -q '^ok$' "$dir/final" || fail "final state"
  ;;

truncate)
  # Another process truncates the database under an open read transaction:
  # pages SQLite then reads lie beyond the new end of the mapped file. Must be
  # an I/O error (SQLITE_IOERR_READ), not a SIGBUS.
  db=$dir/trunc.db
  run_md "$db" "$dir/init" <<'SQL' || { cat "$dir/init"; fail "init"; }
CREATE TABLE small(x);
INSERT INTO small VALUES(1);
CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
INSERT INTO big(b) SELECT randomblob(2000) FROM generate_series(1,3000);
SQL
  run_md "$db" "$dir/out" <<SQL
PRAGMA cache_size=10;
BEGIN;
SELECT 'small', count(*) FROM small;
.system truncate -s 8192 $db
SELECT 'big', count(*), sum(length(b)) FROM big;
SQL
  st=$?
  cat "$dir/out"
  not_killed $st truncate
  grep -q 'disk I/O error' "$dir/out" || fail "no SQLITE_IOERR after a truncation by another process"
  ;;

diskfull)
  # A tiny file system: growing the database must end in SQLITE_FULL
  # ("database or disk is full"), not a SIGBUS, and leave it consistent.
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: mounting a small tmpfs needs root"; exit 77; }
  mkdir -p "$dir/mnt"
  mount -t tmpfs -o size=4m tmpfs "$dir/mnt" 2>"$dir/mount.err" || { cat "$dir/mount.err"; echo "SKIP: cannot mount tmpfs"; exit 77; }
  mounted=1
  for jm in DELETE WAL; do
    db=$dir/mnt/full-$jm.db
    rm -f "$db" "$db-wal" "$db-journal" "$db-shm"
    run_md "$db" "$dir/out" <<SQL
PRAGMA journal_mode=$jm;
CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
INSERT INTO t(b) SELECT randomblob(1000) FROM generate_series(1,500);
.print filled
INSERT INTO t(b) SELECT randomblob(1000) FROM generate_series(1,20000);
.print after
SELECT 'count', count(*) FROM t;
PRAGMA integrity_check;
SQL
    st=$?
    cat "$dir/out"
    not_killed $st "diskfull $jm"
    grep -q 'database or disk is full' "$dir/out" || fail "$jm: no SQLITE_FULL"
    grep -q '^count|500$' "$dir/out" || fail "$jm: the failed statement was not rolled back"
    grep -q '^ok$' "$dir/out" || fail "$jm: integrity_check after SQLITE_FULL"
    rm -f "$db" "$db-wal" "$db-journal" "$db-shm"
  done
  ;;

crash)
  # A writer shell killed (SIGKILL) in the middle of its transactions, again
  # and again; each time the database reopened through mapdirect must be
  # consistent (hot journal rolled back / WAL recovered through our reads).
  for jm in DELETE WAL; do
    db=$dir/crash-$jm.db
    counter_db "$db" "$jm"
    printf '.load %s\n.open file:%s?vfs=mapdirect\n' "$lib" "$db" >"$dir/writer.sql"
    counter_txns 3000 3000 BEGIN >>"$dir/writer.sql"
    last=0
    for cut in 1 2 3 4 5; do
      "$shell" -batch <"$dir/writer.sql" >"$dir/wout" 2>&1 &
      wpid=$!
      sleep 0.$((cut * 7 % 5 + 2))
      kill -KILL $wpid 2>/dev/null
      wait $wpid 2>/dev/null
      run_md "$db" "$dir/check" <<'SQL'
PRAGMA integrity_check;
SELECT 'inv', (SELECT count(*) FROM t) = (SELECT n FROM c), (SELECT n FROM c);
SQL
      grep -q '^ok$' "$dir/check" || { cat "$dir/check"; fail "$jm cut $cut: integrity_check"; }
      grep -q '^inv|1|' "$dir/check" || { cat "$dir/check"; fail "$jm cut $cut: a transaction was torn"; }
      now=$(sed -n 's/^inv|1|//p' "$dir/check")
      [ "$now" -ge "$last" ] || fail "$jm cut $cut: committed rows went missing ($now < $last)"
      echo "$jm cut $cut: $now transactions"
      last=$now
    done
    [ "$last" -gt 0 ] || fail "$jm: the writer never committed anything before being killed"
  done
  ;;

*)
  fail "unknown test $test_name"
  ;;
esac
echo "PASS: $test_name"
exit 0
