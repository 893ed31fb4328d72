// SPDX-License-Identifier: MIT
// Umbrella header: everything in mapdirect's core (no liburing; see async.hpp).
//
//   #include <mapdirect/mapdirect.hpp>   // CMake: target_link_libraries(app mapdirect::mapdirect)
//   auto m = mapdirect::direct_mapping::open(path, options);
#ifndef MAPDIRECT_MAPDIRECT_HPP
#define MAPDIRECT_MAPDIRECT_HPP

#include "badblocks.hpp"
#include "config.hpp"
#include "error.hpp"
#include "file.hpp"
#include "guard.hpp"
#include "mapping.hpp"
#include "persist.hpp"
#include "probe.hpp"
#include "seal.hpp"

#endif  // MAPDIRECT_MAPDIRECT_HPP
