//! Profiling aid: tight loops through vmarena called via `&dyn GlobalAlloc`, as the comparison
//! benchmarks call it: malloc+free pairs, and batches of 1,000 freed in order.
//! `cargo run --release --example pairs_loop -- <size> <iterations>` (e.g. under `perf record`).
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000_000);
    let layout = Layout::from_size_align(size, 8).unwrap();
    let a: &dyn GlobalAlloc = black_box(&vmarena::VmArena);
    let t = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: non-zero size, freed with its layout.
        unsafe {
            let p = a.alloc(black_box(layout));
            black_box(p);
            a.dealloc(p, layout);
        }
    }
    let pairs = t.elapsed().as_nanos() as f64 / n as f64;
    let mut blocks = vec![std::ptr::null_mut(); 1000];
    let t = std::time::Instant::now();
    for _ in 0..n / 1000 {
        // SAFETY: as above.
        unsafe {
            for p in blocks.iter_mut() {
                *p = a.alloc(layout);
            }
            for &p in &blocks {
                a.dealloc(black_box(p), layout);
            }
        }
    }
    let batch = t.elapsed().as_nanos() as f64 / (n / 1000 * 1000) as f64;
    println!("{pairs:.2} ns per pair, {batch:.2} ns per block in batches");
}
