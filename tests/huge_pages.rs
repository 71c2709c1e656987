//! Huge pages on the real kernel, and the bound on freed memory. What the kernel backs with
//! huge pages is read from `/proc/self/smaps_rollup` (`AnonHugePages`), so these check what a
//! user would see: a dense heap gets huge pages; freeing it gives its memory back whole; a
//! small heap, `VMARENA_THP=0` and `prctl(PR_SET_THP_DISABLE)` get none; `VMARENA_THP=2`
//! gets them from the start; a burst of large frees leaves no more freed memory resident than
//! the bound once new memory is needed.
//!
//! Each case runs in a child process of this binary (options are read once, before the first
//! allocation, and the process's huge pages must be its own). Where the system has no huge
//! pages (THP `never`), the cases that expect some say so and pass: the system decides first.

use std::process::Command;

use vmarena_testkit::proc::{anon_huge_kib, resident_bytes};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const MIB: usize = 1 << 20;
const CASE: &str = "VMARENA_TEST_HUGE_CASE";

/// The system's THP setting, the bracketed word of the sysfs file.
fn system_thp() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| Some(s.split('[').nth(1)?.split(']').next()?.to_string()))
        .unwrap_or_else(|| "never".into())
}

/// `bytes` of small blocks (1 KiB each), written in full.
#[allow(clippy::vec_box)] // one block each: the point is many small blocks
fn small_blocks(bytes: usize) -> Vec<Box<[u8; 1024]>> {
    (0..bytes / 1024)
        .map(|i| Box::new([i as u8; 1024]))
        .collect()
}

/// The child's work for `case`: prints `key=value` lines for the parent to check.
fn child(case: &str) {
    match case {
        "dense" | "option-off" | "thp-disabled" | "always-small" => {
            let heap_mib = if case == "always-small" { 3 } else { 96 };
            let before = resident_bytes();
            let blocks = small_blocks(heap_mib * MIB);
            let stats = vmarena::stats();
            println!("huge_kib={}", anon_huge_kib());
            println!("huge_pages={}", stats.huge_pages);
            let peak = resident_bytes();
            drop(blocks);
            vmarena::collect();
            println!("rss_before_mib={}", before / MIB);
            println!("rss_peak_mib={}", peak / MIB);
            println!("rss_after_mib={}", resident_bytes() / MIB);
            println!("huge_after_kib={}", anon_huge_kib());
        }
        "small-heap" => {
            let _blocks = small_blocks(2 * MIB);
            println!("huge_kib={}", anon_huge_kib());
            println!("huge_pages={}", vmarena::stats().huge_pages);
        }
        "burst" => {
            // Sixteen 32 MiB blocks written and freed at once, then a bigger block none of
            // them can hold: the freed memory beyond the bound must go back first.
            let blocks: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8 + 1; 32 * MIB]).collect();
            let peak_live = resident_bytes();
            drop(blocks);
            let new_block = vec![7u8; 600 * MIB];
            let stats = vmarena::stats();
            println!("freed_resident_mib={}", stats.bytes_freed_resident / MIB);
            println!("live_large_mib={}", stats.large_bytes / MIB);
            println!("rss_live_mib={}", peak_live / MIB);
            println!("rss_now_mib={}", resident_bytes() / MIB);
            assert_eq!(new_block[12345], 7);
        }
        other => panic!("unknown case {other}"),
    }
}

/// Runs `case` in a child with `env`; returns its `key=value` lines. The case `thp-disabled`
/// runs with `prctl(PR_SET_THP_DISABLE)` set before the child's `exec`, as a launcher that
/// turns THP off for a program does (the setting is inherited and kept across `exec`).
fn run(case: &str, env: &[(&str, &str)]) -> std::collections::HashMap<String, usize> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CASE, case).env_remove("VMARENA_THP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if case == "thp-disabled" {
        // SAFETY: between fork and exec the closure makes one system call and allocates
        // nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{case}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn a_dense_heap_gets_huge_pages_and_gives_them_back_whole() {
    let got = run("dense", &[]);
    if system_thp() == "never" {
        println!("THP is `never` here: no huge pages, as the system decides");
        assert_eq!(got["huge_kib"], 0);
        return;
    }
    // 96 MiB of small blocks: all but the first few MiB in huge pages the kernel backs.
    assert!(got["huge_pages"] >= 32, "{got:?}");
    assert!(
        got["huge_kib"] >= 64 * 1024,
        "the kernel backs too little: {got:?}"
    );
    // Given back whole: RSS comes back to where it was, and no huge page is left.
    assert!(got["rss_after_mib"] <= got["rss_before_mib"] + 8, "{got:?}");
    assert!(got["huge_after_kib"] <= 4 * 1024, "{got:?}");
}

fn a_small_heap_gets_no_huge_page() {
    let got = run("small-heap", &[]);
    assert_eq!((got["huge_kib"], got["huge_pages"]), (0, 0), "{got:?}");
}

fn the_option_off_and_a_disabled_process_get_no_huge_page() {
    for (case, env) in [
        ("option-off", &[("VMARENA_THP", "0")][..]),
        ("thp-disabled", &[][..]),
    ] {
        let got = run(case, env);
        assert_eq!(
            (got["huge_kib"], got["huge_pages"]),
            (0, 0),
            "{case}: {got:?}"
        );
    }
}

fn always_asks_from_the_start() {
    let got = run("always-small", &[("VMARENA_THP", "2")]);
    if system_thp() == "never" {
        assert_eq!(got["huge_kib"], 0);
        return;
    }
    assert!(got["huge_pages"] >= 16, "{got:?}");
    assert!(got["huge_kib"] >= 2 * 1024, "{got:?}");
}

fn freed_memory_stays_within_its_bound_after_a_burst() {
    let got = run("burst", &[]);
    // The bound: 32 MiB, or half of the live large blocks (600 MiB here).
    let bound = 32.max(got["live_large_mib"] / 2);
    assert!(got["freed_resident_mib"] <= bound, "{got:?}");
    // The 512 MiB freed did not stay resident beside the new 600 MiB block.
    assert!(
        got["rss_now_mib"] <= 600 + bound + 64,
        "the freed blocks stayed resident: {got:?}"
    );
}

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        return child(&case);
    }
    vmarena_testkit::run_cases(&[
        (
            "a_dense_heap_gets_huge_pages_and_gives_them_back_whole",
            a_dense_heap_gets_huge_pages_and_gives_them_back_whole,
        ),
        (
            "a_small_heap_gets_no_huge_page",
            a_small_heap_gets_no_huge_page,
        ),
        (
            "the_option_off_and_a_disabled_process_get_no_huge_page",
            the_option_off_and_a_disabled_process_get_no_huge_page,
        ),
        ("always_asks_from_the_start", always_asks_from_the_start),
        (
            "freed_memory_stays_within_its_bound_after_a_burst",
            freed_memory_stays_within_its_bound_after_a_burst,
        ),
    ]);
}
