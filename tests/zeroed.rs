//! `alloc_zeroed` returns zeroed memory: fresh from the OS (where vmarena skips the memset) and
//! reused after dirty frees, for small blocks of every class and for large blocks.

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::Rng;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

fn assert_zero(ptr: *const u8, len: usize) {
    // SAFETY: the caller's block has `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    if let Some(at) = bytes.iter().position(|&b| b != 0) {
        panic!(
            "byte {at} of a zeroed {len}-byte block at {ptr:p} is {:#x}",
            bytes[at]
        );
    }
}

#[test]
fn zeroed_blocks_are_zero_fresh_and_after_reuse() {
    let mut rng = Rng::new(99);
    let sizes: Vec<usize> = (0..3_000)
        .map(|_| {
            let bits = 3 + rng.below(17);
            1 + rng.below(1 << bits) as usize
        })
        .collect();
    for round in 0..4 {
        let mut blocks = Vec::new();
        for &size in &sizes {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: non-zero size.
            let ptr = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            assert_zero(ptr, size);
            // Dirty it so that reuse in the next round starts from garbage.
            // SAFETY: the block has `size` bytes.
            unsafe { ptr.write_bytes(0xA5 ^ round as u8, size) };
            blocks.push((ptr, layout));
        }
        for (ptr, layout) in blocks {
            // SAFETY: live blocks freed once.
            unsafe { GLOBAL.dealloc(ptr, layout) };
        }
    }
}

#[test]
fn zeroed_after_dirty_plain_allocations_of_the_same_class() {
    for size in [
        8,
        16,
        24,
        100,
        4096,
        8192,
        70_000,
        300_000,
        600_000,
        5 << 20,
    ] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let mut dirty = Vec::new();
        for _ in 0..64 {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            // SAFETY: the block has `size` bytes.
            unsafe { p.write_bytes(0xFF, size) };
            dirty.push(p);
        }
        for p in dirty {
            // SAFETY: live blocks freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
        for _ in 0..64 {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert_zero(p, size);
            // SAFETY: live block freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}

#[test]
fn vec_from_zeroes_and_calloc_like_boxes_read_zero() {
    for _ in 0..50 {
        let v = vec![0u64; 100_000];
        assert!(v.iter().all(|&x| x == 0));
        let mut w = vec![0xFFu8; 100_000];
        w.iter_mut().for_each(|b| *b = 0x11);
        drop(w);
        let b: Box<[u32]> = vec![0u32; 1_000].into_boxed_slice();
        assert!(b.iter().all(|&x| x == 0));
    }
}
