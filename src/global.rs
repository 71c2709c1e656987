//! [`VmArena`], the `GlobalAlloc` implementation, and the free/realloc routing shared with the
//! public helpers.
//!
//! Layer: the top; calls `heap` (small blocks, and large ones through the thread's cache),
//! `arena` (page-map lookups) and `abort`. `lib`, `allocator`, `isolated` and `raw` call it.

use core::alloc::{GlobalAlloc, Layout};

use crate::arena::ARENA;
use crate::arena::pagemap::Entry;
use crate::heap::size_class::{class_for_layout, class_size};
use crate::{abort, heap};

/// The vmarena allocator. Install it with
///
/// ```
/// #[global_allocator]
/// static GLOBAL: vmarena::VmArena = vmarena::VmArena;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct VmArena;

/// Allocates for a layout: a small block from the thread's heap or a large block.
#[inline(always)]
pub(crate) fn alloc<const ZERO: bool>(size: usize, align: usize) -> *mut u8 {
    match class_for_layout(size, align) {
        Some(class) => heap::alloc::<ZERO, false>(class, size),
        None => heap::alloc_large(size, align, ZERO),
    }
}

/// Allocates for a C caller, which will free without a size: requested bytes are counted as
/// usable bytes (the block's whole class), so the free can count the same.
#[inline(always)]
pub(crate) fn alloc_usable<const ZERO: bool>(size: usize, align: usize) -> *mut u8 {
    match class_for_layout(size, align) {
        Some(class) => heap::alloc::<ZERO, true>(class, size),
        None => heap::alloc_large(size, align, ZERO),
    }
}

/// Frees a block; `requested` is the size asked for (used for statistics only).
///
/// # Safety
/// `ptr` is a live block from this allocator (checked as far as cheaply possible: a pointer the
/// arena does not know aborts with a message).
#[inline(always)]
pub(crate) unsafe fn free(ptr: *mut u8, requested: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { free_counting::<false>(ptr, requested) }
}

/// [`free`], counting `requested`, or with `USABLE` the block's whole size (C frees).
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub(crate) unsafe fn free_counting<const USABLE: bool>(ptr: *mut u8, requested: usize) {
    match ARENA.lookup_page(ptr as usize) {
        // SAFETY: forwarded from the caller.
        Some(page) => unsafe { heap::free::<USABLE>(page, ptr, requested) },
        None => free_outside_pages(ptr),
    }
}

/// A free whose pointer is not in small-object pages: a large block, null (C's `free(NULL)`,
/// ignored), or not ours at all.
#[inline(never)]
pub(crate) fn free_outside_pages(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    match ARENA.lookup(ptr as usize) {
        Entry::Large(region) => heap::free_large(region, ptr),
        _ => abort::invalid_free(ptr),
    }
}

/// True if a block of `usable` bytes may serve a resize to `new_size` where it is: it holds
/// the new size, and at least half of it stays in use (so a shrink gives memory back).
#[inline]
pub(crate) fn fits_in_place(usable: usize, new_size: usize) -> bool {
    new_size <= usable && new_size >= usable / 2
}

/// Resizes a block allocated for `layout` to `new_size` bytes, in place where it fits.
/// Requested bytes are counted as for [`alloc`], or with `USABLE` as for [`alloc_usable`].
///
/// # Safety
/// As for `GlobalAlloc::realloc`.
pub(crate) unsafe fn realloc<const USABLE: bool>(
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> *mut u8 {
    let (old_size, align) = (layout.size(), layout.align());
    match class_for_layout(old_size, align) {
        // The layout tells us the block's class without a page-map lookup. (A block that was
        // shrunk in place may be larger than its layout says; that is only a missed chance.)
        Some(class) => {
            if fits_in_place(class_size(class), new_size) {
                if !USABLE {
                    heap::record_resize_in_place(ptr, old_size, new_size);
                }
                return ptr;
            }
        }
        None => match ARENA.lookup(ptr as usize) {
            Entry::Large(region) => {
                if let Some(moved) = heap::realloc_large(region, ptr, new_size, align) {
                    return moved;
                }
            }
            _ => abort::invalid_free(ptr),
        },
    }
    // SAFETY: forwarded from the caller.
    unsafe { realloc_by_copy::<USABLE>(ptr, old_size, new_size, align) }
}

/// Moves the block at `ptr` (`old_size` bytes of it to keep) into a new block of `new_size`
/// bytes aligned to `align`, and frees it. Null if the new block cannot be had; the old one is
/// then unchanged.
///
/// # Safety
/// `ptr` is a live block of at least `old_size` bytes, given up on success.
pub(crate) unsafe fn realloc_by_copy<const USABLE: bool>(
    ptr: *mut u8,
    old_size: usize,
    new_size: usize,
    align: usize,
) -> *mut u8 {
    let new = if USABLE {
        alloc_usable::<false>(new_size, align)
    } else {
        alloc::<false>(new_size, align)
    };
    if !new.is_null() {
        // SAFETY: both blocks are live and distinct; we copy what both can hold.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr, new, old_size.min(new_size));
            free_counting::<USABLE>(ptr, old_size);
        }
    }
    new
}

// Out of line, like every public entry point (`raw`, `raw::c`): the statics the fast paths
// read (the page map in `ARENA`, the size-class table) then stay private to this crate, and
// rustc addresses a private static directly (`lea`, RIP-relative). A static that an
// inlinable public function names is exported, and rustc reaches an exported static through
// the GOT (a plain GOTPCREL relocation, which the linker cannot relax), from this crate's
// code as well: one more load at the head of every free's dependency chain. The call costs
// nothing through `&dyn GlobalAlloc` (the vtable points here); `#[global_allocator]`'s
// `__rust_alloc` reaches it by a jump through the GOT, off the data's dependency chain (a
// program using mimalloc pays the same to reach its C entry points).
//
// SAFETY: every block returned is at least `layout.size()` bytes, aligned to `layout.align()`
// (size classes are multiples of the alignment inside page-aligned pages; large blocks are
// placed at aligned addresses), and never overlaps another live block. Nothing here unwinds.
unsafe impl GlobalAlloc for VmArena {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc::<false>(layout.size(), layout.align())
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc::<true>(layout.size(), layout.align())
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block we allocated with this layout.
        unsafe { free(ptr, layout.size()) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { realloc::<false>(ptr, layout, new_size) }
    }
}

/// The bytes usable in the block at `ptr`, or `None` if vmarena did not hand it out (see
/// `crate::usable_size`).
pub(crate) fn usable_size(ptr: *const u8) -> Option<usize> {
    ARENA.usable_size(ptr as usize, heap::tally())
}
