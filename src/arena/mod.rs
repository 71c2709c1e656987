//! The arena: reservations of address space split into regions, Linux-VMA style.
//!
//! * Lock-free: [`Arena::lookup`] (pointer → page or large block, for `free`) and the
//!   speculative reads ([`Arena::usable_size`], the in-place growth check).
//! * The region read path ([`refill`]): a heap that needs a page takes a small-object region in
//!   shared mode with `start_read` and claims a page with atomics; many threads do this on one
//!   region at once. If the hinted region is full, it tries the kind's other regions the same
//!   way, lock-free; only a region marked by a write session sends it to the arena lock in
//!   shared mode.
//! * Write sessions (remap operations): creating page regions ([`refill`]), large blocks and
//!   their resizing and moving ([`blocks`]), reserving more address space ([`growth`]),
//!   purging and removing regions ([`purge`]). Each takes the arena write lock, marks only the
//!   regions it changes, and releases all marks when the session ends.
//!
//! Bookkeeping that only write sessions touch (pools, free ranges, region lists) lives in
//! [`ArenaState`] behind the lock.
//!
//! Layer: `arena`, above `sync` and `os`; calls `sync` (the arena lock), `os`, `config` and
//! `stats`. `heap`, `large`, `global`, `isolated`, `raw`, `purger` and `fork` call it.

mod blocks;
#[cfg(not(miri))]
mod fork;
mod growth;
pub(crate) mod huge;
pub(crate) mod large_block;
pub(crate) mod meta;
pub(crate) mod page;
pub(crate) mod pagemap;
mod purge;
mod range_purge;
pub(crate) mod ranges;
mod refill;
pub(crate) mod region;
mod region_pages;

use core::cell::UnsafeCell;
use core::mem::ManuallyDrop;

use crate::config::PageKind;
use crate::os::Os;
use crate::stats::{ArenaCounters, Stats, Tally, bump};
use crate::sync::arena_lock::{ArenaLock, ArenaWriteGuard};
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, Ordering};
use meta::Descriptors;
use pagemap::{Entry, PageMap};
use ranges::FreeRanges;
use region::Region;

pub(crate) struct Arena<O: Os> {
    lock: ArenaLock,
    state: UnsafeCell<ArenaState>,
    map: PageMap,
    os: O,
    /// Per page kind, a region that recently had free pages: where refills look first.
    hints: [AtomicPtr<Region>; PageKind::COUNT],
    /// Small-object regions per page kind, linked through `kind_next`/`kind_prev`. Changed
    /// only in write sessions; refills walk them without the lock (links are atomics of
    /// type-stable descriptors, published with Release).
    page_lists: [AtomicPtr<Region>; PageKind::COUNT],
    /// When the next purge is due (`u64::MAX`: nothing is waiting to be purged).
    next_purge: AtomicU64,
    /// Set while a thread runs a due purge, so others do not queue up behind it.
    purging: AtomicBool,
    /// Large blocks freed and not yet given back to the free ranges, linked through their
    /// regions' `large.queue_next` (see `Arena::queue_large_release`).
    queued_large: AtomicPtr<Region>,
    /// How long freed memory stays before it is purged, in ns (`u64::MAX`: not read yet).
    purge_delay: AtomicU64,
    /// The huge-page policy, once worked out (`huge::Policy`; 0: not yet).
    huge_policy: AtomicU8,
    /// Set once the small-object heap was big enough for huge pages (see `huge`).
    heap_is_big: AtomicBool,
    counters: ArenaCounters,
}

// SAFETY: `state` is only reached through the arena lock (exclusively in write sessions,
// shared under the read lock); everything else is atomics or immutable.
unsafe impl<O: Os> Sync for Arena<O> {}

/// What only the arena lock's holders see.
struct ArenaState {
    descriptors: Descriptors,
    free: FreeRanges,
    reservation_count: usize,
    /// Bytes of page-map leaves reserved.
    leaf_bytes: usize,
}

