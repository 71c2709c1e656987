//! A thread's heap from birth to death, and across `fork`.
//!
//! Heaps live in a type-stable pool (metadata chunks that are never unmapped), not in
//! thread-local storage: the thread's TLS holds only a pointer to its heap ([`super::slot`]).
//! So a pointer to a heap never dangles, whatever happens to the thread: the registry of live
//! heaps (for statistics) can always be walked, even in a forked child or after a thread died
//! without its exit hook.
//!
//! A thread's slot points at one of three sentinel heaps until it has a heap of its own, and
//! again after it gave its heap up; a sentinel has no pages, so the allocation fast path falls
//! through to the generic path, and its id matches no page, so every free is a remote free:
//!
//! * [`UNINIT`](slot::UNINIT): the thread has not allocated yet. Its first allocation brings a heap up:
//!   takes one from the pool, registers it and arms a pthread key whose destructor runs at
//!   thread exit.
//! * [`INITIALISING`](slot::INITIALISING): during that bring-up. Allocations made meanwhile (`pthread_setspecific`
//!   may call `calloc`, which under `LD_PRELOAD` is us) use the fallback heap.
//! * [`DESTROYED`](slot::DESTROYED): after the key destructor handed the heap's pages over (other threads take
//!   them, see `abandon`) and returned the heap to the pool. Later allocations (from other key
//!   destructors, glibc's own thread teardown) use the fallback heap.
//!
//! A pthread key rather than a Rust TLS destructor, because glibc runs key destructors after
//! C++/Rust TLS destructors, which may still free into our pages, and because registering a
//! TLS destructor calls `calloc`: the same code serves the C library.
//!
//! A heap can outlive its thread without the destructor ever running: if it came up during the
//! last round of key destructors (glibc runs at most four), nothing runs our destructor. Such
//! heaps are found by their thread id ([`reap_dead_heaps`], run by `collect()` and every so
//! often when threads start) and handed over as if their thread had exited normally. A thread
//! that is still exiting is not dead yet: the kernel wakes `pthread_join` (clearing the thread's
//! id) before it removes the thread, so a look right after a join may leave its heap for the
//! next one.
//!
//! Layer: `heap`; calls `heap::slot`, `heap_core` and `fallback`, `arena` (`meta`'s pool, the
//! OS back end), `list`, `sync::mutex`, `stats`, `os`, `options` and `purger`. `crate::fork` calls its
//! fork hooks; nothing in it calls back up.

use super::counters::ORPHAN_COUNTERS;
use super::heap_core::{HeapCore, HeapState, new_heap_id};
use super::slot::{self, DESTROYED, INITIALISING, UNINIT};
use crate::arena::ARENA;
use crate::arena::meta::{MetaChunks, Pool, Pooled};
use crate::list::{List, atomic_links};
use crate::stats::Stats;
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::sync::mutex::Mutex;

// ------------------------------------------------------------------ the registry

/// The live heaps (for statistics), the pool of unused ones, and the totals of heaps gone.
struct Registry {
    /// Heaps in use.
    live: List<RegistryLinks>,
    live_count: usize,
    /// Look for dead heaps once this many are live (see [`bring_up`]).
    reap_at: usize,
    pool: Pool<HeapCore>,
    chunks: MetaChunks,
    started: u64,
    exited: u64,
}

// SAFETY: the registry holds pointers to pool heaps (never freed), used under its mutex.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: List::new(),
    live_count: 0,
    reap_at: REAP_MIN,
    pool: Pool::new(),
    chunks: MetaChunks::new(),
    started: 0,
    exited: 0,
});

// The pool of heaps is the arena's type-stable pool (the type the arena need not know).
impl Pooled for HeapCore {
    unsafe fn init(slot: *mut Self) {
        // SAFETY: guaranteed by the caller.
        unsafe { slot.write(HeapCore::new()) }
    }
    fn pool_link(&self) -> &AtomicPtr<Self> {
        &self.pool_next
    }
}

atomic_links!(
    /// A heap's links for the registry's list (and a reaper's private list of dead heaps).
    /// Pool heaps are never freed.
    RegistryLinks: HeapCore,
    registry
);

/// Dead heaps are looked for when the live count doubles, and not below this many.
const REAP_MIN: usize = 64;

impl Registry {
    fn link(&mut self, heap: &'static HeapCore) {
        // SAFETY: under the registry mutex (`&mut self`); a heap coming up is on no list.
        unsafe { self.live.push_front(heap) };
        self.live_count += 1;
        self.started += 1;
    }

    fn unlink(&mut self, heap: &HeapCore) {
        // SAFETY: under the registry mutex; the caller's heap is a live one, on the list.
        unsafe { self.live.remove(heap) };
        self.live_count -= 1;
        self.exited += 1;
    }

    /// Returns an unlinked heap to the pool, its counters folded into the orphans', built
    /// anew (see `HeapCore::rebuild`).
    fn recycle(&mut self, heap: &'static HeapCore) {
        heap.counters.fold_into(&ORPHAN_COUNTERS);
        // SAFETY: unlinked, so no walker of the registry reaches it; its thread is gone or
        // gave it up (or never had it), so no one else uses it.
        unsafe { heap.rebuild() };
        self.pool.give(heap);
    }

