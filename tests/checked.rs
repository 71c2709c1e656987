//! Checked mode (`VMARENA_CHECKED=1`): every allocation validates the free-list link it pops,
//! so a write into a freed block (or past the end of the block before it) that corrupts the
//! list aborts with the block's address, instead of handing out a wild pointer later. Each
//! case runs in a child process (this binary again, with the environment set), because the
//! mode is read when a thread's heap comes up.

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

mod common;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const CASE: &str = "VMARENA_CHECKED_CASE";

/// Frees two blocks, overwrites the link of the second, and allocates until it comes back.
fn corrupt_a_free_block() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: none of this is safe: the child writes into a freed block on purpose.
    unsafe {
        let a = GLOBAL.alloc(layout);
        let b = GLOBAL.alloc(layout);
        println!("address {b:p}");
        GLOBAL.dealloc(a, layout);
        GLOBAL.dealloc(b, layout);
        b.cast::<u64>().write(0x4141_4141_4141_4141); // use after free
        for _ in 0..100_000 {
            let p = GLOBAL.alloc(layout);
            p.write_bytes(0, 48);
        }
    }
}

/// A mixed workload, checked as it goes: checked mode changes nothing for a correct program.
fn workload() {
    let mut rng = common::Rng::new(7);
    let mut live: Vec<(usize, Layout)> = Vec::new();
    for _ in 0..200_000 {
        if live.len() < 2000 && rng.chance(60) || live.is_empty() {
            let layout = Layout::from_size_align(common::random_size(&mut rng), 8).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: a fresh block of `layout.size()` bytes.
            unsafe { common::fill(p, layout.size()) };
            live.push((p as usize, layout));
        } else {
            let (p, layout) = live.swap_remove(rng.below(live.len() as u64) as usize);
            // SAFETY: a live block with its pattern, given up.
            unsafe {
                common::check(p as *const u8, layout.size());
                GLOBAL.dealloc(p as *mut u8, layout);
            }
        }
    }
    println!("workload done");
}

fn run_child(case: &str, checked: bool) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CASE, case);
    if checked {
        command.env("VMARENA_CHECKED", "1");
    } else {
        command.env_remove("VMARENA_CHECKED");
    }
    command.output().unwrap()
}

#[test]
fn child() {
    match std::env::var(CASE).as_deref() {
        Ok("corrupt") => corrupt_a_free_block(),
        Ok("workload") => workload(),
        _ => {}
    }
}

#[test]
fn a_corrupted_free_block_aborts_naming_it() {
    let out = run_child("corrupt", true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "not aborted: {stdout} {stderr}"
    );
    let address = stdout
        .split_whitespace()
        .skip_while(|w| *w != "address")
        .nth(1)
        .expect("address printed");
    assert!(
        stderr.contains("corrupted free list") && stderr.contains(address.trim_start_matches("0x")),
        "message {stderr:?} does not name {address}"
    );
    assert!(
        stderr.contains("4141414141414141"),
        "{stderr:?} lacks the bad link"
    );
}

#[test]
fn without_checked_mode_the_corruption_goes_unnoticed_until_it_crashes() {
    // What checked mode buys: the same program dies of the wild pointer, with no message.
    if cfg!(feature = "checked") {
        return; // the mode cannot be turned off in this build
    }
    let out = run_child("corrupt", false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("corrupted free list"), "{stderr}");
}

#[test]
fn a_correct_program_runs_the_same_in_checked_mode() {
    let out = run_child("workload", true);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("workload done"),
        "{out:?}"
    );
}
