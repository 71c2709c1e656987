//! The thread's heap in thread-local storage, and its life cycle:
//! uninitialised → initialising → alive → destroyed.
//!
//! The TLS slot is a `const`-initialised value without `Drop`, so reaching it never allocates
//! or registers anything. The first allocation brings the heap up: it takes a thread id,
//! registers the heap (for statistics) and arms a pthread key whose destructor hands the
//! heap's pages over when the thread exits. A pthread key rather than a Rust TLS destructor,
//! because glibc runs it after other TLS destructors (which may still free into our pages)
//! and because it never calls `calloc`, so the same code serves the C library.
//! Allocations made while initialising or after destruction use the fallback heap.

use super::registry;
use super::thread_heap::{Heap, HeapState, NO_THREAD};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::mutex::Mutex;

std::thread_local! {
    static HEAP: Heap = const { Heap::new() };
}

/// Runs `f` with this thread's heap.
///
/// The heap's address is taken out of `LocalKey::with` first, so that `with`'s closure stays
/// trivial and always inlines (with the allocation path inside it, LLVM sometimes kept `with`
/// out of line, costing a call on every malloc and free).
#[inline(always)]
pub(crate) fn with_heap<R>(f: impl FnOnce(&Heap) -> R) -> R {
    let heap: *const Heap = HEAP.with(|heap| heap as *const Heap);
    // SAFETY: the slot is a const-initialised value without `Drop`, so it is never torn down:
    // it lives (at this address) as long as the current thread, which outlives this call.
    f(unsafe { &*heap })
}

/// Thread ids are multiples of 4 (the low bits of a page's `owner` are flags); 0 means "no
/// owner" and 4 is the fallback heap.
pub(crate) const FALLBACK_TID: usize = 4;
const TID_STEP: usize = 4;
static NEXT_TID: AtomicUsize = AtomicUsize::new(2 * TID_STEP);

/// The pthread key whose destructor runs at thread exit, plus one (0 = not created yet).
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);
static EXIT_KEY_INIT: Mutex<()> = Mutex::new(());

/// Brings an uninitialised heap up. Returns false if it cannot be used now (it is being set
/// up, or its thread is exiting); the caller then uses the fallback heap.
#[cold]
pub(crate) fn bring_up(heap: &Heap) -> bool {
    if heap.state() != HeapState::Uninit {
        return heap.state() == HeapState::Alive;
    }
    heap.set_state(HeapState::Initialising);
    let Some(key) = exit_key() else {
        heap.set_state(HeapState::Uninit);
        return false;
    };
    // Relaxed: ids only need to be unique.
    let tid = NEXT_TID.fetch_add(TID_STEP, Ordering::Relaxed);
    // SAFETY: `key` is a live key; the value is this thread's heap, which outlives the thread's
    // key destructors (TLS is freed after them).
    unsafe { libc::pthread_setspecific(key, (heap as *const Heap).cast()) };
    registry::register(heap);
    #[cfg(not(miri))]
    crate::fork::install();
    heap.start(tid);
    true
}

fn exit_key() -> Option<libc::pthread_key_t> {
    // Acquire: pairs with the Release below, so the key is created before we use it.
    let key = EXIT_KEY.load(Ordering::Acquire);
    if key != 0 {
        return Some((key - 1) as libc::pthread_key_t);
    }
    let _once = EXIT_KEY_INIT.lock();
    let key = EXIT_KEY.load(Ordering::Acquire);
    if key != 0 {
        return Some((key - 1) as libc::pthread_key_t);
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
    // SAFETY: the value is the exiting thread's heap (set in `bring_up`); its TLS is still valid
    // while key destructors run.
    let heap = unsafe { &*value.cast::<Heap>() };
    heap.set_state(HeapState::Destroyed);
    heap.abandon_all();
    registry::unregister(heap);
    heap.start_destroyed();
}

impl Heap {
    /// After teardown: no id, so every later free from this thread takes the remote path.
    fn start_destroyed(&self) {
        self.start(NO_THREAD);
        self.set_state(HeapState::Destroyed);
    }
}

/// Locks the exit-key initialisation across `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    EXIT_KEY_INIT.lock_raw();
}

/// Unlocks what [`lock_for_fork`] locked, in the parent or the child.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: guaranteed by the caller.
    unsafe { EXIT_KEY_INIT.unlock_raw() };
}