    fn live_heaps(&self) -> impl Iterator<Item = &'static HeapCore> + '_ {
        // SAFETY: under the registry mutex, held by the caller for as long as it borrows the
        // registry (the returned walk borrows it too); walkers change no links.
        unsafe { self.live.iter() }
    }
}

// ------------------------------------------------------------------ birth

/// Brings up a heap for the calling thread, whose slot holds `current`. `None` if it cannot
/// have one now (it is being set up, or exiting, or memory ran out): the caller then uses the
/// fallback heap.
#[cold]
#[inline(never)]
pub(crate) fn bring_up(current: &HeapCore) -> Option<&'static HeapCore> {
    if current.state() != HeapState::Uninit {
        return None;
    }
    // The first allocation of every thread passes here: the options are in effect from the
    // first one on.
    crate::options::read_once();
    slot::set(&INITIALISING.0);
    let Some(heap) = take_heap() else {
        slot::set(&UNINIT.0);
        return None;
    };
    let Some(key) = exit_key() else {
        give_back(heap);
        slot::set(&DESTROYED.0);
        return None;
    };
    // SAFETY: `key` is a live key; the value is a pool heap, valid forever.
    if unsafe { libc::pthread_setspecific(key, (heap as *const HeapCore).cast()) } != 0 {
        // No hook would run at exit (ENOMEM, or the key was deleted at unload).
        give_back(heap);
        slot::set(&DESTROYED.0);
        return None;
    }
    heap.start(new_heap_id(), os_thread_id());
    let reap = {
        let mut registry = REGISTRY.lock();
        registry.link(heap);
        // Under the lock `set_sampling` holds: a switch either sees this heap or came first.
        heap.set_sampling(crate::sampling::on());
        registry.live_count >= registry.reap_at
    };
    slot::set(heap);
    if reap {
        reap_dead_heaps();
    }
    Some(heap)
}

/// An unused heap from the pool.
fn take_heap() -> Option<&'static HeapCore> {
    let mut registry = REGISTRY.lock();
    let Registry { pool, chunks, .. } = &mut *registry;
    pool.take(chunks, ARENA.os())
}

/// Returns a heap that never went live.
fn give_back(heap: &'static HeapCore) {
    REGISTRY.lock().recycle(heap);
}

/// The kernel's id of the calling thread (to tell later whether it still runs).
fn os_thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

// ------------------------------------------------------------------ death

/// The pthread key whose destructor runs at thread exit, plus one; 0: not created yet;
/// `KEY_DELETED`: deleted when this copy of vmarena was unloaded.
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);
const KEY_DELETED: usize = usize::MAX;
static EXIT_KEY_INIT: Mutex<()> = Mutex::new(());

fn exit_key() -> Option<libc::pthread_key_t> {
    // Acquire: pairs with the Release below, so the key is created before we use it.
    match EXIT_KEY.load(Ordering::Acquire) {
        0 => {}
        KEY_DELETED => return None,
        key => return Some((key - 1) as libc::pthread_key_t),
    }
    let _once = EXIT_KEY_INIT.lock();
    match EXIT_KEY.load(Ordering::Acquire) {
        0 => {}
        KEY_DELETED => return None,
        key => return Some((key - 1) as libc::pthread_key_t),
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an `extern "C"` fn.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } != 0 {
        return None;
    }
    // Release: publishes the created key.
    EXIT_KEY.store(key as usize + 1, Ordering::Release);
    Some(key)
}

/// The pthread key destructor: hands the exiting thread's pages over.
unsafe extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    // SAFETY: the value is the exiting thread's heap, a pool heap (set in `bring_up`).
    let heap: &'static HeapCore = unsafe { &*value.cast::<HeapCore>() };
    slot::set(&DESTROYED.0);
    heap.abandon_all();
    {
        let mut registry = REGISTRY.lock();
        registry.unlink(heap);
        registry.recycle(heap);
    }
    // The pages just handed back are due for purging after the delay; a program whose other
    // threads then sleep would never purge them without the purger.
    crate::purger::poke();
}

/// Hands over the heaps of threads that are gone although their heap is still registered
/// (see the module docs). The calling thread's own heap is never one of them.
pub(crate) fn reap_dead_heaps() {
    let me: *const HeapCore = slot::heap();
    // Unlink under the lock, hand the pages over without it (that takes the abandoned lists'
    // and the arena's locks, which must not nest inside the registry's; see `crate::fork`).
    let dead = List::<RegistryLinks>::new();
    {
        let mut registry = REGISTRY.lock();
        // SAFETY: under the registry lock; the walk unlinks only the heap it was given, which
        // then goes on our private list (links of unlinked heaps are the lock holder's).
        unsafe {
            for heap in registry.live.iter() {
                if !core::ptr::eq(heap, me) && !thread_runs(heap.os_tid()) {
                    registry.unlink(heap);
                    dead.push_front(heap);
                }
            }
        }
        registry.reap_at = (registry.live_count * 2).max(REAP_MIN);
    }
    // SAFETY: pool heaps, unlinked above, now ours alone: their threads are gone (the kernel
    // has no thread of that id in this process), so nothing else touches them or their pages.
    // The kernel's thread exit orders the dead thread's last writes before our reads.
    // The private list's links are ours: no other list holds these heaps.
    while let Some(heap) = dead.first() {
        // SAFETY: our private list, the heap on it.
        unsafe { dead.remove(heap) };
        heap.abandon_all();
        REGISTRY.lock().recycle(heap);
    }
}

