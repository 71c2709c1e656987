//! Remap operations on the real OS: large growth without copying, memory back to the OS,
//! arena growth past one reservation, a bounded number of kernel mappings, and a long stress
//! run with a thread that keeps reshaping the arena while others allocate.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Rng, check, check_from, fill, random_size, resident_bytes};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// The remap tests measure process-wide memory; run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

#[test]
fn a_vec_grown_to_a_gib_by_push_keeps_its_contents_without_copies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = vmarena::stats();
    let mut v: Vec<u8> = Vec::new();
    let mut sum = 0u64;
    for i in 0..GIB + 1 {
        let b = (i.wrapping_mul(31) ^ (i >> 12)) as u8;
        sum = sum.wrapping_add(u64::from(b));
        v.push(b);
    }
    assert_eq!(v.len(), GIB + 1);
    assert_eq!(
        v.iter().fold(0u64, |s, &b| s.wrapping_add(u64::from(b))),
        sum,
        "contents changed"
    );
    let after = vmarena::stats();
    let grown = after.bytes_grown_in_place - before.bytes_grown_in_place;
    let moved = after.bytes_remapped - before.bytes_remapped;
    println!(
        "grown in place {} MiB, remapped {} MiB in {} moves",
        grown >> 20,
        moved >> 20,
        after.remaps - before.remaps
    );
    // Vec doubles: every step from 1 MiB up went through the arena without copying.
    assert!(
        grown + moved >= (GIB - 2 * MIB) as u64,
        "large growth was copied"
    );
}

#[test]
fn freed_memory_goes_back_to_the_os_on_collect() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    vmarena::collect();
    let before = resident_bytes();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                let mut total = 0;
                while total < 128 * MIB {
                    let size = match rng.below(10) {
                        0..=5 => 1 + rng.below(1024) as usize,
                        6..=8 => 1 + rng.below(128 << 10) as usize,
                        _ => (512 << 10) + rng.below(4 << 20) as usize,
                    };
                    blocks.push(vec![t as u8 + 1; size]);
                    total += size;
                }
                blocks
            })
        })
        .collect();
    let all: Vec<Vec<Vec<u8>>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let peak = resident_bytes();
    assert!(
        peak >= before + 900 * MIB,
        "the test did not touch ~1 GiB ({} MiB)",
        (peak - before) >> 20
    );
    drop(all);
    vmarena::collect();
    let after = resident_bytes();
    println!(
        "resident: {} MiB before, {} MiB at peak, {} MiB after collect()",
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(
        after <= before + 64 * MIB,
        "resident memory did not come back: {} MiB -> {} MiB",
        before >> 20,
        after >> 20
    );
    let s = vmarena::stats();
    assert!(
        s.bytes_committed <= 64 * MIB + s.bytes_in_use,
        "committed {} MiB",
        s.bytes_committed >> 20
    );
}

#[test]
fn the_arena_grows_past_one_reservation_and_lookups_keep_working() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let layout = Layout::from_size_align(GIB, 4096).unwrap();
    let blocks: Vec<*mut u8> = (0..12)
        .map(|i| {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null(), "allocation {i} of 1 GiB failed");
            // SAFETY: the block is 1 GiB long; touch only its ends.
            unsafe {
                *p = i as u8;
                *p.add(GIB - 1) = i as u8;
            }
            p
        })
        .collect();
    assert!(vmarena::stats().bytes_reserved >= 12 * GIB);
    for (i, &p) in blocks.iter().enumerate() {
        assert_eq!(vmarena::usable_size(p), Some(GIB));
        // SAFETY: live blocks we wrote.
        unsafe { assert_eq!((*p, *p.add(GIB - 1)), (i as u8, i as u8)) };
    }
    let small: Vec<Box<[u64; 4]>> = (0..100_000).map(|i| Box::new([i; 4])).collect();
    assert!(small.iter().enumerate().all(|(i, b)| b[3] == i as u64));
    for p in blocks {
        // SAFETY: live blocks, freed once.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
}

fn kernel_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn moving_blocks_with_mremap_keeps_the_kernel_mapping_count_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Freed ranges purged at once: a freed range still resident would be reused first, and a
    // block placed in a bigger one could grow in place instead of moving.
    vmarena::set_purge_delay(std::time::Duration::ZERO);
    vmarena::collect();
    let before = kernel_mappings();
    let moves = vmarena::stats().remaps;
    let mut peak = before;
    for round in 0..2_000usize {
        // A block with a neighbour right after it cannot grow in place: it has to move.
        let mut a: Vec<u8> = Vec::with_capacity(2 * MIB);
        a.resize(2 * MIB, round as u8);
        let spacer: Vec<u8> = Vec::with_capacity(MIB);
        a.reserve_exact(4 * MIB);
        assert!(a.iter().all(|&b| b == round as u8));
        drop(spacer);
        drop(a);
        if round % 100 == 0 {
            peak = peak.max(kernel_mappings());
        }
    }
    let moved = vmarena::stats().remaps - moves;
    vmarena::collect();
    let after = kernel_mappings();
    println!(
        "kernel mappings: {before} before, {peak} at most during, {after} after collect(); {moved} moves"
    );
    vmarena::set_purge_delay(std::time::Duration::from_secs(1));
    assert!(
        moved >= 1_000,
        "blocks did not move with mremap ({moved} moves)"
    );
    assert!(
        peak <= before + 200,
        "mappings grew to {peak} from {before}"
    );
    assert!(
        after <= before + 20,
        "mappings left behind: {after} from {before}"
    );
}

