// The application benchmark's workload, included by one bench target per allocator
// (`benches/app_<allocator>.rs`), each of which installs its allocator as the global one.
//
// A rayon pipeline: build 2 million short strings in parallel, sort them in parallel, count
// words in per-chunk hash maps merged across threads, and keep a growing index. The binary
// runs the workload in child processes (itself, with `--child`) to measure each run's peak
// RSS, and prints the median wall time, peak RSS, minor page faults and huge pages (the most
// `AnonHugePages` seen while it ran) of five runs.

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;

fn word(i: u64) -> String {
    const SYLLABLES: [&str; 8] = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo"];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut w = String::new();
    for _ in 0..(2 + i % 5) {
        w.push_str(SYLLABLES[(x & 7) as usize]);
        x >>= 3;
    }
    w
}

fn workload() -> u64 {
    let lines = 250_000u64;
    let mut text: Vec<String> = (0..lines)
        .into_par_iter()
        .map(|i| {
            (0..8)
                .map(|j| word(i * 8 + j))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    text.par_sort_unstable();
    let counts: HashMap<String, u64> = text
        .par_chunks(2_048)
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
    let index: Vec<(usize, u64)> = text
        .par_iter()
        .enumerate()
        .map(|(i, l)| (i, l.len() as u64))
        .collect();
    let total: u64 = counts.values().sum();
    assert_eq!(total, lines * 8);
    total + index.len() as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.iter().any(|a| a == "--child") {
        let huge = support::HugeSampler::start();
        let start = Instant::now();
        std::hint::black_box(workload());
        let elapsed = start.elapsed().as_secs_f64();
        let huge = huge.stop();
        println!(
            "{elapsed} {} {} {huge}",
            support::status_kib("VmHWM:"),
            support::minor_faults()
        );
        return;
    }
    let mut runs: Vec<Vec<f64>> = Vec::new();
    for _ in 0..5 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--child")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        runs.push(
            text.split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect(),
        );
    }
    let median = |i: usize| {
        let mut xs: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        xs[2]
    };
    println!(
        "app {ALLOCATOR} {:.1} ms {:.1} MiB {:.0} faults {:.1} MiB-huge",
        median(0) * 1e3,
        median(1) / 1024.0,
        median(2),
        median(3) / 1024.0
    );
}
