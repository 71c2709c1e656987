//! Entry points for foreign-function layers (the C library in `capi/`): allocation without a
//! `Layout` on free and realloc, as C's `free(ptr)` and `realloc(ptr, n)` need. Rust code should
//! use [`crate::VmArena`] through `GlobalAlloc`.
//!
//! Without a layout, the block's size comes from its page descriptor (or its large region),
//! which the free path reads anyway: one page-map lookup, no lock, no speculation, no shared
//! counter. The caller owns the block, so its page's block size (and a large block's length)
//! cannot change under it.
//!
//! Layer: the top, beside `global`; calls `global`, `heap` (`alloc`, `page_blocks::is_carved_block`,
//! `size_class`), `arena` (page-map lookups, the OS back end), `os`, `options` and `abort`.

pub mod c;
pub mod exports;

use crate::arena::ARENA;
use crate::arena::pagemap::Entry;
use crate::heap::page_blocks::is_carved_block;
use crate::heap::size_class::{SMALL_16_MAX, class_for_small_16};
use crate::sync::atomic::Ordering;
use crate::{abort, global, heap};

/// Allocates `size` bytes aligned to `align` (a power of two), zeroed if `zeroed`. Null (with
/// `errno = ENOMEM`) if the request cannot be served. `size` 0 is served as 1 byte, so every call returns a distinct
/// pointer.
///
/// Out of line, like every public entry point of vmarena's: see `src/global.rs` on why the
/// hot statics must stay private to the crate. The C functions (`c::malloc`, ...) have
/// this function's body inlined with their constant `align` and `zeroed`.
///
/// ```
/// use vmarena::raw;
///
/// let p = raw::alloc(100, 64, true);
/// assert!(!p.is_null() && p as usize % 64 == 0);
/// assert!(raw::usable_size(p) >= 100);
/// // SAFETY: a live block of at least 100 bytes, zeroed, freed once and not used after.
/// unsafe {
///     assert_eq!(*p.add(99), 0);
///     let p = raw::realloc(p, 10_000, 64);
///     assert!(raw::usable_size(p) >= 10_000);
///     raw::free(p);
/// }
/// ```
#[inline(never)]
pub fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    alloc_inline(size, align, zeroed)
}

/// [`alloc`]'s body, for the C functions (which give it constant arguments).
#[inline(always)]
pub(crate) fn alloc_inline(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    // C frees come without a size, so requested bytes are counted as usable bytes.
    if align <= 16 && size <= SMALL_16_MAX {
        // The common case first, where nothing can fail: one table load gives the class.
        let class = class_for_small_16(size);
        // SAFETY: the table's classes are of 16 bytes and more, never class 0 (which lets the
        // pop skip its test for the class without a free marker).
        unsafe { core::hint::assert_unchecked(class != 0) };
        return if zeroed {
            // At least one byte, as for every other size: `calloc(0, n)` reads as zero too.
            heap::alloc::<true, true>(class, size.max(1))
        } else {
            heap::alloc::<false, true>(class, size)
        };
    }
    alloc_beyond_small(size, align, zeroed)
}

/// [`alloc`] above the sizes one table load classifies, or with a larger alignment: a call of
/// its own, so the fast path it is reached from saves no registers for it.
#[inline(never)]
fn alloc_beyond_small(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if !align.is_power_of_two() || size > isize::MAX as usize - (align - 1) {
        return crate::os::out_of_memory();
    }
    let size = size.max(1);
    if zeroed {
        global::alloc_usable::<true>(size, align)
    } else {
        global::alloc_usable::<false>(size, align)
    }
}

/// Frees a block from [`alloc`] (or any other vmarena function). Null is ignored. Aborts with
/// a message on a pointer vmarena did not hand out, or on a detected double free.
///
/// # Safety
/// `ptr` is null or a live block from vmarena, not used after this call.
#[inline(never)]
pub unsafe fn free(ptr: *mut u8) {
    // Null needs no test of its own: no page holds address 0, so it takes the large path,
    // which ignores it.
    // SAFETY: forwarded from the caller; the free validates the pointer.
    unsafe { global::free_counting::<true>(ptr, 0) }
}

/// Resizes a block (C `realloc` without the `NULL` and zero-size special cases, which the
/// caller handles): the contents up to the smaller size survive; the new block is aligned to
/// `align`. Null (with `errno = ENOMEM`) if it cannot be served (then the old block is
/// unchanged).
///
/// # Safety
/// `ptr` is a live block from vmarena. Its own alignment may be larger than `align` (C's
/// `realloc` passes malloc's 16 for a `memalign` block): the old block is found by the page
/// map and its usable size, never by its alignment; `align` is only the new block's.
pub unsafe fn realloc(ptr: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    if new_size > isize::MAX as usize - (align - 1) {
        return crate::os::out_of_memory();
    }
    let new_size = new_size.max(1);
    match ARENA.lookup(ptr as usize) {
        // In place is decided from the block's own size, never from a class derived from its
        // size and `align`: a Rust block of 24 bytes (8-aligned) is a class of its own, where
        // 24 bytes at 16-byte alignment would be 32.
        Entry::Page(page) if is_carved_block(page, ptr as usize) => {
            // Relaxed: fixed while the caller holds a block of the page.
            let old = page.block_size.load(Ordering::Relaxed);
            if global::fits_in_place(old, new_size) && ptr as usize % align == 0 {
                return ptr;
            }
            // SAFETY: a live block of `old` bytes (caller), given up on success.
            unsafe { global::realloc_by_copy::<true>(ptr, old, new_size, align) }
        }
        Entry::Large(region) => {
            // Aborts unless `ptr` is the live block's start, before anything is copied.
            if let Some(moved) = heap::realloc_large(region, ptr, new_size, align) {
                return moved;
            }
            // SAFETY: a live large block (checked above) of `len` bytes, given up on success.
            unsafe { global::realloc_by_copy::<true>(ptr, region.len(), new_size, align) }
        }
        _ => abort::invalid_free(ptr),
    }
}

/// The usable size of the block at `ptr` (C `malloc_usable_size`); 0 for null. Aborts on a
/// pointer that is not the start of a live block of vmarena's.
pub fn usable_size(ptr: *mut u8) -> usize {
    if ptr.is_null() {
        return 0;
    }
    match ARENA.lookup(ptr as usize) {
        Entry::Page(page) if is_carved_block(page, ptr as usize) => {
            // Relaxed: fixed while the caller holds a block of the page.
            page.block_size.load(Ordering::Relaxed)
        }
        // The caller owns the block, so no one else resizes or frees it meanwhile.
        Entry::Large(region) if region.start() == ptr => region.len(),
        _ => abort::invalid_free(ptr),
    }
}

/// The OS page size (for `valloc` and `pvalloc`).
pub fn page_size() -> usize {
    use crate::os::Os;
    ARENA.os().page_size()
}

/// Reads the options (`VMARENA_*`), for a library that is loaded before its first
/// allocation. (The `fork` handlers are installed when vmarena is loaded, by a constructor.)
pub fn init() {
    crate::options::read_once();
}

/// True if `VMARENA_VERIFY=1`: the C library then says on stderr that it is the allocator.
pub fn verify_requested() -> bool {
    crate::options::verify()
}
