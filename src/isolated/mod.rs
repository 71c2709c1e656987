//! Isolated heaps ([`Heap`], `vmarena::Heap`): a heap of its own that any thread may use, whose
//! memory all goes back at once when it is dropped (mimalloc's `mi_heap_new` and
//! `mi_heap_destroy`).
//!
//! An isolated heap is a thread heap (`heap_core::HeapCore`, the same pages, free lists and
//! refill paths) with an id of its own, behind a mutex: its pages are owned by that id, so its
//! blocks never share a page with another heap's, and a free through the global allocator of
//! one of its blocks is a remote free into its pages like any other. It never takes over pages
//! abandoned by exited threads (their blocks belong to others, and would die with it). Large
//! blocks are linked into a list of the heap's through their regions; one freed through the
//! global allocator is only marked there, and the heap gives it back at its next large
//! allocation or its drop (a free from another thread must not touch the heap's list).
//!
//! This file has the public types and their operations. A heap's descriptor (what its mutex
//! guards) is in `descriptor`; descriptors live in a type-stable pool, like the thread heaps,
//! and the live ones in a registry (`registry`: for `stats()`, counting and `fork`). Lock
//! order: registry, then a heap's mutex; a heap's holder may go on to take the fallback heap's
//! (a thread it starts allocates) and the arena's locks, never the reverse (see `crate::fork`).
//!
//! Layer: the top, beside `global` (nothing but `lib`, `allocator` and `fork` calls it); calls
//! its submodules, `global`, `heap` (`heap_core`, `modes`, `size_class`), `large`, `arena`,
//! `stats`, `os` and `abort`.

mod descriptor;
mod registry;

pub(crate) use registry::{
    fill_stats, lock_for_fork, reset_after_fork_child, set_counting, unlock_after_fork_parent,
};

use core::alloc::Layout;
use core::cell::Cell;

use crate::arena::ARENA;
use crate::arena::large_block::LargeState;
use crate::arena::page::OWNER_FULL_FLAG;
use crate::arena::pagemap::Entry;
use crate::heap::heap_core::AlwaysAlive;
use crate::heap::size_class::{class_for_layout, class_size};
use crate::large;
use crate::stats::Stats;
use crate::sync::atomic::Ordering;
use descriptor::{Guarded, Isolated};

/// An isolated heap: blocks from it never share a page with blocks of any other heap, and
/// dropping it gives all of its memory back at once.
///
/// Any thread may use a `Heap` (it is `Send` and `Sync`; its operations take a mutex of its
/// own, so threads sharing one heap serialise on it; a heap one thread uses at a time is a
/// [`LocalHeap`], without the mutex). `&Heap` implements the `Allocator` trait of the
/// [`allocator-api2`](https://docs.rs/allocator-api2) crate (feature `allocator-api2`, on by
/// default) and, with the `nightly` feature, `core::alloc::Allocator`, so collections can live
/// in it:
///
/// ```
/// use allocator_api2::vec::Vec;
///
/// let heap = vmarena::Heap::new();
/// let mut v = Vec::new_in(&heap);
/// v.extend(0..1000u32);
/// assert_eq!(v.iter().sum::<u32>(), 499_500);
/// drop(v);
/// drop(heap); // every page of the heap goes back to the arena
/// ```
///
/// **Dropping a heap frees every block still allocated from it**, as `mi_heap_destroy` does:
/// using such a block afterwards is a use after free. The borrow checker prevents it for
/// collections that hold `&Heap`; raw pointers from [`Heap::alloc`] are the caller's to watch.
/// An arena per request is one `Heap::new()` and one `drop`.
///
/// Blocks of a heap may also be freed through the global allocator (or C's `free`), from any
/// thread: such frees are remote frees into the heap's pages, taken in at its next refill.
#[derive(Debug)]
pub struct Heap {
    handle: Handle<true>,
}

/// An isolated heap for one thread at a time: a [`Heap`] without the mutex, so its malloc and
/// free cost about what the global allocator's do. It is `Send` (it may move to another
/// thread, and be used there) but not `Sync`: `&LocalHeap`, and so a collection allocating
/// from it, stays on one thread. Other threads may still free its blocks through the global
/// allocator (remote frees, as for any heap).
///
/// ```
/// let heap = vmarena::LocalHeap::new();
/// let mut v = allocator_api2::vec::Vec::new_in(&heap);
/// v.extend_from_slice(b"per-thread scratch");
/// assert_eq!(v.len(), 18);
/// drop(v);
/// drop(heap);
/// ```
///
/// Everything said of [`Heap`] (pages of its own, dropping frees every block) holds here.
#[derive(Debug)]
pub struct LocalHeap {
    handle: Handle<false>,
    /// Not `Sync`: the operations assume one thread at a time.
    _not_sync: core::marker::PhantomData<Cell<()>>,
}

/// The operations of both kinds of heap: with `LOCKED`, under the heap's mutex.
#[derive(Debug)]
struct Handle<const LOCKED: bool> {
    inner: &'static Isolated,
}

