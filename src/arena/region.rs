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
//! A pages region's bitmaps (which pages are free, which touched, how each huge page is
//! backed) and what claims and releases pages through them are in `region_pages`.
//!
//! Layer: `arena`; calls `sync` (the region lock), `config`, `arena::page` and
//! `arena::large_block` (what a large block's region knows of the block).

use super::large_block::LargeBlock;
use super::page::{Page, PageTable};
use crate::config::{HUGE_PAGES_PER_REGION, MAX_REGION_PAGES, PageKind};
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
    pub(super) free_pages: [AtomicU64; BITMAP_WORDS],
    /// Pages regions: bit set = page touched since it was last purged.
    pub(super) dirty_pages: [AtomicU64; BITMAP_WORDS],
    /// Pages regions: per huge page, how the kernel is asked to back it (a [`Backing`]):
    /// changed by compare-and-swap, by a claimer (after its claim, holding a page of the
    /// region but no lock) or a purge session (with the region marked). The two may race;
    /// each acts only if its own swap succeeds, and the value only decides who makes a
    /// system call, so Relaxed suffices.
    pub(super) backing: [AtomicU8; HUGE_PAGES_PER_REGION],
    /// Pages regions: per huge page backed huge, when a purge session first found it partly
    /// free (0: it was not), for the longer delay before it is broken up. Purge sessions only.
    pub(super) sparse_since: [AtomicU64; HUGE_PAGES_PER_REGION],
    /// True once any huge-page advice was given on the region's range: the kernel keeps it as
    /// a mapping flag, so the range gets a fresh mapping when the region goes.
    pub(super) huge_advised: AtomicBool,
    /// Large blocks: the block's state, requested size and list links (see `large_block`).
    pub(crate) large: LargeBlock<Region>,

    // ---- arena bookkeeping: written under the arena write lock; some read without it (the
    // address links by speculative readers, the kind lists by refills: see `region_at`) ----
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

    pub(super) fn page_count(&self) -> usize {
        self.page_kind().map_or(0, PageKind::pages_per_region)
    }

    /// The descriptor of page `index`.
    pub(crate) fn page(&self, index: usize) -> &'static Page {
        debug_assert!(index < self.page_count());
        // SAFETY: the table stays allocated forever (type-stable pool) and `index` is within it.
        unsafe { &(*self.table()).pages[index] }
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
pub(super) const fn bits_below(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}
