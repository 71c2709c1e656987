//! Capturing the calling thread's stack without allocating, by the DWARF call-frame
//! information every x86-64 and AArch64 Linux object carries (`.eh_frame`; Rust emits it even
//! with `panic=abort`, C compilers by default). Frame pointers would be cheaper to follow but
//! are missing from most code (Rust's standard library, distribution C libraries), so their
//! stacks would stop short.
//!
//! The system unwinder (libgcc's `_Unwind_Backtrace`) walks any stack, but costs about 100 ns
//! a frame: it finds and decodes each function's unwind information at every step. On x86-64
//! the walk follows the same information itself, from a cache of each return address's rule
//! (`rules`, decoded by `cfi`): the frame's CFA (its caller's stack pointer) is `rsp` or `rbp`
//! plus an offset, the return address lies just below the CFA, and `rbp` may have been saved
//! beside it; that is all an ordinary frame needs, a few nanoseconds a step. A frame whose
//! rule takes anything else (a signal frame, a DWARF expression) hands the whole walk to the
//! system unwinder, as do other architectures.
//!
//! The walk reads only slots of this thread's stack that the unwind information names: each
//! frame's return address (which the unwinder reads too) and, where a frame saved `rbp`, its
//! slot (which the unwinder reads when a caller's CFA comes from `rbp`), each inside the frame
//! being left. The unwinder takes the dynamic loader's lock to find objects (as the walk does
//! when an address's rule is not cached), so the capture runs before the sampler takes any
//! lock of its own. It does not allocate for objects the loader knows; should it allocate
//! (frames a JIT registered with `__register_frame_info`), the sampler's count is suspended
//! meanwhile, so that allocation is never sampled in turn.
//!
//! Layer: `sampling`; calls `sampling::rules` and the system unwinder.

use core::ffi::{c_int, c_void};

/// Frames kept per sample (the innermost, after the allocator's own).
pub(crate) const MAX_FRAMES: usize = 64;

/// A captured stack: return addresses, innermost first, each less one so that it falls
/// inside the call instruction (and so on the caller's line).
pub(crate) struct Stack {
    pub(crate) depth: usize,
    pub(crate) frames: [usize; MAX_FRAMES],
}

impl Stack {
    const fn new() -> Stack {
        Stack {
            depth: 0,
            frames: [0; MAX_FRAMES],
        }
    }
}

/// The calling thread's stack from the caller of `capture` outwards, less the innermost frames
/// of the functions in `internal` (the allocator's own: the program's frame is then the
/// first). `#[inline(never)]`: its own frame is one the walk skips.
#[inline(never)]
pub(crate) fn capture(internal: &[usize]) -> Stack {
    #[cfg(target_arch = "x86_64")]
    if let Some(stack) = walk_by_rules(internal) {
        return stack;
    }
    walk_by_unwinder(internal)
}

// ------------------------------------------------------------------ x86-64: by the rules

/// A frame the walk will not believe is bigger than this (its CFA that far above its stack
/// pointer): the walk is then left to the system unwinder.
#[cfg(target_arch = "x86_64")]
const MAX_FRAME_BYTES: usize = 64 << 20;

/// The walk of [`capture`] by cached rules; `None` where a frame's rule is not one it follows
/// (then the system unwinder walks the stack). Always inlined into `capture`: the registers it
/// starts from are `capture`'s, at the rule's address.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn walk_by_rules(internal: &[usize]) -> Option<Stack> {
    use super::cfi::Rule;
    use super::rules;

    let (mut pc, mut sp, mut fp): (usize, usize, usize);
    // SAFETY: copies three registers; touches no memory and no flags. The address taken is
    // the next instruction's, where `rsp` and `rbp` have the values read.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags)
        );
    }
    let mut stack = Stack::new();
    // The first frame is `capture`'s own, at `pc` itself; the others' rules are looked up at
    // the return address less one (the call: the return address may be another function's
    // first byte, after a call that does not return).
    loop {
        let (cfa_from_rbp, cfa_offset, rbp_slot) = match rules::rule(pc) {
            Rule::Frame {
                cfa_from_rbp,
                cfa_offset,
                rbp_slot,
            } => (cfa_from_rbp, cfa_offset, rbp_slot),
            Rule::End => return Some(stack),
            Rule::Unsupported => return None,
        };
        let cfa = if cfa_from_rbp { fp } else { sp }.wrapping_add(cfa_offset as usize);
        if cfa <= sp || cfa - sp > MAX_FRAME_BYTES || cfa % 8 != 0 {
            return None;
        }
        // SAFETY: the return address's slot, and `rbp`'s, of a frame of this thread's stack,
        // where the frame's unwind information puts them (see the module doc); read volatile:
        // memory the compiler knows nothing of.
        let return_address = unsafe { core::ptr::read_volatile((cfa - 8) as *const usize) };
        if rbp_slot != 0 {
            if 8 * rbp_slot as usize > cfa - sp {
                return None; // not in this frame: leave the walk to the unwinder
            }
            // SAFETY: as above.
            fp = unsafe { core::ptr::read_volatile((cfa - 8 * rbp_slot as usize) as *const usize) };
        }
        sp = cfa;
        if return_address == 0 {
            return Some(stack);
        }
        pc = return_address - 1;
        if stack.depth == 0 && rules::in_functions(pc, internal) {
            continue;
        }
        stack.frames[stack.depth] = pc;
        stack.depth += 1;
        if stack.depth == MAX_FRAMES {
            return Some(stack);
        }
    }
}

