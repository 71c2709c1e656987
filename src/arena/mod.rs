//! The arena: reservations of address space split into regions, Linux-VMA style.
//!
//! * Lock-free: [`Arena::lookup`] (pointer → page or large block, for `free`) and the
//!   speculative [`Arena::usable_size`].
//! * Region read path (the refill path): [`Arena::claim_page`] takes a small-object region in
//!   shared mode with `start_read` and claims a page with atomics; many threads do this on
//!   one region at once. If the region is write-locked it falls back to the arena lock in
//!   shared mode.
//! * Write sessions (remap operations): creating page regions, large blocks, removing regions,
//!   purging ([`Arena::collect`]). Each takes the arena write lock, marks only the regions it
//!   changes, and releases all marks when the session ends.
//!
//! Bookkeeping that only write sessions touch (pools, free ranges, region lists) lives in
//! [`ArenaState`] behind the lock.

pub(crate) mod meta;
pub(crate) mod page;
pub(crate) mod pagemap;
pub(crate) mod ranges;
pub(crate) mod region;

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use crate::config::{
    MAX_RESERVATIONS, PageKind, REMAP_CONGRUENCE, RESERVATION_ALIGN, RESERVATION_SIZE, SLICE_SIZE,
    SMALL_REGION_SIZE, align_up,
};
use crate::os::{Os, Remap};
use crate::stats::{ArenaCounters, Stats, adjust, bump};
use crate::sync::arena_lock::{ArenaLock, ArenaWriteGuard};
use crate::sync::atomic::{AtomicPtr, Ordering};
use crate::sync::region_lock::ReadFail;
use meta::Descriptors;
use page::{NO_OWNER, Page, PageTable};
use pagemap::{Entry, PageMap};
use ranges::FreeRanges;
use region::{Claim, Region, RegionKind};

pub(crate) struct Arena<O: Os> {
    lock: ArenaLock,
    state: UnsafeCell<ArenaState>,
    map: PageMap,
    pub(crate) os: O,
    /// Per page kind, a region that recently had free pages: where refills look first.
    hints: [AtomicPtr<Region>; PageKind::COUNT],
    pub(crate) counters: ArenaCounters,
}

// SAFETY: `state` is only reached through the arena lock (exclusively in write sessions,
// shared under the read lock); everything else is atomics or immutable.
unsafe impl<O: Os> Sync for Arena<O> {}

/// What only the arena lock's holders see.
struct ArenaState {
    descriptors: Descriptors,
    free: FreeRanges,
    /// Small-object regions per page kind, linked through `list_next`/`list_prev`.
    page_lists: [*mut Region; PageKind::COUNT],
    reservation_count: usize,
    /// Bytes of page-map leaves reserved.
    leaf_bytes: usize,
}

impl ArenaState {
    fn publish_metadata(&self, counters: &ArenaCounters) {
        // Relaxed: statistics.
        counters.metadata.store(
            self.descriptors.reserved() + self.leaf_bytes,
            Ordering::Relaxed,
        );
    }
}

/// A remap operation in progress: the arena write lock and exclusive access to its state.
struct WriteSession<'a, O: Os> {
    arena: &'a Arena<O>,
    guard: ArenaWriteGuard<'a>,
    state: &'a mut ArenaState,
}

/// Aborts unless `region` still holds the live large block at `ptr`: a realloc or free of a
/// block that was already freed (or never allocated) must not go on. Caller holds the arena
/// write lock.
fn check_large(region: &Region, ptr: *mut u8) {
    if region.kind() != RegionKind::Large || region.start() != ptr || !region.lock.is_attached() {
        crate::abort::invalid_free(ptr);
    }
}

/// Reads a region link (Relaxed: links change only under the arena write lock, and readers of
/// them hold the arena lock).
fn region_at(link: &AtomicPtr<Region>) -> Option<&'static Region> {
    // SAFETY: region descriptors are never freed.
    unsafe { link.load(Ordering::Relaxed).as_ref() }
}

