#!/usr/bin/env bash
# One version number: every place that states mapdirect's version must agree
# with project(VERSION) in CMakeLists.txt. Exits 1 naming each file that drifted.
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
v=$(sed -nE 's/^project\(mapdirect VERSION ([0-9]+\.[0-9]+\.[0-9]+).*/\1/p' "$src/CMakeLists.txt")
[ -n "$v" ] || { echo "no project(mapdirect VERSION x.y.z) in CMakeLists.txt"; exit 1; }
IFS=. read -r major minor patch <<<"$v"
bad=0
check() { # check WHAT FOUND
  if [ "$2" != "$v" ]; then echo "DRIFT: $1 says '${2}', CMakeLists.txt says $v"; bad=1; else echo "ok: $1 $2"; fi
}
hdr="$src/include/mapdirect/config.hpp"
check config.hpp "$(sed -nE 's/^#define MAPDIRECT_VERSION_MAJOR ([0-9]+)$/\1/p' "$hdr").$(sed -nE 's/^#define MAPDIRECT_VERSION_MINOR ([0-9]+)$/\1/p' "$hdr").$(sed -nE 's/^#define MAPDIRECT_VERSION_PATCH ([0-9]+)$/\1/p' "$hdr")"
check vcpkg.json "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$src/ports/vcpkg/mapdirect/vcpkg.json")"
check conanfile.py "$(sed -nE 's/^    version = "([^"]+)"$/\1/p' "$src/conanfile.py")"
# The newest CHANGELOG entry ("## [x.y.z] - date" or "## [Unreleased]" above it).
check CHANGELOG.md "$(sed -nE 's/^## \[([0-9]+\.[0-9]+\.[0-9]+)\].*/\1/p' "$src/CHANGELOG.md" | head -n1)"
# The examples' --version comes from config.hpp (examples/common/cli.hpp).
grep -q 'MAPDIRECT_VERSION_MAJOR' "$src/examples/common/cli.hpp" || { echo "DRIFT: examples/common/cli.hpp does not take its version from config.hpp"; bad=1; }
[ "$major.$minor.$patch" = "$v" ]
exit $bad
