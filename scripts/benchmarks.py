#!/usr/bin/env python3
"""Runs the benchmark suite and regenerates BENCHMARKS.md's tables and charts from it.

    python3 scripts/benchmarks.py            # run everything, then report
    python3 scripts/benchmarks.py run        # only run, the C stage too (results under target/bench-results)
    python3 scripts/benchmarks.py report     # only regenerate tables and charts
    python3 scripts/benchmarks.py c          # only the C programs under LD_PRELOAD, and their table

Criterion benchmarks leave their medians in target/criterion; the others (which need a
process per measurement, for peak RSS) print Markdown tables, saved under
target/bench-results. The report replaces what stands between `<!-- begin:NAME -->` and
`<!-- end:NAME -->` in BENCHMARKS.md, and writes SVG charts to benches/charts/. Only the
standard library is needed (the C stage also needs a C compiler, and apt-get to install the
baseline allocators it does not find).
"""
import fnmatch
import glob
import json
import math
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
RESULTS = ROOT / "target" / "bench-results"
CHARTS = ROOT / "benches" / "charts"
DOC = ROOT / "BENCHMARKS.md"
ALLOCATORS = ["vmarena", "mimalloc", "jemalloc", "glibc"]
COLORS = {"vmarena": "#d9480f", "mimalloc": "#1c7ed6", "jemalloc": "#37b24d", "tcmalloc": "#f59f00",
          "glibc": "#868e96"}

# (criterion group, unit of the parameter, chart title)
CRITERION_GROUPS = [
    ("pairs", "bytes", "malloc+free pairs, time relative to mimalloc"),
    ("batch_lifo", "bytes", "1,000 allocations freed in reverse order"),
    ("batch_fifo", "bytes", "1,000 allocations freed in order"),
    ("batch_random", "bytes", "1,000 allocations freed in random order"),
    ("realloc_small", "bytes", "realloc growth 8 B - 4 KiB"),
    ("realloc_medium", "bytes", "realloc growth 4 KiB - 256 KiB"),
    ("larson", "threads", "larson: time per operation relative to mimalloc"),
    ("xmalloc", "threads", "xmalloc: time per operation relative to mimalloc"),
    ("cache_scratch", "threads", "cache-scratch: time per operation relative to mimalloc"),
    ("mstress", "threads", "mstress: time per operation relative to mimalloc"),
]
# (name, cargo bench arguments) of the benchmarks that print their own tables
CUSTOM = [
    ("vec_growth", ["--features", "baselines", "--bench", "vec_growth"]),
    ("remap_under_load", ["--features", "baselines,ablation", "--bench", "remap_under_load"]),
    ("app", ["--features", "baselines"] + sum((["--bench", f"app_{a}"] for a in ALLOCATORS), [])),
    ("torture", ["--features", "baselines"] + sum((["--bench", f"torture_{a}"] for a in ALLOCATORS), [])),
    ("btree", ["--features", "baselines"] + sum((["--bench", f"btree_{a}"] for a in ALLOCATORS), [])),
]


def cargo_bench(args, capture=False):
    cmd = ["cargo", "bench"] + args
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE if capture else None, text=True)
    return out.stdout if capture else None


def run():
    RESULTS.mkdir(parents=True, exist_ok=True)
    cargo_bench(["--features", "baselines", "--bench", "single"])
    cargo_bench(["--features", "baselines", "--bench", "contention"])
    cargo_bench(["--bench", "remap_breakeven"])
    for name, args in CUSTOM:
        (RESULTS / f"{name}.md").write_text(cargo_bench(args, capture=True))


def median_ns(group, allocator, param):
    est = CRITERION / group / allocator / param / "new" / "estimates.json"
    if not est.exists():
        return None
    return json.loads(est.read_text())["median"]["point_estimate"]


def params(group):
    base = CRITERION / group
    found = {p.name for a in base.iterdir() if a.is_dir() for p in a.iterdir() if (p / "new").is_dir()}

    def key(p):
        try:
            return (0, float(p.split("-")[0]), p)
        except ValueError:
            return (1, 0.0, p)

    return sorted(found, key=key)


def fmt_time(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.2f} ns"


