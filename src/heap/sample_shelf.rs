//! One-slice regions that carried heap-profile samples of small blocks, shared by the thread
//! heaps. Each heap keeps a few on its own shelf (`large_cache`); a heap whose shelf is full
//! puts the next one here, and a heap whose shelf is empty takes one from here before it asks
//! the arena. So where samples are freed by other threads than the ones that took them
//! (producers and consumers, work handed between threads), the regions go round without a
//! write session on the arena for each (measured: `docs/findings.md`, "Where a sampled block
//! lives").
//!
//! At most [`SLOTS`] regions, in state `Cached`, under a mutex that is a leaf: nothing is taken
//! while it is held, and it is taken while nothing of ours is held. `vmarena::collect` gives
//! them back; a forked child keeps them (its memory is the parent's copy).
//!
//! Layer: `heap`, a leaf of it; reads `arena` region fields, calls `sync::mutex`.

use crate::arena::region::Region;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::mutex::Mutex;

/// Regions the shelf holds at most (4 MiB of address space; what is resident is what the
/// samples touched).
pub(crate) const SLOTS: usize = 64;

struct Shelf {
    regions: [*const Region; SLOTS],
    len: usize,
}

// SAFETY: the shelf holds pointers to region descriptors, which are never freed (type-stable,
// `'static`), and only under its mutex.
unsafe impl Send for Shelf {}

static SHELF: Mutex<Shelf> = Mutex::new(Shelf {
    regions: [core::ptr::null(); SLOTS],
    len: 0,
});

/// Bytes on the shelf, for `stats()` (a copy of the length, times each region's size).
static BYTES: AtomicUsize = AtomicUsize::new(0);

/// A region off the shelf, still `Cached`, if there is one.
pub(crate) fn take() -> Option<&'static Region> {
    let mut shelf = SHELF.lock();
    shelf.len = shelf.len.checked_sub(1)?;
    // SAFETY: slots below the old length hold regions put here; descriptors are never freed.
    let region = unsafe { &*shelf.regions[shelf.len] };
    // Relaxed: a statistic.
    BYTES.fetch_sub(region.len(), Ordering::Relaxed);
    Some(region)
}

/// Puts `region`, a one-slice region in state `Cached`, on the shelf; hands it back if the
/// shelf is full.
pub(crate) fn put(region: &'static Region) -> Result<(), &'static Region> {
    let mut shelf = SHELF.lock();
    if shelf.len == SLOTS {
        return Err(region);
    }
    let len = shelf.len;
    shelf.regions[len] = region;
    shelf.len = len + 1;
    // Relaxed: a statistic.
    BYTES.fetch_add(region.len(), Ordering::Relaxed);
    Ok(())
}

/// Empties the shelf, handing every region, still `Cached`, to `give_back` (after the lock is
/// let go: giving back takes the arena's).
pub(crate) fn drain(mut give_back: impl FnMut(&'static Region)) {
    let (regions, len) = {
        let mut shelf = SHELF.lock();
        let taken = (shelf.regions, shelf.len);
        shelf.len = 0;
        // Relaxed: a statistic.
        BYTES.store(0, Ordering::Relaxed);
        taken
    };
    for &region in &regions[..len] {
        // SAFETY: as in `take`.
        give_back(unsafe { &*region });
    }
}

/// Bytes of the regions on the shelf (a statistic).
pub(crate) fn bytes() -> usize {
    // Relaxed: a statistic.
    BYTES.load(Ordering::Relaxed)
}

/// Locks the shelf before `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    SHELF.lock_raw();
}

/// Unlocks it in the parent.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork_parent() {
    // SAFETY: guaranteed by the caller.
    unsafe { SHELF.unlock_raw() };
}

/// Releases it in the child, where the regions stay on it.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and is the only one in the process.
pub(crate) unsafe fn reset_after_fork_child() {
    // SAFETY: guaranteed by the caller.
    unsafe { SHELF.reset_after_fork() };
}
