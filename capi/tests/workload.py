# An allocation-heavy Python program with threads: dictionaries of lists and strings built,
# sorted and hashed on eight threads. Used by tests/preload.rs (its output must not change
# under LD_PRELOAD=libvmarena.so) and by scripts/preload_timing.sh (its wall time).
import hashlib
import threading

results = {}


def work(n):
    d = {}
    for i in range(120000):
        d[str(i * n)] = [i] * (i % 7) + [str(i) * (i % 5)]
    keys = sorted(d.keys(), key=lambda k: (len(k), k))
    blob = "".join(keys[:5000]).encode() * 20
    results[n] = (len(d), hashlib.sha256(blob).hexdigest()[:16], sum(len(v) for v in d.values()))


threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for n in sorted(results):
    print(n, *results[n])
