//! A thread heap's cache of freed large blocks up to [`MAX_BLOCK`], reused without the arena
//! lock.
//!
//! Blocks over 64 KiB are large blocks, each in a region fitted to it (see
//! `config::MAX_SMALL_SIZE`); allocating or freeing one is a write session on the arena, some
//! 350 ns. Programs that free and reallocate buffers of 64–512 KiB (I/O buffers, vectors
//! growing through `realloc`) would pay that on every pair, where pages of such blocks cost
//! mimalloc some 45 ns. So a heap keeps the last few it freed, at most [`SLOTS`] blocks and
//! [`MAX_BYTES`] in all, oldest pushed out first, and hands one back when a request fits it.
//! A block in a cache is still a large block to the arena (committed, counted in
//! `large_bytes`); `stats()` reports it in `large_cached_bytes`, not in use. Caches are
//! emptied when their thread exits and by `collect`.
//!
//! A cached block carries `Region::cached`, so freeing or reallocating it again aborts as a
//! double free instead of handing one block out twice.
//!
//! Layer: `heap`, a leaf of it; reads `arena` region fields and `config` (the caller gives
//! evicted blocks back).

use core::cell::Cell;

use crate::arena::region::Region;
use crate::config::SLICE_SIZE;
use crate::sync::atomic::{AtomicUsize, Ordering};

/// The largest block a cache keeps.
pub(crate) const MAX_BLOCK: usize = 512 << 10;
/// Blocks a cache keeps at most...
pub(crate) const SLOTS: usize = 4;
/// ...and their total size at most (bounds what a thread holds that no one uses).
pub(crate) const MAX_BYTES: usize = 1 << 20;

/// The cache; only its heap's owner uses it (as the rest of the heap).
pub(crate) struct LargeCache {
    /// Oldest first; the first `len` are set.
    blocks: [Cell<*const Region>; SLOTS],
    len: Cell<usize>,
    /// Total size of the cached blocks: an atomic (written by the owner only) because
    /// `stats()` sums it from other threads.
    bytes: AtomicUsize,
}

/// `size` rounded up to whole slices (large blocks are made of whole slices).
fn slices(size: usize) -> usize {
    size.next_multiple_of(SLICE_SIZE)
}

impl LargeCache {
    pub(crate) const fn new() -> LargeCache {
        LargeCache {
            blocks: [const { Cell::new(core::ptr::null()) }; SLOTS],
            len: Cell::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Whether a request may be served from a cache: a large block every cached one could
    /// be (large blocks start on slice boundaries, so any alignment up to a slice holds).
    #[inline]
    pub(crate) fn serves(size: usize, align: usize) -> bool {
        size <= MAX_BLOCK && align <= SLICE_SIZE
    }

    /// Whether a freed block may go into a cache: a block of the thread heaps (isolated
    /// heaps' blocks go back through their heap) no bigger than [`MAX_BLOCK`].
    #[inline]
    pub(crate) fn keeps(region: &Region) -> bool {
        // Relaxed: `heap_id` was written before the block was handed out; the user's own
        // synchronisation brought the block, and so this, here.
        region.len() <= MAX_BLOCK && region.heap_id.load(Ordering::Relaxed) == 0
    }

    /// Total size of the cached blocks (any thread; a statistic).
    pub(crate) fn bytes(&self) -> usize {
        // Relaxed: a statistic.
        self.bytes.load(Ordering::Relaxed)
    }

    fn add_bytes(&self, delta: isize) {
        // Relaxed: statistics, written by the owner only (no read-modify-write needed).
        let now = self.bytes.load(Ordering::Relaxed).wrapping_add_signed(delta);
        self.bytes.store(now, Ordering::Relaxed);
    }

    fn at(&self, i: usize) -> &'static Region {
        // SAFETY: slots below `len` hold cached regions; descriptors are never freed.
        unsafe { &*self.blocks[i].get() }
    }

    /// Removes slot `i`, keeping the others oldest first, and returns its block.
    fn remove(&self, i: usize) -> &'static Region {
        let region = self.at(i);
        let len = self.len.get();
        for j in i..len - 1 {
            self.blocks[j].set(self.blocks[j + 1].get());
        }
        self.len.set(len - 1);
        self.add_bytes(-(region.len() as isize));
        // Relaxed: read by frees of this block, which the user's synchronisation orders
        // after we hand it out (a racing double free is not detected, as everywhere).
        region.cached.store(false, Ordering::Relaxed);
        region
    }

    /// Takes the smallest cached block that holds `size` bytes (in whole slices) and is at
    /// most a quarter larger, so a small request does not pin a much bigger block.
    pub(crate) fn take(&self, size: usize) -> Option<&'static Region> {
        let need = slices(size);
        let mut best: Option<(usize, usize)> = None;
        for i in 0..self.len.get() {
            let len = self.at(i).len();
            if len >= need && len <= need + need / 4 && best.is_none_or(|(_, b)| len < b) {
                best = Some((i, len));
            }
        }
        best.map(|(i, _)| self.remove(i))
    }

    /// Keeps `region`, a freed large block that [`keeps`](Self::keeps) allows, pushing the
    /// oldest blocks out to make room; `give_back` frees each one pushed out.
    pub(crate) fn put(&self, region: &'static Region, mut give_back: impl FnMut(&'static Region)) {
        while self.len.get() == SLOTS
            || (self.len.get() > 0 && self.bytes() + region.len() > MAX_BYTES)
        {
            give_back(self.remove(0));
        }
        // Relaxed: see `remove`.
        region.cached.store(true, Ordering::Relaxed);
        self.blocks[self.len.get()].set(region);
        self.len.set(self.len.get() + 1);
        self.add_bytes(region.len() as isize);
    }

    /// Empties the cache, handing every block to `give_back`.
    pub(crate) fn drain(&self, mut give_back: impl FnMut(&'static Region)) {
        while self.len.get() > 0 {
            give_back(self.remove(self.len.get() - 1));
        }
    }
}
