//! Small blocks (up to 64 KiB): size classes, pages and their free lists, the per-thread heap,
//! its life cycle, the hand-over of pages when threads exit, and each heap's cache of freed
//! large blocks.
//!
//! Layer: `heap`, above `arena`; calls its submodules, `options` and `stats`. `global`,
//! `large`, `isolated`, `raw`, `fork` and `lib` call it.

pub(crate) mod abandon;
pub(crate) mod double_free;
pub(crate) mod fallback;
pub(crate) mod large_cache;
pub(crate) mod lifecycle;
pub(crate) mod page_blocks;
pub(crate) mod pages;
pub(crate) mod size_class;
mod slot;
pub(crate) mod thread_heap;

use crate::arena::page::{Block, Page};
use crate::stats::Stats;

/// Allocates a block of size class `class` for a request of `size` bytes.
#[inline(always)]
pub(crate) fn alloc<const ZERO: bool, const USABLE: bool>(class: usize, size: usize) -> *mut u8 {
    slot::heap().alloc::<ZERO, USABLE>(class, size)
}

/// Frees `ptr`, a block of `page`; `requested` is the size the user asked for (statistics).
///
/// # Safety
/// `ptr` is a live block of `page` that the caller gives up.
#[inline(always)]
pub(crate) unsafe fn free<const USABLE: bool>(page: &'static Page, ptr: *mut u8, requested: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { slot::heap().free::<USABLE>(page, ptr.cast::<Block>(), requested) }
}

/// Allocates a large block for the calling thread: one its heap cached, if one fits (see
/// `large_cache`), else a new one from the arena. Null (`ENOMEM`) if impossible.
pub(crate) fn alloc_large(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if !large_cache::LargeCache::serves(size, align) {
        return crate::large::alloc(size, align, zeroed);
    }
    let mut heap = slot::heap();
    if heap.state() == thread_heap::HeapState::Uninit {
        // A thread whose first allocations are large gets its heap (and so its cache) now.
        heap = lifecycle::bring_up(heap).unwrap_or(heap);
    }
    if heap.state() == thread_heap::HeapState::Alive {
        if let Some(region) = heap.large_cache.take(size) {
            // Relaxed: statistics; the block is ours.
            region
                .requested
                .store(size, crate::sync::atomic::Ordering::Relaxed);
            if zeroed {
                // SAFETY: the block is ours and at least `size` bytes long (`take`).
                unsafe { core::ptr::write_bytes(region.start(), 0, size) };
            }
            heap.counters.on_alloc(size);
            return region.start();
        }
    }
    crate::large::alloc(size, align, zeroed)
}

/// Frees the large block at `ptr` (in `region`) for the calling thread: into its heap's
/// cache if the cache keeps it, else back to the arena (or to its isolated heap).
pub(crate) fn free_large(region: &'static crate::arena::region::Region, ptr: *mut u8) {
    let heap = slot::heap();
    if heap.state() == thread_heap::HeapState::Alive && large_cache::LargeCache::keeps(region) {
        crate::large::check_live(region, ptr);
        // Relaxed: statistics; the block is live, so its fields are stable for us.
        let requested = region
            .requested
            .load(crate::sync::atomic::Ordering::Relaxed);
        heap.counters.on_free(requested);
        heap.large_cache.put(region, |old| {
            crate::large::free_block(old, old.start());
        });
        return;
    }
    crate::large::free(region, ptr)
}

/// 0: not decided yet; 1: requested bytes are not counted; 2: they are.
static TRACK_REQUESTED: crate::sync::atomic::AtomicU8 = crate::sync::atomic::AtomicU8::new(0);

/// Whether heaps coming up now count requested bytes: `VMARENA_STATS=1` in the environment,
/// or [`crate::track_requested_bytes`].
#[inline(always)]
pub(crate) fn tracking_requested() -> bool {
    use crate::sync::atomic::Ordering;
    // Relaxed: a configuration flag. "Off" is tested first: it is the answer threads that
    // only free (consumers) get on each remote free.
    match TRACK_REQUESTED.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => decide_tracking(),
    }
}

#[cold]
#[inline(never)]
fn decide_tracking() -> bool {
    use crate::sync::atomic::Ordering;
    let on = crate::options::count_requested();
    // Relaxed: a configuration flag; racing first readers decide the same way.
    TRACK_REQUESTED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    on
}

/// Whether heaps coming up now run in checked mode (`VMARENA_CHECKED=1`, or the `checked`
/// feature): see `Heap::alloc_checked`.
pub(crate) fn checked_mode() -> bool {
    crate::options::checked()
}

pub(crate) fn set_tracking_requested(on: bool) {
    // Relaxed: a configuration flag.
    TRACK_REQUESTED.store(
        if on { 2 } else { 1 },
        crate::sync::atomic::Ordering::Relaxed,
    );
    lifecycle::set_counting(on);
    fallback::set_counting(on);
}

