//! The ablation the benchmarks compare the design against: the same allocator with every
//! refill going through the arena lock in shared mode, as page faults went through
//! `mmap_lock` before Linux had per-VMA locks. Only with the `ablation` feature; only for
//! benchmarks (`benches/remap_under_load.rs`).
//!
//! Layer: a leaf service beside `config`; calls only `sync::atomic`. `arena::refill` is its one
//! caller.

#[cfg(feature = "ablation")]
static GLOBAL_LOCK: crate::sync::atomic::AtomicBool = crate::sync::atomic::AtomicBool::new(false);

/// Switches refills between the region read path (false, the default) and the global arena
/// lock (true).
#[cfg(feature = "ablation")]
pub fn set_global_arena_lock(on: bool) {
    // Relaxed: a benchmark switch, flipped while no other thread allocates.
    GLOBAL_LOCK.store(on, crate::sync::atomic::Ordering::Relaxed);
}

/// True if refills must take the arena lock instead of a region's lock.
#[inline(always)]
pub(crate) fn global_arena_lock() -> bool {
    #[cfg(feature = "ablation")]
    // Relaxed: see `set_global_arena_lock`.
    return GLOBAL_LOCK.load(crate::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "ablation"))]
    false
}
