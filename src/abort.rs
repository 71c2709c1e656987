//! Fatal errors: a detected invalid or double free, (checked mode) a corrupted free-list
//! link, or a broken internal invariant. The message goes straight to stderr with
//! `write(2)` (no formatting machinery, no allocation) and the process aborts, because
//! continuing after heap corruption only spreads it.
//!
//! Layer: a leaf service any layer may call; calls nothing in the crate (`libc` only).

/// Aborts: `ptr` was passed to free/realloc but is not a live block of this allocator.
#[cold]
#[inline(never)]
pub(crate) fn invalid_free(ptr: *mut u8) -> ! {
    fatal(&[
        Part::Text("invalid free: pointer "),
        Part::Addr(ptr as usize),
        Part::Text(" was not allocated by vmarena (or was already freed)\n"),
    ])
}

/// Aborts: the block at `ptr` is already free.
#[cold]
#[inline(never)]
pub(crate) fn double_free(ptr: *mut u8) -> ! {
    fatal(&[
        Part::Text("double free: block "),
        Part::Addr(ptr as usize),
        Part::Text(" is already free\n"),
    ])
}

/// Aborts (checked mode): the free block at `block` links to `link`, which is not a block of
/// its page: something wrote into the block after it was freed, or past the end of the block
/// before it.
#[cold]
#[inline(never)]
pub(crate) fn corrupted_free_list(block: *mut u8, link: *mut u8) -> ! {
    fatal(&[
        Part::Text("corrupted free list: free block "),
        Part::Addr(block as usize),
        Part::Text(" links to "),
        Part::Addr(link as usize),
        Part::Text(
            ", not a block of its page (a write past the end of the block before it, or into it after its free?)\n",
        ),
    ])
}

/// Aborts: an invariant of the allocator itself does not hold (a bug in vmarena, not in the
/// program), so continuing could corrupt memory.
#[cold]
#[inline(never)]
pub(crate) fn internal(what: &'static str) -> ! {
    fatal(&[
        Part::Text("internal error: "),
        Part::Text(what),
        Part::Text("\n"),
    ])
}

enum Part {
    Text(&'static str),
    Addr(usize),
}

fn fatal(parts: &[Part]) -> ! {
    write_stderr(b"vmarena: ");
    for part in parts {
        match part {
            Part::Text(text) => write_stderr(text.as_bytes()),
            Part::Addr(addr) => {
                let mut hex = [0u8; 18];
                hex[0] = b'0';
                hex[1] = b'x';
                for (i, digit) in hex[2..].iter_mut().enumerate() {
                    let nibble = (addr >> (60 - 4 * i)) & 0xf;
                    *digit = b"0123456789abcdef"[nibble];
                }
                write_stderr(&hex);
            }
        }
    }
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2; a failed write changes nothing here.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}
