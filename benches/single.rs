//! Single-thread benchmarks: the cost of the fast paths and of simple allocation patterns.
//!
//! `cargo bench --bench single` (vmarena and glibc; `--features baselines` adds mimalloc and
//! jemalloc, built from C)
//!
//! * `pairs/<allocator>/<size>`: one malloc and its free per iteration.
//! * `batch_{lifo,fifo,random}/<allocator>/<size>`: allocate 1,000 blocks, then free them in
//!   reverse, forward or shuffled order; the time is per block.
//! * `realloc_{small,medium}/<allocator>/<growth>`: grow a block by reallocating it 1.5x at a
//!   time from 8 bytes to 4 KiB (small) or from 4 KiB to 256 KiB (medium); per realloc.
//! * `heap/<allocator>/<case>`: isolated heaps (`vmarena::Heap`, mimalloc's `mi_heap_t`):
//!   create and drop an empty heap (`new_drop`), create one, allocate 100 blocks of 64 B and
//!   drop it without freeing them (`new_100_drop`), and a malloc+free pair of 64 B in a heap
//!   (`pair`); `vmarena-local` is `vmarena::LocalHeap`, the heap without a mutex.

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 1000;

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("pairs");
    group.throughput(Throughput::Elements(1));
    for size in [8usize, 16, 32, 64, 128, 256, 512, 1024, 4096, 8192, 32768] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for (name, alloc) in support::all() {
            group.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &layout| {
                b.iter(|| {
                    // SAFETY: non-zero size; the block is freed with its layout.
                    unsafe {
                        let p = alloc.alloc(black_box(layout));
                        black_box(p);
                        alloc.dealloc(p, layout);
                    }
                })
            });
        }
    }
    group.finish();
}

/// A fixed shuffle of 0..BATCH (xorshift-driven Fisher-Yates).
fn shuffled() -> Vec<usize> {
    let mut order: Vec<usize> = (0..BATCH).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..BATCH).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

fn batches(c: &mut Criterion) {
    let random = shuffled();
    for (group_name, order) in [
        ("batch_lifo", (0..BATCH).rev().collect::<Vec<_>>()),
        ("batch_fifo", (0..BATCH).collect()),
        ("batch_random", random),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(BATCH as u64));
        for size in [16usize, 128, 1024] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            for (name, alloc) in support::all() {
                let order = order.clone();
                group.bench_with_input(BenchmarkId::new(name, size), &layout, move |b, &layout| {
                    let mut blocks = vec![std::ptr::null_mut::<u8>(); BATCH];
                    b.iter(|| {
                        // SAFETY: non-zero size; each block is freed once with its layout.
                        unsafe {
                            for p in blocks.iter_mut() {
                                *p = alloc.alloc(layout);
                            }
                            for &i in &order {
                                alloc.dealloc(black_box(blocks[i]), layout);
                            }
                        }
                    })
                });
            }
        }
        group.finish();
    }
}

/// Grows one block from `from` to `to` bytes, 1.5x per realloc; returns the number of reallocs.
fn grow(alloc: &dyn GlobalAlloc, from: usize, to: usize) -> usize {
    let mut size = from;
    let mut layout = Layout::from_size_align(size, 8).unwrap();
    let mut steps = 0;
    // SAFETY: non-zero sizes; the block is freed with its current layout.
    unsafe {
        let mut p = alloc.alloc(layout);
        p.write(1);
        while size < to {
            let new = size + size / 2;
            p = alloc.realloc(p, layout, new);
            p.add(new - 1).write(1);
            size = new;
            layout = Layout::from_size_align(size, 8).unwrap();
            steps += 1;
        }
        alloc.dealloc(black_box(p), layout);
    }
    steps
}

fn reallocs(c: &mut Criterion) {
    for (group_name, from, to) in [
        ("realloc_small", 8usize, 4096usize),
        ("realloc_medium", 4096, 256 << 10),
    ] {
        let mut group = c.benchmark_group(group_name);
        let steps = grow(&support::GLIBC, from, to);
        group.throughput(Throughput::Elements(steps as u64));
        for (name, alloc) in support::all() {
            group.bench_function(BenchmarkId::new(name, format!("{from}-{to}")), |b| {
                b.iter(|| grow(alloc, from, to))
            });
        }
        group.finish();
    }
}

fn heaps(c: &mut Criterion) {
    let mut group = c.benchmark_group("heap");
    let layout = Layout::from_size_align(64, 8).unwrap();
    group.bench_function("vmarena/new_drop", |b| {
        b.iter(|| drop(black_box(vmarena::Heap::new())))
    });
    group.bench_function("vmarena/new_100_drop", |b| {
        b.iter(|| {
            let heap = vmarena::Heap::new();
            for _ in 0..100 {
                black_box(heap.alloc(layout));
            }
            drop(heap)
        })
    });
    let heap = vmarena::Heap::new();
    group.bench_function("vmarena/pair", |b| {
        b.iter(|| {
            let p = heap.alloc(black_box(layout));
            // SAFETY: a live block of `heap` with this layout.
            unsafe { heap.dealloc(black_box(p), layout) };
        })
    });
    let local = vmarena::LocalHeap::new();
    group.bench_function("vmarena-local/pair", |b| {
        b.iter(|| {
            let p = local.alloc(black_box(layout));
            // SAFETY: a live block of `local` with this layout.
            unsafe { local.dealloc(black_box(p), layout) };
        })
    });
    group.bench_function("vmarena-local/new_100_drop", |b| {
        b.iter(|| {
            let heap = vmarena::LocalHeap::new();
            for _ in 0..100 {
                black_box(heap.alloc(layout));
            }
            drop(heap)
        })
    });
    #[cfg(feature = "baselines")]
    {
        use libmimalloc_sys as mi;
        group.bench_function("mimalloc/new_drop", |b| {
            // SAFETY: a fresh heap, destroyed once.
            b.iter(|| unsafe { mi::mi_heap_destroy(black_box(mi::mi_heap_new())) })
        });
        group.bench_function("mimalloc/new_100_drop", |b| {
            // SAFETY: a fresh heap, used on this thread and destroyed once.
            b.iter(|| unsafe {
                let heap = mi::mi_heap_new();
                for _ in 0..100 {
                    black_box(mi::mi_heap_malloc(heap, 64));
                }
                mi::mi_heap_destroy(heap)
            })
        });
        // SAFETY: a heap of this thread, destroyed below after its last use.
        let heap = unsafe { mi::mi_heap_new() };
        group.bench_function("mimalloc/pair", |b| {
            // SAFETY: blocks of `heap`, freed once.
            b.iter(|| unsafe { mi::mi_free(black_box(mi::mi_heap_malloc(heap, black_box(64)))) })
        });
        // SAFETY: the heap created above, no longer used.
        unsafe { mi::mi_heap_destroy(heap) };
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = pairs, batches, reallocs, heaps
}
criterion_main!(benches);
