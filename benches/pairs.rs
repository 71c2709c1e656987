//! Single-thread malloc+free pairs per size: the cost of the fast paths.
//!
//! `cargo bench --features baselines --bench pairs`

mod support;

use std::alloc::Layout;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("pairs");
    group.throughput(Throughput::Elements(1));
    for size in [8usize, 16, 64, 256, 1024, 8192, 32768] {
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

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = pairs
}
criterion_main!(benches);
