//! Size classes: every multiple of 8 bytes up to 64, then eight classes per doubling up to
//! 8 KiB (72, 80, …, 128, 144, …, 256, 288, …, 8192), then four per doubling up to 64 KiB
//! (10 K, 12 K, 14 K, 16 K, 20 K, …, 64 K). A request of 65 B – 8 KiB is rounded up by less than an
//! eighth of itself (at most 12.5% internal waste), a bigger one by less than a quarter;
//! below 64 bytes the waste is under one 8-byte word. Each class's page kind holds at least
//! eight blocks, and the unusable tail of a page is at most an eighth.
//!
//! Above 8 KiB the classes live in 512 KiB pages, and every class a program uses holds at
//! least one such page, partly filled; so there are only four classes per doubling there (as
//! in mimalloc): half the partly filled pages of eight, for more waste inside blocks that are
//! few. (The measurements behind both choices, and the 64 KiB pages for blocks up to 16 KiB
//! that were tried and not kept: `docs/findings.md`, "Size classes above 8 KiB".)
//!
//! Every class in a doubling `[2^k, 2^(k+1)]` is a multiple of `2^(k-3)` (of `2^(k-2)` above
//! 8 KiB), and every multiple of that step in the doubling is a class, as is every multiple of
//! 8 up to 128. So rounding a size up to a power-of-two alignment first always lands on a
//! class that is itself a multiple of that alignment; pages start at page-size-aligned
//! addresses, so such blocks are aligned without any per-block adjustment.
//!
//! Layer: `heap`; calls only `config`.

use crate::config::{MAX_SMALL_SIZE, PageKind};

/// Classes with sizes 8..=64 step 8.
const WORD_CLASSES: usize = 8;
/// Eight classes per doubling from 64 B to 8 KiB (`FINE_SHIFT` = log2 of 8 KiB)...
const FINE_PER_DOUBLING: usize = 8;
const FINE_SHIFT: usize = 13;
const FINE_CLASSES: usize = (FINE_SHIFT - 6) * FINE_PER_DOUBLING;
/// ...and four from 8 KiB to 64 KiB (`MAX_SMALL_SIZE`).
const COARSE_PER_DOUBLING: usize = 4;
const COARSE_CLASSES: usize = (MAX_SMALL_SIZE.ilog2() as usize - FINE_SHIFT) * COARSE_PER_DOUBLING;

pub(crate) const NUM_CLASSES: usize = WORD_CLASSES + FINE_CLASSES + COARSE_CLASSES;

/// Block size of each class.
static CLASS_SIZE: [u32; NUM_CLASSES] = {
    let mut sizes = [0u32; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        sizes[c] = compute_class_size(c) as u32;
        c += 1;
    }
    sizes
};

/// Sizes up to this many bytes have their class in one load.
const LOOKUP_MAX: usize = 1024;

/// Where the second half of [`LOOKUP`] starts: a power of two above `LOOKUP_MAX / 8`, so that
/// an alignment of 16 selects it with one shift and add (a displacement, when it is constant).
const ALIGN_16_HALF: usize = 256;
const _: () = assert!(ALIGN_16_HALF > LOOKUP_MAX / 8 && (16 << 4) == ALIGN_16_HALF);

/// Classes of small sizes, indexed by `(size + 7) / 8`; from `ALIGN_16_HALF` on, the same for
/// sizes rounded up to 16 bytes (C's `malloc` alignment, and `u128`'s). The layouts programs
/// ask for most (alignment up to 16, up to 1 KiB) thus take one load, whatever the alignment.
/// Size 0 gets the 16-byte class in the second half (C's `malloc(0)` must return a unique,
/// aligned pointer).
static LOOKUP: [u8; 2 * ALIGN_16_HALF] = {
    let mut table = [0u8; 2 * ALIGN_16_HALF];
    let mut i = 0;
    while i <= LOOKUP_MAX / 8 {
        let aligned_16 = if i == 0 {
            16
        } else {
            (i * 8).next_multiple_of(16)
        };
        table[i] = compute_class(i * 8) as u8;
        table[ALIGN_16_HALF + i] = compute_class(aligned_16) as u8;
        i += 1;
    }
    table
};

/// The index into [`LOOKUP`] of `size` bytes aligned to `align` (`align <= 16`, a power of
/// two, and `size <= LOOKUP_MAX`).
#[inline(always)]
fn lookup_index(size: usize, align: usize) -> usize {
    ((size + 7) >> 3) + ((align & 16) << 4)
}

/// Sizes up to this many bytes have their 16-byte-aligned class in one load
/// ([`class_for_small_16`]).
pub(crate) const SMALL_16_MAX: usize = LOOKUP_MAX;

