//! The frame rules a stack walk follows (`cfi::Rule`), cached by address: finding and decoding
//! a function's unwind information costs about as much as the system unwinder's step, and a
//! program samples from the same few hundred call sites over and over.
//!
//! The cache is one word per entry, the address and its rule together, so a reader never sees
//! half of one entry and half of another, and a rule is only ever replaced by the same rule or
//! by another address's. A rule stays true while its code stays mapped, so only addresses in
//! the objects loaded before the program started are cached (the executable and the libraries
//! it needs, which are never unloaded: their list is taken by a constructor, before `main`);
//! a library `dlopen`ed later may be unloaded and something else mapped at its addresses, so
//! its rules are decoded each time.
//!
//! Also here: where the allocator's own functions end, for a walk to leave their frames out.
//!
//! Layer: `sampling`; calls `sampling::cfi` and the dynamic loader (`dl_iterate_phdr`).

use super::cfi::{self, Rule};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Entries in the cache (32 KiB).
const SLOTS: usize = 4096;
/// An entry: the address shifted left by `RULE_BITS`, then the rule; 0 is an empty entry.
static CACHE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
const RULE_BITS: u32 = 17;

/// The rule at `pc` (see `cfi::rule_at`); `End` where no unwind information covers it (the
/// system unwinder ends its walk there too).
#[inline]
pub(crate) fn rule(pc: usize) -> Rule {
    let slot = &CACHE[slot_of(pc)];
    // Relaxed: an entry is one word, self-contained; one that is missing or being replaced
    // only costs a decoding (see the module doc).
    let entry = slot.load(Ordering::Relaxed);
    if entry != 0 && (entry >> RULE_BITS) as usize == pc {
        return unpack(entry & ((1 << RULE_BITS) - 1));
    }
    let rule = cfi::rule_at(pc).unwrap_or(Rule::End);
    if let Some(entry) = pack(pc, rule).filter(|_| in_startup_code(pc)) {
        // Relaxed: as above.
        slot.store(entry, Ordering::Relaxed);
    }
    rule
}