def criterion_table(group, unit):
    rows = [f"| {unit} | " + " | ".join(ALLOCATORS) + " | vmarena / mimalloc | vmarena / jemalloc | vmarena / glibc |",
            "|---|" + "---|" * (len(ALLOCATORS) + 3)]
    ratios = {}
    for p in params(group):
        t = {a: median_ns(group, a, p) for a in ALLOCATORS}
        cells = [fmt_time(t[a]) for a in ALLOCATORS]
        for b in ALLOCATORS[1:]:
            cells.append(f"{t['vmarena'] / t[b]:.2f}" if t["vmarena"] and t[b] else "–")
        ratios[p] = {a: (t[a] / t["mimalloc"] if t[a] and t["mimalloc"] else None) for a in ALLOCATORS}
        rows.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(rows), ratios


def heap_median(name):
    est = CRITERION / "heap" / name / "new" / "estimates.json"
    return json.loads(est.read_text())["median"]["point_estimate"] if est.exists() else None


def heap_table():
    """Isolated heaps: vmarena's Heap and LocalHeap against mimalloc's mi_heap_t."""
    group, kinds = "heap", ["vmarena", "vmarena-local", "mimalloc"]
    cases = [("new_drop", "create + drop an empty heap"), ("new_100_drop", "create, 100 blocks of 64 B, drop"),
             ("pair", "malloc + free of 64 B in a heap")]
    rows = ["| case | Heap | LocalHeap | mimalloc heap | Heap / mimalloc | LocalHeap / mimalloc |", "|---|---|---|---|---|---|"]
    for case, what in cases:
        # criterion keeps `bench_function("a/b")` results under `a_b`.
        t = {k: heap_median(f"{k}_{case}") for k in kinds}
        ratio = lambda k: f"{t[k] / t['mimalloc']:.2f}" if t[k] and t["mimalloc"] else "–"
        rows.append(f"| {what} | " + " | ".join(fmt_time(t[k]) for k in kinds) + f" | {ratio('vmarena')} | {ratio('vmarena-local')} |")
    return "\n".join(rows)


