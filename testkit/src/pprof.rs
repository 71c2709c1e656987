//! Reading heap profiles back in tests: a small decoder of the pprof format (gzip, then the
//! protobuf fields the checks need), and `go tool pprof` itself, whose `-top -cum` table gives
//! each function's share once it has symbolized the profile from the binaries.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// What the checks read from a profile without symbolizing it.
#[derive(Debug, Default)]
pub struct Profile {
    /// The sample types, `type/unit`, in order.
    pub sample_types: Vec<String>,
    /// The sampling period and its type.
    pub period: i64,
    pub period_type: String,
    /// Per sample type, the sum over all samples.
    pub totals: Vec<i64>,
    pub samples: usize,
    pub locations: usize,
    /// The mappings' file names.
    pub mappings: Vec<String>,
    /// The string the default sample type names.
    pub default_sample_type: String,
    pub drop_frames: String,
}

fn varint(data: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = data[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// The fields of a message: (field number, varint value or bytes).
fn fields(data: &[u8]) -> Vec<(u64, Result<u64, &[u8]>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let key = varint(data, &mut at);
        match key & 7 {
            0 => out.push((key >> 3, Ok(varint(data, &mut at)))),
            2 => {
                let len = varint(data, &mut at) as usize;
                out.push((key >> 3, Err(&data[at..at + len])));
                at += len;
            }
            wire => panic!("wire type {wire} not used by pprof"),
        }
    }
    out
}

fn packed(data: &[u8]) -> Vec<u64> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < data.len() {
        out.push(varint(data, &mut at));
    }
    out
}

/// The files in `dir` whose names start with `prefix` (profiles a process wrote with `%p` in
/// their names, so the test does not know them in full).
pub fn files_named(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// Decodes the gzip-compressed pprof profile at `path`.
pub fn read(path: &Path) -> Profile {
    let gz = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .expect("a gzip stream");
    let top = fields(&raw);
    let strings: Vec<String> = top
        .iter()
        .filter(|(f, _)| *f == 6)
        .map(|(_, v)| String::from_utf8_lossy(v.as_ref().err().unwrap()).into_owned())
        .collect();
    let value_type = |m: &[u8]| {
        let f = fields(m);
        let get = |n| {
            f.iter()
                .find(|(k, _)| *k == n)
                .map_or(0, |(_, v)| *v.as_ref().unwrap())
        };
        format!("{}/{}", strings[get(1) as usize], strings[get(2) as usize])
    };
    let mut p = Profile::default();
    for (field, value) in &top {
        match (field, value) {
            (1, Err(m)) => p.sample_types.push(value_type(m)),
            (11, Err(m)) => p.period_type = value_type(m),
            (12, Ok(v)) => p.period = *v as i64,
            (14, Ok(v)) => p.default_sample_type = strings[*v as usize].clone(),
            (7, Ok(v)) => p.drop_frames = strings[*v as usize].clone(),
            (4, Err(_)) => p.locations += 1,
            (3, Err(m)) => {
                let f = fields(m);
                let name = f
                    .iter()
                    .find(|(k, _)| *k == 5)
                    .map_or(0, |(_, v)| *v.as_ref().unwrap());
                p.mappings.push(strings[name as usize].clone());
            }
            (2, Err(m)) => {
                p.samples += 1;
                for (k, v) in fields(m) {
                    if k == 2 {
                        let values = packed(v.err().unwrap());
                        p.totals.resize(values.len().max(p.totals.len()), 0);
                        for (t, v) in p.totals.iter_mut().zip(values) {
                            *t += v as i64;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    p
}

/// Whether `go` (for `go tool pprof`) is on the path.
pub fn go_available() -> bool {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the pprof checks must run (CI installs Go and sets `VMARENA_TEST_REQUIRE_PPROF=1`);
/// elsewhere they are skipped, with a message, when `go` is missing.
pub fn pprof_required() -> bool {
    std::env::var_os("VMARENA_TEST_REQUIRE_PPROF").is_some_and(|v| v == "1")
}

/// Each function's cumulative value of `sample_index` (bytes for `*_space`, objects for
/// `*_objects`), as `go tool pprof -top -cum` reports it after symbolizing `profile` against
/// `binary`; `None` if `go` is missing and not required.
pub fn top(binary: &Path, profile: &Path, sample_index: &str) -> Option<HashMap<String, f64>> {
    if !go_available() {
        assert!(
            !pprof_required(),
            "`go` not found, and VMARENA_TEST_REQUIRE_PPROF=1 (install golang-go)"
        );
        eprintln!("skipping the `go tool pprof` checks: `go` not found (install golang-go)");
        return None;
    }
    let unit = if sample_index.ends_with("space") {
        "-unit=B"
    } else {
        "-unit=count"
    };
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-cum", "-nodecount=100000", unit])
        .arg(format!("-sample_index={sample_index}"))
        .arg(binary)
        .arg(profile)
        .output()
        .expect("go tool pprof runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let number = |s: &str| s.trim_end_matches('B').parse::<f64>().ok();
    let mut cum = HashMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 {
            continue;
        }
        if let (Some(_flat), Some(c)) = (number(cols[0]), number(cols[3])) {
            cum.insert(cols[5..].join(" "), c);
        }
    }
    assert!(!cum.is_empty(), "no table in pprof's output:\n{text}");
    Some(cum)
}

/// `cum[function]` is within `tolerance` (a fraction) of `expected`; says what it found.
pub fn assert_near(cum: &HashMap<String, f64>, function: &str, expected: f64, tolerance: f64) {
    let got = cum
        .iter()
        .find(|(name, _)| name.as_str() == function || name.ends_with(&format!("::{function}")))
        .map_or(0.0, |(_, v)| *v);
    let error = (got - expected).abs() / expected;
    assert!(
        error <= tolerance,
        "{function}: {got:.0} against {expected:.0} expected ({:.1}% off, {:.0}% allowed); table: {cum:?}",
        100.0 * error,
        100.0 * tolerance
    );
    eprintln!(
        "{function}: {got:.0} against {expected:.0} ({:+.1}%)",
        100.0 * (got - expected) / expected
    );
}
