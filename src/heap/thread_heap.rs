//! The per-thread heap: per size class, a queue of pages with free blocks (the first is the
//! current page the fast path allocates from) and a list of full pages.
//!
//! Fast paths (no lock, no atomic read-modify-write):
//! * malloc: load the current page of the class, pop its `free` list.
//! * free by the owner: compare the page's `owner` with our id, push onto `local_free`.
//!
//! Everything else is the generic path, in order of cost: take in freed blocks of the queued
//! pages, carve fresh blocks, rescue a full page that other threads freed into, take over a
//! page an exited thread abandoned, claim a fresh page from the arena (the region read path).
//!
//! A heap that is a sentinel (the thread has none) hands its generic paths' decisions to the
//! caller's [`NoHeap`] type: the heap never calls up into the life cycle.
//!
//! Layer: `heap`; calls `heap::pages`, `page_blocks`, `page_list`, `double_free`, `size_class`,
//! `abandon`, `large_cache` and `modes`, `arena` (claiming and releasing pages), `large`
//! (freeing cached blocks), `list`, `stats`, `abort`, `os`, `config` and `purger`.

use core::cell::{Cell, UnsafeCell};

use super::double_free;
use super::large_cache::LargeCache;
use super::modes;
use super::page_blocks;
use super::page_list::PageList;
use super::pages;
use super::size_class::{NUM_CLASSES, class_size, page_kind};
use crate::arena::ARENA;
use crate::arena::large_block::LargeState;
use crate::arena::page::{Block, NO_OWNER, OWNER_FULL_FLAG, Page};
use crate::config::PageKind;
use crate::list::AtomicLinks;
use crate::stats::Tally;
use crate::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// The page every empty queue points at: its free list is always empty, so the fast path
/// needs no separate "no page yet" test. Nobody ever writes to it.
pub(crate) static EMPTY_PAGE: Page = Page::new();

/// Thread id of a heap that is not alive; never equal to any page's `owner`.
pub(crate) const NO_THREAD: usize = usize::MAX;

/// Thread ids are multiples of 4 (the low bits of a page's `owner` are flags); 0 means "no
/// owner" and 4 is the fallback heap.
pub(crate) const FALLBACK_TID: usize = 4;
const TID_STEP: usize = 4;
static NEXT_TID: AtomicUsize = AtomicUsize::new(2 * TID_STEP);

/// A fresh id for a heap (thread or isolated): ids are never reused, so a page's `owner`
/// can only ever match the heap that owns it.
pub(crate) fn new_heap_id() -> usize {
    // Relaxed: ids only need to be unique.
    NEXT_TID.fetch_add(TID_STEP, Ordering::Relaxed)
}

/// What a heap's slow paths do when the heap is a sentinel, that is, when the calling thread
/// has no heap of its own (see `slot`): the owner of the heap pointer supplies it, so that the
/// heap never calls up into the life cycle that brings heaps up.
pub(crate) trait NoHeap {
    /// Allocates for the calling thread, whose slot holds the sentinel `heap`.
    fn alloc<const ZERO: bool, const USABLE: bool>(
        heap: &Heap,
        class: usize,
        size: usize,
    ) -> *mut u8;
    /// Counts a remote free of `bytes` by the calling thread, whose slot holds the sentinel
    /// `heap`, while requested bytes are counted.
    fn count_free(heap: &Heap, bytes: usize);
}

/// For heaps that are never sentinels: isolated heaps and the fallback heap.
pub(crate) enum AlwaysAlive {}

impl NoHeap for AlwaysAlive {
    fn alloc<const ZERO: bool, const USABLE: bool>(_: &Heap, _: usize, _: usize) -> *mut u8 {
        crate::abort::internal("an isolated or fallback heap is not alive")
    }
    fn count_free(_: &Heap, _: usize) {
        crate::abort::internal("an isolated or fallback heap is not alive")
    }
}

