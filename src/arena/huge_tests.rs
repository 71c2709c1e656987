//! Huge pages and the bound on freed memory, on the fake back end (which records what it was
//! asked): pages fill huge pages densely, a huge page is asked for before its first touch once
//! the heap is big, collapsed when it fills after small pages, given back whole, broken up
//! only after the longer delay; nothing is asked when the system says never; large blocks
//! reuse freed memory, and freed memory stays within its budget when fresh memory is needed.
//!
//! Layer: `arena`'s tests; drives `Arena` on `os::fake`.

use std::vec::Vec;

use super::huge::Policy;
use super::large_block::LargeState;
use super::page::Page;
use super::region::Backing;
use super::*;
use crate::config::{FREED_RESIDENT_MIN, HUGE_MIN_TOUCHED, HUGE_PAGE_SIZE, SLICE_SIZE};
use crate::os::fake::FakeOs;
use crate::stats::Tally;

const GIB: usize = 1 << 30;
const MIB: usize = 1 << 20;
/// Small pages per huge page.
const PER_HUGE: usize = HUGE_PAGE_SIZE / (64 << 10);

fn claim(arena: &Arena<FakeOs>, tally: &Tally) -> &'static Page {
    arena
        .claim_page(PageKind::Small, tally)
        .expect("a page")
        .page
}

fn huge_page_of(page: &Page) -> usize {
    // Relaxed: fixed while the page is claimed.
    (page.start.load(Ordering::Relaxed) as usize) / HUGE_PAGE_SIZE
}

/// Claims small pages until the heap counts as big and the last huge page opened is full:
/// the next claim opens an untouched huge page.
fn claim_past_the_threshold(arena: &Arena<FakeOs>, tally: &Tally) -> Vec<&'static Page> {
    let mut pages: Vec<_> = (0..HUGE_MIN_TOUCHED / (64 << 10))
        .map(|_| claim(arena, tally))
        .collect();
    while pages.len() % PER_HUGE != 0 {
        pages.push(claim(arena, tally));
    }
    pages
}

fn advised(arena: &Arena<FakeOs>) -> usize {
    arena.os.advised.load(Ordering::Relaxed)
}

#[test]
fn regions_are_made_of_whole_huge_pages() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    for kind in PageKind::ALL {
        let page = ARENA.claim_page(kind, &TALLY).unwrap().page;
        // SAFETY: descriptors are never freed; the page's region is attached while we own it.
        let region = unsafe { &*page.region.load(Ordering::Relaxed) };
        assert_eq!(region.start() as usize % HUGE_PAGE_SIZE, 0, "{kind:?}");
    }
}

#[test]
fn pages_fill_the_fullest_huge_page_first() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    // Three huge pages' worth; then a page freed in the first and two in the third.
    let pages: Vec<_> = (0..3 * PER_HUGE).map(|_| claim(&ARENA, &TALLY)).collect();
    let first = huge_page_of(pages[0]);
    assert!(pages[..PER_HUGE].iter().all(|p| huge_page_of(p) == first));
    ARENA.release_page(pages[5], &TALLY);
    ARENA.release_page(pages[2 * PER_HUGE + 1], &TALLY);
    ARENA.release_page(pages[2 * PER_HUGE + 2], &TALLY);
    // The fullest huge page with room is the first (one page free, against two).
    assert_eq!(huge_page_of(claim(&ARENA, &TALLY)), first);
    let third = huge_page_of(pages[2 * PER_HUGE]);
    assert_eq!(huge_page_of(claim(&ARENA, &TALLY)), third);
}

#[test]
fn huge_pages_are_asked_for_once_the_heap_is_big() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    assert_eq!(ARENA.huge_policy(), Policy::Dense);
    // Below the threshold: small pages only.
    let below = HUGE_MIN_TOUCHED / (64 << 10) - 1;
    let mut pages: Vec<_> = (0..below).map(|_| claim(&ARENA, &TALLY)).collect();
    assert_eq!(advised(&ARENA), 0, "a small heap asked for huge pages");
    // The page that reaches it: its huge page was touched in small pages already (it is the
    // threshold's last), so nothing yet; it fills, and is collapsed.
    while pages.len() % PER_HUGE != 0 || pages.len() <= below {
        pages.push(claim(&ARENA, &TALLY));
    }
    assert_eq!(ARENA.os.collapsed.load(Ordering::Relaxed), HUGE_PAGE_SIZE);
    // The next claim opens an untouched huge page: asked for before its first touch.
    let before = advised(&ARENA);
    pages.push(claim(&ARENA, &TALLY));
    assert_eq!(advised(&ARENA), before + HUGE_PAGE_SIZE);
    // The rest of that huge page asks nothing more.
    for _ in 1..PER_HUGE {
        pages.push(claim(&ARENA, &TALLY));
    }
    assert_eq!(advised(&ARENA), before + HUGE_PAGE_SIZE);
    let stats = {
        let mut stats = Stats::default();
        ARENA.counters.fill(&mut stats);
        stats
    };
    assert_eq!(stats.huge_pages_collapsed, 1);
    assert!(stats.huge_pages_advised >= 1 && stats.huge_pages >= 2);
}

