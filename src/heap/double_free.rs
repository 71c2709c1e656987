//! Double-free detection: a freed block (of 16 bytes or more) carries a marker in its second
//! word, the block's address mixed with a per-process secret. Allocation clears it
//! ([`clear_marker`]); a free that finds it already set is *suspect*, and is only called a
//! double free once confirmed:
//!
//! * by the page's owner, exactly: the block is on one of the page's free lists;
//! * by another thread, which may not walk the owner's lists: the block's first word is a
//!   free-list link (null, or a block of the same page), as it is for every free block.
//!
//! User data equal to the marker by chance has probability ~2^-64, but data need not be
//! chance: coverage-guided fuzzers (libFuzzer's CMP tracing, which cargo-fuzz turns on, and
//! AFL++'s cmplog) record both operands of every comparison in instrumented code and write
//! them into their inputs. With a plain `==` a fuzzer learned a block's marker and wrote it
//! into a buffer of its input, which then "double freed" (the story: `docs/findings.md`).
//! So in builds for a fuzzer (`cfg(fuzzing)`) the comparison is made where instrumentation
//! cannot see its operands (inline assembly), and the owner confirms before aborting in any
//! case.
//!
//! Layer: `heap`; calls `heap::page_blocks` (the block test, the remote list), `heap::size_class`,
//! `arena::page`, `os` (`errno_preserved`) and `sync::atomic`.

use crate::arena::page::{Block, Page};
use crate::sync::atomic::{AtomicUsize, Ordering};

/// The secret mixed into free markers; never zero once set.
static FREE_KEY: AtomicUsize = AtomicUsize::new(0);

/// The process's free-marker secret, created on first use.
pub(crate) fn free_key() -> usize {
    // Relaxed: the value is self-contained; racing initialisers agree through the CAS.
    let key = FREE_KEY.load(Ordering::Relaxed);
    if key != 0 {
        return key;
    }
    let mut fresh = 0usize;
    // SAFETY: getrandom writes at most the given number of bytes into our buffer. (It may run
    // inside a `free`, which must leave errno alone.)
    let got = crate::os::errno_preserved(|| unsafe {
        libc::getrandom(
            (&raw mut fresh).cast(),
            core::mem::size_of::<usize>(),
            libc::GRND_NONBLOCK,
        )
    });
    if got != core::mem::size_of::<usize>() as isize {
        // No entropy yet (very early boot): fall back to address-space randomisation.
        fresh = (&raw const fresh as usize).rotate_left(29) ^ (free_key as fn() -> usize as usize);
    }
    fresh |= 1 << 63; // never zero, never a plausible pointer
    match FREE_KEY.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(existing) => existing,
    }
}

#[inline(always)]
fn marker(block: *mut Block, key: usize) -> usize {
    block as usize ^ key
}

#[inline(always)]
fn marker_word(block: *mut Block) -> *mut usize {
    block.cast::<usize>().wrapping_add(1)
}

/// `a == b`, compared where coverage instrumentation cannot record the operands when the
/// program is built for a fuzzer (`cfg(fuzzing)`, which cargo-fuzz, cargo-afl and
/// cargo-hfuzz set for every crate they build). Otherwise a plain compare, which the free path
/// fuses with its branch (two instructions fewer than the assembly's `sete` and test).
#[inline(always)]
fn equal_unobserved(a: usize, b: usize) -> bool {
    #[cfg(not(fuzzing))]
    {
        a == b
    }
    #[cfg(all(fuzzing, target_arch = "x86_64", not(miri)))]
    {
        let equal: u8;
        // SAFETY: register-only arithmetic; no memory, no stack.
        unsafe {
            core::arch::asm!(
                "cmp {a}, {b}",
                "sete {e}",
                a = in(reg) a,
                b = in(reg) b,
                e = out(reg_byte) equal,
                options(pure, nomem, nostack),
            );
        }
        equal != 0
    }
    #[cfg(all(fuzzing, target_arch = "aarch64", not(miri)))]
    {
        let equal: u64;
        // SAFETY: register-only arithmetic; no memory, no stack.
        unsafe {
            core::arch::asm!(
                "cmp {a}, {b}",
                "cset {e}, eq",
                a = in(reg) a,
                b = in(reg) b,
                e = lateout(reg) equal,
                options(pure, nomem, nostack),
            );
        }
        equal != 0
    }
    #[cfg(all(
        fuzzing,
        not(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri)))
    ))]
    {
        // Elsewhere: compare hashes, one of them opaque to the optimiser, so the recorded
        // operands are hashes a fuzzer cannot turn back into the marker.
        let mix = |x: usize| {
            let x = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^ (x >> 29)
        };
        core::hint::black_box(mix(a)) == mix(b)
    }
}

