//! Many threads allocate, fill, check, reallocate and free blocks of every size class and some
//! large ones, and pass blocks to each other to be freed remotely. Every block carries a pattern
//! derived from its address, checked before it is freed or reallocated: an overlap between two
//! live blocks, a lost write or a stray write by the allocator shows up as a mismatch.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Arc, Mutex};

use common::{Block, Rng, check, check_from, fill, random_align, random_size};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const THREADS: usize = 8;

fn alloc(rng: &mut Rng) -> Block {
    let layout = Layout::from_size_align(random_size(rng), random_align(rng)).unwrap();
    // SAFETY: non-zero size.
    let ptr = unsafe { GLOBAL.alloc(layout) };
    assert!(!ptr.is_null(), "allocation of {layout:?} failed");
    assert_eq!(
        ptr as usize % layout.align(),
        0,
        "{layout:?} misaligned at {ptr:p}"
    );
    let usable = vmarena::usable_size(ptr).expect("vmarena knows its own block");
    assert!(
        usable >= layout.size(),
        "{layout:?}: usable size {usable} too small"
    );
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe { fill(ptr, layout.size()) };
    Block {
        ptr: ptr as usize,
        layout,
    }
}

fn free(block: Block) {
    // SAFETY: a live block we filled; freed once.
    unsafe {
        check(block.ptr as *const u8, block.layout.size());
        GLOBAL.dealloc(block.ptr as *mut u8, block.layout);
    }
}

fn realloc(block: Block, rng: &mut Rng) -> Block {
    let new_size = random_size(rng);
    // SAFETY: a live block; the new size is non-zero and small enough for its alignment.
    unsafe {
        check(block.ptr as *const u8, block.layout.size());
        let ptr = GLOBAL.realloc(block.ptr as *mut u8, block.layout, new_size);
        assert!(!ptr.is_null());
        assert_eq!(
            ptr as usize % block.layout.align(),
            0,
            "realloc lost the alignment"
        );
        // The prefix moved with the block.
        check_from(
            ptr,
            block.ptr,
            block.layout.size(),
            block.layout.size().min(new_size),
        );
        let layout = Layout::from_size_align(new_size, block.layout.align()).unwrap();
        fill(ptr, new_size);
        Block {
            ptr: ptr as usize,
            layout,
        }
    }
}

#[test]
fn threads_share_blocks_of_every_size_without_corruption() {
    let mailboxes: Arc<Vec<Mutex<Vec<Block>>>> =
        Arc::new((0..THREADS).map(|_| Mutex::new(Vec::new())).collect());
    let rounds: usize = std::env::var("VMARENA_TEST_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    vmarena::track_requested_bytes(true); // for the leak check below
    let before = vmarena::stats();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mailboxes = mailboxes.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(t as u64 + 1);
                let mut live: Vec<Block> = Vec::new();
                for round in 0..rounds {
                    match rng.below(100) {
                        0..=44 => live.push(alloc(&mut rng)),
                        45..=69 if !live.is_empty() => {
                            let i = rng.below(live.len() as u64) as usize;
                            free(live.swap_remove(i));
                        }
                        70..=79 if !live.is_empty() => {
                            let i = rng.below(live.len() as u64) as usize;
                            live[i] = realloc(live[i], &mut rng);
                        }
                        80..=89 if !live.is_empty() => {
                            // Hand a block to another thread, which frees it.
                            let i = rng.below(live.len() as u64) as usize;
                            let to = rng.below(THREADS as u64) as usize;
                            let block = live.swap_remove(i);
                            mailboxes[to].lock().unwrap().push(block);
                        }
                        _ => {
                            let mine = std::mem::take(&mut *mailboxes[t].lock().unwrap());
                            for block in mine {
                                free(block);
                            }
                        }
                    }
                    if live.len() > 2_000 || round % 10_000 == 0 {
                        // Check everything we hold now and then, not only at free time.
                        for b in &live {
                            // SAFETY: live blocks we filled.
                            unsafe { check(b.ptr as *const u8, b.layout.size()) };
                        }
                        while live.len() > 1_000 {
                            free(live.pop().unwrap());
                        }
                    }
                }
                for block in live {
                    free(block);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for mailbox in mailboxes.iter() {
        for block in std::mem::take(&mut *mailbox.lock().unwrap()) {
            free(block);
        }
    }
    let after = vmarena::stats();
    println!("{after}");
    assert!(
        after.region_read_fast > 0,
        "refills took the region read path"
    );
    assert_eq!(after.threads_exited - before.threads_exited, THREADS as u64);
    // Everything the test allocated was freed; what remains is the test harness's.
    let leaked = after
        .bytes_requested
        .unwrap()
        .wrapping_sub(before.bytes_requested.unwrap()) as isize;
    assert!(leaked <= 1 << 20, "{leaked} bytes leaked");
}