#[test]
fn huge_pages_go_back_whole_and_break_up_only_late() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    ARENA.set_purge_delay(1_000);
    // Past the threshold, then two huge pages asked for before their first touch.
    let _pages = claim_past_the_threshold(&ARENA, &TALLY);
    let a: Vec<_> = (0..PER_HUGE).map(|_| claim(&ARENA, &TALLY)).collect();
    let b: Vec<_> = (0..PER_HUGE).map(|_| claim(&ARENA, &TALLY)).collect();
    // All of `a` freed, half of `b`.
    for page in &a {
        ARENA.release_page(page, &TALLY);
    }
    for page in &b[..PER_HUGE / 2] {
        ARENA.release_page(page, &TALLY);
    }
    let purged = || ARENA.os.purged.load(Ordering::Relaxed);
    ARENA.os.now.fetch_add(2_000, Ordering::Relaxed);
    ARENA.maybe_purge();
    assert_eq!(purged(), HUGE_PAGE_SIZE, "only the free huge page, whole");
    assert_eq!(ARENA.os.forbidden.load(Ordering::Relaxed), 0);
    // Still partly free after the longer delay: broken up, its free pages purged.
    ARENA.os.now.fetch_add(20_000, Ordering::Relaxed);
    ARENA.maybe_purge();
    assert_eq!(purged(), HUGE_PAGE_SIZE + HUGE_PAGE_SIZE / 2);
    assert_eq!(ARENA.os.forbidden.load(Ordering::Relaxed), HUGE_PAGE_SIZE);
}

#[test]
fn nothing_is_asked_when_the_system_has_no_huge_pages() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    ARENA.os.thp.store(0, Ordering::Relaxed);
    ARENA.reset_huge_policy();
    assert_eq!(ARENA.huge_policy(), Policy::Off);
    let _pages: Vec<_> = (0..4 * HUGE_MIN_TOUCHED / (64 << 10))
        .map(|_| claim(&ARENA, &TALLY))
        .collect();
    assert_eq!(advised(&ARENA), 0);
    assert_eq!(ARENA.os.collapsed.load(Ordering::Relaxed), 0);
}

#[test]
fn a_large_block_reuses_freed_memory_and_the_clean_range_after_it() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    let (a, fresh) = ARENA.alloc_large(8 * MIB, 8).unwrap();
    assert!(fresh);
    let start = a.start();
    let committed = || ARENA.counters.committed.load(Ordering::Relaxed);
    assert_eq!(committed(), 8 * MIB);
    ARENA.queue_large_release(a, start, LargeState::Live);
    // A bigger block starts where the freed one was, and only its last 4 MiB are new.
    let (b, fresh) = ARENA.alloc_large(12 * MIB, 8).unwrap();
    assert_eq!(b.start(), start);
    assert!(!fresh, "the block holds the freed block's data");
    assert_eq!(committed(), 12 * MIB);
    ARENA.validate();
    ARENA.queue_large_release(b, start, LargeState::Live);
    ARENA.collect();
    assert_eq!(committed(), 0);
}

#[test]
fn freed_memory_stays_within_its_budget_when_fresh_memory_is_needed() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    // Eight 16 MiB blocks with 1 MiB blocks between them (so they do not merge), all freed:
    // 128 MiB freed and resident (the purge delay has not passed).
    let blocks: Vec<_> = (0..8)
        .flat_map(|_| {
            [
                ARENA.alloc_large(16 * MIB, 8).unwrap().0,
                ARENA.alloc_large(MIB, 8).unwrap().0,
            ]
        })
        .collect();
    for (i, block) in blocks.iter().enumerate() {
        if i % 2 == 0 {
            ARENA.queue_large_release(block, block.start(), LargeState::Live);
        }
    }
    let dirty = || ARENA.with_read(|state| state.free.dirty_bytes);
    assert_eq!(dirty(), 128 * MIB);
    // A block none of them holds needs fresh memory: the freed memory beyond the budget goes
    // back first.
    let (big, _) = ARENA.alloc_large(64 * MIB, 8).unwrap();
    // Relaxed: statistics.
    let live = ARENA.counters.large_bytes.load(Ordering::Relaxed) - 64 * MIB;
    assert!(dirty() <= FREED_RESIDENT_MIN.max(live / crate::config::FREED_RESIDENT_SHARE));
    assert!(ARENA.os.purged.load(Ordering::Relaxed) >= 128 * MIB - dirty());
    let _ = big;
}

