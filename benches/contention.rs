//! Multi-threaded benchmarks at 1, 2, 4 and 8 threads (this machine has 2 cores: 4 and 8 are
//! oversubscribed, which is realistic and must not collapse).
//!
//! `cargo bench --bench contention` (vmarena and glibc; `--features baselines` adds mimalloc and
//! jemalloc, built from C)
//!
//! Each benchmark's time is the wall time per operation per thread, for a fixed number of
//! operations on every thread (criterion's `iter_custom`).
//!
//! * `larson`: each thread replaces random blocks (16..1024 bytes) in a shared array of slots,
//!   moving to another thread's part of the array every 10,000 operations, so it frees blocks
//!   other threads allocated (after Larson and Krishnan's server benchmark).
//! * `xmalloc`: half the threads allocate batches of blocks, the other half free them: every
//!   free is remote (after Lever and Boreham's xmalloc test). One thread: batches are freed by
//!   their producer.
//! * `cache_scratch`: each thread frees a small block the main thread allocated, then allocates
//!   small blocks and writes them hard. An allocator that hands threads blocks in the same cache
//!   line makes the writes slow (allocator-induced false sharing; after Hoard's test).
//! * `mstress`: bursts of allocations with mixed sizes and lifetimes: half die at once, the rest
//!   live for up to 16 bursts; every 8th burst's survivors go to another thread to die there.

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

type Alloc = &'static (dyn GlobalAlloc + Sync);
/// A benchmark: runs `ops` operations on each of `threads` threads, returns the wall time.
type Workload = fn(Alloc, usize, u64) -> Duration;

const THREADS: [usize; 4] = [1, 2, 4, 8];

use support::Rng;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// A block as one word: address in the low 48 bits, size in the high 16.
fn pack(p: *mut u8, size: usize) -> u64 {
    (size as u64) << 48 | p as u64
}
fn unpack(w: u64) -> (*mut u8, usize) {
    ((w & ((1 << 48) - 1)) as *mut u8, (w >> 48) as usize)
}

