#!/usr/bin/env bash
# The API reference, checked in a real browser: builds the mapdirect_docs
# target (Doxygen, warnings are errors), then renders the index page and the
# direct_mapping class page in headless Chromium and checks that the rendered
# page lists every public member the header documents (found here from the
# header's own /// comments, independently of Doxygen) and no detail:: symbol.
# Saves screenshots next to the HTML. usage: check.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
html="$build/docs/api/html"
if ! cmake --build "$build" --target mapdirect_docs || [ -s "$build/docs/api/warnings.log" ]; then
  echo "FAIL: Doxygen warnings (they are errors):"
  cat "$build/docs/api/warnings.log" 2>/dev/null
  exit 1
fi
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then echo "skipped: needs chromium (Debian package chromium) to render the pages"; exit 77; fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
render() { # render PAGE OUT: the DOM after rendering, and a screenshot
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --user-data-dir="$profile" \
    --dump-dom "file://$html/$1" 2>/dev/null >"$2"
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --user-data-dir="$profile" \
    --window-size=1280,2000 --screenshot="$2.png" "file://$html/$1" >/dev/null 2>&1 || true
  [ -s "$2" ] || { echo "FAIL: chromium rendered nothing for $1"; exit 1; }
}
render index.html "$build/docs/api/index.dom"
grep -q "mapdirect API reference" "$build/docs/api/index.dom" || { echo "FAIL: index has no title"; exit 1; }
page=classmapdirect_1_1direct__mapping.html
[ -f "$html/$page" ] || { echo "FAIL: no page for direct_mapping"; exit 1; }
render "$page" "$build/docs/api/direct_mapping.dom"
# Public member functions documented with /// in class direct_mapping.
python3 - "$src/include/mapdirect/mapping.hpp" "$build/docs/api/direct_mapping.dom" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
start = text.index("class direct_mapping {")
depth, i = 0, start
while True:
    c = text[i]
    if c == "{": depth += 1
    elif c == "}":
        depth -= 1
        if depth == 0: break
    i += 1
body = text[start:i]
names, public, doc = set(), False, False
for line in body.splitlines():
    s = line.strip()
    if s.startswith("public:"): public = True; continue
    if s.startswith("private:") or s.startswith("protected:"): public = False; continue
    if s.startswith("///"): doc = True; continue
    if doc and public:
        m = re.search(r"(?:^|[\s*&>])(~?[A-Za-z_][A-Za-z0-9_]*)\s*\(", s)
        if m and "operator" not in s[:m.start(1)] and m.group(1) not in ("explicit", "static", "noexcept"):
            names.add(m.group(1))
    doc = False
dom = open(sys.argv[2]).read()
missing = sorted(n for n in names if not re.search(r"direct_mapping::" + re.escape(n) + r"\b", dom)
                 and not re.search(r">\s*" + re.escape(n) + r"\s*<", dom))
print(f"{len(names)} documented public members of direct_mapping in the header; missing from the rendered page: {missing}")
if len(names) < 15: sys.exit("FAIL: the header scan found too few members (scan broken?)")
# (a SFINAE constraint in a template signature may name a detail trait)
if "detail::" in dom.replace("enable_if_t&lt;detail::", ""): sys.exit("FAIL: the rendered page shows detail:: symbols")
sys.exit(1 if missing else 0)
PY
echo "api reference: ok ($html)"
