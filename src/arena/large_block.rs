//! What a large block's region knows about the block, beyond its range: **one state word**
//! that every free, realloc and cache path compares, the size the user asked for, and the
//! links of the lists a block can be on. A large block has no descriptor but its region, so
//! the layers above keep their fields here, each saying which layer writes it; all of it is
//! reset at once, by [`LargeBlock::reset_live`], when a region becomes a large block.
//!
//! The states, and who moves a block between them. Every move of a block that another thread
//! may reach is a compare-and-swap, so a second free of one block finds the state moved on and
//! aborts instead of listing the block twice; only the write session that makes a detached
//! region a block sets `Live` with a store ([`LargeBlock::reset_live`]).
//!
//! | state       | meaning                                   | left for, by                   |
//! |-------------|-------------------------------------------|--------------------------------|
//! | `Released`  | not a large block (a free range, pooled)  | `Live`: a write session making it one |
//! | `Live`      | the user's                                | `Cached`, `Queued` or `HeapFreed`: a free; `Released`: a move by `mremap` |
//! | `Cached`    | freed into a thread heap's cache          | `Live`: the cache handing it out; `Queued`: the cache giving it back |
//! | `Queued`    | freed, waiting for a write session        | `Released`: that session releasing it |
//! | `HeapFreed` | an isolated heap's block freed through the global allocator, waiting for its heap | `Queued`: the heap giving it back |
//!
//! Layer: `arena`, a leaf of it; calls `list` (the link type), `sync::atomic` and `abort`.

use crate::list::AtomicLinks;
use crate::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};

/// Where a large block is in its life (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum LargeState {
    Released = 0,
    Live = 1,
    Cached = 2,
    Queued = 3,
    HeapFreed = 4,
}

impl LargeState {
    const fn decode(raw: u8) -> LargeState {
        match raw {
            1 => LargeState::Live,
            2 => LargeState::Cached,
            3 => LargeState::Queued,
            4 => LargeState::HeapFreed,
            _ => LargeState::Released,
        }
    }
}

/// Generic over `R`, the descriptor that holds it (`Region`), which this module need not know.
pub(crate) struct LargeBlock<R> {
    /// A [`LargeState`].
    state: AtomicU8,
    /// The size the user asked for (statistics); written by whoever holds the block.
    requested: AtomicUsize,
    /// The isolated heap (`vmarena::Heap`) the block belongs to, 0 for the thread heaps'.
    /// Written under that heap's lock, before the block is handed out.
    heap_id: AtomicUsize,
    /// Links in its isolated heap's list of large blocks (under the heap's lock).
    pub(crate) heap_links: AtomicLinks<R>,
    /// The link in the arena's queue of freed blocks (`Arena::queue_large_release`): written by the
    /// freeing thread, published by its push. A link of its own, so a stale push can never cut
    /// a free-range bin or the descriptor pool, which have links of their own (`Region::bin_next`, `Region::pool_next`).
    pub(crate) queue_next: AtomicPtr<R>,
    /// The heap-profile record of a sampled block (`sampling::table`), 0 if not sampled.
    /// Set by the allocating thread before it hands the block out; taken (swapped to 0) by
    /// the free or realloc that ends the sample.
    sample: AtomicU32,
}

impl<R> LargeBlock<R> {
    pub(crate) const fn new() -> LargeBlock<R> {
        LargeBlock {
            state: AtomicU8::new(LargeState::Released as u8),
            requested: AtomicUsize::new(0),
            heap_id: AtomicUsize::new(0),
            heap_links: AtomicLinks::new(),
            queue_next: AtomicPtr::new(core::ptr::null_mut()),
            sample: AtomicU32::new(0),
        }
    }

    /// Makes the region's block a new live block of the thread heaps, of `requested` bytes:
    /// every field as [`LargeBlock::new`] left it, but the state and the size. Called by the
    /// write session that makes the region a large block, before it is attached (so before
    /// any other thread can find it).
    pub(crate) fn reset_live(&self, requested: usize) {
        // Relaxed (all): the region is detached; attaching it in the session publishes these.
        self.requested.store(requested, Ordering::Relaxed);
        self.heap_id.store(0, Ordering::Relaxed);
        self.heap_links.set_next(core::ptr::null());
        self.heap_links.set_prev(core::ptr::null());
        self.queue_next
            .store(core::ptr::null_mut(), Ordering::Relaxed);
        self.sample.store(0, Ordering::Relaxed);
        self.state.store(LargeState::Live as u8, Ordering::Relaxed);
    }

