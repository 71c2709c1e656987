//! The region read path: heaps claim pages from small-object regions (`vma_start_read` on the
//! hinted region, then on the others of its kind; the shared arena lock only as fallback for
//! a marked region), give empty pages back, and, when no region has a free page, a write
//! session creates one.
//!
//! Layer: `arena`; calls `arena`'s own `region`, `page` and `ranges`, and `sync` (region
//! locks), `os`, `config`, `stats` and `ablation`.

use super::page::{NO_OWNER, Page, PageTable};
use super::ranges::Dirt;
use super::region::{Region, RegionKind};
use super::region_pages::Claim;
use super::{Arena, WriteSession, as_ptr};
use crate::config::{HUGE_PAGE_SIZE, PageKind, SMALL_REGION_SIZE};
use crate::os::Os;
use crate::stats::{Tally, adjust};
use crate::sync::atomic::Ordering;
use crate::sync::region_lock::ReadFail;

/// What the lock-free part of a refill found.
enum LockFree {
    Claimed(Claim),
    /// Every region of the kind is full (or there is none): a write session must create one.
    AllFull,
    /// A region that may have free pages is marked by a write session: wait for it under the
    /// shared arena lock.
    Busy,
}

/// Regions looked at by one lock-free walk. Links change under the write lock while a walk may
/// be following them; descriptors are type-stable, so a walk that strays only ends early.
const MAX_WALK: usize = 4096;

impl<O: Os> Arena<O> {
    /// Claims a free page of `kind` for a heap, counting in `tally` (the heap's).
    ///
    /// First without the arena lock: the hinted region, then the other regions of the kind,
    /// each under its own region read lock (`vma_start_read`), so a refill waits for no write
    /// session that works elsewhere. Only if a region that may have pages is marked does it
    /// wait, under the shared arena lock; only if all are full does it open a write session,
    /// which creates a region.
    pub(crate) fn claim_page(&self, kind: PageKind, tally: &Tally) -> Option<Claim> {
        let claim = match self.claim_lock_free(kind, tally) {
            LockFree::Claimed(claim) => Some(claim),
            LockFree::AllFull => self.claim_or_create(kind),
            LockFree::Busy => self
                .with_read(|_| self.claim_from_list(kind))
                .or_else(|| self.claim_or_create(kind)),
        }?;
        tally.page_claimed(kind, claim.fresh);
        // Relaxed (both): constant while the region is attached, which it stays while we own
        // one of its pages.
        let region = claim.page.region.load(Ordering::Relaxed);
        let index = claim.page.index.load(Ordering::Relaxed) as usize;
        // SAFETY: descriptors are never freed; see above.
        self.back_huge_after_claim(unsafe { &*region }, index);
        Some(claim)
    }

    /// Under a write session: a page from any region (one may have been added or unmarked
    /// since we looked), else from a new region.
    fn claim_or_create(&self, kind: PageKind) -> Option<Claim> {
        let mut session = self.write();
        self.claim_from_list(kind)
            .or_else(|| session.create_page_region(kind)?.claim_page())
    }

    fn claim_lock_free(&self, kind: PageKind, tally: &Tally) -> LockFree {
        if crate::ablation::global_arena_lock() {
            return LockFree::Busy; // the ablation: every refill goes through the arena lock
        }
        // Acquire: pairs with the Release that published the hint, so the descriptor's
        // initialisation happens before our reads of it (the region lock's Acquire then orders
        // everything that changed since).
        let hint = self.hints[kind.index()].load(Ordering::Acquire);
        let mut busy = false;
        // SAFETY: region descriptors are never freed.
        if let Some(region) = unsafe { hint.as_ref() } {
            match self.claim_from_region(region, kind, tally) {
                Ok(Some(claim)) => return LockFree::Claimed(claim),
                Ok(None) | Err(ReadFail::Detached) => {}
                Err(ReadFail::Locked) => busy = true,
            }
        }
        for region in self.page_regions(kind).take(MAX_WALK) {
            if core::ptr::eq(region, hint) || !region.may_have_free_page() {
                continue;
            }
            match self.claim_from_region(region, kind, tally) {
                Ok(Some(claim)) => {
                    // Release: see above.
                    self.hints[kind.index()].store(as_ptr(region), Ordering::Release);
                    return LockFree::Claimed(claim);
                }
                Ok(None) | Err(ReadFail::Detached) => {}
                Err(ReadFail::Locked) => busy = true,
            }
        }
        if busy {
            LockFree::Busy
        } else {
            LockFree::AllFull
        }
    }

    /// Read-locks `region` (`vma_start_read`) and claims a page of it if it is (still) a pages
    /// region of `kind`.
    fn claim_from_region(
        &self,
        region: &Region,
        kind: PageKind,
        tally: &Tally,
    ) -> Result<Option<Claim>, ReadFail> {
        match region.lock.start_read(&self.lock) {
            Ok(_read) => {
                tally.count(&tally.read_fast);
                // The descriptor may have been reused since we found it: check identity now
                // that it cannot change.
                if region.page_kind() == Some(kind) {
                    Ok(region.claim_page())
                } else {
                    tally.count(&tally.read_retry);
                    Ok(None)
                }
            }
            Err(fail) => {
                tally.count(match fail {
                    ReadFail::Locked => &tally.read_fallback,
                    ReadFail::Detached => &tally.read_retry,
                });
                Err(fail)
            }
        }
    }

