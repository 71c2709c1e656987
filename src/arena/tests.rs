//! Region logic on the fake OS back end: page claims, large blocks, splitting and merging,
//! in-place resizing, remapping and collecting (under threads: `concurrency_tests`).
//!
//! Layer: `arena`'s tests; drives `Arena` on `os::fake`.

use std::collections::HashSet;
use std::vec::Vec;

use super::large_block::LargeState;
use super::*;
use crate::config::{REMAP_CONGRUENCE, SLICE_SIZE};
use crate::os::fake::FakeOs;
use crate::stats::Tally;

pub(super) const GIB: usize = 1 << 30;

pub(super) fn free_bytes<O: Os>(arena: &Arena<O>) -> usize {
    arena.with_read(|state| state.free.bytes)
}

/// The arena's counters together with a test's tally (what `stats()` would sum).
pub(super) fn stats_of<O: Os>(arena: &Arena<O>, tally: &Tally) -> Stats {
    let mut stats = Stats::default();
    arena.counters.fill(&mut stats);
    tally.add_to(&mut stats);
    stats
}

pub(super) fn reserved<O: Os>(arena: &Arena<O>) -> usize {
    arena.counters.reserved.load(Ordering::Relaxed)
}

#[test]
fn claims_hand_out_distinct_pages_that_the_map_resolves() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    let mut seen = HashSet::new();
    let count = PageKind::Small.pages_per_region() + 10;
    for _ in 0..count {
        let claim = ARENA.claim_page(PageKind::Small, &TALLY).expect("a page");
        assert!(claim.fresh);
        let start = claim.page.start.load(Ordering::Relaxed) as usize;
        assert_eq!(start % PageKind::Small.page_size(), 0);
        assert!(seen.insert(start), "page handed out twice");
        for offset in [0, 1, PageKind::Small.page_size() - 1] {
            match ARENA.lookup(start + offset) {
                Entry::Page(p) => assert!(core::ptr::eq(p, claim.page)),
                _ => panic!("page map does not resolve {start:#x}+{offset}"),
            }
        }
    }
    assert_eq!(ARENA.counters.page_regions[0].load(Ordering::Relaxed), 2);
    ARENA.validate();
    assert_eq!(stats_of(&ARENA, &TALLY).pages_in_use[0], count);
}

#[test]
fn large_blocks_are_aligned_and_their_ranges_merge_back() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    let mut blocks = Vec::new();
    for (i, (size, align)) in [
        (1 << 20, 8),
        (3 << 20, 1 << 20),
        (600 << 10, 64 << 10),
        (5 << 20, 4 << 20),
        (1, 1 << 25),
    ]
    .into_iter()
    .cycle()
    .take(40)
    .enumerate()
    {
        let (region, zeroed) = ARENA.alloc_large(size, align).expect("a large block");
        assert!(zeroed, "fresh ranges are zero");
        let start = region.start() as usize;
        assert_eq!(start % align, 0);
        assert!(region.len() >= size);
        assert!(matches!(ARENA.lookup(start), Entry::Large(r) if core::ptr::eq(r, region)));
        if size > SLICE_SIZE {
            assert!(
                matches!(ARENA.lookup(start + size - 1), Entry::None),
                "only a large block's first slice is mapped"
            );
        }
        blocks.push((region, i));
    }
    // Free in an interleaved order so ranges merge from both sides.
    blocks.sort_by_key(|(_, i)| (i % 3, *i));
    for (region, _) in blocks {
        let start = region.start();
        ARENA.queue_large_release(region, start, LargeState::Live);
        assert!(matches!(ARENA.lookup(start as usize), Entry::None));
    }
    assert_eq!(
        free_bytes(&ARENA),
        reserved(&ARENA),
        "every byte is free and merged back"
    );
    assert_eq!(ARENA.counters.large_bytes.load(Ordering::Relaxed), 0);
}

