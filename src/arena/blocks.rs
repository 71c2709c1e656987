//! Large blocks: one region each, created, resized, moved and freed by write sessions.
//!
//! Only a block's first slice is in the page map: frees, reallocs and `usable_size` come with
//! the block's start, an interior pointer is an invalid free, and so mapping a block costs the
//! same whatever its size (a 1 TiB block would otherwise write 128 MiB of map entries).
//!
//! A freed block's range stays dirty (and committed) until the purge delay passes, so a
//! program that frees and reallocates large buffers reuses memory that is already mapped in
//! instead of faulting fresh pages in every time.
//!
//! Layer: `arena`; calls `arena`'s own `region`, `ranges` and `pagemap`, and `sync`, `os`,
//! `config`, `stats` and `abort`.

use core::ptr::NonNull;

use super::large_block::LargeState;
use super::pagemap::Entry;
use super::ranges::Dirt;
use super::region::{Region, RegionKind};
use super::{Arena, WriteSession, region_at};
use crate::config::{
    FREED_RESIDENT_MIN, FREED_RESIDENT_SHARE, REMAP_CONGRUENCE, SLICE_SIZE, align_up,
};
use crate::os::{Os, Remap};
use crate::stats::{Tally, adjust, bump};
use crate::sync::atomic::{Ordering, fence};

/// Aborts unless `region` still holds the live large block at `ptr`: a realloc of a block
/// that was already freed (or never allocated) must not go on. Caller holds the arena write
/// lock.
fn check_large(region: &Region, ptr: *mut u8) {
    if region.kind() != RegionKind::Large || region.start() != ptr || !region.lock.is_attached() {
        crate::abort::invalid_free(ptr);
    }
    region.large.check_state(ptr, LargeState::Live);
}

/// Dirty large blocks from this size up are zeroed by purging rather than by writing zeros.
const ZERO_BY_PURGE_MIN: usize = 1 << 20;

impl<O: Os> Arena<O> {
    /// Creates a region holding one live block of at least `size` bytes aligned to `align`
    /// (`size` is its requested size). Returns the region and whether its memory is known to
    /// be zero.
    pub(crate) fn alloc_large(&self, size: usize, align: usize) -> Option<(&'static Region, bool)> {
        let len = align_up(size, SLICE_SIZE)?;
        let align = align.max(SLICE_SIZE);
        let mut session = self.write();
        let (region, clean) = session.take_range_reusing(len, align, 0, true)?;
        if clean != 0 {
            // Memory to fault in for the block: first give back what is freed beyond the
            // budget, so the two do not add up.
            session.trim_freed_resident();
        }
        let start = region.start();
        region.set_kind(&session.guard, RegionKind::Large);
        region.set_purge_due(&session.guard, 0);
        region.large.reset_live(size);
        self.back_large_huge(start, len);
        self.map.set_large(start as usize, region);
        region.lock.attach(&session.guard);
        adjust(&self.counters.large_regions, 1);
        adjust(&self.counters.large_bytes, len as isize);
        adjust(&self.counters.committed, clean as isize);
        Some((region, clean == len))
    }

    /// Zeroes the first `size` bytes of a new large block that came from a dirty range. Big
    /// blocks are purged instead (the OS hands back zero pages on first touch), which beats
    /// writing zeros and does not make untouched memory resident; small ones are written.
    pub(crate) fn zero_large(&self, region: &Region, size: usize) {
        let ptr = region.start();
        let purged = size >= ZERO_BY_PURGE_MIN
            && NonNull::new(ptr).is_some_and(|p| self.os.purge(p, region.len()));
        if !purged {
            // SAFETY: the block is the caller's and at least `size` bytes long.
            unsafe { core::ptr::write_bytes(ptr, 0, size) };
        }
    }

