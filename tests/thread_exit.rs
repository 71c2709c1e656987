//! Allocations at the very end of a thread's life, after vmarena's own thread-exit hook (a
//! pthread key destructor) has run, or in the last round of key destructors, where a hook
//! armed then never runs. Whatever the order, the thread's heap must be handed over (its
//! pages reused, its statistics folded in) and nothing may point into its dead TLS.
//!
//! Runs without the test harness (`harness = false`), so the thread counts below are exact.

mod common;

use std::ptr::null_mut;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// glibc runs key destructors in at most this many rounds (PTHREAD_DESTRUCTOR_ITERATIONS).
const DESTRUCTOR_ROUNDS: usize = 4;

fn key(destructor: unsafe extern "C" fn(*mut libc::c_void)) -> libc::pthread_key_t {
    let mut key = 0;
    // SAFETY: a valid out-pointer and an `extern "C"` destructor.
    let created = unsafe { libc::pthread_key_create(&mut key, Some(destructor)) };
    assert_eq!(created, 0);
    key
}

/// Starts a raw pthread (no Rust runtime in it, so it allocates nothing on its own), runs
/// `body` in it and joins it.
fn run_bare_thread(body: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: a valid out-pointer and an `extern "C"` start routine.
    let created = unsafe { libc::pthread_create(&mut thread, std::ptr::null(), body, null_mut()) };
    assert_eq!(created, 0);
    // SAFETY: joining the thread we created.
    assert_eq!(unsafe { libc::pthread_join(thread, null_mut()) }, 0);
}

/// `vmarena::collect()` until at most `live` heaps are live, for at most 5 s. The kernel
/// clears a thread's id (which wakes `pthread_join`) before it removes the thread, so for an
/// instant after the join the thread still exists and its heap is not dead yet; on a busy
/// machine the instant can be long enough for one `collect` to fall in it.
fn collect_until_reaped(live: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    vmarena::collect();
    while live_heaps() > live && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
        vmarena::collect();
    }
}

fn live_heaps() -> u64 {
    let stats = vmarena::stats();
    stats.threads_started - stats.threads_exited
}

// ---------------------------------------------------------------- the last destructor round

static LAST_ROUND_KEY: AtomicUsize = AtomicUsize::new(0);
/// A block the last-round allocation kept, for the main thread to free.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// Re-arms itself for the next round until the last one, then allocates for the first time.
unsafe extern "C" fn last_round_destructor(value: *mut libc::c_void) {
    let round = value as usize;
    let key = LAST_ROUND_KEY.load(Ordering::Relaxed) as libc::pthread_key_t;
    if round < DESTRUCTOR_ROUNDS {
        // SAFETY: our key; the value is only a round number.
        unsafe { libc::pthread_setspecific(key, (round + 1) as *const libc::c_void) };
        return;
    }
    // The thread's first allocations: its heap comes up now, when no destructor round is left
    // to run vmarena's hook.
    let mut blocks: Vec<Box<[u8; 1000]>> = (0..200).map(|i| Box::new([i as u8; 1000])).collect();
    let kept = blocks.pop().unwrap();
    drop(blocks);
    KEPT.store(Box::into_raw(kept) as usize, Ordering::Release);
}

extern "C" fn arm_last_round(_: *mut libc::c_void) -> *mut libc::c_void {
    let key = LAST_ROUND_KEY.load(Ordering::Relaxed) as libc::pthread_key_t;
    // SAFETY: our key; the value is a round number.
    unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
    null_mut()
}

fn a_heap_born_in_the_last_destructor_round_is_handed_over() {
    LAST_ROUND_KEY.store(key(last_round_destructor) as usize, Ordering::Relaxed);
    vmarena::collect();
    let before = live_heaps();
    run_bare_thread(arm_last_round);
    let kept = KEPT.load(Ordering::Acquire) as *mut [u8; 1000];
    assert!(!kept.is_null(), "the last destructor round did not run");
    // The thread is gone. Its heap must not count as live once vmarena has looked (collect),
    // and its pages must be up for grabs: the one holding the kept block is abandoned.
    collect_until_reaped(before);
    let stats = vmarena::stats();
    assert_eq!(
        live_heaps(),
        before,
        "the dead thread's heap is still registered: {stats:?}"
    );
    assert!(
        stats.pages_abandoned >= 1,
        "no page was handed over: {stats:?}"
    );
    // SAFETY: the block the destructor allocated and leaked for us.
    let kept = unsafe { Box::from_raw(kept) };
    assert!(kept.iter().all(|&b| b == 199));
    drop(kept);
    vmarena::collect();
    assert_eq!(vmarena::stats().pages_abandoned, 0);
}

// ---------------------------------------------------------------- after vmarena's hook

static AFTER_KEY: AtomicUsize = AtomicUsize::new(0);
/// Blocks allocated after the thread's heap was torn down (from the fallback heap).
static LATE_BLOCKS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Runs after vmarena's hook (its key was created first, so it runs first in each round).
unsafe extern "C" fn allocate_after_teardown(_: *mut libc::c_void) {
    let mut late = LATE_BLOCKS.lock().unwrap();
    for i in 0..300 {
        late.push(Box::into_raw(Box::new([i as u8; 2000])) as usize);
    }
}

fn blocks_allocated_after_teardown_give_their_pages_back() {
    AFTER_KEY.store(key(allocate_after_teardown) as usize, Ordering::Relaxed);
    LATE_BLOCKS.lock().unwrap().reserve(1000);
    vmarena::collect();
    let pages_before: usize = vmarena::stats().pages_in_use.iter().sum();
    std::thread::spawn(|| {
        let key = AFTER_KEY.load(Ordering::Relaxed) as libc::pthread_key_t;
        // SAFETY: our key; the value is only tested for null.
        unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
        let v: Vec<u64> = (0..10_000).collect(); // the thread's heap comes up normally
        assert_eq!(v.len(), 10_000);
    })
    .join()
    .unwrap();
    let late: Vec<usize> = std::mem::take(&mut *LATE_BLOCKS.lock().unwrap());
    assert_eq!(late.len(), 300);
    for (i, &p) in late.iter().enumerate() {
        // SAFETY: blocks the destructor allocated with `Box::new([u8; 2000])`.
        let block = unsafe { Box::from_raw(p as *mut [u8; 2000]) };
        assert!(block.iter().all(|&b| b == i as u8));
    }
    vmarena::collect();
    let stats = vmarena::stats();
    let pages_after: usize = stats.pages_in_use.iter().sum();
    assert!(
        pages_after <= pages_before + 1,
        "pages in use went from {pages_before} to {pages_after}: the fallback heap kept its \
         empty pages ({stats:?})"
    );
}

fn main() {
    common::run_cases(&[
        (
            "a_heap_born_in_the_last_destructor_round_is_handed_over",
            a_heap_born_in_the_last_destructor_round_is_handed_over,
        ),
        (
            "blocks_allocated_after_teardown_give_their_pages_back",
            blocks_allocated_after_teardown_give_their_pages_back,
        ),
    ]);
}
