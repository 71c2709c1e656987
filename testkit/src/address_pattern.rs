//! A pattern derived from a block's address: filled and checked in full, word by word, so any
//! overlap with another block, or a write into a block it does not own, shows up when the
//! block is checked. A block that moved (realloc) is checked against the address it was
//! filled at (`check_from`).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_block_checks_where_it_moved_and_any_changed_byte_is_caught() {
        for len in [1, 7, 8, 9, 100, 4096] {
            let mut block = vec![0u8; len];
            let origin = block.as_ptr() as usize;
            // SAFETY: (whole test) `block` has `len` bytes; `moved` as many.
            unsafe {
                fill(block.as_mut_ptr(), len);
                check(block.as_ptr(), len);
                let moved = block.clone();
                check_from(moved.as_ptr(), origin, len, len);
            }
            for at in [0, len / 2, len - 1] {
                let mut copy = block.clone();
                copy[at] ^= 1;
                let caught = std::panic::catch_unwind(|| {
                    // SAFETY: as above.
                    unsafe { check_from(copy.as_ptr(), origin, len, len) }
                });
                assert!(caught.is_err(), "{len} bytes: a flip at {at} passed");
            }
        }
    }
}
