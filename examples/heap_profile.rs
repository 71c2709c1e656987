//! Heap profiling in a Rust program: sampling on from the start, a few functions that keep
//! memory, and the profile written where the first argument says (default
//! `heap-profile.pb.gz`). Read it with `go tool pprof` or turn it into a flame graph:
//!
//! ```text
//! cargo run --release --example heap_profile
//! go tool pprof -top -cum target/release/examples/heap_profile heap-profile.pb.gz
//! python3 scripts/flamegraph.py target/release/examples/heap_profile heap-profile.pb.gz > heap.svg
//! ```

use std::hint::black_box;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// A cache of 64 KiB buffers: 64 MiB.
#[inline(never)]
fn load_buffers(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..1024 {
        out.push(vec![1u8; 64 << 10].into_boxed_slice());
    }
}

/// Many small records: 32 MiB of 256-byte blocks.
#[inline(never)]
fn parse_records(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..(128 << 10) {
        out.push(vec![2u8; 256].into_boxed_slice());
    }
}

/// Short-lived scratch space: 200 MB allocated, nothing kept.
#[inline(never)]
fn scratch_work() {
    for _ in 0..200_000 {
        black_box(vec![0u8; 1000]);
    }
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "heap-profile.pb.gz".into());
    vmarena::profile::set_sample_interval(64 << 10);
    vmarena::profile::start();
    let mut buffers = Vec::with_capacity(1024);
    let mut records = Vec::with_capacity(128 << 10);
    load_buffers(&mut buffers);
    parse_records(&mut records);
    scratch_work();
    vmarena::profile::write_to_path(&path).expect("the profile is written");
    println!("wrote {path}");
    black_box((buffers, records));
}
