// direct_mapping on real files of this host, and every kernel answer through the seam.
#include "catch.hpp"
#include "refusals.hpp"
#include "rollback_check.hpp"
#include "test_support.hpp"

#include <mapdirect/mapdirect.hpp>

#include <cstring>
#include <string>
#include <vector>

using namespace mapdirect;
using mdtest::temp_file;

namespace {
std::string host_expectation(const char* var, const char* fallback) {
  auto v = mdtest::expected(var);
  return v ? *v : std::string(fallback);
}

// What a file in the test directory must give: the VM tier states it; on an
// ordinary disk or tmpfs (no DAX) it is shared/page.
std::string expected_mode() { return host_expectation("MAPDIRECT_EXPECT_MODE", "shared"); }
std::string expected_granularity() { return host_expectation("MAPDIRECT_EXPECT_GRANULARITY", "page"); }

}  // namespace

TEST_CASE("map, write, persist, reopen and read back on the test directory's file system", "[mapping]") {
  temp_file f(mdtest::test_dir(), 3 * 4096);
  const std::string text = "durable bytes at an odd offset";
  {
    auto m = direct_mapping::map(f.fd(), 0, 3 * 4096);
    REQUIRE(m);
    CHECK(to_string(m.value().mode()) == expected_mode());
    CHECK(to_string(m.value().store_granularity()) == expected_granularity());
    CHECK(m.value().size() == 3 * 4096);
    std::memcpy(m.value().data() + 4000, text.data(), text.size());  // straddles a page boundary
    REQUIRE(m.value().persist(4000, text.size()));
    REQUIRE(m.value().close());
  }
  CHECK(f.read_all().substr(4000, text.size()) == text);
  auto again = direct_mapping::open(f.path());
  REQUIRE(again);
  CHECK(std::memcmp(again.value().data() + 4000, text.data(), text.size()) == 0);
}

TEST_CASE("tmpfs gives shared mode with page granularity", "[mapping]") {
  if (::access("/dev/shm", W_OK) != 0) {
    WARN("skipped: /dev/shm (tmpfs) is not writable here");
    return;
  }
  temp_file f("/dev/shm", 4096);
  auto m = direct_mapping::map(f.fd(), 0, 4096);
  REQUIRE(m);
  CHECK(m.value().mode() == map_mode::shared);
  CHECK(m.value().store_granularity() == granularity::page);
  // tmpfs accepts MAP_SHARED|MAP_SYNC silently; we never probe that way, so
  // the sync rung must have been refused by MAP_SHARED_VALIDATE.
  const auto& ladder = m.value().ladder();
  REQUIRE(ladder.count >= 2);
  CHECK(ladder.steps[1].mode == map_mode::sync);
  CHECK(ladder.steps[1].error == EOPNOTSUPP);
}

TEST_CASE("weakest = sync fails with mode_unavailable naming the cause when the host has no MAP_SYNC", "[mapping]") {
  temp_file f(mdtest::test_dir(), 4096);
  map_options o;
  o.weakest = map_mode::sync;
  mdtest::recording_interposer tracker;  // checks that everything mapped is unmapped
  mapdirect::scoped_syscall_interposer tracking(tracker);
  auto m = direct_mapping::map(f.fd(), 0, 4096, o);
  if (expected_mode() != "shared") {
    REQUIRE(m);
    CHECK(to_string(m.value().mode()) == expected_mode());
    return;
  }
  REQUIRE_FALSE(m);
  CHECK(m.error() == errc::mode_unavailable);
  CHECK(m.error() == std::errc::operation_not_supported);
  const std::string detail = last_error_detail();
  INFO(detail);
  CHECK(detail.find("sync: EOPNOTSUPP") != std::string::npos);
  CHECK(detail.find("direct: skipped") != std::string::npos);
  // The cause names why: statx reports DAX off on ext4/tmpfs of a 5.10+ kernel.
  CHECK((detail.find("not on a DAX file system (statx DAX=0)") != std::string::npos ||
         detail.find("without synchronous faults") != std::string::npos ||
         detail.find("DAX state unknown") != std::string::npos));
  CHECK(tracker.bytes_still_mapped() == 0);
  CHECK_FALSE(mdtest::path_is_mapped(f.path()));
}

