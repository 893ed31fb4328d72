#!/usr/bin/env bash
# Fails, listing them, if any C++ file under include/ tests/ examples/
# test_package/ is not formatted per .clang-format. Exits 77 (ctest: skipped)
# when clang-format is not installed. Fix with scripts/format-tree.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=format-files.sh
. "$root/scripts/format-files.sh"
if ! cf=$(mapdirect_clang_format); then
  echo "skipped: clang-format not found (Debian: clang-format)"
  exit 77
fi
cd "$root"
mapfile -t files < <(mapdirect_format_files "$root")
# One clang-format for all files; each finding names its file.
set +e
out=$("$cf" --style=file --dry-run --Werror "${files[@]}" 2>&1)
rc=$?
set -e
mapfile -t bad < <(printf '%s\n' "$out" | sed -nE 's/^([^:]+):[0-9]+:[0-9]+: (error|warning): .*/\1/p' | LC_ALL=C sort -u)
if [ "$rc" -ne 0 ] && [ "${#bad[@]}" -eq 0 ]; then
  printf '%s\n' "$out"
  echo "clang-format failed (exit $rc)"
  exit 1
fi
if [ "${#bad[@]}" -ne 0 ]; then
  echo "Not formatted per .clang-format ($("$cf" --version)):"
  printf '  %s\n' "${bad[@]}"
  echo "Run scripts/format-tree.sh (or $cf -i FILE) and commit the result."
  exit 1
fi
echo "All ${#files[@]} C++ files are formatted."
