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
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let target = workspace.join("target").join("preload-lib");
            let status = Command::new(env!("CARGO"))
                .current_dir(workspace)
                .args(["build", "--release", "-p", "vmarena-c", "--target-dir"])
                .arg(&target)
                .status()
                .expect("cannot run cargo to build libvmarena.so");
            assert!(status.success(), "building libvmarena.so failed: {status}");
            let lib = target.join("release").join("libvmarena.so");
            assert!(lib.exists(), "{} not built", lib.display());
            lib
        })
        .clone()
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
