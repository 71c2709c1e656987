//! A large block of one slice is not always a heap-profile sample's: a small request with a
//! big alignment (`aligned_alloc(128 KiB, 4 KiB)`) gets one too. Freed with sampling off, it
//! goes through the thread's large-block cache like any block (at most 4 kept), not onto the
//! shelves kept for samples, which nothing would take from.

use std::alloc::{GlobalAlloc, Layout};

use vmarena::VmArena;

#[global_allocator]
static GLOBAL: VmArena = VmArena;

/// A thread's large-block cache keeps at most this many blocks (`large_cache::SLOTS`).
const CACHE_SLOTS: usize = 4;
const BLOCK: usize = 64 << 10; // one slice
const BLOCKS: usize = 20;

#[test]
fn freed_aligned_one_slice_blocks_are_not_kept_for_samples() {
    let layout = Layout::from_size_align(4096, 128 << 10).unwrap();
    let before = vmarena::stats().large_cached_bytes;
    let mut blocks = [0usize; BLOCKS];
    for b in blocks.iter_mut() {
        // SAFETY: a non-zero size.
        *b = unsafe { GLOBAL.alloc(layout) } as usize;
        assert!(*b != 0 && *b % (128 << 10) == 0);
    }
    for &b in &blocks {
        // SAFETY: live blocks, freed once each.
        unsafe { GLOBAL.dealloc(b as *mut u8, layout) };
    }
    let kept = vmarena::stats().large_cached_bytes - before;
    assert!(
        kept <= CACHE_SLOTS * BLOCK,
        "{} freed one-slice blocks kept",
        kept / BLOCK
    );
}
