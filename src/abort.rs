//! Fatal errors: a detected invalid or double free. The message goes straight to stderr with
//! `write(2)` (no formatting machinery, no allocation) and the process aborts, because
//! continuing after heap corruption only spreads it.

/// Aborts: `ptr` was passed to free/realloc but is not a live block of this allocator.
#[cold]
#[inline(never)]
pub(crate) fn invalid_free(ptr: *mut u8) -> ! {
    fatal(
        "invalid free: pointer ",
        ptr as usize,
        " was not allocated by vmarena (or was already freed)\n",
    )
}

/// Aborts: the block at `ptr` is already free.
#[cold]
#[inline(never)]
pub(crate) fn double_free(ptr: *mut u8) -> ! {
    fatal("double free: block ", ptr as usize, " is already free\n")
}

fn fatal(before: &str, addr: usize, after: &str) -> ! {
    let mut hex = [0u8; 18];
    hex[0] = b'0';
    hex[1] = b'x';
    for (i, digit) in hex[2..].iter_mut().enumerate() {
        let nibble = (addr >> (60 - 4 * i)) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    for part in [
        b"vmarena: ".as_slice(),
        before.as_bytes(),
        &hex,
        after.as_bytes(),
    ] {
        // SAFETY: writing a valid buffer to fd 2; a failed write changes nothing here.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