    /// Claims a page from any region of `kind`. Caller holds the arena lock (either mode), so
    /// no write session can be changing these regions.
    fn claim_from_list(&self, kind: PageKind) -> Option<Claim> {
        for region in self.page_regions(kind) {
            if let Some(claim) = region.claim_page() {
                // Release: see `claim_lock_free`.
                self.hints[kind.index()].store(as_ptr(region), Ordering::Release);
                return Some(claim);
            }
        }
        None
    }

    /// Returns a page whose blocks are all free to its region, counting in `tally`, and
    /// schedules the purge of its memory after the purge delay (running any purge already
    /// due).
    pub(crate) fn release_page(&self, page: &Page, tally: &Tally) {
        // Relaxed: constant while the region is attached, which it stays while we own a page.
        let region = page.region.load(Ordering::Relaxed);
        // SAFETY: descriptors are never freed; an owned page's region is attached.
        let region = unsafe { &*region };
        // Relaxed: other threads compare `owner` only with their own id and read `block_size`
        // and `carved` only to validate a pointer; the bitmap's Release publishes all three.
        page.owner.store(NO_OWNER, Ordering::Relaxed);
        page.block_size.store(0, Ordering::Relaxed);
        page.carved.set(0); // no address is a block of a free page
        if let Some(kind) = region.page_kind() {
            tally.page_released(kind);
        }
        // Schedule the purge while we still own a page of the region: once the page bit is
        // back, a purge session may remove the region and reuse its descriptor, so we must not
        // touch it after that (Linux never touches a VMA it holds no reference to).
        if region.purge_hint() == 0 {
            let due = self.os.coarse_now_ns().saturating_add(self.purge_delay());
            if region.schedule_purge(due) {
                self.schedule_purge(due);
            }
        }
        // The last touch of the region.
        region.release_page(page.index.load(Ordering::Relaxed) as usize);
        self.maybe_purge();
    }
}

impl<O: Os> WriteSession<'_, O> {
    /// Creates a small-object region of `kind`, attached and marked for this session.
    pub(super) fn create_page_region(&mut self, kind: PageKind) -> Option<&'static Region> {
        let arena = self.arena;
        // Aligned to huge pages, so the region is made of whole ones (see `huge`).
        let align = kind.page_size().max(HUGE_PAGE_SIZE);
        let region = self.take_range(SMALL_REGION_SIZE, align, 0)?;
        let state = &mut *self.state;
        let dirt = Dirt::of(region);
        let Some(table) = state.descriptors.take_table(&arena.os) else {
            state
                .free
                .release(&self.guard, &mut state.descriptors, region, dirt);
            return None;
        };
        let start = region.start();
        region.set_kind(&self.guard, RegionKind::Pages(kind));
        region.set_table(&self.guard, (table as *const PageTable).cast_mut());
        region.reset_page_maps(&self.guard, dirt.is_dirty());
        region.set_purge_due(&self.guard, 0); // the free-range due time; pages use the hint
        region.set_purge_hint(0);
        for (index, page) in table.pages.iter().take(kind.pages_per_region()).enumerate() {
            let page_start = start.wrapping_add(index << kind.shift());
            // Relaxed: the region is not attached yet; `attach` publishes all of this.
            page.start.store(page_start, Ordering::Relaxed);
            page.region.store(as_ptr(region), Ordering::Relaxed);
            page.index.store(index as u32, Ordering::Relaxed);
            page.owner.store(NO_OWNER, Ordering::Relaxed);
            page.block_size.store(0, Ordering::Relaxed);
            page.carved.set(0);
            page.xthread_free
                .store(core::ptr::null_mut(), Ordering::Relaxed);
            page.used.set(0);
            arena
                .map
                .set_page(page_start as usize, kind.page_size(), page);
        }
        arena.back_region_huge(region);
        region.lock.attach(&self.guard);
        // Link at the head of the kind's list. Release: lock-free walkers (`claim_lock_free`)
        // that follow the new head see the region initialised.
        let head = arena.page_lists[kind.index()].load(Ordering::Relaxed);
        region
            .kind_prev
            .store(core::ptr::null_mut(), Ordering::Relaxed);
        region.kind_next.store(head, Ordering::Relaxed);
        if let Some(head) = arena.page_regions(kind).next() {
            head.kind_prev.store(as_ptr(region), Ordering::Relaxed);
        }
        arena.page_lists[kind.index()].store(as_ptr(region), Ordering::Release);
        // Release: see `claim_lock_free`.
        arena.hints[kind.index()].store(as_ptr(region), Ordering::Release);
        adjust(&arena.counters.page_regions[kind.index()], 1);
        state.publish_metadata(&arena.counters);
        Some(region)
    }
}
