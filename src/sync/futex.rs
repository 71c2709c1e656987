//! Sleeping and waking on a 32-bit word: the only blocking primitive the allocator uses.
//!
//! Linux futexes need no memory of their own, so waiting never allocates. Spurious wake-ups are
//! allowed: every caller re-checks its condition in a loop. Under loom there is no kernel to sleep
//! in, so waiting becomes a yield and the model checker explores the retry loop instead.
//!
//! Layer: `sync`, the bottom; calls `sync::atomic`, and `os::errno_preserved` around the system
//! call.

use super::atomic::AtomicU32;

/// Sleeps while `*word == expected`. Returns on a wake-up, a signal, a timeout or at once if the
/// word already differs.
#[inline]
pub(crate) fn wait(word: &AtomicU32, expected: u32) {
    #[cfg(vmarena_loom)]
    {
        let _ = (word, expected);
        loom::thread::yield_now();
    }
    #[cfg(not(vmarena_loom))]
    // SAFETY: FUTEX_WAIT only reads the 32-bit word, which `word` keeps alive and aligned for the
    // duration of the call; a null timeout means "no timeout". A failure (EAGAIN when the value
    // already changed, EINTR) is fine because every caller re-checks its condition; the errno
    // it sets is put back (a `free` that waited must not change errno).
    crate::os::errno_preserved(|| unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    });
}

/// Wakes every thread sleeping on `word`.
#[inline]
pub(crate) fn wake_all(word: &AtomicU32) {
    #[cfg(vmarena_loom)]
    let _ = word;
    #[cfg(not(vmarena_loom))]
    // SAFETY: FUTEX_WAKE does not access the word's memory beyond using its address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Wakes one thread sleeping on `word`.
#[inline]
pub(crate) fn wake_one(word: &AtomicU32) {
    #[cfg(vmarena_loom)]
    let _ = word;
    #[cfg(not(vmarena_loom))]
    // SAFETY: as for `wake_all`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}
