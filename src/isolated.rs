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
//! Descriptors live in a type-stable pool, like the thread heaps, and the live ones are in a
//! registry (for `stats()` and `fork`). This module sits beside `global` (it may call `global`,
//! `heap` and `large`; nothing but `lib`, `allocator` and `fork` calls it). Lock order: registry, then a heap's mutex; a heap's
//! holder may go on to take the fallback heap's (a thread it starts allocates) and the arena's
//! locks, never the reverse (see `crate::fork`).
//!
//! Layer: the top, beside `global`; calls `global`, `heap` (`heap_core`, `modes`,
//! `size_class`), `large`, `arena`, `list`, `sync::mutex`, `stats`, `os` and `abort`.

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::null_mut;

use crate::arena::ARENA;
use crate::arena::large_block::LargeState;
use crate::arena::meta::{MetaChunks, Pool, Pooled};
use crate::arena::page::OWNER_FULL_FLAG;
use crate::arena::pagemap::Entry;
use crate::arena::region::Region;
use crate::heap::heap_core;
use crate::heap::heap_core::AlwaysAlive;
use crate::heap::size_class::{class_for_layout, class_size};
use crate::large;
use crate::list::{AtomicLinks, List, atomic_links};
use crate::stats::Stats;
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use crate::sync::mutex::Mutex;

/// What the heap's mutex guards.
pub(crate) struct Guarded {
    heap: heap_core::HeapCore,
    /// The heap's large blocks (linked through `Region::large.heap_links`).
    large: List<LargeLinks>,
}

// SAFETY: used only under the mutex (or by the one thread that owns the descriptor while it
// is out of the registry); the regions it points to are descriptors, never freed.
unsafe impl Send for Guarded {}

/// An isolated heap's descriptor.
pub(crate) struct Isolated {
    guarded: Mutex<Guarded>,
    /// False for a [`LocalHeap`], whose mutex is not used.
    locked: AtomicBool,
    /// The heap's id (`heap_core::HeapCore::id`), readable without the mutex to route frees.
    id: AtomicUsize,
    /// Links in the registry of live heaps, under the registry lock.
    links: AtomicLinks<Isolated>,
    /// The link in the pool of unused descriptors (`arena::meta::Pool`).
    pool_next: AtomicPtr<Isolated>,
}

atomic_links!(
    /// A descriptor's links for the registry's list (pool descriptors are never freed).
    RegistryLinks: Isolated,
    links
);

atomic_links!(
    /// A large block's links in its isolated heap's list (region descriptors are never freed).
    LargeLinks: Region,
    large.heap_links
);

impl Isolated {
    /// False for a [`LocalHeap`]: `fork` leaves it alone (only its thread can reach it, and
    /// that thread is not the child's).
    fn is_locked(&self) -> bool {
        // Relaxed: written under the registry lock, which the callers hold.
        self.locked.load(Ordering::Relaxed)
    }
}

impl Pooled for Isolated {
    unsafe fn init(slot: *mut Self) {
        // SAFETY: the pool hands us uninitialised memory for one descriptor.
        unsafe {
            slot.write(Isolated {
                guarded: Mutex::new(Guarded {
                    heap: heap_core::HeapCore::new(),
                    large: List::new(),
                }),
                locked: AtomicBool::new(true),
                id: AtomicUsize::new(0),
                links: AtomicLinks::new(),
                pool_next: AtomicPtr::new(null_mut()),
            })
        }
    }

    fn pool_link(&self) -> &AtomicPtr<Self> {
        &self.pool_next
    }
}

struct Registry {
    live: List<RegistryLinks>,
    pool: Pool<Isolated>,
    chunks: MetaChunks,
}

// SAFETY: pointers to pool descriptors (never freed), used under the registry's mutex.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: List::new(),
    pool: Pool::new(),
    chunks: MetaChunks::new(),
});

impl Registry {
    fn live(&self) -> impl Iterator<Item = &'static Isolated> + '_ {
        // SAFETY: under the registry mutex, which the caller holds while it borrows the
        // registry (the walk borrows it too); walkers change no links.
        unsafe { self.live.iter() }
    }
}

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

