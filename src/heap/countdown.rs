//! When the malloc fast path stops: a heap counts down the bytes its owner allocates, and the
//! allocation that takes the count below zero leaves the fast path. The count is armed for
//! what the heap's modes need: every allocation (`COUNT`, which counts each one); the next
//! heap-profile sample (`SAMPLE`); and in any case at most [`MODES_LOOK_BYTES`], for a look at
//! modes another thread may have turned on.
//!
//! So the fast path tests one thing, the count, whatever the modes: a subtraction into memory
//! and a branch, as many instructions as the test of a modes byte it replaces, and sampling
//! that is on costs the fast path nothing more than sampling that is off (tcmalloc counts
//! down the same way).
//!
//! Layer: `heap`; calls `heap::heap_core` (the struct), `counters` (the modes) and `sampling`.

use super::counters::{COUNT, SAMPLE};
use super::heap_core::HeapCore;

/// The bytes a heap with neither mode on allocates between two looks at its modes: another
/// thread that turns counting or sampling on (`vmarena::track_requested_bytes`,
/// `vmarena::profile::start`) cannot write the owner's count, so the owner sees the change
/// at its next look (at once for the calling thread's own heap: see [`HeapCore::stop_next_allocation`]).
/// One look per 256 KiB costs a 16-byte malloc/free pair 0.002 instructions.
pub(crate) const MODES_LOOK_BYTES: i64 = 256 << 10;

impl HeapCore {
    /// Counts `size` bytes allocated down; true if the allocation leaves the fast path (then
    /// the caller calls [`HeapCore::settle`]). Owner only.
    #[inline(always)]
    pub(super) fn count_down(&self, size: usize) -> bool {
        let left = self.countdown.get().wrapping_sub(size as i64);
        self.countdown.set(left);
        left < 0
    }

    /// An allocation of `size` bytes took the count below zero: the bytes counted since the
    /// count was armed go to the sampler, and the count is armed again. True if the
    /// allocation is to be sampled (then the caller takes the sample, begun by
    /// `Sampler::take`, and calls [`HeapCore::sampled`] after it). Owner only.
    pub(super) fn settle(&self, size: usize) -> bool {
        // The bytes counted since arming (another thread never writes the count, so at least
        // `size`; a wrap on an absurd size is harmless: the sampler then samples). Counted
        // while sampling was off, they are not the sampler's: only this allocation is.
        let counted = if self.armed_for_sample.get() {
            self.armed.get().wrapping_sub(self.countdown.get()).max(0) as u64
        } else {
            size as u64
        };
        let modes = self.counters.modes();
        let sample = modes & SAMPLE != 0
            && self.sampler.count(counted)
            && self.sampler.take(size, self as *const HeapCore as usize);
        self.arm(modes);
        sample
    }

    /// A sample begun by [`HeapCore::settle`] is taken: the sampler counts towards the next
    /// one from here.
    pub(super) fn sampled(&self) {
        self.sampler.resume();
        self.arm(self.counters.modes());
    }

    /// Makes the next allocation stop and look at the heap's modes (the owner: after changing
    /// them, or while counting, where every allocation stops).
    #[inline(always)]
    pub(crate) fn stop_next_allocation(&self) {
        self.countdown.set(-1);
        self.armed.set(-1);
        self.armed_for_sample.set(false);
    }

    /// Arms the count for `modes` (see the module doc).
    fn arm(&self, modes: u8) {
        if modes & COUNT != 0 {
            // Every allocation is counted, so every one stops (`malloc(0)` too).
            return self.stop_next_allocation();
        }
        let bytes = if modes & SAMPLE != 0 {
            self.sampler.left().min(MODES_LOOK_BYTES)
        } else {
            MODES_LOOK_BYTES
        };
        self.countdown.set(bytes);
        self.armed.set(bytes);
        self.armed_for_sample.set(modes & SAMPLE != 0);
    }
}
