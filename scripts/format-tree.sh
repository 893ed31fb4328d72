#!/usr/bin/env bash
# Reformats every C++ file scripts/check-format.sh checks, in place, and
# prints the diff size. Run it on a clean tree and commit the result alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=format-files.sh
. "$root/scripts/format-files.sh"
if ! cf=$(mapdirect_clang_format); then
  echo "clang-format not found (Debian: clang-format)" >&2
  exit 1
fi
cd "$root"
mapdirect_format_files "$root" | xargs -d '\n' "$cf" --style=file -i
git diff --shortstat 2>/dev/null || true
