//! Hostile layouts: sizes up to `isize::MAX`, alignments up to 2^62, reallocs to any of them.
//! Every call must return null or a correct block (aligned, writable at both ends, known to
//! `usable_size`), never crash. (`GlobalAlloc` does not allow zero-size requests, so there are
//! none here; the C library's `malloc(0)` is covered with it.)
#![no_main]

use std::alloc::{GlobalAlloc, Layout};

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

fn number(data: &mut &[u8]) -> Option<usize> {
    let (head, rest) = data.split_first_chunk::<8>()?;
    *data = rest;
    let raw = u64::from_le_bytes(*head);
    // Shape it: keep only some bits, so that small, page-sized and huge values all appear.
    let bits = (raw >> 58) as u32 + 1; // 1..=64
    Some((raw & (u64::MAX >> (64 - bits))) as usize)
}

fn check(ptr: *mut u8, layout: Layout) {
    if ptr.is_null() {
        return;
    }
    assert_eq!(
        ptr as usize % layout.align(),
        0,
        "{layout:?} misaligned at {ptr:p}"
    );
    let usable = vmarena::usable_size(ptr).expect("vmarena knows its block");
    assert!(usable >= layout.size(), "{layout:?}: usable {usable}");
    // SAFETY: the block has `layout.size()` bytes; touch both ends only (it may be huge).
    unsafe {
        *ptr = 0xAB;
        *ptr.add(layout.size() - 1) = 0xCD;
        assert_eq!(*ptr, if layout.size() == 1 { 0xCD } else { 0xAB });
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    while let (Some(size), Some(align_bits), Some(new_size)) =
        (number(&mut data), number(&mut data), number(&mut data))
    {
        let align = 1usize << (align_bits % 63);
        let Ok(layout) = Layout::from_size_align(size.max(1), align) else {
            continue;
        };
        let zeroed = size & 1 == 1;
        // SAFETY: non-zero size; the block is freed once with its (current) layout.
        unsafe {
            let ptr = if zeroed {
                GLOBAL.alloc_zeroed(layout)
            } else {
                GLOBAL.alloc(layout)
            };
            check(ptr, layout);
            if ptr.is_null() {
                continue;
            }
            if zeroed && layout.size() > 2 {
                assert_eq!(*ptr.add(1), 0, "zeroed block not zero");
            }
            let first = if layout.size() == 1 { 0xCD } else { 0xAB };
            let new_size = new_size.max(1);
            let (ptr, layout) = match Layout::from_size_align(new_size, align) {
                Ok(new_layout) => {
                    let moved = GLOBAL.realloc(ptr, layout, new_size);
                    if moved.is_null() {
                        // Failed: the old block is intact.
                        assert_eq!(*ptr, first);
                        (ptr, layout)
                    } else {
                        assert_eq!(*moved, first, "realloc lost the first byte");
                        check(moved, new_layout);
                        (moved, new_layout)
                    }
                }
                Err(_) => (ptr, layout),
            };
            GLOBAL.dealloc(ptr, layout);
        }
    }
});
