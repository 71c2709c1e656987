//! Isolated heaps (`vmarena::Heap`) and the `Allocator` trait: contents survive, blocks of
//! different heaps never overlap or share a page, dropping a heap gives its memory back, other
//! threads free into a heap, and collections (allocator-api2's `Vec`, hashbrown's map) live in
//! a heap or in `VmArena`.

#![cfg_attr(feature = "nightly", feature(allocator_api))]

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::{Rng, check, fill, random_align, random_size, resident_bytes};
use vmarena::{Heap, VmArena};

#[global_allocator]
static GLOBAL: VmArena = VmArena;

/// The tests compare process-wide figures before and after: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Allocates `count` random blocks from `heap`, filled with their pattern.
fn fill_heap(heap: &Heap, rng: &mut Rng, count: usize) -> Vec<(usize, Layout)> {
    (0..count)
        .map(|_| {
            let layout = Layout::from_size_align(random_size(rng), random_align(rng)).unwrap();
            let p = heap.alloc(layout);
            assert!(!p.is_null(), "out of memory for {layout:?}");
            assert_eq!(p as usize % layout.align(), 0, "misaligned for {layout:?}");
            // SAFETY: a fresh block of `layout.size()` bytes.
            unsafe { fill(p, layout.size()) };
            (p as usize, layout)
        })
        .collect()
}

fn check_all(blocks: &[(usize, Layout)]) {
    for &(p, layout) in blocks {
        // SAFETY: a live block, filled with its pattern.
        unsafe { check(p as *const u8, layout.size()) };
    }
}

fn assert_disjoint(blocks: &mut [(usize, Layout)]) {
    blocks.sort_by_key(|b| b.0);
    for pair in blocks.windows(2) {
        let ((a, la), (b, _)) = (pair[0], pair[1]);
        assert!(a + la.size() <= b, "{a:#x}+{} overlaps {b:#x}", la.size());
    }
}

#[test]
fn blocks_of_two_heaps_keep_their_contents_and_never_overlap() {
    let _serial = serial();
    let (a, b) = (Heap::new(), Heap::new());
    let mut rng = Rng::new(1);
    let in_a = fill_heap(&a, &mut rng, 3000);
    let in_b = fill_heap(&b, &mut rng, 3000);
    let global: Vec<_> = (0..1000)
        .map(|_| {
            let layout = Layout::from_size_align(random_size(&mut rng), 8).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            // SAFETY: a fresh block.
            unsafe { fill(p, layout.size()) };
            (p as usize, layout)
        })
        .collect();
    check_all(&in_a);
    check_all(&in_b);
    check_all(&global);
    let mut all: Vec<_> = in_a.iter().chain(&in_b).chain(&global).copied().collect();
    assert_disjoint(&mut all);
    for &(p, layout) in &in_a {
        // SAFETY: a live block of `a`.
        unsafe { a.dealloc(p as *mut u8, layout) };
    }
    check_all(&in_b);
    for &(p, layout) in &global {
        // SAFETY: a live global block.
        unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
    }
    drop(a);
    check_all(&in_b);
}

#[test]
fn dropping_a_heap_leaves_other_heaps_blocks_alone() {
    let _serial = serial();
    // Blocks of different heaps never share a page: if they did, dropping `doomed` would give
    // away pages that hold `kept`'s blocks, and the allocations that follow would land on them.
    let (kept, doomed) = (Heap::new(), Heap::new());
    let mut kept_blocks = Vec::new();
    for round in 0..2000 {
        for (heap, size) in [(&kept, 16 + round % 200), (&doomed, 16 + round % 200)] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let p = heap.alloc(layout);
            // SAFETY: a fresh block.
            unsafe { fill(p, size) };
            if std::ptr::eq(heap, &kept) {
                kept_blocks.push((p as usize, layout));
            }
        }
    }
    drop(doomed); // its blocks die with it, unfreed
    let reuse = Heap::new();
    let mut rng = Rng::new(2);
    let fresh = fill_heap(&reuse, &mut rng, 5000);
    check_all(&kept_blocks);
    check_all(&fresh);
    let mut all: Vec<_> = kept_blocks.iter().chain(&fresh).copied().collect();
    assert_disjoint(&mut all);
}

