//! Small blocks (up to 64 KiB): size classes, pages and their free lists, the per-thread heap,
//! its life cycle, the hand-over of pages when threads exit, and each heap's cache of freed
//! large blocks.
//!
//! This file is the top of the layer: the entry points for the calling thread's heap, which
//! decide what a thread without a heap gets (`ThreadSlot`), and count large blocks. Its
//! submodules call down only (`size_class` → `page_blocks` → `double_free` → `pages` →
//! `abandon`, `counters` → `heap_core` → `slot`, `fallback` → `lifecycle`), never back up to
//! this file. `heap_core`, `alloc_path` and `free_path` are one type's `impl` blocks, split by
//! job as mimalloc splits `page.c` from `free.c`: a malloc reads `alloc_path`, a free
//! `free_path`, and both name only `heap_core`'s struct.
//!
//! Layer: `heap`, above `large` and `arena`; calls its submodules, `large`, `os` and `stats`.
//! `global`, `isolated`, `raw`, `fork` and `lib` call it.

pub(crate) mod abandon;
mod alloc_path;
mod countdown;
pub(crate) mod counters;
pub(crate) mod double_free;
pub(crate) mod fallback;
mod free_path;
pub(crate) mod heap_core;
pub(crate) mod large_cache;
pub(crate) mod lifecycle;
pub(crate) mod modes;
pub(crate) mod page_blocks;
pub(crate) mod page_list;
pub(crate) mod pages;
pub(crate) mod sample_shelf;
mod sampled;
pub(crate) mod size_class;
mod slot;

#[cfg(test)]
mod tests;

use crate::arena::large_block::LargeState;
use crate::arena::page::{Block, Page};
use crate::stats::Stats;
use modes::tracking_requested;

/// Allocates a block of size class `class` for a request of `size` bytes.
#[inline(always)]
pub(crate) fn alloc<const ZERO: bool, const USABLE: bool>(class: usize, size: usize) -> *mut u8 {
    slot::heap().alloc::<ThreadSlot, ZERO, USABLE>(class, size)
}

/// Frees `ptr`, a block of `page`; `requested` is the size the user asked for (statistics).
///
/// # Safety
/// `ptr` is a live block of `page` that the caller gives up.
#[inline(always)]
pub(crate) unsafe fn free<const USABLE: bool>(page: &'static Page, ptr: *mut u8, requested: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { slot::heap().free::<ThreadSlot, USABLE>(page, ptr.cast::<Block>(), requested) }
}

/// The calling thread's heap is its slot's: while the slot holds a sentinel, the thread's first
/// allocation brings a heap up (or uses the fallback heap), and counting brings one up too.
enum ThreadSlot {}

impl heap_core::NoHeap for ThreadSlot {
    fn alloc<const ZERO: bool, const USABLE: bool>(
        heap: &heap_core::HeapCore,
        class: usize,
        size: usize,
    ) -> *mut u8 {
        match lifecycle::bring_up(heap) {
            Some(heap) => heap.alloc::<ThreadSlot, ZERO, USABLE>(class, size),
            None => fallback::alloc::<ZERO, USABLE>(class, size),
        }
    }

    fn count_free(heap: &heap_core::HeapCore, bytes: usize) {
        record_without_heap(heap, |c| c.on_free(bytes), (0, bytes, (0, 1)));
    }
}

/// Allocates a large block for the calling thread: one its heap cached, if one fits (see
/// `large_cache`), else a new one from the arena. Null (`ENOMEM`) if impossible. Never
/// inlined: a sample's stack leaves its frame out by its address.
#[inline(never)]
pub(crate) fn alloc_large(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let mut heap = slot::heap();
    if heap.state() == heap_core::HeapState::Uninit {
        // A thread whose first allocations are large gets its heap (and so its cache) now.
        heap = lifecycle::bring_up(heap).unwrap_or(heap);
    }
    let alive = heap.state() == heap_core::HeapState::Alive;
    let cached = if alive && large_cache::LargeCache::serves(size, align) {
        heap.large_cache.take(size)
    } else {
        None
    };
    let region = match cached {
        Some(region) => {
            region.large.set_requested(size);
            if zeroed {
                // SAFETY: the block is ours and at least `size` bytes long (`take`).
                unsafe { core::ptr::write_bytes(region.start(), 0, size) };
            }
            heap.counters.on_alloc(size);
            region
        }
        None => match crate::large::alloc_block(size, align, zeroed) {
            Some(region) => {
                record_alloc(size);
                region
            }
            None => return crate::os::out_of_memory(),
        },
    };
    if alive {
        heap.sample_large(
            region,
            size,
            alloc_large as fn(usize, usize, bool) -> *mut u8 as usize,
        );
    }
    region.start()
}