/// Full pages inspected for frees from other threads before claiming a new page.
const FULL_SCAN_BUDGET: usize = 8;
/// Abandoned pages tried before claiming a new page.
const RECLAIM_BUDGET: usize = 4;

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

/// What a heap can count on its fast paths: bytes and blocks allocated and freed (the sum over
/// all heaps of allocated minus freed bytes is `Stats::bytes_requested`; one heap's own figures
/// are [`crate::thread_stats`]). It costs two loads and stores per malloc and per free (about
/// 15% of a small malloc/free pair), so it is only kept while asked for (`VMARENA_STATS=1`, or
/// `vmarena::track_requested_bytes`). Only the owner updates it, without read-modify-writes.
/// Frees from other threads count on the freeing thread, so one heap's freed bytes may exceed
/// its allocated bytes. (Bytes in use are not counted per operation at all: `stats()` derives
/// them from the pages' `used` counts, which the fast paths maintain anyway.)
///
/// Whether to count is a flag of the heap's own (on the cache line the fast paths read anyway,
/// so the test costs a compare with memory, not a load through the GOT of a shared static).
pub(crate) struct HeapCounters {
    pub(crate) allocated: AtomicUsize,
    pub(crate) freed: AtomicUsize,
    pub(crate) allocations: AtomicUsize,
    pub(crate) frees: AtomicUsize,
    /// Set from the process's setting when the heap comes up, and by
    /// `vmarena::track_requested_bytes` for live heaps.
    pub(crate) counting: AtomicBool,
    /// Page claims and releases, region reads, speculations (see `Tally`).
    pub(crate) tally: Tally,
}

/// Adds `n` to a counter only its owner writes (Relaxed load + store: statistics).
#[inline(always)]
fn bump_owned(counter: &AtomicUsize, n: usize) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl HeapCounters {
    /// A heap's counters, written by its owner only.
    pub(crate) const fn new() -> HeapCounters {
        HeapCounters::with_tally(Tally::owned())
    }

    /// Counters any thread may write (for paths without a heap of their own).
    pub(crate) const fn shared() -> HeapCounters {
        HeapCounters::with_tally(Tally::shared())
    }

    const fn with_tally(tally: Tally) -> HeapCounters {
        HeapCounters {
            allocated: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
            allocations: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
            counting: AtomicBool::new(false),
            tally,
        }
    }

    /// Counts an allocation whose size is computed only if counting is on (owner only).
    #[inline(always)]
    pub(crate) fn on_alloc_with(&self, bytes: impl FnOnce() -> usize) {
        // Relaxed: a configuration flag.
        if self.counting.load(Ordering::Relaxed) {
            bump_owned(&self.allocated, bytes());
            bump_owned(&self.allocations, 1);
        }
    }

    /// Counts an allocation of `bytes` (owner only).
    #[inline(always)]
    pub(crate) fn on_alloc(&self, bytes: usize) {
        self.on_alloc_with(|| bytes);
    }

    /// Counts a free of `bytes` (owner only).
    #[inline(always)]
    pub(crate) fn on_free(&self, bytes: usize) {
        // Relaxed: a configuration flag.
        if self.counting.load(Ordering::Relaxed) {
            bump_owned(&self.freed, bytes);
            bump_owned(&self.frees, 1);
        }
    }

    /// Counts a block resized in place from `old` to `new` bytes (owner only): the difference
    /// as bytes allocated or freed, no block counted.
    pub(crate) fn on_resize(&self, old: usize, new: usize) {
        // Relaxed: a configuration flag.
        if self.counting.load(Ordering::Relaxed) {
            if new >= old {
                bump_owned(&self.allocated, new - old);
            } else {
                bump_owned(&self.freed, old - new);
            }
        }
    }

    /// The update of shared counters (Relaxed read-modify-writes: statistics), by `bytes`
    /// allocated and freed and `blocks` allocated and freed.
    pub(crate) fn add_shared(&self, allocated: usize, freed: usize, blocks: (usize, usize)) {
        if modes::tracking_requested() {
            self.allocated.fetch_add(allocated, Ordering::Relaxed);
            self.freed.fetch_add(freed, Ordering::Relaxed);
            self.allocations.fetch_add(blocks.0, Ordering::Relaxed);
            self.frees.fetch_add(blocks.1, Ordering::Relaxed);
        }
    }

    /// Bytes allocated minus bytes freed (wrapping: see above).
    pub(crate) fn net_bytes(&self) -> usize {
        // Relaxed: statistics.
        let allocated = self.allocated.load(Ordering::Relaxed);
        allocated.wrapping_sub(self.freed.load(Ordering::Relaxed))
    }

    /// Adds these counters into `into` (Relaxed: statistics).
    pub(crate) fn add_to(&self, into: &mut crate::stats::Stats) {
        if let Some(total) = &mut into.bytes_requested {
            *total = total.wrapping_add(self.net_bytes());
        }
        self.tally.add_to(into);
    }

    /// Moves everything into `into` (shared counters) and zeroes these: for a heap whose
    /// owner is gone.
    pub(crate) fn fold_into(&self, into: &HeapCounters) {
        // Relaxed: statistics.
        let take = |c: &AtomicUsize| c.swap(0, Ordering::Relaxed);
        let (allocated, freed) = (take(&self.allocated), take(&self.freed));
        let blocks = (take(&self.allocations), take(&self.frees));
        into.add_shared(allocated, freed, blocks);
        self.tally.fold_into(&into.tally);
    }
}

