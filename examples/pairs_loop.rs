//! Profiling aid: tight loops through an allocator called via `&dyn GlobalAlloc`, as the
//! comparison benchmarks call it.
//!
//! `cargo run --release --example pairs_loop -- <size> <n> [mode] [allocator]`
//! * `mode`: `both` (default: `n` malloc+free pairs, then `n` blocks in batches of 1,000 freed
//!   in order), `pairs`, or `lifo` / `fifo` / `random` (`n` blocks in batches of 1,000, freed
//!   in reverse order, in order, or in a fixed random order);
//! * `allocator`: `vmarena` (default), or with `--features baselines` `mimalloc` (its aligned
//!   entry points, as the benchmarks call it) or `mi_malloc` (`mi_malloc`/`mi_free` directly).
//!
//! Per-operation instruction counts free of startup: run under `valgrind --tool=callgrind`
//! with two values of `n` and divide the difference of the `alloc` and `dealloc` functions'
//! inclusive counts by the difference of `n` (`scripts/op_counts.sh` does it).
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

#[cfg(feature = "baselines")]
struct MiMallocAligned;

// SAFETY: mimalloc's aligned entry points return blocks honouring size and alignment.
#[cfg(feature = "baselines")]
unsafe impl GlobalAlloc for MiMallocAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: any size, power-of-two alignment.
        unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast() }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: a block mimalloc allocated.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }
}

#[cfg(feature = "baselines")]
struct MiMallocPlain;

// SAFETY: `mi_malloc` aligns to 16 bytes at least; this loop asks for 8.
#[cfg(feature = "baselines")]
unsafe impl GlobalAlloc for MiMallocPlain {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: any size.
        unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: a block mimalloc allocated.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }
}

fn allocator(name: &str) -> &'static dyn GlobalAlloc {
    match name {
        "vmarena" => &vmarena::VmArena,
        #[cfg(feature = "baselines")]
        "mimalloc" => &MiMallocAligned,
        #[cfg(feature = "baselines")]
        "mi_malloc" => &MiMallocPlain,
        other => panic!("unknown allocator {other} (mimalloc needs --features baselines)"),
    }
}

const BATCH: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000_000);
    let mode = args.get(3).map_or("both", String::as_str);
    let a: &dyn GlobalAlloc = black_box(allocator(args.get(4).map_or("vmarena", String::as_str)));
    let layout = Layout::from_size_align(size, 8).unwrap();
    // The free order of a batch: reversed, in order, or a fixed shuffle (xorshift64).
    let mut order: Vec<usize> = (0..BATCH).collect();
    match mode {
        "lifo" => order.reverse(),
        "random" => {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for i in (1..BATCH).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        _ => {}
    }
    let mut blocks = vec![std::ptr::null_mut(); BATCH];
    let mut report = String::new();
    if mode == "both" || mode == "pairs" {
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
        report += &format!("{pairs:.2} ns per pair ");
    }
    if mode != "pairs" {
        let t = std::time::Instant::now();
        for _ in 0..n / BATCH as u64 {
            // SAFETY: as above.
            unsafe {
                for p in blocks.iter_mut() {
                    *p = a.alloc(layout);
                }
                for &i in &order {
                    a.dealloc(black_box(blocks[i]), layout);
                }
            }
        }
        let batch = t.elapsed().as_nanos() as f64 / (n / BATCH as u64 * BATCH as u64) as f64;
        report += &format!("{batch:.2} ns per block in batches ({mode})");
    }
    println!("{report}");
}