/// The free of a large block (`ptr`, in `region`), counted for the calling thread: a region
/// that carried a sample onto a shelf of sample regions (its heap's, else the shared one) while
/// sampling is on; else into its heap's cache if the cache keeps it; else
/// `large::release_or_mark`. The one entry point for freeing a large block; the functions below
/// it release (`large::release`) or queue (`Arena::queue_large_release`).
pub(crate) fn free_large(region: &'static crate::arena::region::Region, ptr: *mut u8) {
    let sampled = region.start() == ptr && sampled::forget_sample(region);
    let heap = slot::heap();
    let alive = heap.state() == heap_core::HeapState::Alive;
    if sampled && region.len() == crate::config::SLICE_SIZE && crate::sampling::on() {
        large_cache::to_cached(region, ptr);
        let requested = region.large.requested();
        let kept = if alive {
            heap.large_cache.put_sample(region)
        } else {
            Err(region) // a thread without a heap (one that only frees samples others took)
        };
        if let Err(region) = kept.or_else(sample_shelf::put) {
            crate::large::release(region, region.start(), LargeState::Cached);
        }
        if alive {
            heap.counters.on_free(requested);
        } else {
            record_free(requested);
        }
        return;
    }
    if alive && large_cache::LargeCache::keeps(region) {
        if region.start() != ptr {
            crate::abort::invalid_free(ptr);
        }
        let requested = region.large.requested();
        heap.large_cache.put(region, ptr, |old| {
            crate::large::release(old, old.start(), LargeState::Cached);
        });
        heap.counters.on_free(requested);
        return;
    }
    record_free(crate::large::release_or_mark(region, ptr));
}

type Realloc = fn(&'static crate::arena::region::Region, *mut u8, usize, usize) -> Option<*mut u8>;

/// Reallocates the large block at `ptr` (in `region`) for the calling thread without copying
/// if possible (see `large::resize`): where the block is now, or `None` if the caller must
/// allocate, copy and free. Never inlined: a sample's stack leaves its frame out by its
/// address.
#[inline(never)]
pub(crate) fn realloc_large(
    region: &'static crate::arena::region::Region,
    ptr: *mut u8,
    new_size: usize,
    align: usize,
) -> Option<*mut u8> {
    // The sample, if any, comes off now (a move hands the block to another region) and goes
    // back if the block stays where it is, unchanged, for the caller to copy and free.
    let sample = if region.start() == ptr {
        region.large.take_sample()
    } else {
        0
    };
    let Some((moved, old_requested)) = crate::large::realloc(region, ptr, new_size, align, tally())
    else {
        if sample != 0 {
            region.large.set_sample(sample);
        }
        return None;
    };
    // A reallocation ends the sample; the resized block is a new allocation to the sampler.
    if sample != 0 {
        crate::sampling::forget(sample);
    }
    record_resize(old_requested, new_size);
    let heap = slot::heap();
    if heap.state() == heap_core::HeapState::Alive {
        heap.sample_large_at(moved, new_size, realloc_large as Realloc as usize);
    }
    Some(moved)
}

/// Lists the newest block of the calling thread's large-block cache twice (see
/// `LargeCache::list_newest_twice`; for `crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn list_newest_cached_large_block_twice() {
    slot::heap().large_cache.list_newest_twice();
}

/// Turns heap-profile sampling on or off in the thread heaps alive now and those to come.
pub(crate) fn set_sampling(on: bool) {
    lifecycle::set_sampling(on);
    look_at_modes_now();
    if !on {
        // No sample will take them: the shared shelf's regions go back (the heaps' own at
        // their thread's exit or `collect`).
        sample_shelf::drain(|region| {
            crate::large::release(region, region.start(), LargeState::Cached);
        });
    }
}

/// Turns counting of requested bytes on or off, for heaps alive now and those to come.
pub(crate) fn set_tracking_requested(on: bool) {
    modes::set_tracking_requested(on);
    lifecycle::set_counting(on);
    fallback::set_counting(on);
    look_at_modes_now();
}

