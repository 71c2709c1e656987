//! Thousands of short-lived threads allocate, free locally, free each other's blocks and leave
//! blocks behind for the main thread to free. Their pages must be handed over and reused, so
//! the memory the allocator holds stays bounded no matter how many threads come and go.

mod common;

use std::sync::mpsc;

use common::{Rng, check, fill, resident_bytes};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// One generation of threads: each allocates a few thousand blocks, frees most of them itself
/// and sends the rest to the main thread, which frees them after the thread has exited.
fn generation(seed: u64, threads: usize) {
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8]>>>();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed * 1000 + t as u64);
                let mut kept = Vec::new();
                let mut sent = Vec::new();
                for _ in 0..2_000 {
                    let max = if rng.chance(2) { 200_000 } else { 2_000 };
                    let size = 1 + rng.below(max) as usize;
                    let mut block = vec![0u8; size].into_boxed_slice();
                    // SAFETY: the box owns `size` bytes.
                    unsafe { fill(block.as_mut_ptr(), size) };
                    match rng.below(10) {
                        0 => sent.push(block),
                        1..=3 => kept.push(block),
                        _ => drop(block),
                    }
                }
                for block in &kept {
                    // SAFETY: the box owns its bytes.
                    unsafe { check(block.as_ptr(), block.len()) };
                }
                tx.send(sent).unwrap();
                // `kept` is freed here, by this thread.
            })
        })
        .collect();
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    // The threads are gone; their pages were abandoned. Free what they sent us.
    for blocks in rx {
        for block in blocks {
            // SAFETY: the box owns its bytes.
            unsafe { check(block.as_ptr(), block.len()) };
        }
    }
}

#[test]
fn memory_stays_bounded_as_threads_come_and_go() {
    vmarena::track_requested_bytes(true); // for the lost-blocks check below
    // Warm up: the first generations grow the arena to its working size (the most pages all
    // threads of a generation hold at once).
    for g in 0..100 {
        generation(g, 8);
    }
    let warm = vmarena::stats();
    let warm_rss = resident_bytes();
    let generations = std::env::var("VMARENA_TEST_GENERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    for g in 100..100 + generations {
        generation(g, 8);
        if std::env::var("VMARENA_TEST_TREND").is_ok() && g % 100 == 0 {
            let s = vmarena::stats();
            println!(
                "gen {g}: rss {} MiB committed {} MiB regions {:?}",
                resident_bytes() >> 20,
                s.bytes_committed >> 20,
                s.page_regions
            );
        }
    }
    let end = vmarena::stats();
    let end_rss = resident_bytes();
    println!(
        "after warm-up:\n{warm}\nafter {} more threads:\n{end}",
        generations * 8
    );
    println!("resident: {} MiB -> {} MiB", warm_rss >> 20, end_rss >> 20);

    assert_eq!(
        end.threads_exited - warm.threads_exited,
        (generations * 8) as u64
    );
    assert_eq!(
        end.pages_abandoned, 0,
        "pages of exited threads were left behind"
    );
    let pages = |s: &vmarena::Stats| s.pages_in_use.iter().sum::<usize>();
    assert!(
        pages(&end) <= pages(&warm) + 64,
        "pages in use grew from {} to {}",
        pages(&warm),
        pages(&end)
    );
    for kind in 0..warm.page_regions.len() {
        assert!(
            end.page_regions[kind] <= warm.page_regions[kind] + 1,
            "regions grew from {:?} to {:?}",
            warm.page_regions,
            end.page_regions
        );
    }
    assert!(
        end.bytes_committed <= warm.bytes_committed + (64 << 20),
        "committed memory grew from {} MiB to {} MiB",
        warm.bytes_committed >> 20,
        end.bytes_committed >> 20
    );
    assert!(
        end_rss <= warm_rss + (32 << 20),
        "resident memory grew from {} MiB to {} MiB",
        warm_rss >> 20,
        end_rss >> 20
    );
    assert!(
        (end.bytes_requested
            .unwrap()
            .wrapping_sub(warm.bytes_requested.unwrap()) as isize)
            <= 1 << 20,
        "live bytes grew: blocks were lost"
    );
}
