#!/usr/bin/env bash
# Runs the benchmark suite (every tests/bench/bench_* executable) and writes
# docs/bench/results.md (machine, tables with ratios against PMDK),
# docs/bench/copy_fill.png (GB/s by size, both libraries) and the raw output
# under docs/bench/raw/.
#
# usage: tests/bench/run.sh [build-dir]
#   BENCH_REPS=7          repetitions per benchmark (the minimum, else the median, is reported)
#   BENCH_MIN_TIME=0.2    seconds per repetition
#   BENCH_FILTER=regex    run only matching benchmarks
#   BENCH_COLD_ROUNDS=101 rounds of bench_persist --cold_ratios in each of
#   BENCH_COLD_PROCS=3    processes (pooled)
#   BENCH_JOBS=2          build parallelism
#   BENCH_ASYNC_ARGS="/var/tmp 0.5 5"  bench_async: directory, seconds per cell, rounds
#   BENCH_AB_REV=a855204  committer before/after run against this commit ("" skips it)
#   BENCH_AB_PAIRS=12     its pairs of processes (order alternating)
#   MAPDIRECT_BENCH_DIR   where bench_map puts its 1 GiB file (default /tmp)
# Needs: cmake, a C++17 compiler, libpmem-dev, libpmem2-dev, libbenchmark-dev,
# gnuplot (gnuplot-nox) and python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-bench}
out=$root/docs/bench
reps=${BENCH_REPS:-7}
min_time=${BENCH_MIN_TIME:-0.2}
filter=${BENCH_FILTER:-.}
jobs=${BENCH_JOBS:-2}

for tool in cmake python3 gnuplot; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 1; }
done

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAPDIRECT_BUILD_BENCHMARKS=ON \
  -DMAPDIRECT_BUILD_TESTS=OFF -DMAPDIRECT_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target mapdirect_benchmarks -j "$jobs"

mkdir -p "$out/raw"
# Only what this script writes: raw/ also keeps other runs' records (RocksDB, SQLite, VM tiers).
rm -f "$out"/raw/bench_*.json "$out"/raw/bench_*.txt "$out"/raw/plot.dat "$out"/raw/cold_hot.dat \
  "$out"/raw/committer_ab.txt

for src in "$here"/bench_*.cpp; do
  name=$(basename "$src" .cpp)
  exe="$build/tests/bench/$name"
  [ -x "$exe" ] || { echo "run.sh: $exe missing" >&2; exit 1; }
  # A file with its own main() that does not hand argv to Google Benchmark
  # gets its text output recorded as is.
  if grep -Eq '^[[:space:]]*int[[:space:]]+main[[:space:]]*\(' "$src" && ! grep -q 'benchmark::Initialize' "$src"; then
    echo "== $name (own harness)"
    args=()
    # bench_async: directory, seconds per cell, interleaved rounds.
    [ "$name" = bench_async ] && read -r -a args <<<"${BENCH_ASYNC_ARGS:-/var/tmp 0.5 5}"
    "$exe" "${args[@]}" | tee "$out/raw/$name.txt"
  else
    echo "== $name"
    "$exe" --benchmark_filter="$filter" --benchmark_repetitions="$reps" \
      --benchmark_min_time="$min_time" --benchmark_report_aggregates_only=true \
      --benchmark_out="$out/raw/$name.json" --benchmark_out_format=json
  fi
done
# Cold-buffer and misaligned copy/fill rows (bench_persist's own interleaved harness).
echo "== bench_persist --cold_ratios"
"$build/tests/bench/bench_persist" --cold_ratios="${BENCH_COLD_ROUNDS:-101}" --cold_procs="${BENCH_COLD_PROCS:-3}" | tee "$out/raw/bench_persist_cold.txt"

