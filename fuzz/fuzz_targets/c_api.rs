//! The C library's functions as `libvmarena.so` exports them (`vmarena::raw::c`: malloc,
//! calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign, valloc, pvalloc,
//! free, malloc_usable_size, mallinfo) in any order with any arguments, hostile sizes and
//! alignments included, against the model: every live block keeps its pattern, no two
//! overlap, alignments hold, calloc's blocks read zero, realloc keeps the prefix (and a failed
//! one the block), `realloc(p, 0)` frees, the usable size covers the request, the errors are
//! glibc's (`EINVAL` for a bad alignment, `ENOMEM` for an impossible size), and mallinfo's
//! in-use bytes cover the live blocks.
#![no_main]

mod model;

use std::alloc::Layout;

use libfuzzer_sys::fuzz_target;
use model::{Input, Live, Model};
use vmarena::raw::c;

// The Rust side (the model's own collections) allocates from vmarena too.
#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// A size for a C call: mostly the model's sizes, sometimes 0 or past what can exist.
fn c_size(input: &mut Input) -> Option<usize> {
    Some(match input.byte()? % 32 {
        0 => 0,
        1 => usize::MAX - input.byte()? as usize,
        2 => isize::MAX as usize - input.u16()?,
        _ => input.size()?,
    })
}

/// An alignment for a C call: powers of two from 1 B to 8 MiB, and sometimes anything.
fn c_align(input: &mut Input) -> Option<usize> {
    Some(match input.byte()? % 8 {
        0 => input.u16()?,
        _ => input.align()?,
    })
}

/// Records a new C block (at least 1 byte: `malloc(0)` is served as one) and fills it.
fn adopt(model: &mut Model, ptr: *mut u8, size: usize, align: usize, zeroed: bool, seed: u8) {
    assert!(!ptr.is_null());
    let size = size.max(1);
    assert!(
        c::malloc_usable_size(ptr) >= size,
        "usable size below the request"
    );
    // SAFETY: a fresh block of at least `size` bytes.
    unsafe {
        if zeroed {
            model::check_zero(ptr, size);
        }
        model::fill(ptr, size, seed);
    }
    let layout = Layout::from_size_align(size, align.max(1).next_power_of_two()).unwrap();
    model.insert(Live {
        ptr: ptr as usize,
        layout,
        seed,
    });
}

fn free(model: &mut Model, block: Live) {
    let block = model.remove(block.ptr);
    // SAFETY: a live block of the model, freed once.
    unsafe {
        model::check(
            block.ptr as *const u8,
            block.layout.size(),
            block.layout.size(),
            block.seed,
        );
        vmarena::raw::free(block.ptr as *mut u8);
    }
}

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// A C call's result as the C caller sees it: the pointer, or `Err(errno)` for null. `errno`
/// is cleared first, so a stale value cannot pass.
fn call(f: impl FnOnce() -> *mut u8) -> Result<*mut u8, i32> {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    let p = f();
    if p.is_null() { Err(errno()) } else { Ok(p) }
}

