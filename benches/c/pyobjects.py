# pyobjects.py: a real program under LD_PRELOAD: CPython building and discarding objects.
#
# Run with PYTHONMALLOC=malloc, so that every object goes through the preloaded malloc
# instead of CPython's own small-object allocator (pymalloc). Each round builds a dict of
# short strings, lists and tuples, sorts its keys, joins some strings and drops it all.
# The GIL lets one thread run at a time, but the threads still allocate and free from
# several OS threads (frees of objects made by another thread happen at handover).
#
#   python3 pyobjects.py [threads [rounds]]     defaults: 1 thread, 600 rounds in all
#
# The total work is fixed and split between the threads. Prints
#   result python threads=<n> ops=<rounds> rss_after_free_kib=<k>
import ctypes
import gc
import os
import sys
import threading

ITEMS = 2000  # entries per round's dict


def one_round(seed):
    d = {}
    for i in range(ITEMS):
        k = seed * 7919 + i
        d[f"key{k}"] = [str(k)] * (k % 5) + [(k, str(k * 3))]
    keys = sorted(d, key=lambda s: (len(s), s))
    text = "-".join(keys[:500])
    return len(d) + len(text) + sum(len(v) for v in d.values())


def work(first, count, out):
    out.append(sum(one_round(first + r) for r in range(count)))


def rss_after_free_kib():
    """RSS once everything is dropped and, where the allocator has it, malloc_trim(0) ran."""
    gc.collect()
    libc = ctypes.CDLL(None)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGESIZE") // 1024


def main():
    threads = max(1, int(sys.argv[1])) if len(sys.argv) > 1 else 1
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    per = rounds // threads
    out = []
    pool = [threading.Thread(target=work, args=(t * per, per, out)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(out) == threads and all(out), out
    del out, pool
    rss = rss_after_free_kib()
    print(f"result python threads={threads} ops={per * threads} rss_after_free_kib={rss}")


main()
