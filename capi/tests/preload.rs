//! libvmarena.so in real processes: a C program that covers every exported function's edge
//! cases and forks while other threads allocate, and real programs (python3, sort, git, perl)
//! whose output must be the same with and without `LD_PRELOAD=libvmarena.so`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// libvmarena.so, built once per test run. `cargo test` builds a cdylib-only package's tests
/// without producing the `.so` itself, so the test builds it, in a target directory of its own
/// (the outer cargo holds the lock on the usual one while tests run).
fn library() -> PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY
        .get_or_init(|| build_cdylib("vmarena-c", "libvmarena.so"))
        .clone()
}

/// Builds the cdylib package `package` of this workspace (release) and returns its `.so`.
fn build_cdylib(package: &str, file: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = workspace.join("target").join("preload-lib");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args(["build", "--release", "-p", package, "--target-dir"])
        .arg(&target)
        .status()
        .expect("cannot run cargo to build a cdylib");
    assert!(status.success(), "building {package} failed: {status}");
    let lib = target.join("release").join(file);
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmarena-preload-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd`, with the library preloaded if `preload`; panics if it fails. Returns stdout.
fn run(mut cmd: Command, preload: bool) -> Output {
    if preload {
        cmd.env("LD_PRELOAD", library()).env("VMARENA_VERIFY", "1");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} (preload: {preload}) failed: {:?}\n{stderr}",
        out.status
    );
    if preload {
        assert!(
            stderr.contains("libvmarena.so is the allocator"),
            "the preload did not take: {stderr}"
        );
    }
    out
}

/// Runs a program both ways and checks the outputs are identical.
fn same_output(make: impl Fn() -> Command) -> String {
    let plain = run(make(), false);
    let preloaded = run(make(), true);
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&preloaded.stdout),
        "output differs under LD_PRELOAD"
    );
    String::from_utf8_lossy(&preloaded.stdout).into_owned()
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_c_api_behaves_like_glibc_and_survives_fork() {
    let dir = scratch("c");
    let exe = dir.join("api_test");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/api_test.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-O1", "-pthread", "-Wno-alloc-size-larger-than", "-o"])
        .arg(&exe)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "compiling {}", source.display());
    let out = run(Command::new(&exe), true);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn python_with_threads() {
    assert!(have("python3"), "python3 is needed");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workload.py");
    let out = same_output(|| {
        let mut c = Command::new("python3");
        c.arg(&script);
        c
    });
    assert_eq!(out.lines().count(), 8);
}

#[test]
fn sort_a_large_file() {
    let dir = scratch("sort");
    let file = dir.join("lines.txt");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut text = String::new();
    for i in 0..300_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!(
            "{:016x} line {i} {}\n",
            x,
            "z".repeat((x % 40) as usize)
        ));
    }
    std::fs::write(&file, text).unwrap();
    let out = same_output(|| {
        let mut c = Command::new("sort");
        c.arg(&file).env("LC_ALL", "C");
        c
    });
    assert_eq!(out.lines().count(), 300_000);
}

#[test]
fn git_init_add_commit() {
    assert!(have("git"), "git is needed");
    let log = same_output(|| {
        let dir = scratch("git");
        for i in 0..200 {
            std::fs::write(
                dir.join(format!("file{i}.txt")),
                format!("content {i}\n").repeat(i + 1),
            )
            .unwrap();
        }
        let script = "git init -q . && git add . && git commit -q -m 'first' && \
                      echo more >> file7.txt && git commit -q -am second && \
                      git log --format=%H%n%s && git count-objects -v | grep -v size";
        let mut c = Command::new("sh");
        c.args(["-c", script])
            .current_dir(&dir)
            .env("GIT_AUTHOR_NAME", "vmarena")
            .env("GIT_AUTHOR_EMAIL", "vmarena@example.com")
            .env("GIT_COMMITTER_NAME", "vmarena")
            .env("GIT_COMMITTER_EMAIL", "vmarena@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &dir);
        c
    });
    assert!(log.contains("first") && log.contains("second"));
}

#[test]
fn perl_builds_large_hashes() {
    assert!(have("perl"), "perl is needed");
    let script = r#"
my %h; my @a;
for my $i (1..400000) { $h{"key$i"} = [$i, "v" x ($i % 13)]; push @a, $i * 3 if $i % 3 == 0; }
my $sum = 0; $sum += $h{$_}[0] for keys %h;
delete $h{"key$_"} for 1..200000;
my %g = map { ($_ => scalar reverse $_) } @a;
print scalar(keys %h), " $sum ", scalar(keys %g), "\n";
"#;
    let out = same_output(|| {
        let mut c = Command::new("perl");
        c.arg("-e").arg(script);
        c
    });
    assert_eq!(out.trim(), "200000 80000200000 133333");
}

/// Compiles a C program of `tests/c` (once per test run) and returns its path.
fn c_program(name: &str, extra: &[&str]) -> PathBuf {
    let dir = scratch(&format!("cc-{name}"));
    let exe = dir.join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        // -fno-builtin: GCC otherwise assumes free leaves errno alone and drops the checks.
        .args(["-O1", "-g", "-pthread", "-Wall", "-fno-builtin", "-o"])
        .arg(&exe)
        .arg(&source)
        .args(extra)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "compiling {}", source.display());
    exe
}

fn hardening_test() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| c_program("hardening_test", &[])).clone()
}

/// Runs one case of `hardening_test.c` under the preload; returns its stderr.
fn hardening_case(args: &[&str]) -> String {
    let mut cmd = Command::new(hardening_test());
    cmd.args(args);
    let out = run(cmd, true);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn c_free_never_changes_errno() {
    hardening_case(&["errno"]);
}

#[test]
fn c_glibc_internal_names_and_introspection_are_vmarenas() {
    let stderr = hardening_case(&["symbols"]);
    assert!(
        stderr.contains("vmarena statistics") && stderr.contains("in use bytes"),
        "malloc_stats printed no report: {stderr}"
    );
}

#[test]
fn c_forked_children_start_threads_and_print_statistics() {
    hardening_case(&["fork-stats", "300"]);
}

#[test]
fn c_dlopen_and_dlclose_of_a_library_with_thread_locals() {
    let dir = scratch("tls-lib");
    let source = dir.join("libt.c");
    std::fs::write(
        &source,
        "__thread char buf[8192];\n__thread int counter = 5;\n\
         void touch(int i) { buf[i % 8192] = (char)i; counter += i; }\n",
    )
    .unwrap();
    let lib = dir.join("libt.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&source)
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success());
    hardening_case(&["dlopen-tls", lib.to_str().unwrap()]);
}

#[test]
fn c_free_of_an_interior_pointer_aborts_naming_it() {
    for case in ["interior16", "interior1"] {
        let out = Command::new(hardening_test())
            .arg(case)
            .env("LD_PRELOAD", library())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{case}: not aborted: {stdout} {stderr}"
        );
        let address = stdout
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("{case}: no address in {stdout}"));
        assert!(
            stderr.contains("invalid free") && stderr.contains(address.trim_start_matches("0x")),
            "{case}: message {stderr:?} does not name {address}"
        );
    }
}

/// glibc's advice for malloc replacements: initial-exec TLS only. A general-dynamic access
/// goes through `__tls_get_addr`, which glibc 2.39 and later may call `malloc` from.
#[test]
fn the_library_uses_only_initial_exec_tls() {
    let out = Command::new("readelf")
        .args(["-W", "-r", "--dyn-syms"])
        .arg(library())
        .output()
        .expect("readelf (binutils) is needed");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let dynamic: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("DTPMOD64") || l.contains("DTPOFF64") || l.contains("__tls_get_addr")
        })
        .collect();
    assert!(
        dynamic.is_empty(),
        "dynamic TLS in libvmarena.so: {dynamic:#?}"
    );
}

/// A Rust plugin (a cdylib with vmarena as its global allocator) that a host `dlclose`s
/// while threads that used it still run: when they exit, no hook of the unloaded plugin may
/// run (it would be code that is no longer mapped).
#[test]
fn a_rust_plugin_on_vmarena_can_be_unloaded() {
    let plugin = build_cdylib("vmarena-test-plugin", "libvmarena_test_plugin.so");
    let host = c_program("plugin_host", &[]);
    let mut cmd = Command::new(host);
    cmd.arg(plugin);
    let out = run(cmd, false);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// The options work in a C program: an invalid value is reported once (the options are read
/// once, however early the first `malloc` comes), and `VMARENA_SHOW_STATS=1` prints the
/// report when the program exits. (Perl: coreutils close stderr before they exit, and python3
/// may be a shell-script shim, whose every process would print.)
#[test]
fn options_under_ld_preload() {
    assert!(have("perl"), "perl is needed");
    let mut cmd = Command::new("perl");
    cmd.args(["-e", "print join(',', sort qw(b c a)), \"\\n\""])
        .env("VMARENA_SHOW_STATS", "1")
        .env("VMARENA_PURGE_DELAY_MS", "abc");
    let out = run(cmd, true);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a,b,c\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ignoring: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("vmarena: ignoring"))
        .collect();
    assert_eq!(
        ignoring,
        ["vmarena: ignoring VMARENA_PURGE_DELAY_MS=abc (expected milliseconds, a whole number)"],
        "{stderr}"
    );
    assert!(
        stderr.contains("vmarena: at exit: vmarena statistics\n"),
        "no report at exit: {stderr}"
    );
    assert!(
        stderr.lines().last().unwrap_or("").starts_with("  threads"),
        "the report is cut: {stderr}"
    );
}

fn misuse() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| c_program("misuse", &[])).clone()
}

/// How a run of `misuse.c` ended.
#[derive(Debug, PartialEq)]
enum Misuse {
    /// vmarena aborted with its message naming the address the case announced (if any).
    Refused(String),
    /// The program reached its end: the bug went unnoticed.
    Survived,
    /// A fault in the program's own code (or libc's), as with any allocator.
    FaultElsewhere,
    /// A fault inside vmarena: a corrupted block followed as if it were sound.
    FaultInVmarena,
    Other(String),
}

fn run_misuse(case: &str, size: usize, checked: bool) -> Misuse {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = Command::new(misuse());
    cmd.args([case, &size.to_string()])
        .env("LD_PRELOAD", library())
        .env_remove("VMARENA_CHECKED");
    if checked {
        cmd.env("VMARENA_CHECKED", "1");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match (out.status.code(), out.status.signal()) {
        (_, Some(libc::SIGABRT)) if stderr.contains("vmarena: ") => {
            let named = stdout
                .split_whitespace()
                .skip_while(|w| *w != "address")
                .nth(1)
                .is_none_or(|a| stderr.contains(a.trim_start_matches("0x")));
            let message = stderr.lines().find(|l| l.contains("vmarena: ")).unwrap();
            if named {
                Misuse::Refused(message.to_string())
            } else {
                Misuse::Other(format!(
                    "the abort does not name the address: {stdout} {stderr}"
                ))
            }
        }
        (Some(0), _) if stdout.contains("survived") => Misuse::Survived,
        (Some(77), _) => Misuse::FaultInVmarena,
        (Some(78), _) => Misuse::FaultElsewhere,
        _ => Misuse::Other(format!("{:?}: {stdout} {stderr}", out.status)),
    }
}

/// The classes of program bugs of mimalloc-bench's security suite, in this project's own
/// program (`tests/c/misuse.c`), at a small, a page-sized and a large block: every double or
/// invalid free aborts naming the address (36 of 36); no bug makes vmarena fault inside itself
/// in checked mode; by default, only writes that may overwrite a free block's link may (the
/// check that catches them costs 4 instructions on every malloc: `BENCHMARKS.md`, "Hardening").
#[test]
fn c_program_bugs_end_in_vmarenas_message_not_in_a_fault_inside_it() {
    const REFUSED: [&str; 12] = [
        "double-free",
        "double-free-after-work",
        "double-free-between",
        "double-free-then-work",
        "double-free-reused",
        "free-constant",
        "free-stack",
        "free-near",
        "free-far",
        "free-plus-1",
        "free-plus-8",
        "free-heap-alloca",
    ];
    const WRITES: [&str; 13] = [
        "overflow-1",
        "overflow-32",
        "overflow-1m",
        "underflow-1",
        "underflow-32",
        "underflow-1m",
        "copy-over-end",
        "copy-before-start",
        "write-after-free",
        "write-after-free-link",
        "zero-size-write",
        "impossible-size",
        "heap-not-executable",
    ];
    let mut failures = Vec::new();
    for size in [8, 4096, 256 << 10] {
        for checked in [false, true] {
            for case in REFUSED {
                let got = run_misuse(case, size, checked);
                if !matches!(got, Misuse::Refused(_)) {
                    failures.push(format!("{case} {size} checked={checked}: {got:?}"));
                }
            }
            for case in WRITES {
                let got = run_misuse(case, size, checked);
                // Any write outside a live block may land on a free block's link, depending on
                // what the process allocated before; by default the next malloc follows it.
                let may_hit_a_link = ["overflow", "underflow", "copy", "write-after"]
                    .iter()
                    .any(|class| case.starts_with(class));
                let ok = match &got {
                    Misuse::FaultInVmarena => !checked && may_hit_a_link,
                    Misuse::Other(_) => false,
                    Misuse::Survived => case != "heap-not-executable",
                    Misuse::FaultElsewhere => case != "impossible-size",
                    Misuse::Refused(_) => true,
                };
                if !ok {
                    failures.push(format!("{case} {size} checked={checked}: {got:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The heap profile of a C program under the preload: written at exit
/// (`VMARENA_PROFILE_OUT`) and by `vmarena_profile_dump`, both read back by `go tool pprof`,
/// which must attribute each function's bytes within 15% (see `tests/profile.rs` for the
/// Rust side; skipped without Go unless `VMARENA_TEST_REQUIRE_PPROF=1`).
#[test]
fn a_c_programs_heap_profile_names_its_functions() {
    use vmarena_testkit::pprof;
    let exe = c_program("profile_workload", &["-fno-optimize-sibling-calls"]);
    let dir = scratch("profile");
    let dumped = dir.join("dumped.pb.gz");
    let mut cmd = Command::new(&exe);
    cmd.arg("dump")
        .arg(&dumped)
        .env("VMARENA_PROFILE_OUT", dir.join("exit.%p.pb.gz"))
        .env("VMARENA_PROFILE_SAMPLE", "32768");
    run(cmd, true);
    let at_exit = pprof::files_named(&dir, "exit.")
        .pop()
        .expect("the profile written at exit");
    const MIB: f64 = (1 << 20) as f64;
    for profile in [&dumped, &at_exit] {
        let p = pprof::read(profile);
        assert_eq!(p.sample_types.len(), 4);
        let inuse = p.totals[3] as f64;
        assert!(
            (inuse - 113.0 * MIB).abs() / (113.0 * MIB) < 0.15,
            "in use {inuse}"
        );
        if let Some(top) = pprof::top(&exe, profile, "inuse_space") {
            pprof::assert_near(&top, "keep_64k_blocks", 64.0 * MIB, 0.15);
            pprof::assert_near(&top, "keep_256b_blocks", 32.0 * MIB, 0.15);
            pprof::assert_near(&top, "keep_4m_blocks", 16.0 * MIB, 0.15);
            let allocated = pprof::top(&exe, profile, "alloc_space").unwrap();
            pprof::assert_near(&allocated, "churn", 200e6, 0.15);
        }
    }
}