    /// Frees the large block at `ptr`, held in `region`, whose state is `from` (`Live`, or
    /// `HeapFreed` when its isolated heap gives it back). Aborts if `ptr` is not the start of
    /// such a block: the state moves to `Queued` once, so a second free aborts. The memory is
    /// purged after the purge delay.
    ///
    /// A free never waits for a write session: the block is queued, and given back to the
    /// free ranges at once if the arena lock is free, else by the session holding it, or by
    /// the last reader holding it in shared mode, when it ends. (Until then its range is
    /// neither free nor anyone's: nothing can be placed there.)
    pub(crate) fn queue_large_release(
        &self,
        region: &'static Region,
        ptr: *mut u8,
        from: LargeState,
    ) {
        if region.start() != ptr || region.len() == 0 {
            crate::abort::invalid_free(ptr);
        }
        if !region.large.transition(from, LargeState::Queued) {
            region.large.check_state(ptr, from);
            crate::abort::double_free(ptr); // it moved on between the two looks: a racing free
        }
        let mut head = self.queued_large.load(Ordering::Relaxed);
        loop {
            // Relaxed: the queue's own link; the CAS publishes it.
            region.large.queue_next.store(head, Ordering::Relaxed);
            // SeqCst: with the fence of `release_queued_large_if_free`, either we see the
            // session that holds the lock end, or it sees our block (the store-buffering
            // pattern: neither may miss the other). Release: the link before the head.
            match self.queued_large.compare_exchange_weak(
                head,
                super::as_ptr(region),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        fence(Ordering::SeqCst);
        if let Some(session) = self.try_write() {
            drop(session); // releases the queue, ours included
        }
        self.maybe_purge();
    }

    /// Runs a session to release queued large frees if the lock is free now (after a session
    /// or a reader ended: a free may have queued a block while it held the lock). True if it
    /// ran one.
    pub(super) fn release_queued_large_if_free(&self) -> bool {
        // SeqCst: see `queue_large_release` (the unlock just before this is the other side's "the
        // holder is gone"). Relaxed load: only decides whether to try.
        fence(Ordering::SeqCst);
        if self.queued_large.load(Ordering::Relaxed).is_null() {
            return false;
        }
        self.try_write().is_some() // dropping the session releases the queue
    }

    /// Resizes a large block in place if the arena allows it: shrinking returns the tail as a
    /// free range, growing takes the front of the free range right after the block. Returns
    /// false (and changes nothing) if the block cannot be resized in place.
    pub(crate) fn resize_large_in_place(
        &self,
        region: &'static Region,
        ptr: *mut u8,
        new_size: usize,
        tally: &Tally,
    ) -> bool {
        let Some(new_len) = align_up(new_size, SLICE_SIZE) else {
            return false;
        };
        let old_len = region.len();
        if new_len == old_len {
            return true;
        }
        // Growing needs a free range right after the block. Look without any lock first, so a
        // realloc that cannot grow in place does not queue behind other write sessions.
        if new_len > old_len && !self.free_after_speculative(region, new_len - old_len, tally) {
            return false;
        }
        let due = self.os.coarse_now_ns().saturating_add(self.purge_delay());
        let session = self.write();
        check_large(region, ptr);
        region.lock.start_write(&session.guard);
        let state = &mut *session.state;
        if new_len < old_len {
            let (tail, tail_len) = (ptr.wrapping_add(new_len), old_len - new_len);
            let dirt = Dirt::dirty(due, region.is_moved());
            if !state.free.split_tail(
                &session.guard,
                &mut state.descriptors,
                &self.os,
                region,
                (tail, tail_len),
                dirt,
            ) {
                return false;
            }
            region.set_range(&session.guard, ptr, new_len);
            adjust(&self.counters.large_bytes, -(tail_len as isize));
            drop(session);
            self.schedule_purge(due);
        } else {
            let grow = new_len - old_len;
            let Some(next) = region_at(&region.addr_next) else {
                return false;
            };
            if next.start() as usize != region.end() {
                return false;
            }
            let Some(dirty) =
                state
                    .free
                    .take_front(&session.guard, &mut state.descriptors, next, grow)
            else {
                return false;
            };
            region.set_range(&session.guard, ptr, new_len);
            adjust(&self.counters.large_bytes, grow as isize);
            if !dirty {
                adjust(&self.counters.committed, grow as isize);
            }
            bump(&self.counters.grown_in_place_bytes, grow as u64);
        }
        true
    }

    /// True if a free range of at least `grow` bytes may follow `region`: a lock-free
    /// speculative read of the neighbour, validated by the arena sequence (`try_begin` /
    /// `retry`). Errs on the side of "maybe" when it cannot tell.
    fn free_after_speculative(&self, region: &Region, grow: usize, tally: &Tally) -> bool {
        let Some(seq) = self.lock.speculate_try_begin() else {
            tally.count(&tally.spec_retry);
            return true; // a write session is running: decide under the lock
        };
        // Only atomics of type-stable descriptors are read, so any interleaving is safe; the
        // answer is used only if the sequence did not move.
        let end = region.end();
        let fits = region_at(&region.addr_next).is_some_and(|n| {
            n.kind() == RegionKind::Free && n.start() as usize == end && n.len() >= grow
        });
        if self.lock.speculate_retry(seq) {
            tally.count(&tally.spec_retry);
            return true;
        }
        tally.count(&tally.spec_success);
        fits
    }

    /// Moves a large block into a new region of at least `new_size` bytes by moving its pages
    /// with the OS (`mremap`), so no byte is copied. The new block starts at an address
    /// congruent to the old one modulo 2 MiB (and aligned to `align`), which lets the kernel
    /// move whole page tables. Returns `None` if it could not (then nothing changed).
    pub(crate) fn remap_large(
        &self,
        region: &'static Region,
        ptr: *mut u8,
        new_size: usize,
        align: usize,
    ) -> Option<*mut u8> {
        let new_len = align_up(new_size, SLICE_SIZE)?;
        let modulus = align.max(REMAP_CONGRUENCE);
        let mut session = self.write();
        check_large(region, ptr);
        let old_len = region.len();
        if new_len < old_len {
            return None;
        }
        // Congruent if possible (whole page tables move); else anywhere aligned: a move that
        // copies page-table entries still beats the caller's copy of every byte (which a
        // congruent range needing more address space than is left would otherwise force).
        // Searched as for a new block (freed memory first, and across a freed range and the
        // clean one after it): if the move found less than the allocation that replaces a
        // failed move, the caller would copy the whole block where a move was possible.
        let (dest, dest_clean) = session
            .take_range_reusing(new_len, modulus, ptr as usize % modulus, true)
            .or_else(|| session.take_range_reusing(new_len, align.max(SLICE_SIZE), 0, true))?;
        let dest_dirt = Dirt::of(dest);
        region.lock.start_write(&session.guard);
        let moved = match (NonNull::new(ptr), NonNull::new(dest.start())) {
            (Some(from), Some(to)) => self.os.remap(from, to, old_len),
            _ => Remap::Failed,
        };
        let state = &mut *session.state;
        if moved == Remap::Failed {
            // The range goes back in the state of the dirty range it started in, if any: count
            // the clean part it spanned as committed too, as every dirty byte is (its purge
            // takes the whole range off).
            if dest_dirt.is_dirty() {
                adjust(&self.counters.committed, dest_clean as isize);
            }
            state
                .free
                .release(&session.guard, &mut state.descriptors, dest, dest_dirt);
            return None;
        }
        // From here on the user's pages are in `dest`: nothing below can fail.
        // The old range leaves the page map; it reads as zero now (its pages moved), unless
        // the OS lost it (another mapping may live there now): then it stays out of
        // circulation for good, never purged, reset or handed out.
        region.lock.detach(&session.guard);
        if !region
            .large
            .transition(LargeState::Live, LargeState::Released)
        {
            crate::abort::double_free(ptr); // freed while it moved: the program raced itself
        }
        self.map.clear(ptr as usize, SLICE_SIZE);
        if moved == Remap::Moved {
            state
                .free
                .release(&session.guard, &mut state.descriptors, region, Dirt::CLEAN);
        }
        dest.set_kind(&session.guard, RegionKind::Large);
        dest.set_purge_due(&session.guard, 0);
        // The moved pages keep their own kernel mapping until the range is reset.
        dest.set_moved(&session.guard, true);
        dest.large.reset_live(region.large.requested());
        self.map.set_large(dest.start() as usize, dest);
        dest.lock.attach(&session.guard);
        adjust(
            &self.counters.large_bytes,
            new_len as isize - old_len as isize,
        );
        // The source's pages left it (it reads as zero now). The destination's dirty part was
        // already counted (the moved pages replace its old ones); count its clean part now.
        adjust(
            &self.counters.committed,
            dest_clean as isize - old_len as isize,
        );
        bump(&self.counters.remaps, 1);
        bump(&self.counters.remapped_bytes, old_len as u64);
        Some(dest.start())
    }

    /// The large region holding the live block at `ptr` (for callers that moved it).
    pub(crate) fn large_region(&self, ptr: *mut u8) -> Option<&'static Region> {
        match self.lookup(ptr as usize) {
            Entry::Large(region) => Some(region),
            _ => None,
        }
    }
}

impl<O: Os> WriteSession<'_, O> {
    /// Gives the large blocks freed meanwhile back to the free ranges (see
    /// `Arena::queue_large_release`); every session does this before it ends.
    pub(super) fn release_queued_large(&mut self) {
        let arena = self.arena;
        // Acquire: pairs with the freeing threads' CAS, so their links are visible.
        let mut next = arena
            .queued_large
            .swap(core::ptr::null_mut(), Ordering::Acquire);
        let mut released = false;
        let due = arena.os.coarse_now_ns().saturating_add(arena.purge_delay());
        // SAFETY: queued entries are region descriptors, which are never freed.
        while let Some(region) = unsafe { next.as_ref() } {
            // Relaxed: written by the freeing thread before its CAS, which we acquired.
            next = region.large.queue_next.load(Ordering::Relaxed);
            let ptr = region.start();
            if region.kind() != RegionKind::Large
                || !region.lock.is_attached()
                || !region
                    .large
                    .transition(LargeState::Queued, LargeState::Released)
            {
                crate::abort::internal("a queued large block that is not queued");
            }
            let len = region.len();
            region.lock.start_write(&self.guard);
            region.lock.detach(&self.guard);
            arena.map.clear(ptr as usize, SLICE_SIZE);
            let state = &mut *self.state;
            let dirt = Dirt::dirty(due, region.is_moved());
            state
                .free
                .release(&self.guard, &mut state.descriptors, region, dirt);
            adjust(&arena.counters.large_regions, -1);
            adjust(&arena.counters.large_bytes, -(len as isize));
            released = true;
        }
        if released {
            arena.schedule_purge(due);
        }
    }

    /// Keeps the freed memory that is still resident (dirty free ranges) within its budget
    /// (see `FREED_RESIDENT_MIN`): purges the ranges due first until it is.
    pub(super) fn trim_freed_resident(&mut self) {
        let arena = self.arena;
        // Relaxed: statistics, changed only by write sessions, like this one.
        let live = arena.counters.large_bytes.load(Ordering::Relaxed);
        let budget = FREED_RESIDENT_MIN.max(live / FREED_RESIDENT_SHARE);
        let state = &mut *self.state;
        if state.free.dirty_bytes <= budget {
            return;
        }
        let purged = state
            .free
            .purge_over(&self.guard, &mut state.descriptors, &arena.os, budget);
        adjust(&arena.counters.committed, -(purged as isize));
        bump(&arena.counters.purged_bytes, purged as u64);
    }
}
