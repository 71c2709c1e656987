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
//! The unwinder costs about 100 ns a frame, and a program's outer frames (`main`, a thread's
//! start, a server's loop) are the same from one sample to the next. So on x86-64 each heap
//! keeps its previous sample's frames with the stack pointer each had at its call (the CFA the
//! unwinder reports for it): when the walk reaches a frame with the same return address and
//! stack pointer as one of those, and the return-address slot of every frame outwards from it
//! (just below that stack pointer, where the x86-64 call put it) still holds the address
//! recorded, the rest of the stack is the one recorded, and the walk stops there. Those slots
//! are read directly: they lie outwards of a live frame of this thread's stack, between it and
//! frames the unwinder read on the same stack the last time. A walk that met a signal frame or
//! another stack (a stack pointer going down: a signal stack, a coroutine's) is never reused.
//! What remains: a coroutine stack freed and a smaller one mapped where it was, with a frame at
//! the very address and return address of the previous sample's, would make the reads run
//! past its top.
//!
//! Layer: `sampling`; calls the system unwinder only.

use core::ffi::{c_int, c_void};

/// Frames kept per sample (the innermost, after the allocator's own).
pub(crate) const MAX_FRAMES: usize = 64;

/// A captured stack: return addresses, innermost first, each less one so that it falls
/// inside the call instruction (and so on the caller's line).
pub(crate) struct Stack {
    pub(crate) depth: usize,
    pub(crate) frames: [usize; MAX_FRAMES],
    /// The outer frames came from the previous sample (the walk stopped early).
    pub(crate) reused: bool,
}

/// Continue the walk (`_URC_NO_REASON`), or stop it (any other value: libgcc then returns
/// `_URC_FATAL_PHASE1_ERROR`); what `_Unwind_Backtrace` returns at the stack's end, or at a
/// frame without unwind information (`_URC_END_OF_STACK`).
const CONTINUE: i32 = 0;
const STOP: i32 = 4;
const END_OF_STACK: i32 = 5;

/// A heap's previous sample, for the next walk to stop early (see the module doc). Owner only.
pub(crate) struct Previous {
    frames: [usize; MAX_FRAMES],
    cfas: [usize; MAX_FRAMES],
    depth: usize,
    /// The walk reached the stack's end (not cut at `MAX_FRAMES`): only then is the rest of
    /// a stack known.
    complete: bool,
}

impl Previous {
    pub(crate) const fn new() -> Previous {
        Previous {
            frames: [0; MAX_FRAMES],
            cfas: [0; MAX_FRAMES],
            depth: 0,
            complete: false,
        }
    }
}

#[link(name = "gcc_s")]
unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(context: *mut c_void, arg: *mut c_void) -> i32,
        arg: *mut c_void,
    ) -> i32;
    fn _Unwind_GetIPInfo(context: *mut c_void, ip_before_insn: *mut c_int) -> usize;
    fn _Unwind_GetRegionStart(context: *mut c_void) -> usize;
    fn _Unwind_GetCFA(context: *mut c_void) -> usize;
}

/// What the walk fills in: the stack; the frames to leave out first.
struct Walk<'a> {
    stack: Stack,
    /// The capture's own frame.
    skip_own: bool,
    /// Functions (their first instruction's address) whose frames are left out while they
    /// are the innermost: the allocator's own, between the program and the capture.
    internal: &'a [usize],
    /// The CFA of each frame kept.
    cfas: [usize; MAX_FRAMES],
    previous: &'a Previous,
    /// The first frame of `previous` whose CFA is not below the walk's (CFAs grow outwards).
    next_previous: usize,
    /// The rest of the stack was taken from `previous` (and is complete if it was).
    reused: bool,
    /// The walk reached a frame without a return address: the stack's end.
    ended: bool,
    /// The walk met a signal frame or another stack (see `visit`).
    irregular: bool,
    /// A frame of `previous` that matched the last frame recorded (see `ends_on_previous`).
    candidate: Option<usize>,
}

