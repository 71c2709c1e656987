//! A thread heap's cache of freed large blocks up to [`MAX_BLOCK`], reused without the arena
//! lock, and its shelf of regions that carried heap-profile samples (see `sample_shelf`).
//!
//! Blocks over 64 KiB are large blocks, each in a region fitted to it (see
//! `config::MAX_SMALL_SIZE`); allocating or freeing one is a write session on the arena, several
//! times what mimalloc pays for a block of that size from its pages (measured:
//! `docs/findings.md`, "Large blocks through a per-thread cache"). Programs that free and
//! reallocate buffers of 64–512 KiB (I/O buffers, vectors growing through `realloc`) would pay
//! that on every pair. So a heap keeps the last few it freed, at most [`SLOTS`] blocks and
//! [`MAX_BYTES`] in all, oldest pushed out first, and hands one back when a request fits it.
//! A block in a cache is still a large block to the arena (committed, counted in
//! `large_bytes`); `stats()` reports it in `large_cached_bytes`, not in use. Caches are
//! emptied when their thread exits and by `collect`.
//!
//! A cached block is in state `Cached` (`arena::large_block`), so freeing or reallocating it
//! again aborts as a double free instead of handing one block out twice; the cache moves it
//! there and back with compare-and-swaps, so a block it lists twice (which must never happen)
//! aborts too instead of being handed out twice.
//!
//! Layer: `heap`; reads `arena` region fields and `config`, calls `heap::sample_shelf` (the
//! caller gives evicted blocks back).

use core::cell::Cell;

use crate::arena::large_block::LargeState;
use crate::arena::region::Region;
use crate::config::{SLICE_SIZE, align_up};
use crate::counter::OwnerCount;

/// The largest block a cache keeps.
pub(crate) const MAX_BLOCK: usize = 512 << 10;
/// Blocks a cache keeps at most...
pub(crate) const SLOTS: usize = 4;
/// ...and their total size at most (bounds what a thread holds that no one uses, but for the
/// samples' shelf: at most [`SAMPLE_SLOTS`] regions of a slice, and only while sampling).
pub(crate) const MAX_BYTES: usize = 1 << 20;
/// One-slice regions that served heap-profile samples of small blocks, kept apart for the
/// next such sample (while sampling is on), outside the [`MAX_BYTES`] budget: at most this
/// many, the next ones on the shared shelf (`sample_shelf`).
pub(crate) const SAMPLE_SLOTS: usize = 16;

/// The cache; only its heap's owner uses it (as the rest of the heap).
pub(crate) struct LargeCache {
    /// Oldest first; the first `len` are set.
    blocks: [Cell<*const Region>; SLOTS],
    len: Cell<usize>,
    /// Total size of the cached blocks (`stats()` sums it from other threads).
    bytes: OwnerCount,
    /// Freed one-slice sample regions (see [`SAMPLE_SLOTS`]); the first `sample_len` are set.
    samples: [Cell<*const Region>; SAMPLE_SLOTS],
    sample_len: Cell<usize>,
}

impl LargeCache {
    pub(crate) const fn new() -> LargeCache {
        LargeCache {
            blocks: [const { Cell::new(core::ptr::null()) }; SLOTS],
            len: Cell::new(0),
            bytes: OwnerCount::new(0),
            samples: [const { Cell::new(core::ptr::null()) }; SAMPLE_SLOTS],
            sample_len: Cell::new(0),
        }
    }

    /// Whether a request may be served from a cache: a large block every cached one could
    /// be (large blocks start on slice boundaries, so any alignment up to a slice holds).
    #[inline]
    pub(crate) fn serves(size: usize, align: usize) -> bool {
        size <= MAX_BLOCK && align <= SLICE_SIZE
    }

    /// Whether a freed block may go into a cache: a block of the thread heaps (isolated
    /// heaps' blocks go back through their heap) no bigger than [`MAX_BLOCK`]. (A region that
    /// carried a heap-profile sample goes on a shelf of its own instead, for the next sample:
    /// see [`LargeCache::put_sample`].)
    #[inline]
    pub(crate) fn keeps(region: &Region) -> bool {
        region.len() <= MAX_BLOCK && region.large.heap_id() == 0
    }

