//! The arena's part of `fork` safety: the forking thread holds a write session across `fork()`
//! (so no remap operation is half done in the child), and in the child the regions' reader
//! counts and the arena lock are reset (their readers and waiters were other threads, which
//! the child does not have).
//!
//! Layer: `arena`; calls `arena`'s own lists and `sync`'s locks and `config`. Its caller is
//! `crate::fork`.

use core::cell::UnsafeCell;

use super::{Arena, PlatformOs, WriteSession};
use crate::sync::atomic::Ordering;

/// The write session held across `fork`. Only the forking thread touches it, between its
/// `prepare` and `parent`/`child` handlers.
struct Held(UnsafeCell<Option<WriteSession<'static, PlatformOs>>>);

// SAFETY: see above: a single thread uses it, and `fork` orders the handlers.
unsafe impl Sync for Held {}

static HELD: Held = Held(UnsafeCell::new(None));

impl Arena<PlatformOs> {
    /// Before `fork`: take the arena write lock and keep it.
    pub(crate) fn lock_for_fork(&'static self) {
        let session = self.write();
        // SAFETY: only the forking thread uses HELD (see `Held`).
        unsafe { *HELD.0.get() = Some(session) };
    }

    /// After `fork`, in the parent: end the held session.
    pub(crate) fn unlock_after_fork_parent(&self) {
        // SAFETY: only the forking thread uses HELD.
        drop(unsafe { (*HELD.0.get()).take() });
    }

    /// After `fork`, in the child: forget the other threads' reader references and any purge
    /// they were running (and make a purge due, see below), end the held session (which gives
    /// back the large blocks queued meanwhile), and forget the other threads' place on the lock
    /// (a writer queued behind the session would otherwise hold readers back forever).
    ///
    /// # Safety
    /// The calling thread ran [`Arena::lock_for_fork`] and is the only one in the process.
    pub(crate) unsafe fn unlock_after_fork_child(&self) {
        // SAFETY: only the forking thread uses HELD; it is the only thread in the child.
        let session = unsafe { (*HELD.0.get()).take() };
        if let Some(session) = &session {
            // Every region, not only the pages regions: a refill holding a stale pointer
            // takes its reference before it checks what the region is, so a thread cut there
            // may have left one on a large block, whose release would then wait for it.
            for region in session.state.descriptors.all_regions() {
                region.lock.reset_readers_after_fork();
            }
        }
        // Relaxed (here and below): the child has one thread. Held while the session ends:
        // the child's fork handler purges nothing (a child that only calls `exec` would pay
        // for a sweep); its first slow path does.
        self.purging.store(true, Ordering::Relaxed);
        drop(session);
        // SAFETY: one thread (caller), whose session just ended.
        unsafe { self.lock.reset_after_fork() };
        // No purge runs (another thread's was cut, if any), and one is due now: a purge cut
        // between its sessions had set the schedule to "nothing due" while regions kept their
        // due times.
        self.purging.store(false, Ordering::Relaxed);
        self.schedule_purge(0);
    }
}
