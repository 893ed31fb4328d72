#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds every configuration
# (unit tests as C++17, C++20 and ASan+UBSan, the emulated MAP_DIRECT binary,
# header and -fno-exceptions checks, examples, benchmarks), then runs ctest:
# unit, examples, packaging consumers, the aarch64 cross check, and the QEMU
# emulated-pmem tier. Set MAPDIRECT_SKIP_VM=1 to leave the VM tier out when
# iterating locally (CI never does).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=deps.sh
. "$root/scripts/deps.sh"
mapdirect_install "${MAPDIRECT_BUILD_PACKAGES[@]}" "${MAPDIRECT_TEST_PACKAGES[@]}"
build="$root/build/tests"
vm=ON
if [ "${MAPDIRECT_SKIP_VM:-0}" = 1 ]; then
  vm=OFF
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPDIRECT_BUILD_TESTS=ON \
  -DMAPDIRECT_BUILD_EXAMPLES=ON -DMAPDIRECT_BUILD_BENCHMARKS=ON -DMAPDIRECT_VM_TESTS="$vm" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
if [ "$vm" = ON ]; then
  # Everything but the VM tier first, then the tier's QEMU guests two at a
  # time (each is single-threaded TCG); one summary covers both runs.
  set +e
  ctest -LE vm --output-on-failure --timeout 1800
  host_rc=$?
  ctest -L vm -j2 --output-on-failure --timeout 1800
  vm_rc=$?
  set -e
  echo "host tests: $([ $host_rc = 0 ] && echo passed || echo FAILED); vm tier: $([ $vm_rc = 0 ] && echo passed || echo FAILED)"
  [ $host_rc = 0 ] && [ $vm_rc = 0 ]
else
  ctest --output-on-failure --timeout 1800
fi
