//! Entry points for the cargo-fuzz targets that need the crate's internals: the lock protocol
//! and the arena's region logic on the fake OS back end. Each runs a sequence of operations
//! decoded from the fuzzer's bytes against a model of what must happen, and panics on any
//! difference. Not part of the public API (the `fuzzing` feature turns it on).
//!
//! Layer: test scaffolding on top (`--features fuzzing`); calls `arena`, `sync`, `os::fake`,
//! `config` and `stats` directly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::vec::Vec;

use crate::arena::Arena;
use crate::arena::large_block::LargeState;
use crate::arena::page::Page;
use crate::arena::pagemap::Entry;
use crate::arena::region::Region;
use crate::config::PageKind;
use crate::os::fake::FakeOs;
use crate::stats::Tally;
use crate::sync::arena_lock::{ArenaLock, ArenaWriteGuard};
use crate::sync::region_lock::{ReadFail, RegionLock, RegionReadGuard};

/// Reads the fuzzer's bytes as a stream of small numbers.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    fn below(&mut self, n: usize) -> Option<usize> {
        Some(self.byte()? as usize % n)
    }
}

const REGIONS: usize = 4;

/// Lock protocol, one thread playing every role in a fuzzer-chosen order. Operations that would
/// block in that order (a writer waiting for a reader the same thread holds) are skipped; the
/// model predicts the result of every other one.
pub fn protocol(data: &[u8]) {
    let arena = ArenaLock::new();
    let regions: [RegionLock; REGIONS] = [const { RegionLock::new() }; REGIONS];
    let mut attached = [true; REGIONS];
    {
        let w = arena.write();
        for r in &regions {
            r.attach(&w);
        }
    }
    let mut readers: Vec<(usize, RegionReadGuard<'_>)> = Vec::new();
    let mut session: Option<ArenaWriteGuard<'_>> = None;
    let mut marked = [false; REGIONS];
    let mut shared = None;
    let mut sessions_begun = 0u64;
    let mut speculation: Option<(u64, u64)> = None;
    let mut input = Input { data };
    while let Some(op) = input.below(10) {
        let Some(i) = input.below(REGIONS) else { break };
        let held = readers.iter().filter(|(r, _)| *r == i).count();
        match op {
            0 => {
                // A region marked by the running session reads as locked even once detached
                // (the racy early check sees the mark first); the caller falls back to the
                // arena lock and then finds it gone.
                let expected = if session.is_some() && marked[i] {
                    Err(ReadFail::Locked)
                } else if !attached[i] {
                    Err(ReadFail::Detached)
                } else {
                    Ok(())
                };
                let got = regions[i].start_read(&arena);
                assert_eq!(
                    got.as_ref().map(|_| ()).map_err(|e| *e),
                    expected,
                    "start_read({i})"
                );
                if let Ok(guard) = got {
                    readers.push((i, guard));
                }
            }
            1 => {
                if let Some(pos) = readers.iter().position(|(r, _)| *r == i) {
                    readers.swap_remove(pos);
                }
            }
            2 if session.is_none() && shared.is_none() => {
                session = Some(arena.write());
                sessions_begun += 1;
                marked = [false; REGIONS];
            }
            3 if attached[i] && held == 0 => {
                if let Some(w) = &session {
                    regions[i].start_write(w);
                    marked[i] = true;
                }
            }
            4 => {
                let ended = session.take().is_some();
                if ended {
                    marked = [false; REGIONS];
                    // Every mark is gone: each attached region is readable again.
                    for (r, lock) in regions.iter().enumerate() {
                        if attached[r] {
                            assert!(lock.start_read(&arena).is_ok(), "region {r} still marked");
                        }
                    }
                }
            }
            5 if marked[i] && held == 0 && attached[i] => {
                if let Some(w) = &session {
                    regions[i].detach(w);
                    attached[i] = false;
                }
            }
            6 if !attached[i] => {
                if let Some(w) = &session {
                    regions[i].attach(w);
                    attached[i] = true;
                    marked[i] = true;
                }
            }
            7 => {
                let begun = arena.speculate_try_begin();
                assert_eq!(
                    begun.is_some(),
                    session.is_none(),
                    "try_begin during a session"
                );
                speculation = begun.map(|seq| (seq, sessions_begun));
            }
            8 => {
                if let Some((seq, at)) = speculation.take() {
                    let overlapped = sessions_begun != at || session.is_some();
                    assert_eq!(
                        arena.speculate_retry(seq),
                        overlapped,
                        "speculation validity"
                    );
                }
            }
            9 => {
                // Toggles the shared lock: released if held, else taken (not while our own
                // session holds the write lock).
                let released = shared.take().is_some();
                if !released && session.is_none() {
                    shared = Some(arena.read());
                }
            }
            _ => {}
        }
        if let Some(w) = &session {
            for r in 0..REGIONS {
                assert_eq!(
                    regions[r].is_write_locked(w),
                    marked[r],
                    "mark of region {r}"
                );
            }
        }
    }
    drop(readers);
    drop(session);
    drop(shared);
    concurrent_protocol(data);
}

/// A reader thread and a writer thread on shared regions whose contents are a pair of
/// numbers the writer changes only while the region is marked: a reader holding a region read
/// lock, or the shared arena lock, must never see the two differ.
fn concurrent_protocol(data: &[u8]) {
    struct Shared {
        arena: ArenaLock,
        regions: [RegionLock; REGIONS],
        contents: [(AtomicU64, AtomicU64); REGIONS],
        done: AtomicBool,
    }
    let shared = Shared {
        arena: ArenaLock::new(),
        regions: [const { RegionLock::new() }; REGIONS],
        contents: [const { (AtomicU64::new(0), AtomicU64::new(0)) }; REGIONS],
        done: AtomicBool::new(false),
    };
    {
        let w = shared.arena.write();
        for r in &shared.regions {
            r.attach(&w);
        }
    }
    let read = |s: &Shared, i: usize| {
        // Relaxed: ordered by the region lock or the arena lock (that is what is tested).
        let (a, b) = (&s.contents[i].0, &s.contents[i].1);
        assert_eq!(
            a.load(Ordering::Relaxed),
            b.load(Ordering::Relaxed),
            "torn read of region {i}"
        );
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut value = 0;
            for chunk in data.chunks(2).take(64) {
                let w = shared.arena.write();
                for (i, region) in shared.regions.iter().enumerate() {
                    if chunk[0] >> i & 1 == 1 {
                        region.start_write(&w);
                        value += 1;
                        // Relaxed: the region is marked; readers are excluded (tested).
                        shared.contents[i].0.store(value, Ordering::Relaxed);
                        std::hint::spin_loop();
                        shared.contents[i].1.store(value, Ordering::Relaxed);
                    }
                }
                drop(w);
            }
            shared.done.store(true, Ordering::Release);
        });
        scope.spawn(|| {
            let mut i = 0;
            while !shared.done.load(Ordering::Acquire) {
                i = (i + 1) % REGIONS;
                match shared.regions[i].start_read(&shared.arena) {
                    Ok(_guard) => read(&shared, i),
                    Err(_) => {
                        let _lock = shared.arena.read();
                        read(&shared, i);
                    }
                }
            }
        });
    });
}

