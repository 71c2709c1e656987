//! A sampled small block is served from a one-slice region of its own (`heap::sampled`). Those
//! regions go round between threads without the arena: a thread whose shelf of them is full
//! (16) puts the next on a shared shelf, where a thread with none takes them. Without it, each
//! sample freed by another thread than its own cost two write sessions on the arena.

use std::alloc::{GlobalAlloc, Layout};

use vmarena::VmArena;

#[global_allocator]
static GLOBAL: VmArena = VmArena;

/// A heap's own shelf of sample regions (`large_cache::SAMPLE_SLOTS`).
const HEAP_SHELF: usize = 16;
const BLOCKS: usize = 48;
/// A sample region: one slice.
const REGION: usize = 64 << 10;

#[test]
fn samples_freed_by_another_thread_are_sampled_again_without_the_arena() {
    vmarena::profile::set_sample_interval(1); // every allocation is sampled
    vmarena::profile::start();
    // A thread that only frees has no heap: the regions go to the shared shelf. One with a
    // heap keeps 16 on its own shelf, the rest go to the shared one.
    round(false);
    round(true);
    // `collect` gives every kept region back, the shared shelf's too.
    vmarena::collect();
    assert_eq!(vmarena::stats().large_cached_bytes, 0);
    vmarena::profile::stop();
}

fn round(freer_has_heap: bool) {
    let layout = Layout::from_size_align(16, 8).unwrap();
    // Allocated here (into an array: no allocation but the samples), freed by another thread.
    let mut blocks = [0usize; BLOCKS];
    for b in blocks.iter_mut() {
        // SAFETY: a non-zero size.
        *b = unsafe { GLOBAL.alloc(layout) } as usize;
    }
    let cached = vmarena::stats().large_cached_bytes;
    std::thread::spawn(move || {
        if freer_has_heap {
            std::hint::black_box(vec![0u8; 1000]);
        }
        for &b in &blocks {
            // SAFETY: live blocks, freed once each.
            unsafe { GLOBAL.dealloc(b as *mut u8, layout) };
        }
    })
    .join()
    .unwrap();
    // The shared shelf took them all (a thread without a heap), or all but the freer's own
    // shelf's, given back when it exited. (At least: spawning and joining the thread sampled
    // and freed a few blocks of this thread's too, which its own shelf keeps.)
    let shared = if freer_has_heap {
        BLOCKS - HEAP_SHELF
    } else {
        BLOCKS
    };
    let kept = vmarena::stats().large_cached_bytes - cached;
    assert!(
        kept >= shared * REGION && kept < (shared + HEAP_SHELF) * REGION,
        "{} regions kept (freer with a heap: {freer_has_heap})",
        kept / REGION
    );
    let before = vmarena::stats().write_sessions;
    let mut again = [0usize; BLOCKS - HEAP_SHELF];
    for b in again.iter_mut() {
        // SAFETY: a non-zero size.
        *b = unsafe { GLOBAL.alloc(layout) } as usize;
    }
    let sessions = vmarena::stats().write_sessions - before;
    for &b in &again {
        // SAFETY: live blocks, freed once each.
        unsafe { GLOBAL.dealloc(b as *mut u8, layout) };
    }
    assert!(
        sessions <= 2,
        "{} samples took {sessions} write sessions on the arena (freer with a heap: \
         {freer_has_heap})",
        again.len()
    );
}
