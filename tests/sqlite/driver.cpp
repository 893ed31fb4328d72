// SPDX-License-Identifier: MIT
// Tests of the mapdirect SQLite VFS that need code in the process: injected
// msync/fallocate failures (mapdirect's syscall seam) and two connections in
// one process (lock preservation). Usage: sqlite_vfs_driver TEST DIR
//   TEST: fsync-wal | fsync-rollback | enospc | locks
// Exit 0 pass, 1 fail, 77 skip.
// For the VM power-cut tier (not run by ctest):
//   sqlite_vfs_driver powercut-write DB MODE    commits numbered transactions
//     forever, printing "ack MODE N" after each COMMIT returned;
//   sqlite_vfs_driver powercut-verify DB MODE LAST_ACK    after the cut:
//     integrity_check ok, rows 1..K with no gap, K >= LAST_ACK (not checked
//     for wal-normal, where SQLite documents that the last transactions may
//     roll back after a power loss: the count is printed as lost=N), and
//     K >= LAST_ACK - 1 for rollback-full (see powercut_verify).
//   MODE: rollback-full | rollback-extra | wal-full | wal-normal | control-off (synchronous=OFF,
//   the negative control: acknowledges what was never synced).
#include "mapdirect_vfs.h"

#include <mapdirect/detail/syscall.hpp>

#include <sqlite3.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

namespace {

int failures = 0;

#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                        \
      std::fprintf(stderr, "\n");                               \
      ++failures;                                               \
    }                                                           \
  } while (0)

sqlite3* open_md(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "mapdirect");
  if (rc != SQLITE_OK) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), db ? sqlite3_errmsg(db) : "?");
    std::exit(1);
  }
  sqlite3_extended_result_codes(db, 1);
  return db;
}

// Runs SQL; returns the extended result code.
int exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) std::printf("  [%s] -> %s (%d)\n", sql, err ? err : "?", sqlite3_extended_errcode(db));
  sqlite3_free(err);
  return rc == SQLITE_OK ? SQLITE_OK : sqlite3_extended_errcode(db);
}

std::string query1(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  std::string out = "<error>";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    out = t ? reinterpret_cast<const char*>(t) : "";
  }
  sqlite3_finalize(st);
  return out;
}

// msync fails with `error` the next `count` times (a lost write-back).
struct failing_msync : mapdirect::syscall_interposer {
  int count = 0;
  int error = EIO;
  int msync(void* addr, std::size_t len, int flags) noexcept override {
    if (count > 0) {
      --count;
      errno = error;
      return -1;
    }
    return ::msync(addr, len, flags);
  }
};

// fallocate fails with ENOSPC while `full`.
struct full_fs : mapdirect::syscall_interposer {
  bool full = false;
  int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
    if (full) {
      errno = ENOSPC;
      return -1;
    }
    return ::fallocate(fd, mode, off, len);
  }
  int ftruncate(int fd, off_t len) noexcept override {
    if (full) {
      errno = ENOSPC;  // a file system this full refuses to extend even sparsely
      return -1;
    }
    return ::ftruncate(fd, len);
  }
};

void test_fsync(const std::string& dir, bool wal) {
  const std::string path = dir + (wal ? "/fsync-wal.db" : "/fsync-rb.db");
  sqlite3* db = open_md(path);
  CHECK(exec(db, wal ? "PRAGMA journal_mode=WAL" : "PRAGMA journal_mode=DELETE") == SQLITE_OK, "journal_mode");
  CHECK(exec(db, "PRAGMA synchronous=FULL; CREATE TABLE t(x); INSERT INTO t VALUES(1)") == SQLITE_OK, "setup");
  failing_msync inject;
  inject.count = 1;  // fails once: the kernel reports a lost write-back only once too
  {
    const mapdirect::scoped_syscall_interposer scope(inject);
    const int rc = exec(db, "INSERT INTO t VALUES(2)");
    CHECK(rc == SQLITE_IOERR_FSYNC, "a failed persist gave %d, not SQLITE_IOERR_FSYNC", rc);
    CHECK(inject.count == 0, "msync was never called");
    if (wal) {
      // The WAL file object stays open: its loss is sticky although msync
      // works again now, also across a new (larger) mapping of the WAL.
      const int again = exec(db, "INSERT INTO t VALUES(randomblob(3000000))");
      CHECK(again == SQLITE_IOERR_FSYNC, "after a lost write-back a commit gave %d, not SQLITE_IOERR_FSYNC", again);
    }
  }
  sqlite3_close(db);
  // A reopened connection starts afresh and finds a consistent database.
  db = open_md(path);
  CHECK(query1(db, "PRAGMA integrity_check") == "ok", "integrity after the failure");
  CHECK(exec(db, "INSERT INTO t VALUES(4)") == SQLITE_OK, "commit after reopening");
  const std::string n = query1(db, "SELECT count(*) FROM t WHERE x IN (1, 4)");
  CHECK(n == "2", "rows 1 and 4: %s", n.c_str());
  sqlite3_close(db);
}