impl<O: Os> Arena<O> {
    pub(crate) const fn new(os: O) -> Arena<O> {
        Arena {
            lock: ArenaLock::new(),
            state: UnsafeCell::new(ArenaState {
                descriptors: Descriptors::new(),
                free: FreeRanges::new(),
                page_lists: [core::ptr::null_mut(); PageKind::COUNT],
                reservation_count: 0,
                leaf_bytes: 0,
            }),
            map: PageMap::new(),
            os,
            hints: [const { AtomicPtr::new(core::ptr::null_mut()) }; PageKind::COUNT],
            counters: ArenaCounters::new(),
        }
    }

    fn write(&self) -> WriteSession<'_, O> {
        let guard = self.lock.write();
        bump(&self.counters.write_sessions, 1);
        // SAFETY: the write lock gives this session exclusive access to the state until the
        // guard (held in the session) drops.
        let state = unsafe { &mut *self.state.get() };
        WriteSession {
            arena: self,
            guard,
            state,
        }
    }

    fn with_read<R>(&self, f: impl FnOnce(&ArenaState) -> R) -> R {
        let _shared = self.lock.read();
        // SAFETY: in shared mode no write session runs, so nobody mutates the state.
        f(unsafe { &*self.state.get() })
    }

    // ---------------------------------------------------------------- lock-free lookups

    /// What the page map says about `addr`. No lock; exact for addresses of live blocks.
    #[inline(always)]
    pub(crate) fn lookup(&self, addr: usize) -> Entry {
        self.map.lookup(addr)
    }

    /// Bytes usable from `addr` to the end of its block, or `None` if `addr` is not in a block
    /// the arena handed out. Lock-free: a speculative read validated by the arena sequence,
    /// falling back to the arena read lock while remap operations keep it busy.
    pub(crate) fn usable_size(&self, addr: usize) -> Option<usize> {
        for _ in 0..2 {
            let Some(seq) = self.lock.speculate_try_begin() else {
                break;
            };
            let result = self.usable_size_unvalidated(addr);
            if !self.lock.speculate_retry(seq) {
                bump(&self.counters.spec_success, 1);
                return result;
            }
            bump(&self.counters.spec_retry, 1);
        }
        bump(&self.counters.spec_retry, 1);
        self.with_read(|_| self.usable_size_unvalidated(addr))
    }

    /// Reads only atomics of type-stable descriptors, so it is safe on any address at any
    /// time; its answer is only meaningful once validated.
    fn usable_size_unvalidated(&self, addr: usize) -> Option<usize> {
        match self.lookup(addr) {
            Entry::Page(page) => {
                // Relaxed: validated by the caller.
                let size = page.block_size.load(Ordering::Relaxed);
                let start = page.start.load(Ordering::Relaxed) as usize;
                (size != 0 && addr >= start).then(|| size - (addr - start) % size)
            }
            Entry::Large(region) => {
                let start = region.start() as usize;
                (addr >= start && addr < region.end()).then(|| region.end() - addr)
            }
            Entry::None => None,
        }
    }

    // ---------------------------------------------------------------- the region read path

    /// Claims a free page of `kind` for a heap.
    pub(crate) fn claim_page(&self, kind: PageKind) -> Option<Claim> {
        let claim = self
            .claim_from_hint(kind)
            .or_else(|| self.with_read(|state| self.claim_from_list(state, kind)))
            .or_else(|| {
                let mut session = self.write();
                self.claim_from_list(session.state, kind)
                    .or_else(|| session.create_page_region(kind)?.claim_page())
            })?;
        adjust(&self.counters.pages_in_use[kind.index()], 1);
        if claim.fresh {
            adjust(&self.counters.committed, kind.page_size() as isize);
        }
        Some(claim)
    }

    /// The lock-free attempt: read-lock the hinted region (`vma_start_read`) and claim a page.
    fn claim_from_hint(&self, kind: PageKind) -> Option<Claim> {
        // Relaxed: the hint is only a pointer into type-stable memory; the region lock's
        // Acquire orders everything we then read.
        let hint = self.hints[kind.index()].load(Ordering::Relaxed);
        // SAFETY: region descriptors are never freed.
        let region = unsafe { hint.as_ref() }?;
        match region.lock.start_read(&self.lock) {
            Ok(_read) => {
                bump(&self.counters.read_fast, 1);
                // The descriptor may have been reused since it became the hint: check identity
                // now that it cannot change.
                if region.page_kind() == Some(kind) {
                    region.claim_page()
                } else {
                    bump(&self.counters.read_retry, 1);
                    None
                }
            }
            Err(ReadFail::Locked) => {
                bump(&self.counters.read_fallback, 1);
                None
            }
            Err(ReadFail::Detached) => {
                bump(&self.counters.read_retry, 1);
                None
            }
        }
    }

    /// Claims a page from any region of `kind`. Caller holds the arena lock (either mode), so
    /// no write session can be changing these regions.
    fn claim_from_list(&self, state: &ArenaState, kind: PageKind) -> Option<Claim> {
        // SAFETY: list entries are region descriptors, never freed.
        let mut cursor = unsafe { state.page_lists[kind.index()].as_ref() };
        while let Some(region) = cursor {
            if let Some(claim) = region.claim_page() {
                // Relaxed: a hint (see `claim_from_hint`).
                self.hints[kind.index()]
                    .store((region as *const Region).cast_mut(), Ordering::Relaxed);
                return Some(claim);
            }
            cursor = region_at(&region.list_next);
        }
        None
    }

    /// Returns a page whose blocks are all free to its region. The caller owns the page and has
    /// reset its owner fields.
    pub(crate) fn release_page(&self, page: &Page) {
        // Relaxed: constant while the region is attached, which it stays while we own a page.
        let region = page.region.load(Ordering::Relaxed);
        // SAFETY: descriptors are never freed; an owned page's region is attached.
        let region = unsafe { &*region };
        // Relaxed: statistics.
        page.owner.store(NO_OWNER, Ordering::Relaxed);
        page.block_size.store(0, Ordering::Relaxed);
        if let Some(kind) = region.page_kind() {
            adjust(&self.counters.pages_in_use[kind.index()], -1);
        }
        region.release_page(page.index.load(Ordering::Relaxed) as usize);
    }

    // ---------------------------------------------------------------- large blocks

    /// Creates a region holding one block of at least `size` bytes aligned to `align`. Returns
    /// the region and whether its memory is known to be zero.
    pub(crate) fn alloc_large(&self, size: usize, align: usize) -> Option<(&'static Region, bool)> {
        let len = size.checked_add(SLICE_SIZE - 1)? & !(SLICE_SIZE - 1);
        let align = align.max(SLICE_SIZE);
        let mut session = self.write();
        let region = session.take_range(len, align, 0)?;
        let zeroed = !region.is_dirty();
        region.set_kind(RegionKind::Large);
        region.set_dirty(true);
        let start = region.start();
        if !self.os.commit(NonNull::new(start)?, len) {
            session
                .state
                .free
                .release(&mut session.state.descriptors, region, !zeroed);
            return None;
        }
        self.map.set_large(start as usize, len, region);
        region.lock.attach(&session.guard);
        adjust(&self.counters.large_regions, 1);
        adjust(&self.counters.large_bytes, len as isize);
        adjust(&self.counters.committed, len as isize);
        Some((region, zeroed))
    }

    /// Frees the large block at `ptr`, held in `region`. Aborts if `ptr` is not (or no longer)
    /// the start of a live large block.
    pub(crate) fn free_large(&self, region: &'static Region, ptr: *mut u8) {
        let len = region.len();
        if region.start() != ptr || len == 0 {
            crate::abort::invalid_free(ptr);
        }
        // The block is still ours, so its memory can go back to the OS before we take the lock:
        // only the bookkeeping below needs the write session.
        let purged = NonNull::new(ptr).is_some_and(|p| self.os.purge(p, len));
        let session = self.write();
        // Re-check under the lock: a concurrent double free may have removed the region.
        check_large(region, ptr);
        region.lock.start_write(&session.guard);
        region.lock.detach(&session.guard);
        self.map.clear(ptr as usize, len);
        let state = &mut *session.state;
        state.free.release(&mut state.descriptors, region, !purged);
        adjust(&self.counters.large_regions, -1);
        adjust(&self.counters.large_bytes, -(len as isize));
        adjust(&self.counters.committed, -(len as isize));
        if purged {
            bump(&self.counters.purged_bytes, len as u64);
        }
    }

    /// Resizes a large block in place if the arena allows it: shrinking returns the tail as a
    /// free range (purged), growing takes the front of the free range right after the block.
    /// Returns false (and changes nothing) if the block cannot be resized in place.
    pub(crate) fn resize_large_in_place(
        &self,
        region: &'static Region,
        ptr: *mut u8,
        new_size: usize,
    ) -> bool {
        let Some(new_len) = new_size
            .checked_add(SLICE_SIZE - 1)
            .map(|n| n & !(SLICE_SIZE - 1))
        else {
            return false;
        };
        let old_len = region.len();
        if new_len == old_len {
            return true;
        }
        // Growing needs a free range right after the block. Look without any lock first, so a
        // realloc that cannot grow in place does not queue behind other write sessions.
        if new_len > old_len && !self.free_after_speculative(region, new_len - old_len) {
            return false;
        }
        let session = self.write();
        check_large(region, ptr);
        region.lock.start_write(&session.guard);
        let state = &mut *session.state;
        if new_len < old_len {
            let (tail, tail_len) = (ptr.wrapping_add(new_len), old_len - new_len);
            let purged = NonNull::new(tail).is_some_and(|t| self.os.purge(t, tail_len));
            if !state.free.split_tail(
                &mut state.descriptors,
                &self.os,
                region,
                tail,
                tail_len,
                !purged,
            ) {
                return false;
            }
            region.set_range(ptr, new_len);
            self.map.clear(tail as usize, tail_len);
            adjust(&self.counters.large_bytes, -(tail_len as isize));
            adjust(&self.counters.committed, -(tail_len as isize));
            if purged {
                bump(&self.counters.purged_bytes, tail_len as u64);
            }
        } else {
            let grow = new_len - old_len;
            let Some(next) = region_at(&region.addr_next) else {
                return false;
            };
            if next.start() as usize != region.end()
                || !state.free.take_front(&mut state.descriptors, next, grow)
            {
                return false;
            }
            let old_end = ptr.wrapping_add(old_len);
            if !NonNull::new(old_end).is_some_and(|e| self.os.commit(e, grow)) {
                // Put the range back: give it to the block's neighbour list as a free tail.
                state.free.split_tail(
                    &mut state.descriptors,
                    &self.os,
                    region,
                    old_end,
                    grow,
                    true,
                );
                return false;
            }
            region.set_range(ptr, new_len);
            self.map.set_large(old_end as usize, grow, region);
            adjust(&self.counters.large_bytes, grow as isize);
            adjust(&self.counters.committed, grow as isize);
            bump(&self.counters.grown_in_place_bytes, grow as u64);
        }
        true
    }

    /// True if a free range of at least `grow` bytes may follow `region`: a lock-free
    /// speculative read of the neighbour, validated by the arena sequence (`try_begin` /
    /// `retry`). Errs on the side of "maybe" when it cannot tell.
    fn free_after_speculative(&self, region: &Region, grow: usize) -> bool {
        let Some(seq) = self.lock.speculate_try_begin() else {
            bump(&self.counters.spec_retry, 1);
            return true; // a write session is running: decide under the lock
        };
        // Only atomics of type-stable descriptors are read, so any interleaving is safe; the
        // answer is used only if the sequence did not move.
        let end = region.end();
        let fits = region_at(&region.addr_next).is_some_and(|n| {
            n.kind() == RegionKind::Free && n.start() as usize == end && n.len() >= grow
        });
        if self.lock.speculate_retry(seq) {
            bump(&self.counters.spec_retry, 1);
            return true;
        }
        bump(&self.counters.spec_success, 1);
        fits
    }

    /// Moves a large block into a new region of at least `new_size` bytes by moving its pages
    /// with the OS (`mremap`), so no byte is copied. The new block starts at an address
    /// congruent to the old one modulo 2 MiB (and aligned to `align`), which lets the kernel
    /// move whole page tables. Returns `None` if it could not (then nothing changed).
    pub(crate) fn remap_large(
        &self,
        region: &'static Region,
        ptr: *mut u8,
        new_size: usize,
        align: usize,
    ) -> Option<*mut u8> {
        let new_len = new_size.checked_add(SLICE_SIZE - 1)? & !(SLICE_SIZE - 1);
        let modulus = align.max(REMAP_CONGRUENCE);
        let mut session = self.write();
        check_large(region, ptr);
        let old_len = region.len();
        if new_len < old_len {
            return None;
        }
        let dest = session.take_range(new_len, modulus, ptr as usize % modulus)?;
        region.lock.start_write(&session.guard);
        let moved = match (NonNull::new(ptr), NonNull::new(dest.start())) {
            (Some(from), Some(to)) => self.os.remap(from, to, old_len),
            _ => Remap::Failed,
        };
        let state = &mut *session.state;
        if moved == Remap::Failed || !self.os.commit(NonNull::new(dest.start())?, new_len) {
            state.free.release(&mut state.descriptors, dest, true);
            return None;
        }
        // The old range is gone from the page map and returned, now zero (or, if the OS could
        // not map it again, kept out of circulation as a detached, never-freed region).
        region.lock.detach(&session.guard);
        self.map.clear(ptr as usize, old_len);
        if moved == Remap::Moved {
            state.free.release(&mut state.descriptors, region, false);
        }
        dest.set_kind(RegionKind::Large);
        dest.set_dirty(true);
        // Relaxed: statistics.
        dest.requested
            .store(region.requested.load(Ordering::Relaxed), Ordering::Relaxed);
        self.map.set_large(dest.start() as usize, new_len, dest);
        dest.lock.attach(&session.guard);
        adjust(
            &self.counters.large_bytes,
            new_len as isize - old_len as isize,
        );
        adjust(
            &self.counters.committed,
            new_len as isize - old_len as isize,
        );
        bump(&self.counters.remaps, 1);
        bump(&self.counters.remapped_bytes, old_len as u64);
        Some(dest.start())
    }

    // ---------------------------------------------------------------- returning memory

    /// Gives free pages and empty small-object regions back to the OS now. Marks every
    /// small-object region while it works: refills fall back to the arena lock until it ends.
    pub(crate) fn collect(&self) {
        let mut session = self.write();
        for kind in PageKind::ALL {
            // SAFETY: list entries are region descriptors, never freed.
            let mut cursor = unsafe { session.state.page_lists[kind.index()].as_ref() };
            while let Some(region) = cursor {
                cursor = region_at(&region.list_next);
                region.lock.start_write(&session.guard);
                if region.all_pages_free() {
                    session.remove_page_region(region);
                } else {
                    session.purge_free_pages(region);
                }
            }
        }
    }

    // ---------------------------------------------------------------- statistics

    pub(crate) fn fill_stats(&self, stats: &mut Stats) {
        self.counters.fill(stats);
        stats.bytes_in_use += self.small_bytes_in_use();
    }

    /// Bytes of small blocks in use: the sum of `used * block_size` over the claimed pages.
    /// The owners keep `used` current on every malloc and free anyway, so this costs the fast
    /// paths nothing; the price is a walk over the page descriptors here (under the arena read
    /// lock, so regions stay put), a few microseconds per GiB of small objects.
    fn small_bytes_in_use(&self) -> usize {
        self.with_read(|state| {
            let mut total = 0;
            for kind in PageKind::ALL {
                // SAFETY: list entries are region descriptors, never freed.
                let mut cursor = unsafe { state.page_lists[kind.index()].as_ref() };
                while let Some(region) = cursor {
                    for index in 0..kind.pages_per_region() {
                        let page = region.page(index);
                        // Relaxed: statistics; a page being released reads as 0 either way.
                        let size = page.block_size.load(Ordering::Relaxed);
                        total += page.used.get() as usize * size;
                    }
                    cursor = region_at(&region.list_next);
                }
            }
            total
        })
    }
}

