//! Small-object throughput of worker threads while another thread keeps reshaping the heap
//! (large reallocs that must move, frees, trims), as a fraction of their throughput with no
//! such thread.
//!
//! `cargo bench --features baselines --bench remap_under_load`
//!
//! Workers each allocate blocks of 8..1024 bytes and free them in order after 20,000 more
//! (a sliding window of ~10 MB), so their pages fill up and empty all the time and they keep
//! refilling from the arena: the path a remap operation could stall.
//! The remapper grows a block from 1 MiB to 64 MiB by doubling with a neighbour in the way
//! (so each growth moves the block: `mremap` in vmarena and glibc, a copy in mimalloc and
//! jemalloc), frees it, and every 16 rounds trims the heap (`vmarena::collect`, `malloc_trim`,
//! `mi_collect`). "continuous" runs it flat out (how much reshaping each allocator gets done
//! is the "rounds" column); "paced" runs the same 50 rounds a second for every allocator, so
//! the workers' loss is comparable. On a machine with fewer cores than threads, the remapper
//! also takes CPU time from the workers, which caps the continuous fraction (at about 2/3 for
//! two workers on two cores).

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW: usize = 20_000;
const RUN: Duration = Duration::from_secs(2);

fn worker(alloc: &'static (dyn GlobalAlloc + Sync), seed: u64, stop: &AtomicBool, ops: &AtomicU64) {
    let mut x = seed | 1;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut window: std::collections::VecDeque<(*mut u8, Layout)> =
        std::collections::VecDeque::with_capacity(WINDOW + 1);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let layout = Layout::from_size_align(8 + (rand() % 1017) as usize, 8).unwrap();
            // SAFETY: non-zero size; blocks are freed once with their layout.
            unsafe {
                let p = alloc.alloc(layout);
                p.write(1);
                window.push_back((p, layout));
                if window.len() > WINDOW {
                    let (old, old_layout) = window.pop_front().unwrap();
                    alloc.dealloc(old, old_layout);
                }
            }
            n += 1;
        }
    }
    for (p, layout) in window {
        // SAFETY: live blocks, freed once.
        unsafe { alloc.dealloc(p, layout) };
    }
    ops.fetch_add(n, Ordering::Relaxed);
}

fn trim(name: &str) {
    match name {
        "vmarena" => vmarena::collect(),
        // SAFETY: both are thread-safe and take no pointers.
        "glibc" => unsafe {
            libc::malloc_trim(0);
        },
        // SAFETY: as above.
        "mimalloc" => unsafe { libmimalloc_sys::mi_collect(true) },
        _ => {}
    }
}

/// Rounds per second of the paced remapper.
const PACED_RATE: u64 = 50;

fn remapper(
    name: &'static str,
    alloc: &'static (dyn GlobalAlloc + Sync),
    stop: &AtomicBool,
    pace: bool,
) -> u64 {
    let mut rounds = 0u64;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut size = 1 << 20;
        let mut layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero sizes; blocks are freed once with their current layout.
        unsafe {
            let mut p = alloc.alloc(layout);
            p.write_bytes(1, size);
            while size < 64 << 20 {
                let spacer_layout = Layout::from_size_align(1 << 20, 8).unwrap();
                let spacer = alloc.alloc(spacer_layout);
                p = alloc.realloc(p, layout, size * 2);
                size *= 2;
                layout = Layout::from_size_align(size, 8).unwrap();
                p.add(size - 1).write(1);
                alloc.dealloc(spacer, spacer_layout);
            }
            alloc.dealloc(p, layout);
        }
        rounds += 1;
        if rounds % 16 == 0 {
            trim(name);
        }
        if pace {
            let next = start + Duration::from_millis(rounds * 1000 / PACED_RATE);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    rounds
}

/// Worker operations per second, and remapper rounds, with the given remapper mode.
fn run(
    name: &'static str,
    alloc: &'static (dyn GlobalAlloc + Sync),
    workers: usize,
    mode: Option<bool>,
) -> (f64, u64) {
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let start = Instant::now();
    let rounds = std::thread::scope(|s| {
        for w in 0..workers {
            let (stop, ops) = (&stop, &ops);
            s.spawn(move || worker(alloc, 0x9E37_79B9 + w as u64, stop, ops));
        }
        let remap = mode.map(|pace| {
            let stop = &stop;
            s.spawn(move || remapper(name, alloc, stop, pace))
        });
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
        remap.map_or(0, |h| h.join().unwrap())
    });
    (
        ops.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        rounds,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let only = std::env::var("ONLY").ok();
    let mut allocators: Vec<(&'static str, &'static (dyn GlobalAlloc + Sync), bool)> =
        support::all()
            .into_iter()
            .map(|(n, a)| (n, a, false))
            .collect();
    allocators.insert(1, ("vmarena-global-lock", &support::VMARENA, true));
    for workers in [1, 2] {
        println!(
            "\n{workers} worker thread(s), {} s per run; throughput in million operations per second\n",
            RUN.as_secs()
        );
        println!(
            "| allocator | quiet | with continuous remapper | fraction | remapper rounds | with paced remapper (50 rounds/s) | fraction | paced rounds |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &(name, alloc, global_lock) in &allocators {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            vmarena::ablation::set_global_arena_lock(global_lock);
            let trim_as = if global_lock { "vmarena" } else { name };
            let (quiet, _) = run(trim_as, alloc, workers, None);
            let (busy, rounds) = run(trim_as, alloc, workers, Some(false));
            let (paced, paced_rounds) = run(trim_as, alloc, workers, Some(true));
            println!(
                "| {name} | {:.1} | {:.1} | {:.2} | {rounds} | {:.1} | {:.2} | {paced_rounds} |",
                quiet / 1e6,
                busy / 1e6,
                busy / quiet,
                paced / 1e6,
                paced / quiet
            );
        }
        vmarena::ablation::set_global_arena_lock(false);
    }
}