TEST_CASE("bad input gets a clear error and changes nothing", "[mapping]") {
  temp_file f(mdtest::test_dir(), 8192);
  mdtest::recording_interposer tracker;  // checks that everything mapped is unmapped
  mapdirect::scoped_syscall_interposer tracking(tracker);

  SECTION("offset not page-aligned") {
    auto m = direct_mapping::map(f.fd(), 100, 4096);
    REQUIRE_FALSE(m);
    CHECK(m.error() == errc::misaligned_offset);
    CHECK(m.error() == std::errc::invalid_argument);
    CHECK(std::string(last_error_detail()).find("100") != std::string::npos);
  }
  SECTION("length past EOF is refused before any mapping, so no SIGBUS can follow") {
    auto m = direct_mapping::map(f.fd(), 4096, 8192);
    REQUIRE_FALSE(m);
    CHECK(m.error() == errc::beyond_eof);
    CHECK(std::string(last_error_detail()).find("past end of file") != std::string::npos);
  }
  SECTION("offset at EOF with length 0") {
    auto m = direct_mapping::map(f.fd(), 8192, 0);
    REQUIRE_FALSE(m);
    CHECK(m.error() == errc::beyond_eof);
  }
  SECTION("strongest weaker than weakest") {
    map_options o;
    o.strongest = map_mode::shared;
    o.weakest = map_mode::sync;
    auto m = direct_mapping::map(f.fd(), 0, 4096, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == errc::invalid_argument);
  }
  SECTION("bad fd") {
    // A negative descriptor is refused before any call: errc::invalid_argument, named in the detail.
    auto m = direct_mapping::map(-1, 0, 4096);
    REQUIRE_FALSE(m);
    CHECK(m.error() == make_error_code(errc::invalid_argument));
    CHECK(std::string(last_error_detail()).find("negative file descriptor -1") != std::string::npos);
    // A closed descriptor: the kernel's EBADF, as a system error.
    const int closed = ::dup(f.fd());
    REQUIRE(closed >= 0);
    REQUIRE(::close(closed) == 0);
    auto m2 = direct_mapping::map(closed, 0, 4096);
    REQUIRE_FALSE(m2);
    CHECK(m2.error() == std::error_code(EBADF, std::system_category()));
    CHECK(std::string(last_error_detail()).find("(errno " + std::to_string(EBADF) + ")") != std::string::npos);
    CHECK(tracker.mmaps.empty());  // refused before mapping anything
  }
  SECTION("read-only fd: EACCES is a real error, not a fallback") {
    const int ro = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(ro >= 0);
    auto m = direct_mapping::map(ro, 0, 4096);
    ::close(ro);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::permission_denied);
    CHECK(std::string(last_error_detail()).find("EACCES") != std::string::npos);
  }
  SECTION("a directory") {
    const int d = ::open(mdtest::test_dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    auto m = direct_mapping::map(d, 0, 4096);
    ::close(d);
    REQUIRE_FALSE(m);
    CHECK(m.error() == errc::invalid_argument);
  }
  CHECK(tracker.bytes_still_mapped() == 0);
  CHECK(f.size() == 8192);
}

TEST_CASE("length 0 maps to the end of the file; offsets are honoured", "[mapping]") {
  temp_file f(mdtest::test_dir(), 3 * 4096);
  const char mark[] = "third page";
  REQUIRE(::pwrite(f.fd(), mark, sizeof mark, 2 * 4096) == static_cast<ssize_t>(sizeof mark));
  auto m = direct_mapping::map(f.fd(), 4096, 0);
  REQUIRE(m);
  CHECK(m.value().size() == 2 * 4096);
  CHECK(m.value().file_offset() == 4096);
  CHECK(std::memcmp(m.value().data() + 4096, mark, sizeof mark) == 0);
}