/// Eight threads allocate, check and free small and medium blocks while another thread keeps
/// reshaping the arena: large reallocs (grow, shrink, move), frees and `collect()`.
#[test]
fn allocation_stays_correct_while_another_thread_remaps() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static STOP: AtomicBool = AtomicBool::new(false);
    let seconds: u64 = std::env::var("VMARENA_TEST_REMAP_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let remapper = std::thread::spawn(|| {
        let mut rng = Rng::new(4242);
        let mut live: Vec<(usize, usize)> = Vec::new(); // (address, size) of large blocks
        let mut ops = 0u64;
        while !STOP.load(Ordering::Relaxed) {
            match rng.below(10) {
                0..=3 => {
                    let size = (600 << 10) + rng.below(16 << 20) as usize;
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: non-zero size.
                    let p = unsafe { GLOBAL.alloc(layout) };
                    // SAFETY: fresh block of `size` bytes.
                    unsafe { fill(p, size) };
                    live.push((p as usize, size));
                }
                4..=7 if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    let (p, size) = live[i];
                    let new_size = (600 << 10) + rng.below(32 << 20) as usize;
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: a live block; non-zero new size.
                    unsafe {
                        check(p as *const u8, size);
                        let q = GLOBAL.realloc(p as *mut u8, layout, new_size);
                        assert!(!q.is_null());
                        check_from(q, p, size, size.min(new_size));
                        fill(q, new_size);
                        live[i] = (q as usize, new_size);
                    }
                }
                8 if !live.is_empty() => {
                    let (p, size) = live.swap_remove(rng.below(live.len() as u64) as usize);
                    // SAFETY: a live block, freed once.
                    unsafe {
                        check(p as *const u8, size);
                        GLOBAL.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap());
                    }
                }
                _ => vmarena::collect(),
            }
            ops += 1;
            while live.len() > 16 {
                let (p, size) = live.swap_remove(0);
                // SAFETY: a live block, freed once.
                unsafe { GLOBAL.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) };
            }
        }
        for (p, size) in live {
            // SAFETY: live blocks, freed once.
            unsafe {
                check(p as *const u8, size);
                GLOBAL.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap());
            }
        }
        ops
    });
    let workers: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(t + 7);
                let mut live: Vec<(usize, Layout)> = Vec::new();
                let mut ops = 0u64;
                while !STOP.load(Ordering::Relaxed) {
                    if live.len() < 500 && rng.chance(55) {
                        let size = random_size(&mut rng).min(256 << 10);
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: non-zero size.
                        let p = unsafe { GLOBAL.alloc(layout) };
                        assert!(!p.is_null());
                        // SAFETY: fresh block of `size` bytes.
                        unsafe { fill(p, size) };
                        live.push((p as usize, layout));
                    } else if !live.is_empty() {
                        let (p, layout) = live.swap_remove(rng.below(live.len() as u64) as usize);
                        // SAFETY: a live block, freed once.
                        unsafe {
                            check(p as *const u8, layout.size());
                            GLOBAL.dealloc(p as *mut u8, layout);
                        }
                    }
                    ops += 1;
                }
                for (p, layout) in live {
                    // SAFETY: live blocks, freed once.
                    unsafe {
                        check(p as *const u8, layout.size());
                        GLOBAL.dealloc(p as *mut u8, layout);
                    }
                }
                ops
            })
        })
        .collect();
    let start = Instant::now();
    let before = vmarena::stats();
    std::thread::sleep(Duration::from_secs(seconds));
    STOP.store(true, Ordering::Relaxed);
    let worker_ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let remap_ops = remapper.join().unwrap();
    let after = vmarena::stats();
    println!(
        "{:.1} s: {worker_ops} small-block operations, {remap_ops} remapper operations, {} remaps, {} fallbacks to the arena lock\n{after}",
        start.elapsed().as_secs_f64(),
        after.remaps - before.remaps,
        after.region_read_fallback - before.region_read_fallback
    );
    assert!(remap_ops >= 5 * seconds && worker_ops > 100_000);
    assert!(
        after.remaps > before.remaps,
        "the remapper never moved a block"
    );
}
