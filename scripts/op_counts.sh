#!/bin/sh
# Instructions per malloc and per free, free of startup: callgrind on examples/pairs_loop.rs
# with n = 100000 and 200000; the difference of the inclusive counts of the allocator's
# `alloc` and `dealloc` functions, divided by 100000.
# Usage: scripts/op_counts.sh <allocator> <mode> <size>...   (build the example first:
#   cargo build --release --example pairs_loop --features baselines)
# The C entry points: scripts/op_counts.sh c pairs <size>...: benches/c/pairs.c under
# LD_PRELOAD=target/release/libvmarena.so (build it first: cargo build --release -p vmarena-c),
# counting inside `malloc` and `free`.
set -eu
bin=${PAIRS_LOOP:-target/release/examples/pairs_loop}
alloc=$1 mode=$2
shift 2
tmp=$(mktemp -d)
if [ "$alloc" = c ]; then
    cc -O2 -o "$tmp/pairs" benches/c/pairs.c
    lib=$(realpath target/release/libvmarena.so)
fi
count() { # $1 = n; prints "alloc dealloc": instructions inside each function, callees included
    if [ "$alloc" = c ]; then
        for f in malloc free; do
            LD_PRELOAD=$lib valgrind --tool=callgrind --callgrind-out-file="$tmp/out" \
                "--toggle-collect=$f" "$tmp/pairs" "$size" "$1" 2>&1 >/dev/null |
                sed -n 's/.*I *refs: *//p' | tr -d ,
        done | tr '\n' ' '
        return
    fi
    for f in alloc dealloc; do
        valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "--toggle-collect=*GlobalAlloc>::$f" \
            "$bin" "$size" "$1" "$mode" "$alloc" 2>&1 >/dev/null | sed -n 's/.*I *refs: *//p' | tr -d ,
    done | tr '\n' ' '
}
for size in "$@"; do
    set -- $(count 100000) $(count 200000)
    awk -v a1="$1" -v d1="$2" -v a2="$3" -v d2="$4" -v s="$size" -v al="$alloc" -v m="$mode" \
        'BEGIN { printf "%-9s %-6s %5d B  malloc %6.2f  free %6.2f  pair %6.2f\n", al, m, s, (a2-a1)/1e5, (d2-d1)/1e5, (a2-a1+d2-d1)/1e5 }'
done
rm -r "$tmp"
