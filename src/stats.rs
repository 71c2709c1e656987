//! Counters and the [`Stats`] snapshot returned by [`crate::stats()`].
//!
//! Counters that change on the malloc and free paths (fast, refill and slow) live in each
//! thread's heap ([`Tally`], and the bytes and blocks allocated and freed) and are updated with
//! a plain load and store (`crate::counter`: no read-modify-write, no cache line another thread
//! writes); a snapshot sums them. Counters of the remap paths ([`ArenaCounters`]) are written inside write sessions,
//! by one thread at a time. All are statistics, never used to synchronise anything.
//!
//! Layer: a leaf service any layer may call; calls `config` and `sync::atomic`.

use core::fmt;

use crate::config::PageKind;
use crate::counter::{OwnerCount, OwnerCount64};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Adds `n` to a shared counter (Relaxed: statistics only).
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Adds a signed amount to a shared byte or object counter (Relaxed: statistics only).
#[inline]
pub(crate) fn adjust(counter: &AtomicUsize, delta: isize) {
    counter.fetch_add(delta as usize, Ordering::Relaxed);
}

fn read(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::Relaxed)
}

fn read64(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What the malloc and free paths count (page claims and releases, the region read path, the
/// speculations), per thread: each heap keeps one, updated by its owner with a plain load and
/// store ([`OwnerCount::add`]), so no two threads ever write one counter's cache line;
/// `stats()` sums them. Paths without a heap (a thread's last frees after its teardown) use a
/// shared one, updated with read-modify-writes.
pub(crate) struct Tally {
    /// Read-modify-writes instead of load + store (several threads write this one).
    shared: bool,
    pages_claimed: [OwnerCount; PageKind::COUNT],
    pages_released: [OwnerCount; PageKind::COUNT],
    /// Bytes of fresh (never touched or purged) pages claimed: they become committed.
    fresh_bytes: OwnerCount,
    pub(crate) read_fast: OwnerCount64,
    pub(crate) read_fallback: OwnerCount64,
    pub(crate) read_retry: OwnerCount64,
    pub(crate) spec_success: OwnerCount64,
    pub(crate) spec_retry: OwnerCount64,
}

impl Tally {
    /// A tally one thread at a time writes.
    pub(crate) const fn owned() -> Tally {
        Tally::new(false)
    }

    /// A tally any thread may write.
    pub(crate) const fn shared() -> Tally {
        Tally::new(true)
    }

    const fn new(shared: bool) -> Tally {
        Tally {
            shared,
            pages_claimed: [const { OwnerCount::new(0) }; PageKind::COUNT],
            pages_released: [const { OwnerCount::new(0) }; PageKind::COUNT],
            fresh_bytes: OwnerCount::new(0),
            read_fast: OwnerCount64::new(0),
            read_fallback: OwnerCount64::new(0),
            read_retry: OwnerCount64::new(0),
            spec_success: OwnerCount64::new(0),
            spec_retry: OwnerCount64::new(0),
        }
    }

    /// Adds one to an event counter.
    #[inline]
    pub(crate) fn count(&self, counter: &OwnerCount64) {
        if self.shared {
            counter.add_shared(1);
        } else {
            counter.add(1);
        }
    }

    fn add(&self, counter: &OwnerCount, n: usize) {
        if self.shared {
            counter.add_shared(n);
        } else {
            counter.add(n);
        }
    }

    /// A page of `kind` was claimed (`fresh`: never touched or purged since).
    pub(crate) fn page_claimed(&self, kind: PageKind, fresh: bool) {
        self.add(&self.pages_claimed[kind.index()], 1);
        if fresh {
            self.add(&self.fresh_bytes, kind.page_size());
        }
    }

    /// A page of `kind` went back to its region.
    pub(crate) fn page_released(&self, kind: PageKind) {
        self.add(&self.pages_released[kind.index()], 1);
    }

    /// Adds this tally into `stats` (pages in use as claimed minus released: pages change
    /// hands between threads, so only the sum over all tallies means anything).
    pub(crate) fn add_to(&self, stats: &mut Stats) {
        for kind in PageKind::ALL {
            let i = kind.index();
            let net = self.pages_claimed[i]
                .get()
                .wrapping_sub(self.pages_released[i].get());
            stats.pages_in_use[i] = stats.pages_in_use[i].wrapping_add(net);
        }
        stats.bytes_committed = stats.bytes_committed.wrapping_add(self.fresh_bytes.get());
        stats.region_read_fast += self.read_fast.get();
        stats.region_read_fallback += self.read_fallback.get();
        stats.region_read_retry += self.read_retry.get();
        stats.speculation_success += self.spec_success.get();
        stats.speculation_retry += self.spec_retry.get();
    }

    /// Moves everything into `into` (a shared tally) and zeroes this one: for a heap going
    /// back to the pool, whose owner is gone.
    pub(crate) fn fold_into(&self, into: &Tally) {
        for i in 0..PageKind::COUNT {
            into.pages_claimed[i].add_shared(self.pages_claimed[i].take());
            into.pages_released[i].add_shared(self.pages_released[i].take());
        }
        into.fresh_bytes.add_shared(self.fresh_bytes.take());
        for (from, to) in [
            (&self.read_fast, &into.read_fast),
            (&self.read_fallback, &into.read_fallback),
            (&self.read_retry, &into.read_retry),
            (&self.spec_success, &into.spec_success),
            (&self.spec_retry, &into.spec_retry),
        ] {
            to.add_shared(from.take());
        }
    }
}

/// Arena-wide counters of the remap paths: written inside write sessions (one writer at a
/// time, the holder of the arena write lock) or, for `abandoned_pages`, under the abandoned
/// lists' mutexes.
pub(crate) struct ArenaCounters {
    pub(crate) reserved: AtomicUsize,
    pub(crate) committed: AtomicUsize,
    pub(crate) metadata: AtomicUsize,
    pub(crate) page_regions: [AtomicUsize; PageKind::COUNT],
    pub(crate) large_regions: AtomicUsize,
    pub(crate) large_bytes: AtomicUsize,
    pub(crate) write_sessions: AtomicU64,
    pub(crate) purged_bytes: AtomicU64,
    pub(crate) remaps: AtomicU64,
    pub(crate) remapped_bytes: AtomicU64,
    pub(crate) grown_in_place_bytes: AtomicU64,
    pub(crate) write_held_ns: AtomicU64,
    pub(crate) write_held_max_ns: AtomicU64,
    /// Huge pages of pages regions asked for and not broken up since (see `arena::huge`).
    pub(crate) huge_backed: AtomicUsize,
    pub(crate) huge_advised: AtomicU64,
    pub(crate) huge_collapsed: AtomicU64,
    pub(crate) huge_broken: AtomicU64,
    pub(crate) huge_given_back: AtomicU64,
    /// Bytes of free ranges that are dirty: freed, still resident, waiting for their purge.
    pub(crate) free_dirty: AtomicUsize,
}

impl ArenaCounters {
    pub(crate) const fn new() -> ArenaCounters {
        ArenaCounters {
            reserved: AtomicUsize::new(0),
            committed: AtomicUsize::new(0),
            metadata: AtomicUsize::new(0),
            page_regions: [const { AtomicUsize::new(0) }; PageKind::COUNT],
            large_regions: AtomicUsize::new(0),
            large_bytes: AtomicUsize::new(0),
            write_sessions: AtomicU64::new(0),
            purged_bytes: AtomicU64::new(0),
            remaps: AtomicU64::new(0),
            remapped_bytes: AtomicU64::new(0),
            grown_in_place_bytes: AtomicU64::new(0),
            write_held_ns: AtomicU64::new(0),
            write_held_max_ns: AtomicU64::new(0),
            huge_backed: AtomicUsize::new(0),
            huge_advised: AtomicU64::new(0),
            huge_collapsed: AtomicU64::new(0),
            huge_broken: AtomicU64::new(0),
            huge_given_back: AtomicU64::new(0),
            free_dirty: AtomicUsize::new(0),
        }
    }

    /// Copies the arena counters into `stats`.
    pub(crate) fn fill(&self, stats: &mut Stats) {
        stats.bytes_reserved = read(&self.reserved);
        stats.bytes_committed = stats.bytes_committed.wrapping_add(read(&self.committed));
        stats.bytes_metadata += read(&self.metadata);
        for kind in PageKind::ALL {
            stats.page_regions[kind.index()] = read(&self.page_regions[kind.index()]);
        }
        stats.large_regions = read(&self.large_regions);
        stats.large_bytes = read(&self.large_bytes);
        stats.bytes_in_use += stats.large_bytes;
        stats.write_sessions = read64(&self.write_sessions);
        stats.bytes_purged = read64(&self.purged_bytes);
        stats.remaps = read64(&self.remaps);
        stats.bytes_remapped = read64(&self.remapped_bytes);
        stats.bytes_grown_in_place = read64(&self.grown_in_place_bytes);
        stats.write_lock_held_ns = read64(&self.write_held_ns);
        stats.write_lock_held_max_ns = read64(&self.write_held_max_ns);
        stats.huge_pages = read(&self.huge_backed);
        stats.huge_pages_advised = read64(&self.huge_advised);
        stats.huge_pages_collapsed = read64(&self.huge_collapsed);
        stats.huge_pages_broken = read64(&self.huge_broken);
        stats.huge_pages_given_back = read64(&self.huge_given_back);
        stats.bytes_freed_resident = read(&self.free_dirty);
    }
}

/// The calling thread's own counts, from [`crate::thread_stats`]: what it allocated and freed
/// through the global allocator (and the C entry points) since its heap came up, read without
/// a lock (like jemalloc's `thread.allocatedp` and `thread.deallocatedp`).
///
/// Counted only while requested bytes are tracked (`VMARENA_STATS=1`, or
/// [`crate::track_requested_bytes`]); otherwise every figure is zero and `counting` is false.
/// Bytes are the sizes asked for (for C callers, which free without a size, the usable size of
/// each block). A block freed by another thread counts as freed there; a block resized in
/// place adds the difference to bytes allocated or freed, without counting a block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadStats {
    /// Whether the thread's heap counts (see above).
    pub counting: bool,
    /// Bytes allocated by this thread.
    pub bytes_allocated: u64,
    /// Bytes freed by this thread (of blocks any thread allocated).
    pub bytes_freed: u64,
    /// Blocks allocated by this thread.
    pub allocations: u64,
    /// Blocks freed by this thread.
    pub frees: u64,
}

/// A snapshot of the allocator's counters, taken by [`crate::stats()`] without allocating.
///
/// Counters are read one by one while other threads run, so a snapshot taken under load is
/// approximate (each counter is exact at some instant during the call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes the program asked for and has not freed, if counted: counting costs loads and
    /// stores on every malloc and free, so it is off unless `VMARENA_STATS=1` is set or
    /// [`crate::track_requested_bytes`] turned it on (see there).
    pub bytes_requested: Option<usize>,
    /// Bytes of blocks handed out and not freed (the requested sizes rounded up to size classes
    /// and slices). Blocks freed by another thread count until their page's owner takes them in.
    pub bytes_in_use: usize,
    /// Address space reserved from the OS for the arena.
    pub bytes_reserved: usize,
    /// Arena memory that may be backed by physical memory (touched and not purged since).
    pub bytes_committed: usize,
    /// Memory used for the allocator's own metadata (descriptors, page tables, page map).
    pub bytes_metadata: usize,
    /// Bytes given back to the OS by purging, in total.
    pub bytes_purged: u64,
    /// Small-object regions by page kind: 64 KiB and 512 KiB pages.
    pub page_regions: [usize; 2],
    /// Pages in use (claimed by a heap, or abandoned) by page kind.
    pub pages_in_use: [usize; 2],
    /// Pages left by exited threads and not yet taken over by another thread.
    pub pages_abandoned: usize,
    /// Regions holding one large block each, and their total size.
    pub large_regions: usize,
    /// Total size of the large-block regions.
    pub large_bytes: usize,
    /// Freed large blocks (up to 512 KiB each) that threads keep for reuse, and freed regions
    /// that carried heap-profile samples, kept for the next samples: part of `large_bytes` and
    /// committed, but not in use.
    pub large_cached_bytes: usize,
    /// Region read locks taken without the arena lock (Linux: `VMA_LOCK_SUCCESS`).
    pub region_read_fast: u64,
    /// Region reads that found the region write-locked and fell back to the arena lock in
    /// shared mode (Linux: `VMA_LOCK_ABORT`).
    pub region_read_fallback: u64,
    /// Region reads that found the descriptor detached or reused and looked again (Linux:
    /// `VMA_LOCK_RETRY`).
    pub region_read_retry: u64,
    /// Lock-free speculative lookups that validated.
    pub speculation_success: u64,
    /// Speculative lookups that overlapped a write session (or began during one) and were
    /// retried or done under the lock instead.
    pub speculation_retry: u64,
    /// Remap operations: write sessions run on the arena (creating, resizing, moving, removing
    /// and purging regions).
    pub write_sessions: u64,
    /// Total time the arena write lock was held, in nanoseconds.
    pub write_lock_held_ns: u64,
    /// Longest time the arena write lock was held at once, in nanoseconds.
    pub write_lock_held_max_ns: u64,
    /// Delay before freed memory is purged, in milliseconds.
    pub purge_delay_ms: u64,
    /// Large blocks moved by remapping their pages (`mremap`) instead of copying.
    pub remaps: u64,
    /// Bytes moved by remapping, in total.
    pub bytes_remapped: u64,
    /// Bytes large blocks grew by in place (into the free range after them), in total.
    pub bytes_grown_in_place: u64,
    /// Huge pages (2 MiB) of small-object pages the kernel was asked to back with one huge
    /// page (advised before their first touch, or collapsed once full) and not broken up
    /// since. How many it does back is the process's `AnonHugePages`
    /// (`/proc/self/smaps_rollup`).
    pub huge_pages: usize,
    /// Huge pages advised before their first touch, in total.
    pub huge_pages_advised: u64,
    /// Huge pages collapsed from small pages once full (`MADV_COLLAPSE`), in total.
    pub huge_pages_collapsed: u64,
    /// Huge pages broken up: partly free past the longer delay, their free pages purged.
    pub huge_pages_broken: u64,
    /// Entirely free huge pages given back whole, in total.
    pub huge_pages_given_back: u64,
    /// Freed memory still resident in free ranges (large blocks and removed regions), waiting
    /// for its purge; bounded by the live heap (see `BENCHMARKS.md`, "Huge pages").
    pub bytes_freed_resident: usize,
    /// Threads that have set up a heap, in total.
    pub threads_started: u64,
    /// Threads whose heap has been torn down (pages handed over).
    pub threads_exited: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: f64 = (1 << 20) as f64;
        let mib = |b: usize| b as f64 / MIB;
        writeln!(f, "vmarena statistics")?;
        match self.bytes_requested {
            Some(b) => writeln!(f, "  requested        {:>12.2} MiB", mib(b))?,
            None => writeln!(
                f,
                "  requested        {:>12} (set VMARENA_STATS=1 to count)",
                "-"
            )?,
        }
        writeln!(f, "  in use           {:>12.2} MiB", mib(self.bytes_in_use))?;
        writeln!(
            f,
            "  committed        {:>12.2} MiB",
            mib(self.bytes_committed)
        )?;
        writeln!(
            f,
            "  reserved         {:>12.2} MiB",
            mib(self.bytes_reserved)
        )?;
        writeln!(
            f,
            "  metadata         {:>12.2} MiB",
            mib(self.bytes_metadata)
        )?;
        writeln!(
            f,
            "  purged (total)   {:>12.2} MiB",
            self.bytes_purged as f64 / MIB
        )?;
        writeln!(
            f,
            "  page regions     {:>12} (64K: {}, 512K: {})",
            self.page_regions.iter().sum::<usize>(),
            self.page_regions[0],
            self.page_regions[1]
        )?;
        writeln!(
            f,
            "  pages in use     {:>12} (64K: {}, 512K: {}; abandoned {})",
            self.pages_in_use.iter().sum::<usize>(),
            self.pages_in_use[0],
            self.pages_in_use[1],
            self.pages_abandoned
        )?;
        writeln!(
            f,
            "  large blocks     {:>12} ({:.2} MiB, {:.2} MiB of it cached for reuse)",
            self.large_regions,
            mib(self.large_bytes),
            mib(self.large_cached_bytes)
        )?;
        writeln!(
            f,
            "  region reads     {:>12} fast, {} fell back to the arena lock, {} retried",
            self.region_read_fast, self.region_read_fallback, self.region_read_retry
        )?;
        writeln!(
            f,
            "  speculation      {:>12} validated, {} retried",
            self.speculation_success, self.speculation_retry
        )?;
        writeln!(
            f,
            "  remap operations {:>12} (write lock held {:.3} ms in all, {:.3} ms at most)",
            self.write_sessions,
            self.write_lock_held_ns as f64 / 1e6,
            self.write_lock_held_max_ns as f64 / 1e6
        )?;
        writeln!(
            f,
            "  freed, resident  {:>12.2} MiB (waiting for their purge)",
            mib(self.bytes_freed_resident)
        )?;
        writeln!(
            f,
            "  huge pages       {:>12} asked for ({} advised, {} collapsed, {} broken up, {} given back whole, in all)",
            self.huge_pages,
            self.huge_pages_advised,
            self.huge_pages_collapsed,
            self.huge_pages_broken,
            self.huge_pages_given_back
        )?;
        writeln!(
            f,
            "  large reallocs   {:>12} remapped ({:.2} MiB moved), {:.2} MiB grown in place",
            self.remaps,
            self.bytes_remapped as f64 / MIB,
            self.bytes_grown_in_place as f64 / MIB
        )?;
        write!(
            f,
            "  threads          {:>12} started, {} exited",
            self.threads_started, self.threads_exited
        )
    }
}
