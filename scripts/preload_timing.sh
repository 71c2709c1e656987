#!/usr/bin/env bash
# Wall time of the Python workload (capi/tests/workload.py) under glibc, Debian's libmimalloc
# and libvmarena.so, median of 5 runs each, in one run of this script.
#   apt-get install libmimalloc2.0 && cargo build --release -p vmarena-c && scripts/preload_timing.sh
set -euo pipefail
cd "$(dirname "$0")/.."
script=capi/tests/workload.py
mimalloc=$(ls /usr/lib/*/libmimalloc.so.2 2>/dev/null | head -1 || true)
declare -A preload=([glibc]="" [mimalloc]="$mimalloc" [vmarena]="$PWD/target/release/libvmarena.so")
for name in glibc mimalloc vmarena; do
    if [ "$name" = mimalloc ] && [ -z "$mimalloc" ]; then echo "mimalloc: not installed"; continue; fi
    times=()
    for _ in 1 2 3 4 5; do
        start=$(date +%s.%N)
        LD_PRELOAD="${preload[$name]}" python3 "$script" >/dev/null
        end=$(date +%s.%N)
        times+=("$(echo "$end - $start" | bc)")
    done
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
    printf '%-9s %6.3f s\n' "$name" "$median"
done
