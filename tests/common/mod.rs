//! Helpers shared by the integration tests: a small deterministic RNG, and fill patterns derived
//! from a block's address so that any overlap or corruption shows up when the block is checked.
#![allow(dead_code)]

use std::alloc::Layout;

/// xorshift64*: deterministic, allocation-free, good enough to pick sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The fill value of the 8-byte word at `offset` of a block at `addr`.
fn word(addr: usize, offset: usize) -> u64 {
    (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (offset as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// Fills `len` bytes at `ptr` with its address-derived pattern.
///
/// # Safety
/// `ptr` is valid for `len` bytes of writes.
pub unsafe fn fill(ptr: *mut u8, len: usize) {
    let addr = ptr as usize;
    // SAFETY: the caller guarantees `len` writable bytes at `ptr`.
    unsafe {
        let words = len / 8;
        let aligned = addr % 8 == 0;
        for i in 0..words {
            let v = word(addr, i * 8);
            if aligned {
                ptr.cast::<u64>().add(i).write(v);
            } else {
                ptr.add(i * 8).cast::<u64>().write_unaligned(v);
            }
        }
        for i in words * 8..len {
            ptr.add(i).write(word(addr, i) as u8);
        }
    }
}

/// The byte at `offset` of the pattern `fill(origin, filled)` wrote.
fn pattern_byte(origin: usize, filled: usize, offset: usize) -> u8 {
    if offset < filled / 8 * 8 {
        (word(origin, offset / 8 * 8) >> ((offset % 8) * 8)) as u8
    } else {
        word(origin, offset) as u8
    }
}

/// Checks that the first `len` bytes at `ptr` are those `fill` wrote for a block of `filled`
/// bytes at `origin` (the block may have moved since). Panics at the first mismatch.
///
/// # Safety
/// `ptr` is valid for `len` bytes of reads.
pub unsafe fn check_from(ptr: *const u8, origin: usize, filled: usize, len: usize) {
    // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
    unsafe {
        // Fast path: compare whole words where the pattern is made of words.
        let words = len.min(filled) / 8;
        for i in 0..words {
            let got = ptr.add(i * 8).cast::<u64>().read_unaligned();
            if got != word(origin, i * 8) {
                break;
            }
            if i + 1 == words {
                for j in words * 8..len {
                    assert_eq!(
                        *ptr.add(j),
                        pattern_byte(origin, filled, j),
                        "block {origin:#x} (now at {ptr:p}) corrupted at byte {j}"
                    );
                }
                return;
            }
        }
        for j in 0..len {
            assert_eq!(
                *ptr.add(j),
                pattern_byte(origin, filled, j),
                "block {origin:#x} (now at {ptr:p}) corrupted at byte {j}"
            );
        }
    }
}

/// Checks a block that has not moved since it was filled.
///
/// # Safety
/// As for `check_from`.
pub unsafe fn check(ptr: *const u8, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { check_from(ptr, ptr as usize, len, len) }
}

/// A live block in a test: its address, layout, and the address its pattern was made for.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub ptr: usize,
    pub layout: Layout,
}

// SAFETY: a block is plain data; the tests hand blocks between threads on purpose.
unsafe impl Send for Block {}

/// Sizes over every size class (1 B .. 64 KiB, weighted towards small ones), then large blocks
/// the per-thread cache keeps (to 512 KiB) and a few bigger ones.
pub fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => 1 + rng.below(256) as usize,
        60..=84 => 1 + rng.below(8192) as usize,
        85..=94 => 1 + rng.below(64 << 10) as usize,
        95..=97 => 1 + rng.below(512 << 10) as usize,
        _ => (512 << 10) + rng.below(3 << 20) as usize,
    }
}

/// Alignments from 1 to 4 KiB, mostly small, sometimes up to 1 MiB.
pub fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 1 << rng.below(5),
        80..=97 => 1 << rng.below(13),
        _ => 1 << (13 + rng.below(8)),
    }
}

/// Resident memory of this process in bytes, from `/proc/self/statm`.
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// The `main` of a test binary without the harness: runs each named case, or with arguments
/// (as `cargo test --test NAME -- FILTER` passes them) only the cases whose names contain one.
pub fn run_cases(cases: &[(&str, fn())]) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for &(name, case) in cases {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            case();
            println!("{name}: ok");
        }
    }
}
