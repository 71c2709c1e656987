//! The live heaps, so that `stats()` can sum their counters, and the totals of heaps that
//! are gone. Taken only when a thread starts or exits and by `stats()`.

use core::ptr::null_mut;

use super::thread_heap::{Heap, HeapCounters};
use crate::stats::Stats;
use crate::sync::atomic::Ordering;
use crate::sync::mutex::Mutex;

struct Registry {
    head: *mut Heap,
    started: u64,
    exited: u64,
}

// SAFETY: the registry only holds pointers to heaps, used under its mutex.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    head: null_mut(),
    started: 0,
    exited: 0,
});

/// Counters of exited heaps, and of frees made by threads without a usable heap.
pub(crate) static ORPHAN_COUNTERS: HeapCounters = HeapCounters::new();

pub(crate) fn register(heap: &Heap) {
    let mut registry = REGISTRY.lock();
    let this = (heap as *const Heap).cast_mut();
    // Relaxed: links are only used under the registry mutex.
    heap.registry_prev.store(null_mut(), Ordering::Relaxed);
    heap.registry_next.store(registry.head, Ordering::Relaxed);
    // SAFETY: registered heaps stay valid until they unregister (under this lock).
    if let Some(head) = unsafe { registry.head.as_ref() } {
        head.registry_prev.store(this, Ordering::Relaxed);
    }
    registry.head = this;
    registry.started += 1;
}

pub(crate) fn unregister(heap: &Heap) {
    let mut registry = REGISTRY.lock();
    let (prev, next) = (
        heap.registry_prev.load(Ordering::Relaxed),
        heap.registry_next.load(Ordering::Relaxed),
    );
    // SAFETY: neighbours are registered heaps, valid under this lock.
    unsafe {
        match prev.as_ref() {
            Some(p) => p.registry_next.store(next, Ordering::Relaxed),
            None => registry.head = next,
        }
        if let Some(n) = next.as_ref() {
            n.registry_prev.store(prev, Ordering::Relaxed);
        }
    }
    // Fold the heap's counter into the orphans' (Relaxed: statistics).
    ORPHAN_COUNTERS.add_shared(heap.counters.requested.swap(0, Ordering::Relaxed) as isize);
    registry.exited += 1;
}

/// Adds every heap's counters into `stats`.
pub(crate) fn fill_stats(stats: &mut Stats) {
    {
        let registry = REGISTRY.lock();
        let mut cursor = registry.head;
        // SAFETY: registered heaps stay valid while we hold the lock.
        while let Some(heap) = unsafe { cursor.as_ref() } {
            heap.counters.add_to(stats);
            cursor = heap.registry_next.load(Ordering::Relaxed);
        }
        stats.threads_started = registry.started;
        stats.threads_exited = registry.exited;
    }
    ORPHAN_COUNTERS.add_to(stats);
    super::fallback::add_counters(stats);
}

/// Locks the registry across `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    REGISTRY.lock_raw();
}

/// Unlocks what [`lock_for_fork`] locked, in the parent or the child.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: guaranteed by the caller.
    unsafe { REGISTRY.unlock_raw() };
}
