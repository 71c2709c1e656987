//! `fork()` from a multi-threaded program: only the forking thread survives in the child, so
//! any allocator lock another thread held would stay locked there forever (and the arena
//! sequence could stay odd), and any heap another thread owned would stay registered for a
//! thread that does not exist. `pthread_atfork` handlers take every allocator lock before the
//! fork, in the one order the allocator ever nests them (isolated heaps' registry → each
//! isolated heap → fallback heap → abandoned lists → heap registry and exit key → arena → the
//! heap profile's table → the shared shelf of sample regions), so
//! that nothing is half changed at the instant of the
//! fork. After it, the parent unlocks them; the child *resets* them (waiters that were other
//! threads, such as a writer queued on the arena lock, left marks nobody would clear),
//! forgets the other threads' reader references, and rebuilds the registry with its one
//! thread's heap. Pages other threads owned are leaked in the child: their owners may have been
//! in the middle of an operation on them, so the child cannot know which blocks are live.
//!
//! # What a forked child inherits
//!
//! The locks above make everything *behind a lock* consistent at the fork. State that other
//! threads change without a lock (their own heaps, and the lock-free words below) is a cut
//! taken at an arbitrary instruction of each thread: the child must not trust it. Every such
//! piece of state, and what the child does with it (*keep*: valid as it is; *reset*: set to a
//! safe value; *leak*: never used again, its memory lost to the child):
//!
//! | state | written by | in the child |
//! |---|---|---|
//! | the forking thread's heap (pages, cache, counters) | its thread | keep: it was inside `fork`, not mid-operation |
//! | other threads' heaps: pages, page queues, current pages | owner only | leak the pages; the heap is built anew (`HeapCore::rebuild`) and pooled |
//! | other threads' large-block caches | owner only | leak: the blocks stay `Cached`, so a stray free of one aborts; the heap is built anew. (A cache cut mid-shift may list a block twice: handing it out would give two threads one block.) |
//! | other threads' counters | owner only | keep: folded into the orphans' counters (statistics) |
//! | heap registry, pool, exit key | registry mutex | reset the mutex; dead heaps recycled as above |
//! | a page's remote-free word | CAS by any thread | keep: a push either happened or not; a block whose push was cut is leaked |
//! | abandoned page lists | their mutex | keep (reset the mutex) |
//! | the fallback heap | its mutex | keep (reset the mutex) |
//! | isolated heaps (`Heap`) | their mutex | keep (reset the mutexes); a `LocalHeap` of another thread is unreachable in the child |
//! | arena lock, sequence, region readers | lock protocol | reset: the forking thread's session ends; other threads' reader references are dropped on every region descriptor (a refill may hold one on any, large blocks included) |
//! | region page bitmaps | CAS under a region read lock | keep: a page claimed by a thread cut mid-refill is leaked |
//! | the large-free queue | CAS push by any free | keep: the child's session end gives back what was pushed; a block whose free was cut between its state change and its push stays `Queued`, leaked |
//! | a large block's state word | CAS by its freer | keep: every move is one CAS |
//! | purge schedule (`next_purge`, `purging`) | any slow path | reset: not purging, and a purge due now (a purge cut between its sessions had said "nothing due") |
//! | the purger thread | lazy start | reset: wanted again, started by the child's first release |
//! | options | first reader | reset a read in progress; keep what was read |
//! | the heap profile's table (samples, stacks) | its mutex | keep (reset the mutex): the child's live blocks are the parent's, sampled ones included |
//! | the shared shelf of sample regions | its mutex | keep (reset the mutex): the regions are the child's copy, still cached |
//! | other threads' sample count-downs | owner only | gone with their heaps (rebuilt) |
//! | heap ids, the free-marker secret | atomics | keep |
//! | a thread's TLS slot | its thread | gone with the thread (a new thread's slot starts at `UNINIT`) |
//!
//! The handlers are registered when the module vmarena is linked into is loaded (a
//! constructor in `.init_array`), before the program's first allocation. glibc runs prepare
//! handlers in reverse order of registration, so handlers that other libraries register later
//! run before ours, while allocating still works. Nothing below calls this module: it is the
//! one place that knows every lock.
//!
//! Layer: the top (with `global`); calls the fork hooks of every layer below: `arena`, `heap`
//! (`abandon`, `fallback`, `lifecycle`, `sample_shelf`), `isolated`, `sampling`, `purger` and
//! `options`.

use crate::arena::ARENA;
use crate::heap::{abandon, fallback, lifecycle, sample_shelf};
use crate::isolated;
use crate::sampling;
use crate::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

// The constructor: it runs before `main` in an executable and at `dlopen` (or preload) for a
// shared library. (Miri runs no constructors, and its programs do not fork.)
#[cfg(not(miri))]
#[used]
#[unsafe(link_section = ".init_array")]
static INSTALL_AT_LOAD: extern "C" fn() = install_at_load;

#[cfg(not(miri))]
extern "C" fn install_at_load() {
    install();
}