/// Counters of exited heaps, and of frees made by threads without a usable heap.
pub(crate) static ORPHAN_COUNTERS: HeapCounters = HeapCounters::shared();

/// Set in `Heap::fast_free_owner` while counting; never in a page's `owner` (heap ids are
/// multiples of 4, and bit 0 is `OWNER_FULL_FLAG`).
const COUNTING_BIT: usize = 2;
const _: () = assert!(COUNTING_BIT != OWNER_FULL_FLAG && COUNTING_BIT < 4);

/// A heap. Its fields sit in an `UnsafeCell`, so that a heap going back to the pool is built
/// anew ([`Heap::rebuild`]) rather than reset field by field: a field added later cannot be
/// forgotten, and a forked child's dead heaps, frozen mid-operation, keep nothing (see
/// `crate::fork`). Every method reaches the fields through `Deref`.
#[repr(transparent)]
pub(crate) struct Heap(UnsafeCell<HeapFields>);

impl core::ops::Deref for Heap {
    type Target = HeapFields;

    #[inline(always)]
    fn deref(&self) -> &HeapFields {
        // SAFETY: the fields are written as a whole only by `rebuild`, whose caller guarantees
        // that no reference from here is alive and no other thread can reach the heap; who may
        // use which field, and how, is the heap's own contract (see `Send` below).
        unsafe { &*self.0.get() }
    }
}

pub(crate) struct HeapFields {
    /// Per class, the page the fast path allocates from (`EMPTY_PAGE` if none).
    current: [Cell<*const Page>; NUM_CLASSES],
    /// Our id in pages' `owner` (`NO_THREAD` unless alive).
    tid: Cell<usize>,
    /// What a page's `owner` must equal for a free to take the fast path: `tid`, or while
    /// requested bytes are counted `tid | COUNTING_BIT`, which no page carries, so that every
    /// free takes `free_slow` and counts there (the fast path then tests no counting flag).
    /// Atomic: `set_counting` flips the bit from other threads.
    fast_free_owner: AtomicUsize,
    /// Cached `double_free::free_key()`.
    free_key: Cell<usize>,
    state: Cell<HeapState>,
    /// An isolated heap (`vmarena::Heap`): it never takes over pages of exited threads, whose
    /// blocks would die with it.
    isolated: Cell<bool>,
    /// Checked mode (`VMARENA_CHECKED`): every allocation takes the generic path, which
    /// validates the link of each block it pops (see `alloc_checked`).
    checked: Cell<bool>,
    /// Per class, pages with free blocks or room to carve; `current` is the first.
    queues: [PageList; NUM_CLASSES],
    /// Per class, pages with nothing left to hand out.
    full: [PageList; NUM_CLASSES],
    pub(crate) counters: HeapCounters,
    /// Freed large blocks kept for reuse (see `large_cache`).
    pub(crate) large_cache: LargeCache,
    /// The kernel's id of the owning thread (to tell whether it still runs; see `lifecycle`).
    os_tid: AtomicI32,
    /// Links in the registry of live heaps (or a reaper's private list); changed under the
    /// registry lock (see `lifecycle`).
    pub(crate) registry: AtomicLinks<Heap>,
    /// The link in the pool of unused heaps (`arena::meta::Pool`).
    pub(crate) pool_next: AtomicPtr<Heap>,
}