def breakeven_table():
    group = "remap_breakeven"
    kinds = ["copy_fresh", "copy_reused", "mremap"]
    rows = ["| bytes | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for p in params(group):
        rows.append(f"| {int(p) >> 10} KiB | " + " | ".join(fmt_time(median_ns(group, k, p)) for k in kinds) + " |")
    return "\n".join(rows)


def bar_chart(title, ratios, path, allocators=ALLOCATORS, width=760):
    """Grouped bars of each allocator's figure (time, memory) relative to mimalloc (lower is better)."""
    groups = list(ratios)
    height, left, bottom, top = 300, 50, 40, 30
    inner_w, inner_h = width - left - 20, height - bottom - top
    peak = max([r for g in ratios.values() for r in g.values() if r] + [1.0]) * 1.1
    gw = inner_w / max(len(groups), 1)
    bw = gw * 0.8 / len(allocators)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{title} (lower is better)</text>']
    for v in [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]:
        if v < peak:
            y = top + inner_h - v / peak * inner_h
            svg.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="{"#000" if v == 1.0 else "#ddd"}"/>')
            svg.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for i, g in enumerate(groups):
        x0 = left + i * gw + gw * 0.1
        for j, a in enumerate(allocators):
            r = ratios[g].get(a)
            if not r:
                continue
            h = r / peak * inner_h
            svg.append(f'<rect x="{x0 + j * bw:.1f}" y="{top + inner_h - h:.1f}" width="{bw * 0.9:.1f}" height="{h:.1f}" fill="{COLORS[a]}"><title>{a} {g}: {r:.2f}</title></rect>')
        svg.append(f'<text x="{left + i * gw + gw / 2:.1f}" y="{height - bottom + 15}" text-anchor="middle">{g}</text>')
    for j, a in enumerate(allocators):
        svg.append(f'<rect x="{left + j * 110}" y="{height - 16}" width="10" height="10" fill="{COLORS[a]}"/>')
        svg.append(f'<text x="{left + j * 110 + 14}" y="{height - 7}">{a}</text>')
    svg.append("</svg>")
    path.write_text("\n".join(svg) + "\n")


def replace_section(doc, name, body):
    pattern = re.compile(rf"(<!-- begin:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
    if not pattern.search(doc):
        sys.exit(f"BENCHMARKS.md has no section {name}")
    return pattern.sub(lambda m: m.group(1) + body.strip() + "\n" + m.group(2), doc)


# --- C programs under LD_PRELOAD (benches/c) ---------------------------------------------------
# Each program runs in a process of its own under every allocator (LD_PRELOAD; glibc is the
# program without a preload), for its wall time, its peak RSS (GNU time's %M) and the RSS it
# reports once it has freed everything.

C_SRC = ROOT / "benches" / "c"
C_BIN = ROOT / "target" / "bench-c"
C_JSON = RESULTS / "c.json"
C_ALLOCATORS = ["vmarena", "mimalloc", "jemalloc", "tcmalloc", "glibc"]
# Debian package and library file name of each baseline
C_BASELINES = {
    "mimalloc": ("libmimalloc2.0", "libmimalloc.so.2*"),
    "jemalloc": ("libjemalloc2", "libjemalloc.so.2"),
    "tcmalloc": ("libtcmalloc-minimal4", "libtcmalloc_minimal.so.4*"),
}
C_PROGRAMS = ["server", "prodcons", "fixed", "mixed", "bursts", "largebursts", "idle"]
# Programs with one thread whatever they are given: one row, not three identical ones.
SINGLE_THREADED = {"mixed", "largebursts"}
# Programs that measure footprint only: they go in the footprint table, not the time table.
FOOTPRINT_ONLY = {"idle"}
# vmarena with its opt-in purger thread, run on the footprint-only programs.
PURGER = "vmarena-purger"
C_THREADS = [1, 2, 8]
C_REPS = 3
# The real program: Debian's interpreter if there is one (not a pyenv shim, whose extra
# processes would be timed too), with every object allocated by malloc.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# Peak RSS comes from GNU time where there is one: the ru_maxrss that wait4 gives this script
# is never below this script's own RSS (Linux counts the spawning process's memory, which the
# child had until its exec), about 15 MiB, above most of the programs' peaks.
TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


def build_c():
    """libvmarena.so and the C programs (into target/bench-c)."""
    cmd = ["cargo", "build", "--release", "-p", "vmarena-c"]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    C_BIN.mkdir(parents=True, exist_ok=True)
    for prog in C_PROGRAMS:
        cmd = ["cc", "-O2", "-fno-builtin", "-pthread", "-std=c11", "-Wall", "-o", str(C_BIN / prog),
               str(C_SRC / f"{prog}.c"), "-ldl"]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


def find_library(package, pattern):
    """The baseline's .so: by name in the usual directories, else in the package's file list."""
    found = sorted(glob.glob(f"/usr/lib/*/{pattern}") + glob.glob(f"/usr/lib/{pattern}"), key=len)
    if found:
        return found[0]
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True).stdout
    found = sorted((f for f in listing.split() if fnmatch.fnmatch(os.path.basename(f), pattern)), key=len)
    return found[0] if found else None


def install_baselines():
    """apt-get install the baseline packages whose library is missing (retrying once after an
    update, for a machine whose package lists were never fetched)."""
    missing = [pkg for pkg, pattern in C_BASELINES.values() if not find_library(pkg, pattern)]
    if not missing:
        return
    install = ["apt-get", "install", "-y", "-qq"] + missing
    print("+", " ".join(install), file=sys.stderr, flush=True)
    try:
        if subprocess.run(install).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"])
            subprocess.run(install)
    except FileNotFoundError:
        print("apt-get not found; cannot install " + " ".join(missing), file=sys.stderr)


def c_allocators():
    """{allocator: LD_PRELOAD value} of the allocators that can run, and {allocator: why not}."""
    preload, skipped = {"vmarena": str(ROOT / "target" / "release" / "libvmarena.so")}, {}
    install_baselines()
    for name, (pkg, pattern) in C_BASELINES.items():
        lib = find_library(pkg, pattern)
        if lib:
            preload[name] = lib
        else:
            skipped[name] = f"{pattern} not found (package {pkg})"
            print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
    preload["glibc"] = ""
    return preload, skipped


def c_cases():
    """(program, threads, argv, extra environment) of every measurement."""
    cases = []
    for prog in C_PROGRAMS:
        for t in [1] if prog in SINGLE_THREADED else C_THREADS:
            args = [str(t), "2000000"] if prog == "bursts" else [str(t)]
            cases.append((prog, t, [str(C_BIN / prog)] + args, {}))
    for t in C_THREADS:
        cases.append(("python", t, [PYTHON, str(C_SRC / "pyobjects.py"), str(t)], {"PYTHONMALLOC": "malloc"}))
    return cases


def sample_huge_pages(parent_pid, stop, most):
    """Until `stop` is set: the most `AnonHugePages` (KiB) of `parent_pid`'s child (the program
    GNU time runs) or of `parent_pid` itself, every 20 ms, into most[0]."""
    def huge_kib(pid):
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    while not stop.is_set():
        pid = parent_pid
        try:
            children = open(f"/proc/{parent_pid}/task/{parent_pid}/children").read().split()
            if children:
                pid = int(children[0])
        except OSError:
            pass
        most[0] = max(most[0], huge_kib(pid))
        stop.wait(0.02)


def measure(argv, preload, extra_env):
    """One run: wall time, peak RSS, minor page faults, the most memory backed by huge pages
    (sampled), and the program's `result` figures, or {"error": why}."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    # The allocator goes to the program only (through env), not to /usr/bin/time.
    settings = dict(extra_env, **({"LD_PRELOAD": preload} if preload else {}))
    command = ["env"] + [f"{k}={v}" for k, v in settings.items()] + argv
    with tempfile.NamedTemporaryFile("w+") as rss, tempfile.TemporaryFile("w+") as out, \
            tempfile.TemporaryFile("w+") as err:
        if TIME:
            command = [TIME, "-f", "%M %R", "-o", rss.name] + command
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        stop, most = threading.Event(), [0]
        sampler = threading.Thread(target=sample_huge_pages, args=(proc.pid, stop, most))
        sampler.start()
        # wait4 rather than proc.wait(): it also returns the child's resource usage
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        # GNU time puts a line about a failed command before the figures
        figures = rss.read().split()[-2:] if TIME and proc.returncode == 0 else []
        maxrss = int(figures[0]) if figures else usage.ru_maxrss
        minflt = int(figures[1]) if figures else usage.ru_minflt
    line = next((l for l in stdout.splitlines() if l.startswith("result ")), None)
    # a preload that fails to load is only a warning to ld.so: the run would be glibc's
    if proc.returncode != 0 or "cannot be preloaded" in stderr or not line:
        last = (stderr.strip().splitlines() or ["no result line"])[-1]
        return {"error": f"exit status {proc.returncode}: {last}"}
    fields = dict(f.split("=", 1) for f in line.split()[2:])
    result = {"wall_s": wall, "maxrss_kib": maxrss, "minflt": minflt, "huge_kib": most[0],
              "ops": int(fields["ops"]), "rss_after_free_kib": int(fields["rss_after_free_kib"])}
    for extra in ("baseline_kib", "idle_kib"):
        if extra in fields:
            result[extra] = int(fields[extra])
    return result


def package_version(package):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


# What `run_c` built libvmarena.so from (see `source_tree`).
BUILT_FROM = None


def source_tree():
    """The commit libvmarena.so was built from, "+changes" if its sources differed from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "capi", "Cargo.toml"], cwd=ROOT,
                           capture_output=True, text=True)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if head.returncode == 0 else None