# The committer before and after its merged cohorts (one writer must not
# regress; the pipelined path keeps its rate): a855204 is main just before them.
ab_rev=${BENCH_AB_REV-a855204}
if [ -n "$ab_rev" ] && git -C "$root" cat-file -e "$ab_rev^{commit}" 2>/dev/null; then
  echo "== committer before ($ab_rev) and after"
  bash "$here/ab/before_after.sh" "$ab_rev" "${BENCH_AB_PAIRS:-12}" 1 | tee "$out/raw/committer_ab.txt"
elif [ -n "$ab_rev" ]; then
  echo "run.sh: $ab_rev is not a commit here (not a git checkout?): no before/after run"
fi

python3 - "$out" <<'PY'
import glob, json, os, platform, re, subprocess, sys, datetime

out = sys.argv[1]
raw = os.path.join(out, "raw")

def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "?"

# name -> CPU time (ns) and bytes/s of the chosen aggregate, from every JSON file.
results, context, spread = {}, {}, {}
for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
    with open(path) as f:
        data = json.load(f)
    for k, v in data.get("context", {}).items():
        context.setdefault(k, v)
    for b in data["benchmarks"]:
        if b.get("error_occurred"):
            results[b["run_name"]] = {"error": b.get("error_message", "error")}
            continue
        # Prefer the "min" aggregate (our benchmarks add it), else the median;
        # a plain run (one repetition) is kept until an aggregate replaces it.
        agg = b.get("aggregate_name") if b.get("run_type") == "aggregate" else None
        if agg in ("mean", "stddev"):
            # The spread of the repetitions: a ratio within it is parity, not a verdict.
            spread.setdefault(b["run_name"], {})[agg] = b["cpu_time"]
            continue
        if agg not in (None, "min", "median"):
            continue
        prev = results.get(b["run_name"], {}).get("agg")
        if prev == "min" or (prev == "median" and agg is None):
            continue
        scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
        ns = b["cpu_time"] * scale
        bps = b.get("bytes_per_second")
        if agg == "min" and bps is not None:
            # The "min" statistic of a rate counter is the slowest rate; derive
            # the rate of the fastest run from its time and the bytes per call
            # (the last name component in our benchmarks).
            last = b["run_name"].split("/")[-1]
            bps = int(last) / (ns * 1e-9) if last.isdigit() else None
        results[b["run_name"]] = {
            "ns": ns,
            "bps": bps,
            "label": b.get("label", ""),
            "agg": agg,
        }

def rel_spread(name):
    """Standard deviation / mean of a benchmark's repetitions (0 when unknown)."""
    sp = spread.get(name, {})
    return sp["stddev"] / sp["mean"] if sp.get("mean") and "stddev" in sp else 0.0

def judge(better, target, tolerance):
    """better: True when the target is met; within the repetitions' spread it is parity."""
    if better:
        return "met"
    return f"parity (within the repetitions' spread, {tolerance * 100:.1f}%)" if tolerance > 0 else "MISSED"

for name in results:
    results[name]["spread"] = rel_spread(name)

# Names are <operation>/<library>/<arg>; pair mapdirect with every other library.
groups = {}
for name, r in results.items():
    parts = name.split("/")
    if len(parts) != 3:
        groups.setdefault(("other", name), {})["-"] = r
        continue
    op, lib, arg = parts
    groups.setdefault((op, arg), {})[lib] = r

def human_size(s):
    try:
        n = int(s)
    except ValueError:
        return s
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"

def fmt_ns(ns):
    return f"{ns / 1e3:.1f} µs" if ns >= 1e4 else f"{ns:.1f} ns"