/// The region logic on the fake OS back end: page claims and releases, large blocks (allocate,
/// free, resize, move), purges with a hand-driven clock and collects. Checks that no page or
/// block is handed out twice, that the page map resolves every live one, that contents
/// survive resizing and moving, and that everything freed merges back into free ranges.
pub fn regions(data: &[u8]) {
    static ARENA: Arena<FakeOs> = Arena::new(FakeOs::new(1 << 40));
    static TALLY: Tally = Tally::shared();
    const MS: u64 = 1_000_000;
    ARENA.set_purge_delay(10 * MS);
    let mut pages: Vec<&'static Page> = Vec::new();
    let mut blocks: Vec<(&'static Region, *mut u8, u8)> = Vec::new();
    let mut input = Input { data };
    while let Some(op) = input.below(8) {
        match op {
            0 | 1 => {
                let kind = PageKind::ALL[input.below(PageKind::COUNT).unwrap_or(0)];
                let claim = ARENA.claim_page(kind, &TALLY).expect("fake OS has room");
                let start = claim.page.start.load(Ordering::Relaxed);
                assert!(
                    pages.iter().all(|p| !core::ptr::eq(*p, claim.page)),
                    "page handed out twice"
                );
                assert!(
                    matches!(ARENA.lookup(start as usize), Entry::Page(p) if core::ptr::eq(p, claim.page))
                );
                pages.push(claim.page);
            }
            2 if !pages.is_empty() => {
                let page = pages.swap_remove(input.below(pages.len()).unwrap_or(0));
                ARENA.release_page(page, &TALLY);
            }
            3 => {
                let size = (1 + input.below(64).unwrap_or(0)) << 16;
                let align = 1 << (3 + input.below(20).unwrap_or(0));
                let (region, _) = ARENA.alloc_large(size, align).expect("fake OS has room");
                let ptr = region.start();
                assert_eq!(ptr as usize % align, 0);
                let tag = input.byte().unwrap_or(1);
                // SAFETY: the block is ours and at least `size` bytes; mark its two ends.
                unsafe {
                    *ptr = tag;
                    *ptr.add(size - 1) = tag;
                }
                blocks.push((region, ptr, tag));
            }
            4 if !blocks.is_empty() => {
                let (region, ptr, tag) = blocks.swap_remove(input.below(blocks.len()).unwrap_or(0));
                // SAFETY: a live block of ours.
                assert_eq!(unsafe { *ptr }, tag, "large block contents lost");
                ARENA.queue_large_release(region, ptr, LargeState::Live);
                assert!(matches!(ARENA.lookup(ptr as usize), Entry::None));
            }
            5 if !blocks.is_empty() => {
                let i = input.below(blocks.len()).unwrap_or(0);
                let (region, ptr, tag) = blocks[i];
                let new_size = (1 + input.below(128).unwrap_or(0)) << 16;
                let moved = if ARENA.resize_large_in_place(region, ptr, new_size, &TALLY) {
                    ptr
                } else if new_size > region.len() {
                    match ARENA.remap_large(region, ptr, new_size, 8) {
                        Some(p) => p,
                        None => continue,
                    }
                } else {
                    continue;
                };
                let region = ARENA.large_region(moved).expect("resized block is mapped");
                assert!(region.len() >= new_size);
                // SAFETY: the (possibly moved) block is live; its first byte moved with it.
                unsafe {
                    assert_eq!(*moved, tag, "contents lost by resize or move");
                    *moved.add(new_size - 1) = tag;
                }
                blocks[i] = (region, moved, tag);
            }
            6 => {
                let step = input.below(30).unwrap_or(0) as u64 * MS;
                ARENA.os().now.fetch_add(step, Ordering::Relaxed);
                ARENA.maybe_purge();
            }
            7 => ARENA.collect(),
            _ => {}
        }
        ARENA.validate();
    }
    // Leave the arena as we found it, so every run starts clean and can check the merge.
    for page in pages {
        ARENA.release_page(page, &TALLY);
    }
    for (region, ptr, _) in blocks {
        ARENA.queue_large_release(region, ptr, LargeState::Live);
    }
    ARENA.collect();
    ARENA.validate();
    let (free, reserved) = ARENA.free_and_reserved_bytes();
    assert_eq!(free, reserved, "freed ranges did not all come back");
    for kind in PageKind::ALL {
        assert_eq!(ARENA.page_region_count(kind), 0);
    }
}

// ------------------------------------------------------------------ hooks for the tests
//
// Each forces open a window that real programs hit only by timing, so that a test can put
// the process allocator (`VmArena`) in that state deterministically (`tests/race_windows.rs`).

/// Runs `f` while the process arena's lock is held in shared mode, as `stats()` holds it
/// while it walks the pages: large frees made meanwhile (by other threads) queue their blocks.
pub fn with_arena_read_lock<R>(f: impl FnOnce() -> R) -> R {
    crate::arena::ARENA.with_shared_lock(f)
}

/// Lists the newest block of the calling thread's large-block cache twice, as a `fork` that
/// catches the thread inside the cache's slot shift leaves it. The thread must have a heap
/// with one to three cached blocks (free a block of 64-512 KiB first).
pub fn list_newest_cached_large_block_twice() {
    crate::heap::list_newest_cached_large_block_twice();
}

/// Forgets the process arena's purge schedule, as a purge does between its sessions.
pub fn forget_purge_schedule() {
    crate::arena::ARENA.forget_purge_schedule();
}

/// True if the process arena has a purge scheduled.
pub fn purge_scheduled() -> bool {
    crate::arena::ARENA.next_purge_due().is_some()
}