def save_c(preload, skipped, runs):
    """Raw runs and their medians; a case with a failed run gets no medians."""
    results = []
    for (prog, threads, alloc), done in runs.items():
        errors = [r["error"] for r in done if "error" in r]
        ok = [r for r in done if "error" not in r]

        def med(key):
            return statistics.median(r[key] for r in ok) if ok and not errors else None

        results.append({"program": prog, "threads": threads, "allocator": alloc, "runs": done, "errors": errors,
                        "wall_s": med("wall_s"), "peak_rss_kib": med("maxrss_kib"),
                        "rss_after_free_kib": med("rss_after_free_kib"),
                        "minflt": med("minflt"), "huge_kib": med("huge_kib"),
                        **({k: med(k) for k in ("baseline_kib", "idle_kib") if ok and k in ok[0]})})
    versions = {a: package_version(pkg) for a, (pkg, _) in C_BASELINES.items() if a in preload}
    data = {"vmarena_tree": BUILT_FROM or source_tree(), "load_average": os.getloadavg()[0],
            "allocators": preload, "versions": versions, "skipped": skipped, "python": PYTHON,
            "peak_rss_from": "GNU time %M" if TIME else "wait4 ru_maxrss (at least this script's RSS)",
            "repetitions": C_REPS, "results": results}
    C_JSON.write_text(json.dumps(data, indent=1) + "\n")