fn larson(alloc: Alloc, threads: usize, ops: u64) -> Duration {
    const SLOTS: usize = 1000;
    const ROTATE: u64 = 10_000;
    let slots: Vec<AtomicU64> = (0..threads * SLOTS).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let slots = &slots;
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + t as u64);
                for j in 0..ops {
                    let part = (t + (j / ROTATE) as usize) % threads;
                    let r = rng.next();
                    let i = part * SLOTS + (r as usize % SLOTS);
                    let size = 16 + (r >> 20) as usize % 1009;
                    // SAFETY: non-zero size; blocks are freed once, with their size.
                    unsafe {
                        let p = alloc.alloc(layout(size));
                        p.write(1);
                        // AcqRel: the block's writes reach whichever thread frees it.
                        let old = slots[i].swap(pack(p, size), Ordering::AcqRel);
                        if old != 0 {
                            let (q, n) = unpack(old);
                            alloc.dealloc(q, layout(n));
                        }
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    for slot in slots {
        let w = slot.into_inner();
        if w != 0 {
            let (p, n) = unpack(w);
            // SAFETY: the last block in each slot, freed once.
            unsafe { alloc.dealloc(p, layout(n)) };
        }
    }
    elapsed
}

fn xmalloc(alloc: Alloc, threads: usize, ops: u64) -> Duration {
    const BATCH: usize = 256;
    let batches = (ops as usize).div_ceil(BATCH);
    let produce = |rng: &mut Rng| -> Vec<u64> {
        (0..BATCH)
            .map(|_| {
                let size = 16 + rng.next() as usize % 1009;
                // SAFETY: non-zero size.
                let p = unsafe { alloc.alloc(layout(size)) };
                // SAFETY: the block has at least one byte.
                unsafe { p.write(1) };
                pack(p, size)
            })
            .collect()
    };
    let consume = |batch: Vec<u64>| {
        for w in batch {
            let (p, n) = unpack(w);
            // SAFETY: each block is freed once, with its size.
            unsafe { alloc.dealloc(black_box(p), layout(n)) };
        }
    };
    let start = Instant::now();
    if threads == 1 {
        let mut rng = Rng(7);
        for _ in 0..batches {
            consume(produce(&mut rng));
        }
        return start.elapsed();
    }
    std::thread::scope(|s| {
        for pair in 0..threads / 2 {
            let (tx, rx) = mpsc::sync_channel::<Vec<u64>>(8);
            s.spawn(move || {
                let mut rng = Rng(0xABCD + pair as u64);
                for _ in 0..batches {
                    tx.send(produce(&mut rng)).unwrap();
                }
            });
            s.spawn(move || {
                for batch in rx {
                    consume(batch);
                }
            });
        }
    });
    start.elapsed()
}

fn cache_scratch(alloc: Alloc, threads: usize, ops: u64) -> Duration {
    const WRITES: usize = 256;
    // Small blocks from the main thread, very likely next to each other.
    let given: Vec<u64> = (0..threads)
        // SAFETY: non-zero size.
        .map(|_| pack(unsafe { alloc.alloc(layout(8)) }, 8))
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for &w in &given {
            s.spawn(move || {
                let (p, n) = unpack(w);
                // SAFETY: the main thread's block, freed here once (a remote free).
                unsafe { alloc.dealloc(p, layout(n)) };
                for _ in 0..ops {
                    // SAFETY: non-zero size; freed once.
                    unsafe {
                        let q = alloc.alloc(layout(8));
                        for i in 0..WRITES {
                            std::ptr::write_volatile(q, i as u8);
                        }
                        alloc.dealloc(q, layout(8));
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn mstress(alloc: Alloc, threads: usize, ops: u64) -> Duration {
    const BURST: usize = 64;
    const GENERATIONS: usize = 16;
    let mailboxes: Vec<Mutex<Vec<Vec<u64>>>> =
        (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    let bursts = (ops as usize).div_ceil(BURST);
    let free_all = |blocks: Vec<u64>| {
        for w in blocks {
            let (p, n) = unpack(w);
            // SAFETY: each block is freed once, with its size.
            unsafe { alloc.dealloc(p, layout(n)) };
        }
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let mailboxes = &mailboxes;
            s.spawn(move || {
                let mut rng = Rng(0x5151 + t as u64);
                let mut ring: Vec<Vec<u64>> = Vec::with_capacity(GENERATIONS);
                for b in 0..bursts {
                    let mut survivors = Vec::with_capacity(BURST);
                    for _ in 0..BURST {
                        let r = rng.next();
                        let size = match r % 1000 {
                            0 => 256 << 10,
                            1..=50 => 4096 + (r >> 16) as usize % (60 << 10),
                            _ => 8 + (r >> 16) as usize % 500,
                        };
                        // SAFETY: non-zero size.
                        let p = unsafe { alloc.alloc(layout(size)) };
                        // SAFETY: the block has at least one byte.
                        unsafe { p.write(1) };
                        if r & (1 << 40) != 0 {
                            survivors.push(pack(p, size));
                        } else {
                            // SAFETY: freed once, with its size.
                            unsafe { alloc.dealloc(p, layout(size)) };
                        }
                    }
                    if b % 8 == 7 && threads > 1 {
                        mailboxes[(t + 1) % threads].lock().unwrap().push(survivors);
                    } else {
                        if ring.len() == GENERATIONS {
                            free_all(ring.remove(0));
                        }
                        ring.push(survivors);
                    }
                    let mail = std::mem::take(&mut *mailboxes[t].lock().unwrap());
                    for blocks in mail {
                        free_all(blocks);
                    }
                }
                for blocks in ring {
                    free_all(blocks);
                }
            });
        }
    });
    for mailbox in mailboxes {
        for blocks in mailbox.into_inner().unwrap() {
            free_all(blocks);
        }
    }
    start.elapsed()
}

fn contention(c: &mut Criterion) {
    let benches: [(&str, Workload); 4] = [
        ("larson", larson),
        ("xmalloc", xmalloc),
        ("cache_scratch", cache_scratch),
        ("mstress", mstress),
    ];
    for (bench, run) in benches {
        let mut group = c.benchmark_group(bench);
        for threads in THREADS {
            for (name, alloc) in support::all() {
                group.bench_function(BenchmarkId::new(name, threads), |b| {
                    b.iter_custom(|iters| run(alloc, threads, iters))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = contention
}
criterion_main!(benches);
