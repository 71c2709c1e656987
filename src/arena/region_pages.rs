//! A pages region's page bitmaps: which pages are free, which were touched since they were
//! last purged, and per huge page how the kernel is asked to back it.
//!
//! Claiming a page is a CAS that clears its bit in `free_pages` (done by readers holding the
//! region's read lock, so many threads carve pages from one region at once); releasing is a
//! `fetch_or`. Claims go to the fullest huge page with room (see `arena::huge`).
//!
//! Layer: `arena`; an `impl` block of `arena::region`'s `Region`; calls `arena::page` and
//! `config`.

use super::page::Page;
use super::region::{BITMAP_WORDS, Backing, Region, bits_below};
use crate::config::{HUGE_PAGE_SIZE, HUGE_PAGES_PER_REGION, PageKind};
use crate::sync::arena_lock::ArenaWriteGuard;
use crate::sync::atomic::Ordering;

/// A page claimed from a region.
pub(crate) struct Claim {
    pub(crate) page: &'static Page,
    /// The page's memory is zero (never touched, or purged since).
    pub(crate) fresh: bool,
}

impl Region {
    /// Sets up the page bitmaps of a new pages region: every page free; touched if the range
    /// may hold old data.
    pub(crate) fn reset_page_maps(&self, guard: &ArenaWriteGuard<'_>, dirty: bool) {
        self.assert_writable(guard);
        let count = self.page_count();
        for word in 0..BITMAP_WORDS {
            let bits = bits_below(count.saturating_sub(word * 64));
            // Relaxed: the region is detached or marked; attach/unmark publishes these.
            self.free_pages[word].store(bits, Ordering::Relaxed);
            self.dirty_pages[word].store(if dirty { bits } else { 0 }, Ordering::Relaxed);
        }
        for huge in 0..HUGE_PAGES_PER_REGION {
            // Relaxed: as above.
            self.backing[huge].store(Backing::Small as u8, Ordering::Relaxed);
            self.sparse_since[huge].store(0, Ordering::Relaxed);
        }
        // Relaxed: as above.
        self.huge_advised.store(false, Ordering::Relaxed);
    }

    /// Claims a free page of the fullest huge page that has one (lowest address first among
    /// equals), so that pages fill huge pages densely: a full one can be backed by one huge
    /// page, an empty one given back whole (see `arena::huge`). The caller holds the region's
    /// read lock (or the arena lock), so the region cannot be removed or purged meanwhile.
    pub(crate) fn claim_page(&self) -> Option<Claim> {
        let huge_pages = self.page_count() / self.pages_per_huge_page();
        loop {
            let mut fullest: Option<(usize, u32)> = None;
            for huge in 0..huge_pages {
                let (word, mask) = self.huge_page_bits(huge);
                // Relaxed: a choice; the claim below re-validates.
                let free = (self.free_pages[word].load(Ordering::Relaxed) & mask).count_ones();
                if free != 0 && fullest.is_none_or(|(_, most)| free < most) {
                    fullest = Some((huge, free));
                }
            }
            let (word, mask) = self.huge_page_bits(fullest?.0);
            // Relaxed: as above.
            let bits = self.free_pages[word].load(Ordering::Relaxed) & mask;
            if bits == 0 {
                continue; // claimed meanwhile: choose again
            }
            let bit = bits.trailing_zeros() as usize;
            // Acquire: pairs with the Release in `release_page`, so we see the previous
            // owner's last writes to the page descriptor before we reinitialise it. The bit
            // is ours if we are the one who cleared it.
            if self.free_pages[word].fetch_and(!(1 << bit), Ordering::Acquire) & (1 << bit) == 0 {
                continue;
            }
            // Relaxed: dirty bits are only cleared by a purge, which runs with the region
            // marked and so is ordered against us by the region lock.
            let was = self.dirty_pages[word].fetch_or(1 << bit, Ordering::Relaxed);
            return Some(Claim {
                page: self.page(word * 64 + bit),
                fresh: was & (1 << bit) == 0,
            });
        }
    }

    // ---- huge pages (see `arena::huge`)

    /// Pages per huge page: 32 small pages, 4 medium ones.
    pub(crate) fn pages_per_huge_page(&self) -> usize {
        self.page_kind()
            .map_or(1, |kind| HUGE_PAGE_SIZE >> kind.shift())
    }

