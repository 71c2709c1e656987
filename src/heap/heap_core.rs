//! The heap every thread and every isolated heap is built on ([`HeapCore`]): per size class,
//! a queue of pages with free blocks (the first is the current page the fast path allocates
//! from) and a list of full pages, and a cache of freed large blocks.
//!
//! Fast paths (no lock, no atomic read-modify-write):
//! * malloc (`HeapCore::alloc`, in `alloc_path`): load the current page of the class, pop its
//!   `free` list.
//! * free by the owner (`HeapCore::free`, in `free_path`): compare the page's `owner` with our
//!   id, push onto `local_free`.
//!
//! Everything else is the generic path (`alloc_path` for allocation, `free_path` for frees
//! into full pages and other heaps' pages). This file has the struct, its life (start,
//! rebuild), and what hands its pages over: collect, discard, abandon, and the validator.
//!
//! A heap that is a sentinel (the thread has none) hands its generic paths' decisions to the
//! caller's [`NoHeap`] type: the heap never calls up into the life cycle.
//!
//! Layer: `heap`; calls `heap::pages`, `page_list`, `double_free`, `size_class`, `abandon`,
//! `large_cache`, `counters` and `modes`, `arena` (releasing pages), `large` (freeing cached
//! blocks), `list`, `stats`, `abort` and `config`.

use core::cell::{Cell, UnsafeCell};

use super::counters::{COUNT, HeapCounters, ORPHAN_COUNTERS, SAMPLE};
use super::double_free;
use super::large_cache::LargeCache;
use super::modes;
use super::page_list::PageList;
use super::pages;
use super::size_class::{NUM_CLASSES, class_size, page_kind};
use crate::arena::ARENA;
use crate::arena::large_block::LargeState;
use crate::arena::page::{NO_OWNER, OWNER_FULL_FLAG, Page};
use crate::config::PageKind;
use crate::list::AtomicLinks;
use crate::stats::Tally;
use crate::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// The page every empty queue points at: its free list is always empty, so the fast path
/// needs no separate "no page yet" test. Nobody ever writes to it.
pub(crate) static EMPTY_PAGE: Page = Page::new();

/// The id of a heap that is not alive; never equal to any page's `owner`.
pub(crate) const NO_HEAP: usize = usize::MAX;

/// Heap ids (of a thread's heap or an isolated heap; never a kernel thread id) are multiples
/// of 4 (the low bits of a page's `owner` are flags); 0 means "no owner" and 4 is the fallback
/// heap.
pub(crate) const FALLBACK_HEAP_ID: usize = 4;
const HEAP_ID_STEP: usize = 4;
static NEXT_HEAP_ID: AtomicUsize = AtomicUsize::new(2 * HEAP_ID_STEP);

/// A fresh id for a heap (thread or isolated): ids are never reused, so a page's `owner`
/// can only ever match the heap that owns it.
pub(crate) fn new_heap_id() -> usize {
    // Relaxed: ids only need to be unique.
    NEXT_HEAP_ID.fetch_add(HEAP_ID_STEP, Ordering::Relaxed)
}

/// What a heap's slow paths do when the heap is a sentinel, that is, when the calling thread
/// has no heap of its own (see `slot`): the owner of the heap pointer supplies it, so that the
/// heap never calls up into the life cycle that brings heaps up.
pub(crate) trait NoHeap {
    /// Allocates for the calling thread, whose slot holds the sentinel `heap`.
    fn alloc<const ZERO: bool, const USABLE: bool>(
        heap: &HeapCore,
        class: usize,
        size: usize,
    ) -> *mut u8;
    /// Counts a remote free of `bytes` by the calling thread, whose slot holds the sentinel
    /// `heap`, while requested bytes are counted.
    fn count_free(heap: &HeapCore, bytes: usize);
}

/// For heaps that are never sentinels: isolated heaps and the fallback heap.
pub(crate) enum AlwaysAlive {}

