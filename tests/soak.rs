//! The `threads` fuzz target's workload without the fuzzer, fast enough to run for hours: worker
//! threads allocate (some zeroed, some over-aligned), reallocate and free blocks and pass them
//! to each other to be freed remotely; workers exit now and then and are replaced, so their pages
//! are abandoned and adopted; one more thread keeps reshaping the arena with large reallocs,
//! frees and `collect()`, frees blocks the workers pass to it, and passes them small blocks of its
//! own (so their frees race with its collects).
//!
//! Every block carries a pattern derived from a tag unique to that allocation (not from its
//! address, which a block handed to two threads at once would share): whichever thread holds
//! a block checks it before freeing or resizing it, so a block handed out twice shows up as a
//! mismatch, and a block freed twice trips vmarena's own double-free check.
//!
//! It runs for `VMARENA_TEST_SOAK_SECS` seconds (default 5).

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Rng;
use vmarena_testkit::tagged_pattern::{check, fill};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// More workers than the CI machine has cores, so threads are preempted at arbitrary points.
const WORKERS: usize = 4;
/// A worker exits after a random number of operations below this, and a new one takes its place.
const WORKER_LIFE: u64 = 100_000;
/// Blocks a worker holds at most (it frees the excess).
const MAX_LIVE: usize = 1_000;

#[derive(Clone, Copy, Debug)]
struct Block {
    ptr: usize,
    layout: Layout,
    tag: u64,
}

// SAFETY: plain data; blocks are handed between threads on purpose.
unsafe impl Send for Block {}

/// Allocates and fills a block (zeroed blocks are checked first); vmarena must not say null.
fn alloc(layout: Layout, zeroed: bool, tag: u64) -> Block {
    // SAFETY: non-zero size.
    let ptr = unsafe {
        if zeroed {
            GLOBAL.alloc_zeroed(layout)
        } else {
            GLOBAL.alloc(layout)
        }
    };
    assert!(!ptr.is_null(), "allocation of {layout:?} failed");
    assert_eq!(ptr as usize % layout.align(), 0, "{layout:?} at {ptr:p}");
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe {
        if zeroed {
            let len = layout.size().min(64 << 10);
            let bytes = std::slice::from_raw_parts(ptr, len);
            assert!(
                bytes.iter().all(|&b| b == 0),
                "zeroed block {ptr:p} is not zero"
            );
        }
        fill(ptr, layout.size(), tag);
    }
    Block {
        ptr: ptr as usize,
        layout,
        tag,
    }
}

fn free(block: Block) {
    let ptr = block.ptr as *mut u8;
    // SAFETY: a live block, checked and then freed once.
    unsafe {
        check(ptr, block.layout.size(), block.layout.size(), block.tag);
        GLOBAL.dealloc(ptr, block.layout);
    }
}

fn realloc(block: Block, new_size: usize, tag: u64) -> Block {
    let (old, size) = (block.ptr as *mut u8, block.layout.size());
    // SAFETY: a live block; the new size is non-zero and valid with the alignment.
    unsafe {
        check(old, size, size, block.tag);
        let ptr = GLOBAL.realloc(old, block.layout, new_size);
        assert!(!ptr.is_null(), "realloc to {new_size} failed");
        assert_eq!(
            ptr as usize % block.layout.align(),
            0,
            "realloc lost the alignment"
        );
        check(ptr, size, size.min(new_size), block.tag);
        fill(ptr, new_size, tag);
        Block {
            ptr: ptr as usize,
            layout: Layout::from_size_align(new_size, block.layout.align()).unwrap(),
            tag,
        }
    }
}

/// Sizes over every size class, mostly small; alignments 1 to 128 bytes.
fn small_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(100) {
        0..=49 => 1 + rng.below(128),
        50..=79 => 1 + rng.below(2048),
        80..=94 => 1 + rng.below(64 << 10),
        95..=98 => 1 + rng.below(256 << 10),
        _ => 512 << 10,
    } as usize;
    Layout::from_size_align(size, 1 << rng.below(8)).unwrap()
}

struct Shared {
    /// Blocks passed to each worker slot (and, last, to the remapper) to be freed there.
    mailboxes: Vec<Mutex<Vec<Block>>>,
    stop: AtomicBool,
    /// Tags: each allocation gets a new one.
    next_tag: AtomicU64,
    operations: AtomicU64,
}

impl Shared {
    fn tag(&self) -> u64 {
        // Relaxed: only uniqueness matters.
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, rng: &mut Rng, block: Block) {
        let to = rng.below(self.mailboxes.len() as u64) as usize;
        self.mailboxes[to].lock().unwrap().push(block);
    }

    fn free_mail(&self, slot: usize) {
        let mail = std::mem::take(&mut *self.mailboxes[slot].lock().unwrap());
        for block in mail {
            free(block);
        }
    }
}

