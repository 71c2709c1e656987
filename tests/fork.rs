//! `fork()` from a process whose threads allocate: the child must be able to allocate, start
//! and join threads, and read the statistics, every time. Each child runs under `alarm`, so a
//! child that deadlocks dies of SIGALRM and the parent reports it.
//!
//! Runs without the test harness (`harness = false`): the harness's own threads would be
//! forked away mid-operation too, and the checks below count the process's threads.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use common::{Rng, check, fill};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// Forks, runs `child` in the child under an alarm of `secs` seconds, and returns how the child
/// ended: `Ok(())` for exit status 0, else a description.
fn fork_and_wait(secs: u32, child: impl FnOnce() -> bool) -> Result<(), String> {
    // SAFETY: the child only allocates, runs threads and exits with `_exit`; it never returns
    // into the caller's frames.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm and _exit have no preconditions.
        unsafe { libc::alarm(secs) };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
        // SAFETY: as above.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFSIGNALED(status) {
        Err(format!("child killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Err(format!("child exited with {}", libc::WEXITSTATUS(status)))
    }
}

/// Work a child does with a thread: allocate, fill, check, free across threads.
fn thread_work(seed: u64) -> bool {
    let mut rng = Rng::new(seed);
    let mut kept = Vec::new();
    for _ in 0..2_000 {
        let max = if rng.chance(3) { 600_000 } else { 3_000 };
        let size = 1 + rng.below(max) as usize;
        let mut block = vec![0u8; size].into_boxed_slice();
        // SAFETY: the box owns `size` bytes.
        unsafe { fill(block.as_mut_ptr(), size) };
        if rng.chance(30) {
            kept.push(block);
        }
    }
    for block in &kept {
        // SAFETY: the box owns its bytes.
        unsafe { check(block.as_ptr(), block.len()) };
    }
    !kept.is_empty()
}

/// The child of a multi-threaded parent: start threads, let them exit, start another, then
/// read the statistics, which walk every live heap. The parent's other threads do not exist
/// here, but their heaps did, at addresses the child's new threads may be given again.
fn child_with_threads_and_stats(round: u64) -> bool {
    let before = vmarena::stats();
    for t in 0..2 {
        let ok = std::thread::spawn(move || thread_work(round * 10 + t))
            .join()
            .unwrap_or(false);
        if !ok {
            return false;
        }
    }
    let (tx, rx) = mpsc::channel();
    let last = std::thread::spawn(move || {
        let ok = thread_work(round * 10 + 9);
        tx.send(vmarena::stats()).unwrap();
        ok
    });
    let during = rx.recv().unwrap();
    if !last.join().unwrap_or(false) {
        return false;
    }
    let after = vmarena::stats();
    // In the child only this thread and the one still running at `during` had live heaps.
    let live_during = during.threads_started - during.threads_exited;
    let live_after = after.threads_started - after.threads_exited;
    if live_during > 2 || live_after > 1 || after.threads_started < before.threads_started + 3 {
        eprintln!("child statistics: before {before:?}\nduring {during:?}\nafter {after:?}");
        return false;
    }
    let text = after.to_string();
    text.contains("threads")
}

/// Parent threads alive across the fork, each with a heap; their TLS (and heap) sits in glibc's
/// stack cache in the child, where the next thread created gets it.
fn forks_while_threads_are_parked() {
    let (release, parked) = mpsc::channel::<()>();
    let parked = Arc::new(std::sync::Mutex::new(parked));
    let (ready_tx, ready_rx) = mpsc::channel();
    let parkers: Vec<_> = (0..3)
        .map(|i| {
            let parked = parked.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                assert!(thread_work(1000 + i));
                ready.send(()).unwrap();
                let _ = parked.lock().unwrap().recv();
            })
        })
        .collect();
    for _ in 0..3 {
        ready_rx.recv().unwrap();
    }
    let rounds = rounds(100);
    let mut failures = Vec::new();
    for round in 0..rounds {
        if let Err(e) = fork_and_wait(10, || child_with_threads_and_stats(round)) {
            failures.push(format!("round {round}: {e}"));
        }
    }
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    for p in parkers {
        p.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} children failed: {failures:?}",
        failures.len()
    );
}

