//! Every valid layout gets a correctly aligned block or null: alignments up to 1 GiB, sizes
//! near the limits, and requests that cannot be served.

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

#[test]
fn every_alignment_up_to_one_gib_is_honoured() {
    let mut align = 1usize;
    while align <= 1 << 30 {
        for size in [
            1,
            7,
            8,
            64,
            align.min(1 << 20),
            align.saturating_add(1).min(3 << 20),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size.
            let ptr = unsafe { GLOBAL.alloc(layout) };
            assert!(!ptr.is_null(), "{layout:?} failed");
            assert_eq!(ptr as usize % align, 0, "{layout:?} misaligned at {ptr:p}");
            // SAFETY: the block has `size` bytes.
            unsafe {
                ptr.write_bytes(0x5A, size);
                assert_eq!(*ptr.add(size - 1), 0x5A);
                GLOBAL.dealloc(ptr, layout);
            }
        }
        align *= 2;
    }
}

#[test]
fn impossible_sizes_return_null() {
    for size in [
        isize::MAX as usize - 4095,
        isize::MAX as usize / 2,
        1 << 62,
        1 << 50,
    ] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { GLOBAL.alloc(layout) };
        assert!(ptr.is_null(), "{size} bytes cannot exist, yet got {ptr:p}");
        // SAFETY: as above.
        let ptr = unsafe { GLOBAL.alloc_zeroed(layout) };
        assert!(ptr.is_null());
    }
    let layout = Layout::from_size_align(1 << 40, 1 << 30).unwrap();
    // SAFETY: non-zero size. 1 TiB with a 1 GiB alignment may or may not be reservable; either
    // way the result is null or usable.
    let ptr = unsafe { GLOBAL.alloc(layout) };
    if !ptr.is_null() {
        assert_eq!(ptr as usize % (1 << 30), 0);
        // SAFETY: live block.
        unsafe {
            ptr.write(1);
            GLOBAL.dealloc(ptr, layout);
        }
    }
}

#[test]
fn realloc_to_an_impossible_size_returns_null_and_keeps_the_block() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: non-zero size; the block is used and freed once.
    unsafe {
        let ptr = GLOBAL.alloc(layout);
        ptr.write_bytes(3, 100);
        let bigger = GLOBAL.realloc(ptr, layout, isize::MAX as usize - 4095);
        assert!(bigger.is_null());
        assert!(
            (0..100).all(|i| *ptr.add(i) == 3),
            "a failed realloc must leave the block intact"
        );
        GLOBAL.dealloc(ptr, layout);
    }
}

#[test]
fn realloc_keeps_contents_across_every_size_boundary() {
    let sizes = [
        1usize,
        8,
        9,
        64,
        65,
        1000,
        8192,
        8193,
        65_536,
        65_537,
        524_288,
        524_289,
        4 << 20,
        100,
        3,
    ];
    let mut layout = Layout::from_size_align(sizes[0], 16).unwrap();
    // SAFETY: non-zero sizes; the block is live throughout.
    unsafe {
        let mut ptr = GLOBAL.alloc(layout);
        ptr.write(0xC3);
        let mut valid = 1;
        for &size in &sizes[1..] {
            ptr = GLOBAL.realloc(ptr, layout, size);
            assert!(!ptr.is_null());
            assert_eq!(ptr as usize % 16, 0);
            let keep = valid.min(size);
            for i in 0..keep {
                assert_eq!(
                    *ptr.add(i),
                    (i as u8).wrapping_mul(31) ^ 0xC3,
                    "byte {i} lost growing to {size}"
                );
            }
            for i in 0..size {
                ptr.add(i).write((i as u8).wrapping_mul(31) ^ 0xC3);
            }
            valid = size;
            layout = Layout::from_size_align(size, 16).unwrap();
        }
        GLOBAL.dealloc(ptr, layout);
    }
}

#[test]
fn usable_size_covers_the_request_and_rejects_foreign_pointers() {
    for size in [1, 8, 24, 1000, 70_000, 600_000, 3 << 20] {
        let b = vec![0u8; size];
        let usable = vmarena::usable_size(b.as_ptr()).expect("our block");
        assert!(
            usable >= size && usable <= size + size / 8 + 65536,
            "size {size} usable {usable}"
        );
    }
    let on_stack = 0u64;
    assert_eq!(
        vmarena::usable_size(&on_stack as *const u64 as *const u8),
        None
    );
    assert!(vmarena::stats().speculation_success > 0);
}

#[test]
fn large_vec_growth_moves_pages_or_grows_in_place_instead_of_copying() {
    let before = vmarena::stats();
    let mut v: Vec<u64> = Vec::new();
    for i in 0..(64u64 << 20) / 8 {
        v.push(i ^ 0x5555);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ 0x5555));
    let after = vmarena::stats();
    let moved = after.bytes_remapped - before.bytes_remapped;
    let grown = after.bytes_grown_in_place - before.bytes_grown_in_place;
    println!(
        "remapped {} MiB in {} moves, grown in place {} MiB",
        moved >> 20,
        after.remaps - before.remaps,
        grown >> 20
    );
    assert!(
        moved + grown >= 32 << 20,
        "large growth went through copies"
    );
    // Shrinking returns the tail in place.
    v.truncate(1 << 20);
    v.shrink_to_fit();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ 0x5555));
    assert!(vmarena::usable_size(v.as_ptr().cast()).unwrap() < 9 << 20);
}

/// `raw::realloc` of blocks Rust allocated in the 8-byte-step classes (24, 40, ... bytes): a
/// resize stays in place only if the block itself holds the new size (the class of the same
/// size at 16-byte alignment is 8 bytes larger, and once made C's `realloc` write past it).
#[test]
fn raw_realloc_of_rust_blocks_never_overruns_them() {
    vmarena_testkit::realloc_in_place::resize_small_blocks_through(
        // SAFETY: non-zero sizes.
        |layout| unsafe { GLOBAL.alloc(layout) },
        // SAFETY: live blocks of vmarena's; the old pointer is not used after a move.
        |p, size| unsafe { vmarena::raw::realloc(p, size, 16) },
        vmarena::raw::usable_size,
        // SAFETY: live blocks, each freed once.
        |p| unsafe { vmarena::raw::free(p) },
    );
}