impl NoHeap for AlwaysAlive {
    fn alloc<const ZERO: bool, const USABLE: bool>(_: &HeapCore, _: usize, _: usize) -> *mut u8 {
        crate::abort::internal("an isolated or fallback heap is not alive")
    }
    fn count_free(_: &HeapCore, _: usize) {
        crate::abort::internal("an isolated or fallback heap is not alive")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HeapState {
    /// The thread has not allocated yet.
    Uninit,
    /// Setting up; allocations made meanwhile (e.g. by the C library) use the fallback heap.
    Initialising,
    Alive,
    /// The thread is exiting and its pages were handed over; it uses the fallback heap.
    Destroyed,
}

/// Set in `HeapCore::fast_free_owner` while counting; never in a page's `owner` (heap ids are
/// multiples of 4, and bit 0 is `OWNER_FULL_FLAG`).
const COUNTING_BIT: usize = 2;
const _: () = assert!(COUNTING_BIT != OWNER_FULL_FLAG && COUNTING_BIT < 4);

/// A heap. Its fields sit in an `UnsafeCell`, so that a heap going back to the pool is built
/// anew ([`HeapCore::rebuild`]) rather than reset field by field: a field added later cannot be
/// forgotten, and a forked child's dead heaps, frozen mid-operation, keep nothing (see
/// `crate::fork`). Every method reaches the fields through `Deref`.
#[repr(transparent)]
pub(crate) struct HeapCore(UnsafeCell<HeapCoreFields>);

impl core::ops::Deref for HeapCore {
    type Target = HeapCoreFields;

    #[inline(always)]
    fn deref(&self) -> &HeapCoreFields {
        // SAFETY: the fields are written as a whole only by `rebuild`, whose caller guarantees
        // that no reference from here is alive and no other thread can reach the heap; who may
        // use which field, and how, is the heap's own contract (see `Send` below).
        unsafe { &*self.0.get() }
    }
}

pub(crate) struct HeapCoreFields {
    /// Per class, the page the fast path allocates from (`EMPTY_PAGE` if none).
    pub(super) current: [Cell<*const Page>; NUM_CLASSES],
    /// Our id in pages' `owner` (`NO_HEAP` unless alive).
    pub(super) id: Cell<usize>,
    /// What a page's `owner` must equal for a free to take the fast path: `id`, or while
    /// requested bytes are counted `id | COUNTING_BIT`, which no page carries, so that every
    /// free takes `free_slow` and counts there (the fast path then tests no counting flag).
    /// Atomic: `set_counting` flips the bit from other threads.
    pub(super) fast_free_owner: AtomicUsize,
    /// Bytes the malloc fast path may still allocate before it stops (see `countdown`).
    pub(super) countdown: Cell<i64>,
    /// What `countdown` was last armed with.
    pub(super) armed: Cell<i64>,
    /// Whether it was armed while sampling (its bytes then count towards the next sample).
    pub(super) armed_for_sample: Cell<bool>,
    /// The count-down to the next heap-profile sample (used while [`SAMPLE`] is on).
    pub(super) sampler: crate::sampling::Sampler,
    /// Cached `double_free::free_key()`.
    pub(super) free_key: Cell<usize>,
    pub(super) state: Cell<HeapState>,
    /// An isolated heap (`vmarena::Heap`): it never takes over pages of exited threads, whose
    /// blocks would die with it.
    pub(super) isolated: Cell<bool>,
    /// Checked mode (`VMARENA_CHECKED`): every allocation takes the generic path, which
    /// validates the link of each block it pops (see `alloc_checked`).
    pub(super) checked: Cell<bool>,
    /// Per class, pages with free blocks or room to carve; `current` is the first.
    pub(super) queues: [PageList; NUM_CLASSES],
    /// Per class, pages with nothing left to hand out.
    pub(super) full: [PageList; NUM_CLASSES],
    pub(crate) counters: HeapCounters,
    /// Freed large blocks kept for reuse (see `large_cache`).
    pub(crate) large_cache: LargeCache,
    /// The kernel's id of the owning thread (to tell whether it still runs; see `lifecycle`).
    pub(super) os_tid: AtomicI32,
    /// Links in the registry of live heaps (or a reaper's private list); changed under the
    /// registry lock (see `lifecycle`).
    pub(crate) registry: AtomicLinks<HeapCore>,
    /// The link in the pool of unused heaps (`arena::meta::Pool`).
    pub(crate) pool_next: AtomicPtr<HeapCore>,
}

// SAFETY: a heap is used by one thread at a time: its own thread, the holder of the fallback
// heap's mutex, or (for a heap whose thread is gone) the thread that reaps it. Other threads
// only touch its atomics (counters, kernel thread id, registry links).
unsafe impl Send for HeapCore {}

impl HeapCore {
    pub(crate) const fn new() -> HeapCore {
        HeapCore::sentinel(HeapState::Uninit)
    }

    /// An empty heap in `state`: the shared sentinels (see `lifecycle`), or a fresh heap.
    pub(crate) const fn sentinel(state: HeapState) -> HeapCore {
        HeapCore(UnsafeCell::new(HeapCoreFields {
            current: [const { Cell::new(&raw const EMPTY_PAGE) }; NUM_CLASSES],
            id: Cell::new(NO_HEAP),
            fast_free_owner: AtomicUsize::new(NO_HEAP),
            countdown: Cell::new(-1), // the first allocation looks at the modes
            armed: Cell::new(-1),
            armed_for_sample: Cell::new(false),
            sampler: crate::sampling::Sampler::new(),
            free_key: Cell::new(0),
            state: Cell::new(state),
            isolated: Cell::new(false),
            checked: Cell::new(false),
            queues: [const { PageList::new() }; NUM_CLASSES],
            full: [const { PageList::new() }; NUM_CLASSES],
            counters: HeapCounters::new(),
            large_cache: LargeCache::new(),
            os_tid: AtomicI32::new(0),
            registry: AtomicLinks::new(),
            pool_next: AtomicPtr::new(core::ptr::null_mut()),
        }))
    }

    pub(crate) fn state(&self) -> HeapState {
        self.state.get()
    }

    /// Makes the heap usable, with heap id `id` (from [`new_heap_id`]), by the thread whose
    /// kernel id is `os_tid`.
    pub(crate) fn start(&self, id: usize, os_tid: i32) {
        self.id.set(id);
        self.set_os_tid(os_tid);
        self.free_key.set(double_free::free_key());
        self.checked.set(modes::checked_mode());
        let counting = modes::tracking_requested();
        // The heap is not registered yet, so no `set_counting` races with these stores.
        self.counters.set_mode(COUNT, counting);
        self.fast_free_owner.store(
            id | if counting { COUNTING_BIT } else { 0 },
            Ordering::Relaxed,
        );
        self.state.set(HeapState::Alive);
    }

    /// Turns counting of requested bytes on or off (any thread; the heap is alive).
    pub(crate) fn set_counting(&self, on: bool) {
        self.counters.set_mode(COUNT, on);
        // Relaxed: a configuration flag the owner reads on its free fast path; it sees the
        // change soon, not at once, as with any statistics switch. The RMWs leave the id bits
        // alone.
        if on {
            self.fast_free_owner
                .fetch_or(COUNTING_BIT, Ordering::Relaxed);
        } else {
            self.fast_free_owner
                .fetch_and(!COUNTING_BIT, Ordering::Relaxed);
        }
    }

    /// Turns sampling for the heap profile on or off (any thread; the heap is alive). Only
    /// threads' own heaps sample: an isolated heap's blocks must stay in its pages, and the
    /// fallback heap allocates under a mutex, where capturing a stack (which may wait for the
    /// dynamic loader's lock, held by a thread that allocates) could deadlock.
    pub(crate) fn set_sampling(&self, on: bool) {
        self.counters.set_mode(SAMPLE, on);
    }

    /// Makes the heap an isolated heap (`vmarena::Heap`) with heap id `id`.
    pub(crate) fn start_isolated(&self, id: usize) {
        self.start(id, 0);
        self.isolated.set(true);
    }

    /// Where this heap's refill and free paths count: its own tally, or for a sentinel (which
    /// is never written) the shared one.
    pub(crate) fn tally(&self) -> &Tally {
        if self.state.get() == HeapState::Alive {
            &self.counters.tally
        } else {
            &ORPHAN_COUNTERS.tally
        }
    }

    pub(crate) fn os_tid(&self) -> i32 {
        // Relaxed: written before the heap is registered and read under the registry lock.
        self.os_tid.load(Ordering::Relaxed)
    }

    pub(crate) fn set_os_tid(&self, os_tid: i32) {
        // Relaxed: see `os_tid`.
        self.os_tid.store(os_tid, Ordering::Relaxed);
    }

    /// Builds the heap anew, as [`HeapCore::new`] does, for reuse by another thread. Whatever it
    /// held is forgotten: its pages were handed over, or (a forked child's dead heaps, and
    /// their cached large blocks) are leaked, their blocks' fate unknowable. Its counters
    /// must have been folded into others first.
    ///
    /// # Safety
    /// No other thread uses the heap, and no reference to its fields is alive (the caller
    /// holds only `&HeapCore`, and takes no field reference across the call).
    pub(crate) unsafe fn rebuild(&self) {
        // SAFETY: the fields are in our `UnsafeCell`, so writing them through its pointer is
        // allowed; no one else uses them (caller). `HeapCoreFields` has no `Drop`.
        unsafe { self.0.get().write(HeapCore::new().0.into_inner()) };
    }

    /// Takes in every page's freed blocks and gives empty pages and cached large blocks back
    /// to their regions.
    pub(crate) fn collect(&self) {
        self.drain_large_cache();
        for class in 0..NUM_CLASSES {
            for list in [&self.queues[class], &self.full[class]] {
                // SAFETY: our lists and pages; the walk removes only the page it was given.
                unsafe {
                    for page in list.iter() {
                        pages::collect(page);
                        if pages::is_empty(page) {
                            list.remove(page);
                            ARENA.release_page(page, self.tally());
                        }
                    }
                }
            }
            self.sync_current(class);
        }
        #[cfg(debug_assertions)]
        self.validate();
    }

    /// Gives every page back to its region, live blocks and all: for an isolated heap being
    /// destroyed, whose blocks die with it. Leaves the heap empty.
    pub(crate) fn discard_all(&self) {
        self.drain_large_cache();
        self.drain_pages(|_, page| {
            // Acquire: the remote frees' pushes happen before the page is reused. (Its blocks
            // are dead, the caller's contract, so no other thread frees into it any more, and
            // the remote frees it had are dropped with the rest.)
            page.xthread_free
                .swap(core::ptr::null_mut(), Ordering::Acquire);
            ARENA.release_page(page, self.tally());
        });
    }

    /// Gives the cached large blocks back to the arena (they were counted as freed when
    /// they went in).
    fn drain_large_cache(&self) {
        self.large_cache.drain(|region| {
            crate::large::release(region, region.start(), LargeState::Cached);
        });
    }

    /// Takes every page off the heap's lists and hands it to `hand_over` with its class,
    /// leaving the heap empty; `hand_over` decides where each page goes.
    fn drain_pages(&self, mut hand_over: impl FnMut(usize, &'static Page)) {
        for class in 0..NUM_CLASSES {
            for list in [&self.queues[class], &self.full[class]] {
                while let Some(page) = list.first() {
                    // SAFETY: our page, on this list.
                    unsafe { list.remove(page) };
                    hand_over(class, page);
                }
            }
            self.sync_current(class);
        }
    }

    /// Bytes of this heap's live blocks (by their pages' counts, less the blocks other threads
    /// freed and the heap has not taken in yet), and its pages per kind.
    pub(crate) fn usage(&self) -> (usize, [usize; PageKind::COUNT]) {
        let (mut bytes, mut pages) = (0, [0; PageKind::COUNT]);
        for class in 0..NUM_CLASSES {
            for list in [&self.queues[class], &self.full[class]] {
                // SAFETY: our lists (the caller holds the heap).
                for page in unsafe { list.iter() } {
                    let live = page.used.get() as usize - pages::remote_frees(page);
                    bytes += live * class_size(class);
                    pages[page_kind(class).index()] += 1;
                }
            }
        }
        (bytes, pages)
    }

    /// Hands every page over: empty ones go back to their regions, the rest to the
    /// abandoned lists where other threads take them over. Leaves the heap empty.
    pub(crate) fn abandon_all(&self) {
        self.drain_large_cache();
        self.drain_pages(|class, page| {
            // SAFETY: our page until handed over below.
            unsafe { pages::collect(page) };
            if pages::is_empty(page) {
                ARENA.release_page(page, self.tally());
            } else {
                // Relaxed: the abandoned list's mutex publishes the page.
                page.owner.store(NO_OWNER, Ordering::Relaxed);
                super::abandon::put(class, page);
            }
        });
    }
}

impl HeapCore {
    /// Checks the heap's invariants (mimalloc's `mi_heap_is_valid`): every page on a queue or
    /// full list is of that list's class, owned by this heap, well linked and valid
    /// (`Page::validate`), and has the full flag exactly when it is on the full list; each
    /// class's `current` is the first queued page, or `EMPTY_PAGE` if none (or in checked
    /// mode). Panics on a violation. Checks whenever it is called (tests call it in any
    /// profile); `collect` calls it in debug builds. Only the heap's own thread calls it.
    #[cfg_attr(not(debug_assertions), allow(dead_code))] // tests call it in any profile
    pub(crate) fn validate(&self) {
        let id = self.id.get();
        // SAFETY: `EMPTY_PAGE` is never handed out; its free list stays null.
        let empty_page_free = unsafe { EMPTY_PAGE.free.get() };
        assert!(empty_page_free.is_null(), "EMPTY_PAGE has blocks");
        for class in 0..NUM_CLASSES {
            for (list, full) in [(&self.queues[class], false), (&self.full[class], true)] {
                let mut prev: *const Page = core::ptr::null();
                // SAFETY: our lists; the walk changes nothing.
                for page in unsafe { list.iter() } {
                    assert_ne!(id, NO_HEAP, "a heap that is not alive holds pages");
                    // Relaxed: our own store (`set_full_flag`, adoption).
                    let owner = page.owner.load(Ordering::Relaxed);
                    assert_eq!(owner & OWNER_FULL_FLAG != 0, full, "full flag vs list");
                    // SAFETY: a page on our lists is ours.
                    unsafe {
                        page.validate(id);
                        assert_eq!(page.class.get() as usize, class, "page on another class");
                        assert!(core::ptr::eq(page.prev.get(), prev), "page list back link");
                        prev = page;
                    }
                }
                assert!(core::ptr::eq(list.last_ptr(), prev), "page list tail");
            }
            let first = self.queues[class].first_ptr();
            let expected = if first.is_null() || self.checked.get() {
                &raw const EMPTY_PAGE
            } else {
                first
            };
            assert!(
                core::ptr::eq(self.current[class].get(), expected),
                "current page is not the first queued page"
            );
        }
    }
}