// ------------------------------------------------------------------ any stack: the unwinder

/// Continue the walk (`_URC_NO_REASON`), or stop it (any other value: libgcc then returns
/// `_URC_FATAL_PHASE1_ERROR`).
const CONTINUE: i32 = 0;
const STOP: i32 = 4;

#[link(name = "gcc_s")]
unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(context: *mut c_void, arg: *mut c_void) -> i32,
        arg: *mut c_void,
    ) -> i32;
    fn _Unwind_GetIPInfo(context: *mut c_void, ip_before_insn: *mut c_int) -> usize;
    fn _Unwind_GetRegionStart(context: *mut c_void) -> usize;
}

/// What the system unwinder's walk fills in: the stack; the frames to leave out first.
struct Walk<'a> {
    stack: Stack,
    /// The capture's own frame.
    skip_own: bool,
    /// Functions (their first instruction's address) whose frames are left out while they
    /// are the innermost: the allocator's own, between the program and the capture.
    internal: &'a [usize],
}

/// The walk of [`capture`] by the system unwinder. Always inlined into `capture`: the first
/// frame it skips is `capture`'s.
#[inline(always)]
fn walk_by_unwinder(internal: &[usize]) -> Stack {
    let mut walk = Walk {
        stack: Stack::new(),
        skip_own: true,
        internal,
    };
    // SAFETY: `visit` matches the callback's signature and only touches `walk`, which lives
    // across the call.
    unsafe { _Unwind_Backtrace(visit, (&raw mut walk).cast()) };
    walk.stack
}

