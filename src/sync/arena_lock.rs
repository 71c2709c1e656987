//! The arena lock: Linux's `mmap_lock` together with its `mm_lock_seq` seqcount.
//!
//! * [`ArenaLock::write`] takes the lock exclusively and makes the sequence odd
//!   (`mmap_write_lock` + `mm_lock_seqcount_begin`). Remap operations run under the guard and
//!   mark the regions they change (`RegionLock::start_write`).
//! * Dropping the [`ArenaWriteGuard`] makes the sequence even again with one Release store, and
//!   that single increment releases every region marked during the session
//!   (`vma_end_write_all`), then unlocks.
//! * [`ArenaLock::read`] is the shared fallback for readers whose lock-free path failed.
//! * [`ArenaLock::speculate_try_begin`] / [`ArenaLock::speculate_retry`] validate lock-free reads
//!   of arena metadata (`mmap_lock_speculate_try_begin/retry`): give up at once while a writer
//!   is inside, since waiting for it is no better than taking the lock.
//!
//! The sequence is 64 bits wide: the kernel's 32-bit counter was shown to wrap within hours, and
//! a wrapped sequence could validate a stale speculation.
//!
//! Memory ordering (Boehm's seqlock recipe, also the kernel's):
//! writer `seq = s+1 (Relaxed); fence(Release); relaxed stores...; seq = s+2 (Release)`;
//! speculative reader `s1 = seq (Acquire); relaxed loads...; fence(Acquire); s2 = seq (Relaxed)`.
//! If any relaxed load observed a store made after the writer's Release fence, that fence
//! synchronises with the reader's Acquire fence, so the writer's `s+1` store happens-before the
//! reader's second load and `s2 != s1`: the read is rejected. If `s1` already read `s+2`, the
//! Acquire load synchronised with the writer's final Release store and every store is visible.
//!
//! Layer: `sync`, the bottom; calls `sync::rwlock` and `sync::atomic`.

use super::atomic::{AtomicU64, Ordering, fence, loom_const_fn};
use super::rwlock::RawRwLock;

pub(crate) struct ArenaLock {
    lock: RawRwLock,
    /// Odd while a writer holds the lock. Only the lock holder stores to it.
    seq: AtomicU64,
}

impl ArenaLock {
    loom_const_fn! {
        pub(crate) fn new() -> ArenaLock {
            ArenaLock { lock: RawRwLock::new(), seq: AtomicU64::new(0) }
        }
    }