    /// The bitmap word and the bits of huge page `huge`'s pages (a huge page never spans two
    /// words: 32 or 4 pages, at an aligned offset).
    pub(crate) fn huge_page_bits(&self, huge: usize) -> (usize, u64) {
        let per = self.pages_per_huge_page();
        let first = huge * per;
        (first / 64, bits_below(per) << (first % 64))
    }

    /// The huge page that holds page `index`.
    pub(crate) fn huge_page_of(&self, index: usize) -> usize {
        index / self.pages_per_huge_page()
    }

    /// The range of huge page `huge`.
    pub(crate) fn huge_page_start(&self, huge: usize) -> *mut u8 {
        self.start().wrapping_add(huge * HUGE_PAGE_SIZE)
    }

    /// The huge pages of this region.
    pub(crate) fn huge_page_count(&self) -> usize {
        self.page_count() / self.pages_per_huge_page()
    }

    /// Free pages and touched pages of huge page `huge` (bitmap bits, shifted to the bottom).
    pub(crate) fn huge_page_free_and_dirty(&self, huge: usize) -> (u64, u64) {
        let (word, mask) = self.huge_page_bits(huge);
        let shift = mask.trailing_zeros();
        // Acquire (free): as in `all_pages_free`. Relaxed (dirty): set by claimers under the
        // region read lock and cleared by purges with the region marked; a decision taken on a
        // stale value only delays advice.
        (
            (self.free_pages[word].load(Ordering::Acquire) & mask) >> shift,
            (self.dirty_pages[word].load(Ordering::Relaxed) & mask) >> shift,
        )
    }

    /// Bytes of the region touched since they were last purged.
    pub(crate) fn touched_bytes(&self) -> usize {
        let page_size = self.page_kind().map_or(0, PageKind::page_size);
        self.dirty_page_count() * page_size
    }

    pub(crate) fn backing(&self, huge: usize) -> Backing {
        // Relaxed: see `backing`; the kernel, not memory, is what the value describes.
        match self.backing[huge].load(Ordering::Relaxed) {
            0 => Backing::Small,
            _ => Backing::Huge,
        }
    }

    /// Moves huge page `huge` from `from` to `to`: true for the one caller that does (the one
    /// that then asks the kernel). Relaxed: only decides who makes the system call.
    pub(crate) fn set_backing(&self, huge: usize, from: Backing, to: Backing) -> bool {
        let moved = self.backing[huge]
            .compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if moved {
            // Relaxed: read by the purge session that removes the region, which the region
            // lock orders after us.
            self.huge_advised.store(true, Ordering::Relaxed);
        }
        moved
    }

    /// True if any huge-page advice was given on the region since it was set up.
    pub(crate) fn huge_advised(&self) -> bool {
        // Relaxed: see `set_backing`.
        self.huge_advised.load(Ordering::Relaxed)
    }

    /// When a purge first found huge page `huge` partly free (0: not). Purge sessions only.
    pub(crate) fn sparse_since(&self, huge: usize) -> u64 {
        // Relaxed: purge sessions only, which the arena lock orders.
        self.sparse_since[huge].load(Ordering::Relaxed)
    }

    pub(crate) fn set_sparse_since(&self, huge: usize, since: u64) {
        // Relaxed: see `sparse_since`.
        self.sparse_since[huge].store(since, Ordering::Relaxed);
    }

    /// Returns a page whose blocks are all free. Needs no lock: a region is only removed when
    /// every page is free, which cannot happen while the caller still owns this one. This is
    /// the caller's last touch of the region: once the bit is back, a purge session may
    /// remove the region and reuse the descriptor (so `schedule_purge` comes first).
    pub(crate) fn release_page(&self, index: usize) {
        let (word, bit) = (index / 64, index % 64);
        // Release: our writes to the page descriptor happen before the next claimer's Acquire
        // and before a remover's Acquire check that all pages are free.
        let prev = self.free_pages[word].fetch_or(1 << bit, Ordering::Release);
        debug_assert!(prev & (1 << bit) == 0, "page released twice");
    }

