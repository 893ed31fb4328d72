// SPDX-License-Identifier: MIT
// Commits per second (one 100-byte INSERT per transaction, synchronous=FULL,
// single connection) and point SELECTs per second, SQLite's unix VFS vs the
// mapdirect VFS in the same run, WAL and rollback-journal (DELETE) modes.
// Usage: mapdirect_vfs_bench [-t TRANSACTIONS] [-s SELECTS] [-r ROUNDS] DIR
// Rounds alternate the two VFSes; the median of each is reported, with the
// ratio mapdirect/unix (> 1: mapdirect faster).
#include "mapdirect_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

void die(sqlite3* db, const char* what) {
  std::fprintf(stderr, "%s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
  std::exit(1);
}

void exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) die(db, sql);
}

struct sample {
  double commits_per_s;
  double selects_per_s;
};

sample run_once(const std::string& dir, const char* vfs, const char* journal_mode, int transactions, int selects) {
  const std::string path = dir + "/bench-" + vfs + ".db";
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((path + suffix).c_str());
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK) die(db, "open");
  exec(db, (std::string("PRAGMA journal_mode=") + journal_mode).c_str());
  exec(db, "PRAGMA synchronous=FULL");
  exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)");
  sqlite3_stmt* ins = nullptr;
  if (sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES(?1)", -1, &ins, nullptr) != SQLITE_OK) die(db, "prepare");
  unsigned char payload[100];
  for (int i = 0; i < 100; ++i) payload[i] = static_cast<unsigned char>(i * 7);
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  for (int i = 0; i < transactions; ++i) {
    exec(db, "BEGIN");
    payload[0] = static_cast<unsigned char>(i);
    sqlite3_bind_blob(ins, 1, payload, sizeof payload, SQLITE_STATIC);
    if (sqlite3_step(ins) != SQLITE_DONE) die(db, "insert");
    sqlite3_reset(ins);
    exec(db, "COMMIT");
  }
  const double commit_s = std::chrono::duration<double>(clock::now() - t0).count();
  sqlite3_finalize(ins);
  sqlite3_stmt* sel = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT length(v) FROM t WHERE id=?1", -1, &sel, nullptr) != SQLITE_OK) die(db, "prepare");
  unsigned seed = 12345;
  long long total = 0;
  t0 = clock::now();
  for (int i = 0; i < selects; ++i) {
    seed = seed * 1103515245u + 12345u;
    sqlite3_bind_int64(sel, 1, 1 + static_cast<sqlite3_int64>(seed % static_cast<unsigned>(transactions)));
    if (sqlite3_step(sel) == SQLITE_ROW) total += sqlite3_column_int(sel, 0);
    sqlite3_reset(sel);
  }
  const double select_s = std::chrono::duration<double>(clock::now() - t0).count();
  sqlite3_finalize(sel);
  if (total != 100LL * selects) die(db, "point SELECTs returned wrong rows");
  sqlite3_close(db);
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((path + suffix).c_str());
  return {transactions / commit_s, selects / select_s};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int transactions = 2000, selects = 200000, rounds = 3;
  int opt;
  while ((opt = ::getopt(argc, argv, "t:s:r:")) != -1) {
    if (opt == 't') transactions = std::atoi(optarg);
    else if (opt == 's') selects = std::atoi(optarg);
    else if (opt == 'r') rounds = std::atoi(optarg);
    else return 2;
  }
  if (optind != argc - 1 || transactions <= 0 || selects <= 0 || rounds <= 0) {
    std::fprintf(stderr, "usage: %s [-t TRANSACTIONS] [-s SELECTS] [-r ROUNDS] DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[optind];
  if (mapdirect_vfs_register(0) != SQLITE_OK) return 1;
  std::printf("SQLite %s, %d transactions x %d rounds, %d point SELECTs, synchronous=FULL, dir %s\n",
              sqlite3_libversion(), transactions, rounds, selects, dir.c_str());
  std::printf(
      "| journal | unix commits/s | mapdirect commits/s | ratio | unix SELECTs/s | mapdirect SELECTs/s | ratio |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const char* mode : {"WAL", "DELETE"}) {
    std::vector<double> uc, mc, us, ms;
    for (int r = 0; r < rounds; ++r) {
      // Alternate the order so that neither VFS always runs first.
      const bool unix_first = (r % 2) == 0;
      for (int k = 0; k < 2; ++k) {
        const bool is_unix = (k == 0) == unix_first;
        const sample s = run_once(dir, is_unix ? "unix" : "mapdirect", mode, transactions, selects);
        (is_unix ? uc : mc).push_back(s.commits_per_s);
        (is_unix ? us : ms).push_back(s.selects_per_s);
      }
    }
    const double u = median(uc), m = median(mc), su = median(us), sm = median(ms);
    std::printf("| %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |\n", mode, u, m, m / u, su, sm, sm / su);
  }
  return 0;
}
