//! What one heap-profile sample costs, whole: the stack walk, the table, the block that
//! carries the sample, and its free. Every 16-byte allocation is sampled (interval 1 byte),
//! at call depths of 0, 20 and 50 frames below the measuring function; the same loop with
//! sampling off is the baseline. Through the global allocator, as a Rust program allocates.
//!
//!     cargo bench --bench sample_cost [-- <pairs per round>]
//!
//! Prints, per depth, the median over 9 rounds of nanoseconds per malloc/free pair off and on,
//! and their difference: the cost of a sample.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;

use vmarena::VmArena;

#[global_allocator]
static GLOBAL: VmArena = VmArena;

/// `pairs` malloc/free pairs of 16 bytes, `depth` frames further down; nanoseconds per pair.
#[inline(never)]
fn pairs_below(depth: usize, pairs: usize) -> f64 {
    if depth > 0 {
        let ns = pairs_below(depth - 1, pairs);
        return black_box(ns);
    }
    let layout = Layout::from_size_align(16, 8).unwrap();
    let start = Instant::now();
    for _ in 0..pairs {
        // SAFETY: a non-zero size; the block is freed once, with its layout.
        unsafe {
            let p = GLOBAL.alloc(layout);
            p.write(1);
            GLOBAL.dealloc(black_box(p), layout);
        }
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let pairs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    vmarena::profile::set_sample_interval(1);
    println!("depth  off ns/pair  on ns/pair  per sample");
    for depth in [0, 20, 50] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..9 {
            // Interleaved, the order alternating from round to round.
            for sampling in [round % 2 == 0, round % 2 != 0] {
                if sampling {
                    vmarena::profile::start();
                    on.push(pairs_below(depth, pairs));
                    vmarena::profile::stop();
                } else {
                    off.push(pairs_below(depth, pairs));
                }
            }
        }
        let (off, on) = (median(off), median(on));
        println!("{depth:5}  {off:11.1}  {on:10.1}  {:7.0} ns", on - off);
    }
}