#[test]
fn dropping_a_heap_gives_its_memory_back() {
    let _serial = serial();
    let before = vmarena::stats();
    let heap = Heap::new();
    let layout = Layout::from_size_align(4096, 8).unwrap();
    let mut blocks = Vec::new();
    for _ in 0..16 * 1024 {
        let p = heap.alloc(layout);
        // SAFETY: a fresh block: touch it all, so it is resident.
        unsafe { p.write_bytes(0xa5, layout.size()) };
        blocks.push(p);
    }
    let big = Layout::from_size_align(8 << 20, 8).unwrap();
    let large = heap.alloc(big);
    // SAFETY: a fresh block of 8 MiB.
    unsafe { large.write_bytes(0x5a, big.size()) };
    let stats = heap.stats();
    assert!(stats.bytes_in_use >= (64 << 20) + (8 << 20), "{stats:?}");
    assert_eq!(stats.large_regions, 1);
    assert!(stats.pages_in_use.iter().sum::<usize>() >= 1024);
    vmarena::collect();
    let resident_full = resident_bytes();
    let during = vmarena::stats();
    drop(heap); // 64 MiB of small blocks and a large block, none freed
    let after = vmarena::stats();
    let ours =
        during.pages_in_use.iter().sum::<usize>() - before.pages_in_use.iter().sum::<usize>();
    let left = after.pages_in_use.iter().sum::<usize>() as isize
        - before.pages_in_use.iter().sum::<usize>() as isize;
    assert!(
        left < ours as isize / 10,
        "pages: {left} of {ours} still in use"
    );
    vmarena::collect();
    let resident_after = resident_bytes();
    assert!(
        resident_full - resident_after.min(resident_full) > 48 << 20,
        "resident {} MiB before the drop, {} MiB after",
        resident_full >> 20,
        resident_after >> 20
    );
}

#[test]
fn other_threads_free_into_a_shared_heap() {
    let _serial = serial();
    let heap = Heap::new();
    let layout = Layout::from_size_align(64, 8).unwrap();
    // Blocks allocated on this thread, freed by four others: through the heap (its mutex)
    // and through the global allocator (remote frees into the heap's pages).
    let blocks: Vec<usize> = (0..40_000)
        .map(|_| {
            let p = heap.alloc(layout);
            // SAFETY: a fresh block.
            unsafe { fill(p, 64) };
            p as usize
        })
        .collect();
    std::thread::scope(|s| {
        for (t, chunk) in blocks.chunks(10_000).enumerate() {
            let heap = &heap;
            s.spawn(move || {
                for &p in chunk {
                    // SAFETY: a live block of `heap`, filled; given up here.
                    unsafe {
                        check(p as *const u8, 64);
                        if t % 2 == 0 {
                            heap.dealloc(p as *mut u8, layout);
                        } else {
                            GLOBAL.dealloc(p as *mut u8, layout);
                        }
                    }
                }
                // Meanwhile allocate from the heap on this thread too.
                let mine: Vec<_> = (0..1000).map(|_| heap.alloc(layout) as usize).collect();
                for &p in &mine {
                    // SAFETY: fresh blocks.
                    unsafe { fill(p as *mut u8, 64) };
                }
                for &p in &mine {
                    // SAFETY: live blocks of `heap`.
                    unsafe {
                        check(p as *const u8, 64);
                        heap.dealloc(p as *mut u8, layout);
                    }
                }
            });
        }
    });
    // Half of the blocks came back as remote frees, which the heap takes in when it next
    // needs room: allocating as many blocks again must reuse those pages, not add to them
    // (40,000 blocks of 64 B fill 40 pages of 64 KiB).
    assert!(heap.stats().pages_in_use[0] > 0);
    let again: Vec<_> = (0..40_000).map(|_| heap.alloc(layout)).collect();
    assert_eq!(heap.stats().pages_in_use, [40, 0]);
    for p in again {
        // SAFETY: live blocks of `heap`.
        unsafe { heap.dealloc(p, layout) };
    }
    assert_eq!(heap.stats().bytes_in_use, 0);
}

#[test]
fn large_blocks_of_a_heap_grow_move_and_die_with_it() {
    let _serial = serial();
    let heap = Heap::new();
    let layout = Layout::from_size_align(1 << 20, 64).unwrap();
    let p = heap.alloc(layout);
    // SAFETY: a fresh block.
    unsafe { fill(p, layout.size()) };
    let mut now = (p, layout);
    for size in [2 << 20, 16 << 20, 3 << 20, 700 << 10] {
        // SAFETY: a live block of `heap` with this layout.
        let q = unsafe { heap.realloc(now.0, now.1, size) };
        assert!(!q.is_null());
        // SAFETY: the block kept the first min(old, new) bytes of its pattern.
        unsafe { common::check_from(q, p as usize, 1 << 20, size.min(1 << 20)) };
        now = (q, Layout::from_size_align(size, 64).unwrap());
        assert_eq!(heap.stats().large_regions, 1);
    }
    let second = heap.alloc(Layout::from_size_align(5 << 20, 8).unwrap());
    assert!(!second.is_null());
    assert_eq!(heap.stats().large_regions, 2);
    let regions = vmarena::stats().large_regions;
    drop(heap);
    assert_eq!(vmarena::stats().large_regions, regions - 2);
}