def run_c():
    """Every case under every allocator, C_REPS times; allocators alternate within a
    repetition, so a slow spell of the machine falls on all of them."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    build_c()
    global BUILT_FROM
    BUILT_FROM = source_tree()  # now, not when the runs end: the tree may change meanwhile
    preload, skipped = c_allocators()
    cases = c_cases()
    def allocators_for(prog):
        names = list(preload) + ([PURGER] if prog in FOOTPRINT_ONLY else [])
        return [(a, preload.get(a, preload["vmarena"]), {"VMARENA_PURGE_THREAD": "1"} if a == PURGER else {})
                for a in names]
    runs = {(prog, t, a): [] for prog, t, _, _ in cases for a, _, _ in allocators_for(prog)}
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f}; other jobs will skew the times", file=sys.stderr)
    for rep in range(C_REPS):
        for prog, t, argv, extra in cases:
            cells = []
            for alloc, lib, env in allocators_for(prog):
                r = measure(argv, lib, dict(extra, **env))
                runs[(prog, t, alloc)].append(r)
                cells.append(f"{alloc} {r['wall_s']:.3f} s" if "wall_s" in r else f"{alloc} FAILED ({r['error']})")
            print(f"[{rep + 1}/{C_REPS}] {prog} {t}: " + ", ".join(cells), file=sys.stderr, flush=True)
        save_c(preload, skipped, runs)  # after every repetition, so an interrupted run leaves some
    print(f"wrote {C_JSON.relative_to(ROOT)}", file=sys.stderr)


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def geomean_lines(pairs):
    """One line per figure: the geometric mean of vmarena / each baseline over the rows."""
    lines = [""]
    for key, what in [("time", "time"), ("rss", "peak RSS")]:
        means = [f"{b} {geomean(p[key]):.2f} ({len(p[key])} row{'s' * (len(p[key]) != 1)})"
                 for b, p in pairs.items() if p[key]]
        lines.append(f"Geometric mean of vmarena {what} / this over the rows: " + (", ".join(means) or "–") + ".")
    return lines


def c_table(data):
    """The Markdown table, the geometric means under it, and the charts' ratios to mimalloc."""
    allocs = [a for a in C_ALLOCATORS if any(r["allocator"] == a for r in data["results"])]
    cases = {}
    for r in data["results"]:
        if r["program"] not in FOOTPRINT_ONLY:
            cases.setdefault((r["program"], r["threads"]), {})[r["allocator"]] = r

    def value(res, alloc, key):
        r = res.get(alloc)
        return r[key] if r and not r["errors"] else None

    def cell(res, alloc, key, fmt):
        r = res.get(alloc)
        return "–" if r is None else "failed" if r["errors"] else fmt(r[key])

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "–"

    seconds = lambda s: f"{s:.3f} s"  # noqa: E731
    mib = lambda k: f"{k / 1024:.1f} MiB"  # noqa: E731
    rows = ["| program | threads | " + " | ".join(f"{a} time" for a in allocs) + " | vmarena / mimalloc time | "
            + " | ".join(f"{a} peak RSS" for a in allocs) + " | vmarena / mimalloc peak RSS | vmarena RSS after free |",
            "|---|---|" + "---|" * (2 * len(allocs) + 3)]
    time_ratios, rss_ratios, pairs = {}, {}, {b: {"time": [], "rss": []} for b in allocs if b != "vmarena"}
    for (prog, threads), res in cases.items():
        t = {a: value(res, a, "wall_s") for a in allocs}
        m = {a: value(res, a, "peak_rss_kib") for a in allocs}
        rows.append(f"| {prog} | {threads} | " + " | ".join(cell(res, a, "wall_s", seconds) for a in allocs)
                    + f" | {ratio(t.get('vmarena'), t.get('mimalloc'))} | "
                    + " | ".join(cell(res, a, "peak_rss_kib", mib) for a in allocs)
                    + f" | {ratio(m.get('vmarena'), m.get('mimalloc'))} | {cell(res, 'vmarena', 'rss_after_free_kib', mib)} |")
        label = f"{prog} {threads}t"
        time_ratios[label] = {a: t[a] / t["mimalloc"] if t[a] and t.get("mimalloc") else None for a in allocs}
        rss_ratios[label] = {a: m[a] / m["mimalloc"] if m[a] and m.get("mimalloc") else None for a in allocs}
        for b in pairs:
            if t.get("vmarena") and t[b]:
                pairs[b]["time"].append(t["vmarena"] / t[b])
            if m.get("vmarena") and m[b]:
                pairs[b]["rss"].append(m["vmarena"] / m[b])
    return "\n".join(rows), geomean_lines(pairs), allocs, time_ratios, rss_ratios


