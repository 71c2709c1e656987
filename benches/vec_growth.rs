//! Large `realloc`: growing `Vec<u64>`s by push, as `Vec` grows them, with wall time and peak
//! resident memory per allocator:
//! * four vectors to 64 MiB each, round-robin, so each one's growth is blocked by the others;
//! * one vector to 1 GiB.
//!
//! `cargo bench --bench vec_growth` (vmarena and glibc; `--features baselines` adds mimalloc and
//! jemalloc, built from C)
//!
//! Peak RSS is per process, so each measurement runs in a child process (this binary again,
//! with `--child <allocator>`). The vectors are grown exactly as `Vec` grows (capacity doubles,
//! starting at 4, through `realloc`), calling each allocator directly through `GlobalAlloc`.

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 5;
/// (vectors, bytes each)
const CASES: [(usize, usize); 2] = [(4, 64 << 20), (1, 1 << 30)];

struct RawVec {
    ptr: *mut u64,
    len: usize,
    cap: usize,
}

fn grow(alloc: &dyn GlobalAlloc, vecs: usize, bytes: usize) -> f64 {
    let mut vecs: Vec<RawVec> = (0..vecs)
        .map(|_| RawVec {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        })
        .collect();
    let elems = bytes / 8;
    let start = Instant::now();
    for i in 0..elems as u64 {
        for v in &mut vecs {
            if v.len == v.cap {
                let new_cap = (v.cap * 2).max(4);
                let new_layout = Layout::array::<u64>(new_cap).unwrap();
                // SAFETY: a block allocated by this allocator with the old layout, or a fresh one.
                v.ptr = unsafe {
                    if v.cap == 0 {
                        alloc.alloc(new_layout)
                    } else {
                        alloc.realloc(
                            v.ptr.cast(),
                            Layout::array::<u64>(v.cap).unwrap(),
                            new_layout.size(),
                        )
                    }
                }
                .cast();
                assert!(!v.ptr.is_null());
                v.cap = new_cap;
            }
            // SAFETY: len < cap.
            unsafe { v.ptr.add(v.len).write(i) };
            v.len += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    for v in vecs {
        // SAFETY: check and free the blocks we own.
        unsafe {
            assert_eq!(*v.ptr.add(v.len - 1), v.len as u64 - 1);
            alloc.dealloc(v.ptr.cast(), Layout::array::<u64>(v.cap).unwrap());
        }
    }
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (name, case): (&str, usize) = (&args[i + 1], args[i + 2].parse().unwrap());
        let (_, alloc) = support::all()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("allocator");
        let (vecs, bytes) = CASES[case];
        let secs = grow(alloc, vecs, bytes);
        println!("{secs} {}", support::status_kib("VmHWM:"));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    for (case, (vecs, bytes)) in CASES.into_iter().enumerate() {
        println!(
            "\n{vecs} Vec<u64> grown to {} MiB each by push, median of {RUNS} runs\n",
            bytes >> 20
        );
        let mut results = Vec::new();
        for (name, _) in support::all() {
            let mut times = Vec::new();
            let mut rss = Vec::new();
            for _ in 0..RUNS {
                let out = Command::new(std::env::current_exe().unwrap())
                    .args(["--child", name, &case.to_string()])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8(out.stdout).unwrap();
                let mut it = text.split_whitespace();
                times.push(it.next().unwrap().parse::<f64>().unwrap());
                rss.push(it.next().unwrap().parse::<f64>().unwrap());
            }
            results.push((name, median(times), median(rss)));
        }
        let (_, vm_time, vm_rss) = results[0];
        println!("| allocator | time | peak RSS | vmarena time / this | vmarena peak RSS / this |");
        println!("|---|---|---|---|---|");
        for (name, time, rss) in &results {
            println!(
                "| {name} | {:.1} ms | {:.1} MiB | {:.2} | {:.2} |",
                time * 1e3,
                rss / 1024.0,
                vm_time / time,
                vm_rss / rss
            );
        }
    }
}
