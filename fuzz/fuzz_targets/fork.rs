//! `fork()` in the middle of allocation traffic. A background thread (started once) allocates,
//! frees, reallocates large blocks and collects all the time, so forks land at any point of
//! its work, locks held or queued included. Each input runs operations on the main thread
//! against the model; at a fork operation the process forks, and the child, under an alarm,
//! checks every inherited live block, frees some, allocates more (small and large), starts a
//! thread that allocates and exits, starts another, reads the statistics and exits. The parent
//! fails unless the child exited cleanly: a child that deadlocked dies of the alarm, one whose
//! model check failed aborts.
#![no_main]

mod model;

use std::alloc::Layout;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use model::{Input, Model};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// The parent's other thread: traffic of every kind, forever.
fn background() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(|| {
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let size = match x % 16 {
                    0 => (1 << 20) + (x as usize >> 8) % (4 << 20),
                    1..=4 => 1 + (x as usize >> 8) % 60_000,
                    _ => 1 + (x as usize >> 8) % 600,
                };
                let mut v = vec![x as u8; size];
                if x % 7 == 0 {
                    v.reserve(size * 2); // large ones grow in place or move
                }
                if kept.len() < 64 {
                    kept.push(v);
                } else {
                    kept[(x as usize >> 20) % 64] = v;
                }
                if x % 997 == 0 {
                    vmarena::collect();
                }
            }
        });
    });
}

/// The child's work, with what is left of the input steering it. Returns normally only if
/// every check passed (a failed model check panics, which aborts under libFuzzer).
fn child(mut model: Model, mut input: Input) {
    model.check_all();
    let mut seed = 101u8;
    for _ in 0..16 {
        let Some(op) = input.byte() else { break };
        seed = seed.wrapping_add(1);
        if op % 2 == 0 {
            if let Some(block) = model.nth(op as usize) {
                model::free(model.remove(block.ptr));
            }
        } else if let (Some(size), Some(align)) = (input.size(), input.align()) {
            let layout = Layout::from_size_align(size, align).unwrap();
            if let Some(block) = model::alloc(layout, op % 4 == 1, seed) {
                model.insert(block);
            }
        }
    }
    for round in 0..2u8 {
        let joined = std::thread::spawn(move || {
            let blocks: Vec<Vec<u8>> = (0..200).map(|i| vec![round; 1 + i * 37]).collect();
            let big = vec![round; 3 << 20];
            blocks.iter().all(|b| b.iter().all(|&x| x == round)) && big[12345] == round
        })
        .join();
        assert!(matches!(joined, Ok(true)), "a thread of the child failed");
    }
    let stats = vmarena::stats();
    assert!(stats.threads_started >= stats.threads_exited);
    assert!(stats.to_string().contains("threads"));
    model.check_all();
    for block in model.drain() {
        model::free(block);
    }
    vmarena::collect();
}

fuzz_target!(|data: &[u8]| {
    background();
    let mut input = Input(data);
    let mut model = Model::default();
    let mut seed = 1u8;
    let mut forks = 0;
    while let Some(op) = input.byte() {
        seed = seed.wrapping_add(1);
        match op % 8 {
            0..=3 if !model.full() => {
                let (Some(size), Some(align)) = (input.size(), input.align()) else {
                    break;
                };
                let layout = Layout::from_size_align(size, align).unwrap();
                if let Some(block) = model::alloc(layout, op % 8 == 3, seed) {
                    model.insert(block);
                }
            }
            4 | 5 => {
                let Some(n) = input.byte() else { break };
                if let Some(block) = model.nth(n as usize) {
                    model::free(model.remove(block.ptr));
                }
            }
            6 => {
                let (Some(n), Some(size)) = (input.byte(), input.size()) else {
                    break;
                };
                if let Some(block) = model.nth(n as usize) {
                    model.remove(block.ptr);
                    model.insert(model::realloc(block, size, seed));
                }
            }
            7 if forks < 4 => {
                forks += 1;
                // SAFETY: the child only allocates, runs threads and leaves with `_exit`.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0, "fork failed");
                if pid == 0 {
                    // SAFETY: alarm and _exit have no preconditions.
                    unsafe { libc::alarm(10) };
                    child(std::mem::take(&mut model), Input(input.0));
                    // SAFETY: as above.
                    unsafe { libc::_exit(0) };
                }
                let mut status = 0;
                // SAFETY: waiting for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "the forked child failed: status {status:#x} (signal {})",
                    libc::WTERMSIG(status)
                );
            }
            _ => {}
        }
    }
    for block in model.drain() {
        model::free(block);
    }
});
