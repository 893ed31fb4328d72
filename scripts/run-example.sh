#!/usr/bin/env bash
# Quick start: installs what is missing, builds mapdirect's examples and runs
# the main one, durable_log, on a file in $MAPDIRECT_DEMO_DIR (default /var/tmp).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=deps.sh
. "$root/scripts/deps.sh"
mapdirect_install "${MAPDIRECT_BUILD_PACKAGES[@]}"
build="$root/build/example"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAPDIRECT_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target durable_log mapdirect-info
dir="${MAPDIRECT_DEMO_DIR:-/var/tmp}"
log="$dir/mapdirect-demo.log"
echo "== What mapdirect gives in $dir"
"$build/examples/mapdirect-info/mapdirect-info" "$dir"
echo "== durable_log: append 1000 checksummed records, then recover"
rm -f "$log"
"$build/examples/durable_log/durable_log" write "$log" --size 4M --count 1000 --group 8
"$build/examples/durable_log/durable_log" verify "$log" --expect-last 1000
rm -f "$log"
