//! The per-region lock: Linux 6.15's `vm_refcnt` plus `vm_lock_seq`.
//!
//! `refcnt` is 0 while the region is detached (its descriptor is free or being rebuilt), 1 while
//! attached and idle, and 1 + n with n readers. A writer draining readers adds `WRITER`, which
//! stops new readers from entering. `lock_seq` equals the arena sequence while the current write
//! session has the region marked; ending the session (one increment of the arena sequence)
//! unmarks every region at once.
//!
//! Readers never wait: [`RegionLock::start_read`] either succeeds or tells the caller to fall
//! back to the arena lock in shared mode (or to look the region up again if it was detached).
//! Writers only mark regions while holding the arena write lock, so at most one writer ever
//! waits on a given region.
//!
//! Why a successful reader never overlaps a writer's changes (the kernel's argument):
//! * A reader whose reference predates the writer's `WRITER` bit is waited for by
//!   [`RegionLock::start_write`] before the region is marked or changed.
//! * A reader that takes its reference after the mark reads `refcnt` in the release sequence
//!   of the writer's `fetch_sub(WRITER, Release)` with an Acquire CAS, so it sees the new
//!   `lock_seq`; its Acquire load of the arena sequence then returns the same (odd) value while
//!   the session lasts, and it backs out.
//! * A reader that loads the arena sequence after the session ended synchronises with the
//!   session's final Release store and so sees everything the writer did.
//!
//! Descriptors are type-stable (never unmapped, never another type), so a stale pointer to one is
//! always safe to lock; the caller checks the region's identity after `start_read` succeeds.
//!
//! Layer: `sync`, the bottom; calls `sync::arena_lock`, `sync::futex` and `sync::atomic`.

use super::arena_lock::{ArenaLock, ArenaWriteGuard};
use super::atomic::{AtomicU32, AtomicU64, Ordering, loom_const_fn, spin_hint};
use super::futex;

/// Added to `refcnt` while a writer waits for readers to leave.
const WRITER: u32 = 1 << 30;
/// Readers fail (and fall back) rather than overflow into the writer bit.
const READER_LIMIT: u32 = WRITER - 1;
/// `lock_seq` of a region never marked. The arena sequence never reaches it.
const NEVER_MARKED: u64 = u64::MAX;

/// Spins before sleeping while readers drain (one under loom, where each spin is a branch).
const SPINS: u32 = if cfg!(vmarena_loom) { 1 } else { 128 };

/// Why [`RegionLock::start_read`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFail {
    /// A write session has the region (or is about to): fall back to the arena read lock.
    Locked,
    /// The descriptor is not attached to a region: look the region up again.
    Detached,
}

pub(crate) struct RegionLock {
    refcnt: AtomicU32,
    lock_seq: AtomicU64,
}

impl RegionLock {
    loom_const_fn! {
        /// A detached, unmarked lock.
        pub(crate) fn new() -> RegionLock {
            RegionLock { refcnt: AtomicU32::new(0), lock_seq: AtomicU64::new(NEVER_MARKED) }
        }
    }

