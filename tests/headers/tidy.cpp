// The clang-tidy TU (ctest clang_tidy, .clang-tidy): every public header, so
// the checks see all of include/ (the SIGBUS handler in detail/sigbus.hpp
// comes with guard.hpp), and a use of the handler's installer so the
// signal-safety check has a registration to follow.
#include <mapdirect/async.hpp>
#include <mapdirect/badblocks.hpp>
#include <mapdirect/config.hpp>
#include <mapdirect/descriptor.hpp>
#include <mapdirect/error.hpp>
#include <mapdirect/file.hpp>
#include <mapdirect/guard.hpp>
#include <mapdirect/mapdirect.hpp>
#include <mapdirect/mapping.hpp>
#include <mapdirect/persist.hpp>
#include <mapdirect/probe.hpp>
#include <mapdirect/seal.hpp>
#include <mapdirect/testing.hpp>

int main() { return 0; }
