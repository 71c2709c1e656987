//! Linux: `mmap`, `madvise`, `mremap`, `munmap` through `libc`.
//!
//! Reservations are mapped read-write with `MAP_NORESERVE`: with overcommit (the default) this
//! costs no commit charge, needs no `mprotect` to commit, and so never splits the kernel's
//! mapping (each split counts against `vm.max_map_count`). Purging is `MADV_DONTNEED`, after
//! which private anonymous memory reads as zero.
//!
//! No call here leaves `errno` changed (see [`errno_preserved`]).
//!
//! Layer: `os`, above `sync`; calls only `sync::atomic` (and `libc`).

use core::ptr::NonNull;

use super::{Os, Remap, ThpSystem, errno_preserved};
use crate::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

pub(crate) struct LinuxOs {
    page_size: AtomicUsize,
    /// `vm.overcommit_memory`, plus one (0: not read yet).
    overcommit_mode: AtomicU8,
    /// Set once the kernel refused `MREMAP_DONTUNMAP` (before Linux 5.7).
    no_dontunmap: AtomicU8,
    /// Set once the kernel refused `MADV_COLLAPSE` as unknown (before Linux 6.1).
    no_collapse: AtomicU8,
}

impl LinuxOs {
    pub(crate) const fn new() -> LinuxOs {
        LinuxOs {
            page_size: AtomicUsize::new(0),
            overcommit_mode: AtomicU8::new(0),
            no_dontunmap: AtomicU8::new(0),
            no_collapse: AtomicU8::new(0),
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
        let size = errno_preserved(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) });
        let size = if size > 0 { size as usize } else { 4096 };
        self.page_size.store(size, Ordering::Relaxed);
        size
    }

    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // Over-reserve by the alignment, then trim both ends so only the aligned part stays.
        let align = align.max(self.page_size());
        let padded = size.checked_add(align - self.page_size())?;
        errno_preserved(|| {
            // SAFETY: an anonymous private mapping at an address of the kernel's choosing
            // cannot overlap any existing mapping.
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
            // SAFETY: both ranges are parts of the mapping we just made, which nothing else
            // uses.
            unsafe {
                if head > 0 {
                    libc::munmap(raw, head);
                }
                if tail > 0 {
                    libc::munmap((aligned + size) as *mut libc::c_void, tail);
                }
            }
            NonNull::new(aligned as *mut u8)
        })
    }

    fn strict_overcommit(&self) -> bool {
        // Relaxed: a cache of a system setting; racing first readers store the same value.
        let mut mode = self.overcommit_mode.load(Ordering::Relaxed);
        if mode == 0 {
            mode = errno_preserved(read_overcommit_mode) + 1;
            self.overcommit_mode.store(mode, Ordering::Relaxed);
        }
        mode == 3 // vm.overcommit_memory = 2
    }

    fn purge(&self, addr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the caller owns the range (it lies in one of our reservations and holds no
        // live block); MADV_DONTNEED only drops its pages.
        errno_preserved(|| unsafe {
            libc::madvise(addr.as_ptr().cast(), size, libc::MADV_DONTNEED) == 0
        })
    }

    fn reset(&self, addr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the caller owns the range, which lies in one of our reservations and is
        // mapped; MAP_FIXED replaces exactly that range with a fresh mapping of the same kind,
        // atomically (there is no moment at which the range is unmapped).
        let fresh = unsafe { map(addr.as_ptr(), size, libc::MAP_FIXED) };
        fresh || self.purge(addr, size)
    }

    fn thp_system(&self) -> ThpSystem {
        // SAFETY: PR_GET_THP_DISABLE takes no pointer arguments.
        let disabled =
            errno_preserved(|| unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) });
        if disabled > 0 {
            return ThpSystem::Never;
        }
        errno_preserved(read_thp_enabled)
    }

    fn advise_huge(&self, addr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the caller owns the range (in one of our reservations); the advice changes
        // only how the kernel backs it.
        errno_preserved(|| unsafe {
            libc::madvise(addr.as_ptr().cast(), size, libc::MADV_HUGEPAGE) == 0
        })
    }

    fn collapse_huge(&self, addr: NonNull<u8>, size: usize) -> bool {
        // Relaxed: a cache of what the kernel supports.
        if self.no_collapse.load(Ordering::Relaxed) != 0 {
            return false;
        }
        errno_preserved(|| {
            // SAFETY: as in `advise_huge`; collapsing keeps every byte's value.
            let done = unsafe { libc::madvise(addr.as_ptr().cast(), size, MADV_COLLAPSE) } == 0;
            // SAFETY: this thread's errno, just set by a failed call.
            if !done && unsafe { *libc::__errno_location() } == libc::EINVAL {
                self.no_collapse.store(1, Ordering::Relaxed);
            }
            done
        })
    }

    fn forbid_huge(&self, addr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: as in `advise_huge`.
        errno_preserved(|| unsafe {
            libc::madvise(addr.as_ptr().cast(), size, libc::MADV_NOHUGEPAGE) == 0
        })
    }

    fn now_ns(&self) -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }

    fn coarse_now_ns(&self) -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC_COARSE)
    }

    fn remap(&self, from: NonNull<u8>, to: NonNull<u8>, size: usize) -> Remap {
        errno_preserved(|| {
            // Relaxed: a cache of what the kernel supports.
            if self.no_dontunmap.load(Ordering::Relaxed) == 0 {
                // SAFETY: both ranges lie in our reservations and the caller owns them.
                match unsafe { move_keeping_source(from, to, size) } {
                    Some(true) => return Remap::Moved,
                    Some(false) => return Remap::Failed,
                    None => self.no_dontunmap.store(1, Ordering::Relaxed),
                }
            }
            // SAFETY: as above.
            unsafe { move_then_map_source(from, to, size) }
        })
    }

    fn release(&self, addr: NonNull<u8>, size: usize) {
        // SAFETY: the caller returns a whole reservation it no longer uses.
        errno_preserved(|| unsafe {
            libc::munmap(addr.as_ptr().cast(), size);
        });
    }
}