/// Room for one reservation and its metadata, and not for a second.
const ONE_RESERVATION: usize = crate::config::RESERVATION_SIZE + (64 << 20);

/// On an arena of [`ONE_RESERVATION`]: a 1 MiB block, then a 1 GiB block right after it,
/// freed (dirty), then the clean rest of the reservation. Returns the 1 MiB block and a size
/// that only the freed range and the clean one after it together can hold.
fn block_before_a_freed_gib(arena: &Arena<FakeOs>) -> (&'static Region, usize) {
    let (block, _) = arena.alloc_large(MIB, 8).unwrap();
    let (freed, _) = arena.alloc_large(GIB, 8).unwrap();
    assert_eq!(freed.start() as usize, block.end(), "laid out back to back");
    let clean = arena.with_read(|state| state.free.bytes);
    arena.queue_large_release(freed, freed.start(), LargeState::Live);
    assert_eq!(arena.with_read(|state| state.free.dirty_bytes), GIB);
    (block, GIB + clean / SLICE_SIZE * SLICE_SIZE)
}

/// A block that must move finds every range a new block would: here only a freed (dirty)
/// range together with the clean one after it is big enough, and the address space cannot
/// grow. The move used to look for one range of either kind alone, fail, and leave the caller
/// to allocate (which spans the two) and copy every byte: the `layouts` fuzzer ran out of
/// memory on such copies of blocks it had touched only at both ends.
#[test]
fn a_move_spans_freed_memory_and_the_clean_range_after_it() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(ONE_RESERVATION));
    let (block, wanted) = block_before_a_freed_gib(&ARENA);
    // SAFETY: the block is ours and 1 MiB long.
    unsafe { block.start().write_bytes(0x5A, MIB) };
    let moved = ARENA.remap_large(block, block.start(), wanted, 8);
    let moved = moved.expect("moved across the freed and the clean range");
    // SAFETY: the moved block is ours, at least 1 MiB long.
    let contents = unsafe { core::slice::from_raw_parts(moved, MIB) };
    assert!(
        contents.iter().all(|&b| b == 0x5A),
        "the pages did not move"
    );
    ARENA.validate();
}

/// A huge page whose advice the kernel refuses (`madvise` failing: no memory to split the
/// mapping, a seccomp filter) is not counted as backed huge, and a later claim may ask again.
/// It used to stay marked huge, uncounted: its break-up or its region's removal then took
/// one off the count of huge pages, which wrapped below zero.
#[test]
fn a_refused_advice_leaves_the_huge_page_small_and_uncounted() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    let mut pages = claim_past_the_threshold(&ARENA, &TALLY);
    // Relaxed: statistics, read on the thread that changed them.
    let backed = || ARENA.counters.huge_backed.load(Ordering::Relaxed);
    let counted = backed();
    ARENA.os.can_advise.store(false, Ordering::Relaxed);
    let refused = claim(&ARENA, &TALLY);
    // SAFETY: descriptors are type-stable; the region holds the claimed page.
    let region = unsafe { &*refused.region.load(Ordering::Relaxed) };
    let huge = huge_page_of(refused) - region.start() as usize / HUGE_PAGE_SIZE;
    assert_eq!(
        region.backing(huge),
        Backing::Small,
        "refused, yet marked huge"
    );
    assert_eq!(backed(), counted);
    // Taking the region down (every page back, then collect) leaves the count where it was.
    ARENA.os.can_advise.store(true, Ordering::Relaxed);
    pages.push(refused);
    for page in pages {
        ARENA.release_page(page, &TALLY);
    }
    ARENA.collect();
    assert_eq!(backed(), 0, "the count of huge pages drifted");
}

/// A move whose destination spanned a freed range and the clean one after it, and that the
/// kernel refuses, gives the range back as freed memory, counted as committed: a later purge
/// takes it all off, so the count must hold all of it. It used to count only the freed part,
/// and the purge then took the count below what was really committed (down to wrapping).
#[test]
fn a_refused_move_across_freed_and_clean_memory_keeps_the_committed_count() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(ONE_RESERVATION));
    let (block, wanted) = block_before_a_freed_gib(&ARENA);
    // Relaxed: statistics, read on the thread that changed them.
    let committed = || ARENA.counters.committed.load(Ordering::Relaxed);
    ARENA.os.can_remap.store(false, Ordering::Relaxed);
    assert!(ARENA.remap_large(block, block.start(), wanted, 8).is_none());
    ARENA.os.can_remap.store(true, Ordering::Relaxed);
    ARENA.queue_large_release(block, block.start(), LargeState::Live);
    ARENA.collect();
    assert_eq!(committed(), 0, "committed bytes drifted");
    ARENA.validate();
}
