//! `realloc` of blocks that Rust allocated with a small alignment, through an entry point that
//! knows only the pointer (vmarena's `raw::realloc`, C's `realloc`): every 8-byte step of size
//! is a block of its own class, which a 16-byte-aligned size class does not describe. A
//! resize may stay in place only where the block really holds the new size; the test writes
//! the whole new size and checks that the blocks on either side kept their contents.

use std::alloc::Layout;

use crate::address_pattern::{check, fill};

/// For every size from 8 to 1 KiB in steps of 8: allocates a run of blocks of that size with
/// `alloc` (8-byte alignment), fills them, resizes the middle one to each size up to the next
/// 16-byte multiple and a little beyond with `realloc` (16-byte alignment), writes the whole
/// new size, and checks both neighbours and the moved contents. `usable` is the block's usable
/// size (`malloc_usable_size`). Panics on the first failure.
pub fn resize_small_blocks_through(
    alloc: impl Fn(Layout) -> *mut u8,
    realloc: impl Fn(*mut u8, usize) -> *mut u8,
    usable: impl Fn(*mut u8) -> usize,
    free: impl Fn(*mut u8),
) {
    for size in (8..=1024usize).step_by(8) {
        for grow in [size + 1, size.next_multiple_of(16), size + 8, size + 24] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let run: Vec<*mut u8> = (0..5).map(|_| alloc(layout)).collect();
            for &p in &run {
                assert!(!p.is_null());
                // SAFETY: a live block of `size` bytes.
                unsafe { fill(p, size) };
            }
            let middle = run[2];
            let resized = realloc(middle, grow);
            assert!(!resized.is_null(), "realloc({size} -> {grow}) failed");
            assert_eq!(
                resized as usize % 16,
                0,
                "realloc({size} -> {grow}) not 16-aligned"
            );
            assert!(
                usable(resized) >= grow,
                "realloc({size} -> {grow}) gave a block of {} bytes (in place: {})",
                usable(resized),
                resized == middle
            );
            // SAFETY: the old contents moved with the block (its first `size` bytes).
            unsafe { crate::address_pattern::check_from(resized, middle as usize, size, size) };
            // SAFETY: the resized block holds `grow` bytes (checked above).
            unsafe { resized.write_bytes(0xA5, grow) };
            for (i, &p) in run.iter().enumerate() {
                if i != 2 {
                    // SAFETY: live blocks filled above; a resize that overran reaches them.
                    unsafe { check(p, size) };
                }
            }
            free(resized);
            for (i, &p) in run.iter().enumerate() {
                if i != 2 {
                    free(p);
                }
            }
        }
    }
}