def footprint_tables(data):
    """Peak RSS and RSS after free of every program, and the idle program's figures."""
    allocs = [a for a in C_ALLOCATORS if any(r["allocator"] == a for r in data["results"])]
    cases = {}
    for r in data["results"]:
        cases.setdefault((r["program"], r["threads"]), {})[r["allocator"]] = r
    mib = lambda k: f"{k / 1024:.1f}" if k is not None else "–"  # noqa: E731

    def ok(res, a):
        r = res.get(a)
        return r if r and not r["errors"] else None

    rows = ["| program | threads | " + " | ".join(allocs) + " | vmarena / mimalloc peak | vmarena / mimalloc after free |",
            "|---|---|" + "---|" * (len(allocs) + 2)]
    ratios = []
    for (prog, threads), res in cases.items():
        cells = []
        for a in allocs:
            r = ok(res, a)
            cells.append(f"{mib(r['peak_rss_kib'])} / {mib(r['rss_after_free_kib'])}" if r else "–")
        vm, mi = ok(res, "vmarena"), ok(res, "mimalloc")
        peak = vm["peak_rss_kib"] / mi["peak_rss_kib"] if vm and mi else None
        after = vm["rss_after_free_kib"] / mi["rss_after_free_kib"] if vm and mi else None
        if peak and prog not in FOOTPRINT_ONLY:
            ratios.append(peak)
        fmt = lambda x: f"{x:.2f}" if x else "–"  # noqa: E731
        rows.append(f"| {prog} | {threads} | " + " | ".join(cells) + f" | {fmt(peak)} | {fmt(after)} |")
    rows.append("")
    if ratios:
        rows.append(f"Geometric mean of vmarena / mimalloc peak RSS over the {len(ratios)} rows of the time "
                    f"benchmarks: {geomean(ratios):.2f}; worst {max(ratios):.2f}.")
    idle = ["| threads | allocator | baseline | peak | right after free | after 3 s idle |", "|---|---|---|---|---|---|"]
    for (prog, threads), res in cases.items():
        if prog != "idle":
            continue
        for a in allocs + [PURGER]:
            r = ok(res, a)
            if r:
                idle.append(f"| {threads} | {a} | {mib(r.get('baseline_kib'))} MiB | {mib(r['peak_rss_kib'])} MiB | "
                            f"{mib(r['rss_after_free_kib'])} MiB | {mib(r.get('idle_kib'))} MiB |")
    return "\n".join(rows), "\n".join(idle)


def faults_table(data):
    """Minor page faults and the most memory backed by huge pages, per program and allocator."""
    allocs = [a for a in C_ALLOCATORS if any(r["allocator"] == a for r in data["results"])]
    cases = {}
    for r in data["results"]:
        if r["program"] not in FOOTPRINT_ONLY:
            cases.setdefault((r["program"], r["threads"]), {})[r["allocator"]] = r

    def cell(res, a, key, fmt):
        r = res.get(a)
        return fmt(r[key]) if r and not r["errors"] and r.get(key) is not None else "–"

    count = lambda n: f"{n:.0f}"  # noqa: E731
    mib = lambda k: f"{k / 1024:.0f}"  # noqa: E731
    rows = ["| program | threads | " + " | ".join(f"{a} faults" for a in allocs) + " | vmarena / mimalloc faults | "
            + " | ".join(f"{a} huge MiB" for a in allocs) + " |",
            "|---|---|" + "---|" * (2 * len(allocs) + 1)]
    ratios = []
    for (prog, threads), res in cases.items():
        vm, mi = res.get("vmarena"), res.get("mimalloc")
        ratio = vm["minflt"] / mi["minflt"] if vm and mi and vm.get("minflt") and mi.get("minflt") else None
        if ratio:
            ratios.append(ratio)
        rows.append(f"| {prog} | {threads} | " + " | ".join(cell(res, a, "minflt", count) for a in allocs)
                    + f" | {f'{ratio:.2f}' if ratio else '–'} | "
                    + " | ".join(cell(res, a, "huge_kib", mib) for a in allocs) + " |")
    if ratios:
        rows += ["", f"Geometric mean of vmarena / mimalloc minor faults over the {len(ratios)} rows: {geomean(ratios):.2f}."]
    return "\n".join(rows)


def c_notes(data):
    """What ran: the libraries, and what was skipped or failed."""
    lines = [""]
    libs = [f"{a} `{lib}`" + (f" ({data['versions'][a]})" if data["versions"].get(a) else "")
            for a, lib in data["allocators"].items() if lib and a != "vmarena"]
    tree = data.get("vmarena_tree")
    built = f"vmarena built from `{tree}`; " if tree else ""
    lines.append(f"Median of {data['repetitions']} runs; {built}baselines: " + ", ".join(libs)
                 + f"; python is `{data['python']}`.")
    for a, why in data["skipped"].items():
        lines.append(f"Skipped {a}: {why}.")
    for r in data["results"]:
        for e in sorted(set(r["errors"])):
            lines.append(f"Failed: {r['program']} at {r['threads']} threads under {r['allocator']}: {e}.")
    return lines


