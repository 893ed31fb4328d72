#!/usr/bin/env bash
# aarch64 portability check: cross-compiles every public header (one TU each),
# the unit tests (tests/unit + tests/support/main.cpp, and tests/direct as its
# own binary) and the examples with g++-aarch64-linux-gnu, statically, then
# runs the unit tests under qemu-aarch64 so the DC CVAC / DC CVAP path is
# compiled and executed. Exits 77 (skip) when the cross compiler or qemu-user
# is missing.
#
# usage: tests/cross/run.sh [workdir]
#   CROSS_CXX=aarch64-linux-gnu-g++   QEMU=qemu-aarch64   CROSS_JOBS=2
#   CROSS_DC_CVAP=0: qemu-user 7.2 advertises DCPOP but traps DC CVAP, so the
#   tests run with MAPDIRECT_AARCH64_DC_CVAP=0 (DC CVAC) unless set to 1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cxx=${CROSS_CXX:-aarch64-linux-gnu-g++}
qemu=${QEMU:-qemu-aarch64}
jobs=${CROSS_JOBS:-2}
dc_cvap=${CROSS_DC_CVAP:-0}

command -v "$cxx" >/dev/null || { echo "skipped: $cxx not installed (Debian g++-aarch64-linux-gnu)"; exit 77; }
command -v "$qemu" >/dev/null || { echo "skipped: $qemu not installed (Debian qemu-user)"; exit 77; }

work=${1:-}
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/mapdirect-cross.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/inc" "$work/obj" "$work/bin"

# Only Boost and Catch2 from the host: both header-only and architecture
# independent. Never -isystem /usr/include, which would mix the host's glibc
# headers into the aarch64 build.
boost_hdr=$(echo '#include <boost/version.hpp>' | g++ -x c++ -M - 2>/dev/null | tr ' ' '\n' | grep 'boost/version.hpp' | head -1)
[ -n "$boost_hdr" ] || { echo "skipped: Boost headers not found on the host"; exit 77; }
ln -sfn "$(dirname "$boost_hdr")" "$work/inc/boost"
catch_dir=""
for d in /usr/include/catch2 /usr/local/include/catch2; do [ -f "$d/catch.hpp" ] && catch_dir=$d && break; done

warn=(-Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Werror)
common=(-std=c++17 -O1 -g0 -pthread -I"$root/include" -isystem "$work/inc" "-DMAPDIRECT_AARCH64_DC_CVAP=$dc_cvap")
echo "cross compiler: $($cxx --version | head -1)"

compile() {  # compile <out.o> <src> [extra flags...]
  local out=$1 src=$2
  shift 2
  "$cxx" "${common[@]}" "${warn[@]}" "$@" -c "$src" -o "$out"
}
export -f compile
export cxx
export common_str="${common[*]}" warn_str="${warn[*]}"

# 1. Every public header on its own.
hdrs=$(cd "$root/include" && find mapdirect -name '*.hpp' | sort)
n=0
for h in $hdrs; do
  id=$(echo "$h" | tr '/.' '__')
  printf '#include <%s>\n#include <%s>\n' "$h" "$h" >"$work/obj/hdr_$id.cpp"
  n=$((n + 1))
done
ls "$work"/obj/hdr_*.cpp | xargs -P "$jobs" -I{} sh -c \
  '"$cxx" $common_str $warn_str -fsyntax-only "$1"' _ {}
echo "headers: $n compiled for aarch64"

# 2. Unit tests (and the emulated MAP_DIRECT tests) as static binaries.
run_tests=1
if [ -z "$catch_dir" ]; then
  echo "skipped part: Catch2 v2 header (catch2/catch.hpp) not found; unit tests not cross-built"
  run_tests=0