# What each operation means and what the issue asks of it.
ops = [
    ("persist", "persist of a dirty range: flush_lines+drain vs pmem_persist", "time", 1.0),
    ("scattered16", "16 scattered dirty lines flushed, then one drain (bytes = 16 x 64)", "time", 1.0),
    ("copy", "memcpy_flush+drain vs pmem_memcpy_persist (anonymous memory)", "gbs", None),
    ("fill", "memset_flush+drain vs pmem_memset_persist (anonymous memory)", "gbs", None),
    ("mapping_copy", "direct_mapping::copy_persist (cache-line mapping, MAP_SYNC emulated via the seam) vs pmem_memcpy_persist on it", "gbs", None),
    ("map_unmap", "map + unmap of a 1 GiB file: direct_mapping vs pmem2_map_new", "time", 1.0),
]
known = {o[0] for o in ops}
for (op, _arg) in groups:
    if op not in known and op != "other":
        ops.append((op, op, "time", None))
        known.add(op)

def copy_target(arg):
    try:
        n = int(arg)
    except ValueError:
        return None
    return 1.2 if 64 <= n <= 256 else 1.0

lines = []
w = lines.append
w("# mapdirect benchmarks against PMDK")
w("")
w(f"Generated by `tests/bench/run.sh` on {datetime.date.today().isoformat()}; both libraries in one process "
  "on the same buffers and files, interleaved. Each figure is the minimum CPU time over the repetitions "
  "(the least disturbed run of a shared machine) where the benchmark reports it, else the median; "
  "raw/*.json has mean, median and spread.")
w("")
w("## Machine")
w("")
cpuinfo = open("/proc/cpuinfo").read()
fam = re.search(r"^cpu family\s*:\s*(\d+)", cpuinfo, re.M)
mod = re.search(r"^model\s*:\s*(\d+)", cpuinfo, re.M)
w(f"- CPU: {context.get('cpu_model', '?')}"
  f"{f' (family {fam.group(1)}, model {mod.group(1)})' if fam and mod else ''}, {os.cpu_count()} CPUs visible; "
  f"{'virtual machine' if 'hypervisor' in cpuinfo else 'bare metal'}")
w(f"- Kernel: {platform.release()}; compiler: {run(['c++', '--version']).splitlines()[0] if run(['c++', '--version']) != '?' else '?'}")
w(f"- mapdirect flush instruction: {context.get('mapdirect_flush', '?')}; "
  f"MAPDIRECT_MOVNT_THRESHOLD = {context.get('mapdirect_movnt_threshold', '?')}")
w(f"- PMDK: libpmem {run(['pkg-config', '--modversion', 'libpmem'])}, "
  f"libpmem2 {run(['pkg-config', '--modversion', 'libpmem2'])}; Google Benchmark {run(['dpkg-query', '-W', '-f=${Version}', 'libbenchmark-dev'])}")
w("- Memory: ordinary DRAM (no pmem): the flush and non-temporal store instructions run and cost the same; "
  "what they cost on real pmem differs.")
w("")
w("Ratio columns: **time ratio** = mapdirect time / PMDK time (<= 1.0 means mapdirect is no slower); "
  "**speedup** = mapdirect GB/s / PMDK GB/s (>= 1.0 means mapdirect is faster).")
w("")

