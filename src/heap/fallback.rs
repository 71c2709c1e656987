//! The fallback heap: one shared heap behind a mutex, for allocations a thread makes while its
//! own heap is being set up or after it was torn down (late TLS destructors). Frees into its
//! pages arrive through the normal remote-free path and are collected on its next use.

use super::thread_heap::{Heap, HeapState};
use super::tls::FALLBACK_TID;
use crate::sync::mutex::Mutex;

static FALLBACK: Mutex<Heap> = Mutex::new(Heap::new());

pub(crate) fn alloc<const ZERO: bool>(class: usize, size: usize) -> *mut u8 {
    let heap = FALLBACK.lock();
    if heap.state() != HeapState::Alive {
        heap.start(FALLBACK_TID);
    }
    heap.alloc::<ZERO>(class, size)
}

pub(crate) fn add_counters(stats: &mut crate::stats::Stats) {
    FALLBACK.lock().counters.add_to(stats);
}

/// Locks the fallback heap across `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    FALLBACK.lock_raw();
}

/// Unlocks what [`lock_for_fork`] locked, in the parent or the child.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: guaranteed by the caller.
    unsafe { FALLBACK.unlock_raw() };
}
