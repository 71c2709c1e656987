//! The opt-in purger thread (`VMARENA_PURGE_THREAD=1`): gives freed memory back to the OS in
//! a program that has gone quiet.
//!
//! Purges normally run from the allocator's own slow paths (see `arena::purge`), so a program
//! that frees most of its memory and then stops calling the allocator keeps that memory until
//! it allocates again. With the variable set, a detached thread wakes when the next purge is
//! due (at least once per purge delay) and runs the purges that are due; it does nothing else
//! and never allocates through vmarena itself.
//!
//! It starts lazily, when memory first goes back to the arena ([`poke`]), from a path that
//! holds no allocator lock: creating a thread allocates (glibc's thread set-up calls `malloc`,
//! which under `LD_PRELOAD` is us, on the creating thread). A forked child has no purger (only
//! the forking thread survives `fork`), so the child handler marks it wanted again and the
//! child's first release starts its own.
//!
//! Layer: below `heap`, beside `large`, above `arena`; calls `arena`, `os` and `options`. `heap`, `large` and
//! `fork` call it.

use crate::arena::ARENA;
use crate::os::Os;
use crate::sync::atomic::{AtomicU8, Ordering};

/// The environment has not been read yet.
const UNREAD: u8 = 0;
/// Not wanted (the default), or it could not be started.
const OFF: u8 = 1;
/// Wanted and not running.
const WANTED: u8 = 2;
/// Running, or being started.
const RUNNING: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);

/// The longest the purger sleeps, whatever the delay: it also picks up a changed delay.
const MAX_SLEEP_NS: u64 = 1_000_000_000;
/// The shortest, so a zero delay does not make it spin.
const MIN_SLEEP_NS: u64 = 1_000_000;

/// Memory went back to the arena: start the purger if it is wanted and not running. The
/// caller holds no allocator lock. One load when the purger is off or running.
#[inline]
pub(crate) fn poke() {
    // Miri cannot run a detached thread past the end of the test that started it.
    // Relaxed: a state flag; the thread it starts reads nothing it publishes.
    if cfg!(miri) || matches!(STATE.load(Ordering::Relaxed), OFF | RUNNING) {
        return;
    }
    start();
}

#[cold]
#[inline(never)]
fn start() {
    if STATE.load(Ordering::Relaxed) == UNREAD {
        let wanted = crate::options::purge_thread();
        // Relaxed: racing readers compute the same value.
        let _ = STATE.compare_exchange(
            UNREAD,
            if wanted { WANTED } else { OFF },
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    // Exactly one caller moves WANTED to RUNNING and starts the thread; the allocations the
    // start makes (re-entering `poke`) find it RUNNING. Relaxed: as above.
    if STATE
        .compare_exchange(WANTED, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    if !spawn() {
        STATE.store(OFF, Ordering::Relaxed); // no second try: it would fail the same way
        crate::options::report::purger_not_started();
    }
}

/// Starts the detached purger thread with every signal blocked (signals are the program's
/// business, not ours). False if it could not be created.
fn spawn() -> bool {
    // SAFETY: (whole function) plain libc calls on locals that live across them; the thread
    // entry is an `extern "C"` function that ignores its argument.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        // The purge path is shallow; a small stack keeps the thread cheap.
        libc::pthread_attr_setstacksize(&mut attr, 256 << 10);
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
            (core::mem::zeroed(), core::mem::zeroed());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut thread: libc::pthread_t = 0;
        let created = libc::pthread_create(&mut thread, &attr, run, core::ptr::null_mut()) == 0;
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        if created {
            libc::pthread_setname_np(thread, c"vmarena-purge".as_ptr());
        }
        created
    }
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    loop {
        let now = ARENA.os().coarse_now_ns();
        let wait = match ARENA.next_purge_due() {
            Some(due) => due.saturating_sub(now),
            None => ARENA.purge_delay(),
        };
        sleep_ns(wait.clamp(MIN_SLEEP_NS, MAX_SLEEP_NS));
        ARENA.maybe_purge();
    }
}

fn sleep_ns(ns: u64) {
    let time = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec; an interrupted sleep just ends early (signals are blocked).
    unsafe { libc::nanosleep(&time, core::ptr::null_mut()) };
}

/// In a forked child: the parent's purger did not come along; the next release starts one.
pub(crate) fn reset_after_fork_child() {
    // Relaxed: the child's only thread.
    if STATE.load(Ordering::Relaxed) == RUNNING {
        STATE.store(WANTED, Ordering::Relaxed);
    }
}
