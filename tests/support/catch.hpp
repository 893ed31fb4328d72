// Selects Catch2 v3 or v2 (Debian 12 ships the v2 single header).
#pragma once
#if defined(MAPDIRECT_CATCH3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