def c_report(doc):
    """BENCHMARKS.md's c_preload section and its two charts, from target/bench-results/c.json."""
    if not C_JSON.exists():
        return doc
    data = json.loads(C_JSON.read_text())
    table, geomeans, allocs, time_ratios, rss_ratios = c_table(data)
    width = max(760, 75 * len(time_ratios) + 70)
    time_title = "C programs under LD_PRELOAD: wall time relative to mimalloc"
    rss_title = "C programs under LD_PRELOAD: peak RSS relative to mimalloc"
    bar_chart(time_title, time_ratios, CHARTS / "c_time.svg", allocs, width)
    bar_chart(rss_title, rss_ratios, CHARTS / "c_rss.svg", allocs, width)
    body = "\n".join([table] + geomeans + c_notes(data) + [
        "", f"![{time_title}](benches/charts/c_time.svg)", "", f"![{rss_title}](benches/charts/c_rss.svg)"])
    doc = replace_section(doc, "c_preload", body)
    if "<!-- begin:c_faults -->" in doc:
        doc = replace_section(doc, "c_faults", faults_table(data))
    footprint, idle = footprint_tables(data)
    if "<!-- begin:footprint -->" in doc:
        doc = replace_section(doc, "footprint", footprint)
    if "<!-- begin:idle -->" in doc:
        doc = replace_section(doc, "idle", idle)
    return doc


def report():
    CHARTS.mkdir(parents=True, exist_ok=True)
    doc = DOC.read_text()
    for group, unit, title in CRITERION_GROUPS:
        if not (CRITERION / group).is_dir():
            continue
        table, ratios = criterion_table(group, unit)
        bar_chart(title, ratios, CHARTS / f"{group}.svg")
        doc = replace_section(doc, group, f"{table}\n\n![{title}](benches/charts/{group}.svg)")
    if (CRITERION / "remap_breakeven").is_dir():
        doc = replace_section(doc, "remap_breakeven", breakeven_table())
    if (CRITERION / "heap").is_dir():
        doc = replace_section(doc, "heap", heap_table())
    for name, _ in CUSTOM:
        out = RESULTS / f"{name}.md"
        if out.exists():
            lines = [l for l in out.read_text().splitlines() if l.strip()]
            if name == "app":
                rows = [l.split() for l in lines if l.startswith("app ")]
                # app NAME <ms> ms <MiB> MiB <faults> faults <MiB> MiB-huge
                base = {r[1]: (float(r[2]), float(r[4]), float(r[6]), float(r[8])) for r in rows}
                vm = base.get("vmarena")
                body = ["| allocator | wall time | peak RSS | minor faults | huge pages (AnonHugePages) | vmarena time / this | vmarena peak RSS / this |",
                        "|---|---|---|---|---|---|---|"]
                for a in ALLOCATORS:
                    if a in base and vm:
                        t, m, f, h = base[a]
                        body.append(f"| {a} | {t:.1f} ms | {m:.1f} MiB | {f:.0f} | {h:.1f} MiB | {vm[0] / t:.2f} | {vm[1] / m:.2f} |")
                doc = replace_section(doc, name, "\n".join(body))
            elif name == "torture":
                rows = [l.split() for l in lines if l.startswith("torture ")]
                # torture NAME <ms> ms <MiB> MiB <MiB> MiB <faults> faults <MiB> MiB-huge
                base = {r[1]: (float(r[2]), float(r[4]), float(r[6]), float(r[8]), float(r[10])) for r in rows}
                vm = base.get("vmarena")
                body = ["| allocator | wall time | peak RSS | RSS after free | minor faults | huge pages (AnonHugePages) | vmarena time / this | vmarena peak RSS / this |",
                        "|---|---|---|---|---|---|---|---|"]
                for a in ALLOCATORS:
                    if a in base and vm:
                        t, m, after, f, h = base[a]
                        body.append(f"| {a} | {t:.1f} ms | {m:.1f} MiB | {after:.1f} MiB | {f:.0f} | {h:.1f} MiB | {vm[0] / t:.2f} | {vm[1] / m:.2f} |")
                doc = replace_section(doc, name, "\n".join(body))
            elif name == "btree":
                rows = [l.split() for l in lines if l.startswith("btree ")]
                # btree NAME <ms> ms <faults> faults <MiB> MiB <MiB> MiB-huge
                base = {r[1]: (float(r[2]), float(r[4]), float(r[6]), float(r[8])) for r in rows}
                vm = base.get("vmarena")
                body = ["| allocator | wall time | minor faults | peak RSS | huge pages (AnonHugePages) | vmarena time / this | vmarena faults / this | vmarena peak RSS / this |",
                        "|---|---|---|---|---|---|---|---|"]
                for a in ALLOCATORS:
                    if a in base and vm:
                        t, f, m, h = base[a]
                        body.append(f"| {a} | {t:.1f} ms | {f:.0f} | {m:.1f} MiB | {h:.1f} MiB | {vm[0] / t:.2f} | {vm[1] / f:.2f} | {vm[2] / m:.2f} |")
                doc = replace_section(doc, name, "\n".join(body))
            else:
                keep = [l for l in lines if l.startswith("|") or not l.startswith(("+", "warning"))]
                doc = replace_section(doc, name, "\n".join(keep))
    doc = c_report(doc)
    doc = startup_report(doc)
    DOC.write_text(doc)
    print(f"updated {DOC.relative_to(ROOT)} and {CHARTS.relative_to(ROOT)}/", file=sys.stderr)


