//! Heap profiling, read back: a program keeps known amounts live in known functions and churns
//! a known amount; its profile (written at exit through `VMARENA_PROFILE_OUT`) must attribute
//! each function's in-use and allocated bytes within 15%, as `go tool pprof` reads it. Also
//! threads that exit with sampled blocks live, blocks freed by other threads, and a forked
//! child that writes its own profile.
//!
//! The `go tool pprof` checks need Go (Debian's `golang-go`): CI installs it and sets
//! `VMARENA_TEST_REQUIRE_PPROF=1`; elsewhere they are skipped, with a message, without it.
//! The decoded totals are checked everywhere.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

use vmarena_testkit::pprof;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const MIB: usize = 1 << 20;
/// The sample interval the tests set: small enough for a few percent of noise.
const INTERVAL: &str = "32768";

#[inline(never)]
fn keep_64k_blocks(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..1024 {
        out.push(vec![1u8; 64 << 10].into_boxed_slice()); // 64 MiB
    }
}

#[inline(never)]
fn keep_256b_blocks(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..(128 << 10) {
        out.push(vec![2u8; 256].into_boxed_slice()); // 32 MiB
    }
}

#[inline(never)]
fn keep_4m_blocks(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..4 {
        out.push(vec![3u8; 4 << 20].into_boxed_slice()); // 16 MiB
    }
}

/// 200,000 blocks of 1000 bytes, each freed at once: alloc_space 200 MB, in use nothing.
#[inline(never)]
fn churn() {
    for _ in 0..200_000 {
        black_box(vec![0u8; 1000]);
    }
}

// (Loops, not `collect()` in tail position: a tail call would leave these frames out of the
// stacks.)
#[inline(never)]
fn thread_keeps(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..8 {
        out.push(vec![4u8; MIB].into_boxed_slice());
    }
}

#[inline(never)]
fn freed_elsewhere(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..8 {
        out.push(vec![5u8; MIB].into_boxed_slice());
    }
}

#[inline(never)]
fn child_keeps(out: &mut Vec<Box<[u8]>>) {
    for _ in 0..4 {
        out.push(vec![6u8; MIB].into_boxed_slice());
    }
}