impl core::fmt::Debug for Isolated {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Relaxed: an id, fixed while the heap is live.
        write!(f, "Heap#{}", self.id.load(Ordering::Relaxed))
    }
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
        let inner = {
            let mut registry = REGISTRY.lock();
            let Registry { pool, chunks, .. } = &mut *registry;
            let inner = pool.take(chunks, ARENA.os())?;
            // Relaxed: under the registry lock.
            inner.locked.store(LOCKED, Ordering::Relaxed);
            // SAFETY: under the registry lock; a descriptor from the pool is on no list.
            unsafe { registry.live.push_front(inner) };
            inner
        };
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
        let mut registry = REGISTRY.lock();
        // SAFETY: under the registry lock; a live descriptor is on the list.
        unsafe { registry.live.remove(inner) };
        // SAFETY: off the registry (whose walkers, `stats()` and `set_counting`, read and
        // write its counters), and being dropped: nothing reaches the heap any more, and no
        // reference to its fields is alive.
        unsafe { (*inner.guarded.data_ptr()).heap.rebuild() };
        // Relaxed: under the registry lock.
        inner.id.store(0, Ordering::Relaxed);
        registry.pool.give(inner);
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

impl Guarded {
    /// Puts a large block of ours at the head of the heap's list.
    fn link_large(&self, region: &'static Region, id: usize) {
        // Written before the block is handed out (see `large::belongs_to_a_heap`).
        region.large.set_heap_id(id);
        // SAFETY: our list, under our access; a fresh large block is on no list.
        unsafe { self.large.push_front(region) };
    }

    /// Gives back the heap's large blocks that were freed through the global allocator.
    fn release_freed_large(&self) {
        // SAFETY: our list, under our access; the walk unlinks only the block it was given.
        for region in unsafe { self.large.iter() } {
            // The state moves on from `HeapFreed` in the free below (AcqRel: the marking
            // free's last use of the block happens before we give its memory away).
            if region.large.state() == LargeState::HeapFreed {
                self.unlink_large(region);
                large::release(region, region.start(), LargeState::HeapFreed);
            }
        }
    }

    /// Takes a large block off the heap's list, leaving its region as a thread heap's.
    fn unlink_large(&self, region: &Region) {
        // SAFETY: our list, under our access; callers pass blocks of this heap, on it.
        unsafe { self.large.remove(region) };
        region.large.set_heap_id(0);
    }
}

/// A non-null, aligned pointer that is no block (for zero-sized layouts).
fn dangling(layout: Layout) -> *mut u8 {
    core::ptr::without_provenance_mut(layout.align())
}

/// Adds every live isolated heap's counters into `stats`.
pub(crate) fn fill_stats(stats: &mut Stats) {
    let registry = REGISTRY.lock();
    for heap in registry.live() {
        // SAFETY: counters are atomics, read by any thread (statistics); the heap itself is
        // not touched.
        let counters = unsafe { &registry_heap(heap).counters };
        counters.add_to(stats);
    }
}

/// Turns counting on or off in every live isolated heap (see `track_requested_bytes`).
pub(crate) fn set_counting(on: bool) {
    let registry = REGISTRY.lock();
    for heap in registry.live() {
        // SAFETY: only atomics are touched (`Heap::set_counting`).
        unsafe { registry_heap(heap) }.set_counting(on);
    }
}

/// The thread heap inside a registered descriptor, for reading its atomics without the lock.
///
/// # Safety
/// Only atomics of the result are used.
unsafe fn registry_heap(heap: &'static Isolated) -> &'static heap_core::HeapCore {
    // SAFETY: the descriptor is never freed; the caller only reads atomics.
    unsafe { &(*heap.guarded.data_ptr()).heap }
}

/// Locks the registry and every live heap before `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    REGISTRY.lock_raw();
    // SAFETY: we hold the registry lock, taken just above.
    let registry = unsafe { REGISTRY.get_locked() };
    for heap in registry.live().filter(|h| h.is_locked()) {
        heap.guarded.lock_raw();
    }
}

/// Unlocks what [`lock_for_fork`] locked, in the parent.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork_parent() {
    // SAFETY: guaranteed by the caller: we hold the registry and every live heap.
    unsafe {
        let registry = REGISTRY.get_locked();
        for heap in registry.live().filter(|h| h.is_locked()) {
            heap.guarded.unlock_raw();
        }
        REGISTRY.unlock_raw();
    }
}

/// Releases the locks in a forked child. The heaps stay usable there: no operation was half
/// done when the fork happened (the parent held every heap's lock).
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and is the only one in the process.
pub(crate) unsafe fn reset_after_fork_child() {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let registry = REGISTRY.get_locked();
        for heap in registry.live().filter(|h| h.is_locked()) {
            heap.guarded.reset_after_fork();
        }
        REGISTRY.reset_after_fork();
    }
}