/// Parent threads busy with large blocks (write sessions on the arena lock, often contended)
/// while the main thread forks: a writer may be queued on the arena lock at the instant of
/// the fork. The child must still be able to take the lock in either mode.
fn forks_while_threads_remap() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(77 + i);
                while !stop.load(Ordering::Relaxed) {
                    let mut v: Vec<u8> =
                        Vec::with_capacity((1 << 20) + rng.below(4 << 20) as usize);
                    v.push(1);
                    v.reserve(8 << 20); // grows in place or moves with mremap
                    drop(v);
                    if rng.chance(5) {
                        vmarena::collect();
                    }
                    let small: Vec<Box<[u8; 100]>> = (0..50).map(|_| Box::new([1; 100])).collect();
                    drop(small);
                }
            })
        })
        .collect();
    let rounds = rounds(500);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let result = fork_and_wait(5, || {
            // A reader of the arena lock first (statistics walk the regions under it), then a
            // writer (a large block), then small blocks from fresh pages.
            let stats = vmarena::stats();
            let big = vec![7u8; 3 << 20];
            let small: Vec<Vec<u8>> = (0..2_000).map(|i| vec![i as u8; 1 + i % 700]).collect();
            let ok = small.iter().enumerate().all(|(i, v)| v[0] == i as u8) && big[12345] == 7;
            drop(small);
            drop(big);
            vmarena::collect();
            ok && stats.threads_started >= 1
        });
        if let Err(e) = result {
            failures.push(format!("round {round}: {e}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} children failed: {failures:?}",
        failures.len()
    );
}

/// Threads hammering a shared isolated heap while the main thread forks: the child must find
/// the heap's lock free and the heap whole, allocate from it, and drop it.
fn forks_while_threads_use_a_heap() {
    let heap = Arc::new(vmarena::Heap::new());
    let stop = Arc::new(AtomicBool::new(false));
    let layout = std::alloc::Layout::from_size_align(200, 8).unwrap();
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (heap, stop) = (heap.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let blocks: Vec<_> = (0..100).map(|_| heap.alloc(layout)).collect();
                    for p in blocks {
                        // SAFETY: live blocks of the heap.
                        unsafe { heap.dealloc(p, layout) };
                    }
                }
            })
        })
        .collect();
    let rounds = rounds(100);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let heap = heap.clone();
        let child = move || {
            let blocks: Vec<_> = (0..1000).map(|_| heap.alloc(layout)).collect();
            for &p in &blocks {
                // SAFETY: fresh blocks of 200 bytes.
                unsafe { fill(p, 200) };
            }
            for &p in &blocks {
                // SAFETY: live blocks of the heap, filled above.
                unsafe {
                    check(p, 200);
                    heap.dealloc(p, layout);
                }
            }
            child_with_threads_and_stats(round)
        };
        if let Err(e) = fork_and_wait(10, child) {
            failures.push(format!("round {round}: {e}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} children failed: {failures:?}",
        failures.len()
    );
}

/// Threads whose every large free goes through their heap's cache of freed large blocks (and
/// pushes an older block out: 200 + 300 + 450 KiB do not fit its 1 MiB) while the main thread
/// forks. A fork that catches a thread inside the cache's slot shift leaves its cache listing
/// one block twice; the child's threads, given the dead threads' heaps, must still never get
/// one block twice. Each child thread allocates two such blocks, fills them with patterns of
/// their own, and checks them.
fn forks_while_threads_churn_cached_large_blocks() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for kib in [200, 300, 450] {
                        drop(std::hint::black_box(vec![1u8; kib << 10]));
                    }
                }
            })
        })
        .collect();
    let rounds = rounds(2000);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let result = fork_and_wait(5, || {
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    std::thread::spawn(|| {
                        let blocks = [vec![0u8; 200 << 10], vec![0u8; 300 << 10]];
                        for b in &blocks {
                            // SAFETY: each vector owns its bytes.
                            unsafe { fill(b.as_ptr().cast_mut(), b.len()) };
                        }
                        for b in &blocks {
                            // SAFETY: as above; blocks that share memory fail here.
                            unsafe { check(b.as_ptr(), b.len()) };
                        }
                        true
                    })
                })
                .collect();
            threads.into_iter().all(|t| t.join().unwrap_or(false))
        });
        if let Err(e) = result {
            failures.push(format!("round {round}: {e}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} children failed: {failures:?}",
        failures.len()
    );
}

/// `default` forks, or `VMARENA_TEST_FORK_ROUNDS` (for long runs, or short ones while debugging).
fn rounds(default: u64) -> u64 {
    std::env::var("VMARENA_TEST_FORK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    common::run_cases(&[
        (
            "forks_while_threads_are_parked",
            forks_while_threads_are_parked,
        ),
        ("forks_while_threads_remap", forks_while_threads_remap),
        (
            "forks_while_threads_use_a_heap",
            forks_while_threads_use_a_heap,
        ),
        (
            "forks_while_threads_churn_cached_large_blocks",
            forks_while_threads_churn_cached_large_blocks,
        ),
    ]);
}