/// The class for `size` bytes (at most [`SMALL_16_MAX`], 0 included) aligned to 16.
#[inline(always)]
pub(crate) fn class_for_small_16(size: usize) -> usize {
    debug_assert!(size <= SMALL_16_MAX);
    // SAFETY: the index is at most `ALIGN_16_HALF + LOOKUP_MAX / 8`, within the table.
    unsafe { *LOOKUP.get_unchecked(lookup_index(size, 16)) as usize }
}

pub(crate) const fn compute_class_size(class: usize) -> usize {
    if class < WORD_CLASSES {
        (class + 1) * 8
    } else if class < WORD_CLASSES + FINE_CLASSES {
        let k = 6 + (class - WORD_CLASSES) / FINE_PER_DOUBLING;
        let j = (class - WORD_CLASSES) % FINE_PER_DOUBLING;
        (1 << k) + (j + 1) * (1 << (k - 3))
    } else {
        let c = class - WORD_CLASSES - FINE_CLASSES;
        let k = FINE_SHIFT + c / COARSE_PER_DOUBLING;
        let j = c % COARSE_PER_DOUBLING;
        (1 << k) + (j + 1) * (1 << (k - 2))
    }
}

#[inline(always)]
const fn compute_class(size: usize) -> usize {
    if size <= 64 {
        if size == 0 { 0 } else { size.div_ceil(8) - 1 }
    } else {
        let s = size - 1;
        let k = s.ilog2() as usize;
        if k < FINE_SHIFT {
            let j = (s >> (k - 3)) - FINE_PER_DOUBLING;
            WORD_CLASSES + (k - 6) * FINE_PER_DOUBLING + j
        } else {
            let j = (s >> (k - 2)) - COARSE_PER_DOUBLING;
            WORD_CLASSES + FINE_CLASSES + (k - FINE_SHIFT) * COARSE_PER_DOUBLING + j
        }
    }
}

/// The class for `size` bytes (`size <= MAX_SMALL_SIZE`).
#[inline(always)]
pub(crate) fn class_of(size: usize) -> usize {
    debug_assert!(size <= MAX_SMALL_SIZE);
    if size <= LOOKUP_MAX {
        // SAFETY: the index is at most `LOOKUP_MAX / 8`, within the table.
        unsafe { *LOOKUP.get_unchecked(lookup_index(size, 1)) as usize }
    } else {
        compute_class(size)
    }
}

/// The class for a layout, or `None` if it needs a large block. Alignments up to the page
/// size work here (see the module docs).
#[inline(always)]
pub(crate) fn class_for_layout(size: usize, align: usize) -> Option<usize> {
    if align <= 16 && size <= LOOKUP_MAX {
        // SAFETY: the index is at most `ALIGN_16_HALF + LOOKUP_MAX / 8`, within the table.
        return Some(unsafe { *LOOKUP.get_unchecked(lookup_index(size, align)) as usize });
    }
    let size = if align <= 8 {
        size
    } else {
        // Round up to the alignment: `config::align_up`, unchecked, because this is the
        // fast path's layout test and both were just bounded (no overflow).
        if size > MAX_SMALL_SIZE || align > MAX_SMALL_SIZE {
            return None;
        }
        (size + align - 1) & !(align - 1)
    };
    if size <= MAX_SMALL_SIZE {
        Some(class_of(size))
    } else {
        None
    }
}

/// The block size of `class` (a class the functions above gave: below `NUM_CLASSES`).
#[inline(always)]
pub(crate) fn class_size(class: usize) -> usize {
    debug_assert!(class < NUM_CLASSES);
    // SAFETY: every class comes from this module's functions, which give classes below
    // NUM_CLASSES (the tables are built from `compute_class`, tested for every size), and the
    // slow paths index per-class arrays with the same classes.
    unsafe { *CLASS_SIZE.get_unchecked(class) as usize }
}

pub(crate) fn page_kind(class: usize) -> PageKind {
    PageKind::for_block(class_size(class))
}

/// What it takes to test "is `x` a multiple of this class's size" without a division (every
/// free validates its pointer with it): the size is `odd << shift`, and `inverse` is `odd`'s
/// inverse modulo 2^64 (see [`block_index`]).
struct Divisor {
    shift: u32,
    inverse: u64,
}

static DIVISORS: [Divisor; NUM_CLASSES] = {
    let mut table = [const {
        Divisor {
            shift: 0,
            inverse: 0,
        }
    }; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let size = compute_class_size(c) as u64;
        let shift = size.trailing_zeros();
        let odd = size >> shift;
        // Newton's iteration doubles the correct low bits each step: 3 -> 6 -> ... -> 96.
        let mut inverse = odd;
        let mut i = 0;
        while i < 5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
            i += 1;
        }
        table[c] = Divisor { shift, inverse };
        c += 1;
    }
    table
};

/// The block size of `class` as `odd << shift`: `(shift, inverse of odd modulo 2^64)`, what
/// [`block_index`] needs.
pub(crate) fn block_divisor(class: usize) -> (u32, u64) {
    (DIVISORS[class].shift, DIVISORS[class].inverse)
}