/// Counts in the calling thread's counters, or the shared ones if it has no heap. While
/// counting, a thread that has not allocated yet gets its heap now (so a thread that only
/// frees sees its frees in `thread_stats`); a thread whose heap is gone never gets one back
/// (a free may be the last thing a thread does, after its exit hook has run).
#[inline(always)]
fn record_with(
    own: impl FnOnce(&thread_heap::HeapCounters),
    shared: (usize, usize, (usize, usize)),
) {
    record_in(slot::heap(), own, shared);
}

/// [`record_with`] for a caller that holds the calling thread's heap already.
#[inline(always)]
fn record_in(
    heap: &thread_heap::Heap,
    own: impl FnOnce(&thread_heap::HeapCounters),
    shared: (usize, usize, (usize, usize)),
) {
    if heap.state() == thread_heap::HeapState::Alive {
        own(&heap.counters);
    } else if tracking_requested() {
        // Threads that only free (consumers) have no heap: without counting, that costs
        // them one test here.
        record_without_heap(slot::heap(), own, shared);
    }
}

/// [`record_with`] while counting, for a thread without a live heap (before its first
/// allocation, or after its exit hook).
#[inline(never)]
fn record_without_heap(
    heap: &'static thread_heap::Heap,
    own: impl FnOnce(&thread_heap::HeapCounters),
    shared: (usize, usize, (usize, usize)),
) {
    if heap.state() == thread_heap::HeapState::Uninit {
        if let Some(up) = lifecycle::bring_up(heap) {
            return own(&up.counters);
        }
    }
    let (allocated, freed, blocks) = shared;
    lifecycle::ORPHAN_COUNTERS.add_shared(allocated, freed, blocks);
}

/// Counts an allocation of `bytes` made outside the fast paths (large blocks).
#[inline]
pub(crate) fn record_alloc(bytes: usize) {
    record_with(|c| c.on_alloc(bytes), (bytes, 0, (1, 0)));
}

/// Counts a free of `bytes` made outside the fast paths (large blocks).
#[inline]
pub(crate) fn record_free(bytes: usize) {
    record_with(|c| c.on_free(bytes), (0, bytes, (0, 1)));
}

/// [`record_free`] for a remote free, by `heap`, the calling thread's heap (from `slot`).
#[inline(always)]
pub(crate) fn record_remote_free(heap: &thread_heap::Heap, bytes: usize) {
    record_in(heap, |c| c.on_free(bytes), (0, bytes, (0, 1)));
}

/// Counts a block resized in place from `old` to `new` bytes.
#[inline]
pub(crate) fn record_resize(old: usize, new: usize) {
    let (allocated, freed) = (new.saturating_sub(old), old.saturating_sub(new));
    record_with(|c| c.on_resize(old, new), (allocated, freed, (0, 0)));
}

/// The calling thread's counts (see [`crate::ThreadStats`]).
pub(crate) fn thread_stats() -> crate::stats::ThreadStats {
    use crate::sync::atomic::Ordering;
    let heap = slot::heap();
    if heap.state() != thread_heap::HeapState::Alive {
        // No heap yet (or any more): nothing counted, but say whether it will count.
        return crate::stats::ThreadStats {
            counting: tracking_requested(),
            ..Default::default()
        };
    }
    let c = &heap.counters;
    // Relaxed: the calling thread's own counters (and a configuration flag).
    let read = |v: &crate::sync::atomic::AtomicUsize| v.load(Ordering::Relaxed) as u64;
    crate::stats::ThreadStats {
        counting: c.counting.load(Ordering::Relaxed),
        bytes_allocated: read(&c.allocated),
        bytes_freed: read(&c.freed),
        allocations: read(&c.allocations),
        frees: read(&c.frees),
    }
}

/// Gives this thread's empty pages, empty pages of the fallback heap and of exited threads, and
/// the pages of threads that died without their exit hook, back to their regions.
pub(crate) fn collect() {
    let heap = slot::heap();
    if heap.state() == thread_heap::HeapState::Alive {
        heap.collect();
    }
    lifecycle::reap_dead_heaps();
    fallback::collect();
    abandon::release_empty(slot::heap().tally());
}

pub(crate) fn fill_stats(stats: &mut Stats) {
    if tracking_requested() {
        stats.bytes_requested = Some(0);
    }
    lifecycle::fill_stats(stats);
    // The arena counts cached large blocks in `large_bytes` (it filled `bytes_in_use` first).
    stats.bytes_in_use = stats.bytes_in_use.saturating_sub(stats.large_cached_bytes);
    stats.pages_abandoned = abandon::count();
}

/// The calling thread's tally (its heap's, or the shared one), for counting outside the heap.
pub(crate) fn tally() -> &'static crate::stats::Tally {
    slot::heap().tally()
}
