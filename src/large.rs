//! Large blocks (over 64 KiB, or alignments small pages cannot give): each in a region fitted
//! to it, created and removed by write sessions on the arena. The operations here count
//! nothing: the calling thread's heap counts them (`heap::alloc_large`, `heap::free_large`,
//! `realloc_large`), isolated heaps in their own counters.
//!
//! Layer: below `heap`, above `arena`; calls `arena`, `stats`, `os`, `config`, `options`,
//! `purger` and `abort`.

use crate::arena::ARENA;
use crate::arena::large_block::LargeState;
use crate::arena::region::Region;
use crate::config::{MAX_SMALL_SIZE, REMAP_MIN_SIZE};
use crate::stats::Tally;

/// Allocates a large block of `size` bytes aligned to `align`, uncounted; `None` if impossible.
pub(crate) fn alloc_block(size: usize, align: usize, zeroed: bool) -> Option<&'static Region> {
    // A program's first allocation may be a large one (it brings no heap up).
    crate::options::read_once();
    if size > isize::MAX as usize {
        return None;
    }
    let (region, fresh) = ARENA.alloc_large(size, align)?;
    if zeroed && !fresh {
        ARENA.zero_large(region, size);
    }
    Some(region)
}

/// Gives the large block at `ptr`, which lives in `region` and is in state `from`, back to
/// the arena (queued for the next write session: `Arena::queue_large_release`), uncounted;
/// returns its requested size. Every large block leaves through here.
pub(crate) fn release(region: &'static Region, ptr: *mut u8, from: LargeState) -> usize {
    let requested = region.large.requested();
    ARENA.queue_large_release(region, ptr, from);
    crate::purger::poke();
    requested
}

/// Aborts unless `ptr` is the start of the live large block of `region`: a block freed already
/// (cached, queued, or waiting for its isolated heap) is a double free.
#[inline]
pub(crate) fn check_live(region: &Region, ptr: *mut u8) {
    if region.start() != ptr {
        crate::abort::invalid_free(ptr);
    }
    region.large.check_state(ptr, LargeState::Live);
}

/// The free of a live large block that no cache keeps, uncounted: releases it to the arena
/// ([`release`]), or, for a block of an isolated heap, only marks it freed (the heap, which
/// lists it, releases it). Returns its requested size.
pub(crate) fn release_or_mark(region: &'static Region, ptr: *mut u8) -> usize {
    check_live(region, ptr);
    if belongs_to_a_heap(region) {
        // The heap gives it back at its next large allocation or its drop; a second free
        // finds the state moved on.
        if !region
            .large
            .transition(LargeState::Live, LargeState::HeapFreed)
        {
            crate::abort::double_free(ptr);
        }
        return region.large.requested();
    }
    release(region, ptr, LargeState::Live)
}

/// True if the large block of `region` was allocated from an isolated heap.
fn belongs_to_a_heap(region: &Region) -> bool {
    region.large.heap_id() != 0
}

/// Reallocates a large block without copying if possible, uncounted (see [`resize`]); `None`
/// for a block of an isolated heap, which the caller moves by copy and free. Aborts unless
/// `ptr` is the start of the live block (before the caller copies anything from it).
pub(crate) fn realloc(
    region: &'static Region,
    ptr: *mut u8,
    new_size: usize,
    align: usize,
    tally: &Tally,
) -> Option<(*mut u8, usize)> {
    check_live(region, ptr);
    if belongs_to_a_heap(region) {
        return None; // the heap lists the block where it is: move it by copy and free
    }
    resize(region, ptr, new_size, align, tally)
}

/// Reallocates a large block without copying if possible, uncounted: in place when it still
/// fits (or the arena can grow or shrink it there), else by moving its pages. Returns where
/// the block is now and its old requested size; `None` means the caller must allocate, copy
/// and free. Counts speculations in `tally` (the calling heap's).
pub(crate) fn resize(
    region: &'static Region,
    ptr: *mut u8,
    new_size: usize,
    align: usize,
    tally: &Tally,
) -> Option<(*mut u8, usize)> {
    if new_size > isize::MAX as usize {
        return None;
    }
    check_live(region, ptr);
    let old_requested = region.large.requested();
    let old_len = region.len();
    let stays_large = new_size > MAX_SMALL_SIZE;
    // Keep the block if it still fits and at least half of it stays in use; shrink it in place
    // (returning the tail) when less is needed; grow into a free neighbour.
    let resized = stays_large
        && ((new_size <= old_len && new_size >= old_len / 2)
            || ARENA.resize_large_in_place(region, ptr, new_size, tally));
    if resized {
        region.large.set_requested(new_size);
        return Some((ptr, old_requested));
    }
    if stays_large && new_size > old_len && old_len >= REMAP_MIN_SIZE {
        let moved = ARENA.remap_large(region, ptr, new_size, align)?;
        if let Some(dest) = ARENA.large_region(moved) {
            dest.large.set_requested(new_size);
        }
        return Some((moved, old_requested));
    }
    None
}
