#!/usr/bin/env python3
"""Runs the benchmark suite and regenerates BENCHMARKS.md's tables and charts from it.

    python3 scripts/benchmarks.py            # run everything, then report
    python3 scripts/benchmarks.py run        # only run (results under target/bench-results)
    python3 scripts/benchmarks.py report     # only regenerate tables and charts

Criterion benchmarks leave their medians in target/criterion; the others (which need a
process per measurement, for peak RSS) print Markdown tables, saved under
target/bench-results. The report replaces what stands between `<!-- begin:NAME -->` and
`<!-- end:NAME -->` in BENCHMARKS.md, and writes SVG charts to benches/charts/. Only the
standard library is needed.
"""
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
RESULTS = ROOT / "target" / "bench-results"
CHARTS = ROOT / "benches" / "charts"
DOC = ROOT / "BENCHMARKS.md"
ALLOCATORS = ["vmarena", "mimalloc", "jemalloc", "glibc"]
COLORS = {"vmarena": "#d9480f", "mimalloc": "#1c7ed6", "jemalloc": "#37b24d", "glibc": "#868e96"}

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


def breakeven_table():
    group = "remap_breakeven"
    kinds = ["copy_fresh", "copy_reused", "mremap"]
    rows = ["| bytes | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for p in params(group):
        rows.append(f"| {int(p) >> 10} KiB | " + " | ".join(fmt_time(median_ns(group, k, p)) for k in kinds) + " |")
    return "\n".join(rows)


def bar_chart(title, ratios, path):
    """Grouped bars of each allocator's time relative to mimalloc (lower is better)."""
    groups = list(ratios)
    width, height, left, bottom, top = 760, 300, 50, 40, 30
    inner_w, inner_h = width - left - 20, height - bottom - top
    peak = max([r for g in ratios.values() for r in g.values() if r] + [1.0]) * 1.1
    gw = inner_w / max(len(groups), 1)
    bw = gw * 0.8 / len(ALLOCATORS)
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
        for j, a in enumerate(ALLOCATORS):
            r = ratios[g].get(a)
            if not r:
                continue
            h = r / peak * inner_h
            svg.append(f'<rect x="{x0 + j * bw:.1f}" y="{top + inner_h - h:.1f}" width="{bw * 0.9:.1f}" height="{h:.1f}" fill="{COLORS[a]}"><title>{a} {g}: {r:.2f}</title></rect>')
        svg.append(f'<text x="{left + i * gw + gw / 2:.1f}" y="{height - bottom + 15}" text-anchor="middle">{g}</text>')
    for j, a in enumerate(ALLOCATORS):
        svg.append(f'<rect x="{left + j * 110}" y="{height - 16}" width="10" height="10" fill="{COLORS[a]}"/>')
        svg.append(f'<text x="{left + j * 110 + 14}" y="{height - 7}">{a}</text>')
    svg.append("</svg>")
    path.write_text("\n".join(svg) + "\n")


def replace_section(doc, name, body):
    pattern = re.compile(rf"(<!-- begin:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
    if not pattern.search(doc):
        sys.exit(f"BENCHMARKS.md has no section {name}")
    return pattern.sub(lambda m: m.group(1) + body.strip() + "\n" + m.group(2), doc)


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
    for name, _ in CUSTOM:
        out = RESULTS / f"{name}.md"
        if out.exists():
            lines = [l for l in out.read_text().splitlines() if l.strip()]
            if name == "app":
                rows = [l.split() for l in lines if l.startswith("app ")]
                base = {r[1]: (float(r[2]), float(r[4])) for r in rows}
                vm = base.get("vmarena")
                body = ["| allocator | wall time | peak RSS | vmarena time / this | vmarena peak RSS / this |", "|---|---|---|---|---|"]
                for a in ALLOCATORS:
                    if a in base and vm:
                        t, m = base[a]
                        body.append(f"| {a} | {t:.1f} ms | {m:.1f} MiB | {vm[0] / t:.2f} | {vm[1] / m:.2f} |")
                doc = replace_section(doc, name, "\n".join(body))
            else:
                keep = [l for l in lines if l.startswith("|") or not l.startswith(("+", "warning"))]
                doc = replace_section(doc, name, "\n".join(keep))
    DOC.write_text(doc)
    print(f"updated {DOC.relative_to(ROOT)} and {CHARTS.relative_to(ROOT)}/", file=sys.stderr)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("all", "run"):
        run()
    if what in ("all", "report"):
        report()