/// The child workloads (this test binary, run again with `VMARENA_TEST_PROFILE_CHILD`).
fn child(which: &str) {
    match which {
        "functions" => {
            let mut a = Vec::with_capacity(1024);
            let mut b = Vec::with_capacity(128 << 10);
            let mut c = Vec::with_capacity(4);
            keep_64k_blocks(&mut a);
            keep_256b_blocks(&mut b);
            keep_4m_blocks(&mut c);
            churn();
            std::mem::forget((a, b, c)); // live at exit, when the profile is written
        }
        "threads" => {
            // A thread that exits with its sampled blocks live (handed to this one), and one
            // whose blocks this thread frees.
            let keep = |f: fn(&mut Vec<Box<[u8]>>)| {
                move || {
                    let mut blocks = Vec::with_capacity(8);
                    f(&mut blocks);
                    blocks
                }
            };
            let kept = std::thread::spawn(keep(thread_keeps)).join().unwrap();
            let other = std::thread::spawn(keep(freed_elsewhere)).join().unwrap();
            drop(other);
            // A forked child writes its own profile (`%p`), with its own block and what it
            // inherited.
            let dir = std::env::var("VMARENA_TEST_PROFILE_DIR").unwrap();
            // SAFETY: fork in a process whose other threads have exited; the child only
            // allocates (vmarena's fork handlers make that safe) and writes, then exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let mut mine = Vec::with_capacity(4);
                child_keeps(&mut mine);
                let code = match vmarena::profile::write_to_path(&format!("{dir}/fork.%p.pb.gz")) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                black_box(&mine);
                // SAFETY: leaves the child at once (no at-exit writer: the test reads only the
                // file written above).
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(status, 0, "the forked child failed to write its profile");
            std::mem::forget(kept);
        }
        "balance" => {
            // Requested bytes counted while most allocations are sampled: every block freed,
            // by Rust and through the C functions (which count whole blocks), leaves the
            // count where it was.
            vmarena::track_requested_bytes(true);
            let before = vmarena::thread_stats();
            let mut blocks = Vec::new();
            for i in 0..20_000usize {
                let size = [8, 24, 100, 1000, 5000, 70_000, 300_000][i % 7];
                blocks.push(vec![1u8; size]);
                if size <= 1000 {
                    // Shrunk in place (a sampled one too, though it is a region).
                    let last = blocks.last_mut().unwrap();
                    last.truncate(size * 3 / 4);
                    last.shrink_to_fit();
                }
                if i % 3 == 0 {
                    let p = vmarena::raw::c::malloc(size);
                    // SAFETY: a live block of ours; the old pointer is not used again.
                    let q = unsafe { vmarena::raw::c::realloc(p, size * 2 + 1) };
                    // SAFETY: a live block of ours, freed once.
                    unsafe { vmarena::raw::c::free(q) };
                }
                if i % 5 == 0 {
                    blocks[i / 2].resize(size + 4096, 0); // realloc, sampled blocks included
                }
            }
            drop(blocks);
            let after = vmarena::thread_stats();
            let net = |t: &vmarena::ThreadStats| t.bytes_allocated as i64 - t.bytes_freed as i64;
            assert_eq!(
                net(&after),
                net(&before),
                "requested bytes drifted: {after:?}"
            );
        }
        _ => panic!("unknown child {which}"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmarena-profile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs child `which` with profiling at exit into `dir`; returns the profile's path.
fn run_child(which: &str, dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(&exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("VMARENA_TEST_PROFILE_CHILD", which)
        .env("VMARENA_TEST_PROFILE_DIR", dir)
        .env("VMARENA_PROFILE_OUT", dir.join("heap.%p.pb.gz"))
        .env("VMARENA_PROFILE_SAMPLE", INTERVAL)
        .status()
        .unwrap();
    assert!(status.success(), "child {which} failed: {status}");
    let mut profiles = pprof::files_named(dir, "heap.");
    assert_eq!(
        profiles.len(),
        1,
        "one profile written at exit: {profiles:?}"
    );
    profiles.pop().unwrap()
}

/// The entry the children run (a test that does nothing in the parent).
#[test]
fn child_entry() {
    if let Ok(which) = std::env::var("VMARENA_TEST_PROFILE_CHILD") {
        child(&which);
    }
}

#[test]
fn each_function_gets_its_bytes_within_15_percent() {
    let dir = scratch("functions");
    let profile = run_child("functions", &dir);
    let p = pprof::read(&profile);
    assert_eq!(
        p.sample_types,
        [
            "alloc_objects/count",
            "alloc_space/bytes",
            "inuse_objects/count",
            "inuse_space/bytes"
        ]
    );
    assert_eq!((p.period, p.period_type.as_str()), (32768, "space/bytes"));
    assert_eq!(p.default_sample_type, "inuse_space");
    assert!(
        p.mappings
            .iter()
            .any(|m| m.ends_with(".so.6") || m.contains("libc")),
        "{:?}",
        p.mappings
    );
    // In use: 112 MiB kept, plus the three vectors of pointers (2 MiB), within 15%.
    let inuse = p.totals[3] as f64;
    let expected = (114 * MIB) as f64;
    assert!(
        (inuse - expected).abs() / expected < 0.15,
        "in use {inuse} against {expected}"
    );
    // Allocated: that plus the churn's 200 MB.
    let allocated = p.totals[1] as f64;
    let expected = expected + 200e6;
    assert!(
        (allocated - expected).abs() / expected < 0.15,
        "allocated {allocated} against {expected}"
    );

    let exe = std::env::current_exe().unwrap();
    if let Some(inuse) = pprof::top(&exe, &profile, "inuse_space") {
        pprof::assert_near(&inuse, "keep_64k_blocks", (64 * MIB) as f64, 0.15);
        pprof::assert_near(&inuse, "keep_256b_blocks", (32 * MIB) as f64, 0.15);
        pprof::assert_near(&inuse, "keep_4m_blocks", (16 * MIB) as f64, 0.15);
        assert!(
            inuse.get("churn").copied().unwrap_or(0.0) < (MIB as f64),
            "churn keeps nothing"
        );
        let allocated = pprof::top(&exe, &profile, "alloc_space").unwrap();
        pprof::assert_near(&allocated, "churn", 200e6, 0.15);
        pprof::assert_near(&allocated, "keep_64k_blocks", (64 * MIB) as f64, 0.15);
        let objects = pprof::top(&exe, &profile, "inuse_objects").unwrap();
        pprof::assert_near(&objects, "keep_256b_blocks", (128 << 10) as f64, 0.15);
    }
}

/// Counting requested bytes and sampling at once (almost every allocation sampled): the counts
/// balance, for Rust blocks and C blocks (counted by their whole size), sampled or not.
#[test]
fn counting_and_sampling_together_balance() {
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(&exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("VMARENA_TEST_PROFILE_CHILD", "balance")
        .env("VMARENA_PROFILE", "1")
        .env("VMARENA_PROFILE_SAMPLE", "1024")
        .status()
        .unwrap();
    assert!(status.success(), "child failed: {status}");
}

#[test]
fn threads_remote_frees_and_a_forked_child() {
    let dir = scratch("threads");
    let profile = run_child("threads", &dir);
    let fork_profile = pprof::files_named(&dir, "fork.")
        .pop()
        .expect("the forked child's profile");
    assert_ne!(
        fork_profile.file_name(),
        profile.file_name(),
        "%p told them apart"
    );
    let (parent, child) = (pprof::read(&profile), pprof::read(&fork_profile));
    // Parent: 8 MiB kept from an exited thread; 8 MiB freed by another thread.
    let mib = MIB as f64;
    assert!(
        (parent.totals[3] as f64 - 8.0 * mib).abs() < 2.0 * mib,
        "in use {}",
        parent.totals[3]
    );
    assert!(
        parent.totals[1] as f64 > 15.0 * mib,
        "allocated {}",
        parent.totals[1]
    );
    // Child: the parent's 8 MiB, inherited, and its own 4 MiB.
    assert!(
        (child.totals[3] as f64 - 12.0 * mib).abs() < 2.0 * mib,
        "in use {}",
        child.totals[3]
    );

    let exe = std::env::current_exe().unwrap();
    if let Some(inuse) = pprof::top(&exe, &profile, "inuse_space") {
        pprof::assert_near(&inuse, "thread_keeps", 8.0 * mib, 0.15);
        assert!(
            inuse.get("freed_elsewhere").copied().unwrap_or(0.0) < mib,
            "{inuse:?}"
        );
        let allocated = pprof::top(&exe, &profile, "alloc_space").unwrap();
        pprof::assert_near(&allocated, "freed_elsewhere", 8.0 * mib, 0.15);
        let child = pprof::top(&exe, &fork_profile, "inuse_space").unwrap();
        pprof::assert_near(&child, "child_keeps", 4.0 * mib, 0.15);
        pprof::assert_near(&child, "thread_keeps", 8.0 * mib, 0.15);
    }
}

/// `vmarena::profile::write` (feature `std`) gives the same format as the file writers.
#[cfg(feature = "std")]
#[test]
fn write_gives_a_profile_to_any_io_write() {
    vmarena::profile::start();
    let mut kept = Vec::new();
    keep_4m_blocks(&mut kept);
    let mut bytes = Vec::new();
    vmarena::profile::write(&mut bytes).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
    let path = scratch("write").join("written.pb.gz");
    std::fs::write(&path, &bytes).unwrap();
    let p = pprof::read(&path);
    assert_eq!(p.sample_types.len(), 4);
    assert!(
        p.totals[3] >= (16 * MIB) as i64,
        "the 16 MiB kept: {}",
        p.totals[3]
    );
    black_box(kept);
}