    /// A one-slice region kept for heap-profile samples (here, else on the shared shelf), live
    /// again, if there is one.
    pub(crate) fn take_for_sample(&self) -> Option<&'static Region> {
        let region = self.pop_sample().or_else(super::sample_shelf::take)?;
        to_live(region);
        Some(region)
    }

    /// The newest one-slice region kept for samples, off its shelf, still `Cached`.
    fn pop_sample(&self) -> Option<&'static Region> {
        let len = self.sample_len.get().checked_sub(1)?;
        self.sample_len.set(len);
        // SAFETY: slots below the old length hold cached regions; descriptors are never freed.
        let region = unsafe { &*self.samples[len].get() };
        self.bytes.add(region.len().wrapping_neg());
        Some(region)
    }

    /// Total size of the cached blocks (any thread; a statistic).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Total size of the cached blocks but the samples' shelf.
    fn blocks_bytes(&self) -> usize {
        self.bytes() - self.sample_len.get() * SLICE_SIZE
    }

    fn at(&self, i: usize) -> &'static Region {
        // SAFETY: slots below `len` hold cached regions; descriptors are never freed.
        unsafe { &*self.blocks[i].get() }
    }

    /// Removes slot `i`, keeping the others oldest first, and returns its block, still in
    /// state `Cached`.
    fn unlist(&self, i: usize) -> &'static Region {
        let region = self.at(i);
        let len = self.len.get();
        for j in i..len - 1 {
            self.blocks[j].set(self.blocks[j + 1].get());
        }
        self.len.set(len - 1);
        self.bytes.add(region.len().wrapping_neg());
        region
    }

    /// Takes the smallest cached block that holds `size` bytes (in whole slices) and is at
    /// most a quarter larger, so a small request does not pin a much bigger block.
    pub(crate) fn take(&self, size: usize) -> Option<&'static Region> {
        // Large blocks are made of whole slices.
        let need = align_up(size, SLICE_SIZE)?;
        let mut best: Option<(usize, usize)> = None;
        for i in 0..self.len.get() {
            let len = self.at(i).len();
            if len >= need && len <= need + need / 4 && best.is_none_or(|(_, b)| len < b) {
                best = Some((i, len));
            }
        }
        let region = self.unlist(best?.0);
        to_live(region);
        Some(region)
    }

    /// Keeps `region`, the large block at `ptr` being freed, which [`keeps`](Self::keeps)
    /// allows, pushing the oldest blocks out to make room; `give_back` frees each one pushed
    /// out (still in state `Cached`: it goes from there straight to the arena's queue, so no
    /// stray free can catch it live on the way). Aborts if the block is not live: freed
    /// already (cached, queued, or waiting for its isolated heap), it is a double free.
    pub(crate) fn put(
        &self,
        region: &'static Region,
        ptr: *mut u8,
        mut give_back: impl FnMut(&'static Region),
    ) {
        to_cached(region, ptr);
        while self.len.get() == SLOTS
            || (self.len.get() > 0 && self.blocks_bytes() + region.len() > MAX_BYTES)
        {
            give_back(self.unlist(0));
        }
        self.blocks[self.len.get()].set(region);
        self.len.set(self.len.get() + 1);
        self.bytes.add(region.len());
    }

    /// Keeps `region`, a freed sample region already `Cached` ([`to_cached`]), on the samples'
    /// shelf; hands it back if the shelf is full.
    pub(crate) fn put_sample(&self, region: &'static Region) -> Result<(), &'static Region> {
        let len = self.sample_len.get();
        if len == SAMPLE_SLOTS {
            return Err(region);
        }
        self.samples[len].set(region);
        self.sample_len.set(len + 1);
        self.bytes.add(region.len());
        Ok(())
    }

    /// Lists the newest block a second time: the state a `fork` leaves when it catches the
    /// owner inside `remove`'s shift (for tests of the child, through `crate::fuzzing`).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn list_newest_twice(&self) {
        let len = self.len.get();
        assert!(len > 0 && len < SLOTS, "needs a block and a free slot");
        self.blocks[len].set(self.blocks[len - 1].get());
        self.len.set(len + 1);
    }

    /// Empties the cache, handing every block, still `Cached`, to `give_back`.
    pub(crate) fn drain(&self, mut give_back: impl FnMut(&'static Region)) {
        while self.len.get() > 0 {
            give_back(self.unlist(self.len.get() - 1));
        }
        while let Some(region) = self.pop_sample() {
            give_back(region);
        }
    }
}

/// Moves the live large block at `ptr` (in `region`) into a cache's state, `Cached`; aborts if
/// it was not live: freed already (cached, queued, or waiting for its isolated heap), it is a
/// double free.
pub(crate) fn to_cached(region: &Region, ptr: *mut u8) {
    if !region
        .large
        .transition(LargeState::Live, LargeState::Cached)
    {
        region.large.check_state(ptr, LargeState::Live);
        crate::abort::double_free(ptr); // it moved on between the two looks: a racing free
    }
}

/// Makes a block taken from a cache live again; aborts if it was not cached (a block listed
/// twice, which must never happen, would otherwise be handed out twice).
fn to_live(region: &Region) {
    if !region
        .large
        .transition(LargeState::Cached, LargeState::Live)
    {
        crate::abort::internal("a thread heap's cache lists a block that is not cached");
    }
}
