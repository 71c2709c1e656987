//! Every `VMARENA_*` environment variable, in one table ([`TABLE`]), read once: at the first
//! allocation (a thread's heap bring-up, or a large block), or when `libvmarena.so` loads,
//! whichever comes first. An invalid value is reported on stderr and the default used; so is
//! a `VMARENA_*` name that is not in the table (a misspelt option would otherwise be silently
//! ignored). Names starting with `VMARENA_TEST_` belong to the test suite and are left alone.
//!
//! Reading never allocates or takes a lock (getenv, parsing, and `write(2)` for warnings): it
//! runs inside the first `malloc`. The first reader moves the state from unread to reading,
//! stores every value and publishes them; a thread that finds the state "reading" (another
//! thread is at it, or a signal handler interrupted this thread's read) parses the option it
//! wants for itself, quietly, rather than wait for a reader that may never get to run.
//!
//! README.md documents the same table; a test checks that the two agree.
//!
//! Layer: a leaf service any layer may read; calls `sync::atomic` and its own submodules.

mod environ;
mod parse;
pub(crate) mod report;

use core::ffi::CStr;

pub(crate) use parse::Kind;
use parse::parse;

use crate::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// One option: its variable, the kind of value it takes, its default, what it does.
pub(crate) struct Spec {
    pub(crate) opt: Opt,
    pub(crate) name: &'static CStr,
    pub(crate) kind: Kind,
    pub(crate) default: u64,
    pub(crate) meaning: &'static str,
}

/// The options, in [`TABLE`]'s order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Opt {
    PurgeDelayMs,
    PurgeThread,
    Stats,
    ShowStats,
    Verbose,
    Checked,
    Verify,
    Thp,
    Profile,
    ProfileSample,
    ProfileOut,
}

const COUNT: usize = 11;

pub(crate) const TABLE: [Spec; COUNT] = [
    Spec {
        opt: Opt::PurgeDelayMs,
        name: c"VMARENA_PURGE_DELAY_MS",
        kind: Kind::Millis,
        // mimalloc v3 waits 1 s (v2: 100 ms), jemalloc 10 s.
        default: 1000,
        meaning: "how long freed memory stays before it is given back to the OS",
    },
    Spec {
        opt: Opt::PurgeThread,
        name: c"VMARENA_PURGE_THREAD",
        kind: Kind::Flag,
        default: 0,
        meaning: "a background thread purges when due, even in a program gone quiet",
    },
    Spec {
        opt: Opt::Stats,
        name: c"VMARENA_STATS",
        kind: Kind::Flag,
        default: 0,
        meaning: "count requested bytes from the start (stats().bytes_requested)",
    },
    Spec {
        opt: Opt::ShowStats,
        name: c"VMARENA_SHOW_STATS",
        kind: Kind::Flag,
        default: 0,
        meaning: "print the statistics report on stderr at exit",
    },
    Spec {
        opt: Opt::Verbose,
        name: c"VMARENA_VERBOSE",
        kind: Kind::Flag,
        default: 0,
        meaning: "print the options at start-up, and warnings (out of memory) on stderr",
    },
    Spec {
        opt: Opt::Checked,
        name: c"VMARENA_CHECKED",
        kind: Kind::Flag,
        default: 0,
        meaning: "checked mode: validate free-list links (also the cargo feature `checked`)",
    },
    Spec {
        opt: Opt::Verify,
        name: c"VMARENA_VERIFY",
        kind: Kind::Flag,
        default: 0,
        meaning: "libvmarena.so says on stderr that it is the allocator when it loads",
    },
    Spec {
        opt: Opt::Thp,
        name: c"VMARENA_THP",
        kind: Kind::Thp,
        default: 1,
        meaning: "huge pages: 0 never asked for, 1 where they fill densely, 2 for all memory",
    },
    Spec {
        opt: Opt::Profile,
        name: c"VMARENA_PROFILE",
        kind: Kind::Flag,
        default: 0,
        meaning: "heap profiling: sample allocations from the start",
    },
    Spec {
        opt: Opt::ProfileSample,
        name: c"VMARENA_PROFILE_SAMPLE",
        kind: Kind::Bytes,
        default: crate::config::PROFILE_INTERVAL,
        meaning: "heap profiling: one sample per this many bytes allocated, on average",
    },
    Spec {
        opt: Opt::ProfileOut,
        name: c"VMARENA_PROFILE_OUT",
        kind: Kind::Path,
        default: 0,
        meaning: "heap profiling: write the profile (pprof, gzip) to this path at exit",
    },
];

