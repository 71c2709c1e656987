//! An isolated heap's descriptor ([`Isolated`]): what its mutex guards (the heap and the list
//! of its large blocks) and what the registry and the pool need of it. Descriptors are
//! type-stable, like the thread heaps.
//!
//! Layer: `isolated`; calls `heap` (`heap_core`), `large`, `arena` (`meta`'s pool, region
//! descriptors), `list` and `sync`.

use core::ptr::null_mut;

use crate::arena::large_block::LargeState;
use crate::arena::meta::Pooled;
use crate::arena::region::Region;
use crate::heap::heap_core::HeapCore;
use crate::large;
use crate::list::{AtomicLinks, List, atomic_links};
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use crate::sync::mutex::Mutex;

/// What the heap's mutex guards.
pub(crate) struct Guarded {
    pub(super) heap: HeapCore,
    /// The heap's large blocks (linked through `Region::large.heap_links`).
    pub(super) large: List<LargeLinks>,
}

// SAFETY: used only under the mutex (or by the one thread that owns the descriptor while it
// is out of the registry); the regions it points to are descriptors, never freed.
unsafe impl Send for Guarded {}

/// An isolated heap's descriptor.
pub(crate) struct Isolated {
    pub(super) guarded: Mutex<Guarded>,
    /// False for a `LocalHeap`, whose mutex is not used.
    pub(super) locked: AtomicBool,
    /// The heap's id (`heap_core::HeapCore::id`), readable without the mutex to route frees.
    pub(super) id: AtomicUsize,
    /// Links in the registry of live heaps, under the registry lock.
    pub(super) links: AtomicLinks<Isolated>,
    /// The link in the pool of unused descriptors (`arena::meta::Pool`).
    pub(super) pool_next: AtomicPtr<Isolated>,
}

atomic_links!(
    /// A descriptor's links for the registry's list (pool descriptors are never freed).
    pub(super) RegistryLinks: Isolated,
    links
);

atomic_links!(
    /// A large block's links in its isolated heap's list (region descriptors are never freed).
    pub(super) LargeLinks: Region,
    large.heap_links
);

impl Isolated {
    /// False for a `LocalHeap`: `fork` leaves it alone (only its thread can reach it, and
    /// that thread is not the child's).
    pub(super) fn is_locked(&self) -> bool {
        // Relaxed: written under the registry lock, which the callers hold.
        self.locked.load(Ordering::Relaxed)
    }
}

impl Pooled for Isolated {
    unsafe fn init(slot: *mut Self) {
        // SAFETY: the pool hands us uninitialised memory for one descriptor.
        unsafe {
            slot.write(Isolated {
                guarded: Mutex::new(Guarded {
                    heap: HeapCore::new(),
                    large: List::new(),
                }),
                locked: AtomicBool::new(true),
                id: AtomicUsize::new(0),
                links: AtomicLinks::new(),
                pool_next: AtomicPtr::new(null_mut()),
            })
        }
    }

    fn pool_link(&self) -> &AtomicPtr<Self> {
        &self.pool_next
    }
}

impl core::fmt::Debug for Isolated {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Relaxed: an id, fixed while the heap is live.
        write!(f, "Heap#{}", self.id.load(Ordering::Relaxed))
    }
}

impl Guarded {
    /// Puts a large block of ours at the head of the heap's list.
    pub(super) fn link_large(&self, region: &'static Region, id: usize) {
        // Written before the block is handed out (see `large::belongs_to_a_heap`).
        region.large.set_heap_id(id);
        // SAFETY: our list, under our access; a fresh large block is on no list.
        unsafe { self.large.push_front(region) };
    }

    /// Gives back the heap's large blocks that were freed through the global allocator.
    pub(super) fn release_freed_large(&self) {
        // SAFETY: our list, under our access; the walk unlinks only the block it was given.
        for region in unsafe { self.large.iter() } {
            // The state moves on from `HeapFreed` in the free below (AcqRel: the marking
            // free's last use of the block happens before we give its memory away).
            if region.large.state() == LargeState::HeapFreed {
                self.unlink_large(region);
                large::release(region, region.start(), LargeState::HeapFreed);
            }
        }
    }

    /// Takes a large block off the heap's list, leaving its region as a thread heap's.
    pub(super) fn unlink_large(&self, region: &Region) {
        // SAFETY: our list, under our access; callers pass blocks of this heap, on it.
        unsafe { self.large.remove(region) };
        region.large.set_heap_id(0);
    }
}
