//! Freeing into a heap's pages, as mimalloc's `free.c`: the owner's fast path (compare the
//! page's `owner` with our id, check the block, mark it freed, push it onto `local_free`), a
//! suspected double free, a free we count, a free into one of our full pages, and a free into
//! another heap's page (a remote free, which may adopt an abandoned page it empties); then
//! what happens to a page that has no live block left.
//!
//! Layer: `heap`; calls `heap::heap_core` (the struct), `alloc_path` (the queue moves),
//! `pages`, `page_blocks`, `double_free`, `abandon`, `modes`, `arena` (releasing pages),
//! `abort` and `purger`.

use super::alloc_path::QueueEnd;
use super::double_free;
use super::heap_core::{FALLBACK_HEAP_ID, HeapCore, HeapState, NoHeap};
use super::modes;
use super::page_blocks;
use super::pages;
use crate::arena::ARENA;
use crate::arena::page::{Block, OWNER_FULL_FLAG, Page};
use crate::sync::atomic::Ordering;

impl HeapCore {
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
    pub(super) unsafe fn free_owned(&self, page: &'static Page, block: *mut Block) {
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

    /// The free path when the page's owner is not our `fast_free_owner`: a free we count
    /// (requested bytes: `requested`, or with `USABLE` the whole block), a free into one of
    /// our full pages, or a free into another heap's page.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
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
        let id = self.id.get();
        // Relaxed: as in `free`.
        let owner = page.owner.load(Ordering::Relaxed);
        if owner == id {
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
        if owner == id | OWNER_FULL_FLAG {
            // SAFETY: our page; the block is a live block of it (caller).
            unsafe { self.free_into_full_page(page, block) };
            self.counters.on_free(requested);
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { self.free_remote::<N>(page, block, requested) };
        }
    }

    /// The owner's free into one of its full pages: the page has room again, so it goes back
    /// to its class's queue.
    ///
    /// # Safety
    /// We own `page`, which is on our full list; `block` is a carved, live block of it.
    unsafe fn free_into_full_page(&self, page: &'static Page, block: *mut Block) {
        // SAFETY: owner (caller).
        unsafe {
            if double_free::mark_freed(page, block, self.free_key.get())
                && double_free::owner_confirms(page, block)
            {
                crate::abort::double_free(block.cast());
            }
            let empty = pages::push_local(page, block);
            self.unfull(page.class.get() as usize, page, QueueEnd::Back);
            if empty {
                self.page_emptied(page);
            }
        }
    }

    /// A free into a page this heap does not own: another thread's, an abandoned one, or the
    /// fallback heap's. `self` is the calling thread's heap (isolated heaps free only into
    /// their own pages), perhaps a sentinel, which counts through `N`.
    ///
    /// # Safety
    /// `block` is a carved, live block of `page`, given up by the caller.
    unsafe fn free_remote<N: NoHeap>(
        &self,
        page: &'static Page,
        block: *mut Block,
        requested: usize,
    ) {
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
                page.owner.store(self.id.get(), Ordering::Relaxed);
                if pages::has_room(page) {
                    self.to_queue(class, page, QueueEnd::Back);
                } else {
                    self.to_full(class, page);
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
        if self.id.get() != FALLBACK_HEAP_ID {
            crate::purger::poke();
        }
    }
}