impl ArenaState {
    fn publish_metadata(&self, counters: &ArenaCounters) {
        // Relaxed: statistics.
        counters.metadata.store(
            self.descriptors.bytes_mapped() + self.leaf_bytes,
            Ordering::Relaxed,
        );
    }
}

/// A remap operation in progress: the arena write lock and exclusive access to its state.
/// Dropping it ends the session (releasing every region it marked) and records how long the
/// lock was held.
struct WriteSession<'a, O: Os> {
    arena: &'a Arena<O>,
    state: &'a mut ArenaState,
    started: u64,
    guard: ManuallyDrop<ArenaWriteGuard<'a>>,
}

impl<O: Os> WriteSession<'_, O> {
    /// Checks every small-object region and free range (`Region::validate`); the regions
    /// this session marked in full. Debug builds run it at the end of every session.
    #[cfg_attr(not(debug_assertions), allow(dead_code))] // tests call it in any profile
    pub(super) fn validate(&self) {
        for kind in PageKind::ALL {
            for region in self.arena.page_regions(kind) {
                assert_eq!(
                    region.page_kind(),
                    Some(kind),
                    "a region on another kind's list"
                );
                region.validate(&self.guard);
            }
        }
        self.state.free.validate(&self.guard);
    }
}

impl<O: Os> Drop for WriteSession<'_, O> {
    fn drop(&mut self) {
        // Every session ends by releasing the large blocks freed while the lock was busy.
        self.release_queued_large();
        // Relaxed: statistics.
        self.arena
            .counters
            .free_dirty
            .store(self.state.free.dirty_bytes, Ordering::Relaxed);
        #[cfg(debug_assertions)]
        self.validate();
        let held = self.arena.os.now_ns().saturating_sub(self.started);
        bump(&self.arena.counters.write_held_ns, held);
        // Relaxed: statistics.
        self.arena
            .counters
            .write_held_max_ns
            .fetch_max(held, Ordering::Relaxed);
        // SAFETY: dropped once, here, ending the session; the session is not used after.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        // A free that found the lock taken by us may have queued its block after we looked,
        // and a purge may have been left to us (see `purge`: both after the fence in
        // `release_queued_large_if_free`).
        self.arena.release_queued_large_if_free();
        self.arena.maybe_purge();
    }
}

/// Reads a region link. Acquire: pairs with the Release stores of the links lock-free readers
/// follow (a kind list's head and the `kind_next` that unlinking rewrites, the address links
/// of `ranges::set`), so a reader that follows one finds the descriptor initialised. The links
/// stored Relaxed (a new head's `kind_next`, which points at a descriptor published before;
/// every `kind_prev`; the queue of freed large blocks, published by its own CAS) need no
/// more: they are read only by the arena lock's holders or after that other publication.
fn region_at(link: &AtomicPtr<Region>) -> Option<&'static Region> {
    // SAFETY: region descriptors are never freed.
    unsafe { link.load(Ordering::Acquire).as_ref() }
}

fn as_ptr(region: &Region) -> *mut Region {
    (region as *const Region).cast_mut()
}

impl<O: Os> Arena<O> {
    pub(crate) const fn new(os: O) -> Arena<O> {
        Arena {
            lock: ArenaLock::new(),
            state: UnsafeCell::new(ArenaState {
                descriptors: Descriptors::new(),
                free: FreeRanges::new(),
                reservation_count: 0,
                leaf_bytes: 0,
            }),
            map: PageMap::new(),
            os,
            hints: [const { AtomicPtr::new(core::ptr::null_mut()) }; PageKind::COUNT],
            page_lists: [const { AtomicPtr::new(core::ptr::null_mut()) }; PageKind::COUNT],
            next_purge: AtomicU64::new(u64::MAX),
            purging: AtomicBool::new(false),
            queued_large: AtomicPtr::new(core::ptr::null_mut()),
            purge_delay: AtomicU64::new(u64::MAX),
            huge_policy: AtomicU8::new(0),
            heap_is_big: AtomicBool::new(false),
            counters: ArenaCounters::new(),
        }
    }

