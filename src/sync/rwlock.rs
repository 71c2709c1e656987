//! The arena's reader-writer lock (the `mmap_lock` rwsem of Linux), built on a futex.
//!
//! Writers are the remap operations; readers are threads whose lock-free region access failed
//! and that fall back to the arena lock in shared mode. Waiting writers hold back new readers
//! so a stream of fallbacks cannot starve a remap. Nothing here allocates.
//!
//! State word: bits 0..29 count readers, then WRITER (held exclusively), WRITER_WAITING (a
//! writer is queued: new readers wait) and SLEEPERS (someone may be asleep in the futex).
//!
//! Layer: `sync`, the bottom; calls `sync::futex` and `sync::atomic`.

use super::atomic::{AtomicU32, Ordering, loom_const_fn, spin_hint};
use super::futex;

const READERS_MASK: u32 = (1 << 29) - 1;
const WRITER: u32 = 1 << 29;
const WRITER_WAITING: u32 = 1 << 30;
const SLEEPERS: u32 = 1 << 31;

/// Spins before sleeping (one under loom, where each spin is an explored branch).
const SPINS: u32 = if cfg!(vmarena_loom) { 1 } else { 64 };

pub(crate) struct RawRwLock {
    state: AtomicU32,
}

impl RawRwLock {
    loom_const_fn! {
        pub(crate) fn new() -> RawRwLock {
            RawRwLock { state: AtomicU32::new(0) }
        }
    }

    pub(crate) fn read_lock(&self) {
        let mut spins = 0;
        loop {
            // Relaxed: the value only chooses between the CAS below and waiting.
            let s = self.state.load(Ordering::Relaxed);
            if s & (WRITER | WRITER_WAITING) == 0 && s & READERS_MASK < READERS_MASK {
                // Acquire: pairs with the Release of the last write_unlock, so the reader sees
                // every change the writer made.
                if self
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if spins < SPINS {
                spins += 1;
                spin_hint();
                continue;
            }
            self.sleep(s);
        }
    }

    pub(crate) fn read_unlock(&self) {
        // Release: our reads of protected data happen before a later writer's changes.
        let prev = self.state.fetch_sub(1, Ordering::Release);
        if prev & READERS_MASK == 1 && prev & SLEEPERS != 0 {
            self.wake_sleepers();
        }
    }

    pub(crate) fn write_lock(&self) {
        let mut spins = 0;
        loop {
            // Relaxed: only chooses between the CAS and waiting.
            let s = self.state.load(Ordering::Relaxed);
            if s & (WRITER | READERS_MASK) == 0 {
                // Acquire: pairs with the Release of the previous holder (reader or writer).
                // Clearing WRITER_WAITING is safe: other waiting writers set it again when
                // they wake up and find the lock taken.
                let new = (s & SLEEPERS) | WRITER;
                if self
                    .state
                    .compare_exchange_weak(s, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if s & WRITER_WAITING == 0 {
                // Relaxed: a flag that only holds readers back; no data is published with it.
                let _ = self.state.compare_exchange_weak(
                    s,
                    s | WRITER_WAITING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                continue;
            }
            if spins < SPINS {
                spins += 1;
                spin_hint();
                continue;
            }
            self.sleep(s);
        }
    }

    /// Takes the lock exclusively if that needs no waiting: no holder of either kind. (A
    /// writer queued for it is passed over; it takes the lock after us.)
    /// True if a reader or a writer holds the lock now (a snapshot). Relaxed: callers that
    /// act on the answer order it with a fence of their own.
    pub(crate) fn is_held(&self) -> bool {
        self.state.load(Ordering::Relaxed) & (WRITER | READERS_MASK) != 0
    }

    pub(crate) fn try_write_lock(&self) -> bool {
        // Relaxed: only chooses whether to try the CAS.
        let s = self.state.load(Ordering::Relaxed);
        // Acquire: as in `write_lock`.
        s & (WRITER | READERS_MASK) == 0
            && self
                .state
                .compare_exchange(s, s | WRITER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    pub(crate) fn write_unlock(&self) {
        // Release: publishes the writer's changes to the next Acquire of the lock.
        let prev = self
            .state
            .fetch_and(!(WRITER | SLEEPERS), Ordering::Release);
        if prev & SLEEPERS != 0 {
            futex::wake_all(&self.state);
        }
    }

    /// Forgets every holder and waiter: for a forked child, where a writer that queued while
    /// the forking thread held the lock left `WRITER_WAITING` set, and no longer exists to
    /// clear it (readers would wait for it forever).
    ///
    /// # Safety
    /// The calling thread is the only one in the process and holds no guard of this lock.
    pub(crate) unsafe fn reset_after_fork(&self) {
        // Relaxed: one thread.
        self.state.store(0, Ordering::Relaxed);
    }

    /// Marks that a thread sleeps and sleeps while the state is unchanged. The futex re-checks
    /// the value atomically with going to sleep, so an unlock between our load and the sleep is
    /// never lost.
    #[cold]
    fn sleep(&self, seen: u32) {
        let sleeping = seen | SLEEPERS;
        // Relaxed: the SLEEPERS bit publishes nothing; it only asks unlockers to wake us.
        if seen & SLEEPERS == 0
            && self
                .state
                .compare_exchange(seen, sleeping, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        futex::wait(&self.state, sleeping);
    }

    #[cold]
    fn wake_sleepers(&self) {
        // Relaxed: waking carries no data; woken threads re-acquire with Acquire.
        self.state.fetch_and(!SLEEPERS, Ordering::Relaxed);
        futex::wake_all(&self.state);
    }
}

#[cfg(all(test, not(vmarena_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicI64;

    /// Writers keep two counters equal; readers must never see them differ.
    #[test]
    fn readers_never_see_a_half_done_write() {
        struct Shared {
            lock: RawRwLock,
            a: AtomicI64,
            b: AtomicI64,
        }
        let s = Arc::new(Shared {
            lock: RawRwLock::new(),
            a: AtomicI64::new(0),
            b: AtomicI64::new(0),
        });
        let rounds = if cfg!(miri) { 100 } else { 5_000 };
        let mut threads = Vec::new();
        for w in 0..3 {
            let s = s.clone();
            threads.push(std::thread::spawn(move || {
                for _ in 0..rounds {
                    if w == 0 {
                        s.lock.write_lock();
                        let v = s.a.load(Ordering::Relaxed) + 1;
                        s.a.store(v, Ordering::Relaxed);
                        std::hint::spin_loop();
                        s.b.store(v, Ordering::Relaxed);
                        s.lock.write_unlock();
                    } else {
                        s.lock.read_lock();
                        assert_eq!(s.a.load(Ordering::Relaxed), s.b.load(Ordering::Relaxed));
                        s.lock.read_unlock();
                    }
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.a.load(Ordering::Relaxed), rounds);
        assert_eq!(s.lock.state.load(Ordering::Relaxed) & !SLEEPERS, 0);
    }
}