#[test]
fn large_blocks_grow_and_shrink_in_place_and_move_when_blocked() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    let (a, _) = ARENA.alloc_large(2 << 20, 8).unwrap();
    let ptr = a.start();
    // SAFETY: the block is ours and 2 MiB long.
    unsafe { ptr.write_bytes(0x42, 2 << 20) };
    assert!(
        ARENA.resize_large_in_place(a, ptr, 8 << 20, &TALLY),
        "the space after a fresh block is free"
    );
    assert_eq!(a.len(), 8 << 20);
    assert!(ARENA.resize_large_in_place(a, ptr, 3 << 20, &TALLY));
    assert_eq!(a.len(), 3 << 20);
    ARENA.validate();
    // Block the way forward, then grow: the block must move, contents and all.
    let (b, _) = ARENA.alloc_large(1 << 20, 8).unwrap();
    assert_eq!(b.start() as usize, a.end(), "the shrunk tail was reused");
    assert!(!ARENA.resize_large_in_place(a, ptr, 16 << 20, &TALLY));
    let moved = ARENA.remap_large(a, ptr, 16 << 20, 8).expect("remapped");
    assert_eq!(
        moved as usize % REMAP_CONGRUENCE,
        ptr as usize % REMAP_CONGRUENCE
    );
    // SAFETY: the moved block holds the first 2 MiB we wrote.
    let moved_bytes = unsafe { core::slice::from_raw_parts(moved, 2 << 20) };
    assert!(moved_bytes.iter().all(|&x| x == 0x42));
    assert!(
        matches!(ARENA.lookup(ptr as usize), Entry::None),
        "the old range is unmapped"
    );
    let Entry::Large(c) = ARENA.lookup(moved as usize) else {
        panic!("new block not mapped")
    };
    assert!(c.len() >= 16 << 20);
    assert!(ARENA.os.remapped.load(Ordering::Relaxed) >= 3 << 20);
    ARENA.queue_large_release(c, moved, LargeState::Live);
    ARENA.queue_large_release(b, b.start(), LargeState::Live);
    ARENA.validate();
    assert_eq!(free_bytes(&ARENA), reserved(&ARENA));
}

#[test]
fn collect_purges_free_pages_and_removes_empty_regions() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    let pages: Vec<_> = (0..20)
        .map(|_| ARENA.claim_page(PageKind::Medium, &TALLY).unwrap().page)
        .collect();
    for page in &pages[..10] {
        ARENA.release_page(page, &TALLY);
    }
    ARENA.collect();
    let purged = ARENA.os.purged.load(Ordering::Relaxed);
    assert_eq!(
        purged,
        10 * PageKind::Medium.page_size(),
        "only the free, touched pages"
    );
    assert_eq!(
        ARENA.counters.page_regions[1].load(Ordering::Relaxed),
        1,
        "region still in use"
    );
    let again = ARENA.claim_page(PageKind::Medium, &TALLY).unwrap();
    assert!(again.fresh, "a purged page is zero again");
    ARENA.validate();
    ARENA.release_page(again.page, &TALLY);
    for page in &pages[10..] {
        ARENA.release_page(page, &TALLY);
    }
    ARENA.collect();
    assert_eq!(ARENA.counters.page_regions[1].load(Ordering::Relaxed), 0);
    ARENA.validate();
    assert_eq!(free_bytes(&ARENA), reserved(&ARENA));
}

#[test]
fn speculative_usable_size_matches_the_locked_answer() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    let (r, _) = ARENA.alloc_large(3 << 20, 8).unwrap();
    let start = r.start() as usize;
    assert_eq!(ARENA.usable_size(start, &TALLY), Some(r.len()));
    assert_eq!(ARENA.usable_size(start + 100, &TALLY), Some(r.len() - 100));
    assert_eq!(ARENA.usable_size(start + r.len(), &TALLY), None);
    assert_eq!(
        ARENA.usable_size(start + SLICE_SIZE, &TALLY),
        None,
        "interior slices of large blocks are not mapped"
    );
    assert!(TALLY.spec_success.get() >= 3);
}

