//! Large blocks (over 512 KiB, or alignments small pages cannot give): each in a region of its
//! own, created and removed by write sessions on the arena.

use crate::arena::ARENA;
use crate::arena::region::Region;
use crate::config::MAX_SMALL_SIZE;
use crate::sync::atomic::Ordering;

/// Allocates a large block of `size` bytes aligned to `align`; null if impossible.
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if size > isize::MAX as usize {
        return core::ptr::null_mut();
    }
    let Some((region, fresh)) = ARENA.alloc_large(size, align) else {
        return core::ptr::null_mut();
    };
    // Relaxed: statistics.
    region.requested.store(size, Ordering::Relaxed);
    let ptr = region.start();
    if zeroed && !fresh {
        // SAFETY: the block is ours and at least `size` bytes long.
        unsafe { core::ptr::write_bytes(ptr, 0, size) };
    }
    crate::heap::record(size as isize, region.len() as isize, 1, 0);
    ptr
}

/// Frees the large block at `ptr`, which lives in `region`.
pub(crate) fn free(region: &'static Region, ptr: *mut u8) {
    // Relaxed: statistics; the block is live, so the region's fields are stable.
    let (requested, len) = (region.requested.load(Ordering::Relaxed), region.len());
    ARENA.free_large(region, ptr);
    crate::heap::record(-(requested as isize), -(len as isize), 0, 1);
}

/// Resizes a large block in place if its region already has room; returns false otherwise.
pub(crate) fn resize_in_place(region: &'static Region, ptr: *mut u8, new_size: usize) -> bool {
    let len = region.len();
    if region.start() != ptr {
        crate::abort::invalid_free(ptr);
    }
    // Stay if the block still fits, is still large, and at least half of it stays in use.
    if new_size <= len && new_size > MAX_SMALL_SIZE && new_size >= len / 2 {
        // Relaxed: statistics.
        let old = region.requested.swap(new_size, Ordering::Relaxed);
        crate::heap::record(new_size as isize - old as isize, 0, 0, 0);
        return true;
    }
    false
}
