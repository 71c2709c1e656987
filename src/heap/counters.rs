//! What a heap counts: bytes and blocks allocated and freed by its owner (and the [`Tally`] of
//! its refill and free paths), and the shared counters of heaps that are gone and of threads
//! that have none. Which counters the calling thread uses is decided above (`heap`'s
//! `record_*`); how they count is here.
//!
//! Layer: `heap`; calls `heap::modes`, `counter`, `stats` and `sync::atomic`.

use super::modes;
use crate::counter::OwnerCount;
use crate::stats::Tally;
use crate::sync::atomic::{AtomicU8, Ordering};

/// What a heap can count on its fast paths: bytes and blocks allocated and freed (the sum over
/// all heaps of allocated minus freed bytes is `Stats::bytes_requested`; one heap's own figures
/// are [`crate::thread_stats`]). It costs two loads and stores per malloc and per free, so it
/// is only kept while asked for (`VMARENA_STATS=1`, or `vmarena::track_requested_bytes`). Only
/// the owner updates it ([`OwnerCount::add`]). Frees from other threads count on the freeing
/// thread, so one heap's freed bytes may exceed its allocated bytes. (Bytes in use are not
/// counted per operation at all: `stats()` derives them from the pages' `used` counts, which
/// the fast paths maintain anyway.)
///
/// Whether to count, and whether to sample allocations for the heap profile, are bits of one
/// byte of the heap's own ([`HeapCounters::modes`]). The malloc fast path does not test it:
/// it counts down, and the heap's count is armed for what the modes need (`heap::countdown`).
pub(crate) struct HeapCounters {
    pub(crate) allocated: OwnerCount,
    pub(crate) freed: OwnerCount,
    pub(crate) allocations: OwnerCount,
    pub(crate) frees: OwnerCount,
    /// [`COUNT`] and [`SAMPLE`]: set from the process's settings when the heap comes up, and by
    /// `vmarena::track_requested_bytes` and `vmarena::profile` for live heaps.
    pub(crate) modes: AtomicU8,
    /// Page claims and releases, region reads, speculations (see `Tally`).
    pub(crate) tally: Tally,
}

impl HeapCounters {
    /// A heap's counters, written by its owner only.
    pub(crate) const fn new() -> HeapCounters {
        HeapCounters::with_tally(Tally::owned())
    }

    /// Counters any thread may write (for paths without a heap of their own).
    pub(crate) const fn shared() -> HeapCounters {
        HeapCounters::with_tally(Tally::shared())
    }

    const fn with_tally(tally: Tally) -> HeapCounters {
        HeapCounters {
            allocated: OwnerCount::new(0),
            freed: OwnerCount::new(0),
            allocations: OwnerCount::new(0),
            frees: OwnerCount::new(0),
            modes: AtomicU8::new(0),
            tally,
        }
    }

    /// The heap's modes ([`COUNT`], [`SAMPLE`]). Relaxed: configuration flags, which the owner
    /// sees soon after another thread changes them, not at once.
    #[inline(always)]
    pub(crate) fn modes(&self) -> u8 {
        self.modes.load(Ordering::Relaxed)
    }

    /// Whether the owner counts now.
    #[inline(always)]
    pub(crate) fn counting(&self) -> bool {
        self.modes() & COUNT != 0
    }

    /// Turns `mode` on or off (any thread). Relaxed: see `modes`.
    pub(crate) fn set_mode(&self, mode: u8, on: bool) {
        if on {
            self.modes.fetch_or(mode, Ordering::Relaxed);
        } else {
            self.modes.fetch_and(!mode, Ordering::Relaxed);
        }
    }

    /// Counts an allocation whose size is computed only if counting is on (owner only).
    #[inline(always)]
    pub(crate) fn on_alloc_with(&self, bytes: impl FnOnce() -> usize) {
        if self.counting() {
            self.allocated.add(bytes());
            self.allocations.add(1);
        }
    }

    /// Counts an allocation of `bytes` (owner only).
    #[inline(always)]
    pub(crate) fn on_alloc(&self, bytes: usize) {
        self.on_alloc_with(|| bytes);
    }

    /// Counts a free of `bytes` (owner only).
    #[inline(always)]
    pub(crate) fn on_free(&self, bytes: usize) {
        if self.counting() {
            self.freed.add(bytes);
            self.frees.add(1);
        }
    }

    /// Counts a block resized in place from `old` to `new` bytes (owner only): the difference
    /// as bytes allocated or freed, no block counted.
    pub(crate) fn on_resize(&self, old: usize, new: usize) {
        if self.counting() {
            self.allocated.add(new.saturating_sub(old));
            self.freed.add(old.saturating_sub(new));
        }
    }

    /// The update of shared counters (any thread), by `bytes` allocated and freed and `blocks`
    /// allocated and freed.
    pub(crate) fn add_shared(&self, allocated: usize, freed: usize, blocks: (usize, usize)) {
        if modes::tracking_requested() {
            self.allocated.add_shared(allocated);
            self.freed.add_shared(freed);
            self.allocations.add_shared(blocks.0);
            self.frees.add_shared(blocks.1);
        }
    }

    /// Bytes allocated minus bytes freed (wrapping: see above).
    pub(crate) fn net_bytes(&self) -> usize {
        self.allocated.get().wrapping_sub(self.freed.get())
    }

    /// The owner's figures, for [`crate::thread_stats`].
    pub(crate) fn thread_stats(&self) -> crate::stats::ThreadStats {
        crate::stats::ThreadStats {
            counting: self.counting(),
            bytes_allocated: self.allocated.get() as u64,
            bytes_freed: self.freed.get() as u64,
            allocations: self.allocations.get() as u64,
            frees: self.frees.get() as u64,
        }
    }

    /// Counts every block allocated as freed (for an isolated heap being destroyed: its blocks
    /// die with it, and the process's figures must balance). The owner only.
    pub(crate) fn count_all_freed(&self) {
        self.freed.set(self.allocated.get());
        self.frees.set(self.allocations.get());
    }

    /// Adds these counters into `into`.
    pub(crate) fn add_to(&self, into: &mut crate::stats::Stats) {
        if let Some(total) = &mut into.bytes_requested {
            *total = total.wrapping_add(self.net_bytes());
        }
        self.tally.add_to(into);
    }

    /// Moves everything into `into` (shared counters) and zeroes these: for a heap whose
    /// owner is gone.
    pub(crate) fn fold_into(&self, into: &HeapCounters) {
        let (allocated, freed) = (self.allocated.take(), self.freed.take());
        let blocks = (self.allocations.take(), self.frees.take());
        into.add_shared(allocated, freed, blocks);
        self.tally.fold_into(&into.tally);
    }
}

/// The mode bit: count requested bytes.
pub(crate) const COUNT: u8 = 1;
/// The mode bit: sample allocations for the heap profile (see `sampling`).
pub(crate) const SAMPLE: u8 = 2;

/// Counters of exited heaps, and of frees made by threads without a usable heap.
pub(crate) static ORPHAN_COUNTERS: HeapCounters = HeapCounters::shared();