TEST_CASE("moves, self-move, double close and destructor after close", "[mapping]") {
  temp_file f(mdtest::test_dir(), 4096);
  auto r = direct_mapping::map(f.fd(), 0, 4096);
  REQUIRE(r);
  direct_mapping a = std::move(r.value());
  std::byte* p = a.data();
  REQUIRE(p != nullptr);
  direct_mapping b(std::move(a));
  CHECK(a.data() == nullptr);
  CHECK(a.size() == 0);
  CHECK_FALSE(a);
  CHECK(b.data() == p);
  auto& self = b;
  b = std::move(self);
  CHECK(b.data() == p);
  CHECK(b.size() == 4096);
  // A moved-from object reports not_mapped rather than touching memory.
  auto pe = a.persist(0, 1);
  REQUIRE_FALSE(pe);
  CHECK(pe.error() == errc::not_mapped);
  const int dup_fd = b.native_handle();
  CHECK(dup_fd != f.fd());
  REQUIRE(b.close());
  CHECK(::fcntl(dup_fd, F_GETFD) == -1);  // the duplicate is closed
  CHECK(b.close());                       // second close: a no-op
  CHECK_FALSE(mdtest::path_is_mapped(f.path()));
  direct_mapping c;
  CHECK(c.close());
  c = std::move(b);
  CHECK_FALSE(c);
}

TEST_CASE("the caller may close its fd after map()", "[mapping]") {
  temp_file f(mdtest::test_dir(), 4096);
  const int fd = ::open(f.path().c_str(), O_RDWR | O_CLOEXEC);
  auto m = direct_mapping::map(fd, 0, 4096);
  ::close(fd);
  REQUIRE(m);
  REQUIRE(m.value().copy_persist(10, "abc", 3));
  CHECK(f.read_all().substr(10, 3) == "abc");
}

