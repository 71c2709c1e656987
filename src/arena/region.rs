//! Region descriptors: the arena's VMAs.
//!
//! A region is a contiguous, slice-aligned range of a reservation with one kind: free, pages of
//! one [`PageKind`], or one large block. Descriptors live in a type-stable pool: once created
//! a descriptor is never unmapped and never becomes anything else, so a stale pointer to one
//! (from the page map or an allocation hint) is always safe to lock. Every field a lock-free
//! reader may look at is atomic; fields only the arena's write-lock holder changes are still
//! atomics (accessed Relaxed under the lock) so that speculative readers never race with a
//! plain store.
//!
//! Small-object regions hand out pages through a bitmap: claiming a page is a CAS that clears
//! its bit (done by readers holding the region's read lock, so many threads carve pages from
//! one region at once), releasing is a `fetch_or`. A second bitmap remembers which pages were
//! touched since they were last purged.
//!
//! Layer: `arena`; calls `sync` (the region lock), `config`, `arena::page` and
//! `arena::large_block` (what a large block's region knows of the block).

use super::large_block::LargeBlock;
use super::page::{Page, PageTable};
use crate::config::{HUGE_PAGE_SIZE, HUGE_PAGES_PER_REGION, MAX_REGION_PAGES, PageKind};
use crate::sync::arena_lock::ArenaWriteGuard;
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use crate::sync::region_lock::RegionLock;

pub(crate) const BITMAP_WORDS: usize = MAX_REGION_PAGES / 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RegionKind {
    /// Not in use: a free range of a reservation (or a pooled descriptor).
    Free,
    /// Just taken out of the free ranges by a write session that has not set it up yet. Not
    /// free, so a range released meanwhile in the same session never merges with it.
    Taken,
    /// Pages of one kind for small objects.
    Pages(PageKind),
    /// One large block.
    Large,
}

impl RegionKind {
    const fn encode(self) -> u8 {
        match self {
            RegionKind::Free => 0,
            RegionKind::Taken => 5,
            RegionKind::Pages(kind) => 1 + kind as u8,
            RegionKind::Large => 4,
        }
    }

    const fn decode(raw: u8) -> RegionKind {
        match raw {
            1 => RegionKind::Pages(PageKind::Small),
            2 => RegionKind::Pages(PageKind::Medium),
            4 => RegionKind::Large,
            5 => RegionKind::Taken,
            _ => RegionKind::Free,
        }
    }
}

/// How the kernel is asked to back one huge page (2 MiB) of a pages region.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Backing {
    /// Small pages, as the kernel chooses (nothing asked).
    Small = 0,
    /// Asked for a huge page (advised before its first touch, or collapsed once dense).
    Huge = 1,
}

/// A page claimed from a region.
pub(crate) struct Claim {
    pub(crate) page: &'static Page,
    /// The page's memory is zero (never touched, or purged since).
    pub(crate) fresh: bool,
}

