//! Idle memory goes back: a process that frees what it allocated and then stops calling the
//! allocator gets back near its baseline RSS with the opt-in purger thread
//! (`VMARENA_PURGE_THREAD=1`), keeps the memory without it (so the purger is what returns
//! it), and a forked child of a process whose purger runs gets a purger of its own.
//!
//! Each case runs in a child process of this binary (the variable is read once, before the
//! first allocation), with a purge delay of 100 ms; but the last, which runs here: large blocks
//! freed while another thread reads the statistics go back too.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const DELAY_MS: u64 = 100;
const WORK_MIB: usize = 192;
/// What the process may keep above its baseline once idle: the arena's metadata (region
/// descriptors, page tables and page-map leaves it touched), which is never purged.
const KEPT_MIB: usize = 6;

/// Allocates `WORK_MIB` in all on two threads, in blocks of 16 B - 256 KiB that are written
/// in full, checks and frees them, and lets the threads exit.
fn allocate_and_free_everything() {
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = common::Rng::new(t + 1);
                let mut blocks = Vec::new();
                let mut bytes = 0;
                while bytes < (WORK_MIB << 20) / 2 {
                    let size = 16usize << rng.below(15);
                    blocks.push(vec![(size & 0xff) as u8 | 1; size]);
                    bytes += size;
                }
                for b in &blocks {
                    assert!(b.iter().all(|&x| x == (b.len() & 0xff) as u8 | 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// RSS once the process has been idle for up to 10 purge delays (polling, so a purger that
/// works ends the wait early), in MiB above `baseline`.
fn idle_rss_above(baseline: usize) -> usize {
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(DELAY_MS / 2));
        let rss = common::resident_bytes();
        if rss <= baseline + (KEPT_MIB << 20)
            || start.elapsed() > Duration::from_millis(10 * DELAY_MS)
        {
            return rss.saturating_sub(baseline) >> 20;
        }
    }
}

/// The child's work: prints `peak_above=<MiB> idle_above=<MiB>`.
fn child() {
    let fork_first = std::env::var_os("IDLE_FORK").is_some();
    if fork_first {
        // Get the parent's purger running (and let it purge, so the child does not start
        // with the parent's freed memory), then do the work in a forked child.
        let baseline = common::resident_bytes();
        allocate_and_free_everything();
        idle_rss_above(baseline);
        // SAFETY: the child only allocates, frees, sleeps, prints and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid > 0 {
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            std::process::exit(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                99
            });
        }
    }
    let baseline = common::resident_bytes();
    allocate_and_free_everything();
    let peak_above = common::resident_bytes().saturating_sub(baseline) >> 20;
    let idle_above = idle_rss_above(baseline);
    println!("peak_above={peak_above} idle_above={idle_above}");
    std::process::exit(0);
}

/// Runs the child with the purger on or off; returns (peak, idle) MiB above the baseline.
fn run_child(purger: bool, fork_first: bool) -> (usize, usize) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("IDLE_CHILD", "1")
        .env("VMARENA_PURGE_DELAY_MS", DELAY_MS.to_string())
        .env_remove("VMARENA_PURGE_THREAD");
    if purger {
        cmd.env("VMARENA_PURGE_THREAD", "1");
    }
    if fork_first {
        cmd.env("IDLE_FORK", "1");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> usize {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("peak_above="))
            .expect("no result");
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("peak_above="), field("idle_above="))
}

fn with_the_purger_idle_memory_goes_back() {
    let (peak, idle) = run_child(true, false);
    assert!(
        peak >= WORK_MIB / 4,
        "the work did not raise RSS ({peak} MiB)"
    );
    assert!(
        idle <= KEPT_MIB,
        "idle RSS stayed {idle} MiB above the baseline (peak {peak} MiB above)"
    );
}

fn without_the_purger_idle_memory_stays() {
    // The control: no allocator call, no purge. If this ever fails, the case above no longer
    // shows that the purger is what gives the memory back.
    let (peak, idle) = run_child(false, false);
    assert!(
        idle >= peak / 2,
        "idle RSS fell from {peak} to {idle} MiB above the baseline without the purger"
    );
}

fn a_forked_child_starts_its_own_purger() {
    let (peak, idle) = run_child(true, true);
    assert!(
        peak >= WORK_MIB / 4,
        "the work did not raise RSS ({peak} MiB)"
    );
    assert!(
        idle <= KEPT_MIB,
        "in a forked child, idle RSS stayed {idle} MiB above the baseline (peak {peak} MiB)"
    );
}

/// A large free that finds the arena lock held in shared mode (here by `stats()`, which walks
/// the pages under it) is queued for the lock's holder to give back. Each round frees a
/// 64 MiB block while a thread reads the statistics in a loop, then pauses the reader and,
/// without calling the allocator again, looks at RSS: with a zero purge delay, the block must
/// be gone, however the free met the lock.
fn large_frees_behind_statistics_readers_go_back() {
    use std::sync::atomic::{AtomicU8, Ordering};
    const BIG: usize = 64 << 20;
    const READING: u8 = 0;
    const PAUSE: u8 = 1;
    const PAUSED: u8 = 2;
    const STOP: u8 = 3;
    static READER: AtomicU8 = AtomicU8::new(READING);
    vmarena::set_purge_delay(Duration::ZERO);
    // Not joined: its exit would run allocator paths that release the queue anyway.
    std::thread::spawn(|| {
        loop {
            match READER.load(Ordering::Acquire) {
                READING => {
                    std::hint::black_box(vmarena::stats());
                }
                PAUSE => READER.store(PAUSED, Ordering::Release),
                STOP => loop {
                    std::thread::park();
                },
                _ => std::hint::spin_loop(),
            }
        }
    });
    let baseline = common::resident_bytes();
    let mut stranded = Vec::new();
    for round in 0..20 {
        let mut block = vec![0u8; BIG];
        block.iter_mut().step_by(4096).for_each(|b| *b = 1);
        drop(block);
        READER.store(PAUSE, Ordering::Release);
        let asked = Instant::now();
        while READER.load(Ordering::Acquire) != PAUSED {
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "the reader stopped answering"
            );
            std::hint::spin_loop();
        }
        // No allocator call from the free to this look.
        let rss = vmarena_testkit::proc::resident_bytes_without_allocating();
        if rss > baseline + BIG / 2 {
            stranded.push((round, (rss - baseline) >> 20));
        }
        READER.store(READING, Ordering::Release);
    }
    READER.store(STOP, Ordering::Release);
    vmarena::set_purge_delay(Duration::from_secs(1));
    assert!(
        stranded.is_empty(),
        "rounds whose freed 64 MiB stayed resident (round, MiB above the baseline): {stranded:?}"
    );
}

fn main() {
    if std::env::var_os("IDLE_CHILD").is_some() {
        return child();
    }
    common::run_cases(&[
        (
            "with_the_purger_idle_memory_goes_back",
            with_the_purger_idle_memory_goes_back,
        ),
        (
            "without_the_purger_idle_memory_stays",
            without_the_purger_idle_memory_stays,
        ),
        (
            "a_forked_child_starts_its_own_purger",
            a_forked_child_starts_its_own_purger,
        ),
        (
            "large_frees_behind_statistics_readers_go_back",
            large_frees_behind_statistics_readers_go_back,
        ),
    ]);
}
