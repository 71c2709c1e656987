//! The `VMARENA_*` options from outside: each case runs this binary again as a child with
//! variables set (they are read once, before the first allocation) and checks what it prints:
//! invalid values and unknown names are reported and ignored, `VMARENA_SHOW_STATS=1` prints
//! the report at exit, `VMARENA_VERBOSE=1` the options and out-of-memory warnings.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const CHILD: &str = "OPTIONS_TEST_CHILD";

/// The child's work: print the purge delay in effect, and with `fail` ask for more memory
/// than there is, five times.
fn child(case: &str) {
    let v: Vec<u64> = (0..1000).collect();
    assert_eq!(v.iter().sum::<u64>(), 499_500);
    if case == "fail" {
        for _ in 0..5 {
            let layout = Layout::from_size_align(1 << 62, 8).unwrap();
            // SAFETY: a valid layout of non-zero size; the result is only compared with null.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(p.is_null());
        }
    }
    println!("purge_delay_ms={}", vmarena::stats().purge_delay_ms);
}

/// Runs a child with exactly the `VMARENA_*` variables `vars` (the rest of the environment is
/// kept); returns its stdout and stderr.
fn run(case: &str, vars: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, case);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VMARENA_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(vars.iter().copied());
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "child {case} {vars:?} failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn purge_delay(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("purge_delay_ms="))
        .expect("no purge delay printed")
        .parse()
        .unwrap()
}

fn a_valid_value_is_used_silently() {
    let (stdout, stderr) = run("plain", &[("VMARENA_PURGE_DELAY_MS", "250")]);
    assert_eq!(purge_delay(&stdout), 250);
    assert!(!stderr.contains("vmarena:"), "unexpected output: {stderr}");
}

fn an_invalid_value_is_reported_and_ignored() {
    let (stdout, stderr) = run("plain", &[("VMARENA_PURGE_DELAY_MS", "abc")]);
    assert_eq!(purge_delay(&stdout), 1000, "the default is in effect");
    let expected =
        "vmarena: ignoring VMARENA_PURGE_DELAY_MS=abc (expected milliseconds, a whole number)\n";
    assert_eq!(stderr, expected, "reported once, alone");

    let (_, stderr) = run("plain", &[("VMARENA_PURGE_THREAD", "yes")]);
    assert_eq!(
        stderr,
        "vmarena: ignoring VMARENA_PURGE_THREAD=yes (expected 0 or 1)\n"
    );
}

fn an_unknown_name_is_reported() {
    let (stdout, stderr) = run("plain", &[("VMARENA_FOO", "1"), ("VMARENA_TEST_KNOB", "1")]);
    assert_eq!(purge_delay(&stdout), 1000);
    assert!(
        stderr.contains("vmarena: ignoring unknown VMARENA_FOO "),
        "not reported: {stderr}"
    );
    assert!(!stderr.contains("VMARENA_TEST_KNOB"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn show_stats_prints_the_report_at_exit() {
    let (stdout, stderr) = run("plain", &[("VMARENA_SHOW_STATS", "1")]);
    assert_eq!(purge_delay(&stdout), 1000);
    assert!(
        stderr.starts_with("vmarena: at exit: vmarena statistics\n"),
        "no report: {stderr}"
    );
    // The whole report, up to its last line (and the threads this child started: main).
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("  threads") && last.contains("started"),
        "{stderr}"
    );
    assert!(stderr.contains("  in use "), "{stderr}");
    let (_, quiet) = run("plain", &[("VMARENA_SHOW_STATS", "0")]);
    assert_eq!(quiet, "", "no report unless asked for");
}

fn verbose_prints_the_options_and_out_of_memory() {
    let (stdout, stderr) = run(
        "fail",
        &[("VMARENA_VERBOSE", "1"), ("VMARENA_PURGE_DELAY_MS", "300")],
    );
    assert_eq!(purge_delay(&stdout), 300);
    for option in [
        "VMARENA_PURGE_DELAY_MS=300 ms (set)",
        "VMARENA_PURGE_THREAD=0 (default)",
        "VMARENA_STATS=0 (default)",
        "VMARENA_SHOW_STATS=0 (default)",
        "VMARENA_VERBOSE=1 (set)",
        "VMARENA_VERIFY=0 (default)",
        "VMARENA_CHECKED=",
    ] {
        let line = format!("vmarena: {option}");
        assert!(
            stderr.lines().filter(|l| l.starts_with(&line)).count() == 1,
            "{option} not listed once: {stderr}"
        );
    }
    // Five failed allocations, three warnings.
    let warnings = stderr
        .lines()
        .filter(|l| l.starts_with("vmarena: out of memory: "))
        .count();
    assert_eq!(warnings, 3, "{stderr}");

    let (_, quiet) = run("fail", &[]);
    assert_eq!(quiet, "", "silent without VMARENA_VERBOSE");
}

fn main() {
    if let Ok(case) = std::env::var(CHILD) {
        child(&case);
        return;
    }
    let cases: [(&str, fn()); 5] = [
        (
            "a_valid_value_is_used_silently",
            a_valid_value_is_used_silently,
        ),
        (
            "an_invalid_value_is_reported_and_ignored",
            an_invalid_value_is_reported_and_ignored,
        ),
        ("an_unknown_name_is_reported", an_unknown_name_is_reported),
        (
            "show_stats_prints_the_report_at_exit",
            show_stats_prints_the_report_at_exit,
        ),
        (
            "verbose_prints_the_options_and_out_of_memory",
            verbose_prints_the_options_and_out_of_memory,
        ),
    ];
    for (name, case) in cases {
        case();
        println!("test {name} ... ok");
    }
}
