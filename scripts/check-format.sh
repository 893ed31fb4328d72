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
bad=()
while read -r f; do
  if ! "$cf" --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
  fi
done < <(mapdirect_format_files "$root")
if [ "${#bad[@]}" -ne 0 ]; then
  echo "Not formatted per .clang-format ($("$cf" --version)):"
  printf '  %s\n' "${bad[@]}"
  echo "Run scripts/format-tree.sh (or $cf -i FILE) and commit the result."
  exit 1
fi
echo "All $(mapdirect_format_files "$root" | wc -l) C++ files are formatted."
