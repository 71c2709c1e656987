//! Windows that real programs hit only by timing, forced open by hooks into vmarena's internals
//! (the `fuzzing` feature, `vmarena::fuzzing`): a lock held at the moment of a free, a fork
//! that catches a thread mid-operation. Each case is a regression test for a defect that was
//! found by reading the code (`docs/findings.md`, "The review of b6a3b23").
//!
//! `cargo test --release --features fuzzing --test race_windows`
//!
//! Without the test harness (`harness = false`): two cases fork, and the harness's threads
//! would be forked away mid-operation. The cases that must abort run in a child process (this
//! binary again, with `VMARENA_TEST_RACE_CASE` naming the misbehaviour).

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use vmarena_testkit::address_pattern::{check, fill};
use vmarena_testkit::proc::resident_bytes_without_allocating;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const CASE: &str = "VMARENA_TEST_RACE_CASE";

/// Runs `f` on a new thread made with `pthread_create`, which (unlike `std::thread`) leaves
/// no allocation on the thread before `f`: its first free finds it without a heap.
fn on_a_thread_without_a_heap(f: fn(usize), arg: usize) {
    extern "C" fn start(data: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `data` points at the caller's pair, alive until the join below.
        let (f, arg) = unsafe { *data.cast::<(fn(usize), usize)>() };
        f(arg);
        core::ptr::null_mut()
    }
    let mut pair = (f, arg);
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `start` matches the entry signature; `pair` outlives the thread (joined below).
    unsafe {
        let data = (&raw mut pair).cast();
        assert_eq!(
            libc::pthread_create(&mut thread, core::ptr::null(), start, data),
            0
        );
        assert_eq!(libc::pthread_join(thread, core::ptr::null_mut()), 0);
    }
}

/// A block of the size the thread caches keep (64-512 KiB).
const CACHED: Layout = match Layout::from_size_align(100 << 10, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// Frees a `CACHED` block.
fn free_cached(p: usize) {
    // SAFETY: a live block of that layout, given up by the caller.
    unsafe { GLOBAL.dealloc(p as *mut u8, CACHED) };
}

/// The misbehaviour `CASE` names, in the child; returns only if vmarena did not abort.
fn misbehave(case: &str) {
    // SAFETY: (whole function) a block freed twice; the child exists to be killed for it.
    unsafe {
        let p = GLOBAL.alloc(CACHED);
        println!("address {p:p}");
        // A free by a thread without a heap, while the arena lock is held in shared mode:
        // the block waits in the queue of large frees until the lock is free.
        vmarena::fuzzing::with_arena_read_lock(|| {
            on_a_thread_without_a_heap(free_cached, p as usize);
            match case {
                // The second free, on a thread with a heap, would put it in that heap's cache.
                "queued-double-free" => GLOBAL.dealloc(p, CACHED),
                // A realloc to a size it still holds would keep it where it is.
                "queued-realloc" => {
                    GLOBAL.realloc(p, CACHED, CACHED.size());
                }
                other => panic!("unknown case {other}"),
            }
        });
    }
}

/// Runs `case` in a child process; it must abort naming the block as freed already.
fn expect_double_free_abort(case: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CASE, case)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: not aborted ({:?}); stdout {stdout} stderr {stderr}",
        out.status
    );
    let address = stdout
        .split_whitespace()
        .skip_while(|w| *w != "address")
        .nth(1)
        .unwrap_or_else(|| panic!("{case}: no address printed: {stdout}"));
    assert!(
        stderr.contains("double free") && stderr.contains(address.trim_start_matches("0x")),
        "{case}: message {stderr:?} does not name {address} as a double free"
    );
}

/// A3: a large block waiting in the queue of large frees is freed already. A second free that
/// would cache it (so the cache would later hand out memory given to someone else), and a
/// realloc that would keep it where it is, must abort.
fn a_queued_large_block_cannot_be_freed_or_reallocated_again() {
    expect_double_free_abort("queued-double-free");
    expect_double_free_abort("queued-realloc");
}