/// `offset / size` if `offset` is a multiple of the block size `size = odd << shift`, else a
/// number above `u64::MAX >> shift / odd` (far beyond any page's block count): one multiply
/// and one rotate instead of a division. Multiplying by `odd`'s inverse gives `offset / size`
/// shifted left by `shift` exactly for the multiples, and for anything else either low bits
/// (which the rotate sends to the top) or a value no multiple gives.
#[inline(always)]
pub(crate) fn block_index(offset: usize, shift: u32, inverse: u64) -> u64 {
    (offset as u64).wrapping_mul(inverse).rotate_right(shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size natively; a sample under Miri, which is ~1000x slower.
    const SIZE_STEP: usize = if cfg!(miri) { 257 } else { 1 };

    #[test]
    fn classes_increase_and_end_at_the_large_threshold() {
        for c in 1..NUM_CLASSES {
            assert!(class_size(c) > class_size(c - 1));
            assert_eq!(class_size(c) % 8, 0);
        }
        assert_eq!(class_size(NUM_CLASSES - 1), MAX_SMALL_SIZE);
        assert_eq!(class_size(0), 8);
    }

    #[test]
    fn every_size_gets_the_smallest_class_that_fits() {
        for size in (1..=MAX_SMALL_SIZE).step_by(SIZE_STEP) {
            let c = class_of(size);
            assert!(class_size(c) >= size, "size {size} class {c}");
            assert!(
                c == 0 || class_size(c - 1) < size,
                "size {size} not in smallest class"
            );
        }
    }

    #[test]
    fn waste_is_under_a_word_an_eighth_or_a_quarter() {
        for size in (1..=MAX_SMALL_SIZE).step_by(SIZE_STEP) {
            let waste = class_size(class_of(size)) - size;
            if size > 1 << FINE_SHIFT {
                assert!(waste * 4 <= size, "size {size} wastes {waste}");
            } else if size > 64 {
                assert!(waste * 8 <= size, "size {size} wastes {waste}");
            } else {
                assert!(waste < 8, "size {size} wastes {waste}");
            }
        }
    }

    #[test]
    fn block_offsets_are_recognised_without_division() {
        for c in 0..NUM_CLASSES {
            let size = class_size(c);
            let page = page_kind(c).page_size();
            for offset in (0..page).step_by(if cfg!(miri) { 9973 } else { 1 }).chain([
                size,
                2 * size,
                page - size,
                usize::MAX - size + 1, // addresses below the page wrap around
                usize::MAX,
            ]) {
                let (shift, inverse) = block_divisor(c);
                let index = block_index(offset, shift, inverse);
                if offset % size == 0 {
                    assert_eq!(index, (offset / size) as u64, "class {c} offset {offset}");
                } else {
                    assert!(index > (page / size) as u64, "class {c} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn pages_hold_eight_blocks_and_waste_at_most_an_eighth_in_their_tail() {
        for c in 0..NUM_CLASSES {
            let (page, size) = (page_kind(c).page_size(), class_size(c));
            assert!(page / size >= 8, "class {c}");
            assert!(
                page % size <= page / 8,
                "class {c}: tail of {} bytes",
                page % size
            );
        }
    }

    /// The one-load table gives, for every small size and alignment up to 16, the class of the
    /// size rounded up to the alignment (and size 0 aligned to 16, C's `malloc(0)`, the 16-byte
    /// class).
    #[test]
    fn the_lookup_table_agrees_with_the_computed_classes() {
        for size in (0..=LOOKUP_MAX).step_by(SIZE_STEP).chain([LOOKUP_MAX]) {
            for align in [1, 2, 4, 8, 16] {
                let rounded = size.next_multiple_of(align);
                let expected = if align == 16 {
                    rounded.max(16)
                } else {
                    rounded
                };
                let class = compute_class(expected);
                assert_eq!(
                    class_for_layout(size, align),
                    Some(class),
                    "{size} B, align {align}"
                );
                if align == 16 {
                    assert_eq!(class_for_small_16(size), class, "{size} B");
                }
            }
        }
    }

    #[test]
    fn aligned_layouts_land_on_classes_that_are_multiples_of_the_alignment() {
        let mut align = 1;
        while align <= MAX_SMALL_SIZE {
            for size in (1..=MAX_SMALL_SIZE)
                .step_by(if cfg!(miri) { 9973 } else { 97 })
                .chain([1, align, MAX_SMALL_SIZE])
            {
                match class_for_layout(size, align) {
                    Some(c) => {
                        let block = class_size(c);
                        assert!(
                            block >= size && block % align == 0,
                            "size {size} align {align}"
                        );
                        assert!(page_kind(c).page_size() % align == 0);
                    }
                    None => assert!(size.next_multiple_of(align) > MAX_SMALL_SIZE),
                }
            }
            align *= 2;
        }
        assert_eq!(class_for_layout(1, 2 * MAX_SMALL_SIZE), None);
    }
}
