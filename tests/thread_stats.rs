//! `vmarena::thread_stats()`: the calling thread's own allocated and freed bytes and blocks,
//! counted only while requested bytes are tracked. One test: tracking is process-wide.

use std::alloc::{GlobalAlloc, Layout};

use vmarena::VmArena;

#[global_allocator]
static GLOBAL: VmArena = VmArena;

#[test]
fn a_thread_sees_what_it_allocated_and_freed() {
    // Off by default: nothing counted, and the stats say so.
    std::thread::spawn(|| {
        let v = vec![1u8; 100];
        let stats = vmarena::thread_stats();
        assert!(!stats.counting);
        assert_eq!(stats.bytes_allocated, 0);
        drop(v);
    })
    .join()
    .unwrap();

    vmarena::track_requested_bytes(true);
    let small = Layout::from_size_align(40, 8).unwrap();
    let large = Layout::from_size_align(3 << 20, 8).unwrap();
    let handed = std::thread::spawn(move || {
        let before = vmarena::thread_stats();
        assert!(before.counting);
        // SAFETY: non-zero sizes; every block freed below is live.
        let handed = unsafe {
            let blocks: Vec<_> = (0..100).map(|_| GLOBAL.alloc(small)).collect();
            for &p in &blocks[..50] {
                GLOBAL.dealloc(p, small);
            }
            let big = GLOBAL.alloc(large);
            let big = GLOBAL.realloc(big, large, 5 << 20);
            GLOBAL.dealloc(big, Layout::from_size_align(5 << 20, 8).unwrap());
            blocks[50..].iter().map(|&p| p as usize).collect::<Vec<_>>()
        };
        let after = vmarena::thread_stats();
        // The Vec of handed blocks was allocated here too (and not freed yet).
        let vec_bytes = 50 * std::mem::size_of::<usize>() as u64;
        assert_eq!(after.allocations - before.allocations, 100 + 1 + 2);
        assert_eq!(after.frees - before.frees, 50 + 1 + 1);
        assert_eq!(
            after.bytes_allocated - before.bytes_allocated,
            100 * 40 + (5 << 20) + vec_bytes + 100 * 8
        );
        assert_eq!(
            after.bytes_freed - before.bytes_freed,
            50 * 40 + (5 << 20) + 100 * 8
        );
        handed
    })
    .join()
    .unwrap();

    // Blocks freed by another thread count where they are freed.
    std::thread::spawn(move || {
        let before = vmarena::thread_stats();
        for &p in &handed {
            // SAFETY: live blocks of the other (now exited) thread, given up here.
            unsafe { GLOBAL.dealloc(p as *mut u8, small) };
        }
        let after = vmarena::thread_stats();
        assert_eq!(after.frees - before.frees, 50);
        assert_eq!(after.bytes_freed - before.bytes_freed, 50 * 40);
        drop(handed);
    })
    .join()
    .unwrap();

    // Turned off and on again while a thread runs: its frees follow at once (the fast path
    // leaves counting to the slow one, which a flag in the live heap selects).
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let in_thread = barrier.clone();
    let live = std::thread::spawn(move || {
        // SAFETY: non-zero sizes; every block freed is live.
        unsafe {
            in_thread.wait(); // main turned counting off
            let before = vmarena::thread_stats();
            let blocks: Vec<_> = (0..10).map(|_| GLOBAL.alloc(small)).collect();
            GLOBAL.dealloc(blocks[0], small);
            let after = vmarena::thread_stats();
            assert_eq!(
                (after.frees, after.bytes_freed),
                (before.frees, before.bytes_freed)
            );
            in_thread.wait();
            in_thread.wait(); // main turned counting on
            let before = vmarena::thread_stats();
            for &p in &blocks[1..] {
                GLOBAL.dealloc(p, small);
            }
            let after = vmarena::thread_stats();
            assert_eq!(after.frees - before.frees, 9);
            assert_eq!(after.bytes_freed - before.bytes_freed, 9 * 40);
            drop(blocks);
            // Its allocations follow within 256 KiB allocated (the malloc fast path tests
            // only a count-down, which another thread cannot arm: the owner looks at its
            // modes each time it runs out).
            let before = vmarena::thread_stats();
            let pairs = 2 * (256 << 10) / 40;
            for _ in 0..pairs {
                GLOBAL.dealloc(GLOBAL.alloc(small), small);
            }
            let counted = vmarena::thread_stats().allocations - before.allocations;
            assert!(
                counted >= pairs - (256 << 10) / 40 - 1,
                "{counted} of {pairs} allocations counted"
            );
        }
    });
    vmarena::track_requested_bytes(false);
    barrier.wait();
    barrier.wait();
    vmarena::track_requested_bytes(true);
    barrier.wait();
    live.join().unwrap();
}
