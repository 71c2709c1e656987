//! Allocation from a heap: the fast path ([`HeapCore::alloc`]: pop the current page's free
//! list) and the generic path, for when the current page of a class has no free block. In
//! order of cost: take in the freed blocks of the queued pages or carve fresh
//! ones, rescue a full page that other threads freed into, take over a page an exited thread
//! abandoned, claim a fresh page from the arena (the region read path). Also the moves of a
//! page between a class's queue and its full list, which the free paths use too.
//!
//! Layer: `heap`; calls `heap::heap_core` (the struct), `pages`, `page_blocks`, `abandon`,
//! `size_class`, `arena` (claiming pages), `abort` and `os`.

use super::counters::COUNT;
use super::heap_core::{EMPTY_PAGE, HeapCore, HeapState, NoHeap};
use super::page_blocks;
use super::pages;
use super::size_class::{NUM_CLASSES, class_size, page_kind};
use crate::arena::ARENA;
use crate::arena::page::{Block, Page};
use crate::sync::atomic::Ordering;

/// Full pages inspected for frees from other threads before claiming a new page.
const FULL_SCAN_BUDGET: usize = 8;
/// Abandoned pages tried before claiming a new page.
const RECLAIM_BUDGET: usize = 4;

/// Which end of a class's queue a page goes to.
#[derive(Clone, Copy)]
pub(super) enum QueueEnd {
    /// The next page to allocate from.
    Front,
    /// After the pages already queued.
    Back,
}

impl HeapCore {
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
                // One test for counting and sampling both, off or on (see `countdown`).
                if self.count_down(size) {
                    if self.counters.modes() == COUNT {
                        // Counting alone (the count stops every allocation): count here.
                        self.counters.on_alloc_with(|| {
                            if USABLE {
                                // The block size from the page (a line the pop has just read),
                                // not the class table: see `global` on statics the fast paths
                                // may name. Relaxed: fixed while the page is in use, and ours.
                                page.block_size.load(Ordering::Relaxed)
                            } else {
                                size
                            }
                        });
                        self.stop_next_allocation();
                        return block.cast();
                    }
                    return self.alloc_past_countdown::<ZERO, USABLE>(page, block, size);
                }
                return block.cast();
            }
        }
        self.alloc_generic::<N, ZERO, USABLE>(class, size)
    }

    /// The malloc fast path's end when the heap's count-down ran out (see `countdown`):
    /// `block`, just popped from `page` for a request of `size` bytes, is counted if counting
    /// is on, and sampled if a sample is due.
    #[inline(never)]
    pub(super) fn alloc_past_countdown<const ZERO: bool, const USABLE: bool>(
        &self,
        page: &'static Page,
        block: *mut Block,
        size: usize,
    ) -> *mut u8 {
        // The block size from the page (a line the pop has just read), not the class table:
        // see `global` on statics the fast paths may name. Relaxed: fixed while the page is in
        // use, and it is ours.
        self.counters.on_alloc_with(|| {
            if USABLE {
                page.block_size.load(Ordering::Relaxed)
            } else {
                size
            }
        });
        if self.settle(size) {
            return self.alloc_sampled::<ZERO, USABLE>(page, block, size);
        }
        block.cast()
    }

    /// The malloc path when the current page of `class` has no free block (see
    /// [`HeapCore::alloc`]).
    #[inline(never)]
    pub(super) fn alloc_generic<N: NoHeap, const ZERO: bool, const USABLE: bool>(
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
                self.to_full(class, page);
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
                page.owner.store(self.id.get(), Ordering::Relaxed);
                pages::collect(page);
                if !pages::has_room(page) {
                    self.to_full(class, page);
                    continue;
                }
                if page.free.get().is_null() {
                    pages::extend(page);
                }
                self.to_queue(class, page, QueueEnd::Front);
                return Some(page);
            }
            // 4. A fresh page from the arena (the region read path).
            let claim = ARENA.claim_page(page_kind(class), self.tally())?;
            pages::init(claim.page, class, claim.fresh, self.id.get());
            pages::extend(claim.page);
            self.to_queue(class, claim.page, QueueEnd::Front);
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
                pages::collect(page);
                if pages::has_room(page) {
                    self.unfull(class, page, QueueEnd::Front);
                    return Some(page);
                }
                full.remove(page);
                full.push_back(page);
            }
            if core::ptr::eq(full.first_ptr(), page) {
                break; // the only full page
            }
        }
        None
    }

    /// Puts `page`, ours and on none of our lists, on the queue of `class`, and points the
    /// fast path at the queue's first page.
    ///
    /// # Safety
    /// We own `page`, which is of `class` and on none of our lists.
    pub(super) unsafe fn to_queue(&self, class: usize, page: &'static Page, end: QueueEnd) {
        let queue = &self.queues[class];
        // SAFETY: our page, on no list (caller).
        unsafe {
            match end {
                QueueEnd::Front => queue.push_front(page),
                QueueEnd::Back => queue.push_back(page),
            }
        }
        self.sync_current(class);
    }

    /// Puts `page`, ours and on none of our lists, on the full list of `class` (mimalloc's
    /// `mi_page_to_full`): its full flag sends the owner's next free into it down the slow
    /// path, which brings it back with [`unfull`](Self::unfull).
    ///
    /// # Safety
    /// As for [`to_queue`](Self::to_queue).
    pub(super) unsafe fn to_full(&self, class: usize, page: &'static Page) {
        // SAFETY: our page, on no list (caller).
        unsafe { self.full[class].push_back(page) };
        pages::set_full_flag(page, self.id.get(), true);
    }

    /// Moves `page` from the full list of `class` to its queue (mimalloc's
    /// `_mi_page_unfull`), clearing its full flag.
    ///
    /// # Safety
    /// We own `page`, which is on the full list of `class`.
    pub(super) unsafe fn unfull(&self, class: usize, page: &'static Page, end: QueueEnd) {
        // SAFETY: our page, on this list (caller).
        unsafe {
            self.full[class].remove(page);
            pages::set_full_flag(page, self.id.get(), false);
            self.to_queue(class, page, end);
        }
    }

    /// Points the fast path at the first queued page of `class` (never, in checked mode: its
    /// allocations all take the generic path).
    pub(super) fn sync_current(&self, class: usize) {
        let first = self.queues[class].first_ptr();
        self.current[class].set(if first.is_null() || self.checked.get() {
            &raw const EMPTY_PAGE
        } else {
            first
        });
    }
}