TEST_CASE("open(): create, exclusive, grow, and rollback on failure", "[mapping]") {
  const std::string path = mdtest::private_dir() + "/mapdirect-open";
  ::unlink(path.c_str());
  open_options o;
  o.create = true;
  o.size = 3 * 4096 + 100;
  {
    auto m = direct_mapping::open(path, o);
    REQUIRE(m);
    CHECK(m.value().size() == 3 * 4096 + 100);
    REQUIRE(m.value().fill_persist(0, 0x5a, m.value().size()));
  }
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(st.st_size == 3 * 4096 + 100);

  SECTION("exclusive refuses an existing file and leaves it alone") {
    o.exclusive = true;
    auto m = direct_mapping::open(path, o);
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::file_exists);
  }
  SECTION("a larger size without grow is refused and the file keeps its size") {
    open_options g;
    g.size = 8 * 4096;
    auto m = direct_mapping::open(path, g);
    REQUIRE_FALSE(m);
    CHECK(m.error() == errc::beyond_eof);
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(st.st_size == 3 * 4096 + 100);
  }
  SECTION("grow extends and preserves the data") {
    open_options g;
    g.size = 8 * 4096;
    g.grow = true;
    auto m = direct_mapping::open(path, g);
    REQUIRE(m);
    CHECK(m.value().size() == 8 * 4096);
    CHECK(static_cast<int>(m.value().data()[3 * 4096 + 99]) == 0x5a);
    CHECK(static_cast<int>(m.value().data()[3 * 4096 + 100]) == 0);
  }
  SECTION("a failed map after growing keeps the new size (never shrinks: others may map it)") {
    // The map is made to fail on every host (the seam refuses every file
    // mmap), so the rollback is checked everywhere, DAX hosts included.
    const mdtest::rollback_witness before;
    open_options g;
    g.size = 8 * 4096;
    g.grow = true;
    mdtest::recording_interposer refuse;
    refuse.on_file_mmap = [](int) { return ENOMEM; };
    {
      mapdirect::scoped_syscall_interposer scope(refuse);
      auto m = direct_mapping::open(path, g);
      REQUIRE_FALSE(m);
      CHECK(m.error() == std::error_code(ENOMEM, std::system_category()));
    }
    CHECK_FALSE(refuse.mmaps.empty());  // the failure came from the map, after the growth
    before.check_nothing_left(refuse, path);
    mdtest::check_file_holds(path,
                             std::string(3 * 4096 + 100, '\x5a') + std::string(8 * 4096 - (3 * 4096 + 100), '\0'));
  }
  SECTION("a growth whose fallocate fails part way leaves the size unchanged") {
    // ext4 raises i_size as fallocate allocates: an ENOSPC part way leaves
    // the file larger unless open() puts the size back (extend_file does).
    struct partial_fallocate : mapdirect::syscall_interposer {
      int calls = 0;
      int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
        if (mode != 0) return ::fallocate(fd, mode, off, len);
        ++calls;
        if (::ftruncate(fd, off + len / 2) != 0) return -1;
        errno = ENOSPC;
        return -1;
      }
    } partial;
    open_options g;
    g.size = 8 * 4096;
    g.grow = true;
    {
      mapdirect::scoped_syscall_interposer scope(partial);
      auto m = direct_mapping::open(path, g);
      REQUIRE_FALSE(m);
      CHECK(m.error() == std::error_code(ENOSPC, std::system_category()));
      CHECK(std::string(mapdirect::last_error_detail()).find("size is restored to 12388") != std::string::npos);
    }
    CHECK(partial.calls == 1);
    mdtest::check_file_holds(path, std::string(3 * 4096 + 100, '\x5a'));
  }
  SECTION("a growth whose size cannot be put back says so, with the size the file has") {
    // As above, and the shrinking ftruncate fails too (EIO): the detail must
    // not claim the size is unchanged or restored.
    struct partial_fallocate : mapdirect::syscall_interposer {
      int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
        if (mode != 0) return ::fallocate(fd, mode, off, len);
        if (::ftruncate(fd, off + len / 2) != 0) return -1;
        errno = ENOSPC;
        return -1;
      }
    };
    mdtest::no_shrink<partial_fallocate> refuse;
    open_options g;
    g.size = 8 * 4096;
    g.grow = true;
    std::string detail;
    {
      mapdirect::scoped_syscall_interposer scope(refuse);
      auto m = direct_mapping::open(path, g);
      REQUIRE_FALSE(m);
      CHECK(m.error() == std::error_code(ENOSPC, std::system_category()));
      detail = mapdirect::last_error_detail();
    }
    INFO(detail);
    REQUIRE(::stat(path.c_str(), &st) == 0);
    const off_t grown = (3 * 4096 + 100) + (8 * 4096 - (3 * 4096 + 100)) / 2;
    REQUIRE(st.st_size == grown);  // the restore really failed
    CHECK(detail.find("unchanged") == std::string::npos);
    CHECK(detail.find("is restored") == std::string::npos);
    CHECK(detail.find("restoring the file's size to 12388 failed with EIO: it is " + std::to_string(grown) +
                      " bytes now") != std::string::npos);
  }
  SECTION("a growth that fails before changing the size says it is unchanged") {
    struct no_space : mapdirect::syscall_interposer {
      int fallocate(int fd, int mode, off_t off, off_t len) noexcept override {
        if (mode != 0) return ::fallocate(fd, mode, off, len);
        errno = ENOSPC;
        return -1;
      }
    } refuse;
    open_options g;
    g.size = 8 * 4096;
    g.grow = true;
    {
      mapdirect::scoped_syscall_interposer scope(refuse);
      auto m = direct_mapping::open(path, g);
      REQUIRE_FALSE(m);
      CHECK(m.error() == std::error_code(ENOSPC, std::system_category()));
      CHECK(std::string(mapdirect::last_error_detail()).find("size is unchanged (12388)") != std::string::npos);
    }
    mdtest::check_file_holds(path, std::string(3 * 4096 + 100, '\x5a'));
  }
  SECTION("a failed map removes a file open() created") {
    const std::string fresh = path + ".fresh";
    const mdtest::rollback_witness before(mdtest::private_dir());  // no stray temporary name either
    open_options g;
    g.create = true;
    g.size = 4096;
    bool created = true;
    g.created = &created;
    mdtest::recording_interposer refuse;
    refuse.on_file_mmap = [](int) { return ENOMEM; };
    {
      mapdirect::scoped_syscall_interposer scope(refuse);
      auto m = direct_mapping::open(fresh, g);
      REQUIRE_FALSE(m);
      CHECK(m.error() == std::error_code(ENOMEM, std::system_category()));
    }
    CHECK_FALSE(refuse.mmaps.empty());
    CHECK_FALSE(created);
    CHECK(::access(fresh.c_str(), F_OK) != 0);
    before.check_nothing_left(refuse, fresh);
    ::unlink(fresh.c_str());
  }
  SECTION("a failed map removes a file created by name (no O_TMPFILE)") {
    const std::string fresh = path + ".byname";
    const mdtest::rollback_witness before(mdtest::private_dir());  // no stray temporary name either
    open_options g;
    g.create = true;
    g.size = 4096;
    bool created = true;
    g.created = &created;
    mdtest::no_tmpfile<mdtest::recording_interposer> refuse;
    refuse.on_file_mmap = [](int) { return ENOMEM; };
    {
      mapdirect::scoped_syscall_interposer scope(refuse);
      auto m = direct_mapping::open(fresh, g);
      REQUIRE_FALSE(m);
      CHECK(m.error() == std::error_code(ENOMEM, std::system_category()));
      CHECK(std::string(last_error_detail()).find("it was removed again") != std::string::npos);
    }
    CHECK(refuse.tmpfile_refusals >= 1);
    CHECK_FALSE(created);
    CHECK(::access(fresh.c_str(), F_OK) != 0);
    before.check_nothing_left(refuse, fresh);
    ::unlink(fresh.c_str());
  }
  SECTION("granularity refused after mapping: the created file is removed and nothing stays mapped") {
    const std::string fresh = path + ".fresh";
    const mdtest::rollback_witness before(mdtest::private_dir());
    open_options g;
    g.create = true;
    g.size = 4096;
    g.map.coarsest = granularity::byte;
    g.map.domain = persistence_domain::memory_controller;  // never byte, on any host
    mdtest::recording_interposer tracker;
    {
      mapdirect::scoped_syscall_interposer scope(tracker);
      auto m = direct_mapping::open(fresh, g);
      REQUIRE_FALSE(m);
      CHECK(m.error() == make_error_code(errc::granularity_unavailable));
    }
    CHECK(::access(fresh.c_str(), F_OK) != 0);
    before.check_nothing_left(tracker, fresh);
    ::unlink(fresh.c_str());
  }
  SECTION("missing file without create") {
    auto m = direct_mapping::open(path + ".missing");
    REQUIRE_FALSE(m);
    CHECK(m.error() == std::errc::no_such_file_or_directory);
  }
  ::unlink(path.c_str());
}