    /// A racy look at the bitmap: false only if no page was free a moment ago (lock-free
    /// walkers skip such regions without taking their read lock).
    pub(crate) fn may_have_free_page(&self) -> bool {
        // Relaxed: a hint; the claim re-checks under the region read lock.
        self.free_pages
            .iter()
            .any(|word| word.load(Ordering::Relaxed) != 0)
    }

    /// True if no page is in use. Caller holds the arena write lock with the region marked.
    pub(crate) fn all_pages_free(&self) -> bool {
        let count = self.page_count();
        (0..BITMAP_WORDS).all(|word| {
            // Acquire: pairs with `release_page`, so the releasers are done with their pages.
            self.free_pages[word].load(Ordering::Acquire)
                == bits_below(count.saturating_sub(word * 64))
        })
    }

    /// Pages that are free and touched: what a purge can give back. Caller holds the arena
    /// write lock with the region marked, so neither bitmap changes except by releases (which
    /// only add free pages).
    pub(crate) fn purgeable_pages(&self, word: usize) -> u64 {
        // Acquire: as in `all_pages_free`.
        self.free_pages[word].load(Ordering::Acquire)
            & self.dirty_pages[word].load(Ordering::Relaxed)
    }

    /// Records that `bits` of bitmap word `word` were purged.
    pub(crate) fn clear_dirty(&self, word: usize, bits: u64) {
        // Relaxed: caller has the region marked; claimers are ordered after the session end.
        self.dirty_pages[word].fetch_and(!bits, Ordering::Relaxed);
    }

    /// Number of touched pages (for the committed-bytes counter when a region goes away).
    pub(crate) fn dirty_page_count(&self) -> usize {
        self.dirty_pages
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::page::PageTable;
    use crate::arena::region::RegionKind;
    use crate::config::PageKind;

    fn pages_region(kind: PageKind, table: &mut PageTable) -> Region {
        let r = Region::new();
        let lock = crate::sync::arena_lock::ArenaLock::new();
        let guard = lock.write();
        r.set_kind(&guard, RegionKind::Pages(kind));
        r.set_table(&guard, table);
        r.reset_page_maps(&guard, false);
        r
    }

    fn new_table() -> std::boxed::Box<PageTable> {
        // SAFETY: all-zero is a valid PageTable (null pointers, zero atomics and counters).
        unsafe { std::boxed::Box::<PageTable>::new_zeroed().assume_init() }
    }

    #[test]
    fn every_page_is_claimed_once_then_none() {
        for kind in PageKind::ALL {
            let mut table = new_table();
            let r = pages_region(kind, &mut table);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..kind.pages_per_region() {
                let claim = r.claim_page().expect("a free page");
                assert!(claim.fresh, "new region pages are fresh");
                assert!(
                    seen.insert(claim.page as *const Page as usize),
                    "page claimed twice"
                );
            }
            assert!(r.claim_page().is_none());
            assert!(!r.all_pages_free());
        }
    }

    #[test]
    fn released_pages_come_back_dirty_until_purged() {
        let mut table = new_table();
        let r = pages_region(PageKind::Medium, &mut table);
        let first = r.claim_page().unwrap();
        let index = (first.page as *const Page as usize - table.pages.as_ptr() as usize)
            / core::mem::size_of::<Page>();
        r.release_page(index);
        assert_eq!(r.purgeable_pages(0), 1 << index);
        let again = r.claim_page().unwrap();
        assert!(
            core::ptr::eq(again.page, first.page),
            "lowest free page is reused first"
        );
        assert!(!again.fresh, "a reused page is not known to be zero");
        r.release_page(index);
        r.clear_dirty(0, r.purgeable_pages(0));
        assert!(
            r.claim_page().unwrap().fresh,
            "a purged page is fresh again"
        );
    }

    #[test]
    fn concurrent_claims_never_hand_out_a_page_twice() {
        let mut table = new_table();
        let r = std::sync::Arc::new(pages_region(PageKind::Small, &mut table));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut mine = std::vec::Vec::new();
                    while let Some(c) = r.claim_page() {
                        mine.push(c.page as *const Page as usize);
                    }
                    mine
                })
            })
            .collect();
        let mut all: std::vec::Vec<usize> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), PageKind::Small.pages_per_region());
    }
}