void test_enospc(const std::string& dir) {
  for (const char* jm : {"DELETE", "WAL"}) {
    const std::string path = dir + "/enospc-" + jm + ".db";
    sqlite3* db = open_md(path);
    const std::string mode = std::string("PRAGMA journal_mode=") + jm;
    CHECK(exec(db, mode.c_str()) == SQLITE_OK, "journal_mode");
    CHECK(exec(db, "CREATE TABLE t(b); INSERT INTO t VALUES(randomblob(1000))") == SQLITE_OK, "setup");
    full_fs inject;
    {
      const mapdirect::scoped_syscall_interposer scope(inject);
      inject.full = true;
      const int rc = exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
                              "INSERT INTO t SELECT randomblob(4000) FROM n");
      CHECK((rc & 0xff) == SQLITE_FULL, "%s: ENOSPC gave %d, not SQLITE_FULL", jm, rc);
      inject.full = false;
    }
    CHECK(exec(db, "INSERT INTO t VALUES(randomblob(1000))") == SQLITE_OK, "%s: insert once space is back", jm);
    CHECK(query1(db, "SELECT count(*) FROM t") == "2", "%s: count", jm);
    CHECK(query1(db, "PRAGMA integrity_check") == "ok", "%s: integrity", jm);
    sqlite3_close(db);
  }
}

// Another process (the stock shell, unix VFS, no busy timeout) tries to write.
std::string other_process_insert(const std::string& path) {
  const std::string cmd = "sqlite3 -batch '" + path + "' 'INSERT INTO t VALUES(99);' 2>&1";
  std::string out;
  if (FILE* f = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    ::pclose(f);
  }
  return out;
}

void test_locks(const std::string& dir) {
  if (::system("command -v sqlite3 >/dev/null 2>&1") != 0) {
    std::printf("SKIP: the sqlite3 shell (Debian package sqlite3) is missing\n");
    std::exit(77);
  }
  const std::string path = dir + "/locks.db";
  sqlite3* a = open_md(path);
  CHECK(exec(a, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                "SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t SELECT i FROM n") == SQLITE_OK,
        "setup");
  // Connection a holds a SHARED lock (open read transaction)...
  CHECK(exec(a, "BEGIN") == SQLITE_OK, "begin");
  CHECK(query1(a, "SELECT count(*) FROM t") == "1000", "read");
  // ...while connection b of the same process opens, maps and closes the
  // same file: closing b's descriptors must not release a's lock.
  sqlite3* b = open_md(path);
  CHECK(query1(b, "SELECT count(*) FROM t") == "1000", "second connection");
  CHECK(exec(b, "PRAGMA mapdirect_mode") == SQLITE_OK, "pragma");
  sqlite3_close(b);
  const std::string blocked = other_process_insert(path);
  CHECK(blocked.find("locked") != std::string::npos,
        "another process wrote while this one held a read lock (the lock was dropped): '%s'", blocked.c_str());
  CHECK(exec(a, "COMMIT") == SQLITE_OK, "end of the read transaction");
  const std::string free_now = other_process_insert(path);
  CHECK(free_now.empty(), "the other process could not write after the lock was released: '%s'", free_now.c_str());
  CHECK(query1(a, "SELECT count(*) FROM t") == "1001", "the other process's row");
  sqlite3_close(a);
}