/// Installs the handlers once per process (or per loaded copy of vmarena).
fn install() {
    // Relaxed: a racing second installer is stopped by the swap; the handlers themselves need
    // no ordering with this flag.
    if INSTALLED.load(Ordering::Relaxed) || INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    register(prepare, parent, child);
}

/// Registers fork handlers for this module (the executable or shared library vmarena is
/// linked into), so that glibc drops them when a library is unloaded: a plugin built on
/// vmarena and `dlclose`d must leave no handler behind in unmapped code. `pthread_atfork`
/// does this only when it comes from `libc_nonshared.a`, which passes the caller's
/// `__dso_handle`; linked without it, it resolves to a compatibility symbol in `libc.so.6`
/// that passes glibc's own handle instead. So call what it calls.
#[cfg(target_env = "gnu")]
fn register(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    unsafe extern "C" {
        /// Defined by the C runtime's `crtbegin` in every module: its identity.
        static __dso_handle: u8;
        fn __register_atfork(
            prepare: Option<extern "C" fn()>,
            parent: Option<extern "C" fn()>,
            child: Option<extern "C" fn()>,
            dso_handle: *const u8,
        ) -> libc::c_int;
    }
    // SAFETY: the handlers are `extern "C"` functions with no arguments, valid while this
    // module is loaded; `__dso_handle` is this module's handle (only its address is used).
    unsafe {
        __register_atfork(
            Some(prepare),
            Some(parent),
            Some(child),
            &raw const __dso_handle,
        )
    };
}

#[cfg(not(target_env = "gnu"))]
fn register(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: the handlers are `extern "C"` functions with no arguments, valid forever.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// What one lock holder does across `fork`: lock before it; unlock in the parent; reset in
/// the child (where the calling thread is the only one and holds the lock).
struct Participant {
    lock: fn(),
    /// # Safety
    /// The calling thread ran `lock` and has not unlocked since.
    unlock_in_parent: unsafe fn(),
    /// # Safety
    /// As for `unlock_in_parent`, and the calling thread is the process's only one.
    reset_in_child: unsafe fn(),
}

fn arena_lock() {
    ARENA.lock_for_fork();
}

/// # Safety
/// See [`Participant::unlock_in_parent`].
unsafe fn arena_unlock_in_parent() {
    ARENA.unlock_after_fork_parent();
}

/// # Safety
/// See [`Participant::reset_in_child`].
unsafe fn arena_reset_in_child() {
    // SAFETY: forwarded from the caller.
    unsafe { ARENA.unlock_after_fork_child() };
}

/// The one fork sequence: every allocator lock, in the only order they ever nest (an entry
/// may be taken while holding the ones before it, never the reverse). `prepare` locks them
/// front to back; `parent` and `child` release them back to front.
const SEQUENCE: [Participant; 7] = [
    Participant {
        lock: isolated::lock_for_fork,
        unlock_in_parent: isolated::unlock_after_fork_parent,
        reset_in_child: isolated::reset_after_fork_child,
    },
    Participant {
        lock: fallback::lock_for_fork,
        unlock_in_parent: fallback::unlock_after_fork_parent,
        reset_in_child: fallback::reset_after_fork_child,
    },
    Participant {
        lock: abandon::lock_for_fork,
        unlock_in_parent: abandon::unlock_after_fork_parent,
        reset_in_child: abandon::reset_after_fork_child,
    },
    Participant {
        lock: lifecycle::lock_for_fork,
        unlock_in_parent: lifecycle::unlock_after_fork_parent,
        reset_in_child: lifecycle::reset_after_fork_child,
    },
    Participant {
        lock: arena_lock,
        unlock_in_parent: arena_unlock_in_parent,
        reset_in_child: arena_reset_in_child,
    },
    // Leaves: whoever holds the heap profile's table or the shelf of sample regions takes
    // nothing else.
    Participant {
        lock: sampling::lock_for_fork,
        unlock_in_parent: sampling::unlock_after_fork_parent,
        reset_in_child: sampling::reset_after_fork_child,
    },
    Participant {
        lock: sample_shelf::lock_for_fork,
        unlock_in_parent: sample_shelf::unlock_after_fork_parent,
        reset_in_child: sample_shelf::reset_after_fork_child,
    },
];

extern "C" fn prepare() {
    for participant in &SEQUENCE {
        (participant.lock)();
    }
}

extern "C" fn parent() {
    for participant in SEQUENCE.iter().rev() {
        // SAFETY: `prepare` locked every entry on this thread; released in reverse order.
        unsafe { (participant.unlock_in_parent)() };
    }
}

extern "C" fn child() {
    for participant in SEQUENCE.iter().rev() {
        // SAFETY: `prepare` locked every entry on this thread, the child's only one.
        unsafe { (participant.reset_in_child)() };
    }
    // Lock-free state that names threads the child does not have.
    crate::purger::reset_after_fork_child();
    crate::options::reset_after_fork_child();
}
