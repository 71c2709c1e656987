//! Large blocks: one region each, created, resized, moved and freed by write sessions.
//!
//! Only a block's first slice is in the page map: frees, reallocs and `usable_size` come with
//! the block's start, an interior pointer is an invalid free, and so mapping a block costs the
//! same whatever its size (a 1 TiB block would otherwise write 128 MiB of map entries).
//!
//! A freed block's range stays dirty (and committed) until the purge delay passes, so a
//! program that frees and reallocates large buffers reuses memory that is already mapped in
//! instead of faulting fresh pages in every time.

use core::ptr::NonNull;

use super::pagemap::Entry;
use super::ranges::Dirt;
use super::region::{Region, RegionKind};
use super::{Arena, region_at};
use crate::config::{REMAP_CONGRUENCE, SLICE_SIZE};
use crate::os::{Os, Remap};
use crate::stats::{adjust, bump};
use crate::sync::atomic::Ordering;

/// Aborts unless `region` still holds the live large block at `ptr`: a realloc or free of a
/// block that was already freed (or never allocated) must not go on. Caller holds the arena
/// write lock.
fn check_large(region: &Region, ptr: *mut u8) {
    if region.kind() != RegionKind::Large || region.start() != ptr || !region.lock.is_attached() {
        crate::abort::invalid_free(ptr);
    }
}

/// Dirty large blocks from this size up are zeroed by purging rather than by writing zeros.
const ZERO_BY_PURGE_MIN: usize = 1 << 20;

/// `size` rounded up to whole slices, or `None` if that overflows.
fn slices(size: usize) -> Option<usize> {
    Some(size.checked_add(SLICE_SIZE - 1)? & !(SLICE_SIZE - 1))
}