// The table is indexed by `Opt`: check the order at compile time.
const _: () = {
    let mut i = 0;
    while i < COUNT {
        assert!(TABLE[i].opt as usize == i);
        i += 1;
    }
};

/// Names with this prefix are the test suite's knobs, not options.
const TEST_PREFIX: &[u8] = b"VMARENA_TEST_";

const UNREAD: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);
static VALUES: [AtomicU64; COUNT] = [const { AtomicU64::new(0) }; COUNT];

/// The value of `opt`, reading the environment first if no one has.
#[inline]
fn value(opt: Opt) -> u64 {
    // Acquire: pairs with the Release in `read_all`, which follows the stores of the values.
    if STATE.load(Ordering::Acquire) == READ {
        // Relaxed: published by the Acquire load above.
        return VALUES[opt as usize].load(Ordering::Relaxed);
    }
    read_or_peek(opt)
}

/// Reads the environment now if no one has (the first allocation calls this).
#[inline]
pub(crate) fn read_once() {
    let _ = value(Opt::Verbose);
}

#[cold]
#[inline(never)]
fn read_or_peek(opt: Opt) -> u64 {
    // Relaxed: winning only decides who reads; the values are published by `read_all`'s
    // Release store.
    if environ::ready()
        && STATE
            .compare_exchange(UNREAD, READING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        read_all();
        // Relaxed: this thread stored it.
        return VALUES[opt as usize].load(Ordering::Relaxed);
    }
    // Someone else is reading, or just finished, or the environment is not set up yet:
    // this option's value for this call, without warnings (the reader gives those).
    let spec = &TABLE[opt as usize];
    environ::get(spec.name)
        .and_then(|bytes| parse(spec.kind, bytes))
        .unwrap_or(spec.default)
}

/// The first reader: parses every option (warning about invalid values), warns about unknown
/// names, publishes the values, and lists them if `VMARENA_VERBOSE=1`.
fn read_all() {
    for spec in &TABLE {
        let value = match environ::get(spec.name) {
            None => spec.default,
            Some(bytes) => parse(spec.kind, bytes).unwrap_or_else(|| {
                report::invalid(spec, bytes);
                spec.default
            }),
        };
        // Relaxed: published by the Release store below.
        VALUES[spec.opt as usize].store(value, Ordering::Relaxed);
    }
    environ::names_with_prefix(b"VMARENA_", |name| {
        let known = TABLE.iter().any(|spec| spec.name.to_bytes() == name);
        if !known && !name.starts_with(TEST_PREFIX) {
            report::unknown(name);
        }
    });
    // Release: pairs with the Acquire in `value`: the values above are seen with the state.
    STATE.store(READ, Ordering::Release);
    if verbose() {
        report::options_in_effect();
    }
}