TEST_CASE("large mappings are 2 MiB aligned", "[mapping]") {
  temp_file f(mdtest::test_dir(), 4u << 20);
  mdtest::recording_interposer tracker;  // checks that everything mapped is unmapped
  mapdirect::scoped_syscall_interposer tracking(tracker);
  {
    auto m = direct_mapping::map(f.fd(), 0, 4u << 20);
    REQUIRE(m);
    CHECK(reinterpret_cast<std::uintptr_t>(m.value().data()) % (2u << 20) == 0);
    m.value().data()[(4u << 20) - 1] = std::byte{1};
    REQUIRE(m.value().persist((4u << 20) - 1, 1));
  }
  CHECK(tracker.bytes_still_mapped() == 0);  // the reservation's slack is gone too
}

TEST_CASE("persist/flush/drain/copy_persist range checks", "[mapping]") {
  temp_file f(mdtest::test_dir(), 4096);
  auto r = direct_mapping::map(f.fd(), 0, 4096);
  REQUIRE(r);
  auto& m = r.value();
  CHECK(m.persist(0, 4096));
  CHECK(m.persist(4096, 0));
  CHECK(m.persist(4095, 2).error() == errc::out_of_range);
  CHECK(m.persist(5000, 0).error() == errc::out_of_range);
  CHECK(m.persist(1, SIZE_MAX).error() == errc::out_of_range);
  char buf[8] = "x";
  CHECK(m.copy_persist(4090, buf, 8).error() == errc::out_of_range);
  CHECK(m.fill_persist(4097, 0, 0).error() == errc::out_of_range);
  m.flush(4000, 1000);  // clamped, no crash
  m.flush(9000, 10);
  CHECK(m.drain());
}