#[test]
fn freed_memory_is_purged_only_after_the_delay() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    const MS: u64 = 1_000_000;
    ARENA.set_purge_delay(100 * MS);
    let now = |t: u64| ARENA.os.now.store(t, Ordering::Relaxed);
    now(1_000 * MS);
    // A large block and a few pages, freed at t = 1000 ms.
    let (big, _) = ARENA.alloc_large(8 << 20, 8).unwrap();
    let pages: Vec<_> = (0..4)
        .map(|_| ARENA.claim_page(PageKind::Small, &TALLY).unwrap().page)
        .collect();
    let keep = ARENA.claim_page(PageKind::Small, &TALLY).unwrap().page;
    ARENA.queue_large_release(big, big.start(), LargeState::Live);
    for page in &pages {
        ARENA.release_page(page, &TALLY);
    }
    assert_eq!(
        ARENA.os.purged.load(Ordering::Relaxed),
        0,
        "nothing is purged before the delay"
    );
    let committed = stats_of(&ARENA, &TALLY).bytes_committed;
    // Not yet due: a slow-path event does nothing.
    now(1_050 * MS);
    ARENA.maybe_purge();
    assert_eq!(ARENA.os.purged.load(Ordering::Relaxed), 0);
    // Due: the next slow-path event purges both the free pages and the large block's range.
    now(1_101 * MS);
    ARENA.maybe_purge();
    let purged = ARENA.os.purged.load(Ordering::Relaxed);
    assert_eq!(purged, (8 << 20) + 4 * PageKind::Small.page_size());
    assert_eq!(stats_of(&ARENA, &TALLY).bytes_committed, committed - purged);
    assert_eq!(
        ARENA.counters.page_regions[0].load(Ordering::Relaxed),
        1,
        "a page is still in use"
    );
    // The last page goes back: once due, the empty region is removed.
    ARENA.release_page(keep, &TALLY);
    now(1_300 * MS);
    ARENA.maybe_purge();
    assert_eq!(ARENA.counters.page_regions[0].load(Ordering::Relaxed), 0);
    assert_eq!(
        ARENA.next_purge.load(Ordering::Relaxed),
        u64::MAX,
        "nothing left to do"
    );
    ARENA.validate();
    assert_eq!(free_bytes(&ARENA), reserved(&ARENA));
}

/// A large block that must move keeps its pages (no copy) even when no free range congruent
/// to it is left and the address space cannot grow: it moves to a range that is merely
/// aligned. (The caller used to copy the whole block instead: a fuzzer made it copy gigabytes.)
#[test]
fn a_move_takes_any_aligned_range_when_no_congruent_one_is_left() {
    // One reservation and its metadata, and no room for a second.
    static ARENA: Arena<FakeOs> =
        Arena::new(FakeOs::new(crate::config::RESERVATION_SIZE + (64 << 20)));
    let (first, _) = ARENA.alloc_large(600 << 10, 8).unwrap();
    let (block, _) = ARENA.alloc_large(1 << 20, 8).unwrap();
    let phase = block.start() as usize % REMAP_CONGRUENCE;
    assert_ne!(
        phase, 0,
        "the block must not be congruent to the free range after it"
    );
    // SAFETY: the block is ours and 1 MiB long.
    unsafe { block.start().write_bytes(0x5A, 1 << 20) };
    let rest = free_bytes(&ARENA) / SLICE_SIZE * SLICE_SIZE;
    let moved = ARENA.remap_large(block, block.start(), rest, 8);
    let moved = moved.expect("moved to the aligned range that was left");
    // SAFETY: the moved block is ours, at least 1 MiB long.
    let contents = unsafe { core::slice::from_raw_parts(moved, 1 << 20) };
    assert!(
        contents.iter().all(|&b| b == 0x5A),
        "the pages did not move"
    );
    let _ = first;
}

/// A second free of a large block aborts even while the first one is still queued: the
/// queue would otherwise hold the region twice.
#[test]
fn a_queued_large_free_marks_its_block_freed() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    let (region, _) = ARENA.alloc_large(1 << 20, 8).unwrap();
    let session = ARENA.write();
    ARENA.queue_large_release(region, region.start(), LargeState::Live);
    assert_eq!(region.large.state(), LargeState::Queued);
    drop(session);
    assert_eq!(region.large.state(), LargeState::Released);
    assert!(!region.lock.is_attached());
}

