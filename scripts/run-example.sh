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
# A private directory with an unpredictable name (mktemp -d: mode 0700): in a
# shared directory such as /var/tmp a fixed name could be a planted symlink.
work="$(mktemp -d "$dir/mapdirect-demo.XXXXXXXX")"
trap 'rm -rf -- "$work"' EXIT
log="$work/demo.log"
echo "== What mapdirect gives in $dir"
"$build/examples/mapdirect-info/mapdirect-info" "$dir"
echo "== durable_log: append 1000 checksummed records, then recover"
"$build/examples/durable_log/durable_log" write "$log" --size 4M --count 1000 --group 8
"$build/examples/durable_log/durable_log" verify "$log" --expect-last 1000