TEST_CASE("open() refuses to grow a file while this process holds a seal on it", "[mapping][seal]") {
  temp_file f(mdtest::test_dir(), 8192);
  auto seal = iomap_seal::acquire(f.fd(), 0, 8192);
  if (!seal && seal.error() == errc::block_map_unverifiable) {
    WARN("skipped: the test directory's file system has no FIEMAP, so no stabilised seal: " << last_error_detail());
    return;
  }
  REQUIRE(seal);
  open_options g;
  g.size = 4 * 4096;
  g.grow = true;
  auto m = direct_mapping::open(f.path(), g);
  REQUIRE_FALSE(m);
  CHECK(m.error() == errc::sealed);
  CHECK(m.error() == std::errc::text_file_busy);
  CHECK(f.size() == 8192);
  REQUIRE(seal.value().release());
  auto again = direct_mapping::open(f.path(), g);
  REQUIRE(again);
  CHECK(f.size() == 4 * 4096);
}

TEST_CASE("every errc has a message and compares equal to its documented std::errc", "[error]") {
  struct {
    errc code;
    std::errc condition;
  } const table[] = {
      {errc::mode_unavailable, std::errc::operation_not_supported},
      {errc::granularity_unavailable, std::errc::operation_not_supported},
      {errc::sealed, std::errc::text_file_busy},
      {errc::beyond_eof, std::errc::result_out_of_range},
      {errc::media_error, std::errc::io_error},
      {errc::io_error, std::errc::io_error},
      {errc::misaligned_offset, std::errc::invalid_argument},
      {errc::out_of_range, std::errc::result_out_of_range},
      {errc::not_mapped, std::errc::bad_file_descriptor},
      {errc::empty_object, std::errc::bad_file_descriptor},
      {errc::invalid_argument, std::errc::invalid_argument},
      {errc::block_map_unverifiable, std::errc::operation_not_supported},
      {errc::block_map_unstable, std::errc::no_space_on_device},
      {errc::lease_broken, std::errc::resource_unavailable_try_again},
      {errc::durability_lost, std::errc::io_error},
  };
  for (const auto& row : table) {
    const std::error_code ec = row.code;  // implicit: is_error_code_enum
    INFO(ec.message());
    CHECK(ec.category() == mapdirect::error_category());
    CHECK(std::string(ec.category().name()) == "mapdirect");
    CHECK(ec.message().find("unknown") == std::string::npos);
    CHECK(ec == row.condition);
    CHECK(ec != std::errc::not_a_directory);
  }
  CHECK(std::error_code(99, mapdirect::error_category()).message() == "unknown mapdirect error");
}