/// In a forked child: a read another thread had begun will never end there; the next use
/// reads again.
pub(crate) fn reset_after_fork_child() {
    // Relaxed: the child's only thread.
    if STATE.load(Ordering::Relaxed) == READING {
        STATE.store(UNREAD, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------ typed getters

/// `VMARENA_PURGE_DELAY_MS`: the purge delay the arena starts with.
pub(crate) fn purge_delay_ms() -> u64 {
    value(Opt::PurgeDelayMs)
}

/// `VMARENA_PURGE_THREAD=1`: the opt-in purger thread.
pub(crate) fn purge_thread() -> bool {
    value(Opt::PurgeThread) != 0
}

/// `VMARENA_STATS=1`: count requested bytes from the first allocation.
pub(crate) fn count_requested() -> bool {
    value(Opt::Stats) != 0
}

/// `VMARENA_SHOW_STATS=1`: the statistics report on stderr at exit.
pub(crate) fn show_stats() -> bool {
    value(Opt::ShowStats) != 0
}

/// `VMARENA_VERBOSE=1`: the options at start-up, and warnings.
pub(crate) fn verbose() -> bool {
    value(Opt::Verbose) != 0
}

/// The checked mode: `VMARENA_CHECKED=1`, or always with the cargo feature `checked`.
pub(crate) fn checked() -> bool {
    cfg!(feature = "checked") || value(Opt::Checked) != 0
}

/// `VMARENA_VERIFY=1`: the C library announces itself when it loads.
pub(crate) fn verify() -> bool {
    value(Opt::Verify) != 0
}

/// `VMARENA_THP`: 0 (no huge pages asked for), 1 (where they fill densely), 2 (everywhere).
pub(crate) fn thp() -> u64 {
    value(Opt::Thp)
}

/// Heap profiling from the start: `VMARENA_PROFILE=1`, or a path in `VMARENA_PROFILE_OUT`.
pub(crate) fn profile() -> bool {
    value(Opt::Profile) != 0 || value(Opt::ProfileOut) != 0
}

/// `VMARENA_PROFILE_SAMPLE`: the mean distance between samples, in bytes allocated.
pub(crate) fn profile_interval() -> u64 {
    value(Opt::ProfileSample)
}

/// `VMARENA_PROFILE_OUT`: where the profile goes at exit (`%p`: the process id), if set.
/// Read from the environment when asked (a path does not fit the table's numbers).
pub(crate) fn profile_out() -> Option<&'static [u8]> {
    if value(Opt::ProfileOut) == 0 {
        return None;
    }
    environ::get(TABLE[Opt::ProfileOut as usize].name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn names_are_unique_and_prefixed() {
        for (i, a) in TABLE.iter().enumerate() {
            let name = a.name.to_bytes();
            assert!(name.starts_with(b"VMARENA_") && !name.starts_with(TEST_PREFIX));
            for b in &TABLE[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn defaults_are_valid_values() {
        for spec in &TABLE {
            if spec.kind == Kind::Path {
                continue; // no default path: unset
            }
            let mut text = [0u8; 20];
            let digits = format_u64(spec.default, &mut text);
            assert_eq!(
                parse(spec.kind, digits),
                Some(spec.default),
                "{:?}",
                spec.opt
            );
        }
    }

    fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return &buf[i..];
            }
        }
    }

    /// README.md's table of environment variables lists exactly the options of [`TABLE`],
    /// with their values and defaults.
    #[test]
    fn readme_documents_every_option() {
        let readme = include_str!("../../README.md");
        let mut rows: Vec<Vec<&str>> = readme
            .lines()
            .filter(|line| line.starts_with("| `VMARENA_"))
            .map(|line| line.split('|').map(str::trim).skip(1).collect())
            .collect();
        rows.sort_by_key(|row| row[0].trim_matches('`'));
        let mut ours: Vec<&Spec> = TABLE.iter().collect();
        ours.sort_by_key(|s| s.name);
        assert_eq!(rows.len(), ours.len(), "README rows: {rows:?}");
        for (row, spec) in rows.iter().zip(ours) {
            assert_eq!(row[0].trim_matches('`'), spec.name.to_str().unwrap());
            let values = match spec.kind {
                Kind::Flag => "0 or 1",
                Kind::Millis => "milliseconds, a whole number",
                Kind::Thp => "0, 1 or 2",
                Kind::Bytes => "bytes, a whole number",
                Kind::Path => "a file path",
            };
            assert_eq!(row[1], values, "{:?}", spec.opt);
            assert_eq!(row[2], std::format!("{}", spec.default), "{:?}", spec.opt);
        }
    }

    /// First reads that race: each thread gets the environment's value, whether it read the
    /// table itself, found a read in progress, or came after; the table ends up read.
    #[test]
    fn racing_first_reads_agree() {
        let expected = |spec: &Spec| {
            environ::get(spec.name)
                .and_then(|b| parse(spec.kind, b))
                .unwrap_or(spec.default)
        };
        for _ in 0..50 {
            // Relaxed: other tests that read now just parse for themselves, as racers do.
            STATE.store(UNREAD, Ordering::Relaxed);
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for t in 0..8 {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let spec = &TABLE[t % COUNT];
                        assert_eq!(value(spec.opt), expected(spec), "{:?}", spec.opt);
                    });
                }
            });
            // Relaxed: the threads that read were joined.
            assert_eq!(STATE.load(Ordering::Relaxed), READ);
            for spec in &TABLE {
                assert_eq!(value(spec.opt), expected(spec), "{:?}", spec.opt);
            }
        }
    }

    #[test]
    fn getters_agree_with_the_environment_of_this_process() {
        // The unit-test process is run without VMARENA_* options (or with valid ones): each
        // getter gives what the table's parse of the environment gives.
        for spec in &TABLE {
            let expected = environ::get(spec.name)
                .and_then(|b| parse(spec.kind, b))
                .unwrap_or(spec.default);
            assert_eq!(value(spec.opt), expected, "{:?}", spec.opt);
        }
    }
}