/// One worker's life: random operations, then exit, passing what it still holds to others.
fn worker(shared: &Shared, slot: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut live: Vec<Block> = Vec::new();
    let life = 1 + rng.below(WORKER_LIFE);
    let mut ops = 0;
    while ops < life && !shared.stop.load(Ordering::Relaxed) {
        ops += 1;
        match rng.below(100) {
            0..=39 => live.push(alloc(small_layout(&mut rng), rng.chance(25), shared.tag())),
            40..=59 if !live.is_empty() => {
                free(live.swap_remove(rng.below(live.len() as u64) as usize))
            }
            60..=69 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let new_size = small_layout(&mut rng).size();
                live[i] = realloc(live[i], new_size, shared.tag());
            }
            70..=84 if !live.is_empty() => {
                let block = live.swap_remove(rng.below(live.len() as u64) as usize);
                shared.send(&mut rng, block);
            }
            85..=94 => shared.free_mail(slot),
            95 => {
                for b in &live {
                    // SAFETY: live blocks of this thread.
                    unsafe { check(b.ptr as *const u8, b.layout.size(), b.layout.size(), b.tag) };
                }
            }
            _ => {}
        }
        while live.len() > MAX_LIVE {
            free(live.swap_remove(0));
        }
    }
    // Exit holding blocks: others free them into this thread's abandoned pages.
    for block in live {
        if rng.chance(50) {
            shared.send(&mut rng, block);
        } else {
            free(block);
        }
    }
    shared.operations.fetch_add(ops, Ordering::Relaxed);
}

/// Large blocks that grow, shrink and move; frees; `collect()`; frees of blocks others sent.
fn remapper(shared: &Shared, slot: usize) {
    let mut rng = Rng::new(0x5eed);
    let mut live: Vec<Block> = Vec::new();
    let large = |rng: &mut Rng| (512 << 10) + rng.below(8 << 20) as usize;
    while !shared.stop.load(Ordering::Relaxed) {
        match rng.below(16) {
            0..=3 => {
                let layout = Layout::from_size_align(large(&mut rng), 8).unwrap();
                live.push(alloc(layout, rng.chance(10), shared.tag()));
            }
            4..=8 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let new_size = large(&mut rng);
                live[i] = realloc(live[i], new_size, shared.tag());
            }
            9..=11 if !live.is_empty() => {
                free(live.swap_remove(rng.below(live.len() as u64) as usize))
            }
            12 => vmarena::collect(),
            13 => {
                // Small blocks from this thread's pages, freed by the workers (remote frees
                // racing with this thread's own collects), like the fuzz target's input buffers.
                for _ in 0..1 + rng.below(4) {
                    let layout = Layout::from_size_align(1 + rng.below(64) as usize, 8).unwrap();
                    let block = alloc(layout, false, shared.tag());
                    let to = rng.below(WORKERS as u64) as usize;
                    shared.mailboxes[to].lock().unwrap().push(block);
                }
            }
            _ => shared.free_mail(slot),
        }
        while live.len() > 12 {
            free(live.swap_remove(0));
        }
    }
    for block in live {
        free(block);
    }
    shared.free_mail(slot);
}

#[test]
fn blocks_passed_between_threads_survive_concurrent_remaps_and_exits() {
    let seconds: u64 = std::env::var("VMARENA_TEST_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let shared = Shared {
        mailboxes: (0..=WORKERS).map(|_| Mutex::new(Vec::new())).collect(),
        stop: AtomicBool::new(false),
        next_tag: AtomicU64::new(1),
        operations: AtomicU64::new(0),
    };
    vmarena::track_requested_bytes(true);
    let before = vmarena::stats();
    let start = Instant::now();
    let mut generations = 0u64;
    std::thread::scope(|scope| {
        scope.spawn(|| remapper(&shared, WORKERS));
        let mut workers: Vec<_> = (0..WORKERS)
            .map(|slot| {
                let shared = &shared;
                Some(scope.spawn(move || worker(shared, slot, slot as u64 + 1)))
            })
            .collect();
        let deadline = start + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            for (slot, handle) in workers.iter_mut().enumerate() {
                if handle.as_ref().is_some_and(|h| h.is_finished()) {
                    handle.take().unwrap().join().unwrap();
                    generations += 1;
                    let shared = &shared;
                    let seed = generations * WORKERS as u64 + slot as u64 + 1;
                    *handle = Some(scope.spawn(move || worker(shared, slot, seed)));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        shared.stop.store(true, Ordering::Relaxed);
    });
    for slot in 0..=WORKERS {
        shared.free_mail(slot);
    }
    vmarena::collect();
    let after = vmarena::stats();
    println!(
        "{:.1} s: {} worker operations, {} replaced workers, {} remaps, {} abandoned pages left\n{after}",
        start.elapsed().as_secs_f64(),
        shared.operations.load(Ordering::Relaxed),
        generations,
        after.remaps - before.remaps,
        after.pages_abandoned,
    );
    assert!(
        generations > 0,
        "no worker exited: the hand-over paths did not run"
    );
    // Every block was freed: what is still counted is the test harness's own.
    let leaked = after
        .bytes_requested
        .unwrap()
        .wrapping_sub(before.bytes_requested.unwrap()) as isize;
    assert!(leaked.abs() <= 1 << 20, "{leaked} bytes unaccounted for");
}