/// What an allocation call must give: a block, or null with `ENOMEM` for a size no allocator
/// can serve.
fn expect_block(result: Result<*mut u8, i32>, size: usize) -> Option<*mut u8> {
    match result {
        Ok(p) => Some(p),
        Err(e) => {
            assert_eq!(e, libc::ENOMEM);
            assert!(size > 1 << 40, "{size} bytes refused");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut model = Model::default();
    let mut seed = 1u8;
    while let Some(op) = input.byte() {
        seed = seed.wrapping_add(1);
        match op % 12 {
            0 | 1 if !model.full() => {
                let Some(size) = c_size(&mut input) else {
                    break;
                };
                if let Some(p) = expect_block(call(|| c::malloc(size)), size) {
                    assert_eq!(p as usize % c::MALLOC_ALIGN, 0);
                    adopt(&mut model, p, size, c::MALLOC_ALIGN, false, seed);
                }
            }
            2 if !model.full() => {
                let (Some(count), Some(size)) = (input.byte(), c_size(&mut input)) else {
                    break;
                };
                let count = count as usize % 17;
                match count.checked_mul(size) {
                    None => assert_eq!(call(|| c::calloc(count, size)), Err(libc::ENOMEM)),
                    Some(total) => {
                        if let Some(p) = expect_block(call(|| c::calloc(count, size)), total) {
                            adopt(&mut model, p, total, c::MALLOC_ALIGN, true, seed);
                        }
                    }
                }
            }
            3 | 4 => {
                let (Some(n), Some(size)) = (input.byte(), c_size(&mut input)) else {
                    break;
                };
                let Some(block) = model.nth(n as usize) else {
                    // realloc(NULL, n) is malloc(n).
                    // SAFETY: null is allowed.
                    if let Some(p) = expect_block(
                        call(|| unsafe { c::realloc(std::ptr::null_mut(), size) }),
                        size,
                    ) {
                        adopt(&mut model, p, size, c::MALLOC_ALIGN, false, seed);
                    }
                    continue;
                };
                let old = model.remove(block.ptr);
                // SAFETY: a live block of the model; on success it is not used again.
                let result = call(|| unsafe { c::realloc(old.ptr as *mut u8, size) });
                match result {
                    Err(0) if size == 0 => {} // realloc(p, 0) frees and returns null
                    Ok(_) if size == 0 => panic!("realloc(p, 0) returned a block"),
                    Ok(p) => {
                        // SAFETY: the new block holds at least the old prefix.
                        unsafe {
                            model::check(
                                p,
                                old.layout.size(),
                                old.layout.size().min(size),
                                old.seed,
                            )
                        };
                        assert_eq!(p as usize % c::MALLOC_ALIGN, 0);
                        adopt(&mut model, p, size, c::MALLOC_ALIGN, false, seed);
                    }
                    Err(e) => {
                        assert_eq!(e, libc::ENOMEM);
                        assert!(size > 1 << 40, "realloc to {size} bytes refused");
                        model.insert(old); // unchanged
                    }
                }
            }
            5 => {
                let (Some(n), Some(count), Some(size)) =
                    (input.byte(), input.byte(), c_size(&mut input))
                else {
                    break;
                };
                let Some(block) = model.nth(n as usize) else {
                    continue;
                };
                let count = count as usize % 9;
                let old = model.remove(block.ptr);
                // SAFETY: as for realloc.
                let total = count.checked_mul(size);
                match call(|| unsafe { c::reallocarray(old.ptr as *mut u8, count, size) }) {
                    Err(0) if total == Some(0) => {} // reallocarray to 0 bytes frees
                    Ok(_) if total == Some(0) => panic!("reallocarray to 0 returned a block"),
                    Ok(p) => {
                        let total = total.expect("an overflowing size was served");
                        // SAFETY: as for realloc.
                        unsafe {
                            model::check(
                                p,
                                old.layout.size(),
                                old.layout.size().min(total),
                                old.seed,
                            )
                        };
                        adopt(&mut model, p, total, c::MALLOC_ALIGN, false, seed);
                    }
                    Err(e) => {
                        assert_eq!(e, libc::ENOMEM);
                        model.insert(old);
                    }
                }
            }
            6 | 7 if !model.full() => {
                let (Some(which), Some(align), Some(size)) =
                    (input.byte(), c_align(&mut input), c_size(&mut input))
                else {
                    break;
                };
                let (result, valid) = match which % 3 {
                    0 => (
                        c::posix_memalign(align, size),
                        align.is_power_of_two() && align % 8 == 0,
                    ),
                    1 => (
                        call(|| c::aligned_alloc(align, size)),
                        align.is_power_of_two(),
                    ),
                    _ => (call(|| c::memalign(align, size)), true),
                };
                if !valid {
                    assert_eq!(result, Err(libc::EINVAL), "alignment {align} accepted");
                    continue;
                }
                let want = align.max(1).next_power_of_two();
                if let Some(p) = expect_block(result, size.saturating_add(want)) {
                    assert_eq!(p as usize % want, 0, "alignment {align} not kept");
                    adopt(&mut model, p, size, want, false, seed);
                }
            }
            8 if !model.full() => {
                let (Some(which), Some(size)) = (input.byte(), c_size(&mut input)) else {
                    break;
                };
                let page = vmarena::raw::page_size();
                let (result, len) = if which % 2 == 0 {
                    (call(|| c::valloc(size)), Some(size))
                } else {
                    (
                        call(|| c::pvalloc(size)),
                        size.max(1).checked_next_multiple_of(page),
                    )
                };
                match (expect_block(result, size), len) {
                    (Some(p), Some(len)) => {
                        assert_eq!(p as usize % page, 0);
                        adopt(&mut model, p, len, page, false, seed);
                    }
                    (Some(_), None) => panic!("pvalloc({size}) cannot be served"),
                    (None, _) => {}
                }
            }
            9 | 10 => {
                let Some(n) = input.byte() else { break };
                if let Some(block) = model.nth(n as usize) {
                    free(&mut model, block);
                }
            }
            11 => {
                model.check_all();
                let info = c::mallinfo();
                let live: usize = model.live_bytes();
                assert!(
                    info.uordblks + info.hblkhd >= live,
                    "mallinfo says {} in use, the model holds {live}",
                    info.uordblks + info.hblkhd
                );
                assert!(info.arena >= info.uordblks);
            }
            _ => {}
        }
    }
    for block in model.drain() {
        // SAFETY: live blocks of the model, freed once.
        unsafe {
            model::check(
                block.ptr as *const u8,
                block.layout.size(),
                block.layout.size(),
                block.seed,
            );
            vmarena::raw::free(block.ptr as *mut u8);
        }
    }
});