pub(crate) struct Region {
    pub(crate) lock: RegionLock,
    kind: AtomicU8,
    start: AtomicPtr<u8>,
    len: AtomicUsize,
    /// Free ranges and large blocks: true if any byte may be non-zero.
    dirty: AtomicBool,
    /// Free ranges: when to purge (if dirty). Locked state: changed only under the arena write
    /// lock (through [`super::ranges::Dirt::apply`]); 0 for the other kinds.
    purge_due: AtomicU64,
    /// Pages regions: a racy *hint* of when to purge the free pages released since the last
    /// purge (0 = nothing scheduled). Set lock-free by the releasing thread
    /// ([`Region::schedule_purge`], before its page goes back), cleared or forced by purge
    /// sessions; nothing depends on it for correctness: a purge session re-checks the
    /// bitmaps under the lock, and a lost update only delays a purge until the region's next
    /// release or a collect.
    purge_hint: AtomicU64,
    /// True if pages moved in by `mremap` may form kernel mappings of their own in the range.
    moved: AtomicBool,
    /// Pages regions: the page descriptors.
    table: AtomicPtr<PageTable>,
    /// Pages regions: bit set = page free.
    free_pages: [AtomicU64; BITMAP_WORDS],
    /// Pages regions: bit set = page touched since it was last purged.
    dirty_pages: [AtomicU64; BITMAP_WORDS],
    /// Pages regions: per huge page, how the kernel is asked to back it (a [`Backing`]):
    /// changed by compare-and-swap, by a claimer (after its claim, holding a page of the
    /// region but no lock) or a purge session (with the region marked). The two may race;
    /// each acts only if its own swap succeeds, and the value only decides who makes a
    /// system call, so Relaxed suffices.
    backing: [AtomicU8; HUGE_PAGES_PER_REGION],
    /// Pages regions: per huge page backed huge, when a purge session first found it partly
    /// free (0: it was not), for the longer delay before it is broken up. Purge sessions only.
    sparse_since: [AtomicU64; HUGE_PAGES_PER_REGION],
    /// True once any huge-page advice was given on the region's range: the kernel keeps it as
    /// a mapping flag, so the range gets a fresh mapping when the region goes.
    huge_advised: AtomicBool,
    /// Large blocks: the block's state, requested size and list links (see `large_block`).
    pub(crate) large: LargeBlock<Region>,

    // ---- arena bookkeeping: written under the arena write lock (but see `kind_next`) ----
    /// Neighbours in address order within the reservation.
    pub(crate) addr_prev: AtomicPtr<Region>,
    pub(crate) addr_next: AtomicPtr<Region>,
    /// Links in its page kind's list (`Arena::page_lists`), while a small-object region;
    /// walked without a lock (see `arena`'s publication rules).
    pub(crate) kind_prev: AtomicPtr<Region>,
    pub(crate) kind_next: AtomicPtr<Region>,
    /// Links in a free-range bin (`ranges`), while a free range.
    pub(crate) bin_prev: AtomicPtr<Region>,
    pub(crate) bin_next: AtomicPtr<Region>,
    /// The link in the pool of unused descriptors (`meta::Pool`), while unused. Each list has
    /// its own link, so a stale walker of one list never follows a link another list rewrote.
    pub(crate) pool_next: AtomicPtr<Region>,
    /// The descriptor created before this one (`meta::Descriptors::all_regions`): set once.
    pub(crate) next_created: AtomicPtr<Region>,
}

