#!/usr/bin/env bash
# Builds and runs the consumer project outside the source tree.
# usage: run.sh <mode> <mapdirect-src> [cmake] [c++]
# modes: find_package, add_subdirectory, fetchcontent, pkg-config (a consumer
# builds and runs); uring-absent (find_package(... COMPONENTS uring) against an
# install without it must fail and say why); uring-required (MAPDIRECT_WITH_URING=ON
# where liburing cannot be found must fail configuring); tools (mapdirect-info
# installed as bin/mapdirect-info, built with the examples off; a configure +
# install with nothing built installs headers and package files only).
set -euo pipefail
mode=$1
src=$(cd "$2" && pwd)
cmake_bin=${3:-cmake}
cxx=${4:-c++}
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/mapdirect-consumer-$mode.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$here/project" "$work/project"
data=${MAPDIRECT_TEST_DIR:-$work}

install_mapdirect() {
  "$cmake_bin" -S "$src" -B "$work/mapdirect-build" -DCMAKE_INSTALL_PREFIX="$work/prefix" \
    -DCMAKE_CXX_COMPILER="$cxx" -DMAPDIRECT_BUILD_TESTS=OFF -DMAPDIRECT_BUILD_EXAMPLES=OFF >/dev/null
  "$cmake_bin" --install "$work/mapdirect-build" >/dev/null
  test -f "$work/prefix/share/cmake/mapdirect/mapdirectConfigVersion.cmake"
  test -f "$work/prefix/include/mapdirect/mapdirect.hpp"
}