    /// The block's state. Relaxed: a free or realloc reads the state its own program order
    /// (or the user's synchronisation, which brought it the block) left; the moves that hand
    /// memory on are compare-and-swaps, which order themselves.
    pub(crate) fn state(&self) -> LargeState {
        LargeState::decode(self.state.load(Ordering::Relaxed))
    }

    /// Moves the block from `from` to `to`; false (and nothing changes) if it was not in
    /// `from`. AcqRel: the first of two racing frees wins, and whoever next takes the block on
    /// (a session releasing it, a heap giving it back, the cache handing it out) sees the
    /// previous holder's last use of it before its own.
    pub(crate) fn transition(&self, from: LargeState, to: LargeState) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Aborts unless the block, at `ptr`, is in state `expected`: a block freed already is a
    /// double free, a region that holds no block an invalid free.
    pub(crate) fn check_state(&self, ptr: *mut u8, expected: LargeState) {
        match self.state() {
            state if state == expected => {}
            LargeState::Released => crate::abort::invalid_free(ptr),
            _ => crate::abort::double_free(ptr),
        }
    }

    /// The size the user asked for (statistics).
    pub(crate) fn requested(&self) -> usize {
        // Relaxed: statistics, written by the block's holder.
        self.requested.load(Ordering::Relaxed)
    }

    pub(crate) fn set_requested(&self, size: usize) {
        // Relaxed: statistics.
        self.requested.store(size, Ordering::Relaxed);
    }

    /// Marks the block as the heap-profile sample of `record`. Relaxed: the block's holder
    /// writes it before handing the block out (the user's synchronisation carries it on).
    pub(crate) fn set_sample(&self, record: u32) {
        self.sample.store(record, Ordering::Relaxed);
    }

    /// Takes the block's sample record (0 if none), exactly once even if two frees race (the
    /// state check then aborts one of them). Relaxed: see `set_sample`.
    pub(crate) fn take_sample(&self) -> u32 {
        self.sample.swap(0, Ordering::Relaxed)
    }

    /// The isolated heap the block belongs to, 0 for the thread heaps'.
    pub(crate) fn heap_id(&self) -> usize {
        // Relaxed: written before the block was handed out; the user's own synchronisation
        // brought the block, and so this, to the calling thread.
        self.heap_id.load(Ordering::Relaxed)
    }

    /// Gives the block to isolated heap `id` (0: back to the thread heaps). Caller holds that
    /// heap's lock and the block.
    pub(crate) fn set_heap_id(&self, id: usize) {
        // Relaxed: see `heap_id`.
        self.heap_id.store(id, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_move_happens_once() {
        let block = LargeBlock::<()>::new();
        assert_eq!(block.state(), LargeState::Released);
        block.reset_live(100);
        assert_eq!((block.state(), block.requested()), (LargeState::Live, 100));
        assert!(block.transition(LargeState::Live, LargeState::Cached));
        assert!(
            !block.transition(LargeState::Live, LargeState::Queued),
            "freed twice"
        );
        assert!(block.transition(LargeState::Cached, LargeState::Live));
        assert!(block.transition(LargeState::Live, LargeState::Queued));
        assert!(!block.transition(LargeState::Cached, LargeState::Live));
        assert!(block.transition(LargeState::Queued, LargeState::Released));
        assert_eq!(block.state(), LargeState::Released);
    }

    #[test]
    fn reset_forgets_the_previous_block() {
        let block = LargeBlock::<()>::new();
        block.reset_live(1);
        block.set_heap_id(8);
        block
            .queue_next
            .store(core::ptr::dangling_mut(), Ordering::Relaxed);
        assert!(block.transition(LargeState::Live, LargeState::HeapFreed));
        block.reset_live(2);
        assert_eq!(block.state(), LargeState::Live);
        assert_eq!((block.heap_id(), block.requested()), (0, 2));
        assert!(block.queue_next.load(Ordering::Relaxed).is_null());
    }
}