/// Regression (found by the `ops` fuzzer): a block that moves into the free range right before
/// it. Releasing its old range merged it with the destination, which was taken but not set up
/// yet, so the destination's descriptor went back to the pool while in use: later blocks
/// overlapped it and a descriptor was attached twice.
#[test]
fn a_block_moving_next_door_keeps_its_destination() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    const MIB: usize = 1 << 20;
    let (p, _) = ARENA.alloc_large(4 * MIB, 2 * MIB).unwrap();
    let (x, _) = ARENA.alloc_large(2 * MIB, 2 * MIB).unwrap();
    let (spacer, _) = ARENA.alloc_large(MIB, 8).unwrap();
    assert_eq!(x.start() as usize, p.end(), "laid out back to back");
    assert_eq!(spacer.start() as usize, x.end());
    ARENA.queue_large_release(p, p.start(), LargeState::Live);
    ARENA.collect(); // the range before `x` is clean again, like the one `x` leaves behind
    let old = x.start();
    // SAFETY: `x` is ours and 2 MiB long.
    unsafe { old.write_bytes(0x77, 2 * MIB) };
    let moved = ARENA.remap_large(x, old, 4 * MIB, 8).expect("moved");
    assert_eq!(
        moved as usize + 4 * MIB,
        old as usize,
        "moved into the range right before it"
    );
    let block = ARENA.large_region(moved).expect("mapped");
    assert!(block.len() >= 4 * MIB && block.lock.is_attached());
    // Nothing else may be handed out over the moved block.
    for _ in 0..8 {
        let (other, _) = ARENA.alloc_large(MIB, 8).unwrap();
        let (a, b) = (other.start() as usize, other.end());
        assert!(
            b <= moved as usize || a >= block.end(),
            "a new block overlaps the moved one"
        );
        ARENA.queue_large_release(other, other.start(), LargeState::Live);
    }
    // SAFETY: the moved block holds what `x` held.
    assert_eq!(unsafe { *moved }, 0x77);
    ARENA.queue_large_release(block, moved, LargeState::Live);
    ARENA.queue_large_release(spacer, spacer.start(), LargeState::Live);
    ARENA.collect();
    let (free, reserved) = ARENA.free_and_reserved_bytes();
    assert_eq!(free, reserved);
}

/// Under strict overcommit (`vm.overcommit_memory=2`) the kernel charges every writable
/// private mapping in full, `MAP_NORESERVE` or not, so a 4 GiB reservation fails on a machine
/// whose commit limit is lower. The fake back end's limit on reserved bytes is that charge:
/// with 1 GiB to spend, the arena must still serve pages and large blocks. (It once took the
/// last of the budget for the reservation itself, then failed to reserve the page-map leaf
/// it needed, gave up, and served nothing.)
#[test]
fn under_a_commit_limit_below_one_reservation_the_arena_still_serves_memory() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(GIB));
    serves_pages_and_a_large_block(&ARENA);
}

/// Knowing the overcommit mode is strict, the arena reserves in small steps, leaving the rest
/// of the machine's commit budget to other processes.
#[test]
fn under_strict_overcommit_reservations_start_small() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    ARENA.os.strict.store(true, Ordering::Relaxed);
    assert!(ARENA.claim_page(PageKind::Small, &TALLY).is_some());
    assert!(reserved(&ARENA) <= crate::config::STRICT_RESERVATION_SIZE);
    serves_pages_and_a_large_block(&ARENA);
    assert!(
        reserved(&ARENA) < GIB,
        "reserved {} MiB",
        reserved(&ARENA) >> 20
    );
}

fn serves_pages_and_a_large_block(arena: &'static Arena<FakeOs>) {
    static TALLY: Tally = Tally::shared();
    for kind in PageKind::ALL {
        for _ in 0..3 {
            assert!(arena.claim_page(kind, &TALLY).is_some(), "no {kind:?} page");
        }
    }
    let (region, _) = arena.alloc_large(200 << 20, 8).expect("a 200 MiB block");
    let moved = arena.remap_large(region, region.start(), 300 << 20, 8);
    assert!(moved.is_some(), "a 200 MiB block could not grow to 300 MiB");
    assert!(
        arena.os.reserved.load(Ordering::Relaxed) <= arena.os.limit.load(Ordering::Relaxed),
        "reserved past the commit limit"
    );
}