fn slot_of(pc: usize) -> usize {
    ((pc as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// Rule encoding: bits 0-1 the kind (0 CFA from `rsp`, 1 from `rbp`, 2 end, 3 unsupported),
/// bits 2-11 the CFA offset in words, bits 12-16 `rbp`'s slot.
fn pack(pc: usize, rule: Rule) -> Option<u64> {
    let bits = match rule {
        Rule::Frame {
            cfa_from_rbp,
            cfa_offset,
            rbp_slot,
        } => {
            if cfa_offset % 8 != 0 || cfa_offset / 8 >= 1 << 10 || rbp_slot >= 1 << 5 {
                return None; // a frame too big for the entry: decoded each time
            }
            u64::from(cfa_from_rbp) | u64::from(cfa_offset / 8) << 2 | u64::from(rbp_slot) << 12
        }
        Rule::End => 2,
        Rule::Unsupported => 3,
    };
    if (pc as u64) >> (64 - RULE_BITS) != 0 || pc == 0 {
        return None;
    }
    Some((pc as u64) << RULE_BITS | bits)
}

fn unpack(bits: u64) -> Rule {
    match bits & 3 {
        2 => Rule::End,
        3 => Rule::Unsupported,
        kind => Rule::Frame {
            cfa_from_rbp: kind == 1,
            cfa_offset: ((bits >> 2) & 0x3ff) as u32 * 8,
            rbp_slot: (bits >> 12) as u32,
        },
    }
}

// ------------------------------------------------------------------ startup code

/// The executable segments of the objects loaded before the program started, as start and
/// end pairs; `STARTUP_LEN` of them are valid.
static STARTUP: [AtomicUsize; 2 * MAX_STARTUP] = [const { AtomicUsize::new(0) }; 2 * MAX_STARTUP];
static STARTUP_LEN: AtomicUsize = AtomicUsize::new(0);
const MAX_STARTUP: usize = 64;

fn in_startup_code(pc: usize) -> bool {
    // Acquire: pairs with the Release in `note_startup_code`, so the ranges are complete.
    let len = STARTUP_LEN.load(Ordering::Acquire);
    (0..len).any(|i| {
        // Relaxed: written before the length was published.
        let start = STARTUP[2 * i].load(Ordering::Relaxed);
        let end = STARTUP[2 * i + 1].load(Ordering::Relaxed);
        (start..end).contains(&pc)
    })
}

// The constructor: it runs before `main` in an executable (after the libraries' own) and at
// load for a preloaded library, when the objects loaded are those the program started with.
// (Where vmarena is itself in a library `dlopen`ed later, the objects loaded by then count as
// startup code: one of them unloaded, and other code mapped at its addresses, would leave
// wrong rules behind. Not a case this allocator is built for: it replaces the allocator at
// startup.)
#[cfg(not(miri))]
#[used]
#[unsafe(link_section = ".init_array")]
static NOTE_STARTUP_CODE: extern "C" fn() = note_startup_code;

extern "C" fn note_startup_code() {
    extern "C" fn visit(info: *mut libc::dl_phdr_info, _: usize, count: *mut libc::c_void) -> i32 {
        // SAFETY: the loader passes a valid `dl_phdr_info` whose program headers stay mapped
        // during the call; `count` is our counter.
        unsafe {
            let info = &*info;
            let count = &mut *count.cast::<usize>();
            let phdrs = core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            for ph in phdrs
                .iter()
                .filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0)
            {
                if *count == MAX_STARTUP {
                    return 1;
                }
                let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
                // Relaxed: published by the Release below.
                STARTUP[2 * *count].store(start, Ordering::Relaxed);
                STARTUP[2 * *count + 1].store(start + ph.p_memsz as usize, Ordering::Relaxed);
                *count += 1;
            }
        }
        0
    }
    if STARTUP_LEN.load(Ordering::Relaxed) != 0 {
        return; // a second copy's constructor, or a test calling it again
    }
    let mut count = 0usize;
    // SAFETY: `visit` matches the callback's signature and writes only `count` and the ranges.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut count).cast()) };
    // Release: see `in_startup_code`.
    STARTUP_LEN.store(count, Ordering::Release);
}

// ------------------------------------------------------------------ the allocator's functions

/// The extents of functions a walk leaves out (start, length), filled once each.
static EXTENTS: [AtomicUsize; 2 * MAX_EXTENTS] = [const { AtomicUsize::new(0) }; 2 * MAX_EXTENTS];
const MAX_EXTENTS: usize = 32;

/// Whether `pc` lies in one of the functions starting at `functions`.
pub(crate) fn in_functions(pc: usize, functions: &[usize]) -> bool {
    functions
        .iter()
        .any(|&function| pc.wrapping_sub(function) < extent(function))
}

/// The length of the function starting at `function` (0 if unknown).
fn extent(function: usize) -> usize {
    for i in 0..MAX_EXTENTS {
        // Acquire: pairs with the Release stores below, so a length read is the function's.
        let start = EXTENTS[2 * i].load(Ordering::Acquire);
        if start == function {
            let length = EXTENTS[2 * i + 1].load(Ordering::Acquire);
            if length != 0 {
                return length;
            }
            break; // being filled: decode it here too
        }
        if start == 0 {
            let length = cfi::function_length(function);
            // Claim the entry (a racing claimer of another function wins it, and this length
            // is then only returned). AcqRel/Acquire: a claim is ordered like the length it
            // announces, though the length's own Release store is what readers pair with.
            if length != 0
                && EXTENTS[2 * i]
                    .compare_exchange(0, function, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                EXTENTS[2 * i + 1].store(length, Ordering::Release);
            }
            return length;
        }
    }
    cfi::function_length(function)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_packs_and_unpacks_to_itself() {
        let pc = 0x5555_1234_5678;
        for rule in [
            Rule::End,
            Rule::Unsupported,
            Rule::Frame {
                cfa_from_rbp: false,
                cfa_offset: 8,
                rbp_slot: 0,
            },
            Rule::Frame {
                cfa_from_rbp: true,
                cfa_offset: 16,
                rbp_slot: 2,
            },
            Rule::Frame {
                cfa_from_rbp: false,
                cfa_offset: 8184,
                rbp_slot: 31,
            },
        ] {
            let entry = pack(pc, rule).unwrap();
            assert_eq!(entry >> RULE_BITS, pc as u64);
            assert_eq!(unpack(entry & ((1 << RULE_BITS) - 1)), rule);
        }
        let big = Rule::Frame {
            cfa_from_rbp: false,
            cfa_offset: 8192,
            rbp_slot: 0,
        };
        assert_eq!(pack(pc, big), None, "too big a frame is not cached");
    }

    /// Thousands of addresses of this binary's code, each looked up twice (the second time
    /// mostly from the cache, after others in the same slot came and went): every answer is
    /// the address's own rule, as decoding it afresh gives.
    #[test]
    fn the_cache_answers_each_address_with_its_own_rule() {
        let start = rule as fn(usize) -> Rule as usize & !0xfff;
        let addresses: Vec<usize> = (0..3 * SLOTS).map(|i| start + 7 * i).collect();
        let fresh: Vec<Rule> = addresses
            .iter()
            .map(|&pc| cfi::rule_at(pc).unwrap_or(Rule::End))
            .collect();
        for _ in 0..2 {
            for (&pc, &expected) in addresses.iter().zip(&fresh) {
                assert_eq!(rule(pc), expected, "{pc:#x}");
            }
        }
        let cached = addresses
            .iter()
            .filter(|&&pc| {
                let entry = CACHE[slot_of(pc)].load(Ordering::Relaxed);
                entry >> RULE_BITS == pc as u64
            })
            .count();
        assert!(cached > SLOTS / 4, "only {cached} addresses cached");
    }

    #[test]
    fn the_program_and_its_libraries_are_startup_code() {
        assert!(in_startup_code(rule as fn(usize) -> Rule as usize));
        assert!(in_startup_code(libc::malloc as *const () as usize));
        assert!(!in_startup_code(8));
    }

    #[test]
    fn a_function_contains_its_own_code_only() {
        let f = in_functions as fn(usize, &[usize]) -> bool as usize;
        assert!(in_functions(f, &[f]));
        assert!(in_functions(f + 16, &[f]));
        assert!(!in_functions(f - 1, &[f]));
        assert!(!in_functions(f + extent(f), &[f]));
    }
}