impl Region {
    pub(crate) fn new() -> Region {
        Region {
            lock: RegionLock::new(),
            kind: AtomicU8::new(RegionKind::Free.encode()),
            start: AtomicPtr::new(core::ptr::null_mut()),
            len: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            purge_due: AtomicU64::new(0),
            purge_hint: AtomicU64::new(0),
            moved: AtomicBool::new(false),
            table: AtomicPtr::new(core::ptr::null_mut()),
            free_pages: [const { AtomicU64::new(0) }; BITMAP_WORDS],
            dirty_pages: [const { AtomicU64::new(0) }; BITMAP_WORDS],
            backing: [const { AtomicU8::new(Backing::Small as u8) }; HUGE_PAGES_PER_REGION],
            sparse_since: [const { AtomicU64::new(0) }; HUGE_PAGES_PER_REGION],
            huge_advised: AtomicBool::new(false),
            large: LargeBlock::new(),
            addr_prev: AtomicPtr::new(core::ptr::null_mut()),
            addr_next: AtomicPtr::new(core::ptr::null_mut()),
            kind_prev: AtomicPtr::new(core::ptr::null_mut()),
            kind_next: AtomicPtr::new(core::ptr::null_mut()),
            bin_prev: AtomicPtr::new(core::ptr::null_mut()),
            bin_next: AtomicPtr::new(core::ptr::null_mut()),
            pool_next: AtomicPtr::new(core::ptr::null_mut()),
            next_created: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    // Plain field accessors. Relaxed everywhere: these fields change only under the arena write
    // lock while the region is detached or marked, and readers are ordered after those changes
    // by the region lock (Acquire reference), the arena lock, or a validated speculation. Each
    // setter takes the write guard as proof of the lock and asserts (debug builds) that the
    // region is detached or marked by the guard's session (`vma_assert_write_locked`).

    /// Checks a setter's precondition: the caller holds the arena write lock (`guard`) and the
    /// region is detached or marked in its session.
    #[inline]
    pub(crate) fn assert_writable(&self, guard: &ArenaWriteGuard<'_>) {
        debug_assert!(
            !self.lock.is_attached() || self.lock.is_write_locked(guard),
            "region changed while attached and not marked by this write session"
        );
        let _ = guard;
    }

    #[inline]
    pub(crate) fn kind(&self) -> RegionKind {
        RegionKind::decode(self.kind.load(Ordering::Relaxed))
    }
    pub(crate) fn set_kind(&self, guard: &ArenaWriteGuard<'_>, kind: RegionKind) {
        self.assert_writable(guard);
        self.kind.store(kind.encode(), Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn start(&self) -> *mut u8 {
        self.start.load(Ordering::Relaxed)
    }
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
    pub(crate) fn end(&self) -> usize {
        self.start() as usize + self.len()
    }
    pub(crate) fn set_range(&self, guard: &ArenaWriteGuard<'_>, start: *mut u8, len: usize) {
        self.assert_writable(guard);
        self.start.store(start, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
    }
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }
    pub(crate) fn set_dirty(&self, guard: &ArenaWriteGuard<'_>, dirty: bool) {
        self.assert_writable(guard);
        self.dirty.store(dirty, Ordering::Relaxed);
    }
    pub(crate) fn purge_due(&self) -> u64 {
        self.purge_due.load(Ordering::Relaxed)
    }
    pub(crate) fn set_purge_due(&self, guard: &ArenaWriteGuard<'_>, due: u64) {
        self.assert_writable(guard);
        self.purge_due.store(due, Ordering::Relaxed);
    }
    /// The purge hint of a pages region (0 = nothing scheduled): racy, see `purge_hint`.
    pub(crate) fn purge_hint(&self) -> u64 {
        // Relaxed: a hint; purge sessions re-check the bitmaps under the lock.
        self.purge_hint.load(Ordering::Relaxed)
    }
    /// Sets the purge hint of a pages region (a purge session: 0 after taking it, 1 to force
    /// it due). Needs no lock: the hint is racy by design.
    pub(crate) fn set_purge_hint(&self, due: u64) {
        // Relaxed: a hint, see `purge_hint`.
        self.purge_hint.store(due, Ordering::Relaxed);
    }
    /// Schedules a purge of a pages region at `due` unless one is already scheduled. Returns
    /// true if this call scheduled it. Lock-free: only the racy hint changes. (Relaxed:
    /// racing releases agree through the CAS; a lost race only delays a purge until the
    /// region's next release.)
    pub(crate) fn schedule_purge(&self, due: u64) -> bool {
        self.purge_hint
            .compare_exchange(0, due, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
    pub(crate) fn is_moved(&self) -> bool {
        self.moved.load(Ordering::Relaxed)
    }
    pub(crate) fn set_moved(&self, guard: &ArenaWriteGuard<'_>, moved: bool) {
        self.assert_writable(guard);
        self.moved.store(moved, Ordering::Relaxed);
    }
    pub(crate) fn table(&self) -> *mut PageTable {
        self.table.load(Ordering::Relaxed)
    }
    pub(crate) fn set_table(&self, guard: &ArenaWriteGuard<'_>, table: *mut PageTable) {
        self.assert_writable(guard);
        self.table.store(table, Ordering::Relaxed);
    }

    /// The page kind of a pages region.
    pub(crate) fn page_kind(&self) -> Option<PageKind> {
        match self.kind() {
            RegionKind::Pages(kind) => Some(kind),
            _ => None,
        }
    }

    fn page_count(&self) -> usize {
        self.page_kind().map_or(0, PageKind::pages_per_region)
    }

    /// The descriptor of page `index`.
    pub(crate) fn page(&self, index: usize) -> &'static Page {
        debug_assert!(index < self.page_count());
        // SAFETY: the table stays allocated forever (type-stable pool) and `index` is within it.
        unsafe { &(*self.table()).pages[index] }
    }

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

impl Region {
    /// Checks the region's invariants (mimalloc's `mi_assert_valid` style): the kind agrees
    /// with attachment, range and page table; the bitmaps have no bits past the region's
    /// pages; every page descriptor points back at its place in the region. If the guard's
    /// session has the region marked (so no refill can claim a page meanwhile) it also checks
    /// that every free page has no owner, block size or carved blocks. Panics on a violation.
    /// Checks whenever it is called (tests call it in any profile); the arena's own calls
    /// are in debug builds only. The caller holds the arena write lock.
    #[cfg_attr(not(debug_assertions), allow(dead_code))] // tests call it in any profile
    pub(crate) fn validate(&self, guard: &ArenaWriteGuard<'_>) {
        let kind = self.kind();
        let attached = self.lock.is_attached();
        match kind {
            RegionKind::Free | RegionKind::Taken => {
                assert!(!attached, "a free range attached");
            }
            RegionKind::Pages(_) | RegionKind::Large => {
                assert!(attached, "a {kind:?} region detached");
            }
        }
        assert!(
            self.len() != 0 && !self.start().is_null(),
            "an empty region"
        );
        assert_eq!(
            self.start() as usize % crate::config::SLICE_SIZE,
            0,
            "a region not slice-aligned"
        );
        let Some(page_kind) = self.page_kind() else {
            assert!(
                self.table().is_null(),
                "a {kind:?} region with a page table"
            );
            return;
        };
        assert!(
            !self.table().is_null(),
            "a pages region without a page table"
        );
        assert_eq!(
            self.len(),
            crate::config::SMALL_REGION_SIZE,
            "pages region size"
        );
        assert_eq!(
            self.purge_due(),
            0,
            "a pages region with a free-range due time"
        );
        let count = self.page_count();
        let marked = self.lock.is_write_locked(guard);
        for word in 0..BITMAP_WORDS {
            let valid = bits_below(count.saturating_sub(word * 64));
            // Acquire: pairs with `release_page`, so a free page's descriptor is seen as its
            // releaser left it. Relaxed for the dirty bits: only checked for their range.
            let free = self.free_pages[word].load(Ordering::Acquire);
            let dirty = self.dirty_pages[word].load(Ordering::Relaxed);
            assert_eq!(free & !valid, 0, "free bits past the region's pages");
            assert_eq!(dirty & !valid, 0, "dirty bits past the region's pages");
            for bit in 0..64.min(count.saturating_sub(word * 64)) {
                let index = word * 64 + bit;
                let page = self.page(index);
                // Relaxed: fixed while the region is attached (set before `attach`).
                let start = page.start.load(Ordering::Relaxed) as usize;
                assert_eq!(
                    start,
                    self.start() as usize + (index << page_kind.shift()),
                    "page start"
                );
                assert!(
                    core::ptr::eq(page.region.load(Ordering::Relaxed), self),
                    "page of another region"
                );
                assert_eq!(
                    page.index.load(Ordering::Relaxed) as usize,
                    index,
                    "page index"
                );
                if marked && free & (1 << bit) != 0 {
                    // Relaxed: published by the bitmap's Release, which we acquired.
                    assert_eq!(page.owner.load(Ordering::Relaxed), super::page::NO_OWNER);
                    assert_eq!(page.block_size.load(Ordering::Relaxed), 0);
                    assert_eq!(page.carved.get(), 0);
                }
            }
        }
    }
}

/// A word with the lowest `n` bits set (all 64 if `n >= 64`).
const fn bits_below(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
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
