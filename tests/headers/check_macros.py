#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks mapdirect's macros (ctest mapdirect_header_macros).

1. No header under include/mapdirect defines or undefines a macro outside the
   MAPDIRECT_ prefix: a header that defined MAP_SYNC would change what a
   user's own `#ifdef MAP_SYNC` means. Checked twice: on the text of every
   header, every branch of every conditional (a `#ifndef MAP_SYNC` fallback is
   never taken on a host whose libc has MAP_SYNC, so only the text shows it);
   and on the preprocessor's own record (-E -dD, whose line markers name the
   file of every #define and #undef) of a TU including every header, in the
   default and the MAP_DIRECT configuration.
2. Every configuration macro lives in config.hpp: any MAPDIRECT_ name that a
   header tests (#if/#ifdef/#ifndef/#elif/defined()) is named in config.hpp,
   and no other header gives a tested name a default (#define after
   #ifndef NAME or !defined(NAME)).
3. README's "Configuration macros" table has a row for every macro config.hpp
   lets the user define: named there but never defined, or defined only
   under its own #ifndef / !defined().

usage: check_macros.py --cxx CXX --include DIR --readme README.md [--no-uring] [-- extra compiler flags]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

CONDITIONAL = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif)\b(.*)$")
NAME = re.compile(r"\bMAPDIRECT_\w+")
DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)")
LINE_MARKER = re.compile(r'^# \d+ "((?:[^"\\]|\\.)*)"')


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def headers(root, no_uring):
    found = []
    for dirpath, _, files in os.walk(os.path.join(root, "mapdirect")):
        for f in files:
            if f.endswith(".hpp"):
                found.append(os.path.relpath(os.path.join(dirpath, f), root))
    found.sort()
    if not no_uring:
        return found
    # Without liburing, leave out the headers that need it, directly or not.
    text = {h: open(os.path.join(root, h)).read() for h in found}
    needs = {h for h in found if "<liburing.h>" in text[h]}
    changed = True
    while changed:
        changed = False
        for h in found:
            if h in needs:
                continue
            for inc in re.findall(r'#\s*include\s+"([^"]+)"', text[h]):
                target = os.path.normpath(os.path.join(os.path.dirname(h), inc))
                if target in needs:
                    needs.add(h)
                    changed = True
                    break
    return [h for h in found if h not in needs]


def check_defines(args, hdrs, defines):
    """Names outside MAPDIRECT_ that our headers #define or #undef."""
    ours = os.path.realpath(os.path.join(args.include, "mapdirect")) + os.sep
    with tempfile.NamedTemporaryFile("w", suffix=".cpp", delete=False) as tu:
        tu.write("".join(f"#include <{h}>\n" for h in hdrs))
        path = tu.name
    try:
        cmd = [args.cxx, "-std=c++17", "-E", "-dD", "-I", args.include] + defines + args.flags + [path]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            sys.exit(f"preprocessing failed: {' '.join(cmd)}\n{out.stderr}")
    finally:
        os.unlink(path)
    bad = []
    current = ""
    for line in out.stdout.splitlines():
        m = LINE_MARKER.match(line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^#(define|undef) (\w+)", line)
        if not m or not os.path.realpath(current).startswith(ours):
            continue
        if not m.group(2).startswith("MAPDIRECT_"):
            bad.append(f"{os.path.relpath(current, args.include)}: #{m.group(1)} {m.group(2)} "
                       f"(configuration: {' '.join(defines) or 'default'})")
    return bad


def check_text(root, hdrs):
    """#define/#undef lines of names outside MAPDIRECT_, in any branch."""
    bad = []
    for h in hdrs:
        text = strip_comments(open(os.path.join(root, h)).read()).replace("\\\n", " ")
        for m in re.finditer(r"^[ \t]*#[ \t]*(define|undef)[ \t]+(\w+)", text, flags=re.M):
            if not m.group(2).startswith("MAPDIRECT_"):
                bad.append(f"{h}: #{m.group(1)} {m.group(2)}")
    return bad


def tested_names(text):
    names = set()
    for line in strip_comments(text).splitlines():
        m = CONDITIONAL.match(line)
        if m:
            names.update(NAME.findall(m.group(2)))
    return names


def defaulted_names(text):
    """Names given a default: #define NAME under #ifndef NAME or !defined(NAME)."""
    out = set()
    guards = []  # stack of the names each open conditional leaves undefined
    for line in strip_comments(text).splitlines():
        m = CONDITIONAL.match(line)
        if m:
            kind, cond = m.group(1), m.group(2)
            undefined = set()
            if kind == "ifndef":
                undefined = set(NAME.findall(cond))
            else:
                undefined = set(re.findall(r"!\s*defined\s*\(?\s*(MAPDIRECT_\w+)", cond))
            if kind == "elif":
                if guards:
                    guards[-1] = undefined
            else:
                guards.append(undefined)
            continue
        if re.match(r"^\s*#\s*else\b", line):
            if guards:
                guards[-1] = set()
            continue
        if re.match(r"^\s*#\s*endif\b", line):
            if guards:
                guards.pop()
            continue
        m = DEFINE.match(line)
        if m and any(m.group(1) in g for g in guards):
            out.add(m.group(1))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cxx", required=True)
    p.add_argument("--include", required=True)
    p.add_argument("--readme", required=True)
    p.add_argument("--no-uring", action="store_true")
    p.add_argument("flags", nargs="*")
    args = p.parse_args()

    errors = []
    errors += [f"defines a name outside MAPDIRECT_: {b}" for b in check_text(args.include, headers(args.include, False))]
    hdrs = headers(args.include, args.no_uring)
    for defines in ([], ["-DMAPDIRECT_MAP_DIRECT_FLAG=0x400000", "-DMAPDIRECT_F_MAY_SEAL_IOMAP=1039",
                         "-DMAPDIRECT_TEST_OBSERVER=1"]):
        errors += [f"defines a name outside MAPDIRECT_: {b}" for b in check_defines(args, hdrs, defines)]

    config_path = os.path.join(args.include, "mapdirect", "config.hpp")
    config = open(config_path).read()
    config_names = set(NAME.findall(config))
    for dirpath, _, files in os.walk(os.path.join(args.include, "mapdirect")):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            if not f.endswith(".hpp") or os.path.samefile(path, config_path):
                continue
            text = open(path).read()
            rel = os.path.relpath(path, args.include)
            for n in sorted(tested_names(text) - config_names):
                if not n.endswith("_HPP"):  # include guards
                    errors.append(f"{rel}: tests {n}, which config.hpp does not name (configuration macros "
                                  f"live in config.hpp)")
            for n in sorted(defaulted_names(text)):
                if not n.endswith("_HPP"):
                    errors.append(f"{rel}: gives {n} a default; configuration defaults live in config.hpp")

    defined = {m.group(1) for m in (DEFINE.match(l) for l in strip_comments(config).splitlines()) if m}
    configurable = {n for n in (config_names - defined) | defaulted_names(config) if not n.endswith("_HPP")}
    readme = open(args.readme).read()
    table = set(re.findall(r"^\|\s*`(MAPDIRECT_\w+)`", readme, flags=re.M))
    for n in sorted(configurable - table):
        errors.append(f"README.md: the configuration macro table has no row for {n}")

    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"ok: {len(hdrs)} headers define nothing outside MAPDIRECT_; "
          f"{len(configurable)} configuration macros, all in config.hpp and README")
    return 0


if __name__ == "__main__":
    sys.exit(main())