#[test]
fn zero_sized_and_impossible_layouts() {
    let _serial = serial();
    let heap = Heap::new();
    let zero = Layout::from_size_align(0, 64).unwrap();
    let p = heap.alloc(zero);
    assert!(!p.is_null() && p as usize % 64 == 0);
    // SAFETY: the zero-sized "block" `alloc` returned.
    unsafe { heap.dealloc(p, zero) };
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
    assert!(heap.alloc(huge).is_null());
}

#[test]
fn allocator_api2_vec_and_hashbrown_map_in_a_heap() {
    let _serial = serial();
    let heap = Heap::new();
    let mut v = allocator_api2::vec::Vec::new_in(&heap);
    for i in 0..100_000u64 {
        v.push(i * 3);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    let mut map = hashbrown::HashMap::new_in(&heap);
    for i in 0..50_000u32 {
        map.insert(i, i.to_string());
    }
    assert!((0..50_000u32).all(|i| map[&i] == i.to_string()));
    assert!(heap.stats().bytes_in_use >= 100_000 * 8);
    v.shrink_to_fit();
    drop(v);
    drop(map);
    assert_eq!(heap.stats().bytes_in_use, 0);

    // The global allocator is an `Allocator` too.
    let mut g = allocator_api2::vec::Vec::new_in(VmArena);
    g.extend(0..1000u32);
    assert_eq!(g.iter().sum::<u32>(), 499_500);
    let boxed = allocator_api2::boxed::Box::new_in([7u8; 3000], VmArena);
    assert!(boxed.iter().all(|&b| b == 7));
}

#[test]
fn a_heap_per_request() {
    let _serial = serial();
    // An arena per request, freed at once: nothing needs freeing block by block.
    let base = vmarena::stats().pages_in_use.iter().sum::<usize>();
    for request in 0..200 {
        let heap = Heap::new();
        let mut parts = allocator_api2::vec::Vec::new_in(&heap);
        for i in 0..500 {
            let mut s = allocator_api2::vec::Vec::new_in(&heap);
            s.extend_from_slice(format!("request {request} part {i}").as_bytes());
            parts.push(s);
        }
        assert_eq!(parts.len(), 500);
        std::mem::forget(parts); // the heap's drop frees it all
        drop(heap);
    }
    let after = vmarena::stats().pages_in_use.iter().sum::<usize>();
    assert!(
        after < base + 64,
        "pages in use grew from {base} to {after}"
    );
}

#[test]
fn a_heap_never_takes_over_pages_of_exited_threads() {
    let _serial = serial();
    // A thread leaves live blocks in half-used pages and exits: its pages are abandoned, up
    // for grabs by other threads' heaps. A heap that took one over would give it away, with
    // these blocks in it, when dropped.
    let layout = Layout::from_size_align(48, 8).unwrap();
    let survivors: Vec<usize> = std::thread::spawn(move || {
        let all: Vec<usize> = (0..20_000)
            // SAFETY: a non-zero size.
            .map(|_| unsafe { GLOBAL.alloc(layout) } as usize)
            .collect();
        let mut kept = Vec::new();
        for (i, &p) in all.iter().enumerate() {
            if i % 3 == 0 {
                // SAFETY: a fresh block.
                unsafe { fill(p as *mut u8, 48) };
                kept.push(p);
            } else {
                // SAFETY: a live block, given up.
                unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
            }
        }
        kept
    })
    .join()
    .unwrap();
    for _ in 0..3 {
        let heap = Heap::new();
        let mine: Vec<_> = (0..20_000).map(|_| heap.alloc(layout) as usize).collect();
        for &p in &mine {
            // SAFETY: fresh blocks of the heap.
            unsafe { fill(p as *mut u8, 48) };
        }
        let mut all: Vec<_> = mine
            .iter()
            .chain(&survivors)
            .map(|&p| (p, layout))
            .collect();
        assert_disjoint(&mut all);
        drop(heap);
    }
    // Reuse whatever the heaps gave back, then check the exited thread's blocks.
    let reuse: Vec<_> = (0..60_000)
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            // SAFETY: a fresh block.
            unsafe { p.write_bytes(0xee, 48) };
            p
        })
        .collect();
    for &p in &survivors {
        // SAFETY: live blocks, filled by the exited thread.
        unsafe { check(p as *const u8, 48) };
    }
    for p in reuse.into_iter().map(|p| p as usize).chain(survivors) {
        // SAFETY: live global blocks.
        unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
    }
}

/// `core::alloc::Allocator` (nightly Rust, feature `nightly`): std's own collections in a heap.
#[cfg(feature = "nightly")]
#[test]
fn std_collections_in_a_heap_on_nightly() {
    let _serial = serial();
    let heap = Heap::new();
    let mut v: Vec<u64, &Heap> = Vec::new_in(&heap);
    v.extend(0..10_000);
    let b = Box::new_in([3u16; 5000], &heap);
    assert_eq!(v.iter().sum::<u64>(), 49_995_000);
    assert!(b.iter().all(|&x| x == 3));
    assert!(heap.stats().bytes_in_use >= 80_000 + 10_000);
    drop((v, b));
    assert_eq!(heap.stats().bytes_in_use, 0);
}