# --- Start-up: `python3 -c pass` under each allocator ---------------------------------------
# A short-lived program pays for whatever the allocator does at start (metadata, page maps,
# huge pages): wall time of many runs, alternating allocators, and peak RSS and faults from
# GNU time.

STARTUP_JSON = RESULTS / "startup.json"
STARTUP_RUNS = 40


def run_startup():
    preload, _ = c_allocators()
    runs = {a: [] for a in preload}
    for _ in range(STARTUP_RUNS):
        for alloc, lib in preload.items():
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            command = ["env"] + ([f"LD_PRELOAD={lib}"] if lib else []) + [PYTHON, "-c", "pass"]
            with tempfile.NamedTemporaryFile("w+") as figures:
                if TIME:
                    command = [TIME, "-f", "%M %R", "-o", figures.name] + command
                start = time.perf_counter()
                subprocess.run(command, env=env, check=True)
                wall = time.perf_counter() - start
                maxrss, minflt = (int(x) for x in figures.read().split()[-2:]) if TIME else (0, 0)
            runs[alloc].append({"wall_s": wall, "maxrss_kib": maxrss, "minflt": minflt})
    data = {"python": PYTHON, "runs": STARTUP_RUNS, "vmarena_tree": source_tree(),
            "results": {a: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "maxrss_kib", "minflt")}
                        for a, rs in runs.items()}}
    STARTUP_JSON.write_text(json.dumps(data, indent=1) + "\n")


def startup_report(doc):
    if not STARTUP_JSON.exists() or "<!-- begin:startup -->" not in doc:
        return doc
    data = json.loads(STARTUP_JSON.read_text())
    res = data["results"]
    glibc = res.get("glibc")
    rows = ["| allocator | wall time | peak RSS | minor faults | time / glibc | peak RSS / glibc |", "|---|---|---|---|---|---|"]
    for a, r in res.items():
        ratio = lambda k: f"{r[k] / glibc[k]:.2f}" if glibc else "–"  # noqa: E731
        rows.append(f"| {a} | {r['wall_s'] * 1e3:.1f} ms | {r['maxrss_kib'] / 1024:.1f} MiB | {r['minflt']:.0f} | "
                    f"{ratio('wall_s')} | {ratio('maxrss_kib')} |")
    rows += ["", f"`{data['python']} -c pass`, median of {data['runs']} runs per allocator, allocators alternating; "
             f"vmarena built from `{data['vmarena_tree']}`."]
    return replace_section(doc, "startup", "\n".join(rows))


def report_c_only():
    """The C section alone, so that `c` leaves the other tables as they stand."""
    CHARTS.mkdir(parents=True, exist_ok=True)
    DOC.write_text(startup_report(c_report(DOC.read_text())))
    print(f"updated the c_preload section of {DOC.name}", file=sys.stderr)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("all", "run", "report", "c"):
        sys.exit(__doc__)
    if what in ("all", "run"):
        run()
    if what in ("all", "run", "c"):
        run_c()
        run_startup()
    if what in ("all", "report"):
        report()
    if what == "c":
        report_c_only()
