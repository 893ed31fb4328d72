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
  ctest -LE vm --output-on-failure --timeout 1800 | tee host-tests.log
  host_rc=${PIPESTATUS[0]}
  ctest -L vm -j2 --output-on-failure --timeout 1800 | tee vm-tests.log
  vm_rc=${PIPESTATUS[0]}
  set -e
  # One closing line for both runs, from ctest's own summaries.
  total=0 failed=0
  for f in host-tests.log vm-tests.log; do
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$f" | tail -n 1)
    n=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
    k=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/')
    total=$((total + ${n:-0})) failed=$((failed + ${k:-0}))
  done
  if [ $host_rc != 0 ] || [ $vm_rc != 0 ]; then
    [ "$failed" -gt 0 ] || failed=1
  fi
  echo "ctest: $((total - failed)) passed, $failed failed"
  [ $host_rc = 0 ] && [ $vm_rc = 0 ]
else
  ctest --output-on-failure --timeout 1800
fi