/// Sets a block's free marker. Returns true if it was already set: the block may be free
/// already, and the caller must confirm ([`owner_confirms`], [`looks_free`]).
///
/// 8-byte blocks have no second word, so no marker: their frees are never suspect. (The test
/// of the size reads the page descriptor, which the free path reads anyway; the marker's
/// address depends on the block alone, so its load starts without waiting for the page. A
/// marker offset kept in the page instead saved two instructions but made the load wait, and
/// measured slower: `BENCHMARKS.md`.)
///
/// # Safety
/// `block` is a block of `page` that the caller may write (it is being freed).
#[inline(always)]
pub(crate) unsafe fn mark_freed(page: &Page, block: *mut Block, key: usize) -> bool {
    // Relaxed: fixed while the page is in use, as `is_carved_block` explains for its fields.
    if page.block_size.load(Ordering::Relaxed) <= 8 {
        return false;
    }
    let word = marker_word(block);
    // SAFETY: blocks of more than 8 bytes have a second word; the block is ours to write.
    unsafe {
        let suspect = equal_unobserved(*word, marker(block, key));
        *word = marker(block, key);
        suspect
    }
}

/// Marks a block a page has just carved as free, as a free would: a free of it (an address
/// the page carved but never handed out, such as `p + 4096`) is then suspect and confirmed
/// like any double free, instead of listing the block twice.
///
/// # Safety
/// `block` is a block of more than 8 bytes that the caller owns.
#[inline(always)]
pub(crate) unsafe fn mark_carved(block: *mut Block, key: usize) {
    // SAFETY: blocks above 8 bytes have a second word; the caller owns the block.
    unsafe { *marker_word(block) = marker(block, key) };
}

/// Clears the marker of a block just allocated (8-byte blocks, class 0, have none).
///
/// # Safety
/// `block` is a block of size class `class` that the caller owns.
#[inline(always)]
pub(crate) unsafe fn clear_marker(block: *mut Block, class: usize) {
    if class != 0 {
        // SAFETY: blocks above 8 bytes have a second word; the caller owns the block.
        unsafe { *marker_word(block) = 0 };
    }
}

/// The owner's confirmation of a suspect free: true if `block` is on one of the page's free
/// lists (so freeing it again is a double free), false if its data only looked like a marker.
///
/// # Safety
/// The calling thread owns the page.
#[cold]
pub(crate) unsafe fn owner_confirms(page: &Page, block: *mut Block) -> bool {
    // Each list is at most as long as the blocks carved; the bound guards against a list that
    // a double free already turned into a cycle.
    let bound = page.carved.get() as usize + 1;
    // Every hop is checked before it is followed: a list that a write after free (or past a
    // block's end) corrupted ends in the named abort, not in a fault on a wild pointer.
    let on = |mut cursor: *mut Block| {
        let mut previous = core::ptr::null_mut::<Block>();
        for _ in 0..bound {
            if cursor.is_null() {
                return false;
            }
            if cursor == block {
                return true;
            }
            if !super::page_blocks::is_carved_block(page, cursor as usize) {
                crate::abort::corrupted_free_list(previous.cast(), cursor.cast());
            }
            previous = cursor;
            // SAFETY: a block of this page (checked above) on one of its free lists, whose
            // first word no one but the owner writes while it is free.
            cursor = unsafe { (*cursor).next };
        }
        false
    };
    // Acquire: pairs with the Release CAS of `push_remote`, so the links of the remote list
    // are visible. The owner is the only thread that takes blocks off that list, and pushes
    // only add at the front, so walking it races with nothing.
    let remote = super::page_blocks::list_of(page.xthread_free.load(Ordering::Acquire));
    // SAFETY: owner (caller).
    unsafe { on(page.free.get()) || on(page.local_free.get()) || on(remote) }
}

