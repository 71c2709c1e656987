//! What vmarena's integration tests, benchmarks and fuzz targets share, so that each checks
//! blocks the same way: deterministic generators, two block patterns (one derived from a
//! block's address, one from a tag of the allocation), random sizes and alignments over the
//! size classes, the process's resident memory, and a `main` for tests without the harness.
//! Dev-only: nothing here is part of vmarena.

pub mod address_pattern;
pub mod pprof;
pub mod proc;
pub mod realloc_in_place;
pub mod rng;
pub mod tagged_pattern;

use std::alloc::Layout;

pub use rng::{Rng, Xorshift64};

/// A live block in a test: its address and layout.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub ptr: usize,
    pub layout: Layout,
}

// SAFETY: a block is plain data; the tests hand blocks between threads on purpose.
unsafe impl Send for Block {}

/// Sizes over every size class (1 B .. 64 KiB, weighted towards small ones), then large blocks
/// the per-thread cache keeps (to 512 KiB) and a few bigger ones.
pub fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => 1 + rng.below(256) as usize,
        60..=84 => 1 + rng.below(8192) as usize,
        85..=94 => 1 + rng.below(64 << 10) as usize,
        95..=97 => 1 + rng.below(512 << 10) as usize,
        _ => (512 << 10) + rng.below(3 << 20) as usize,
    }
}

/// Alignments from 1 to 4 KiB, mostly small, sometimes up to 1 MiB.
pub fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 1 << rng.below(5),
        80..=97 => 1 << rng.below(13),
        _ => 1 << (13 + rng.below(8)),
    }
}

/// The `main` of a test binary without the harness: runs each named case, or with arguments
/// (as `cargo test --test NAME -- FILTER` passes them) only the cases whose names contain one.
pub fn run_cases(cases: &[(&str, fn())]) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for &(name, case) in cases {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            case();
            println!("{name}: ok");
        }
    }
}
