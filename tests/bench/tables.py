#!/usr/bin/env python3
"""Issue 16's two tables from one tests/bench/run.sh run.

Reads docs/bench/raw/bench_persist_cold.txt (bench_persist --cold_ratios),
docs/bench/raw/bench_async.txt and, when present, docs/bench/raw/committer_ab.txt
(tests/bench/ab/before_after.sh); appends the tables to docs/bench/results.md
and replaces the blocks between "<!-- bench:NAME begin -->" and
"<!-- bench:NAME end -->" in README.md and docs/bench/README.md with them, so
that no table there is copied by hand.

usage: tables.py REPO_ROOT
"""
import os
import re
import sys

root = sys.argv[1]
out = os.path.join(root, "docs", "bench")
raw = os.path.join(out, "raw")


def read(name):
    path = os.path.join(raw, name)
    return open(path).read() if os.path.exists(path) else None


def human(n):
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def cold_tables(text):
    """Ratio matrix (size x op/buffers/alignment) and the cold GB/s ceiling table."""
    rows = {}
    head = text.splitlines()[0] if text else ""
    for line in text.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) != 11 or c[0] not in ("copy", "fill") or not c[3].isdigit():
            continue
        rows[(c[0], c[1], c[2], int(c[3]))] = {
            "ratio": float(c[4]), "ci": c[5], "verdict": c[6], "per_proc": c[7],
            "md": float(c[8]), "pm": float(c[9]), "plain": float(c[10])}
    if not rows:
        return None, None
    cols = [(op, buf, dst) for op in ("copy", "fill") for buf in ("hot", "cold") for dst in ("aligned", "+7")]
    sizes = sorted({k[3] for k in rows})
    mark = {"faster": "", "parity": " =", "SLOWER": " **>**"}
    lines = [
        f"Time ratio mapdirect / libpmem (below 1.0: mapdirect faster), median of the pooled rounds ({head}). "
        "Mark: none = faster (the 95% interval of the median is below 1.0), "
        "`=` = parity (the interval contains 1.0), **>** = slower (the interval is above 1.0).",
        "",
        "| bytes | " + " | ".join(f"{op} {buf}{' +7' if dst == '+7' else ''}" for op, buf, dst in cols) + " |",
        "|---:|" + "---:|" * len(cols),
    ]
    counts = {"faster": 0, "parity": 0, "SLOWER": 0}
    for n in sizes:
        cells = []
        for op, buf, dst in cols:
            r = rows.get((op, buf, dst, n))
            if r is None:
                cells.append("-")
                continue
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
            cells.append(f"{r['ratio']:.3f}{mark.get(r['verdict'], ' ?')}")
        lines.append(f"| {human(n)} | " + " | ".join(cells) + " |")
    lines += ["", f"{counts['faster']} rows faster, {counts['parity']} at parity, {counts['SLOWER']} slower "
              f"(of {sum(counts.values())})."]
    gbs = [
        "Cold buffers, GB/s (median round): mapdirect, libpmem and a plain `memcpy`/`memset` of the same "
        "buffers (no flush, no fence: the memory-bandwidth ceiling), destination aligned.",
        "",
        "| bytes | copy mapdirect | copy libpmem | plain memcpy | copy mapdirect / memcpy | fill mapdirect "
        "| fill libpmem | plain memset |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        c, f = rows.get(("copy", "cold", "aligned", n)), rows.get(("fill", "cold", "aligned", n))
        if c and f:
            gbs.append(f"| {human(n)} | {c['md']:.2f} | {c['pm']:.2f} | {c['plain']:.2f} | "
                       f"{c['md'] / c['plain']:.2f} | {f['md']:.2f} | {f['pm']:.2f} | {f['plain']:.2f} |")
    return "\n".join(lines), "\n".join(gbs)


def group_table(text):
    """bench_async's blocking-writer table, with records/s, as markdown."""
    lines = text.splitlines()
    rate, block = {}, {}
    section = None
    for line in lines:
        if line.startswith("threads |") and "a msync" in line:
            section = "rate"
            continue
        if line.startswith("threads |") and "d rec/fl" in line:
            section = "block"
            continue
        c = [x.strip() for x in line.split("|")]
        if not c or not c[0].isdigit():
            continue
        n = int(c[0])
        if section == "rate" and len(c) == 11:
            rate[n] = c
        elif section == "block" and len(c) == 14:
            block[n] = c
    if not block:
        return None
    head = next((l for l in lines if l.startswith("durable ")), "")
    out = [
        f"{lines[0]}; {head}. (a) msync per record, (d) copy_persist with an attached committer "
        "(inline flush), (e) persist_async + wait with every flush on the backend, (f) 32 requests in "
        "flight per writer.",
        "",
        "| writers | records per flush ÷ writers, d / e | d / a records/s | e / a records/s "
        "| a msync p50 / p99 µs | d group p50 / p99 µs | e async p50 / p99 µs | records/s a / d / e / f "
        "| merge windows expired per flush, d / e |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted(block):
        b, r = block[n], rate.get(n)
        rates = f"{r[1]} / {r[4]} / {r[5]} / {r[6]}" if r else "-"
        out.append(f"| {n} | {float(b[1]) / n:.2f} / {float(b[2]) / n:.2f} | {b[10]} | {b[11]} | "
                   f"{b[3]} / {b[4]} | {b[5]} / {b[6]} | {b[7]} / {b[8]} | {rates} | {b[12]} / {b[13]} |")
    return "\n".join(out)


def ab_table(text):
    """before_after.sh's summary (everything after its 'medians over the runs' line)."""
    if not text or "medians over the runs" not in text:
        return None
    tail = text[text.index("medians over the runs"):].splitlines()
    out = [tail[0] + " " + tail[1], ""]
    rows = [l for l in tail[2:] if "|" in l]
    if not rows:
        return None
    out.append("| " + rows[0] + " |")
    out.append("|" + "---|" * (rows[0].count("|") + 1))
    out += ["| " + l + " |" for l in rows[1:]]
    return "\n".join(out)


def replace_block(path, name, body):
    if body is None or not os.path.exists(path):
        return
    text = open(path).read()
    pat = re.compile(rf"(<!-- bench:{name} begin -->\n).*?(<!-- bench:{name} end -->)", re.S)
    if not pat.search(text):
        return
    text = pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    with open(path, "w") as f:
        f.write(text)
    print(f"tables.py: {os.path.relpath(path, root)}: block {name} replaced")


cold = read("bench_persist_cold.txt")
ratios, gbs = cold_tables(cold) if cold else (None, None)
group = group_table(read("bench_async.txt") or "")
ab = ab_table(read("committer_ab.txt"))

sections = [("Cold and hot copy/fill: time ratio against libpmem", ratios),
            ("Cold copy/fill against the memory-bandwidth ceiling", gbs),
            ("Group commit with blocking writers", group),
            ("Group committer before and after the merged cohorts (one writer; pipelined at 8)", ab)]
with open(os.path.join(out, "results.md"), "a") as f:
    for title, body in sections:
        if body:
            f.write(f"## {title}\n\n{body}\n\n")
for doc in (os.path.join(root, "README.md"), os.path.join(out, "README.md"), os.path.join(out, "cold.md"),
            os.path.join(out, "group_commit.md")):
    replace_block(doc, "cold-ratios", ratios)
    replace_block(doc, "cold-gbs", gbs)
    replace_block(doc, "group-commit", group)
    replace_block(doc, "committer-ab", ab)
