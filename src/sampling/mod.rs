//! Heap-profile sampling, as jemalloc and tcmalloc do it: on average one sample per
//! [`interval`] bytes allocated. Each heap counts down a distance drawn from an exponential
//! distribution of that mean and samples the allocation that crosses it, so an allocation of
//! `size` bytes is sampled with probability `1 - exp(-size / interval)`, whatever the sizes
//! around it; a sample then stands for `1 / p` objects and `size / p` bytes, an unbiased
//! estimate for every size.
//!
//! A sampled block is a large block (its own region, as jemalloc promotes sampled objects to
//! a large size class): its region carries the sample's record, so its free, from any thread,
//! reaches the large-block path (`heap::free_large`), which takes the sample back, while the
//! small-block free path knows nothing of sampling. The malloc fast path counts down whatever
//! the modes (`heap::countdown`), so sampling costs it nothing, off or on, until a sample is
//! due.
//!
//! Layer: below `heap`; calls `options`, its submodules and `sync`.

#[cfg(target_arch = "x86_64")]
pub(crate) mod cfi;
pub(crate) mod math;
#[cfg(target_arch = "x86_64")]
pub(crate) mod rules;
pub(crate) mod stack;
pub(crate) mod table;

use core::cell::Cell;

use crate::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use table::{ONE, TABLE};

#[cfg(test)]
use crate::config::PROFILE_INTERVAL as DEFAULT_INTERVAL;

const UNREAD: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// Whether heaps sample (`UNREAD` until the options are read).
static STATE: AtomicU8 = AtomicU8::new(UNREAD);
/// The mean distance between samples (0 until the options are read).
static INTERVAL: AtomicU64 = AtomicU64::new(0);

/// Whether heaps coming up now sample (`VMARENA_PROFILE`, `VMARENA_PROFILE_OUT`, or
/// [`set_on`]).
pub(crate) fn on() -> bool {
    // Relaxed: a setting; heaps pick it up when they come up (or by `set_on`'s walk).
    match STATE.load(Ordering::Relaxed) {
        UNREAD => {
            let on = crate::options::profile();
            // Relaxed: as above. A racing `set_on` wins (compare-exchange).
            let _ = STATE.compare_exchange(
                UNREAD,
                if on { ON } else { OFF },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            STATE.load(Ordering::Relaxed) == ON
        }
        state => state == ON,
    }
}

/// Turns sampling on or off for heaps coming up from now on (the caller turns it for the live
/// ones).
pub(crate) fn set_on(on: bool) {
    // Relaxed: a setting (see `on`).
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// The mean distance between samples, in bytes allocated (`VMARENA_PROFILE_SAMPLE`, default
/// 512 KiB).
pub(crate) fn interval() -> u64 {
    // Relaxed: a setting, read once into each draw.
    match INTERVAL.load(Ordering::Relaxed) {
        0 => {
            let interval = crate::options::profile_interval().clamp(1, MAX_INTERVAL);
            // Relaxed: as above; a racing `set_interval` wins.
            let _ = INTERVAL.compare_exchange(0, interval, Ordering::Relaxed, Ordering::Relaxed);
            INTERVAL.load(Ordering::Relaxed)
        }
        interval => interval,
    }
}

/// Sets the mean distance between samples, clamped to 1 ..= [`MAX_INTERVAL`] (each heap
/// takes it at its next draw, so the distance it is counting down keeps the old mean).
pub(crate) fn set_interval(bytes: u64) {
    // Relaxed: a setting.
    INTERVAL.store(bytes.clamp(1, MAX_INTERVAL), Ordering::Relaxed);
}

/// A heap's count-down to its next sample, and its random numbers. Owner only.
pub(crate) struct Sampler {
    /// Bytes still to allocate before the next sample (below zero: one is due). `i64::MAX`
    /// while a sample is being taken, so that an allocation it makes (the unwinder's, should
    /// it allocate) never samples in turn. The heap's own count (`heap::countdown`) stops
    /// the fast path when this runs out.
    left: Cell<i64>,
    /// The distance drawn for after the sample being taken.
    next: Cell<i64>,
    /// The xorshift state; 0 until the first draw seeds it.
    rng: Cell<u64>,
}

impl Sampler {
    pub(crate) const fn new() -> Sampler {
        Sampler {
            left: Cell::new(0),
            next: Cell::new(0),
            rng: Cell::new(0),
        }
    }

    /// Counts `bytes` allocated down; true if the last allocation among them reaches a sample
    /// (or the sampler has not drawn its first distance yet: see [`Sampler::take`]).
    pub(crate) fn count(&self, bytes: u64) -> bool {
        let left = self.left.get().saturating_sub_unsigned(bytes);
        self.left.set(left);
        left < 0
    }

    /// Bytes still to allocate before the next sample.
    pub(crate) fn left(&self) -> i64 {
        self.left.get()
    }

    /// After [`Sampler::count`]: whether the allocation of `size` bytes is to be sampled. If so,
    /// the count-down is suspended until [`Sampler::resume`] (which the caller must call once
    /// the sample is taken). A sampler that had no distance yet (just turned on) draws its
    /// first and counts `size` against it instead. `seed` tells heaps apart.
    #[cold]
    pub(crate) fn take(&self, size: usize, seed: usize) -> bool {
        if self.rng.get() == 0 {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid out-pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            let mixed = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ts.tv_nsec as u64;
            self.rng.set(mixed | 1); // xorshift needs a non-zero state
            let left = self.draw(interval()).saturating_sub(size as i64);
            if left >= 0 {
                self.left.set(left);
                return false;
            }
        }
        self.next.set(self.draw(interval()));
        self.left.set(i64::MAX);
        true
    }

    /// Ends the suspension [`Sampler::take`] began: the next distance counts from here.
    pub(crate) fn resume(&self) {
        self.left.set(self.next.get());
    }

    /// A distance from the exponential distribution of mean `interval`.
    fn draw(&self, interval: u64) -> i64 {
        // xorshift64*.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        let bits = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        let uniform = (bits + 1) as f64 / (1u64 << 53) as f64; // in (0, 1]
        let distance = -math::ln(uniform) * interval as f64;
        distance.min((i64::MAX / 2) as f64) as i64
    }
}

/// What a sample of `size` bytes stands for: objects (fixed point, `ONE` a whole object) and
/// bytes, `1 / p` and `size / p` with `p = 1 - exp(-size / interval)` its chance of being
/// sampled.
///
/// With the interval at most [`MAX_INTERVAL`], `1 / p` stays far below `u64`'s range.
pub(crate) fn weights(size: usize, interval: u64) -> (u64, u64) {
    let size = size.max(1) as f64;
    let x = size / interval as f64;
    // 1 - exp(-x) loses every digit for tiny x; its series does not.
    let p = if x < 1e-4 {
        x * (1.0 - x / 2.0)
    } else {
        1.0 - math::exp_neg(x)
    };
    let inverse = 1.0 / p;
    ((ONE as f64 * inverse) as u64, (size * inverse) as u64)
}

/// The longest mean distance between samples (1 TiB): beyond it a sample of one byte would
/// stand for more objects than the table's fixed point counts.
pub(crate) const MAX_INTERVAL: u64 = 1 << 40;

/// Records a sampled allocation of `size` bytes whose stack is `stack`; returns the record
/// for the block to carry, or `None` if the table is full.
pub(crate) fn record(stack: &stack::Stack, size: usize) -> Option<u32> {
    let (objects, bytes) = weights(size, interval());
    TABLE.lock().add(stack, objects, bytes)
}

/// The sampled block of `record` was freed.
pub(crate) fn forget(record: u32) {
    TABLE.lock().remove(record);
}

/// Locks the table before `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    TABLE.lock_raw();
}

/// Unlocks it in the parent.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork_parent() {
    // SAFETY: guaranteed by the caller.
    unsafe { TABLE.unlock_raw() };
}