#[test]
fn a_local_heap_moves_between_threads_and_its_blocks_free_anywhere() {
    let _serial = serial();
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Heap>();
    send::<vmarena::LocalHeap>();
    let heap = vmarena::LocalHeap::new();
    let mut rng = Rng::new(9);
    let blocks: Vec<(usize, Layout)> = (0..3000)
        .map(|_| {
            let layout =
                Layout::from_size_align(random_size(&mut rng), random_align(&mut rng)).unwrap();
            let p = heap.alloc(layout);
            assert!(!p.is_null() && p as usize % layout.align() == 0);
            // SAFETY: a fresh block.
            unsafe { fill(p, layout.size()) };
            (p as usize, layout)
        })
        .collect();
    // The heap moves to another thread, which checks, frees half and allocates more.
    let (heap, blocks) = std::thread::spawn(move || {
        check_all(&blocks);
        let (gone, kept) = blocks.split_at(1500);
        for &(p, layout) in gone {
            // SAFETY: live blocks of `heap`.
            unsafe { heap.dealloc(p as *mut u8, layout) };
        }
        let mut kept = kept.to_vec();
        let mut rng = Rng::new(10);
        kept.extend(fill_heap_local(&heap, &mut rng, 1500));
        (heap, kept)
    })
    .join()
    .unwrap();
    check_all(&blocks);
    let mut all = blocks.clone();
    assert_disjoint(&mut all);
    // Another thread frees some of its blocks through the global allocator (remote frees).
    let (remote, local) = blocks.split_at(1000);
    let remote = remote.to_vec();
    std::thread::spawn(move || {
        for (p, layout) in remote {
            // SAFETY: live blocks of the heap, given up here.
            unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
        }
    })
    .join()
    .unwrap();
    check_all(local);
    let mut v = allocator_api2::vec::Vec::new_in(&heap);
    v.extend(0..10_000u32);
    assert_eq!(v.iter().sum::<u32>(), 49_995_000);
    drop(v);
    let before = vmarena::stats().pages_in_use.iter().sum::<usize>();
    let held = heap.stats().pages_in_use.iter().sum::<usize>();
    assert!(held > 0);
    drop(heap);
    let after = vmarena::stats().pages_in_use.iter().sum::<usize>();
    assert_eq!(after, before - held);
}

fn fill_heap_local(heap: &vmarena::LocalHeap, rng: &mut Rng, count: usize) -> Vec<(usize, Layout)> {
    (0..count)
        .map(|_| {
            let layout = Layout::from_size_align(random_size(rng), 8).unwrap();
            let p = heap.alloc(layout);
            assert!(!p.is_null());
            // SAFETY: a fresh block.
            unsafe { fill(p, layout.size()) };
            (p as usize, layout)
        })
        .collect()
}

#[test]
fn large_blocks_of_a_heap_freed_through_the_global_allocator() {
    let _serial = serial();
    let heap = Heap::new();
    let layout = Layout::from_size_align(2 << 20, 8).unwrap();
    let (a, b, c) = (heap.alloc(layout), heap.alloc(layout), heap.alloc(layout));
    // SAFETY: fresh blocks of 2 MiB.
    unsafe {
        fill(a, 2 << 20);
        fill(b, 2 << 20);
        fill(c, 2 << 20);
    }
    let (a, b) = (a as usize, b as usize);
    std::thread::spawn(move || {
        // SAFETY: live blocks of the heap, given up here; `b` grows through the global
        // allocator first (it must move by copy: the heap lists the block where it is).
        unsafe {
            GLOBAL.dealloc(a as *mut u8, layout);
            let moved = GLOBAL.realloc(b as *mut u8, layout, 6 << 20);
            common::check_from(moved, b, 2 << 20, 2 << 20);
            GLOBAL.dealloc(moved, Layout::from_size_align(6 << 20, 8).unwrap());
        }
    })
    .join()
    .unwrap();
    assert_eq!(heap.stats().large_regions, 1);
    let regions = vmarena::stats().large_regions;
    // The next large allocation of the heap gives the two freed blocks back.
    let d = heap.alloc(layout);
    assert_eq!(vmarena::stats().large_regions, regions - 2 + 1);
    // SAFETY: `c` is live and filled.
    unsafe { check(c, 2 << 20) };
    // SAFETY: live blocks of the heap.
    unsafe {
        heap.dealloc(c, layout);
        heap.dealloc(d, layout);
    }
    assert_eq!(heap.stats().large_regions, 0);
}