else
  ln -sfn "$catch_dir" "$work/inc/catch2"
  build_binary() {  # build_binary <name> <defines...> -- <sources...>
    local name=$1
    shift
    local defs=()
    while [ "$1" != "--" ]; do defs+=("$1"); shift; done
    shift
    local objs=()
    for src in "$@"; do
      local o="$work/obj/${name}_$(basename "$src" .cpp).o"
      objs+=("$o")
      echo "$src $o"
    done >"$work/obj/$name.list"
    # (no trailing blanks: xargs -L joins a line ending in one with the next)
    defs_str="${defs[*]:-}" xargs -P "$jobs" -L 1 sh -c \
      '"$cxx" $common_str $warn_str -I'"$root"'/tests/support $defs_str -c "$1" -o "$2"' _ <"$work/obj/$name.list"
    "$cxx" -static -pthread -o "$work/bin/$name" "${objs[@]}"
  }
  build_binary mapdirect_tests -- "$root"/tests/unit/*.cpp "$root/tests/support/main.cpp"
  if ls "$root"/tests/direct/*.cpp >/dev/null 2>&1; then
    build_binary mapdirect_tests_direct -DMAPDIRECT_MAP_DIRECT_FLAG=0x400000 -DMAPDIRECT_F_MAY_SEAL_IOMAP=1039 -- \
      "$root"/tests/direct/*.cpp "$root/tests/support/main.cpp"
  fi
  file "$work/bin/mapdirect_tests" | grep -q 'ARM aarch64' || { echo "not an aarch64 binary"; exit 1; }
fi

# 3. Examples (each directory's sources into one static binary; an example
# that needs liburing is compiled only, since there is no aarch64 liburing).
for dir in "$root"/examples/*/; do
  name=$(basename "$dir")
  srcs=("$dir"*.cpp)
  [ -e "${srcs[0]}" ] || continue
  if grep -q 'liburing\|mapdirect/async.hpp' "${srcs[@]}"; then
    for s in "${srcs[@]}"; do "$cxx" "${common[@]}" "${warn[@]}" -fsyntax-only "$s"; done
    echo "example $name: compiled (needs liburing, not linked)"
  else
    "$cxx" "${common[@]}" "${warn[@]}" -static -o "$work/bin/ex_$name" "${srcs[@]}"
    echo "example $name: built"
  fi
done

# 4. Run under qemu-aarch64.
export MAPDIRECT_TEST_DIR=${MAPDIRECT_TEST_DIR:-$work}
if [ -x "$work/bin/ex_mapdirect-info" ]; then
  "$qemu" "$work/bin/ex_mapdirect-info" "$MAPDIRECT_TEST_DIR" || { echo "mapdirect-info failed under qemu"; exit 1; }
fi
# Each test case runs in its own qemu process (a crash names its test).
# qemu-user is not a kernel: cases that need what it does not emulate are
# listed here with the reason and reported as skipped, never run.
qemu_limits=(
  "tmpfs gives shared mode with page granularity|qemu-user 7.2 rejects MAP_SHARED_VALIDATE with EINVAL where the kernel answers EOPNOTSUPP"
  "weakest = sync fails with mode_unavailable*|qemu-user 7.2 rejects MAP_SHARED_VALIDATE with EINVAL where the kernel answers EOPNOTSUPP"
  "media_error carries the poisoned range*|qemu-user 7.2 aborts (cpu == current_cpu) on a queued BUS_MCEERR_AR SIGBUS"
  "a SIGBUS outside any guard kills the process*|qemu-user 7.2 hangs on a forced SIGBUS while the handler is SIG_IGN"
)
qemu_limit_of() {
  local name=$1 entry
  for entry in "${qemu_limits[@]}"; do
    # shellcheck disable=SC2053
    [[ $name == ${entry%%|*} ]] && { echo "${entry#*|}"; return 0; }
  done
  return 1
}
failed=0 passed=0 skipped=0
if [ "$run_tests" = 1 ]; then
  for t in "$work"/bin/mapdirect_tests*; do
    echo "== $(basename "$t") under $qemu"
    mapfile -t cases < <("$qemu" "$t" --list-test-names-only | sed '/^$/d')
    for c in "${cases[@]}"; do
      if why=$(qemu_limit_of "$c"); then
        echo "skipped: $c ($why)"
        skipped=$((skipped + 1))
        continue
      fi
      # Catch2 test specs treat these characters specially; match them with *.
      spec=$(printf '%s' "$c" | sed 's/[],[\\~*"]/*/g')
      if out=$(timeout "${CROSS_TEST_TIMEOUT:-300}" "$qemu" "$t" "$spec" 2>&1); then
        passed=$((passed + 1))
      else
        echo "FAILED: $c"
        echo "$out" | tail -40
        failed=$((failed + 1))
      fi
    done
  done
  echo "aarch64 unit test cases: $passed passed, $failed failed, $skipped skipped (qemu-user limits)"
  [ "$failed" = 0 ] || exit 1
fi
echo "aarch64 portability check passed"