extern "C" fn visit(context: *mut c_void, arg: *mut c_void) -> i32 {
    // SAFETY: `arg` is the `Walk` that `walk_by_unwinder` passed, alive and ours for the walk.
    let walk = unsafe { &mut *arg.cast::<Walk<'_>>() };
    let mut signal_frame: c_int = 0;
    // SAFETY: the unwinder's context for the frame it visits; a valid out-pointer.
    let ip = unsafe { _Unwind_GetIPInfo(context, &mut signal_frame) };
    if ip == 0 {
        return STOP;
    }
    if walk.skip_own {
        walk.skip_own = false;
        return CONTINUE;
    }
    if walk.stack.depth == 0 && !walk.internal.is_empty() {
        // SAFETY: as above.
        let function = unsafe { _Unwind_GetRegionStart(context) };
        if walk.internal.contains(&function) {
            return CONTINUE;
        }
    }
    // A frame a signal interrupted holds the interrupted instruction's address, not a return
    // address.
    let frame = if signal_frame != 0 { ip } else { ip - 1 };
    walk.stack.frames[walk.stack.depth] = frame;
    walk.stack.depth += 1;
    if walk.stack.depth == MAX_FRAMES {
        STOP
    } else {
        CONTINUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same walk by the system unwinder only (with `capture`'s frame skipping).
    #[inline(never)]
    fn capture_by_unwinder(internal: &[usize]) -> Stack {
        walk_by_unwinder(internal)
    }

    /// The walk by rules only (with `capture`'s frame skipping); `None` where it gave up.
    #[inline(never)]
    fn capture_by_rules(internal: &[usize]) -> Option<Stack> {
        walk_by_rules(internal)
    }

    /// Both walks at the bottom of `n` frames: the first frames differ (two call sites), the
    /// rest must not.
    #[inline(never)]
    fn both_below(n: usize) -> (Stack, Stack) {
        if n == 0 {
            let by_rules = capture_by_rules(&[]).expect("walked by the rules");
            let by_unwinder = capture_by_unwinder(&[]);
            (by_rules, by_unwinder)
        } else {
            let stacks = both_below(n - 1);
            core::hint::black_box(n);
            stacks
        }
    }

    fn assert_same(by_rules: &Stack, by_unwinder: &Stack, what: &str) {
        assert_eq!(by_rules.depth, by_unwinder.depth, "{what}");
        assert_eq!(
            by_rules.frames[1..by_rules.depth],
            by_unwinder.frames[1..by_unwinder.depth],
            "{what}"
        );
    }

    #[test]
    fn the_walk_by_rules_gives_the_unwinders_stack() {
        for n in [0, 1, 5, 30, 70] {
            let (by_rules, by_unwinder) = both_below(n);
            assert!(by_rules.depth >= (n + 2).min(MAX_FRAMES), "depth {n}");
            assert_same(&by_rules, &by_unwinder, &format!("depth {n}"));
        }
    }

    /// A frame with over-aligned locals realigns its stack pointer, so its CFA comes from
    /// `rbp`.
    #[inline(never)]
    fn through_realigned_frames(n: usize) -> (Stack, Stack) {
        #[repr(align(128))]
        struct Aligned([u8; 256]);
        let mut aligned = Aligned([n as u8; 256]);
        core::hint::black_box(&mut aligned);
        let stacks = if n == 0 {
            through_big_frames(2)
        } else {
            through_realigned_frames(n - 1)
        };
        core::hint::black_box(&aligned.0[7]);
        stacks
    }

    /// A frame with a big array: its CFA is `rsp` plus more than a cache entry holds, so its
    /// rule is decoded at every step.
    #[inline(never)]
    fn through_big_frames(n: usize) -> (Stack, Stack) {
        let mut big = [n as u8; 20000];
        core::hint::black_box(&mut big);
        let stacks = if n == 0 {
            both_below(3)
        } else {
            through_big_frames(n - 1)
        };
        core::hint::black_box(&big[19999]);
        stacks
    }

    #[test]
    fn frames_realigned_or_too_big_to_cache_are_walked_alike() {
        use super::super::cfi::{Rule, rule_at};
        for _ in 0..2 {
            // (twice: the second walk takes what it can from the cache)
            let (by_rules, by_unwinder) = through_realigned_frames(3);
            assert_same(&by_rules, &by_unwinder, "odd frames");
        }
        let realigned = through_realigned_frames as fn(usize) -> (Stack, Stack) as usize;
        let big = through_big_frames as fn(usize) -> (Stack, Stack) as usize;
        // The rules inside each (past the prologue: the largest CFA offset in the function).
        let rules = |f: usize| (0..200).filter_map(move |i| rule_at(f + i));
        assert!(
            rules(realigned).any(|r| matches!(
                r,
                Rule::Frame {
                    cfa_from_rbp: true,
                    ..
                }
            )),
            "a realigned frame's CFA comes from rbp"
        );
        assert!(
            rules(big).any(|r| matches!(r, Rule::Frame { cfa_from_rbp: false, cfa_offset, .. } if cfa_offset > 20000)),
            "a big frame's CFA is far above its stack pointer"
        );
    }

    #[test]
    fn threads_stacks_end_where_the_unwinders_do() {
        std::thread::spawn(|| {
            let (by_rules, by_unwinder) = both_below(4);
            assert_same(&by_rules, &by_unwinder, "a thread");
        })
        .join()
        .unwrap();
    }

    static IN_HANDLER: std::sync::Mutex<(usize, usize)> = std::sync::Mutex::new((0, 0));

    extern "C" fn on_signal(_: libc::c_int) {
        let given_up = capture_by_rules(&[]).is_none();
        let (captured, by_unwinder) = (capture(&[]), capture_by_unwinder(&[]));
        let same = captured.frames[1..captured.depth] == by_unwinder.frames[1..by_unwinder.depth];
        *IN_HANDLER.lock().unwrap() = (captured.depth, usize::from(same && given_up));
    }

    /// A walk through a signal frame (the handler's caller is the interrupted code, not a
    /// call) is left to the unwinder, and goes on past the signal.
    #[test]
    fn a_stack_through_a_signal_frame_is_the_unwinders() {
        // SAFETY: a handler that only captures stacks and stores two numbers; raised and
        // handled on this thread, then the default restored.
        unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigaction(libc::SIGUSR2, &action, core::ptr::null_mut());
            libc::raise(libc::SIGUSR2);
            libc::signal(libc::SIGUSR2, libc::SIG_DFL);
        }
        let (depth, same) = *IN_HANDLER.lock().unwrap();
        let here = capture(&[]).depth;
        assert!(
            depth > here,
            "the handler's stack goes past the signal: {depth} frames"
        );
        assert_eq!(
            same, 1,
            "the rules were followed through the signal frame, or differ"
        );
    }

    #[inline(never)]
    fn inner() -> Stack {
        let stack = capture(&[inner as fn() -> Stack as usize]);
        core::hint::black_box(stack)
    }

    #[test]
    fn internal_frames_are_left_out() {
        let with = capture(&[]);
        let without = inner();
        // `inner`'s frame is gone: both stacks start in this test function, and the frames
        // beyond it (the test harness) are the same.
        assert_eq!(with.depth, without.depth);
        assert_eq!(with.frames[1..with.depth], without.frames[1..without.depth]);
        let not_skipped = capture(&[]);
        assert_ne!(with.frames[0], not_skipped.frames[0], "two call sites");
    }
}
