//! What the options make vmarena say on stderr: warnings about the environment, the options
//! in effect (`VMARENA_VERBOSE=1`), warnings while running, and the statistics report at exit
//! (`VMARENA_SHOW_STATS=1`). Nothing here allocates (see `crate::stderr`).
//!
//! Layer: `options`; calls `stderr` and `sync::atomic`, and `crate::stats()` for the report at
//! exit.

use super::{Kind, Opt, Spec, TABLE};
use crate::stderr::{Stderr, line};
use crate::sync::atomic::{AtomicU32, Ordering};

/// `VMARENA_X=value` is not a valid value: say so (the default is used).
pub(super) fn invalid(spec: &Spec, value: &[u8]) {
    let mut out = Stderr::new();
    out.bytes(b"vmarena: ignoring ");
    out.bytes(spec.name.to_bytes());
    out.bytes(b"=");
    out.bytes(value);
    out.bytes(b" (");
    out.bytes(spec.kind.expected().as_bytes());
    out.bytes(b")\n");
}

/// `VMARENA_X` is no option of ours.
pub(super) fn unknown(name: &[u8]) {
    let mut out = Stderr::new();
    out.bytes(b"vmarena: ignoring unknown ");
    out.bytes(name);
    out.bytes(b" (not a vmarena option; see README.md for the list)\n");
}

/// Lists every option with the value in effect.
pub(super) fn options_in_effect() {
    for spec in &TABLE {
        let value = super::value(spec.opt);
        let note = if spec.opt == Opt::Checked && super::checked() && value == 0 {
            "cargo feature `checked`"
        } else if value == spec.default {
            "default"
        } else {
            "set"
        };
        let shown = if spec.opt == Opt::Checked {
            u64::from(super::checked())
        } else {
            value
        };
        let unit = match spec.kind {
            Kind::Millis => " ms",
            Kind::Bytes => " bytes",
            _ => "",
        };
        let name = spec.name.to_str().unwrap_or("?");
        if spec.kind == Kind::Path {
            // The path itself (the table keeps only whether it is set).
            let path = super::profile_out().map_or("(unset)", |p| {
                core::str::from_utf8(p).unwrap_or("(not UTF-8)")
            });
            line(format_args!("{name}={path} ({note}): {}", spec.meaning));
            continue;
        }
        line(format_args!(
            "{name}={shown}{unit} ({note}): {}",
            spec.meaning
        ));
    }
}

/// Warnings of one kind are printed this many times at most: a program that keeps failing
/// must not flood stderr.
const MAX_WARNINGS: u32 = 3;

static OUT_OF_MEMORY_WARNINGS: AtomicU32 = AtomicU32::new(0);

/// An allocation returns null to its caller (`VMARENA_VERBOSE=1`: say so, a few times).
#[cold]
pub(crate) fn out_of_memory() {
    if !super::verbose() {
        return;
    }
    // Relaxed: a counter of messages; nothing is published through it. Once it is full no
    // more is added, so it never wraps round to print again.
    if OUT_OF_MEMORY_WARNINGS.load(Ordering::Relaxed) >= MAX_WARNINGS {
        return;
    }
    let n = OUT_OF_MEMORY_WARNINGS.fetch_add(1, Ordering::Relaxed);
    if n < MAX_WARNINGS {
        let last = if n + 1 == MAX_WARNINGS {
            " (no more of these warnings)"
        } else {
            ""
        };
        line(format_args!(
            "out of memory: an allocation returned null (ENOMEM) to its caller{last}"
        ));
    }
}

/// The purger thread could not be started (`VMARENA_VERBOSE=1`: say so; it is not retried).
#[cold]
pub(crate) fn purger_not_started() {
    if super::verbose() {
        line(format_args!(
            "could not start the purger thread (VMARENA_PURGE_THREAD=1): purges run from the \
             allocator's own paths only"
        ));
    }
}

/// At exit (or when this copy of vmarena is unloaded): the statistics report, if asked for.
extern "C" fn at_exit() {
    if super::show_stats() {
        let stats = crate::stats();
        line(format_args!("at exit: {stats}"));
    }
}

// `.fini_array` runs at exit, after `main` returns or `exit` is called, in Rust programs and
// C programs alike (and for `libvmarena.so` when it is preloaded); `atexit` could allocate.
#[used]
#[unsafe(link_section = ".fini_array")]
static AT_EXIT: extern "C" fn() = at_exit;
