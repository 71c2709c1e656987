//! Small blocks (up to 512 KiB): size classes, pages and their free lists, the per-thread heap,
//! its life cycle, and the hand-over of pages when threads exit.

pub(crate) mod abandon;
pub(crate) mod double_free;
pub(crate) mod fallback;
pub(crate) mod lifecycle;
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

/// 0: not decided yet; 1: requested bytes are not counted; 2: they are.
static TRACK_REQUESTED: crate::sync::atomic::AtomicU8 = crate::sync::atomic::AtomicU8::new(0);

/// Whether heaps coming up now count requested bytes: `VMARENA_STATS=1` in the environment,
/// or [`crate::track_requested_bytes`].
pub(crate) fn tracking_requested() -> bool {
    use crate::sync::atomic::Ordering;
    // Relaxed: a configuration flag; racing first readers decide the same way.
    match TRACK_REQUESTED.load(Ordering::Relaxed) {
        0 => {
            let on = crate::options::count_requested();
            TRACK_REQUESTED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        state => state == 2,
    }
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

/// Records a change of the requested-bytes statistic made outside the fast paths (large
/// blocks, remote frees, reallocs in place) in this thread's counter, or the shared one if the
/// thread has no heap. Never brings a heap up: a free may be the last thing a thread does,
/// after its exit hook has run.
pub(crate) fn record(requested: isize) {
    let heap = slot::heap();
    if heap.state() == thread_heap::HeapState::Alive {
        heap.counters.add(requested);
    } else {
        lifecycle::ORPHAN_COUNTERS.add_shared(requested);
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
    stats.pages_abandoned = abandon::count();
}

/// The calling thread's tally (its heap's, or the shared one), for counting outside the heap.
pub(crate) fn tally() -> &'static crate::stats::Tally {
    slot::heap().tally()
}
