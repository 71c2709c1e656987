//! A real parallel workload on vmarena: rayon threads build strings, sort them, count words in
//! hash maps and merge the maps, while memory moves freely between threads. At the end the
//! allocator's statistics show that vmarena served it.
//!
//! `cargo run --release --example parallel_workload`

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

fn word(i: u64) -> String {
    const SYLLABLES: [&str; 8] = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo"];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut w = String::new();
    for _ in 0..(2 + i % 4) {
        w.push_str(SYLLABLES[(x & 7) as usize]);
        x >>= 3;
    }
    w
}

fn main() {
    // Count requested bytes too (off by default: it costs a little on every malloc and free).
    // Counted from now on, on every thread; `VMARENA_STATS=1` would count from the start.
    vmarena::track_requested_bytes(true);
    let start = Instant::now();
    let lines = 400_000u64;

    // 1. Build many small strings in parallel (each thread allocates its own).
    let mut text: Vec<String> = (0..lines)
        .into_par_iter()
        .map(|i| {
            (0..8)
                .map(|j| word(i * 8 + j))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();

    // 2. Sort them in parallel (moves the strings between threads' buffers).
    text.par_sort_unstable();

    // 3. Count words per chunk into hash maps, then merge: maps built on one thread are
    //    dropped on another, so frees cross threads.
    let counts: HashMap<String, u64> = text
        .par_chunks(4_096)
        .map(|chunk| {
            let mut m = HashMap::new();
            for line in chunk {
                for w in line.split(' ') {
                    *m.entry(w.to_owned()).or_insert(0) += 1;
                }
            }
            m
        })
        .reduce(HashMap::new, |mut a, b| {
            for (k, v) in b {
                *a.entry(k).or_insert(0) += v;
            }
            a
        });

    // 4. A large buffer that grows by doubling (large-block realloc).
    let mut big: Vec<u64> = Vec::new();
    for i in 0..(32u64 << 20) / 8 {
        big.push(i);
    }

    let total: u64 = counts.values().sum();
    assert_eq!(total, lines * 8, "every word counted once");
    assert!(text.windows(2).all(|w| w[0] <= w[1]), "sorted");
    assert_eq!(
        big.iter().sum::<u64>(),
        (big.len() as u64 - 1) * big.len() as u64 / 2
    );
    println!(
        "{} lines, {} distinct words, {} MiB buffer, {} threads, {:.0} ms",
        text.len(),
        counts.len(),
        (big.len() * 8) >> 20,
        rayon::current_num_threads(),
        start.elapsed().as_secs_f64() * 1e3
    );
    // Taken while the data is alive: "requested" is what the program holds right now.
    println!("{}", vmarena::stats());
    drop((text, counts, big));
}
