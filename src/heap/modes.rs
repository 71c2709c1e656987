//! The process-wide modes a heap takes when it comes up: whether it counts requested bytes
//! (`VMARENA_STATS=1`, or `vmarena::track_requested_bytes`) and whether it runs in checked
//! mode (`VMARENA_CHECKED=1`, or the `checked` feature).
//!
//! Layer: `heap`, a leaf of it; calls `options`.

use crate::sync::atomic::{AtomicU8, Ordering};

/// 0: not decided yet; 1: requested bytes are not counted; 2: they are.
static TRACK_REQUESTED: AtomicU8 = AtomicU8::new(0);

/// Whether heaps coming up now count requested bytes.
#[inline(always)]
pub(crate) fn tracking_requested() -> bool {
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
    let on = crate::options::count_requested();
    set_tracking_requested(on);
    on
}

/// Sets the flag for heaps coming up from now on (`heap::set_tracking_requested` also switches
/// the heaps alive now).
pub(crate) fn set_tracking_requested(on: bool) {
    // Relaxed: a configuration flag; racing first readers decide the same way.
    TRACK_REQUESTED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether heaps coming up now run in checked mode: see `HeapCore::alloc_checked`.
pub(crate) fn checked_mode() -> bool {
    crate::options::checked()
}