const char* powercut_pragmas(const std::string& mode) {
  if (mode == "rollback-full") return "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;";
  if (mode == "rollback-extra") return "PRAGMA journal_mode=DELETE; PRAGMA synchronous=EXTRA;";
  if (mode == "wal-full") return "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;";
  if (mode == "wal-normal") return "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
  if (mode == "control-off") return "PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF;";
  return nullptr;
}

int powercut_write(const std::string& path, const std::string& mode) {
  const char* pragmas = powercut_pragmas(mode);
  if (!pragmas) return 2;
  sqlite3* db = open_md(path);
  if (exec(db, pragmas) != SQLITE_OK ||
      exec(db, "CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, pad BLOB NOT NULL)") != SQLITE_OK)
    return 1;
  long long n = std::atoll(query1(db, "SELECT coalesce(max(n), 0) FROM t").c_str());
  for (;;) {
    ++n;
    char sql[160];
    std::snprintf(sql, sizeof sql, "BEGIN; INSERT INTO t VALUES(%lld, randomblob(100)); COMMIT;", n);
    if (exec(db, sql) != SQLITE_OK) return 1;
    std::printf("ack %s %lld\n", mode.c_str(), n);  // only after COMMIT returned
    std::fflush(stdout);
  }
}

int powercut_verify(const std::string& path, const std::string& mode, long long last_ack) {
  if (!powercut_pragmas(mode)) return 2;
  sqlite3* db = open_md(path);
  const std::string integrity = query1(db, "PRAGMA integrity_check");
  const long long count = std::atoll(query1(db, "SELECT count(*) FROM t").c_str());
  const long long max = std::atoll(query1(db, "SELECT coalesce(max(n), 0) FROM t").c_str());
  sqlite3_close(db);
  std::printf("verify %s: integrity=%s rows=%lld max=%lld last_ack=%lld lost=%lld\n", mode.c_str(), integrity.c_str(),
              count, max, last_ack, last_ack > max ? last_ack - max : 0);
  CHECK(integrity == "ok", "integrity_check: %s", integrity.c_str());
  CHECK(count == max, "rows are not 1..%lld without gaps (%lld rows)", max, count);
  // https://sqlite.org/pragma.html#pragma_synchronous: "A transaction
  // committed in WAL mode with synchronous=NORMAL might roll back following a
  // power loss or system crash."
  // And for rollback-full: "EXTRA synchronous is like FULL with the addition
  // that the directory containing a rollback journal is synced after that
  // journal is unlinked to commit a transaction in DELETE mode. EXTRA provides
  // additional durability if the commit is followed closely by a power loss."
  // Under FULL the unlink of the last commit's journal may not survive; the
  // journal is then hot and that one transaction rolls back. At most one.
  if (mode == "rollback-full") CHECK(max + 1 >= last_ack, "%lld acknowledged transactions lost", last_ack - max);
  else if (mode != "wal-normal") CHECK(max >= last_ack, "%lld acknowledged transactions lost", last_ack - max);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && mapdirect_vfs_register(0) == SQLITE_OK) {
    const std::string cmd = argv[1];
    if (cmd == "powercut-write" && argc == 4) return powercut_write(argv[2], argv[3]);
    if (cmd == "powercut-verify" && argc == 5) return powercut_verify(argv[2], argv[3], std::atoll(argv[4]));
  }
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s fsync-wal|fsync-rollback|enospc|locks DIR\n", argv[0]);
    return 2;
  }
  if (mapdirect_vfs_register(0) != SQLITE_OK) {
    std::fprintf(stderr, "cannot register the mapdirect VFS\n");
    return 1;
  }
  const std::string test = argv[1];
  const std::string dir = std::string(argv[2]) + "/driver-" + test + "." + std::to_string(::getpid());
  if (::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()) != 0) return 1;
  if (test == "fsync-wal") test_fsync(dir, true);
  else if (test == "fsync-rollback") test_fsync(dir, false);
  else if (test == "enospc") test_enospc(dir);
  else if (test == "locks") test_locks(dir);
  else {
    std::fprintf(stderr, "unknown test %s\n", test.c_str());
    return 2;
  }
  (void)::system(("rm -rf '" + dir + "'").c_str());
  std::printf("%s: %s\n", test.c_str(), failures ? "FAIL" : "PASS");
  return failures ? 1 : 0;
}