impl<O: Os> WriteSession<'_, O> {
    /// Takes a free range starting at an address congruent to `phase` modulo `align`,
    /// reserving more address space if none fits.
    fn take_range(&mut self, size: usize, align: usize, phase: usize) -> Option<&'static Region> {
        let os = &self.arena.os;
        let state = &mut *self.state;
        if let Some(r) = state
            .free
            .take(&mut state.descriptors, os, size, align, phase)
        {
            return Some(r);
        }
        self.grow(size.checked_add(phase)?, align)?;
        let state = &mut *self.state;
        state
            .free
            .take(&mut state.descriptors, os, size, align, phase)
    }

    /// Adds a reservation with room for `size` bytes aligned to `align`.
    fn grow(&mut self, size: usize, align: usize) -> Option<()> {
        let arena = self.arena;
        let state = &mut *self.state;
        if state.reservation_count == MAX_RESERVATIONS {
            return None;
        }
        let align = align.max(RESERVATION_ALIGN);
        let needed = align_up(size, RESERVATION_ALIGN);
        // Ask for a full reservation; if the OS refuses (address-space limits, strict
        // overcommit) settle for less, down to what this request needs.
        let mut len = needed.max(RESERVATION_SIZE);
        let base = loop {
            if let Some(base) = arena.os.reserve(len, align) {
                break base;
            }
            if len == needed {
                return None;
            }
            len = align_up(len / 2, RESERVATION_ALIGN).max(needed);
        };
        let Some(new_leaves) = arena
            .map
            .ensure_leaves(&arena.os, base.as_ptr() as usize, len)
        else {
            arena.os.release(base, len);
            return None;
        };
        state.leaf_bytes += new_leaves * pagemap::LEAF_BYTES;
        let Some(region) = state.descriptors.take_region(&arena.os) else {
            arena.os.release(base, len);
            return None;
        };
        region.set_kind(RegionKind::Free);
        region.set_range(base.as_ptr(), len);
        region.set_dirty(false);
        state.free.add_reservation(region);
        state.reservation_count += 1;
        adjust(&arena.counters.reserved, len as isize);
        state.publish_metadata(&arena.counters);
        Some(())
    }

    /// Creates a small-object region of `kind`, attached and marked for this session.
    fn create_page_region(&mut self, kind: PageKind) -> Option<&'static Region> {
        let arena = self.arena;
        let region = self.take_range(SMALL_REGION_SIZE, kind.page_size(), 0)?;
        let state = &mut *self.state;
        let dirty = region.is_dirty();
        let Some(table) = state.descriptors.take_table(&arena.os) else {
            state.free.release(&mut state.descriptors, region, dirty);
            return None;
        };
        let start = region.start();
        if !arena.os.commit(NonNull::new(start)?, SMALL_REGION_SIZE) {
            state.descriptors.give_table(table);
            state.free.release(&mut state.descriptors, region, dirty);
            return None;
        }
        region.set_kind(RegionKind::Pages(kind));
        region.set_table((table as *const PageTable).cast_mut());
        region.reset_page_maps(dirty);
        for (index, page) in table.pages.iter().take(kind.pages_per_region()).enumerate() {
            let page_start = start.wrapping_add(index << kind.shift());
            // Relaxed: the region is not attached yet; `attach` publishes all of this.
            page.start.store(page_start, Ordering::Relaxed);
            page.region
                .store((region as *const Region).cast_mut(), Ordering::Relaxed);
            page.index.store(index as u32, Ordering::Relaxed);
            page.owner.store(NO_OWNER, Ordering::Relaxed);
            page.block_size.store(0, Ordering::Relaxed);
            page.xthread_free
                .store(core::ptr::null_mut(), Ordering::Relaxed);
            arena
                .map
                .set_page(page_start as usize, kind.page_size(), page);
        }
        region.lock.attach(&self.guard);
        // Link at the head of the kind's list.
        let head = state.page_lists[kind.index()];
        region
            .list_prev
            .store(core::ptr::null_mut(), Ordering::Relaxed);
        region.list_next.store(head, Ordering::Relaxed);
        // SAFETY: list entries are region descriptors, never freed.
        if let Some(head) = unsafe { head.as_ref() } {
            head.list_prev
                .store((region as *const Region).cast_mut(), Ordering::Relaxed);
        }
        state.page_lists[kind.index()] = (region as *const Region).cast_mut();
        arena.hints[kind.index()].store((region as *const Region).cast_mut(), Ordering::Relaxed);
        adjust(&arena.counters.page_regions[kind.index()], 1);
        state.publish_metadata(&arena.counters);
        Some(region)
    }

    /// Removes a marked small-object region whose pages are all free; its range becomes free
    /// (and purged).
    fn remove_page_region(&mut self, region: &'static Region) {
        let arena = self.arena;
        let kind = region.page_kind().expect("a pages region");
        debug_assert!(region.lock.is_write_locked(&self.guard) && region.all_pages_free());
        region.lock.detach(&self.guard);
        let (start, len) = (region.start(), region.len());
        arena.map.clear(start as usize, len);
        let dirty_bytes = region.dirty_page_count() * kind.page_size();
        let purged = NonNull::new(start).is_some_and(|p| arena.os.purge(p, len));
        adjust(&arena.counters.committed, -(dirty_bytes as isize));
        if purged {
            bump(&arena.counters.purged_bytes, dirty_bytes as u64);
        }
        // Unlink from the kind's list.
        let state = &mut *self.state;
        let (prev, next) = (region_at(&region.list_prev), region_at(&region.list_next));
        let next_ptr = next.map_or(core::ptr::null_mut(), |n| (n as *const Region).cast_mut());
        match prev {
            Some(prev) => prev.list_next.store(next_ptr, Ordering::Relaxed),
            None => state.page_lists[kind.index()] = next_ptr,
        }
        if let Some(next) = next {
            next.list_prev.store(
                prev.map_or(core::ptr::null_mut(), |p| (p as *const Region).cast_mut()),
                Ordering::Relaxed,
            );
        }
        let this = (region as *const Region).cast_mut();
        // Relaxed: a hint; stale hints are harmless (identity is checked after locking).
        let _ = arena.hints[kind.index()].compare_exchange(
            this,
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        // SAFETY: page tables are never freed; the region is detached, so no one claims from it.
        state.descriptors.give_table(unsafe { &*region.table() });
        region.set_table(core::ptr::null_mut());
        state.free.release(&mut state.descriptors, region, !purged);
        adjust(&arena.counters.page_regions[kind.index()], -1);
    }

    /// Gives the free, touched pages of a marked region back to the OS.
    fn purge_free_pages(&mut self, region: &'static Region) {
        let arena = self.arena;
        let Some(kind) = region.page_kind() else {
            return;
        };
        debug_assert!(region.lock.is_write_locked(&self.guard));
        for word in 0..region::BITMAP_WORDS {
            let mut bits = region.purgeable_pages(word);
            while bits != 0 {
                // Purge each run of adjacent pages with one call.
                let first = bits.trailing_zeros() as usize;
                let run = (bits >> first).trailing_ones() as usize;
                let run_bits = if run == 64 {
                    u64::MAX
                } else {
                    ((1u64 << run) - 1) << first
                };
                bits &= !run_bits;
                let page = region.page(word * 64 + first);
                let start = page.start.load(Ordering::Relaxed);
                let bytes = run * kind.page_size();
                if NonNull::new(start).is_some_and(|p| arena.os.purge(p, bytes)) {
                    region.clear_dirty(word, run_bits);
                    adjust(&arena.counters.committed, -(bytes as isize));
                    bump(&arena.counters.purged_bytes, bytes as u64);
                }
            }
        }
    }
}

/// The OS back end of the process arena: the real one, or under Miri (which cannot emulate
/// address-space reservations) the fake one.
#[cfg(not(miri))]
pub(crate) type PlatformOs = crate::os::linux::LinuxOs;
#[cfg(miri)]
pub(crate) type PlatformOs = crate::os::fake::FakeOs;

const fn platform_os() -> PlatformOs {
    #[cfg(not(miri))]
    return crate::os::linux::LinuxOs::new();
    #[cfg(miri)]
    return crate::os::fake::FakeOs::new(usize::MAX);
}

/// The process's arena, shared by every heap.
pub(crate) static ARENA: Arena<PlatformOs> = Arena::new(platform_os());

#[cfg(test)]
mod tests;
