// SPDX-License-Identifier: MIT
// Umbrella header: everything in mapdirect's core (no liburing; see async.hpp).
//
//   #include <mapdirect/mapdirect.hpp>   // CMake: target_link_libraries(app mapdirect::mapdirect)
//   auto m = mapdirect::direct_mapping::open(path, options);
#ifndef MAPDIRECT_MAPDIRECT_HPP
#define MAPDIRECT_MAPDIRECT_HPP

#include "config.hpp"
#include "error.hpp"
#include "persist.hpp"
#include "guard.hpp"
#include "seal.hpp"
#include "file.hpp"
#include "mapping.hpp"
#include "probe.hpp"
#include "badblocks.hpp"

#endif  // MAPDIRECT_MAPDIRECT_HPP
