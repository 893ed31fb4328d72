#!/usr/bin/env bash
# ctest clang_tidy: clang-tidy (.clang-tidy at the root) over tidy.cpp, which
# includes every public header; any warning fails. Exits 77 (skipped) when
# clang-tidy is not installed. Extra compiler arguments may follow.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tidy=""
for c in "${CLANG_TIDY:-}" clang-tidy-14 clang-tidy; do
  if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then tidy=$c; break; fi
done
if [ -z "$tidy" ]; then
  echo "skipped: clang-tidy not found (Debian: clang-tidy)"
  exit 77
fi
"$tidy" --version | sed -n 's/^ *//; /version/p'
# --quiet leaves only the findings; the config sets WarningsAsErrors: '*'.
"$tidy" --quiet --config-file="$root/.clang-tidy" "$root/tests/headers/tidy.cpp" -- \
  -std=c++17 -I"$root/include" "$@"
echo "clang-tidy: no findings"