/// A4: a large free that finds the arena lock held by a reader (`stats()`, `mallinfo`...) is
/// queued; the reader gives it back when it leaves, so a program that then does nothing
/// still gets its memory back (here at once: a zero purge delay).
fn a_large_free_behind_a_reader_is_given_back_when_it_leaves() {
    const BIG: usize = 64 << 20;
    // Nothing left due later (a freed range merges with a dirty neighbour and takes the later
    // of their due times), and everything due from now on due at once.
    vmarena::set_purge_delay(std::time::Duration::ZERO);
    vmarena::collect();
    let layout = Layout::from_size_align(BIG, 8).unwrap();
    // SAFETY: a fresh 64 MiB block, written in full, then freed once (by the other thread).
    let p = unsafe { GLOBAL.alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: as above.
    unsafe { p.write_bytes(1, BIG) };
    let before = resident_bytes_without_allocating();
    fn free_big(p: usize) {
        let layout = Layout::from_size_align(BIG, 8).unwrap();
        // SAFETY: the live block allocated above.
        unsafe { GLOBAL.dealloc(p as *mut u8, layout) };
    }
    vmarena::fuzzing::with_arena_read_lock(|| on_a_thread_without_a_heap(free_big, p as usize));
    // Nothing calls the allocator from here on.
    let after = resident_bytes_without_allocating();
    assert!(
        after + BIG / 2 < before,
        "the 64 MiB freed while a reader held the lock stayed resident: {} -> {} MiB",
        before >> 20,
        after >> 20
    );
    vmarena::set_purge_delay(std::time::Duration::from_secs(1));
}

/// Forks; the child runs `child` under an alarm and exits 0 if it returns true. Panics if the
/// child failed, naming how.
fn fork_and_check(what: &str, child: impl FnOnce() -> bool) {
    // SAFETY: the child only allocates, runs threads and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm and _exit have no preconditions.
        unsafe { libc::alarm(20) };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
        // SAFETY: as above.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our own child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what}: the child failed (wait status {status:#x})"
    );
}

/// A1: a thread's large-block cache, cut by `fork` in the middle of a slot shift, lists one
/// block twice. The child's new threads are given the dead threads' heaps; none may hand the
/// block out twice. Each child thread allocates two cacheable blocks, fills them with
/// patterns of their own, and checks them.
fn a_forked_child_never_gets_one_cached_block_twice() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // The thread stays parked until the process exits: its own exit would drain the cut
    // cache in this process too.
    std::thread::spawn(move || {
        drop(vec![0u8; CACHED.size()]); // cached
        vmarena::fuzzing::list_newest_cached_large_block_twice();
        ready_tx.send(()).unwrap();
        loop {
            std::thread::park();
        }
    });
    ready_rx.recv().unwrap();
    fork_and_check("cut cache", || {
        // Enough threads alive at once to be given every heap the pool holds.
        let threads: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(|| {
                    let blocks = [vec![0u8; CACHED.size()], vec![0u8; CACHED.size()]];
                    for b in &blocks {
                        // SAFETY: each vector owns its bytes.
                        unsafe { fill(b.as_ptr().cast_mut(), b.len()) };
                    }
                    for b in &blocks {
                        // SAFETY: as above; two blocks sharing memory fail here.
                        unsafe { check(b.as_ptr(), b.len()) };
                    }
                    blocks[0].as_ptr() != blocks[1].as_ptr()
                })
            })
            .collect();
        threads.into_iter().all(|t| t.join().unwrap_or(false))
    });
}

/// A5: a purge runs in sessions, and between them the schedule says "nothing due" while the
/// regions it has not reached yet keep their due times. A child forked then must still purge
/// them at its next slow path (here `stats()`, which reads under the arena lock and runs the
/// purges due when it lets go), not only after something new is freed.
fn a_child_forked_during_a_purge_still_purges() {
    const MIB: usize = 1 << 20;
    vmarena::set_purge_delay(std::time::Duration::from_millis(100));
    // 64 MiB of 4 KiB blocks, written, then freed: their pages go back to their regions, due
    // for purging in 100 ms.
    let blocks: Vec<Vec<u8>> = (0..(64 * MIB / 4096)).map(|_| vec![1u8; 4096]).collect();
    drop(blocks);
    vmarena::fuzzing::forget_purge_schedule();
    fork_and_check("purge schedule", || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let before = resident_bytes_without_allocating();
        std::hint::black_box(vmarena::stats());
        let after = resident_bytes_without_allocating();
        after + 32 * MIB < before
    });
    vmarena::collect(); // the parent's own schedule, which the hook wiped
}

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        misbehave(&case);
        std::process::exit(0); // reached only if vmarena did not notice
    }
    vmarena_testkit::run_cases(&[
        (
            "a_forked_child_never_gets_one_cached_block_twice",
            a_forked_child_never_gets_one_cached_block_twice,
        ),
        (
            "a_child_forked_during_a_purge_still_purges",
            a_child_forked_during_a_purge_still_purges,
        ),
        (
            "a_queued_large_block_cannot_be_freed_or_reallocated_again",
            a_queued_large_block_cannot_be_freed_or_reallocated_again,
        ),
        (
            "a_large_free_behind_a_reader_is_given_back_when_it_leaves",
            a_large_free_behind_a_reader_is_given_back_when_it_leaves,
        ),
    ]);
}
