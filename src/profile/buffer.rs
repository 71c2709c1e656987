//! A growable byte buffer in memory mapped for it (`mmap`, grown with `mremap`), so that
//! writing a profile never allocates through the allocator it describes. Running out of
//! memory is sticky: the buffer stops growing and says so at the end ([`Buf::ok`]).
//!
//! Layer: `profile`; calls the OS (`mmap`, `mremap`, `munmap`).

pub(crate) struct Buf {
    ptr: *mut u8,
    len: usize,
    cap: usize,
    failed: bool,
}

impl Buf {
    pub(crate) const fn new() -> Buf {
        Buf {
            ptr: core::ptr::null_mut(),
            len: 0,
            cap: 0,
            failed: false,
        }
    }

    /// A buffer of `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Buf {
        let mut buf = Buf::new();
        if buf.reserve(len) {
            buf.len = len; // fresh mappings are zero
        }
        buf
    }

    /// False if any growth failed (the contents are then incomplete).
    pub(crate) fn ok(&self) -> bool {
        !self.failed
    }

    #[cfg_attr(not(test), allow(dead_code))] // the tests read it
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the first `len` bytes of our mapping are written.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: as above, and we hold the buffer mutably.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Makes room for `more` bytes; false if the system refused.
    fn reserve(&mut self, more: usize) -> bool {
        if self.failed {
            return false;
        }
        let Some(need) = self.len.checked_add(more) else {
            self.failed = true;
            return false;
        };
        if need <= self.cap {
            return true;
        }
        let cap = need.max(self.cap * 2).max(64 << 10).next_multiple_of(4096);
        // SAFETY: a fresh anonymous mapping, or our own mapping moved with its contents.
        let p = unsafe {
            if self.ptr.is_null() {
                libc::mmap(
                    core::ptr::null_mut(),
                    cap,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            } else {
                libc::mremap(self.ptr.cast(), self.cap, cap, libc::MREMAP_MAYMOVE)
            }
        };
        if p == libc::MAP_FAILED {
            self.failed = true;
            return false;
        }
        self.ptr = p.cast();
        self.cap = cap;
        true
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.reserve(bytes.len()) {
            // SAFETY: `reserve` made room after `len`; the source is not our mapping's tail.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.len), bytes.len());
            }
            self.len += bytes.len();
        }
    }

    pub(crate) fn push_byte(&mut self, byte: u8) {
        self.push(&[byte]);
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: our own mapping, no longer used.
            unsafe { libc::munmap(self.ptr.cast(), self.cap) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_keeps_its_contents() {
        let mut buf = Buf::new();
        for i in 0..200_000u32 {
            buf.push(&i.to_le_bytes());
        }
        assert!(buf.ok());
        assert_eq!(buf.len(), 800_000);
        let s = buf.as_slice();
        assert!((0..200_000u32).all(|i| s[4 * i as usize..][..4] == i.to_le_bytes()));
        assert!(Buf::zeroed(100_000).as_slice().iter().all(|&b| b == 0));
    }
}
