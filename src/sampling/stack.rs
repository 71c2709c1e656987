//! Capturing the calling thread's stack without allocating: `_Unwind_Backtrace` from the
//! system's unwinder (libgcc's), which walks the DWARF call-frame information every x86-64 and
//! AArch64 Linux object carries (`.eh_frame`; Rust emits it even with `panic=abort`, C
//! compilers by default). Frame pointers would be cheaper but are missing from most code
//! (Rust's standard library, distribution C libraries), so their stacks would stop short.
//! The unwinder takes the dynamic loader's lock to find objects, so the capture runs before
//! the sampler takes any lock of its own. It does not allocate for objects the loader knows;
//! should it allocate (frames a JIT registered with `__register_frame_info`), the heap's
//! count-down is suspended meanwhile, so that allocation is never sampled in turn.
//!
//! Layer: `sampling`; calls the system unwinder only.

use core::ffi::c_void;

/// Frames kept per sample (the innermost, after the allocator's own).
pub(crate) const MAX_FRAMES: usize = 64;

/// A captured stack: return addresses, innermost first, each less one so that it falls
/// inside the call instruction (and so on the caller's line).
pub(crate) struct Stack {
    pub(crate) depth: usize,
    pub(crate) frames: [usize; MAX_FRAMES],
}

/// Continue the walk (`_URC_NO_REASON`), or stop it (`_URC_NORMAL_STOP`).
const CONTINUE: i32 = 0;
const STOP: i32 = 4;

#[link(name = "gcc_s")]
unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(context: *mut c_void, arg: *mut c_void) -> i32,
        arg: *mut c_void,
    ) -> i32;
    fn _Unwind_GetIP(context: *mut c_void) -> usize;
    fn _Unwind_GetRegionStart(context: *mut c_void) -> usize;
}

/// What the walk fills in: the stack; the frames to leave out first.
struct Walk<'a> {
    stack: Stack,
    /// The capture's own frame.
    skip_own: bool,
    /// Functions (their first instruction's address) whose frames are left out while they
    /// are the innermost: the allocator's own, between the program and the capture.
    internal: &'a [usize],
}

extern "C" fn visit(context: *mut c_void, arg: *mut c_void) -> i32 {
    // SAFETY: `arg` is the `Walk` that `capture` passed, alive and ours for the walk.
    let walk = unsafe { &mut *arg.cast::<Walk<'_>>() };
    // SAFETY: the unwinder's context for the frame it visits.
    let ip = unsafe { _Unwind_GetIP(context) };
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
    walk.stack.frames[walk.stack.depth] = ip - 1;
    walk.stack.depth += 1;
    if walk.stack.depth == MAX_FRAMES {
        STOP
    } else {
        CONTINUE
    }
}

/// The calling thread's stack from the caller of `capture` outwards, less the innermost frames
/// of the functions in `internal` (the allocator's own: the program's frame is then the
/// first). `#[inline(never)]`: its own frame is one the walk skips.
#[inline(never)]
pub(crate) fn capture(internal: &[usize]) -> Stack {
    let mut walk = Walk {
        stack: Stack {
            depth: 0,
            frames: [0; MAX_FRAMES],
        },
        skip_own: true,
        internal,
    };
    // SAFETY: `visit` matches the callback's signature and only touches `walk`, which lives
    // across the call.
    unsafe { _Unwind_Backtrace(visit, (&raw mut walk).cast()) };
    walk.stack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn depth_below(n: usize) -> Stack {
        if n == 0 {
            capture(&[])
        } else {
            let stack = depth_below(n - 1);
            core::hint::black_box(n);
            stack
        }
    }

    #[test]
    fn deeper_calls_give_deeper_stacks() {
        let shallow = depth_below(0);
        let deep = depth_below(10);
        assert!(shallow.depth >= 2, "a stack of {} frames", shallow.depth);
        assert!(deep.depth >= (shallow.depth + 10).min(MAX_FRAMES));
        assert!(shallow.frames[..shallow.depth].iter().all(|&ip| ip != 0));
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
