#!/usr/bin/env python3
"""Turns criterion's results into the Markdown tables of BENCHMARKS.md.

Usage: scripts/bench_report.py GROUP [GROUP ...]

For each criterion group (e.g. `pairs`), reads target/criterion/GROUP/<allocator>/<param>/new/
estimates.json and prints a table of median times per parameter and allocator, with vmarena's
ratio to each baseline measured in the same run (below 1.0 means vmarena is faster).
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
ORDER = ["vmarena", "mimalloc", "jemalloc", "glibc"]


def median_ns(path):
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.2f} ns"


def param_key(p):
    try:
        return (0, float(p.split("-")[0]), p)
    except ValueError:
        return (1, 0.0, p)


def table(group):
    base = ROOT / group
    if not base.is_dir():
        sys.exit(f"no results for group {group!r} under {ROOT}")
    allocators = [a for a in ORDER if (base / a).is_dir()]
    if not allocators:  # not an allocator comparison: one column per function
        allocators = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "report")
    params = sorted({p.name for a in allocators for p in (base / a).iterdir() if (p / "new").is_dir()}, key=param_key)
    baselines = [a for a in allocators if a != "vmarena"] if "vmarena" in allocators else []
    head = ["parameter"] + allocators + [f"vmarena / {b}" for b in baselines]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in params:
        times = {}
        for a in allocators:
            est = base / a / p / "new" / "estimates.json"
            if est.exists():
                times[a] = median_ns(est)
        row = [p] + [fmt_time(times[a]) if a in times else "–" for a in allocators]
        for b in baselines:
            ok = "vmarena" in times and b in times
            row.append(f"{times['vmarena'] / times[b]:.2f}" if ok else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for g in sys.argv[1:] or ["pairs"]:
        print(f"### {g}\n\n{table(g)}\n")
