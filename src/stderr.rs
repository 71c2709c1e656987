//! Messages on stderr without allocating: text is formatted into a buffer on the stack and
//! written with `write(2)`, so warnings and reports can come from allocation paths and from
//! exit hooks, where the allocator must not be entered.
//!
//! Layer: a leaf service; calls `os` (`errno_preserved`) and `libc`.

use core::fmt;

/// A `core::fmt::Write` sink for stderr: buffers on the stack, writes when full and on drop.
pub(crate) struct Stderr {
    buf: [u8; 512],
    len: usize,
}

impl Stderr {
    pub(crate) const fn new() -> Stderr {
        Stderr {
            buf: [0; 512],
            len: 0,
        }
    }

    /// Appends raw bytes (environment values need not be UTF-8).
    pub(crate) fn bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = bytes.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
    }

    /// Writes what is buffered. Failures are ignored (there is nowhere to report them), and
    /// `errno` is left as it was: this may run inside `malloc` or `free`.
    pub(crate) fn flush(&mut self) {
        let mut rest = &self.buf[..self.len];
        crate::os::errno_preserved(|| {
            while !rest.is_empty() {
                // SAFETY: `rest` is a valid buffer of `rest.len()` bytes; fd 2 may be closed,
                // which only makes the write fail.
                let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
                if n > 0 {
                    rest = &rest[n as usize..];
                } else if n == 0 || !interrupted() {
                    break;
                }
            }
        });
        self.len = 0;
    }
}

fn interrupted() -> bool {
    // SAFETY: this thread's errno, valid for the thread's life.
    unsafe { *libc::__errno_location() == libc::EINTR }
}

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

impl Drop for Stderr {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes one line, `vmarena: ` and `args`, in as few `write` calls as the buffer allows (one,
/// for lines under 512 bytes, so lines of different threads do not mix).
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut out = Stderr::new();
    out.bytes(b"vmarena: ");
    let _ = fmt::write(&mut out, args);
    out.bytes(b"\n");
}