/// Whether the stack outwards from `previous`'s frame `at` is still there: the return-address
/// slot of each frame outwards still holds that frame's return address. (A frame whose size
/// varies from call to call, `alloca`, could leave an old return address where a new frame's
/// slot is not: then the callers further out are the old ones. Not seen; the candidate's own
/// frame size is pinned by its next frame.) (The unwinder's CFA
/// for a frame, when it calls back, is the frame's stack pointer at its call, the callee's
/// CFA; the x86-64 call pushed the return address just below it.)
#[cfg(target_arch = "x86_64")]
fn still_there(previous: &Previous, at: usize) -> bool {
    (at + 1..previous.depth).all(|k| {
        // SAFETY: see the module doc: a slot of this thread's stack, outwards of a live frame
        // and below frames the unwinder read before, on a stack still mapped. Read volatile:
        // memory the compiler knows nothing of.
        let slot = unsafe { core::ptr::read_volatile((previous.cfas[k] - 8) as *const usize) };
        slot == previous.frames[k] + 1
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn still_there(_: &Previous, _: usize) -> bool {
    false // the return address's slot is not at a fixed place
}

extern "C" fn visit(context: *mut c_void, arg: *mut c_void) -> i32 {
    // SAFETY: `arg` is the `Walk` that `capture` passed, alive and ours for the walk.
    let walk = unsafe { &mut *arg.cast::<Walk<'_>>() };
    let mut signal_frame: c_int = 0;
    // SAFETY: the unwinder's context for the frame it visits; a valid out-pointer.
    let ip = unsafe { _Unwind_GetIPInfo(context, &mut signal_frame) };
    if ip == 0 {
        walk.ended = true;
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
    // SAFETY: as above.
    let cfa = unsafe { _Unwind_GetCFA(context) };
    // A frame a signal interrupted holds no return address at its stack pointer (its IP is
    // the interrupted instruction's, not a return address), and a stack pointer below the
    // last one means another stack (a signal stack, a coroutine's): such a stack is never
    // reused, nor used to end this walk.
    let depth = walk.stack.depth;
    if signal_frame != 0 || (depth > 0 && cfa < walk.cfas[depth - 1]) {
        walk.irregular = true;
    }
    let frame = if signal_frame != 0 { ip } else { ip - 1 };
    walk.stack.frames[depth] = frame;
    walk.cfas[depth] = cfa;
    walk.stack.depth += 1;
    if !walk.irregular && walk.previous.complete && ends_on_previous(walk, frame, cfa) {
        return STOP;
    }
    if walk.stack.depth == MAX_FRAMES {
        STOP
    } else {
        CONTINUE
    }
}

/// Whether the walk, having just recorded `frame` at `cfa`, can take the rest of the stack
/// from the previous sample (and has: then the caller stops). A frame of the previous sample
/// with the same return address and stack pointer is a candidate; the next frame decides: it
/// must equal the candidate's next too (which pins the candidate's frame size), and every slot
/// outwards must still hold its return address.
fn ends_on_previous(walk: &mut Walk<'_>, frame: usize, cfa: usize) -> bool {
    let previous = walk.previous;
    if let Some(candidate) = walk.candidate.take() {
        let next = candidate + 1;
        if previous.frames[next] == frame
            && previous.cfas[next] == cfa
            && still_there(previous, next)
        {
            let rest = (previous.depth - next - 1).min(MAX_FRAMES - walk.stack.depth);
            let (from, to) = (
                next + 1..next + 1 + rest,
                walk.stack.depth..walk.stack.depth + rest,
            );
            walk.stack.frames[to.clone()].copy_from_slice(&previous.frames[from.clone()]);
            walk.cfas[to].copy_from_slice(&previous.cfas[from]);
            walk.stack.depth += rest;
            walk.reused = true;
            return true;
        }
    }
    while walk.next_previous < previous.depth && previous.cfas[walk.next_previous] < cfa {
        walk.next_previous += 1;
    }
    let at = walk.next_previous;
    // A candidate needs a next frame in the previous sample to be pinned by.
    if at + 1 < previous.depth && previous.cfas[at] == cfa && previous.frames[at] == frame {
        walk.candidate = Some(at);
    }
    false
}

/// The calling thread's stack from the caller of `capture` outwards, less the innermost frames
/// of the functions in `internal` (the allocator's own: the program's frame is then the
/// first). `previous` is the calling heap's last sample, which the walk may end on and which
/// becomes this one. `#[inline(never)]`: its own frame is one the walk skips.
#[inline(never)]
pub(crate) fn capture(internal: &[usize], previous: &mut Previous) -> Stack {
    let mut walk = Walk {
        stack: Stack {
            depth: 0,
            frames: [0; MAX_FRAMES],
            reused: false,
        },
        skip_own: true,
        internal,
        cfas: [0; MAX_FRAMES],
        previous,
        next_previous: 0,
        reused: false,
        ended: false,
        irregular: false,
        candidate: None,
    };
    // SAFETY: `visit` matches the callback's signature and only touches `walk`, which lives
    // across the call.
    let end = unsafe { _Unwind_Backtrace(visit, (&raw mut walk).cast()) };
    let complete = if walk.irregular {
        false
    } else if walk.reused {
        walk.stack.depth < MAX_FRAMES
    } else {
        walk.ended || end == END_OF_STACK
    };
    let Walk {
        mut stack,
        cfas,
        reused,
        ..
    } = walk;
    stack.reused = reused;
    let (frames, depth) = (stack.frames, stack.depth);
    *previous = Previous {
        frames,
        cfas,
        depth,
        complete,
    };
    stack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn depth_below(n: usize) -> Stack {
        if n == 0 {
            capture(&[], &mut Previous::new())
        } else {
            let stack = depth_below(n - 1);
            core::hint::black_box(n);
            stack
        }
    }

    /// Captures at the bottom of `n` frames: with `previous` (which may end the walk early),
    /// and without.
    #[inline(never)]
    fn both_below(n: usize, previous: &mut Previous) -> (Stack, Stack) {
        if n == 0 {
            let with = capture(&[], previous);
            let without = capture(&[], &mut Previous::new());
            (with, without)
        } else {
            let stacks = both_below(n - 1, previous);
            core::hint::black_box(n);
            stacks
        }
    }

    #[test]
    fn a_walk_that_ends_on_the_previous_stack_gives_the_same_stack() {
        let mut previous = Previous::new();
        let mut reused = 0;
        for n in [5, 5, 3, 8, 8, 2, 2, 7, 0, 0, 70, 70, 6] {
            let (with, without) = both_below(n, &mut previous);
            assert_eq!(with.depth, without.depth, "depth {n}");
            // The two captures are two call sites: their first frames differ, the rest not.
            assert_eq!(
                with.frames[1..with.depth],
                without.frames[1..without.depth],
                "depth {n}"
            );
            reused += usize::from(with.reused);
        }
        if cfg!(target_arch = "x86_64") {
            assert!(reused >= 5, "the walk ended early {reused} times");
        }
    }

    static IN_HANDLER: std::sync::Mutex<(usize, usize)> = std::sync::Mutex::new((0, 0));

    extern "C" fn on_signal(_: libc::c_int) {
        let mut previous = Previous::new();
        let first = capture(&[], &mut previous);
        let second = capture(&[], &mut previous);
        *IN_HANDLER.lock().unwrap() = (first.depth, usize::from(second.reused));
    }

    /// A walk through a signal frame (the handler's caller is the interrupted code, not a
    /// call) is never kept for reuse: the second capture walks the whole stack again.
    #[test]
    fn a_stack_through_a_signal_frame_is_not_reused() {
        // SAFETY: a handler that only captures stacks and stores two numbers; raised and
        // handled on this thread, then the default restored.
        unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigaction(libc::SIGUSR2, &action, core::ptr::null_mut());
            libc::raise(libc::SIGUSR2);
            libc::signal(libc::SIGUSR2, libc::SIG_DFL);
        }
        let (depth, reused) = *IN_HANDLER.lock().unwrap();
        assert!(depth >= 3, "the handler's stack: {depth} frames");
        assert_eq!(reused, 0, "a stack through a signal frame was reused");
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
        let stack = capture(&[inner as fn() -> Stack as usize], &mut Previous::new());
        core::hint::black_box(stack)
    }

    #[test]
    fn internal_frames_are_left_out() {
        let with = capture(&[], &mut Previous::new());
        let without = inner();
        // `inner`'s frame is gone: both stacks start in this test function, and the frames
        // beyond it (the test harness) are the same.
        assert_eq!(with.depth, without.depth);
        assert_eq!(with.frames[1..with.depth], without.frames[1..without.depth]);
        let not_skipped = capture(&[], &mut Previous::new());
        assert_ne!(with.frames[0], not_skipped.frames[0], "two call sites");
    }
}
