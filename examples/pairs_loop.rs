//! Profiling aid: a tight loop of malloc+free pairs through vmarena, called through
//! `&dyn GlobalAlloc` as the comparison benchmarks do (`perf record` it).
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
    println!(
        "{:.2} ns per pair",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
