// SPDX-License-Identifier: MIT
// rocksdb_wal_driver: writes keys to a RocksDB database with
// WriteOptions::sync = true through a chosen file system, printing
// "ack N" only after Put(key N) returned OK; "verify" reopens the database
// (same file system, no repair) and checks that every acknowledged key is
// present with its value. Used by the host and VM power-cut tests.
//
//   rocksdb_wal_driver write  DIR FS COUNT [RECOVERY]   (COUNT 0: until killed)
//   rocksdb_wal_driver verify DIR FS ACKED [RECOVERY]   exit 0: all ACKED keys present
//   rocksdb_wal_driver write-noclose DIR FS COUNT        as write, then _exit without closing the DB
//   rocksdb_wal_driver fill FILE.log FS                  appends to one WAL file through FS until it fails
//                                                        (prints the IOStatus; exit 0 when it is NoSpace)
//
// RK_ACK_TAG=T in the environment prints "ack T N" (several writers, one console).
// FS: "default" (RocksDB's POSIX file system), "mapdirect",
// "mapdirect-nopersist". RECOVERY: point-in-time (RocksDB 7.8's default),
// tolerate-tail, absolute, skip-any.
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/options.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

extern "C" int mapdirect_rocksdb_registered();

namespace rdb = ROCKSDB_NAMESPACE;

namespace {

std::string key_of(long i) {
  char b[32];
  std::snprintf(b, sizeof b, "key%010ld", i);
  return b;
}

std::string value_of(long i) {
  char b[64];
  std::snprintf(b, sizeof b, "value-%ld-", i);
  std::string v(b);
  while (v.size() < 100) v += static_cast<char>('a' + (i + static_cast<long>(v.size())) % 26);
  return v;
}

bool recovery_mode(const char* name, rdb::WALRecoveryMode* out) {
  if (!name || std::strcmp(name, "point-in-time") == 0) *out = rdb::WALRecoveryMode::kPointInTimeRecovery;
  else if (std::strcmp(name, "tolerate-tail") == 0) *out = rdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  else if (std::strcmp(name, "absolute") == 0) *out = rdb::WALRecoveryMode::kAbsoluteConsistency;
  else if (std::strcmp(name, "skip-any") == 0) *out = rdb::WALRecoveryMode::kSkipAnyCorruptedRecords;
  else return false;
  return true;
}

int usage() {
  std::fprintf(stderr, "usage: rocksdb_wal_driver write DIR FS COUNT [RECOVERY] | verify DIR FS ACKED [RECOVERY]\n"
                       "  FS: default | mapdirect | mapdirect-nopersist\n"
                       "  RECOVERY: point-in-time (default) | tolerate-tail | absolute | skip-any\n");
  return 2;
}

}  // namespace

// Appends 64 KiB chunks to one WAL through the file system, bypassing
// RocksDB's WritableFileWriter (whose debug build asserts after a failed WAL
// append), to check the IOStatus the plugin returns on a full file system.
int fill(const std::string& file, const std::string& fsname) {
  std::shared_ptr<rdb::FileSystem> fs;
  rdb::Status st = rdb::FileSystem::CreateFromString(rdb::ConfigOptions(), fsname, &fs);
  if (!st.ok()) return 2;
  std::unique_ptr<rdb::FSWritableFile> f;
  rdb::IOStatus s = fs->NewWritableFile(file, rdb::FileOptions(), &f, nullptr);
  long chunks = 0;
  if (s.ok()) {
    const std::string chunk(65536, 'w');
    while ((s = f->Append(chunk, rdb::IOOptions(), nullptr)).ok() && (s = f->Sync(rdb::IOOptions(), nullptr)).ok())
      ++chunks;
    (void)f->Close(rdb::IOOptions(), nullptr);
  }
  std::printf("fill: %ld chunks of 64 KiB, then %s nospace=%d ioerror=%d\n", chunks, s.ToString().c_str(),
              s.IsNoSpace() ? 1 : 0, s.IsIOError() ? 1 : 0);
  return s.IsNoSpace() ? 0 : 1;
}

