//! `fork()` from a multi-threaded program: only the forking thread survives in the child, so
//! any allocator lock another thread held would stay locked there forever (and the arena
//! sequence could stay odd). `pthread_atfork` handlers take every allocator lock before the
//! fork, in the one order the allocator ever nests them (fallback heap → abandoned lists →
//! registry → exit key → arena), and release them after it on both sides; the child also drops
//! the dead threads' region reader references. Pages other threads owned stay theirs in the
//! child: they are leaked, as their memory is still mapped there.

use crate::arena::ARENA;
use crate::heap::{abandon, fallback, registry, tls};
use crate::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the handlers once per process (called when a thread's heap first comes up).
pub(crate) fn install() {
    // Relaxed: a racing second installer is stopped by the swap; the handlers themselves need
    // no ordering with this flag.
    if INSTALLED.load(Ordering::Relaxed) || INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: the handlers are `extern "C"` functions with no arguments, valid forever.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    fallback::lock_for_fork();
    abandon::lock_for_fork();
    registry::lock_for_fork();
    tls::lock_for_fork();
    ARENA.lock_for_fork();
}

extern "C" fn parent() {
    ARENA.unlock_after_fork_parent();
    // SAFETY: `prepare` locked these on this thread.
    unsafe { unlock_heap_locks() };
}

extern "C" fn child() {
    ARENA.unlock_after_fork_child();
    // SAFETY: `prepare` locked these on this thread, which is the child's only thread.
    unsafe { unlock_heap_locks() };
}

/// # Safety
/// The calling thread ran `prepare`.
unsafe fn unlock_heap_locks() {
    // SAFETY: guaranteed by the caller; reverse order of `prepare`.
    unsafe {
        tls::unlock_after_fork();
        registry::unlock_after_fork();
        abandon::unlock_after_fork();
        fallback::unlock_after_fork();
    }
}