/// A thread that does not own the page confirms a suspect free as far as it can without
/// walking the owner's lists: a free block's first word is a free-list link, null or a block
/// of the same page. User data that copies the marker but not such a link is not a double
/// free.
///
/// # Safety
/// `block` is a block of `page` that the caller just marked.
#[cold]
pub(crate) unsafe fn looks_free(page: &Page, block: *mut Block) -> bool {
    // SAFETY: the caller frees the block, so it may read it. (If it is in fact a double free,
    // the word may be changing under us; any value read is only compared.)
    let link = unsafe { (*block).next } as usize;
    link == 0 || super::page_blocks::is_carved_block(page, link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::pages::tests::{alloc, test_page};
    use crate::heap::pages::{collect, pop, push_local, push_remote};
    use crate::heap::size_class::class_of;

    #[test]
    fn a_block_freed_twice_is_confirmed_on_every_list() {
        let class = class_of(32);
        let t = test_page(class);
        let key = free_key();
        let blocks: std::vec::Vec<_> = (0..3).map(|_| alloc(&t.page, class).unwrap()).collect();
        // SAFETY: live blocks of our page, freed once each, then "freed" again.
        unsafe {
            for &b in &blocks {
                assert!(!mark_freed(&t.page, b, key), "a first free is not suspect");
            }
            push_local(&t.page, blocks[0]); // on `local_free`
            push_remote(&t.page, blocks[1]); // on the remote list
            for &b in &blocks[..2] {
                assert!(mark_freed(&t.page, b, key) && owner_confirms(&t.page, b));
                assert!(looks_free(&t.page, b));
            }
            // Collected: now both are on `free` or `local_free`.
            t.page.free.set(core::ptr::null_mut());
            collect(&t.page);
            for &b in &blocks[..2] {
                assert!(mark_freed(&t.page, b, key) && owner_confirms(&t.page, b));
            }
            // Marked but on no list (the third block): not a double free.
            assert!(!owner_confirms(&t.page, blocks[2]));
        }
    }

    #[test]
    fn free_markers_are_cleared_on_allocation() {
        let class = class_of(32);
        let t = test_page(class);
        let key = free_key();
        let b = alloc(&t.page, class).unwrap();
        while alloc(&t.page, class).is_some() {} // drain, so the freed block comes back next
        // SAFETY: a live block of our page.
        unsafe {
            assert!(!mark_freed(&t.page, b, key));
            push_local(&t.page, b);
            collect(&t.page);
            let again = t.page.free.get();
            assert_eq!(again, b);
            pop(&t.page, again, class);
            // Allocated again: freeing it is not suspect.
            assert!(!mark_freed(&t.page, again, key));
        }
    }

    /// 8-byte blocks have no room for a marker: freeing one writes nothing past its only word
    /// (the neighbour keeps its data) and is never suspect.
    #[test]
    fn an_8_byte_block_is_never_marked() {
        let class = class_of(8);
        let t = test_page(class);
        let key = free_key();
        let b = alloc(&t.page, class).unwrap();
        let neighbour = alloc(&t.page, class).unwrap();
        assert_eq!(neighbour as usize, b as usize + 8);
        // SAFETY: live 8-byte blocks of our page.
        unsafe {
            neighbour.cast::<usize>().write(b as usize ^ key);
            b.cast::<usize>().write(b as usize ^ key);
            assert!(!mark_freed(&t.page, b, key));
            assert_eq!(neighbour.cast::<usize>().read(), b as usize ^ key);
            assert_eq!(b.cast::<usize>().read(), b as usize ^ key);
        }
    }

    /// What a fuzzer did once it had learned a marker: a live block whose data equals it.
    #[test]
    fn user_data_equal_to_the_marker_is_not_a_double_free() {
        let class = class_of(48);
        let t = test_page(class);
        let key = free_key();
        let b = alloc(&t.page, class).unwrap();
        let neighbour = alloc(&t.page, class).unwrap();
        // SAFETY: a live block of our page, 48 bytes.
        unsafe {
            let words = b.cast::<usize>();
            words.add(1).write(b as usize ^ key);
            // The owner walks its lists and finds the block on none of them.
            words.write(0x0123_4567_89ab_cdef);
            assert!(mark_freed(&t.page, b, key), "the data looks like a marker");
            assert!(!owner_confirms(&t.page, b));
            // Another thread: the first word is no free-list link, so no double free ...
            assert!(!looks_free(&t.page, b));
            // ... unless it is one too (null, or a block of this page): data that copies both
            // the secret marker and a link is reported, as a real double free would be.
            words.write(neighbour as usize);
            assert!(looks_free(&t.page, b));
            words.write(0);
            assert!(looks_free(&t.page, b));
        }
    }

    #[test]
    fn the_marker_comparison_is_exact() {
        for (a, b) in [
            (0, 0),
            (1, 1),
            (usize::MAX, usize::MAX),
            (0x7f00_1234, 0x7f00_1234),
        ] {
            assert!(equal_unobserved(a, b));
        }
        for (a, b) in [
            (0, 1),
            (1, 0),
            (usize::MAX, 0),
            (1 << 63, 0),
            (0x7f00_1234, 0x7f00_1235),
        ] {
            assert!(!equal_unobserved(a, b));
        }
    }

    #[test]
    fn the_key_is_set_once_and_never_zero() {
        let key = free_key();
        assert_ne!(key, 0);
        assert_eq!(free_key(), key);
    }
}
