//! A small futex mutex for the allocator's bookkeeping that must be serialised but never sits
//! on a malloc/free fast path: the heap registry and the exit key's initialisation, the
//! abandoned-page lists, the fallback heap, the isolated heaps' registry and each `Heap`, and
//! two leaves of heap profiling (the samples' table, the shared shelf of sample regions),
//! taken while nothing else is held.
//!
//! States: 0 unlocked, 1 locked, 2 locked with (possible) sleepers. No holder re-enters its own
//! mutex through the allocator. Some do nest: an isolated heap's holder takes the fallback
//! heap's, and the fallback heap's holder (like any heap refilling) an abandoned list's. They
//! always nest in the one order `crate::fork` takes them in (isolated heaps' registry, each
//! `Heap`, the fallback heap, the abandoned lists, the heap registry), so there is no cycle.
//!
//! Layer: `sync`, the bottom; calls `sync::futex` and `sync::atomic`.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use super::atomic::{AtomicU32, Ordering, loom_const_fn, spin_hint};
use super::futex;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// Spin this many times before sleeping: critical sections here are a few dozen instructions.
const SPINS: u32 = if cfg!(vmarena_loom) { 1 } else { 100 };

pub(crate) struct RawMutex {
    state: AtomicU32,
}

impl RawMutex {
    loom_const_fn! {
        pub(crate) fn new() -> RawMutex {
            RawMutex { state: AtomicU32::new(UNLOCKED) }
        }
    }

    #[inline]
    pub(crate) fn lock(&self) {
        // Acquire: everything the previous holder wrote before `unlock` is visible to us.
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            // Relaxed: only a hint for when to retry the Acquire CAS below.
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            spin_hint();
        }
        // Announce a sleeper; Acquire because winning the swap from UNLOCKED takes the lock.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex::wait(&self.state, CONTENDED);
        }
    }

    /// Forgets every holder and waiter: for a forked child, where the holder is the calling
    /// thread and the waiters do not exist.
    ///
    /// # Safety
    /// The calling thread is the only one in the process.
    pub(crate) unsafe fn reset_after_fork(&self) {
        // Relaxed: one thread.
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn unlock(&self) {
        // Release: publishes the critical section to the next holder's Acquire.
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex::wake_one(&self.state);
        }
    }
}

/// A value guarded by a [`RawMutex`].
pub(crate) struct Mutex<T> {
    raw: RawMutex,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and the raw mutex admits one guard at a time.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the value; no thread can hold a guard across the move.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    loom_const_fn! {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex { raw: RawMutex::new(), value: UnsafeCell::new(value) }
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard { mutex: self }
    }

    /// Takes the lock without a guard (for `fork` handlers, which lock in one call and unlock
    /// in another).
    pub(crate) fn lock_raw(&self) {
        self.raw.lock();
    }

    /// Releases a lock taken with [`Mutex::lock_raw`].
    ///
    /// # Safety
    /// The calling thread holds the lock through `lock_raw`, and no guard exists.
    pub(crate) unsafe fn unlock_raw(&self) {
        self.raw.unlock();
    }

    /// The value, for a thread that holds the lock through [`Mutex::lock_raw`].
    ///
    /// # Safety
    /// As for [`Mutex::unlock_raw`], and the reference is not used after the unlock.
    #[allow(clippy::mut_from_ref)] // the lock makes it unique
    pub(crate) unsafe fn get_locked(&self) -> &mut T {
        // SAFETY: the caller holds the lock, so no other reference to the value exists.
        unsafe { &mut *self.value.get() }
    }

    /// The value, without the lock: for reading its atomics while another thread may hold it.
    pub(crate) fn data_ptr(&self) -> *mut T {
        self.value.get()
    }

    /// In a forked child: releases the lock whoever held it (see [`RawMutex::reset_after_fork`]).
    ///
    /// # Safety
    /// The calling thread is the only one in the process and uses no guard of this mutex.
    pub(crate) unsafe fn reset_after_fork(&self) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.raw.reset_after_fork() };
    }
}

pub(crate) struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held, so no other reference to the value exists.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only access through this guard.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.raw.unlock();
    }
}

#[cfg(all(test, not(vmarena_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_under_contention() {
        let (count, rounds) = if cfg!(miri) { (4, 100) } else { (8, 10_000) };
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..count)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), count * rounds);
    }
}