    /// Takes the arena lock exclusively and opens a write session.
    pub(crate) fn write(&self) -> ArenaWriteGuard<'_> {
        self.lock.write_lock();
        self.begin_session()
    }

    /// Opens a write session if the lock is free now; `None` rather than waiting.
    /// True if the lock is held, in either mode, now (see [`RawRwLock::is_held`]).
    pub(crate) fn is_held(&self) -> bool {
        self.lock.is_held()
    }

    pub(crate) fn try_write(&self) -> Option<ArenaWriteGuard<'_>> {
        self.lock.try_write_lock().then(|| self.begin_session())
    }

    /// Makes the sequence odd for a session whose caller just took the lock exclusively.
    fn begin_session(&self) -> ArenaWriteGuard<'_> {
        // Relaxed: we hold the lock, whose Acquire ordered us after the previous session's
        // final store; no other thread writes `seq`.
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        debug_assert!(
            seq & 1 == 1,
            "arena sequence was odd outside a write session"
        );
        self.seq.store(seq, Ordering::Relaxed);
        // Release fence: orders the odd store before every store of the session (the
        // "store-acquire" C++ lacks). A speculative reader that sees any of those stores is
        // guaranteed to see the odd sequence at its validation.
        fence(Ordering::Release);
        ArenaWriteGuard { arena: self, seq }
    }

    /// Takes the arena lock in shared mode: no write session can run until the guard drops.
    pub(crate) fn read(&self) -> ArenaReadGuard<'_> {
        self.lock.read_lock();
        ArenaReadGuard { arena: self }
    }

    /// In a forked child, after the forking thread's session ended: forgets the holders and
    /// waiters that were other threads (see [`RawRwLock::reset_after_fork`]).
    ///
    /// # Safety
    /// The calling thread is the only one in the process and holds no guard of this lock.
    pub(crate) unsafe fn reset_after_fork(&self) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.lock.reset_after_fork() };
    }

    /// The sequence as a racy hint (the early bail-out of `vma_start_read`).
    #[inline]
    pub(crate) fn seq_hint(&self) -> u64 {
        // Relaxed: the result is only used to fail early; the decisive check uses Acquire.
        self.seq.load(Ordering::Relaxed)
    }

    /// The sequence for the decisive check of a region read lock.
    #[inline]
    pub(crate) fn seq_acquire(&self) -> u64 {
        // Acquire: if the write session that marked a region has ended, this load synchronises
        // with its final Release store, so the region's new contents are visible to the reader.
        self.seq.load(Ordering::Acquire)
    }

    /// Starts a speculative read. `None` if a writer is inside: take the slow path instead.
    #[inline]
    pub(crate) fn speculate_try_begin(&self) -> Option<u64> {
        // Acquire: pairs with the Release end of the previous session (see module docs).
        let seq = self.seq.load(Ordering::Acquire);
        if seq & 1 == 0 { Some(seq) } else { None }
    }

    /// True if the speculation begun at `seq` overlapped a write session and must be discarded.
    #[inline]
    pub(crate) fn speculate_retry(&self, seq: u64) -> bool {
        // Acquire fence: orders every relaxed load of the speculation before the re-read
        // (the kernel's smp_rmb in read_seqcount_retry).
        fence(Ordering::Acquire);
        // Relaxed: ordered by the fence above.
        self.seq.load(Ordering::Relaxed) != seq
    }
}

/// Proof that the arena lock is held exclusively; carries the session's (odd) sequence.
pub(crate) struct ArenaWriteGuard<'a> {
    arena: &'a ArenaLock,
    seq: u64,
}

impl ArenaWriteGuard<'_> {
    /// The session's sequence number: the value a marked region's `lock_seq` holds.
    #[inline]
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for ArenaWriteGuard<'_> {
    fn drop(&mut self) {
        // Release: every store of the session (region contents and marks) happens-before any
        // reader that observes the even value. This one store releases every marked region.
        self.arena.seq.store(self.seq + 1, Ordering::Release);
        self.arena.lock.write_unlock();
    }
}

/// The arena lock held in shared mode.
pub(crate) struct ArenaReadGuard<'a> {
    arena: &'a ArenaLock,
}

impl Drop for ArenaReadGuard<'_> {
    fn drop(&mut self) {
        self.arena.lock.read_unlock();
    }
}

#[cfg(all(test, not(vmarena_loom)))]
mod tests {
    use super::*;

    #[test]
    fn sequence_is_odd_only_inside_a_write_session() {
        let lock = ArenaLock::new();
        assert_eq!(lock.speculate_try_begin(), Some(0));
        let guard = lock.write();
        assert_eq!(guard.seq(), 1);
        assert_eq!(
            lock.speculate_try_begin(),
            None,
            "speculation must give up while odd"
        );
        drop(guard);
        assert_eq!(lock.speculate_try_begin(), Some(2));
    }

    #[test]
    fn a_write_session_invalidates_a_speculation() {
        let lock = ArenaLock::new();
        let seq = lock.speculate_try_begin().unwrap();
        assert!(!lock.speculate_retry(seq));
        drop(lock.write());
        assert!(lock.speculate_retry(seq));
    }

    #[test]
    fn readers_share_and_exclude_writers() {
        let lock = std::sync::Arc::new(ArenaLock::new());
        let r1 = lock.read();
        let r2 = lock.read();
        let l2 = lock.clone();
        let writer = std::thread::spawn(move || {
            let g = l2.write();
            g.seq()
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The writer cannot have started its session while we read.
        assert_eq!(lock.seq_hint() & 1, 0);
        drop(r1);
        drop(r2);
        assert_eq!(writer.join().unwrap() & 1, 1);
        assert_eq!(lock.seq_hint(), 2);
    }
}
