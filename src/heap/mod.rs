//! Small blocks (up to 512 KiB): size classes, pages and their free lists, the per-thread heap,
//! its life cycle, and the hand-over of pages when threads exit.

pub(crate) mod abandon;
pub(crate) mod double_free;
pub(crate) mod fallback;
pub(crate) mod pages;
pub(crate) mod registry;
pub(crate) mod size_class;
pub(crate) mod thread_heap;
pub(crate) mod tls;

use crate::arena::page::{Block, Page};
use crate::stats::Stats;

/// Allocates a block of size class `class` for a request of `size` bytes.
#[inline(always)]
pub(crate) fn alloc<const ZERO: bool>(class: usize, size: usize) -> *mut u8 {
    tls::with_heap(|heap| heap.alloc::<ZERO>(class, size))
}

/// Frees `ptr`, a block of `page`; `requested` is the size the user asked for (statistics).
///
/// # Safety
/// `ptr` is a live block of `page` that the caller gives up.
#[inline(always)]
pub(crate) unsafe fn free(page: &'static Page, ptr: *mut u8, requested: usize) {
    // SAFETY: forwarded from the caller.
    tls::with_heap(|heap| unsafe { heap.free(page, ptr.cast::<Block>(), requested) })
}

/// 0: not decided yet; 1: requested bytes are not counted; 2: they are.
static TRACK_REQUESTED: crate::sync::atomic::AtomicU8 = crate::sync::atomic::AtomicU8::new(0);

/// Whether heaps coming up now count requested bytes: `VMARENA_STATS=1` in the environment,
/// or [`crate::track_requested_bytes`].
/// The fast paths' check: true only once the setting has been read (every heap reads it when it
/// comes up) and is on. No call, so the fast paths stay free of register saves.
#[inline(always)]
pub(crate) fn counting_requested() -> bool {
    // Relaxed: a configuration flag.
    TRACK_REQUESTED.load(crate::sync::atomic::Ordering::Relaxed) == 2
}

pub(crate) fn tracking_requested() -> bool {
    use crate::sync::atomic::Ordering;
    // Relaxed: a configuration flag; racing first readers decide the same way.
    match TRACK_REQUESTED.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: a NUL-terminated name; the value is only tested for null.
            let on = unsafe { !libc::getenv(c"VMARENA_STATS".as_ptr()).is_null() };
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
}

/// Records a change of the requested-bytes statistic made outside the fast paths (large
/// blocks, remote frees, reallocs in place) in this thread's counter, or the shared one if the
/// thread has no usable heap.
pub(crate) fn record(requested: isize) {
    tls::with_heap(|heap| {
        if heap.state() == thread_heap::HeapState::Alive || tls::bring_up(heap) {
            heap.counters.add(requested);
        } else {
            registry::ORPHAN_COUNTERS.add_shared(requested);
        }
    })
}

/// Gives this thread's empty pages, and empty abandoned pages, back to their regions.
pub(crate) fn collect() {
    tls::with_heap(|heap| {
        if heap.state() == thread_heap::HeapState::Alive {
            heap.collect();
        }
    });
    abandon::release_empty();
}

pub(crate) fn fill_stats(stats: &mut Stats) {
    if tracking_requested() {
        stats.bytes_requested = Some(0);
    }
    registry::fill_stats(stats);
}
