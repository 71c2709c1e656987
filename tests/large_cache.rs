//! Freed large blocks up to 512 KiB that a thread keeps for reuse (`heap::large_cache`):
//! reused blocks are whole, distinct and zeroed when asked; `stats()` counts them as cached,
//! not in use; `collect()` and thread exit give them back.
//!
//! One case at a time (no harness): `stats()` sums every thread's cache.

mod common;

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const KIB: usize = 1 << 10;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates and fills a block of `size` bytes.
fn filled(size: usize) -> *mut u8 {
    // SAFETY: non-zero size.
    let p = unsafe { GLOBAL.alloc(layout(size)) };
    assert!(!p.is_null());
    // SAFETY: the block has `size` bytes.
    unsafe { common::fill(p, size) };
    p
}

fn free(p: *mut u8, size: usize) {
    // SAFETY: a live block of that layout, freed once.
    unsafe { GLOBAL.dealloc(p, layout(size)) };
}

/// Blocks freed and allocated again in every order keep their contents and never overlap.
fn reused_blocks_are_whole_and_distinct() {
    let mut rng = common::Rng::new(7);
    let mut live: Vec<(*mut u8, usize)> = Vec::new();
    for _ in 0..20_000 {
        if live.len() < 12 && rng.chance(55) {
            let size = 64 * KIB + 1 + rng.below(448 * KIB as u64) as usize;
            let p = filled(size);
            for &(q, len) in &live {
                let (a, b) = (p as usize, q as usize);
                assert!(
                    a + size <= b || b + len <= a,
                    "{p:p}+{size} overlaps {q:p}+{len}"
                );
            }
            live.push((p, size));
        } else if !live.is_empty() {
            let (p, size) = live.swap_remove(rng.below(live.len() as u64) as usize);
            // SAFETY: filled at allocation, untouched since.
            unsafe { common::check(p, size) };
            free(p, size);
        }
    }
    for (p, size) in live {
        // SAFETY: as above.
        unsafe { common::check(p, size) };
        free(p, size);
    }
}

/// `alloc_zeroed` served from the cache gets zeroes, not the previous owner's bytes.
fn zeroed_blocks_from_the_cache_are_zero() {
    for size in [100 * KIB, 200 * KIB, 500 * KIB] {
        let p = filled(size);
        free(p, size);
        // SAFETY: non-zero size.
        let z = unsafe { GLOBAL.alloc_zeroed(layout(size)) };
        assert_eq!(z, p, "the freed {size}-byte block was not reused");
        // SAFETY: the block has `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(z, size) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "{size}-byte block not zeroed"
        );
        free(z, size);
    }
    vmarena::collect();
}

/// A cached block counts in `large_cached_bytes`, not in `bytes_in_use`, and `collect()`
/// gives it back to the arena.
fn cached_blocks_are_counted_apart_and_collected() {
    vmarena::collect();
    let base = vmarena::stats();
    assert_eq!(base.large_cached_bytes, 0);
    let size = 300 * KIB;
    let p = filled(size);
    let live = vmarena::stats();
    assert!(live.bytes_in_use >= base.bytes_in_use + size);
    free(p, size);
    let cached = vmarena::stats();
    assert!(cached.large_cached_bytes >= size, "{cached}");
    assert!(cached.bytes_in_use + size <= live.bytes_in_use, "{cached}");
    vmarena::collect();
    let after = vmarena::stats();
    assert_eq!(after.large_cached_bytes, 0, "{after}");
    assert!(after.large_bytes + size <= cached.large_bytes, "{after}");
}

/// A thread that exits gives its cached blocks back.
fn thread_exit_empties_the_cache() {
    vmarena::collect();
    std::thread::spawn(|| {
        for size in [100 * KIB, 200 * KIB, 400 * KIB] {
            free(filled(size), size);
        }
        assert!(vmarena::stats().large_cached_bytes >= 700 * KIB);
    })
    .join()
    .unwrap();
    let after = vmarena::stats();
    assert_eq!(after.large_cached_bytes, 0, "{after}");
}

/// The cache is bounded: however many blocks a thread frees, it keeps at most 1 MiB.
fn the_cache_is_bounded() {
    vmarena::collect();
    let blocks: Vec<_> = (0..64).map(|_| filled(256 * KIB)).collect();
    for p in blocks {
        free(p, 256 * KIB);
    }
    let stats = vmarena::stats();
    assert!(stats.large_cached_bytes <= 1 << 20, "{stats}");
    vmarena::collect();
}

fn main() {
    common::run_cases(&[
        (
            "reused_blocks_are_whole_and_distinct",
            reused_blocks_are_whole_and_distinct,
        ),
        (
            "zeroed_blocks_from_the_cache_are_zero",
            zeroed_blocks_from_the_cache_are_zero,
        ),
        (
            "cached_blocks_are_counted_apart_and_collected",
            cached_blocks_are_counted_apart_and_collected,
        ),
        (
            "thread_exit_empties_the_cache",
            thread_exit_empties_the_cache,
        ),
        ("the_cache_is_bounded", the_cache_is_bounded),
    ]);
}
