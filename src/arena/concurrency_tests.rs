//! The region logic under threads, on the fake OS back end: claims, releases and collects
//! racing; a remap session that stalls only the region it marked; frees and refills that do
//! not wait for write sessions.
//!
//! Layer: `arena`'s tests; drives `Arena` on `os::fake`, with `arena::tests`'s helpers.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::vec::Vec;

use super::large_block::LargeState;
use super::page::Page;
use super::tests::{GIB, free_bytes, reserved, stats_of};
use super::*;
use crate::os::fake::FakeOs;
use crate::stats::Tally;

#[test]
fn racing_claims_releases_and_collects_never_share_a_page() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    static STOP: AtomicBool = AtomicBool::new(false);
    static COLLECTING: AtomicBool = AtomicBool::new(false);
    let in_use = std::sync::Arc::new(Mutex::new(HashSet::new()));
    let collector = std::thread::spawn(|| {
        let mut runs = 0;
        while !STOP.load(Ordering::Relaxed) {
            ARENA.collect();
            runs += 1;
            // Relaxed: a start signal; the arena's own locks order what the collect did.
            COLLECTING.store(true, Ordering::Relaxed);
            // Pace the collects (each rewrites purged memory on the fake OS).
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        runs
    });
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let in_use = in_use.clone();
            std::thread::spawn(move || {
                // Start once the collector runs, so that its collects race with the claims
                // even on a loaded machine (CI once finished the workers before its first).
                while !COLLECTING.load(Ordering::Relaxed) {
                    std::thread::yield_now();
                }
                let kind = PageKind::ALL[t % PageKind::COUNT];
                let mut mine = Vec::new();
                for round in 0..3_000 {
                    if round % 3 != 2 {
                        let page = ARENA.claim_page(kind, &TALLY).expect("a page").page;
                        assert!(
                            in_use.lock().unwrap().insert(page as *const Page as usize),
                            "page shared"
                        );
                        mine.push(page);
                    } else if let Some(page) = mine.pop() {
                        assert!(
                            in_use
                                .lock()
                                .unwrap()
                                .remove(&(page as *const Page as usize))
                        );
                        ARENA.release_page(page, &TALLY);
                    }
                }
                for page in mine {
                    in_use
                        .lock()
                        .unwrap()
                        .remove(&(page as *const Page as usize));
                    ARENA.release_page(page, &TALLY);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    STOP.store(true, Ordering::Relaxed);
    assert!(collector.join().unwrap() > 0);
    ARENA.collect();
    for kind in PageKind::ALL {
        assert_eq!(
            ARENA.counters.page_regions[kind.index()].load(Ordering::Relaxed),
            0
        );
        assert_eq!(stats_of(&ARENA, &TALLY).pages_in_use[kind.index()], 0);
    }
    let c = &TALLY;
    let fast = c.read_fast.get();
    let fallback = c.read_fallback.get();
    std::println!("region reads: {fast} fast, {fallback} fell back during collects");
    assert!(fast > 0);
    ARENA.validate();
    assert_eq!(free_bytes(&ARENA), reserved(&ARENA));
}

/// While a remap operation holds the arena write lock and has marked region A, a thread that
/// refills from region B completes, and a thread that needs region A falls back to the shared
/// arena lock and proceeds once the session ends.
#[test]
fn a_remap_operation_stalls_only_the_region_it_marked() {
    use std::sync::atomic::AtomicU32;
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    static B_DONE: AtomicBool = AtomicBool::new(false);
    static A_DONE: AtomicBool = AtomicBool::new(false);
    static A_STARTED: AtomicU32 = AtomicU32::new(0);
    // Region A holds medium pages, region B small pages; each is its kind's refill hint.
    let a_page = ARENA.claim_page(PageKind::Medium, &TALLY).unwrap().page;
    let b_page = ARENA.claim_page(PageKind::Small, &TALLY).unwrap().page;
    // SAFETY: pages of attached regions; regions are never freed.
    let region_a = unsafe { &*a_page.region.load(Ordering::Relaxed) };

    let session = ARENA.write();
    region_a.lock.start_write(&session.guard);
    let fallbacks = TALLY.read_fallback.get();

    let needs_a = std::thread::spawn(|| {
        A_STARTED.store(1, Ordering::Release);
        let claim = ARENA
            .claim_page(PageKind::Medium, &TALLY)
            .expect("a medium page");
        A_DONE.store(true, Ordering::Release);
        claim.page as *const Page as usize
    });
    let needs_b = std::thread::spawn(|| {
        let claim = ARENA
            .claim_page(PageKind::Small, &TALLY)
            .expect("a small page");
        B_DONE.store(true, Ordering::Release);
        claim.page as *const Page as usize
    });
    // B's refill completes while the session still holds the lock and A's mark.
    let b = needs_b.join().unwrap();
    assert!(B_DONE.load(Ordering::Acquire));
    assert_ne!(b, b_page as *const Page as usize);
    // The thread that needs A gets to the fallback (the shared arena lock) and waits there.
    while TALLY.read_fallback.get() == fallbacks {
        std::thread::yield_now();
    }
    assert!(
        !A_DONE.load(Ordering::Acquire),
        "region A was used while marked"
    );
    drop(session);
    let a = needs_a.join().unwrap();
    assert!(A_DONE.load(Ordering::Acquire));
    assert_ne!(a, a_page as *const Page as usize);
    assert_eq!(TALLY.read_fallback.get(), fallbacks + 1);
}

/// Frees never wait for a write session: while one holds the arena write lock (a long purge or
/// `mremap` in a real program), another thread gives a page back to its region and frees a
/// large block, and both return; the large block goes back to the free ranges when the session
/// ends, and its range merges again.
#[test]
fn frees_never_wait_for_a_write_session() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    ARENA.set_purge_delay(0); // a purge is due at once: the free must not wait for it either
    let page = ARENA.claim_page(PageKind::Small, &TALLY).unwrap().page;
    let (region, _) = ARENA.alloc_large(5 << 20, 8).unwrap();
    let (block, page_addr) = (region.start() as usize, page as *const Page as usize);
    let free_before = free_bytes(&ARENA);

    let session = ARENA.write();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let freer = std::thread::spawn(move || {
        // SAFETY: a page descriptor of an attached region and a live large block, ours.
        let page = unsafe { &*(page_addr as *const Page) };
        ARENA.release_page(page, &TALLY);
        let Entry::Large(region) = ARENA.lookup(block) else {
            panic!("the block is mapped");
        };
        ARENA.queue_large_release(region, block as *mut u8, LargeState::Live);
        done_tx.send(()).unwrap();
    });
    let returned = done_rx.recv_timeout(std::time::Duration::from_secs(10));
    assert!(returned.is_ok(), "a free waited for the write session");
    freer.join().unwrap();
    // Queued, not yet free: nothing may be placed in its range meanwhile.
    assert!(matches!(ARENA.lookup(block), Entry::Large(_)));
    drop(session);
    assert!(
        matches!(ARENA.lookup(block), Entry::None),
        "released when the session ended"
    );
    // The session's end also ran the purge the freer left due (a zero delay): the emptied
    // page's region, all of its pages free, went back to the free ranges too.
    assert_eq!(
        free_bytes(&ARENA),
        free_before + (5 << 20) + crate::config::SMALL_REGION_SIZE
    );
}

/// A refill whose hinted region is full finds a page in another region of its kind without
/// the arena lock, under that region's read lock: it does not wait for a write session that
/// works elsewhere (it used to take the shared arena lock and wait).
#[test]
fn refills_beyond_the_hinted_region_do_not_wait_for_write_sessions() {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(64 * GIB));
    static TALLY: Tally = Tally::shared();
    let per_region = PageKind::Small.pages_per_region();
    // Two full regions; the second is the hint.
    let pages: Vec<&Page> = (0..2 * per_region)
        .map(|_| ARENA.claim_page(PageKind::Small, &TALLY).unwrap().page)
        .collect();
    assert_eq!(ARENA.counters.page_regions[0].load(Ordering::Relaxed), 2);
    // A page of the first (not hinted) region comes back.
    let back = pages[0];
    ARENA.release_page(back, &TALLY);
    let session = ARENA.write();
    let (tx, rx) = std::sync::mpsc::channel();
    let refill = std::thread::spawn(move || {
        let claim = ARENA.claim_page(PageKind::Small, &TALLY).expect("a page");
        tx.send(claim.page as *const Page as usize).unwrap();
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(10));
    drop(session);
    refill.join().unwrap();
    assert_eq!(
        got.expect("the refill waited for the write session"),
        back as *const Page as usize
    );
    assert_eq!(ARENA.counters.page_regions[0].load(Ordering::Relaxed), 2);
}
