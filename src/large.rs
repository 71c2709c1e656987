//! Large blocks (over 512 KiB, or alignments small pages cannot give): each in a region of its
//! own, created and removed by write sessions on the arena.

use crate::arena::ARENA;
use crate::arena::region::Region;
use crate::config::{MAX_SMALL_SIZE, REMAP_MIN_SIZE};
use crate::stats::Tally;
use crate::sync::atomic::Ordering;

/// Allocates a large block of `size` bytes aligned to `align`; null (`ENOMEM`) if impossible.
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    // A program's first allocation may be a large one (it brings no heap up).
    crate::options::read_once();
    if size > isize::MAX as usize {
        return crate::os::out_of_memory();
    }
    let Some((region, fresh)) = ARENA.alloc_large(size, align) else {
        return crate::os::out_of_memory();
    };
    // Relaxed: statistics.
    region.requested.store(size, Ordering::Relaxed);
    let ptr = region.start();
    if zeroed && !fresh {
        ARENA.zero_large(region, size);
    }
    crate::heap::record(size as isize);
    ptr
}

/// Frees the large block at `ptr`, which lives in `region`.
pub(crate) fn free(region: &'static Region, ptr: *mut u8) {
    // Relaxed: statistics; the block is live, so the region's fields are stable.
    let requested = region.requested.load(Ordering::Relaxed);
    ARENA.free_large(region, ptr);
    crate::heap::record(-(requested as isize));
    crate::purger::poke();
}

/// Reallocates a large block without copying if possible: in place when it still fits (or the
/// arena can grow or shrink it there), else by moving its pages. `None` means the caller must
/// allocate, copy and free. Counts speculations in `tally` (the calling thread's).
pub(crate) fn realloc(
    region: &'static Region,
    ptr: *mut u8,
    new_size: usize,
    align: usize,
    tally: &Tally,
) -> Option<*mut u8> {
    if new_size > isize::MAX as usize {
        return None;
    }
    if region.start() != ptr {
        crate::abort::invalid_free(ptr);
    }
    // Relaxed: statistics; the block is live, so its fields are stable for us.
    let old_requested = region.requested.load(Ordering::Relaxed);
    let old_len = region.len();
    let stays_large = new_size > MAX_SMALL_SIZE;
    // Keep the block if it still fits and at least half of it stays in use; shrink it in place
    // (returning the tail) when less is needed; grow into a free neighbour.
    let resized = stays_large
        && ((new_size <= old_len && new_size >= old_len / 2)
            || ARENA.resize_large_in_place(region, ptr, new_size, tally));
    if resized {
        region.requested.store(new_size, Ordering::Relaxed);
        crate::heap::record(new_size as isize - old_requested as isize);
        return Some(ptr);
    }
    if stays_large && new_size > old_len && old_len >= REMAP_MIN_SIZE {
        let moved = ARENA.remap_large(region, ptr, new_size, align)?;
        if let Some(dest) = ARENA.large_region(moved) {
            dest.requested.store(new_size, Ordering::Relaxed);
        }
        crate::heap::record(new_size as isize - old_requested as isize);
        return Some(moved);
    }
    None
}