/// Moves the pages with `MREMAP_DONTUNMAP`: the source stays mapped throughout (and reads as
/// zero afterwards), so no other mapping can ever land in it. `Some(true)` if moved,
/// `Some(false)` if nothing changed, `None` if the kernel does not know the flag (before
/// Linux 5.7, or 5.7–5.12 for mappings other than private anonymous ones).
///
/// # Safety
/// Both ranges lie in our reservations, are owned by the caller and do not overlap.
unsafe fn move_keeping_source(from: NonNull<u8>, to: NonNull<u8>, size: usize) -> Option<bool> {
    // SAFETY: forwarded from the caller; MREMAP_FIXED replaces the (unused) destination.
    let moved = unsafe {
        libc::mremap(
            from.as_ptr().cast(),
            size,
            size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP,
            to.as_ptr().cast::<libc::c_void>(),
        )
    };
    if moved != libc::MAP_FAILED {
        return Some(true);
    }
    // SAFETY: this thread's errno, just set by the failed call.
    match unsafe { *libc::__errno_location() } {
        libc::EINVAL => None,
        _ => Some(false), // ENOMEM (no room for the mapping count, or charge): nothing changed
    }
}

/// The fallback for kernels without `MREMAP_DONTUNMAP`: move (which unmaps the source), then
/// map the source again, but only if it is still free. Between the two calls another thread
/// may have been given the hole; `MAP_FIXED_NOREPLACE` then fails instead of destroying its
/// memory, and the range is reported lost.
///
/// # Safety
/// As for [`move_keeping_source`].
unsafe fn move_then_map_source(from: NonNull<u8>, to: NonNull<u8>, size: usize) -> Remap {
    // SAFETY: forwarded from the caller.
    let moved = unsafe {
        libc::mremap(
            from.as_ptr().cast(),
            size,
            size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to.as_ptr().cast::<libc::c_void>(),
        )
    };
    if moved == libc::MAP_FAILED {
        return Remap::Failed;
    }
    // SAFETY: maps only if nothing is mapped there (NOREPLACE), so it cannot clobber anything.
    if unsafe { map(from.as_ptr(), size, libc::MAP_FIXED_NOREPLACE) } {
        Remap::Moved
    } else {
        Remap::MovedSourceLost
    }
}

/// Maps `[addr, addr + size)` afresh, read-write, like the reservation it lies in, with
/// `placement` `MAP_FIXED` (replace what is there) or `MAP_FIXED_NOREPLACE` (only if free).
/// True if the mapping is now there.
///
/// # Safety
/// With `MAP_FIXED`, the range lies in one of our reservations and the caller owns it (its
/// contents are lost).
unsafe fn map(addr: *mut u8, size: usize, placement: libc::c_int) -> bool {
    // SAFETY: forwarded from the caller.
    let mapped = unsafe {
        libc::mmap(
            addr.cast(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | placement,
            -1,
            0,
        )
    };
    if mapped == addr.cast() {
        return true;
    }
    if mapped != libc::MAP_FAILED {
        // A kernel before 4.17 takes MAP_FIXED_NOREPLACE for a hint and maps elsewhere.
        // SAFETY: the mapping we just made, which nothing else knows of.
        unsafe { libc::munmap(mapped, size) };
    }
    false
}

/// `vm.overcommit_memory` (0 heuristic, 1 always, 2 strict), read without allocating; 0 if it
/// cannot be read.
fn read_overcommit_mode() -> u8 {
    // SAFETY: a NUL-terminated path; the descriptor is ours and closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/sys/vm/overcommit_memory".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return 0;
    }
    let mut byte = 0u8;
    // SAFETY: reading one byte into our buffer from our descriptor.
    let got = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    match (got, byte) {
        (1, b'0'..=b'2') => byte - b'0',
        _ => 0,
    }
}

/// `MADV_COLLAPSE` (Linux 6.1; not in every `libc` release yet).
const MADV_COLLAPSE: libc::c_int = 25;

/// `/sys/kernel/mm/transparent_hugepage/enabled`, read without allocating: the bracketed word
/// is the setting. `Never` if it cannot be read (no THP in this kernel).
fn read_thp_enabled() -> ThpSystem {
    // SAFETY: a NUL-terminated path; the descriptor is ours and closed below.
    let fd = unsafe {
        libc::open(
            c"/sys/kernel/mm/transparent_hugepage/enabled".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return ThpSystem::Never;
    }
    let mut buf = [0u8; 64];
    // SAFETY: reading into our buffer from our descriptor.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    let text = &buf[..got.max(0) as usize];
    let chosen = text
        .split(|&b| b == b'[')
        .nth(1)
        .and_then(|rest| rest.split(|&b| b == b']').next());
    match chosen {
        Some(b"always") => ThpSystem::Always,
        Some(b"madvise") => ThpSystem::Madvise,
        _ => ThpSystem::Never,
    }
}

/// Reads a monotonic clock in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the monotonic clocks cannot fail on Linux (and the
    // vDSO call sets no errno).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