case $mode in
  find_package)
    install_mapdirect
    "$cmake_bin" -S "$work/project" -B "$work/build" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCONSUMER_MODE=find_package -DCMAKE_PREFIX_PATH="$work/prefix"
    # The Conan test_package's consumer builds and runs against the same
    # package (its CMake side is what CMakeDeps' mapdirect::mapdirect gives).
    "$cmake_bin" -S "$src/test_package" -B "$work/test_package" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
    "$cmake_bin" --build "$work/test_package" >/dev/null
    "$work/test_package/test_package"
    ;;
  add_subdirectory | fetchcontent)
    "$cmake_bin" -S "$work/project" -B "$work/build" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCONSUMER_MODE="$mode" -DMAPDIRECT_SOURCE_DIR="$src"
    ;;
  pkg-config)
    command -v pkg-config >/dev/null || { echo "skipped: pkg-config is not installed"; exit 77; }
    install_mapdirect
    export PKG_CONFIG_PATH="$work/prefix/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    flags=$(pkg-config --cflags --libs "mapdirect >= 0.1")
    echo "pkg-config: $flags"
    # shellcheck disable=SC2086
    "$cxx" -std=c++17 -o "$work/consumer" "$work/project/main.cpp" $flags
    "$work/consumer" "$data"
    exit 0
    ;;
  uring-absent)
    "$cmake_bin" -S "$src" -B "$work/mapdirect-build" -DCMAKE_INSTALL_PREFIX="$work/prefix" \
      -DCMAKE_CXX_COMPILER="$cxx" -DMAPDIRECT_BUILD_TESTS=OFF -DMAPDIRECT_BUILD_EXAMPLES=OFF \
      -DMAPDIRECT_WITH_URING=OFF >/dev/null
    "$cmake_bin" --install "$work/mapdirect-build" >/dev/null
    test ! -e "$work/prefix/share/cmake/mapdirect/mapdirectUringTargets.cmake"
    mkdir -p "$work/need-uring"
    printf '%s\n' 'cmake_minimum_required(VERSION 3.16)' 'project(need_uring LANGUAGES CXX)' \
      'find_package(mapdirect 0.1 CONFIG REQUIRED COMPONENTS uring)' > "$work/need-uring/CMakeLists.txt"
    if "$cmake_bin" -S "$work/need-uring" -B "$work/need-uring/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
         >"$work/out.txt" 2>&1; then
      echo "FAIL: find_package(mapdirect COMPONENTS uring) succeeded against an install without it"; exit 1
    fi
    cat "$work/out.txt"
    # (CMake wraps the message: compare with the line breaks folded)
    grep -q "component uring: this mapdirect was installed without mapdirect::uring (MAPDIRECT_WITH_URING=OFF)" \
      <<<"$(tr -s ' \n' ' ' <"$work/out.txt")" \
      || { echo "FAIL: no reason given"; exit 1; }
    # Without COMPONENTS the same install is found (core only).
    printf '%s\n' 'cmake_minimum_required(VERSION 3.16)' 'project(core LANGUAGES CXX)' \
      'find_package(mapdirect 0.1 CONFIG REQUIRED)' 'if(TARGET mapdirect::uring)' \
      '  message(FATAL_ERROR "uring target without uring")' 'endif()' > "$work/need-uring/CMakeLists.txt"
    "$cmake_bin" -S "$work/need-uring" -B "$work/need-uring/build2" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
    # SameMinorVersion while the major version is 0: 0.1 is found, 0.0 and 0.2 are not.
    printf '%s\n' 'cmake_minimum_required(VERSION 3.16)' 'project(v LANGUAGES CXX)' \
      'find_package(mapdirect 0.2 CONFIG QUIET)' 'if(mapdirect_FOUND)' '  message(FATAL_ERROR "0.2 accepted")' \
      'endif()' 'find_package(mapdirect 0.0 CONFIG QUIET)' 'if(mapdirect_FOUND)' \
      '  message(FATAL_ERROR "0.0 accepted")' 'endif()' > "$work/need-uring/CMakeLists.txt"
    "$cmake_bin" -S "$work/need-uring" -B "$work/need-uring/build3" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
    echo "uring-absent: refused with its reason; core found; 0.0 and 0.2 rejected"
    exit 0
    ;;
  uring-required)
    # pkg-config that finds nothing: liburing is "not installed".
    if PKG_CONFIG_LIBDIR="$work/empty" PKG_CONFIG_PATH= "$cmake_bin" -S "$src" -B "$work/mapdirect-build" \
         -DCMAKE_CXX_COMPILER="$cxx" -DMAPDIRECT_BUILD_TESTS=OFF -DMAPDIRECT_BUILD_EXAMPLES=OFF \
         -DMAPDIRECT_WITH_URING=ON >"$work/out.txt" 2>&1; then
      echo "FAIL: MAPDIRECT_WITH_URING=ON configured without liburing"; cat "$work/out.txt"; exit 1
    fi
    grep -q "MAPDIRECT_WITH_URING=ON but liburing >= 2.3 not found" <<<"$(tr -s ' \n' ' ' <"$work/out.txt")" || {
      echo "FAIL: no reason given"; cat "$work/out.txt"; exit 1; }
    # AUTO says so and goes on.
    PKG_CONFIG_LIBDIR="$work/empty" PKG_CONFIG_PATH= "$cmake_bin" -S "$src" -B "$work/auto-build" \
      -DCMAKE_CXX_COMPILER="$cxx" -DMAPDIRECT_BUILD_TESTS=OFF -DMAPDIRECT_BUILD_EXAMPLES=OFF >"$work/out2.txt" 2>&1
    grep -q "mapdirect::uring: no, liburing >= 2.3 not found" "$work/out2.txt" || {
      echo "FAIL: AUTO did not say why uring is off"; cat "$work/out2.txt"; exit 1; }
    echo "uring-required: refused with its reason; AUTO reports it"
    exit 0
    ;;
  tools)
    "$cmake_bin" -S "$src" -B "$work/plain" -DCMAKE_INSTALL_PREFIX="$work/plain-prefix" \
      -DCMAKE_CXX_COMPILER="$cxx" -DMAPDIRECT_BUILD_TESTS=OFF >/dev/null
    "$cmake_bin" --install "$work/plain" >/dev/null
    test -f "$work/plain-prefix/include/mapdirect/mapdirect.hpp"
    test -f "$work/plain-prefix/share/doc/mapdirect/LICENSE"
    test ! -e "$work/plain-prefix/bin/mapdirect-info"
    "$cmake_bin" -S "$src" -B "$work/mapdirect-build" -DCMAKE_INSTALL_PREFIX="$work/prefix" \
      -DCMAKE_CXX_COMPILER="$cxx" -DMAPDIRECT_BUILD_TESTS=OFF -DMAPDIRECT_BUILD_EXAMPLES=OFF \
      -DMAPDIRECT_INSTALL_TOOLS=ON >/dev/null
    "$cmake_bin" --build "$work/mapdirect-build" --target mapdirect-info >/dev/null
    "$cmake_bin" --install "$work/mapdirect-build" >/dev/null
    "$work/prefix/bin/mapdirect-info" --version | grep -q "^mapdirect-info (mapdirect examples) "
    "$work/prefix/bin/mapdirect-info" --json "$data" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["schema"]=="mapdirect-info/1"'
    echo "tools: bin/mapdirect-info installed and runs; a configure + install installs no tool"
    exit 0
    ;;
  *)
    echo "run.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
"$cmake_bin" --build "$work/build"
"$work/build/consumer" "$data"
