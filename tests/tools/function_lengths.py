#!/usr/bin/env python3
"""Lists the functions of C++ headers longer than a limit (issue 11: none over ~60 lines).

usage: function_lengths.py [--max N] [--top K] [--check] [PATH ...]   (default: include/, N = 60)

A function's length is counted from the line that names it to the line of its closing brace, both included.
Lambdas and local classes count as part of the function that holds them.
It prints every function over N lines ("lines<TAB>file:first-last<TAB>name"),
then the longest function found. A function whose comment (in the five
lines above its name) says "function_lengths: whole" is listed with
"(kept whole)" and not counted by --check (an asm routine that cannot be split); --top K lists the K longest instead of the
ones over N; --check exits 1 when any function is over N (for CI).

The parser is a small brace scanner, not a compiler: comments, string and
character literals (raw strings included) and preprocessor lines are blanked
first; a `{` whose head (the text since the last `;`, `{` or `}`) holds a
parameter list and is not a class, namespace, enum, control statement or
initialiser opens a function. That fits this code base's style (clang-format,
bodies in braces); check a surprising row by eye.
"""
import os
import re
import sys

CONTROL = {"if", "for", "while", "switch", "catch", "do", "else", "try", "return", "sizeof", "alignof",
           "decltype", "noexcept", "static_assert", "alignas", "__attribute__", "asm", "__asm__"}
WHOLE = "function_lengths: whole"
SCOPE_RE = re.compile(r"^\s*(template\s*<.*>\s*)?(class|struct|union|enum|namespace|extern)\b", re.S)


def blank(text):
    """Comments, literals and preprocessor lines replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#" or (at_line_start and c in " \t" and text[i:].lstrip(" \t").startswith("#")):
            # a preprocessor line (with continuations)
            j = i
            while j < n:
                k = text.find("\n", j)
                if k < 0:
                    k = n
                if k > 0 and text[k - 1] == "\\":
                    j = k + 1
                    continue
                break
            out.append(re.sub(r"[^\n]", " ", text[i:k]))
            i = k
            continue
        if text.startswith("//", i):
            k = text.find("\n", i)
            k = n if k < 0 else k
            out.append(" " * (k - i))
            i = k
            continue
        if text.startswith("/*", i):
            k = text.find("*/", i + 2)
            k = n if k < 0 else k + 2
            out.append(re.sub(r"[^\n]", " ", text[i:k]))
            i = k
            continue
        m = re.match(r'(?:u8|u|U|L)?R"([^(\s]*)\(', text[i:i + 40])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find(")" + m.group(1) + '"', i + m.end())
            k = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:k]))
            i = k
            continue
        if c in "\"'":
            # a digit separator (1'000) is not a literal
            if c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum() and \
                    re.match(r"[0-9a-fA-Fx']", text[i - 1]) and re.search(r"\b\d[\w']*$", text[max(0, i - 30):i]):
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
            continue
        out.append(c)
        at_line_start = c == "\n" or (at_line_start and c in " \t")
        i += 1
    return "".join(out)


def function_name(head):
    """The qualified name before the parameter list of a function head."""
    depth, i = 0, len(head) - 1
    # find the '(' matching the last top-level ')' before trailing qualifiers/initialisers
    init = re.search(r"\)\s*(?:const\s*|noexcept(?:\([^()]*\))?\s*|override\s*|final\s*)*:(?!:)", head)
    end = init.start() + 1 if init else head.rfind(")") + 1
    i = end - 1
    while i >= 0:
        if head[i] == ")":
            depth += 1
        elif head[i] == "(":
            depth -= 1
            if depth == 0:
                break
        i -= 1
    m = re.search(r"((?:[\w~]+(?:<[^<>]*>)?::)*(?:operator\s*[^\s(]+|operator\(\)|~?\w+))\s*$", head[:max(i, 0)])
    if m:
        return m.group(1), m.start(1)
    return head.strip().split("(")[0][-40:], len(head) - len(head.lstrip())


def is_function_head(head):
    h = head.strip()
    if not h or "(" not in h or SCOPE_RE.match(h):
        return False
    if h.endswith("=") or re.search(r"=\s*$", h) or h.endswith(","):
        return False  # an initialiser list
    first = re.match(r"[\w:~]+", h)
    if first and first.group(0) in CONTROL:
        return False
    if re.match(r"^\s*(else\s+)?if\b|^\s*else\b", h):
        return False
    # after the parameter list: qualifiers and a trailing return type, or a ctor-initialiser
    if re.search(r"\)\s*(?:const|noexcept|override|final|->|&|\s)*(?:->[^{]*)?$", h):
        return True
    if re.search(r"\)\s*(?:noexcept\s*)?:\s*\w", h):
        return True  # constructor with member initialisers
    return False


def functions(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read()
    raw_lines = raw.split("\n")
    text = blank(raw)
    stack = []  # "scope" | "func" | "inner"
    head_start = 0
    found = []
    line = 1
    line_of = []
    for ch in text:
        line_of.append(line)
        if ch == "\n":
            line += 1
    for i, ch in enumerate(text):
        if ch == "{":
            head = text[head_start:i]
            in_func = "func" in stack
            if not in_func and is_function_head(head):
                name, at = function_name(head)  # counted from the line that names the function
                stack.append(("func", line_of[head_start + at], name))
            else:
                stack.append(("inner" if in_func else "scope", 0, ""))
            head_start = i + 1
        elif ch == "}":
            if stack:
                kind, first, name = stack.pop()
                if kind == "func":
                    whole = any(WHOLE in l for l in raw_lines[max(0, first - 6):first])
                    found.append((line_of[i] - first + 1, first, line_of[i], name + (" (kept whole)" if whole else "")))
            head_start = i + 1
        elif ch == ";":
            head_start = i + 1
        elif ch == ":" and not in_template_or_scope(text, i):
            # an access specifier ("public:") ends a head
            m = re.search(r"\b(public|private|protected)\s*$", text[head_start:i])
            if m:
                head_start = i + 1
    return found


def in_template_or_scope(text, i):
    return (i + 1 < len(text) and text[i + 1] == ":") or (i > 0 and text[i - 1] == ":")


def main(argv):
    limit, top, check, paths = 60, 0, False, []
    it = iter(argv)
    for a in it:
        if a == "--max":
            limit = int(next(it))
        elif a == "--top":
            top = int(next(it))
        elif a == "--check":
            check = True
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            paths.append(a)
    if not paths:
        paths = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include")]
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, x) for x in names if x.endswith((".hpp", ".h", ".ipp", ".cpp"))]
        else:
            files.append(p)
    rows = []
    for f in sorted(files):
        rel = os.path.relpath(f)
        rows += [(n, rel, a, b, name) for n, a, b, name in functions(f)]
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    shown = rows[:top] if top else [r for r in rows if r[0] > limit]
    over = [r for r in rows if r[0] > limit and not r[4].endswith("(kept whole)")]
    for n, rel, a, b, name in shown:
        print(f"{n}\t{rel}:{a}-{b}\t{name}")
    if not top:
        print(f"{len(shown)} function(s) over {limit} lines in {len(files)} file(s), "
              f"{len(shown) - len(over)} of them kept whole")
    for label, pool in (("longest", rows), ("longest not kept whole", [r for r in rows if "(kept whole)" not in r[4]])):
        if pool:
            n, rel, a, b, name = pool[0]
            print(f"{label}: {name} ({rel}:{a}-{b}), {n} lines")
    return 1 if check and over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
