#!/usr/bin/env bash
# Builds and runs the consumer project outside the source tree.
# usage: run.sh <find_package|add_subdirectory|fetchcontent|pkg-config> <mapdirect-src> [cmake] [c++]
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
  *)
    echo "run.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
"$cmake_bin" --build "$work/build"
"$work/build/consumer" "$data"
