//! Linux: `mmap`, `madvise`, `mremap`, `munmap` through `libc`.
//!
//! Reservations are mapped read-write with `MAP_NORESERVE`: with overcommit (the default) this
//! costs no commit charge, needs no `mprotect` to commit, and so never splits the kernel's
//! mapping (each split counts against `vm.max_map_count`). Purging is `MADV_DONTNEED`, after
//! which private anonymous memory reads as zero.

use core::ptr::NonNull;

use super::{Os, Remap};
use crate::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct LinuxOs {
    page_size: AtomicUsize,
}

impl LinuxOs {
    pub(crate) const fn new() -> LinuxOs {
        LinuxOs {
            page_size: AtomicUsize::new(0),
        }
    }
}

impl Os for LinuxOs {
    fn page_size(&self) -> usize {
        // Relaxed: a cache of a constant; racing initialisations store the same value.
        let cached = self.page_size.load(Ordering::Relaxed);
        if cached != 0 {
            return cached;
        }
        // SAFETY: sysconf has no memory-safety preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let size = if size > 0 { size as usize } else { 4096 };
        self.page_size.store(size, Ordering::Relaxed);
        size
    }

    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // Over-reserve by the alignment, then trim both ends so only the aligned part stays.
        let align = align.max(self.page_size());
        let padded = size.checked_add(align - self.page_size())?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing cannot
        // overlap any existing mapping.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                padded,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = (start + align - 1) & !(align - 1);
        let head = aligned - start;
        let tail = padded - head - size;
        // SAFETY: both ranges are parts of the mapping we just made and that nothing else uses.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + size) as *mut libc::c_void, tail);
            }
        }
        NonNull::new(aligned as *mut u8)
    }

    fn commit(&self, _addr: NonNull<u8>, _size: usize) -> bool {
        true // reservations are already read-write
    }

    fn purge(&self, addr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the caller owns the range (it lies in one of our reservations and holds no
        // live block); MADV_DONTNEED only drops its pages.
        unsafe { libc::madvise(addr.as_ptr().cast(), size, libc::MADV_DONTNEED) == 0 }
    }

    fn reset(&self, addr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the caller owns the range, which lies in one of our reservations; MAP_FIXED
        // replaces exactly that range with a fresh mapping of the reservation's kind.
        let fresh = unsafe { map_fixed(addr.as_ptr(), size) };
        fresh || self.purge(addr, size)
    }

    fn now_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC cannot fail on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn remap(&self, from: NonNull<u8>, to: NonNull<u8>, size: usize) -> Remap {
        // SAFETY: both ranges belong to our reservations and the caller owns them. MREMAP_FIXED
        // replaces the (unused) destination pages; the source is then unmapped, so we map it
        // again right away to keep the reservation whole.
        unsafe {
            let moved = libc::mremap(
                from.as_ptr().cast(),
                size,
                size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to.as_ptr().cast::<libc::c_void>(),
            );
            if moved == libc::MAP_FAILED {
                return Remap::Failed;
            }
            if map_fixed(from.as_ptr(), size) {
                Remap::Moved
            } else {
                Remap::MovedSourceLost
            }
        }
    }

    fn release(&self, addr: NonNull<u8>, size: usize) {
        // SAFETY: the caller returns a whole reservation it no longer uses.
        unsafe {
            libc::munmap(addr.as_ptr().cast(), size);
        }
    }
}

/// Maps `[addr, addr + size)` afresh, read-write, like the reservation it lies in.
///
/// # Safety
/// The range lies in one of our reservations and the caller owns it (its contents are lost).
unsafe fn map_fixed(addr: *mut u8, size: usize) -> bool {
    // SAFETY: forwarded from the caller.
    let mapped = unsafe {
        libc::mmap(
            addr.cast(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    mapped != libc::MAP_FAILED
}
