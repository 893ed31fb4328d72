# The C++ files clang-format owns, one per line, relative to the repository
# root (sourced by check-format.sh and format-tree.sh). tests/support/catch.hpp
# is Catch2's single header, vendored as released: not ours to format.
mapdirect_format_files() {
  local root=$1 dir
  local dirs=()
  for dir in include tests examples test_package; do
    [ -d "$root/$dir" ] && dirs+=("$dir")
  done
  (cd "$root" && find "${dirs[@]}" -path tests/support/catch.hpp -prune -o -type f \
    \( -name '*.hpp' -o -name '*.cpp' -o -name '*.h' -o -name '*.c' -o -name '*.ipp' \) -print | LC_ALL=C sort)
}

# The clang-format the style was tuned for (Debian 12: clang-format, version 14).
mapdirect_clang_format() {
  local c
  for c in "${CLANG_FORMAT:-}" clang-format-14 clang-format; do
    if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}