impl<O: Os> Arena<O> {
    /// Creates a region holding one block of at least `size` bytes aligned to `align`. Returns
    /// the region and whether its memory is known to be zero.
    pub(crate) fn alloc_large(&self, size: usize, align: usize) -> Option<(&'static Region, bool)> {
        let len = slices(size)?;
        let align = align.max(SLICE_SIZE);
        let mut session = self.write();
        let region = session.take_range(len, align, 0)?;
        let dirt = Dirt::of(region);
        let start = region.start();
        region.set_kind(RegionKind::Large);
        region.set_purge_due(0);
        self.map.set_large(start as usize, region);
        region.lock.attach(&session.guard);
        adjust(&self.counters.large_regions, 1);
        adjust(&self.counters.large_bytes, len as isize);
        if !dirt.is_dirty() {
            adjust(&self.counters.committed, len as isize);
        }
        Some((region, !dirt.is_dirty()))
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

    /// Frees the large block at `ptr`, held in `region`. Aborts if `ptr` is not (or no longer)
    /// the start of a live large block. The memory is purged after the purge delay.
    pub(crate) fn free_large(&self, region: &'static Region, ptr: *mut u8) {
        let len = region.len();
        if region.start() != ptr || len == 0 {
            crate::abort::invalid_free(ptr);
        }
        let due = self.os.now_ns().saturating_add(self.purge_delay());
        {
            let session = self.write();
            // Re-check under the lock: a concurrent double free may have removed the region.
            check_large(region, ptr);
            region.lock.start_write(&session.guard);
            region.lock.detach(&session.guard);
            self.map.clear(ptr as usize, SLICE_SIZE);
            let state = &mut *session.state;
            let dirt = Dirt::dirty(due, region.is_moved());
            state.free.release(&mut state.descriptors, region, dirt);
            adjust(&self.counters.large_regions, -1);
            adjust(&self.counters.large_bytes, -(len as isize));
        }
        self.schedule_purge(due);
        self.maybe_purge();
    }

    /// Resizes a large block in place if the arena allows it: shrinking returns the tail as a
    /// free range, growing takes the front of the free range right after the block. Returns
    /// false (and changes nothing) if the block cannot be resized in place.
    pub(crate) fn resize_large_in_place(
        &self,
        region: &'static Region,
        ptr: *mut u8,
        new_size: usize,
    ) -> bool {
        let Some(new_len) = slices(new_size) else {
            return false;
        };
        let old_len = region.len();
        if new_len == old_len {
            return true;
        }
        // Growing needs a free range right after the block. Look without any lock first, so a
        // realloc that cannot grow in place does not queue behind other write sessions.
        if new_len > old_len && !self.free_after_speculative(region, new_len - old_len) {
            return false;
        }
        let due = self.os.now_ns().saturating_add(self.purge_delay());
        let session = self.write();
        check_large(region, ptr);
        region.lock.start_write(&session.guard);
        let state = &mut *session.state;
        if new_len < old_len {
            let (tail, tail_len) = (ptr.wrapping_add(new_len), old_len - new_len);
            let dirt = Dirt::dirty(due, region.is_moved());
            if !state.free.split_tail(
                &mut state.descriptors,
                &self.os,
                region,
                tail,
                tail_len,
                dirt,
            ) {
                return false;
            }
            region.set_range(ptr, new_len);
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
            let Some(dirty) = state.free.take_front(&mut state.descriptors, next, grow) else {
                return false;
            };
            region.set_range(ptr, new_len);
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
    fn free_after_speculative(&self, region: &Region, grow: usize) -> bool {
        let Some(seq) = self.lock.speculate_try_begin() else {
            bump(&self.counters.spec_retry, 1);
            return true; // a write session is running: decide under the lock
        };
        // Only atomics of type-stable descriptors are read, so any interleaving is safe; the
        // answer is used only if the sequence did not move.
        let end = region.end();
        let fits = region_at(&region.addr_next).is_some_and(|n| {
            n.kind() == RegionKind::Free && n.start() as usize == end && n.len() >= grow
        });
        if self.lock.speculate_retry(seq) {
            bump(&self.counters.spec_retry, 1);
            return true;
        }
        bump(&self.counters.spec_success, 1);
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
        let new_len = slices(new_size)?;
        let modulus = align.max(REMAP_CONGRUENCE);
        let mut session = self.write();
        check_large(region, ptr);
        let old_len = region.len();
        if new_len < old_len {
            return None;
        }
        let dest = session.take_range(new_len, modulus, ptr as usize % modulus)?;
        let dest_dirt = Dirt::of(dest);
        region.lock.start_write(&session.guard);
        let moved = match (NonNull::new(ptr), NonNull::new(dest.start())) {
            (Some(from), Some(to)) => self.os.remap(from, to, old_len),
            _ => Remap::Failed,
        };
        let state = &mut *session.state;
        if moved == Remap::Failed {
            state.free.release(&mut state.descriptors, dest, dest_dirt);
            return None;
        }
        // From here on the user's pages are in `dest`: nothing below can fail.
        // The old range leaves the page map; it reads as zero now (its pages moved), unless
        // the OS lost it (another mapping may live there now): then it stays out of
        // circulation for good, never purged, reset or handed out.
        region.lock.detach(&session.guard);
        self.map.clear(ptr as usize, SLICE_SIZE);
        if moved == Remap::Moved {
            state
                .free
                .release(&mut state.descriptors, region, Dirt::CLEAN);
        }
        dest.set_kind(RegionKind::Large);
        dest.set_purge_due(0);
        // The moved pages keep their own kernel mapping until the range is reset.
        dest.set_moved(true);
        // Relaxed: statistics.
        dest.requested
            .store(region.requested.load(Ordering::Relaxed), Ordering::Relaxed);
        self.map.set_large(dest.start() as usize, dest);
        dest.lock.attach(&session.guard);
        adjust(
            &self.counters.large_bytes,
            new_len as isize - old_len as isize,
        );
        // The source's pages left it (it reads as zero now). The destination was already
        // counted if it was dirty (the moved pages replace its old ones); else count it now.
        let fresh = if dest_dirt.is_dirty() {
            0
        } else {
            new_len as isize
        };
        adjust(&self.counters.committed, fresh - old_len as isize);
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