/// Access to a heap's guarded state: the mutex guard, or (unlocked heaps) a plain reference.
enum Access<'a> {
    Locked(crate::sync::mutex::MutexGuard<'a, Guarded>),
    Local(&'a Guarded),
}

impl core::ops::Deref for Access<'_> {
    type Target = Guarded;
    fn deref(&self) -> &Guarded {
        match self {
            Access::Locked(guard) => guard,
            Access::Local(guarded) => guarded,
        }
    }
}

impl<const LOCKED: bool> Handle<LOCKED> {
    fn try_new() -> Option<Handle<LOCKED>> {
        let inner = registry::register(LOCKED)?;
        let id = crate::heap::heap_core::new_heap_id();
        inner.guarded.lock().heap.start_isolated(id);
        // Relaxed: the id reaches other threads with the heap itself (their own sync).
        inner.id.store(id, Ordering::Relaxed);
        Some(Handle { inner })
    }

    fn access(&self) -> Access<'_> {
        if LOCKED {
            Access::Locked(self.inner.guarded.lock())
        } else {
            // SAFETY: an unlocked heap is a `LocalHeap`, which is not `Sync`: only the thread
            // that holds it reaches it, one operation at a time. (Its mutex is taken only
            // when it is created, before anyone else has it.)
            Access::Local(unsafe { &*self.inner.guarded.data_ptr() })
        }
    }

    fn id(&self) -> usize {
        // Relaxed: fixed while the heap is live (see `try_new`).
        self.inner.id.load(Ordering::Relaxed)
    }

    fn alloc<const ZERO: bool>(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if size == 0 {
            return dangling(layout);
        }
        let guarded = self.access();
        if let Some(class) = class_for_layout(size, align) {
            return guarded.heap.alloc::<AlwaysAlive, ZERO, false>(class, size);
        }
        guarded.release_freed_large();
        match large::alloc_block(size, align, ZERO) {
            Some(region) => {
                guarded.link_large(region, self.id());
                guarded.heap.counters.on_alloc(size);
                region.start()
            }
            None => crate::os::out_of_memory(),
        }
    }

    /// # Safety
    /// As for [`Heap::dealloc`].
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let id = self.id();
        match ARENA.lookup(ptr as usize) {
            Entry::Page(page) => {
                // Relaxed: a page holding a live block of ours stays ours (see `Page`).
                if page.owner.load(Ordering::Relaxed) & !OWNER_FULL_FLAG == id {
                    let guarded = self.access();
                    // SAFETY: a live block of one of our pages, given up by the caller.
                    unsafe {
                        guarded
                            .heap
                            .free::<AlwaysAlive, false>(page, ptr.cast(), layout.size())
                    };
                    return;
                }
            }
            Entry::Large(region) => {
                if region.large.heap_id() == id {
                    let guarded = self.access();
                    // Freed through the global allocator already: a double free.
                    large::check_live(region, ptr);
                    guarded.unlink_large(region);
                    let requested = large::release(region, ptr, LargeState::Live);
                    guarded.heap.counters.on_free(requested);
                    return;
                }
            }
            Entry::None => {}
        }
        // Not ours: another heap's, the global allocator's, or nobody's (which aborts).
        // SAFETY: forwarded from the caller.
        unsafe { crate::global::free(ptr, layout.size()) }
    }

    /// # Safety
    /// As for [`Heap::realloc`].
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_size, align) = (layout.size(), layout.align());
        // SAFETY: the caller promises a valid size for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        if old_size == 0 {
            return self.alloc::<false>(new_layout);
        }
        match class_for_layout(old_size, align) {
            Some(class) => {
                let usable = class_size(class);
                if new_size <= usable && new_size >= usable / 2 && new_size > 0 {
                    self.access().heap.counters.on_resize(old_size, new_size);
                    return ptr;
                }
            }
            None => {
                if let Some(moved) = self.resize_large(ptr, new_size, align) {
                    return moved;
                }
            }
        }
        let new = self.alloc::<false>(new_layout);
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct (a zero-sized new block is dangling
            // and receives nothing); we copy what both can hold.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, old_size.min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }

    /// Resizes or moves a large block of ours without copying, if the arena can.
    fn resize_large(&self, ptr: *mut u8, new_size: usize, align: usize) -> Option<*mut u8> {
        let region = ARENA.large_region(ptr)?;
        if region.large.heap_id() != self.id() {
            return None;
        }
        let guarded = self.access();
        large::check_live(region, ptr);
        // Off the list while the arena may move the block to another region.
        guarded.unlink_large(region);
        match large::resize(region, ptr, new_size, align, guarded.heap.tally()) {
            Some((moved, old_requested)) => {
                let now = ARENA.large_region(moved).unwrap_or(region);
                guarded.link_large(now, self.id());
                guarded.heap.counters.on_resize(old_requested, new_size);
                Some(moved)
            }
            None => {
                guarded.link_large(region, self.id());
                None
            }
        }
    }

    fn stats(&self) -> Stats {
        let guarded = self.access();
        let mut stats = Stats::default();
        let (bytes, pages) = guarded.heap.usage();
        stats.bytes_in_use = bytes;
        stats.pages_in_use = pages;
        // SAFETY: our list of large blocks, under our access; the walk changes nothing.
        for region in unsafe { guarded.large.iter() } {
            // A block freed elsewhere is not in use.
            if region.large.state() != LargeState::Live {
                continue;
            }
            stats.large_regions += 1;
            stats.large_bytes += region.len();
            stats.bytes_in_use += region.large.requested();
        }
        if crate::heap::modes::tracking_requested() {
            stats.bytes_requested = Some(guarded.heap.counters.net_bytes());
        }
        stats
    }
}