    /// Takes a reader reference (`vma_start_read`).
    #[inline]
    pub(crate) fn start_read(&self, arena: &ArenaLock) -> Result<RegionReadGuard<'_>, ReadFail> {
        // Early racy check: a marked region fails cheaply. Both loads Relaxed because nothing
        // relies on the result; a wrong answer only costs a fallback or is caught below.
        if self.lock_seq.load(Ordering::Relaxed) == arena.seq_hint() {
            return Err(ReadFail::Locked);
        }
        // Relaxed: the CAS below re-validates the value.
        let mut count = self.refcnt.load(Ordering::Relaxed);
        loop {
            if count == 0 {
                return Err(ReadFail::Detached);
            }
            if count >= READER_LIMIT {
                // Includes `count & WRITER != 0`: a writer is draining readers.
                return Err(ReadFail::Locked);
            }
            // Acquire: orders the `lock_seq` check below (and every later read of the region)
            // after taking the reference, and pairs with the writer's Release `fetch_sub` so a
            // mark made before our increment is visible (case B in the module docs).
            match self.refcnt.compare_exchange_weak(
                count,
                count + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => count = now,
            }
        }
        let guard = RegionReadGuard { lock: self };
        // Relaxed for `lock_seq`: stable while we hold a reference (only written by a writer
        // that waited for readers, and ordered before us by the Acquire CAS). Acquire for the
        // arena sequence: see `ArenaLock::seq_acquire`.
        if self.lock_seq.load(Ordering::Relaxed) == arena.seq_acquire() {
            drop(guard);
            return Err(ReadFail::Locked);
        }
        Ok(guard)
    }

    fn end_read(&self) {
        // Release: our reads of the region happen before a writer that sees the decrement.
        let prev = self.refcnt.fetch_sub(1, Ordering::Release);
        if prev - 1 == WRITER + 1 {
            // The writer waits for exactly "attached, no readers". The futex word lives in the
            // type-stable descriptor itself, so waking it is safe even if the region has since
            // been detached and reused (unlike the foreign `mm` the kernel once woke after free).
            futex::wake_all(&self.refcnt);
        }
    }

    /// Marks the region write-locked for the guard's session (`vma_start_write`): waits for
    /// current readers to leave; new readers fail until the session ends.
    pub(crate) fn start_write(&self, guard: &ArenaWriteGuard<'_>) {
        // Relaxed: `lock_seq` is only written under the arena write lock, which we hold.
        if self.lock_seq.load(Ordering::Relaxed) == guard.seq() {
            return; // already marked in this session
        }
        // Acquire: together with the Acquire loads in `wait_for_readers`, orders the readers'
        // accesses (released by their decrements) before our changes.
        let prev = self.refcnt.fetch_add(WRITER, Ordering::Acquire);
        debug_assert!(
            prev != 0 && prev < WRITER,
            "start_write on a detached or locked region"
        );
        self.wait_for_readers();
        // Relaxed: published to later readers by the Release `fetch_sub` below (case B) and to
        // everyone by the session's final Release store.
        self.lock_seq.store(guard.seq(), Ordering::Relaxed);
        // Release: a reader whose Acquire CAS follows this in the release sequence sees the mark.
        self.refcnt.fetch_sub(WRITER, Ordering::Release);
    }

    /// True if the guard's session has marked this region.
    pub(crate) fn is_write_locked(&self, guard: &ArenaWriteGuard<'_>) -> bool {
        // Relaxed: only the lock holder writes `lock_seq`.
        self.lock_seq.load(Ordering::Relaxed) == guard.seq()
    }

    /// Attaches a freshly initialised region, marked for the current session, so readers may
    /// use it once the session ends (`vma_mark_attached` + `refcount_set_release`).
    pub(crate) fn attach(&self, guard: &ArenaWriteGuard<'_>) {
        // Relaxed: readers check `refcnt` first (Acquire), which orders this store.
        self.lock_seq.store(guard.seq(), Ordering::Relaxed);
        // Release: every field initialised before this store is visible to a reader whose
        // Acquire CAS sees a non-zero count.
        let prev = self.refcnt.swap(1, Ordering::Release);
        debug_assert_eq!(prev, 0, "attach of an attached region");
    }

    /// Detaches a marked region (`vma_mark_detached`): waits for the readers that took a
    /// reference only to find it marked, then drops the count to zero so that stale pointers
    /// fail with [`ReadFail::Detached`].
    pub(crate) fn detach(&self, guard: &ArenaWriteGuard<'_>) {
        debug_assert!(self.is_write_locked(guard), "detach of an unmarked region");
        // Acquire: as in `start_write`.
        self.refcnt.fetch_add(WRITER, Ordering::Acquire);
        self.wait_for_readers();
        // Release: the descriptor's later reuse (re-initialisation) is ordered after this.
        self.refcnt.store(0, Ordering::Release);
    }

    /// True while attached (for assertions and bookkeeping under the arena lock).
    pub(crate) fn is_attached(&self) -> bool {
        // Relaxed: callers hold the arena lock, which orders attach/detach.
        self.refcnt.load(Ordering::Relaxed) != 0
    }

    /// Restores "attached, no readers" in a child after `fork`: the readers whose references
    /// the child inherited belong to threads that do not exist there. The caller holds the
    /// arena write lock.
    pub(crate) fn reset_readers_after_fork(&self) {
        // Relaxed: only the forking thread runs in the child, and it holds the arena lock.
        if self.refcnt.load(Ordering::Relaxed) != 0 {
            self.refcnt.store(1, Ordering::Relaxed);
        }
    }

    /// Waits until only the attach reference and our WRITER bit remain.
    fn wait_for_readers(&self) {
        let mut spins = 0;
        loop {
            // Acquire: pairs with the readers' Release decrements.
            let count = self.refcnt.load(Ordering::Acquire);
            if count == WRITER + 1 {
                return;
            }
            if spins < SPINS {
                spins += 1;
                spin_hint();
            } else {
                futex::wait(&self.refcnt, count);
            }
        }
    }
}

/// A reader reference on a region; dropping it ends the read (`vma_end_read`).
pub(crate) struct RegionReadGuard<'a> {
    lock: &'a RegionLock,
}

impl Drop for RegionReadGuard<'_> {
    fn drop(&mut self) {
        self.lock.end_read();
    }
}

#[cfg(all(test, not(vmarena_loom)))]
mod tests {
    use super::*;

    #[test]
    fn detached_region_refuses_readers() {
        let arena = ArenaLock::new();
        let region = RegionLock::new();
        assert_eq!(region.start_read(&arena).err(), Some(ReadFail::Detached));
    }

    #[test]
    fn a_mark_lasts_exactly_one_session() {
        let arena = ArenaLock::new();
        let region = RegionLock::new();
        {
            let w = arena.write();
            region.attach(&w);
            assert!(region.is_write_locked(&w));
            assert_eq!(region.start_read(&arena).err(), Some(ReadFail::Locked));
        }
        let r = region
            .start_read(&arena)
            .expect("unmarked after the session");
        drop(r);
        {
            let w = arena.write();
            assert!(
                !region.is_write_locked(&w),
                "marks must not survive a session"
            );
            region.start_write(&w);
            assert_eq!(region.start_read(&arena).err(), Some(ReadFail::Locked));
            region.detach(&w);
        }
        assert_eq!(region.start_read(&arena).err(), Some(ReadFail::Detached));
    }

    #[test]
    fn writer_waits_for_a_reader() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        struct Shared {
            arena: ArenaLock,
            region: RegionLock,
            reader_done: AtomicBool,
        }
        let s = Arc::new(Shared {
            arena: ArenaLock::new(),
            region: RegionLock::new(),
            reader_done: AtomicBool::new(false),
        });
        drop({
            let w = s.arena.write();
            s.region.attach(&w);
            w
        });
        let guard = s.region.start_read(&s.arena).unwrap();
        let s2 = s.clone();
        let writer = std::thread::spawn(move || {
            let w = s2.arena.write();
            s2.region.start_write(&w);
            // We only get here once the reader dropped its reference.
            s2.reader_done.load(std::sync::atomic::Ordering::Acquire)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.reader_done
            .store(true, std::sync::atomic::Ordering::Release);
        drop(guard);
        assert!(
            writer.join().unwrap(),
            "writer marked the region while a reader held it"
        );
    }
}