plot = {}
for op, title, kind, target in ops:
    rows = sorted([(arg, libs) for (o, arg), libs in groups.items() if o == op],
                  key=lambda x: int(x[0]) if x[0].isdigit() else x[0])
    if not rows:
        continue
    w(f"## {op}: {title}")
    w("")
    peers = sorted({lib for _, libs in rows for lib in libs if lib != "mapdirect"})
    if kind == "gbs":
        w("| size | mapdirect GB/s | " + " | ".join(f"{p} GB/s" for p in peers) + " | speedup | target |")
        w("|---:|---:|" + "---:|" * len(peers) + "---:|:---|")
    else:
        w("| size | mapdirect | " + " | ".join(peers) + " | time ratio | target |")
        w("|---:|---:|" + "---:|" * len(peers) + "---:|:---|")
    for arg, libs in rows:
        md = libs.get("mapdirect")
        cells, ratio, verdict = [], "", ""
        for p in peers:
            r = libs.get(p)
            if r is None or "error" in r:
                cells.append(r["error"] if r else "-")
            elif kind == "gbs":
                cells.append(f"{r['bps'] / 1e9:.2f}")
            else:
                cells.append(fmt_ns(r["ns"]))
        ref = libs.get(peers[0]) if peers else None
        if len(peers) > 1 and kind != "gbs" and md and "error" not in md:
            # Several peers: one time ratio against each.
            ratio = ", ".join(f"{md['ns'] / libs[p]['ns']:.2f} vs {p}" for p in peers
                              if p in libs and "error" not in libs[p])
        elif md and "error" not in md and ref and "error" not in ref:
            if kind == "gbs":
                s = md["bps"] / ref["bps"]
                ratio = f"{s:.2f}x"
                t = copy_target(arg) if op in ("copy", "fill", "mapping_copy") else None
                if t is not None:
                    tol = md["spread"] + ref["spread"]
                    verdict = f">= {t}: " + judge(s >= t, t, tol if s >= t - tol else 0.0)
                plot.setdefault(op, []).append((int(arg), md["bps"] / 1e9, ref["bps"] / 1e9))
            else:
                q = md["ns"] / ref["ns"]
                ratio = f"{q:.3f}"
                if target is not None:
                    tol = md["spread"] + ref["spread"]
                    verdict = f"<= {target}: " + judge(q <= target, target, tol if q <= target + tol else 0.0)
        mdcell = "-" if not md else md.get("error") or (f"{md['bps'] / 1e9:.2f}" if kind == "gbs" else fmt_ns(md["ns"]))
        if md and md.get("label"):
            mdcell += f" ({md['label']})"
        w(f"| {human_size(arg)} | {mdcell} | " + " | ".join(cells) + f" | {ratio} | {verdict} |")
    w("")

others = [name for (op, name) in groups if op == "other"]
if others:
    w("## Other benchmarks")
    w("")
    w("| benchmark | CPU time | GB/s |")
    w("|:---|---:|---:|")
    for name in sorted(others):
        r = groups[("other", name)]["-"]
        if "error" in r:
            w(f"| {name} | {r['error']} | |")
        else:
            w(f"| {name} | {fmt_ns(r['ns'])} | {r['bps'] / 1e9:.2f} |" if r.get("bps") else
              f"| {name} | {fmt_ns(r['ns'])} | |")
    w("")

for path in sorted(glob.glob(os.path.join(raw, "*.txt"))):
    w(f"## {os.path.basename(path)[:-4]} (own harness, output as printed)")
    w("")
    w("```")
    w(open(path).read().rstrip())
    w("```")
    w("")

if plot:
    w("## Plot")
    w("")
    w("![GB/s by size, mapdirect and PMDK](copy_fill.png)")
    w("")
    with open(os.path.join(out, "raw", "plot.dat"), "w") as f:
        for op in ("copy", "fill"):
            f.write(f"# {op}: size mapdirect_GBs pmdk_GBs\n")
            for n, a, b in sorted(plot.get(op, [])):
                f.write(f"{n} {a:.4f} {b:.4f}\n")
            f.write("\n\n")

# Hot and cold curves of both libraries (bench_persist --cold_ratios rows,
# destination aligned): raw/cold_hot.dat, blocks copy-hot, copy-cold,
# fill-hot, fill-cold, each "bytes mapdirect_GBs libpmem_GBs plain_GBs".
cold_txt = os.path.join(raw, "bench_persist_cold.txt")
if os.path.exists(cold_txt):
    blocks = {}
    for line in open(cold_txt):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[0] in ("copy", "fill") and cells[2] == "aligned" and cells[3].isdigit():
            blocks.setdefault((cells[0], cells[1]), []).append((int(cells[3]), cells[8], cells[9], cells[10]))
    if blocks:
        with open(os.path.join(raw, "cold_hot.dat"), "w") as f:
            for key in (("copy", "hot"), ("copy", "cold"), ("fill", "hot"), ("fill", "cold")):
                f.write(f"# {key[0]} {key[1]}: bytes mapdirect_GBs libpmem_GBs plain_GBs\n")
                for row in sorted(blocks.get(key, [])):
                    f.write(" ".join(str(c) for c in row) + "\n")
                f.write("\n\n")
        w("## Hot and cold buffers")
        w("")
        w("![GB/s by size on hot and cold buffers, mapdirect and libpmem](cold_hot.png)")
        w("")

