#!/usr/bin/env python3
"""What heap profiling costs: the application benchmark, the contention benchmarks and the C
programs under LD_PRELOAD, each run with sampling off and on (VMARENA_PROFILE=1, the default
interval of 512 KiB), the two interleaved round by round; prints BENCHMARKS.md's table of
medians and their ratio (on / off).

    python3 scripts/profile_overhead.py [--rounds N] [--skip-contention]

Uses scripts/benchmarks.py's C programs and measurement (peak RSS and faults too).
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmarks as bench  # noqa: E402

ON = {"VMARENA_PROFILE": "1"}


def app_binary():
    cmd = ["cargo", "bench", "--features", "baselines", "--bench", "app_vmarena", "--no-run"]
    subprocess.run(cmd, cwd=bench.ROOT, check=True)
    found = [p for p in glob.glob(str(bench.ROOT / "target/release/deps/app_vmarena-*"))
             if os.access(p, os.X_OK) and not p.endswith(".d")]
    return max(found, key=os.path.getmtime)


def app_run(binary, env):
    out = subprocess.run([binary, "--child"], env=dict(os.environ, **env), capture_output=True,
                         text=True, check=True).stdout.split()
    return {"wall_s": float(out[0]), "maxrss_kib": float(out[1]), "minflt": float(out[2])}


def contention_run(env, groups):
    """Criterion's median per benchmark id (ns per iteration), one short run of every group."""
    pattern = f"^({'|'.join(groups)})/vmarena/(1|2|8)$"
    cmd = ["cargo", "bench", "--features", "baselines", "--bench", "contention", "--", pattern,
           "--warm-up-time", "1", "--measurement-time", "3", "--noplot"]
    text = subprocess.run(cmd, cwd=bench.ROOT, env=dict(os.environ, **env), capture_output=True,
                          text=True, check=True).stdout
    results = {}
    for m in re.finditer(r"^(\S+/vmarena/\d+)\s+time:\s+\[\S+ \S+ (\S+) (\S+)", text, re.M):
        value, unit = float(m.group(2)), m.group(3)
        results[m.group(1)] = value * {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
    return results


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-contention", action="store_true")
    args = parser.parse_args()

    bench.build_c()
    lib = str(bench.ROOT / "target" / "release" / "libvmarena.so")
    app = app_binary()
    rows = {}  # name -> mode -> list of runs

    def add(name, mode, result):
        rows.setdefault(name, {"off": [], "on": []})[mode].append(result)

    c_cases = [c for c in bench.c_cases() if c[0] not in bench.FOOTPRINT_ONLY]
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for mode, env in (("off", {}), ("on", ON)) if r % 2 == 0 else (("on", ON), ("off", {})):
            add("app (rayon, 2 threads)", mode, app_run(app, env))
            for prog, threads, argv, extra in c_cases:
                result = bench.measure(argv, lib, dict(extra, **env))
                if "error" in result:
                    sys.exit(f"{prog} {threads}: {result['error']}")
                add(f"C {prog}, {threads} thread{'s' if threads > 1 else ''}", mode, result)
    contention = {}
    if not args.skip_contention:
        groups = ["larson", "xmalloc", "cache_scratch", "mstress"]
        for r in range(max(2, args.rounds // 2)):
            for mode, env in (("off", {}), ("on", ON)) if r % 2 == 0 else (("on", ON), ("off", {})):
                for name, ns in contention_run(env, groups).items():
                    contention.setdefault(name, {"off": [], "on": []})[mode].append(ns)

    print("| workload | time off | time on | on / off | peak RSS off → on | faults off → on |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for name, runs in rows.items():
        t_off, t_on = (med([x["wall_s"] for x in runs[m]]) for m in ("off", "on"))
        rss = [med([x["maxrss_kib"] for x in runs[m]]) / 1024 for m in ("off", "on")]
        flt = [med([x["minflt"] for x in runs[m]]) for m in ("off", "on")]
        ratios.append(t_on / t_off)
        print(f"| {name} | {t_off:.3f} s | {t_on:.3f} s | {t_on / t_off:.3f} | "
              f"{rss[0]:.1f} → {rss[1]:.1f} MiB | {flt[0]:.0f} → {flt[1]:.0f} |")
    for name, runs in contention.items():
        t_off, t_on = med(runs["off"]), med(runs["on"])
        ratios.append(t_on / t_off)
        print(f"| contention {name} (per operation) | {t_off:.2f} ns | {t_on:.2f} ns | "
              f"{t_on / t_off:.3f} | | |")
    print(f"\nGeometric mean of on / off over the {len(ratios)} rows: {bench.geomean(ratios):.3f}")


if __name__ == "__main__":
    main()
