//! The `Allocator` trait for [`Heap`] and [`LocalHeap`] (so also `&Heap`, `&LocalHeap`) and
//! [`VmArena`]: allocator-api2's
//! (stable Rust, feature `allocator-api2`) and, with the `nightly` feature, `core`'s. Both
//! traits have the same shape, so one macro writes both impls over the raw operations below.
//!
//! Layer: the top, beside `global`; calls `global` (alloc, free, realloc), `isolated`'s heaps
//! and `crate::usable_size`. Nothing calls it.

#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
use core::alloc::Layout;
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
use core::ptr::NonNull;

#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
use crate::{Heap, LocalHeap, VmArena};

/// The operations an `Allocator` impl is written over.
///
/// # Safety
/// As `GlobalAlloc`: blocks are valid for their layout until freed, and `dealloc`/`realloc`
/// take only blocks of the same allocator with their layout.
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
unsafe trait RawAllocator {
    fn raw_alloc(&self, layout: Layout, zeroed: bool) -> *mut u8;
    /// # Safety
    /// `ptr` is a live block of this allocator for `layout`.
    unsafe fn raw_dealloc(&self, ptr: *mut u8, layout: Layout);
    /// # Safety
    /// As for `raw_dealloc`; `new_size` fits `isize` at `layout.align()`.
    unsafe fn raw_realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8;
}

/// `RawAllocator` for a heap type, over its inherent operations.
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
macro_rules! raw_heap {
    ($ty:ty) => {
        // SAFETY: a heap's operations keep these promises (see `crate::isolated`).
        unsafe impl RawAllocator for $ty {
            fn raw_alloc(&self, layout: Layout, zeroed: bool) -> *mut u8 {
                if zeroed {
                    self.alloc_zeroed(layout)
                } else {
                    self.alloc(layout)
                }
            }
            unsafe fn raw_dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: forwarded from the caller.
                unsafe { self.dealloc(ptr, layout) }
            }
            unsafe fn raw_realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                // SAFETY: forwarded from the caller.
                unsafe { self.realloc(ptr, layout, new_size) }
            }
        }
    };
}
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
raw_heap!(Heap);
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
raw_heap!(LocalHeap);

// SAFETY: the global allocator's operations, which keep `GlobalAlloc`'s promises; zero sizes
// (which `GlobalAlloc` never sees) are answered here without reaching them.
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
unsafe impl RawAllocator for VmArena {
    fn raw_alloc(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        if layout.size() == 0 {
            return core::ptr::without_provenance_mut(layout.align());
        }
        if zeroed {
            crate::global::alloc::<true>(layout.size(), layout.align())
        } else {
            crate::global::alloc::<false>(layout.size(), layout.align())
        }
    }
    unsafe fn raw_dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: forwarded from the caller.
            unsafe { crate::global::free(ptr, layout.size()) }
        }
    }
    unsafe fn raw_realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() == 0 || new_size == 0 {
            // SAFETY: the caller promises a valid size for this alignment.
            let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let block = self.raw_alloc(new, false);
            if !block.is_null() {
                // SAFETY: forwarded from the caller (a zero-sized block is not freed).
                unsafe { self.raw_dealloc(ptr, layout) };
            }
            return block;
        }
        // SAFETY: forwarded from the caller.
        unsafe { crate::global::realloc::<false>(ptr, layout, new_size) }
    }
}

/// A block as the trait returns it: the pointer and the layout's size (vmarena may have more
/// room, which [`crate::usable_size`] tells).
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
fn block(ptr: *mut u8, size: usize) -> Option<NonNull<[u8]>> {
    NonNull::new(core::ptr::slice_from_raw_parts_mut(ptr, size))
}

/// Grows or shrinks: in place or by `realloc` when the alignment stays, else a new block,
/// a copy and a free.
///
/// # Safety
/// As for the trait's `grow` and `shrink`.
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
unsafe fn resize<A: RawAllocator>(
    a: &A,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
    zeroed: bool,
) -> Option<NonNull<[u8]>> {
    let moved = if old.align() == new.align() {
        // SAFETY: the caller passes a live block of `a` with its layout.
        unsafe { a.raw_realloc(ptr.as_ptr(), old, new.size()) }
    } else {
        let fresh = a.raw_alloc(new, false);
        if !fresh.is_null() {
            // SAFETY: distinct live blocks; we copy what both hold, then free the old one.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr.as_ptr(), fresh, old.size().min(new.size()));
                a.raw_dealloc(ptr.as_ptr(), old);
            }
        }
        fresh
    };
    if zeroed && !moved.is_null() && new.size() > old.size() {
        // SAFETY: the block holds `new.size()` bytes; the grown tail is ours to zero.
        unsafe {
            moved
                .add(old.size())
                .write_bytes(0, new.size() - old.size())
        };
    }
    block(moved, new.size())
}

/// `unsafe impl $trait for $ty`, with `$error` as the trait's error type.
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
macro_rules! allocator_impl {
    ($trait:path, $error:path, $ty:ty) => {
        // SAFETY: blocks stay valid until freed or (for a `Heap`) until the heap is dropped,
        // which needs every borrow of it gone; `RawAllocator` keeps `GlobalAlloc`'s promises.
        unsafe impl $trait for $ty {
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                block(self.raw_alloc(layout, false), layout.size()).ok_or($error)
            }

            fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                block(self.raw_alloc(layout, true), layout.size()).ok_or($error)
            }

            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: forwarded from the caller.
                unsafe { self.raw_dealloc(ptr.as_ptr(), layout) }
            }

            unsafe fn grow(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: forwarded from the caller.
                unsafe { resize(self, ptr, old, new, false) }.ok_or($error)
            }

            unsafe fn grow_zeroed(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: forwarded from the caller.
                unsafe { resize(self, ptr, old, new, true) }.ok_or($error)
            }

            unsafe fn shrink(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                // SAFETY: forwarded from the caller.
                unsafe { resize(self, ptr, old, new, false) }.ok_or($error)
            }
        }
    };
}

#[cfg(feature = "allocator-api2")]
allocator_impl!(
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError,
    Heap
);
#[cfg(feature = "allocator-api2")]
allocator_impl!(
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError,
    LocalHeap
);
#[cfg(feature = "allocator-api2")]
allocator_impl!(
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError,
    VmArena
);
#[cfg(feature = "nightly")]
allocator_impl!(core::alloc::Allocator, core::alloc::AllocError, Heap);
#[cfg(feature = "nightly")]
allocator_impl!(core::alloc::Allocator, core::alloc::AllocError, LocalHeap);
#[cfg(feature = "nightly")]
allocator_impl!(core::alloc::Allocator, core::alloc::AllocError, VmArena);