with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"wrote {os.path.join(out, 'results.md')}")
PY

# Issue 16's tables (cold/hot ratios, bandwidth ceiling, group commit, before/after)
# into results.md and into the marked blocks of README.md and docs/bench/*.md.
python3 "$here/tables.py" "$root"

if [ -s "$out/raw/plot.dat" ]; then
  gnuplot <<GP
set terminal pngcairo size 900,540 font "sans,10" noenhanced
set output "$out/copy_fill.png"
set title "Copy and fill with persist: mapdirect vs PMDK libpmem (higher is better)"
set logscale x 2
set logscale y 10
set xrange [40:26000000]
set xlabel "bytes per call"
set ylabel "GB/s (best of the repetitions, CPU time)"
set key top left
set grid
set xtics ("64" 64, "256" 256, "4K" 4096, "64K" 65536, "1M" 1048576, "16M" 16777216)
plot "$out/raw/plot.dat" index 0 using 1:2 with linespoints lw 2 pt 7 title "mapdirect copy_persist", \
     "" index 0 using 1:3 with linespoints lw 2 pt 6 dt 2 title "pmem_memcpy_persist", \
     "" index 1 using 1:2 with linespoints lw 2 pt 5 title "mapdirect fill_persist", \
     "" index 1 using 1:3 with linespoints lw 2 pt 4 dt 2 title "pmem_memset_persist"
GP
  echo "wrote $out/copy_fill.png"
fi
if [ -s "$out/raw/cold_hot.dat" ]; then
  gnuplot <<GP
set terminal pngcairo size 1200,520 font "sans,10" noenhanced
set output "$out/cold_hot.png"
set multiplot layout 1,2 title "Hot and cold buffers (bench_persist --cold_ratios, destination aligned; higher is better)"
set logscale x 2
set logscale y 10
set xrange [40:26000000]
set xlabel "bytes per call"
set ylabel "GB/s (median round, thread CPU time)"
set key bottom right
set grid
set xtics ("64" 64, "256" 256, "4K" 4096, "64K" 65536, "1M" 1048576, "16M" 16777216)
d = "$out/raw/cold_hot.dat"
set title "copy_persist vs pmem_memcpy_persist"
plot d index 0 using 1:2 with linespoints lw 2 pt 7 lc 1 title "mapdirect, hot", \\
     d index 0 using 1:3 with linespoints lw 2 pt 6 lc 1 dt 2 title "libpmem, hot", \\
     d index 1 using 1:2 with linespoints lw 2 pt 5 lc 2 title "mapdirect, cold", \\
     d index 1 using 1:3 with linespoints lw 2 pt 4 lc 2 dt 2 title "libpmem, cold", \\
     d index 1 using 1:4 with lines lw 1 lc 0 dt 3 title "plain memcpy, cold (ceiling)"
set title "fill_persist vs pmem_memset_persist"
plot d index 2 using 1:2 with linespoints lw 2 pt 7 lc 1 title "mapdirect, hot", \\
     d index 2 using 1:3 with linespoints lw 2 pt 6 lc 1 dt 2 title "libpmem, hot", \\
     d index 3 using 1:2 with linespoints lw 2 pt 5 lc 2 title "mapdirect, cold", \\
     d index 3 using 1:3 with linespoints lw 2 pt 4 lc 2 dt 2 title "libpmem, cold", \\
     d index 3 using 1:4 with lines lw 1 lc 0 dt 3 title "plain memset, cold (ceiling)"
unset multiplot
GP
  echo "wrote $out/cold_hot.png"
fi
