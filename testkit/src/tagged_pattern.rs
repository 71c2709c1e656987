//! A pattern derived from a tag of the allocation (not its address, which a block handed to
//! two threads at once would share): the block's first 8 bytes hold the tag itself, the rest a
//! byte pattern whose phase the tag sets. Blocks up to [`FULL`] bytes carry it in full; larger
//! ones in [`WINDOW`]-byte windows at the start, the end and about [`SAMPLES`] places between
//! (so a 32 MiB block touches a few dozen pages, not all of them). Filling and checking copy
//! from and compare against one static pattern with `memcpy`/`memcmp`, which a fuzzer does not
//! instrument: a byte loop, instrumented, took most of a fuzz run's time.

use std::sync::OnceLock;

/// Blocks up to this size carry the pattern in full.
pub const FULL: usize = 64 << 10;
/// The window size of larger blocks.
pub const WINDOW: usize = 256;
/// About this many windows between the first and the last.
pub const SAMPLES: usize = 32;
/// The pattern repeats with this (prime) period; a block's tag sets its phase.
const PERIOD: usize = 251;
/// The tag's bytes at the start of the block.
const STAMP: usize = 8;

/// The pattern, long enough for any full block at any phase.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..FULL + PERIOD)
            .map(|i| ((i % PERIOD) as u8).wrapping_mul(97) ^ 0x5A)
            .collect()
    })
}

/// The `(offset, length)` windows of a `len`-byte block that carry the pattern.
fn windows(len: usize) -> impl Iterator<Item = (usize, usize)> {
    let full = len <= FULL;
    let step = (len / SAMPLES).max(WINDOW);
    let sampled = (!full).then(|| {
        (0..len)
            .step_by(step)
            .map(move |o| (o, WINDOW.min(len - o)))
    });
    let tail = (!full).then(|| (len - WINDOW, WINDOW));
    full.then_some((0, len))
        .into_iter()
        .chain(sampled.into_iter().flatten())
        .chain(tail)
}

fn expected(tag: u64, offset: usize, n: usize) -> &'static [u8] {
    let phase = ((tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize + offset) % PERIOD;
    &pattern()[phase..phase + n]
}

/// Fills a `len`-byte block at `ptr` with the pattern of `tag`.
///
/// # Safety
/// `ptr` is valid for `len` bytes of writes.
pub unsafe fn fill(ptr: *mut u8, len: usize, tag: u64) {
    for (o, n) in windows(len) {
        // SAFETY: o + n <= len.
        unsafe { std::ptr::copy_nonoverlapping(expected(tag, o, n).as_ptr(), ptr.add(o), n) };
    }
    let stamp = tag.to_le_bytes();
    // SAFETY: at most `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(stamp.as_ptr(), ptr, len.min(STAMP)) };
}

/// Checks the first `upto` bytes of a block filled as `len` bytes with `tag`; panics at the
/// first byte that differs.
///
/// # Safety
/// `ptr` is valid for `upto` bytes of reads.
pub unsafe fn check(ptr: *const u8, len: usize, upto: usize, tag: u64) {
    let stamp = len.min(STAMP).min(upto);
    // SAFETY: stamp <= upto.
    let got = unsafe { std::slice::from_raw_parts(ptr, stamp) };
    if got != &tag.to_le_bytes()[..stamp] {
        let mut was = [0u8; 8];
        was[..stamp].copy_from_slice(got);
        panic!(
            "block {ptr:p} ({len} bytes) holds tag {:#x}, not {tag:#x}: another allocation's block?",
            u64::from_le_bytes(was)
        );
    }
    for (o, n) in windows(len) {
        // The stamp was checked above.
        let (o, n) = if o < STAMP {
            (STAMP.min(o + n), n.saturating_sub(STAMP - o))
        } else {
            (o, n)
        };
        let n = n.min(upto.saturating_sub(o));
        if n == 0 {
            continue;
        }
        // SAFETY: o + n <= upto.
        let got = unsafe { std::slice::from_raw_parts(ptr.add(o), n) };
        let want = expected(tag, o, n);
        if got != want {
            let at = (0..n).find(|&i| got[i] != want[i]).unwrap();
            panic!(
                "block {ptr:p} ({len} bytes, tag {tag:#x}) corrupted at byte {}",
                o + at
            );
        }
    }
}

/// The first byte in the pattern's windows of a `len`-byte block that is not zero, with its
/// value (to check zeroed blocks).
///
/// # Safety
/// `ptr` is valid for `len` bytes of reads.
pub unsafe fn first_nonzero(ptr: *const u8, len: usize) -> Option<(usize, u8)> {
    static ZEROS: [u8; FULL] = [0; FULL];
    for (o, n) in windows(len) {
        // SAFETY: o + n <= len.
        let got = unsafe { std::slice::from_raw_parts(ptr.add(o), n) };
        if got != &ZEROS[..n] {
            let at = got.iter().position(|&b| b != 0).unwrap();
            return Some((o + at, got[at]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_block_checks_and_any_changed_byte_or_other_tag_is_caught() {
        for len in [1, 7, 8, 9, 300, FULL, FULL + 1, 3 * FULL + 17] {
            let mut block = vec![0u8; len];
            // SAFETY: (whole test) `block` has `len` bytes.
            unsafe {
                assert_eq!(first_nonzero(block.as_ptr(), len), None);
                fill(block.as_mut_ptr(), len, 0xfeed);
                check(block.as_ptr(), len, len, 0xfeed);
                check(block.as_ptr(), len, len / 2, 0xfeed);
            }
            let other = std::panic::catch_unwind(|| {
                // SAFETY: as above.
                unsafe { check(block.as_ptr(), len, len, 0xbeef) }
            });
            assert!(other.is_err(), "{len} bytes: another tag passed");
            for at in [0, len / 2, len - 1] {
                let mut copy = block.clone();
                copy[at] ^= 1;
                let caught = std::panic::catch_unwind(|| {
                    // SAFETY: as above.
                    unsafe { check(copy.as_ptr(), len, len, 0xfeed) }
                });
                // Bytes between the windows of a large block are not checked.
                let in_window = len <= FULL || at < WINDOW || at >= len - WINDOW;
                assert!(
                    caught.is_err() || !in_window,
                    "{len} bytes: a flip at {at} passed"
                );
            }
        }
    }
}
