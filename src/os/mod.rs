//! The operating-system back end: every system call the allocator makes goes through [`Os`].
//!
//! [`linux::LinuxOs`] is the real one. [`fake::FakeOs`] serves memory from the process's own
//! heap and records what was asked of it, so region logic can run under Miri and in unit tests
//! without touching the address space. Failures are reported as `false`/`None`, never panics,
//! and never change `errno` (POSIX requires `free` to leave it alone, and any of these may run
//! inside a `free`).
//!
//! Layer: `os`, above `sync`; calls `options` to warn when memory runs out. `arena` calls it
//! for memory; most other modules call its `errno` helpers.

// Scaffolding: only tests, Miri and the fuzzing harness use the fake back end.
#[cfg(any(test, miri, feature = "fuzzing"))]
pub(crate) mod fake;
pub(crate) mod linux;

use core::ptr::NonNull;

/// Sets this thread's `errno` (what C callers read after a null; a Rust caller never looks).
#[cold]
pub(crate) fn set_errno(code: i32) {
    // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
    unsafe { *libc::__errno_location() = code };
}

/// This thread's `errno`.
pub(crate) fn errno() -> i32 {
    // SAFETY: as for `set_errno`.
    unsafe { *libc::__errno_location() }
}

/// Null for an allocation that cannot be served, with `errno = ENOMEM` as C callers expect
/// (every allocation path returns this rather than a bare null).
#[cold]
pub(crate) fn out_of_memory() -> *mut u8 {
    crate::options::report::out_of_memory();
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}

/// Runs `f` and puts `errno` back as it was. Every system call the allocator makes goes
/// through this: they run inside `free` and `realloc` too, and C programs (gnulib's among
/// them) rely on `free` never changing `errno` (POSIX.1-2024; glibc since 2.33).
pub(crate) fn errno_preserved<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    let result = f();
    // SAFETY: as above.
    unsafe { *errno = saved };
    result
}

/// The outcome of [`Os::remap`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Remap {
    /// Nothing changed.
    Failed,
    /// The pages moved; the source range reads as zero.
    Moved,
    /// The pages moved but the source range is no longer ours (it could not be mapped again,
    /// or another mapping of the process took it): it must never be touched or handed out.
    MovedSourceLost,
}

/// What the system lets this process do with transparent huge pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ThpSystem {
    /// No huge pages: THP is `never`, or off for this process (`prctl(PR_SET_THP_DISABLE)`),
    /// or the kernel has none.
    Never,
    /// Huge pages where a mapping asks for them (`madvise`, most distributions' default).
    Madvise,
    /// Huge pages for all anonymous memory, asked for or not (`always`).
    Always,
}

pub(crate) trait Os: Sync {
    /// The OS page size, read at run time (4 KiB, 16 KiB or 64 KiB on aarch64).
    fn page_size(&self) -> usize;

    /// Reserves `size` bytes of address space aligned to `align` (a power of two), readable
    /// and writable, reading as zero. There is no separate commit step: memory is backed on
    /// first touch. (Under strict overcommit the kernel charges the whole reservation at once;
    /// see [`Os::strict_overcommit`].)
    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>>;

    /// True if the system charges every reservation in full against a commit limit (Linux
    /// `vm.overcommit_memory=2`, where `MAP_NORESERVE` is ignored): the arena then reserves in
    /// smaller steps, so that one process does not take the machine's whole commit budget.
    fn strict_overcommit(&self) -> bool;

    /// Gives the physical memory behind `[addr, addr + size)` back; the range stays reserved
    /// and reads as zero afterwards.
    fn purge(&self, addr: NonNull<u8>, size: usize) -> bool;

    /// Like [`Os::purge`], and also gives the range a fresh mapping, so that pieces a
    /// [`Os::remap`] moved in (which the kernel keeps as mappings of their own) merge back into
    /// their neighbours. Costlier than `purge`: use it only on ranges that held moved pages.
    fn reset(&self, addr: NonNull<u8>, size: usize) -> bool;

    /// A monotonic clock in nanoseconds (for lock-hold times).
    fn now_ns(&self) -> u64;

    /// The same clock read cheaply, to within a clock tick (a few milliseconds): for purge
    /// deadlines, which every large free and page release sets. On Linux the coarse clock
    /// costs a fraction of the precise one (`docs/findings.md`, "The coarse clock").
    fn coarse_now_ns(&self) -> u64 {
        self.now_ns()
    }

    /// Moves the pages of `[from, from + size)` to `[to, to + size)` (both inside reservations,
    /// not overlapping) without copying where the OS can move page tables. The source range
    /// must never be unmapped, not even for an instant: another thread of the process could be
    /// given the hole by the kernel, and mapping the source again would then destroy that
    /// thread's memory. Where that cannot be guaranteed the result is
    /// [`Remap::MovedSourceLost`], and the source stays out of use for good.
    fn remap(&self, from: NonNull<u8>, to: NonNull<u8>, size: usize) -> Remap;

    /// Returns a whole reservation made by [`Os::reserve`].
    fn release(&self, addr: NonNull<u8>, size: usize);

    /// What the system allows of transparent huge pages (read once by the caller).
    fn thp_system(&self) -> ThpSystem {
        ThpSystem::Never
    }

    /// Asks that `[addr, addr + size)` (whole 2 MiB huge pages) be backed with huge pages from
    /// its next fault on (`MADV_HUGEPAGE`). Memory already resident keeps its small pages.
    fn advise_huge(&self, addr: NonNull<u8>, size: usize) -> bool {
        let _ = (addr, size);
        false
    }

    /// Backs `[addr, addr + size)` (whole huge pages) with huge pages now, copying what is
    /// resident and zero-filling the rest (`MADV_COLLAPSE`, Linux 6.1). False if the kernel
    /// cannot (too old, or no huge page free): the caller falls back to [`Os::advise_huge`].
    fn collapse_huge(&self, addr: NonNull<u8>, size: usize) -> bool {
        let _ = (addr, size);
        false
    }

    /// Asks that `[addr, addr + size)` never be backed with huge pages (`MADV_NOHUGEPAGE`): a
    /// huge page broken up by partial purges, which the kernel's background collapsing
    /// (khugepaged) would otherwise fill back up to 2 MiB.
    fn forbid_huge(&self, addr: NonNull<u8>, size: usize) -> bool {
        let _ = (addr, size);
        false
    }
}