int main(int argc, char** argv) {
  (void)mapdirect_rocksdb_registered();
  if (argc == 4 && std::strcmp(argv[1], "fill") == 0) return fill(argv[2], argv[3]);
  if (argc < 5) return usage();
  const std::string cmd = argv[1], dir = argv[2], fsname = argv[3];
  const long count = std::strtol(argv[4], nullptr, 10);
  rdb::Options options;
  if (!recovery_mode(argc > 5 ? argv[5] : nullptr, &options.wal_recovery_mode)) return usage();
  std::shared_ptr<rdb::FileSystem> fs;
  std::unique_ptr<rdb::Env> env;
  if (fsname != "default") {
    rdb::Status s = rdb::FileSystem::CreateFromString(rdb::ConfigOptions(), fsname, &fs);
    if (!s.ok()) {
      std::fprintf(stderr, "rocksdb_wal_driver: file system %s: %s\n", fsname.c_str(), s.ToString().c_str());
      return 2;
    }
    env = rdb::NewCompositeEnv(fs);
    options.env = env.get();
  }
  const bool noclose = cmd == "write-noclose";
  options.create_if_missing = cmd == "write" || noclose;
  rdb::DB* raw = nullptr;
  rdb::Status s = rdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    std::fprintf(stderr, "rocksdb_wal_driver: open %s: %s%s\n", dir.c_str(), s.ToString().c_str(),
                 s.IsNoSpace() ? " [nospace]" : "");
    return 3;
  }
  std::unique_ptr<rdb::DB> db(raw);
  if (cmd == "write" || noclose) {
    rdb::WriteOptions wo;
    wo.sync = true;
    // Continue after any keys a previous run left (so repeated cuts keep adding).
    const char* tag = std::getenv("RK_ACK_TAG");  // "ack TAG N" when several writers share a console
    long start = 0;
    std::string v;
    if (db->Get(rdb::ReadOptions(), "next", &v).ok()) start = std::strtol(v.c_str(), nullptr, 10);
    for (long i = start; count == 0 || i < start + count; ++i) {
      rdb::WriteBatch b;
      b.Put(key_of(i), value_of(i));
      b.Put("next", std::to_string(i + 1));
      s = db->Write(wo, &b);
      if (!s.ok()) {
        std::fprintf(stderr, "rocksdb_wal_driver: put %ld: %s%s\n", i, s.ToString().c_str(),
                     s.IsNoSpace()   ? " [nospace]"
                     : s.IsIOError() ? " [ioerror]"
                                     : "");
        return 4;
      }
      if (tag) std::printf("ack %s %ld\n", tag, i);
      else std::printf("ack %ld\n", i);
      std::fflush(stdout);
    }
    if (noclose) _exit(0);  // the WAL keeps its preallocated zero-filled window, as after a crash
    s = db->Close();
    if (!s.ok()) {
      std::fprintf(stderr, "rocksdb_wal_driver: close: %s\n", s.ToString().c_str());
      return 4;
    }
    return 0;
  }
  if (cmd == "verify") {
    // ACKED is the highest acknowledged key number + 1: keys 0..ACKED-1 must be there.
    long lost = 0, first_lost = -1;
    for (long i = 0; i < count; ++i) {
      std::string v;
      rdb::Status g = db->Get(rdb::ReadOptions(), key_of(i), &v);
      if (!g.ok() || v != value_of(i)) {
        if (first_lost < 0) first_lost = i;
        ++lost;
        if (!g.ok() && !g.IsNotFound())
          std::fprintf(stderr, "rocksdb_wal_driver: get %ld: %s\n", i, g.ToString().c_str());
      }
    }
    long present = 0;
    std::string nv;
    if (db->Get(rdb::ReadOptions(), "next", &nv).ok()) present = std::strtol(nv.c_str(), nullptr, 10);
    std::printf("verify acked=%ld lost=%ld first_lost=%ld present=%ld\n", count, lost, first_lost, present);
    (void)db->Close();
    return lost == 0 ? 0 : 1;
  }
  return usage();
}
