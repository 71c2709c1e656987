#!/usr/bin/env python3
"""What one small malloc+free costs, vmarena against mimalloc: simulated counts.

This machine's VM exposes no hardware counters (`perf stat -e instructions` says
"<not supported>"), so the per-operation counts `perf stat` would give come from valgrind's
simulator instead: callgrind with `--cache-sim=yes --branch-sim=yes`, collecting only inside
the allocator's `alloc` and `dealloc` (called through `&dyn GlobalAlloc`, as the benchmarks
call them), run with n and 2n operations so that startup cancels out. Counts are per
malloc+free (a pair, or one block of a batch of 1,000); the cache simulated is valgrind's
default for this CPU (its D1 and LL sizes), its branch predictor a simple model, so misses are
indicative, instructions exact. (`scripts/op_counts.sh` gives instructions only, split into
malloc and free.)

Usage (build first: cargo build --release --example pairs_loop --features baselines):
  scripts/op_profile.py [--cases pairs:16,fifo:16,...]
"""
import argparse
import os
import re
import subprocess
import tempfile

BIN = os.environ.get("PAIRS_LOOP", "target/release/examples/pairs_loop")
EVENTS = ["Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw", "Bc", "Bcm", "Bi", "Bim"]
DEFAULT_CASES = [("pairs", s) for s in (8, 16, 32, 64, 128, 256, 512, 1024, 4096, 32768)] + [
    (m, s) for m in ("lifo", "fifo", "random") for s in (16, 128, 1024)
]
N = 100_000


def collected(alloc, mode, size, n):
    """callgrind's event totals inside alloc and dealloc for n operations."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--branch-sim=yes",
             f"--callgrind-out-file={tmp}/out",
             "--toggle-collect=*GlobalAlloc>::alloc", "--toggle-collect=*GlobalAlloc>::dealloc",
             BIN, str(size), str(n), mode, alloc],
            capture_output=True, text=True, check=True).stderr
    line = re.search(r"Collected : ([\d ]+)", out).group(1).split()
    values = [int(v) for v in line] + [0] * (len(EVENTS) - len(line))
    return dict(zip(EVENTS, values))


def per_op(alloc, mode, size):
    one, two = collected(alloc, mode, size, N), collected(alloc, mode, size, 2 * N)
    return {e: (two[e] - one[e]) / N for e in EVENTS}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", help="mode:size,... (default: pairs 8 B-32 KiB, batches)")
    args = ap.parse_args()
    cases = DEFAULT_CASES
    if args.cases:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    print("| case | allocator | instructions | loads | stores | branches | mispredicts "
          "| D1 misses | LL misses |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, size in cases:
        for alloc in ("vmarena", "mimalloc"):
            c = per_op(alloc, mode, size)
            row = (f"| {mode} {size} B | {alloc} | {c['Ir']:.1f} | {c['Dr']:.1f} | {c['Dw']:.1f} "
                   f"| {c['Bc'] + c['Bi']:.1f} | {c['Bcm'] + c['Bim']:.3f} "
                   f"| {c['D1mr'] + c['D1mw']:.3f} | {c['DLmr'] + c['DLmw']:.3f} |")
            print(row, flush=True)


if __name__ == "__main__":
    main()