impl<const LOCKED: bool> Drop for Handle<LOCKED> {
    /// Gives every page and large block of the heap back to the arena, with whatever blocks
    /// are still allocated in them (see [`Heap`]).
    fn drop(&mut self) {
        let inner = self.inner;
        {
            let guarded = self.access();
            guarded.heap.discard_all();
            while let Some(region) = guarded.large.first() {
                guarded.unlink_large(region);
                // Live, or freed through the global allocator (`HeapFreed`): either way ours.
                large::release(region, region.start(), region.large.state());
            }
            // Every block died: count them freed, so the process's figures balance.
            let counters = &guarded.heap.counters;
            counters.count_all_freed();
            counters.fold_into(&crate::heap::counters::ORPHAN_COUNTERS);
        }
        // SAFETY: emptied and folded above; the handle, the only way to the heap, is going.
        unsafe { registry::unregister(inner) };
    }
}

/// The public operations, the same for both kinds of heap.
macro_rules! heap_api {
    ($ty:ident, $locked:literal, $init:expr) => {
        impl $ty {
            /// A new, empty heap. Costs a mutex round trip on a shared registry (and, rarely,
            /// mapping a metadata chunk); no memory is taken from the arena until the first
            /// allocation.
            ///
            /// # Panics
            /// If the few kilobytes of metadata for the heap cannot be mapped (`try_new`
            /// returns `None` instead).
            pub fn new() -> $ty {
                $ty::try_new().expect("vmarena: out of memory for a new heap")
            }

            /// A new, empty heap; `None` if the metadata for it cannot be mapped.
            pub fn try_new() -> Option<$ty> {
                let init: fn(Handle<$locked>) -> $ty = $init;
                Handle::try_new().map(init)
            }

            /// Allocates a block for `layout` (zero-sized layouts get a dangling, aligned
            /// pointer and take no memory); null if memory ran out or the layout is
            /// impossible.
            pub fn alloc(&self, layout: Layout) -> *mut u8 {
                self.handle.alloc::<false>(layout)
            }

            /// As `alloc`, with the block's bytes zero.
            pub fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                self.handle.alloc::<true>(layout)
            }

            /// Frees a block of this heap.
            ///
            /// # Safety
            /// `ptr` was returned by this heap's `alloc`, `alloc_zeroed` or `realloc` for
            /// `layout` (or, after `realloc`, for its new size), and is not used afterwards. A
            /// block of another heap, or of the global allocator, is freed where it belongs;
            /// a pointer vmarena never handed out aborts with its address.
            pub unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: forwarded from the caller.
                unsafe { self.handle.dealloc(ptr, layout) }
            }

            /// Resizes a block of this heap to `new_size` bytes, in place where it fits, else
            /// by moving it (within this heap); null if memory ran out (the old block is then
            /// untouched).
            ///
            /// # Safety
            /// As for `dealloc`; `new_size`, rounded up to `layout.align()`, does not overflow
            /// `isize`.
            pub unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                // SAFETY: forwarded from the caller.
                unsafe { self.handle.realloc(ptr, layout, new_size) }
            }

            /// The bytes usable in the block at `ptr` (see [`crate::usable_size`]).
            pub fn usable_size(&self, ptr: *const u8) -> Option<usize> {
                crate::global::usable_size(ptr)
            }

            /// This heap's figures: bytes in live blocks (`bytes_in_use`, by block size; less
            /// the remote frees not taken in yet), pages per kind, large blocks and their
            /// bytes, and (while requested bytes are tracked) the bytes asked for and not
            /// freed through it. Other fields are zero.
            pub fn stats(&self) -> Stats {
                self.handle.stats()
            }
        }

        impl Default for $ty {
            /// `new()`.
            fn default() -> $ty {
                $ty::new()
            }
        }
    };
}

heap_api!(Heap, true, |handle| Heap { handle });
heap_api!(LocalHeap, false, |handle| LocalHeap {
    handle,
    _not_sync: core::marker::PhantomData,
});

/// A non-null, aligned pointer that is no block (for zero-sized layouts).
fn dangling(layout: Layout) -> *mut u8 {
    core::ptr::without_provenance_mut(layout.align())
}