/// True if a thread with kernel id `tid` runs in this process. (A thread that is gone may see
/// its id reused by a new thread; then its heap is only found at a later look.)
fn thread_runs(tid: i32) -> bool {
    crate::os::errno_preserved(|| {
        // SAFETY: signal 0 only checks that the thread exists; nothing is delivered.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
        // SAFETY: this thread's errno, set by the failed call.
        r == 0 || unsafe { *libc::__errno_location() } != libc::ESRCH
    })
}

/// When this copy of vmarena is unloaded (a plugin's `dlclose`, or process exit), deletes the
/// exit key: a destructor left registered would run in unmapped code when threads that used
/// the plugin exit. Threads that still have heaps keep them (their pages are leaked with the
/// plugin); later bring-ups fail and use the fallback heap.
extern "C" fn on_unload() {
    let _once = EXIT_KEY_INIT.lock();
    // Relaxed: under the mutex; readers that miss the deletion fail in pthread_setspecific.
    let key = EXIT_KEY.swap(KEY_DELETED, Ordering::Relaxed);
    if key != 0 && key != KEY_DELETED {
        // SAFETY: a key we created and have not deleted.
        unsafe { libc::pthread_key_delete((key - 1) as libc::pthread_key_t) };
    }
}

#[used]
#[unsafe(link_section = ".fini_array")]
static ON_UNLOAD: extern "C" fn() = on_unload;

// ------------------------------------------------------------------ statistics

/// Adds every live heap's counters, and the totals of gone ones, into `stats`.
pub(crate) fn fill_stats(stats: &mut Stats) {
    {
        let registry = REGISTRY.lock();
        for heap in registry.live_heaps() {
            heap.counters.add_to(stats);
            stats.large_cached_bytes += heap.large_cache.bytes();
        }
        stats.threads_started = registry.started;
        stats.threads_exited = registry.exited;
        stats.bytes_metadata += registry.chunks.bytes_mapped();
    }
    ORPHAN_COUNTERS.add_to(stats);
    super::fallback::add_counters(stats);
}

/// Turns counting of requested bytes on or off in every live heap.
pub(crate) fn set_counting(on: bool) {
    let registry = REGISTRY.lock();
    for heap in registry.live_heaps() {
        heap.set_counting(on);
    }
}

/// Turns heap-profile sampling on or off, for every live thread heap and those to come (see
/// `sampling`). Under the registry lock, so a heap coming up, which takes its setting there,
/// is never missed.
pub(crate) fn set_sampling(on: bool) {
    let registry = REGISTRY.lock();
    crate::sampling::set_on(on);
    for heap in registry.live_heaps() {
        heap.set_sampling(on);
    }
}

// ------------------------------------------------------------------ fork

/// Locks what bring-up and teardown share, before `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    REGISTRY.lock_raw();
    EXIT_KEY_INIT.lock_raw();
}

/// After `fork`, in the parent: unlocks what [`lock_for_fork`] locked.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork_parent() {
    // SAFETY: guaranteed by the caller; reverse order.
    unsafe {
        EXIT_KEY_INIT.unlock_raw();
        REGISTRY.unlock_raw();
    }
}

/// After `fork`, in the child, where only the calling thread exists. Every other live heap
/// belonged to a thread that is gone, and that may have been in the middle of changing it: its
/// pages are left as they are (leaked: the child can never know which of their blocks are
/// live) and the heap goes back to the pool, built anew, with its counters folded in.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since; it is the only
/// thread of the process.
pub(crate) unsafe fn reset_after_fork_child() {
    // SAFETY: we hold the lock (caller), and nothing else runs.
    let registry = unsafe { REGISTRY.get_locked() };
    let me: *const HeapCore = slot::heap();
    let started = registry.started;
    // SAFETY: we hold the lock and are the only thread; the walk unlinks the heap it was given.
    unsafe {
        for heap in registry.live.iter() {
            registry.live.remove(heap);
            if !core::ptr::eq(heap, me) {
                registry.recycle(heap);
            }
        }
    }
    registry.live_count = 0;
    if slot::heap().state() == HeapState::Alive {
        registry.link(slot::heap());
        slot::heap().set_os_tid(os_thread_id());
    }
    // The gone threads count as exited; the calling thread's heap (if any) as started once.
    registry.started = started;
    registry.exited = started - registry.live_count as u64;
    // SAFETY: the child's only thread holds both locks and nobody waits for them.
    unsafe {
        EXIT_KEY_INIT.reset_after_fork();
        REGISTRY.reset_after_fork();
    }
}