    /// The OS back end (the clock, the page size, metadata memory for other layers).
    pub(crate) fn os(&self) -> &O {
        &self.os
    }

    /// The number of small-object regions of `kind` (a statistic).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn page_region_count(&self, kind: PageKind) -> usize {
        // Relaxed: statistics.
        self.counters.page_regions[kind.index()].load(Ordering::Relaxed)
    }

    /// Checks every small-object region and free range in a write session of its own (see
    /// `WriteSession::validate`): for tests and fuzzing, in any profile.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn validate(&self) {
        self.write().validate();
    }

    /// The small-object regions of `kind`, front to back, each link read with Acquire as
    /// the lock-free walkers read them (see the ordering notes above). Under the arena lock
    /// (either mode) the walk sees every region of the kind; without it, regions may come
    /// and go meanwhile, and a region it yields may have been detached since (descriptors are
    /// never freed, so that is only a stale answer). The next region is read before a region
    /// is yielded.
    fn page_regions(&self, kind: PageKind) -> impl Iterator<Item = &'static Region> + '_ {
        let mut cursor = region_at(&self.page_lists[kind.index()]);
        core::iter::from_fn(move || {
            let region = cursor?;
            cursor = region_at(&region.kind_next);
            Some(region)
        })
    }

    /// Every small-object region, kind by kind (as for [`Arena::page_regions`]).
    fn all_page_regions(&self) -> impl Iterator<Item = &'static Region> + '_ {
        PageKind::ALL
            .into_iter()
            .flat_map(move |kind| self.page_regions(kind))
    }

    fn write(&self) -> WriteSession<'_, O> {
        self.session(self.lock.write())
    }

    /// A write session if the arena lock is free now: for paths that must never wait for one
    /// (frees, and the purges they trigger).
    fn try_write(&self) -> Option<WriteSession<'_, O>> {
        Some(self.session(self.lock.try_write()?))
    }

    fn session<'a>(&'a self, guard: ArenaWriteGuard<'a>) -> WriteSession<'a, O> {
        let started = self.os.now_ns();
        bump(&self.counters.write_sessions, 1);
        // SAFETY: the write lock gives this session exclusive access to the state until the
        // guard (held in the session) drops.
        let state = unsafe { &mut *self.state.get() };
        WriteSession {
            arena: self,
            state,
            started,
            guard: ManuallyDrop::new(guard),
        }
    }

    /// Runs `f` with the arena lock held in shared mode.
    ///
    /// A large free that finds the lock held queues its block for the holder to give back
    /// (`Arena::queue_large_release`), and a purge that finds it held leaves its work due. A write
    /// session gives the queue back when it ends; readers do both here, so that memory freed
    /// while `stats()` (or any other reader) held the lock is not stranded until some later
    /// slow path, which a quiet program may never run.
    fn with_read<R>(&self, f: impl FnOnce(&ArenaState) -> R) -> R {
        let result = {
            let _shared = self.lock.read();
            // SAFETY: in shared mode no write session runs, so nobody mutates the state.
            f(unsafe { &*self.state.get() })
        };
        // Both after the unlock, and the queue's and the schedule's reads after the fence in
        // `release_queued_large_if_free` (see `queue_large_release` and `purge`).
        self.release_queued_large_if_free();
        self.maybe_purge(); // one load when nothing is scheduled
        result
    }

    /// Runs `f` with the arena lock held in shared mode, as `stats()` holds it (for tests of
    /// what frees do meanwhile, through `crate::fuzzing`).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn with_shared_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        self.with_read(|_| f())
    }

    // ---------------------------------------------------------------- lock-free lookups

    /// What the page map says about `addr`. No lock; exact for addresses of live blocks.
    #[inline(always)]
    pub(crate) fn lookup(&self, addr: usize) -> Entry {
        self.map.lookup(addr)
    }

    /// The page of `addr` if it is a small block's address (no lock; exact for live blocks).
    #[inline(always)]
    pub(crate) fn lookup_page(&self, addr: usize) -> Option<&'static page::Page> {
        self.map.lookup_page(addr)
    }

    /// Bytes usable from `addr` to the end of its block, or `None` if `addr` is not in a block
    /// the arena handed out. Lock-free: a speculative read validated by the arena sequence,
    /// falling back to the arena read lock while remap operations keep it busy. Counts in
    /// `tally`.
    pub(crate) fn usable_size(&self, addr: usize, tally: &Tally) -> Option<usize> {
        for _ in 0..2 {
            let Some(seq) = self.lock.speculate_try_begin() else {
                break;
            };
            let result = self.usable_size_unvalidated(addr);
            if !self.lock.speculate_retry(seq) {
                tally.count(&tally.spec_success);
                return result;
            }
            tally.count(&tally.spec_retry);
        }
        tally.count(&tally.spec_retry);
        self.with_read(|_| self.usable_size_unvalidated(addr))
    }

    /// Reads only atomics of type-stable descriptors, so it is safe on any address at any
    /// time; its answer is only meaningful once validated.
    fn usable_size_unvalidated(&self, addr: usize) -> Option<usize> {
        match self.lookup(addr) {
            Entry::Page(page) => {
                // Relaxed: validated by the caller.
                let size = page.block_size.load(Ordering::Relaxed);
                let offset = addr.wrapping_sub(page.start.load(Ordering::Relaxed) as usize);
                let page_size = crate::config::PageKind::for_block(size).page_size();
                (size != 0 && size <= crate::config::MAX_SMALL_SIZE && offset < page_size)
                    .then(|| size - offset % size)
            }
            Entry::Large(region) => {
                let start = region.start() as usize;
                (addr >= start && addr < region.end()).then(|| region.end() - addr)
            }
            Entry::None => None,
        }
    }

    // ---------------------------------------------------------------- statistics

    /// Free bytes in the free ranges, and bytes reserved (for tests and fuzzing: they are
    /// equal once everything is freed and merged).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn free_and_reserved_bytes(&self) -> (usize, usize) {
        let free = self.with_read(|state| state.free.bytes);
        // Relaxed: statistics.
        (free, self.counters.reserved.load(Ordering::Relaxed))
    }

    pub(crate) fn fill_stats(&self, stats: &mut Stats) {
        self.counters.fill(stats);
        stats.bytes_in_use += self.small_bytes_in_use();
        stats.purge_delay_ms = self.purge_delay() / 1_000_000;
    }

    /// Bytes of small blocks in use: the sum of `used * block_size` over the claimed pages.
    /// The owners keep `used` current on every malloc and free anyway, so this costs the fast
    /// paths nothing; the price is a walk over the page descriptors here (under the arena read
    /// lock, so regions stay put), a few microseconds per GiB of small objects.
    fn small_bytes_in_use(&self) -> usize {
        self.with_read(|_| {
            let mut total = 0;
            for kind in PageKind::ALL {
                for region in self.page_regions(kind) {
                    for index in 0..kind.pages_per_region() {
                        let page = region.page(index);
                        // Relaxed: statistics; a page being released reads as 0 either way.
                        let size = page.block_size.load(Ordering::Relaxed);
                        total += page.used.get() as usize * size;
                    }
                }
            }
            total
        })
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

// Not under Miri: these tests reserve gigabytes of (fake) address space.
#[cfg(all(test, not(miri)))]
mod concurrency_tests;
#[cfg(all(test, not(miri)))]
mod huge_tests;
#[cfg(all(test, not(miri)))]
mod tests;
