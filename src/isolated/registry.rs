//! The registry of live isolated heaps (for `stats()`, `track_requested_bytes` and `fork`)
//! and the pool their descriptors come from. Lock order: the registry, then a heap's mutex.
//!
//! Layer: `isolated`; calls `isolated::descriptor`, `heap` (`heap_core`), `arena` (the pool,
//! the OS back end for metadata), `list`, `stats` and `sync::mutex`.

use super::descriptor::{Isolated, RegistryLinks};
use crate::arena::ARENA;
use crate::arena::meta::{MetaChunks, Pool};
use crate::heap::heap_core::HeapCore;
use crate::list::List;
use crate::stats::Stats;
use crate::sync::atomic::Ordering;
use crate::sync::mutex::Mutex;

struct Registry {
    live: List<RegistryLinks>,
    pool: Pool<Isolated>,
    chunks: MetaChunks,
}

// SAFETY: pointers to pool descriptors (never freed), used under the registry's mutex.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: List::new(),
    pool: Pool::new(),
    chunks: MetaChunks::new(),
});

impl Registry {
    fn live(&self) -> impl Iterator<Item = &'static Isolated> + '_ {
        // SAFETY: under the registry mutex, which the caller holds while it borrows the
        // registry (the walk borrows it too); walkers change no links.
        unsafe { self.live.iter() }
    }
}

/// Takes a descriptor from the pool and lists it as live (`locked`: false for a `LocalHeap`,
/// whose mutex is not used). `None` if no metadata could be mapped.
pub(super) fn register(locked: bool) -> Option<&'static Isolated> {
    let mut registry = REGISTRY.lock();
    let Registry { pool, chunks, .. } = &mut *registry;
    let inner = pool.take(chunks, ARENA.os())?;
    // Relaxed: under the registry lock.
    inner.locked.store(locked, Ordering::Relaxed);
    // SAFETY: under the registry lock; a descriptor from the pool is on no list.
    unsafe { registry.live.push_front(inner) };
    Some(inner)
}

/// Takes `inner` off the live list, builds its heap anew and gives the descriptor back to the
/// pool.
///
/// # Safety
/// The heap is being dropped: emptied, its counters folded, and nothing reaches it any more.
pub(super) unsafe fn unregister(inner: &'static Isolated) {
    let mut registry = REGISTRY.lock();
    // SAFETY: under the registry lock; a live descriptor is on the list.
    unsafe { registry.live.remove(inner) };
    // SAFETY: off the registry (whose walkers, `stats()` and `set_counting`, read and write
    // its counters), and being dropped (caller): no reference to its fields is alive.
    unsafe { (*inner.guarded.data_ptr()).heap.rebuild() };
    // Relaxed: under the registry lock.
    inner.id.store(0, Ordering::Relaxed);
    registry.pool.give(inner);
}

/// Adds every live isolated heap's counters into `stats`.
pub(crate) fn fill_stats(stats: &mut Stats) {
    let registry = REGISTRY.lock();
    for heap in registry.live() {
        // SAFETY: counters are atomics, read by any thread (statistics); the heap itself is
        // not touched.
        let counters = unsafe { &registry_heap(heap).counters };
        counters.add_to(stats);
    }
}

/// Turns counting on or off in every live isolated heap (see `track_requested_bytes`).
pub(crate) fn set_counting(on: bool) {
    let registry = REGISTRY.lock();
    for heap in registry.live() {
        // SAFETY: only atomics are touched (`Heap::set_counting`).
        unsafe { registry_heap(heap) }.set_counting(on);
    }
}

/// The thread heap inside a registered descriptor, for reading its atomics without the lock.
///
/// # Safety
/// Only atomics of the result are used.
unsafe fn registry_heap(heap: &'static Isolated) -> &'static HeapCore {
    // SAFETY: the descriptor is never freed; the caller only reads atomics.
    unsafe { &(*heap.guarded.data_ptr()).heap }
}

/// Locks the registry and every live heap before `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    REGISTRY.lock_raw();
    // SAFETY: we hold the registry lock, taken just above.
    let registry = unsafe { REGISTRY.get_locked() };
    for heap in registry.live().filter(|h| h.is_locked()) {
        heap.guarded.lock_raw();
    }
}

/// Unlocks what [`lock_for_fork`] locked, in the parent.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork_parent() {
    // SAFETY: guaranteed by the caller: we hold the registry and every live heap.
    unsafe {
        let registry = REGISTRY.get_locked();
        for heap in registry.live().filter(|h| h.is_locked()) {
            heap.guarded.unlock_raw();
        }
        REGISTRY.unlock_raw();
    }
}

/// Releases the locks in a forked child. The heaps stay usable there: no operation was half
/// done when the fork happened (the parent held every heap's lock).
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and is the only one in the process.
pub(crate) unsafe fn reset_after_fork_child() {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let registry = REGISTRY.get_locked();
        for heap in registry.live().filter(|h| h.is_locked()) {
            heap.guarded.reset_after_fork();
        }
        REGISTRY.reset_after_fork();
    }
}