// SAFETY: a heap is used by one thread at a time: its own thread, the holder of the fallback
// heap's mutex, or (for a heap whose thread is gone) the thread that reaps it. Other threads
// only touch its atomics (counters, thread id, registry links).
unsafe impl Send for Heap {}

impl Heap {
    pub(crate) const fn new() -> Heap {
        Heap::sentinel(HeapState::Uninit)
    }

    /// An empty heap in `state`: the shared sentinels (see `lifecycle`), or a fresh heap.
    pub(crate) const fn sentinel(state: HeapState) -> Heap {
        Heap(UnsafeCell::new(HeapFields {
            current: [const { Cell::new(&raw const EMPTY_PAGE) }; NUM_CLASSES],
            tid: Cell::new(NO_THREAD),
            fast_free_owner: AtomicUsize::new(NO_THREAD),
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

    /// Makes the heap usable by the thread whose id is `tid` (kernel id `os_tid`).
    pub(crate) fn start(&self, tid: usize, os_tid: i32) {
        self.tid.set(tid);
        self.set_os_tid(os_tid);
        self.free_key.set(double_free::free_key());
        self.checked.set(modes::checked_mode());
        let counting = modes::tracking_requested();
        // Relaxed: configuration (see `HeapCounters`); the heap is not registered yet, so no
        // `set_counting` races with these stores.
        self.counters.counting.store(counting, Ordering::Relaxed);
        self.fast_free_owner.store(
            tid | if counting { COUNTING_BIT } else { 0 },
            Ordering::Relaxed,
        );
        self.state.set(HeapState::Alive);
    }

    /// Turns counting of requested bytes on or off (any thread; the heap is alive).
    pub(crate) fn set_counting(&self, on: bool) {
        // Relaxed: configuration flags the owner reads on its fast paths; it sees the change
        // soon, not at once, as with any statistics switch. The RMWs leave the id bits alone.
        self.counters.counting.store(on, Ordering::Relaxed);
        if on {
            self.fast_free_owner
                .fetch_or(COUNTING_BIT, Ordering::Relaxed);
        } else {
            self.fast_free_owner
                .fetch_and(!COUNTING_BIT, Ordering::Relaxed);
        }
    }

    /// Makes the heap an isolated heap (`vmarena::Heap`) with id `tid`.
    pub(crate) fn start_isolated(&self, tid: usize) {
        self.start(tid, 0);
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

    /// Builds the heap anew, as [`Heap::new`] does, for reuse by another thread. Whatever it
    /// held is forgotten: its pages were handed over, or (a forked child's dead heaps, and
    /// their cached large blocks) are leaked, their blocks' fate unknowable. Its counters
    /// must have been folded into others first.
    ///
    /// # Safety
    /// No other thread uses the heap, and no reference to its fields is alive (the caller
    /// holds only `&Heap`, and takes no field reference across the call).
    pub(crate) unsafe fn rebuild(&self) {
        // SAFETY: the fields are in our `UnsafeCell`, so writing them through its pointer is
        // allowed; no one else uses them (caller). `HeapFields` has no `Drop`.
        unsafe { self.0.get().write(Heap::new().0.into_inner()) };
    }

    // ------------------------------------------------------------------ allocation

    /// Allocates a block of `class` for a request of `size` bytes (zeroed if `ZERO`). Requested
    /// bytes count `size`, or with `USABLE` the whole block (for C callers, which free without
    /// a size).
    /// `N` says what to do if the heap is a sentinel.
    #[inline(always)]
    pub(crate) fn alloc<N: NoHeap, const ZERO: bool, const USABLE: bool>(
        &self,
        class: usize,
        size: usize,
    ) -> *mut u8 {
        debug_assert!(class < NUM_CLASSES);
        // SAFETY: `class` comes from the size-class functions, so it indexes `current`.
        // `current` holds pages this heap owns, or `EMPTY_PAGE`, whose free list is null and
        // never written; so reading `free` races with no one.
        unsafe {
            let page = &*self.current.get_unchecked(class).get();
            let block = page.free.get();
            if !block.is_null() {
                pages::pop(page, block, class);
                if ZERO {
                    pages::zero(page, block, size);
                }
                // The block size from the page (a line the pop has just read), not the class
                // table: see `global` on statics the fast paths may name. Relaxed: fixed
                // while the page is in use, and it is ours.
                self.counters.on_alloc_with(|| {
                    if USABLE {
                        page.block_size.load(Ordering::Relaxed)
                    } else {
                        size
                    }
                });
                return block.cast();
            }
        }
        self.alloc_generic::<N, ZERO, USABLE>(class, size)
    }

    #[inline(never)]
    fn alloc_generic<N: NoHeap, const ZERO: bool, const USABLE: bool>(
        &self,
        class: usize,
        size: usize,
    ) -> *mut u8 {
        if self.state.get() != HeapState::Alive {
            // A sentinel: the thread has no heap (yet, or any more).
            return N::alloc::<ZERO, USABLE>(self, class, size);
        }
        let Some(page) = self.find_page(class) else {
            return crate::os::out_of_memory();
        };
        if self.checked.get() {
            // SAFETY: `find_page` gave us one of our pages, with a free block.
            return unsafe { self.alloc_checked::<ZERO, USABLE>(page, class, size) };
        }
        // `find_page` made a page with a free block current: the fast path succeeds now.
        self.alloc::<N, ZERO, USABLE>(class, size)
    }

    /// The pop of checked mode: the block's link must be null or another block the page
    /// carved, else a write past some block's end (or after its free) corrupted the free list,
    /// and the program stops here with the address instead of crashing later on a wild pointer.
    ///
    /// # Safety
    /// We own `page`, whose free list is not empty.
    #[cold]
    unsafe fn alloc_checked<const ZERO: bool, const USABLE: bool>(
        &self,
        page: &'static Page,
        class: usize,
        size: usize,
    ) -> *mut u8 {
        // SAFETY: owner (caller); the free list's head is a block of the page (checked when it
        // was freed, carved, or popped as the previous block's link).
        unsafe {
            let block = page.free.get();
            let link = (*block).next;
            if !link.is_null() && !page_blocks::is_carved_block(page, link as usize) {
                crate::abort::corrupted_free_list(block.cast(), link.cast());
            }
            pages::pop(page, block, class);
            if ZERO {
                pages::zero(page, block, size);
            }
            self.counters
                .on_alloc_with(|| if USABLE { class_size(class) } else { size });
            block.cast()
        }
    }

    /// Makes a page with a free block the current page of `class`.
    fn find_page(&self, class: usize) -> Option<&'static Page> {
        let queue = &self.queues[class];
        // SAFETY: (whole function) every page on our lists is owned by this heap; reclaimed
        // and claimed pages become ours before we touch them.
        unsafe {
            // 1. Queued pages: take in their freed blocks, or carve fresh ones.
            while let Some(page) = queue.first() {
                pages::collect(page);
                if pages::has_room(page) {
                    if page.free.get().is_null() {
                        pages::extend(page);
                    }
                    self.sync_current(class);
                    return Some(page);
                }
                queue.remove(page);
                self.full[class].push_back(page);
                pages::set_full_flag(page, self.tid.get(), true);
            }
            // 2. Full pages that other threads have freed into.
            if let Some(page) = self.rescue_full_page(class) {
                return Some(page);
            }
            // 3. Pages abandoned by exited threads (not for isolated heaps: see `isolated`).
            let budget = if self.isolated.get() {
                0
            } else {
                RECLAIM_BUDGET
            };
            for _ in 0..budget {
                let Some(page) = super::abandon::take(class) else {
                    break;
                };
                page.owner.store(self.tid.get(), Ordering::Relaxed);
                pages::collect(page);
                if pages::has_room(page) {
                    if page.free.get().is_null() {
                        pages::extend(page);
                    }
                    queue.push_front(page);
                    self.sync_current(class);
                    return Some(page);
                }
                self.full[class].push_back(page);
                pages::set_full_flag(page, self.tid.get(), true);
            }
            // 4. A fresh page from the arena (the region read path).
            let claim = ARENA.claim_page(page_kind(class), self.tally())?;
            pages::init(claim.page, class, claim.fresh, self.tid.get());
            pages::extend(claim.page);
            queue.push_front(claim.page);
            self.sync_current(class);
            Some(claim.page)
        }
    }

    /// Looks at a few full pages for blocks other threads freed into them. Pages still full
    /// go to the back, so successive calls look at different pages.
    ///
    /// # Safety
    /// Called by the heap's owner.
    unsafe fn rescue_full_page(&self, class: usize) -> Option<&'static Page> {
        let full = &self.full[class];
        for _ in 0..FULL_SCAN_BUDGET {
            let page = full.first()?;
            // SAFETY: our page (caller).
            unsafe {
                full.remove(page);
                pages::collect(page);
                if pages::has_room(page) {
                    pages::set_full_flag(page, self.tid.get(), false);
                    self.queues[class].push_front(page);
                    self.sync_current(class);
                    return Some(page);
                }
                full.push_back(page);
            }
            if core::ptr::eq(full.first_ptr(), page) {
                break; // the only full page
            }
        }
        None
    }

    /// Points the fast path at the first queued page of `class` (never, in checked mode: its
    /// allocations all take the generic path).
    fn sync_current(&self, class: usize) {
        let first = self.queues[class].first_ptr();
        self.current[class].set(if first.is_null() || self.checked.get() {
            &raw const EMPTY_PAGE
        } else {
            first
        });
    }

    // ------------------------------------------------------------------ freeing

    /// Frees `block` of `page` (any page: ours or another thread's). Requested bytes count
    /// `requested`, or with `USABLE` the whole block (see `alloc`).
    ///
    /// # Safety
    /// `block` is a live block of `page`, given up by the caller.
    /// `N` says how to count if the heap is a sentinel.
    #[inline(always)]
    pub(crate) unsafe fn free<N: NoHeap, const USABLE: bool>(
        &self,
        page: &'static Page,
        block: *mut Block,
        requested: usize,
    ) {
        // Relaxed: see the `Page` docs; a page whose owner reads as us is ours and stays ours.
        // `fast_free_owner` is our own word (only its counting bit changes elsewhere).
        if page.owner.load(Ordering::Relaxed) == self.fast_free_owner.load(Ordering::Relaxed) {
            // SAFETY: we own the page (and are not counting); forwarded from the caller.
            unsafe { self.free_owned(page, block) }
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { self.free_slow::<N, USABLE>(page, block, requested) };
        }
    }

    /// The owner's free into a page of its queues, uncounted.
    ///
    /// # Safety
    /// We own `page`, which is not full; `block` is a live block given up by the caller.
    #[inline(always)]
    unsafe fn free_owned(&self, page: &'static Page, block: *mut Block) {
        // A pointer into a block, or past what the page carved, would be linked into the
        // free list and handed out again over live data.
        if !page_blocks::is_carved_block(page, block as usize) {
            crate::abort::invalid_free(block.cast());
        }
        // SAFETY: we own the page; the block is one of its live blocks (caller, checked
        // above as far as it can be).
        unsafe {
            if double_free::mark_freed(page, block, self.free_key.get()) {
                // A call in tail position: the fast path keeps nothing alive across it,
                // so it saves no more registers than it did before suspects existed.
                return self.free_suspect(page, block);
            }
            if pages::push_local(page, block) {
                self.page_emptied(page);
            }
        }
    }

    /// A free by the owner that found the block marked free: a double free if the block is on
    /// one of the page's free lists, else data that only looked like a marker (see
    /// `double_free`), freed as usual.
    ///
    /// # Safety
    /// As for `free`; we own the page.
    #[cold]
    #[inline(never)]
    unsafe fn free_suspect(&self, page: &'static Page, block: *mut Block) {
        // SAFETY: owner (caller); the block is a block of the page.
        unsafe {
            if double_free::owner_confirms(page, block) {
                crate::abort::double_free(block.cast());
            }
            if pages::push_local(page, block) {
                self.page_emptied(page);
            }
        }
    }

    /// A free that counts requested bytes (`requested`, or with `USABLE` the whole block), into
    /// a page of ours or another thread's.
    #[inline(never)]
    unsafe fn free_slow<N: NoHeap, const USABLE: bool>(
        &self,
        page: &'static Page,
        block: *mut Block,
        requested: usize,
    ) {
        // Relaxed: see `Page`.
        let size = page.block_size.load(Ordering::Relaxed);
        let requested = if USABLE { size } else { requested };
        let tid = self.tid.get();
        // Relaxed: as in `free`.
        let owner = page.owner.load(Ordering::Relaxed);
        if owner == tid {
            // Ours and queued: we only came here to count.
            self.counters.on_free(requested);
            // SAFETY: forwarded from the caller; we own the page.
            return unsafe { self.free_owned(page, block) };
        }
        // Every pointer must be a block the page carved (without a division: this path is hot
        // in producer/consumer programs).
        if !page_blocks::is_carved_block(page, block as usize) {
            crate::abort::invalid_free(block.cast());
        }
        if owner == tid | OWNER_FULL_FLAG {
            // SAFETY: our page; the block is a live block of it (caller).
            unsafe {
                if double_free::mark_freed(page, block, self.free_key.get())
                    && double_free::owner_confirms(page, block)
                {
                    crate::abort::double_free(block.cast());
                }
                let empty = pages::push_local(page, block);
                let class = page.class.get() as usize;
                self.full[class].remove(page);
                pages::set_full_flag(page, tid, false);
                self.queues[class].push_back(page);
                self.sync_current(class);
                if empty {
                    self.page_emptied(page);
                }
            }
            self.counters.on_free(requested);
            return;
        }
        // Another thread's page, an abandoned one, or the fallback heap's.
        let key = match self.free_key.get() {
            0 => double_free::free_key(),
            key => key,
        };
        // SAFETY: the caller gives up a live block of `page`.
        let adopted = unsafe {
            if double_free::mark_freed(page, block, key) && double_free::looks_free(page, block) {
                crate::abort::double_free(block.cast());
            }
            pages::push_remote(page, block)
        };
        // `self` is the calling thread's heap: isolated heaps free only into their own pages.
        if self.state.get() == HeapState::Alive {
            self.counters.on_free(requested);
        } else if modes::tracking_requested() {
            // Threads that only free (consumers) have no heap: without counting, that costs
            // them one test here.
            N::count_free(self, requested);
        }
        if adopted {
            self.adopt(page);
        }
    }

    /// Takes over an abandoned page that a free of ours just claimed because it emptied the
    /// page (see `pages::push_remote`): the page goes back to its region. (Should it still hold
    /// blocks, it is kept or handed back like any other page.)
    fn adopt(&self, page: &'static Page) {
        // SAFETY: (whole function) clearing the abandoned tag made us the page's owner.
        unsafe {
            let class = page.class.get() as usize;
            super::abandon::unlink_adopted(class, page);
            pages::collect(page);
            if pages::is_empty(page) {
                ARENA.release_page(page, self.tally());
            } else if self.state.get() == HeapState::Alive {
                page.owner.store(self.tid.get(), Ordering::Relaxed);
                if pages::has_room(page) {
                    self.queues[class].push_back(page);
                    self.sync_current(class);
                } else {
                    self.full[class].push_back(page);
                    pages::set_full_flag(page, self.tid.get(), true);
                }
            } else {
                super::abandon::put(class, page);
            }
        }
    }

    /// A page of ours has no live blocks left: keep it if it is the current page (so
    /// alternating malloc/free does not churn pages), else give it back to its region.
    ///
    /// # Safety
    /// We own `page`, and no block of it is live.
    #[inline(always)]
    unsafe fn page_emptied(&self, page: &'static Page) {
        // SAFETY: owner (caller).
        let class = unsafe { page.class.get() } as usize;
        // SAFETY: a page's class is one the size-class functions gave (below NUM_CLASSES), set
        // when the page was claimed for it.
        let current = unsafe { self.current.get_unchecked(class) };
        if core::ptr::eq(current.get(), page) {
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.release_emptied(page, class) };
    }

    /// # Safety
    /// As for `page_emptied`.
    #[inline(never)]
    unsafe fn release_emptied(&self, page: &'static Page, class: usize) {
        // Checked mode has no current page; it keeps the first queued one instead.
        if self.checked.get() && core::ptr::eq(self.queues[class].first_ptr(), page) {
            return;
        }
        // SAFETY: owner; the page is on exactly one of our lists (by its full flag).
        unsafe {
            // Relaxed: our own field.
            if page.owner.load(Ordering::Relaxed) & OWNER_FULL_FLAG != 0 {
                self.full[class].remove(page);
            } else {
                self.queues[class].remove(page);
                self.sync_current(class);
            }
        }
        ARENA.release_page(page, self.tally());
        // The fallback heap frees under its mutex, which starting a thread (it allocates)
        // must not hold.
        if self.tid.get() != FALLBACK_TID {
            crate::purger::poke();
        }
    }

    // ------------------------------------------------------------------ collect and exit

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
            crate::large::free_block(region, region.start(), LargeState::Cached);
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

impl Heap {
    /// Checks the heap's invariants (mimalloc's `mi_heap_is_valid`): every page on a queue or
    /// full list is of that list's class, owned by this heap, well linked and valid
    /// (`Page::validate`), and has the full flag exactly when it is on the full list; each
    /// class's `current` is the first queued page, or `EMPTY_PAGE` if none (or in checked
    /// mode). Panics on a violation. Checks whenever it is called (tests call it in any
    /// profile); `collect` calls it in debug builds. Only the heap's own thread calls it.
    #[cfg_attr(not(debug_assertions), allow(dead_code))] // tests call it in any profile
    pub(crate) fn validate(&self) {
        let tid = self.tid.get();
        // SAFETY: `EMPTY_PAGE` is never handed out; its free list stays null.
        let empty_page_free = unsafe { EMPTY_PAGE.free.get() };
        assert!(empty_page_free.is_null(), "EMPTY_PAGE has blocks");
        for class in 0..NUM_CLASSES {
            for (list, full) in [(&self.queues[class], false), (&self.full[class], true)] {
                let mut prev: *const Page = core::ptr::null();
                // SAFETY: our lists; the walk changes nothing.
                for page in unsafe { list.iter() } {
                    assert_ne!(tid, NO_THREAD, "a heap that is not alive holds pages");
                    // Relaxed: our own store (`set_full_flag`, adoption).
                    let owner = page.owner.load(Ordering::Relaxed);
                    assert_eq!(owner & OWNER_FULL_FLAG != 0, full, "full flag vs list");
                    // SAFETY: a page on our lists is ours.
                    unsafe {
                        page.validate(tid);
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
