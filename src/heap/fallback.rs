//! The fallback heap: one shared heap behind a mutex, for allocations a thread makes while its
//! own heap is being set up or after it was torn down (late TLS destructors). Frees into its
//! pages arrive through the normal remote-free path and are collected on its next use, or by
//! `vmarena::collect()`, which also gives its empty pages back.
//!
//! Layer: `heap`; calls `heap::heap_core`, `sync::mutex` and `stats`.

use super::heap_core::{AlwaysAlive, FALLBACK_HEAP_ID, HeapCore, HeapState};
use crate::sync::mutex::Mutex;

static FALLBACK: Mutex<HeapCore> = Mutex::new(HeapCore::new());

pub(crate) fn alloc<const ZERO: bool, const USABLE: bool>(class: usize, size: usize) -> *mut u8 {
    let heap = FALLBACK.lock();
    if heap.state() != HeapState::Alive {
        heap.start(FALLBACK_HEAP_ID, 0); // no thread of its own: never reaped
    }
    heap.alloc::<AlwaysAlive, ZERO, USABLE>(class, size)
}

/// Takes in the blocks freed into the fallback heap's pages (always remote frees) and gives
/// its empty pages back to their regions.
pub(crate) fn collect() {
    let heap = FALLBACK.lock();
    if heap.state() == HeapState::Alive {
        heap.collect();
    }
}

pub(crate) fn set_counting(on: bool) {
    let heap = FALLBACK.lock();
    if heap.state() == HeapState::Alive {
        heap.set_counting(on);
    }
}

pub(crate) fn add_counters(stats: &mut crate::stats::Stats) {
    FALLBACK.lock().counters.add_to(stats);
}

/// Locks the fallback heap across `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    FALLBACK.lock_raw();
}

/// Unlocks what [`lock_for_fork`] locked, in the parent.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork_parent() {
    // SAFETY: guaranteed by the caller.
    unsafe { FALLBACK.unlock_raw() };
}

/// Releases the lock in a forked child (the heap itself is consistent: its holder did the fork).
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and is the only one in the process.
pub(crate) unsafe fn reset_after_fork_child() {
    // SAFETY: guaranteed by the caller.
    unsafe { FALLBACK.reset_after_fork() };
}
