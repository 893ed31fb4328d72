// The clang-tidy TU (ctest clang_tidy, .clang-tidy): every public header, so
// the checks see all of include/ (the SIGBUS handler, detail/sigbus.hpp,
// comes with guard.hpp). Only clang-tidy reads it; nothing builds it.
#if __has_include(<liburing.h>)  // async.hpp needs liburing (Debian: liburing-dev)
#include <mapdirect/async.hpp>
#endif
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