/// Releases it in the child, where the samples stay (the child's memory is the parent's).
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and is the only one in the process.
pub(crate) unsafe fn reset_after_fork_child() {
    // SAFETY: guaranteed by the caller.
    unsafe { TABLE.reset_after_fork() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_stay_finite_at_the_longest_interval() {
        let (objects, bytes) = weights(1, MAX_INTERVAL);
        // ~2^40 objects of one byte, in units of 1/2^16: 2^56, room for 256 such samples.
        assert!(objects > 0 && objects <= MAX_INTERVAL << 17, "{objects}");
        assert!(
            bytes.abs_diff(MAX_INTERVAL) < MAX_INTERVAL / 1000,
            "{bytes}"
        );
    }

    #[test]
    fn weights_make_every_size_unbiased() {
        // A tiny block is sampled with chance ~size/interval: it stands for ~interval bytes.
        let (objects, bytes) = weights(16, DEFAULT_INTERVAL);
        assert!(
            (bytes as f64 - DEFAULT_INTERVAL as f64).abs() < 16.0,
            "{bytes}"
        );
        assert!(
            (objects / ONE).abs_diff(DEFAULT_INTERVAL / 16) <= 1,
            "{objects}"
        );
        // A block far bigger than the interval is always sampled: it stands for itself.
        let (objects, bytes) = weights(64 << 20, DEFAULT_INTERVAL);
        assert_eq!((objects, bytes), (ONE, 64 << 20));
    }

    #[test]
    fn distances_have_the_interval_as_their_mean() {
        let sampler = Sampler::new();
        sampler.rng.set(12345);
        let n = 200_000;
        let sum: i64 = (0..n).map(|_| sampler.draw(1000)).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean - 1000.0).abs() < 15.0, "mean distance {mean}");
    }
}