/// Makes the calling thread's heap see changed modes at its next allocation (other heaps see
/// them within `countdown::MODES_LOOK_BYTES`).
fn look_at_modes_now() {
    let heap = slot::heap();
    if heap.state() == heap_core::HeapState::Alive {
        heap.stop_next_allocation();
    }
}

/// Counts in the calling thread's counters, or the shared ones if it has no heap. While
/// counting, a thread that has not allocated yet gets its heap now (so a thread that only
/// frees sees its frees in `thread_stats`); a thread whose heap is gone never gets one back
/// (a free may be the last thing a thread does, after its exit hook has run).
#[inline(always)]
fn record_with(own: impl FnOnce(&counters::HeapCounters), shared: (usize, usize, (usize, usize))) {
    let heap = slot::heap();
    if heap.state() == heap_core::HeapState::Alive {
        own(&heap.counters);
    } else if tracking_requested() {
        record_without_heap(heap, own, shared);
    }
}

/// [`record_with`] while counting, for a thread without a live heap (before its first
/// allocation, or after its exit hook).
#[inline(never)]
fn record_without_heap(
    heap: &heap_core::HeapCore,
    own: impl FnOnce(&counters::HeapCounters),
    shared: (usize, usize, (usize, usize)),
) {
    if heap.state() == heap_core::HeapState::Uninit {
        if let Some(up) = lifecycle::bring_up(heap) {
            return own(&up.counters);
        }
    }
    let (allocated, freed, blocks) = shared;
    counters::ORPHAN_COUNTERS.add_shared(allocated, freed, blocks);
}

/// Counts an allocation of `bytes` made outside the fast paths (large blocks).
#[inline]
fn record_alloc(bytes: usize) {
    record_with(|c| c.on_alloc(bytes), (bytes, 0, (1, 0)));
}

/// Counts a free of `bytes` made outside the fast paths (large blocks).
#[inline]
fn record_free(bytes: usize) {
    record_with(|c| c.on_free(bytes), (0, bytes, (0, 1)));
}

/// Counts a small block at `ptr` resized in place from `old` to `new` bytes. While counting, a
/// heap-profile sample (a small block served as a large one) also keeps its new size, which
/// its free will count.
pub(crate) fn record_resize_in_place(ptr: *mut u8, old: usize, new: usize) {
    record_resize(old, new);
    if tracking_requested() {
        if let crate::arena::pagemap::Entry::Large(region) =
            crate::arena::ARENA.lookup(ptr as usize)
        {
            region.large.set_requested(new);
        }
    }
}

/// Counts a block resized in place from `old` to `new` bytes.
#[inline]
pub(crate) fn record_resize(old: usize, new: usize) {
    let (allocated, freed) = (new.saturating_sub(old), old.saturating_sub(new));
    record_with(|c| c.on_resize(old, new), (allocated, freed, (0, 0)));
}

/// The calling thread's counts (see [`crate::ThreadStats`]).
pub(crate) fn thread_stats() -> crate::stats::ThreadStats {
    let heap = slot::heap();
    if heap.state() != heap_core::HeapState::Alive {
        // No heap yet (or any more): nothing counted, but say whether it will count.
        return crate::stats::ThreadStats {
            counting: tracking_requested(),
            ..Default::default()
        };
    }
    heap.counters.thread_stats()
}

/// Gives this thread's empty pages, empty pages of the fallback heap and of exited threads, and
/// the pages of threads that died without their exit hook, back to their regions.
pub(crate) fn collect() {
    let heap = slot::heap();
    if heap.state() == heap_core::HeapState::Alive {
        heap.collect();
    }
    lifecycle::reap_dead_heaps();
    sample_shelf::drain(|region| {
        crate::large::release(region, region.start(), LargeState::Cached);
    });
    fallback::collect();
    abandon::release_empty(slot::heap().tally());
}

pub(crate) fn fill_stats(stats: &mut Stats) {
    if tracking_requested() {
        stats.bytes_requested = Some(0);
    }
    lifecycle::fill_stats(stats);
    stats.large_cached_bytes += sample_shelf::bytes();
    // The arena counts cached large blocks in `large_bytes` (it filled `bytes_in_use` first).
    stats.bytes_in_use = stats.bytes_in_use.saturating_sub(stats.large_cached_bytes);
    stats.pages_abandoned = abandon::count();
}

/// The calling thread's tally (its heap's, or the shared one), for counting outside the heap.
pub(crate) fn tally() -> &'static crate::stats::Tally {
    slot::heap().tally()
}
