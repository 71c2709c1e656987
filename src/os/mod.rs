//! The operating-system back end: every system call the allocator makes goes through [`Os`].
//!
//! [`linux::LinuxOs`] is the real one. [`fake::FakeOs`] serves memory from the process's own
//! heap and records what was asked of it, so region logic can run under Miri and in unit tests
//! without touching the address space. Failures are reported as `false`/`None`, never panics.

pub(crate) mod fake;
pub(crate) mod linux;

use core::ptr::NonNull;

/// The outcome of [`Os::remap`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Remap {
    /// Nothing changed.
    Failed,
    /// The pages moved; the source range reads as zero.
    Moved,
    /// The pages moved but the source range could not be mapped again: it must never be
    /// handed out.
    MovedSourceLost,
}

pub(crate) trait Os: Sync {
    /// The OS page size, read at run time (4 KiB, 16 KiB or 64 KiB on aarch64).
    fn page_size(&self) -> usize;

    /// Reserves `size` bytes of address space aligned to `align` (a power of two). The memory
    /// reads as zero and needs [`Os::commit`] before use on back ends that distinguish the two.
    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>>;

    /// Makes `[addr, addr + size)` of a reservation usable. A no-op where reservations are
    /// already readable and writable (Linux with overcommit).
    fn commit(&self, addr: NonNull<u8>, size: usize) -> bool;

    /// Gives the physical memory behind `[addr, addr + size)` back; the range stays reserved
    /// and reads as zero afterwards.
    fn purge(&self, addr: NonNull<u8>, size: usize) -> bool;

    /// Like [`Os::purge`], and also gives the range a fresh mapping, so that pieces a
    /// [`Os::remap`] moved in (which the kernel keeps as mappings of their own) merge back into
    /// their neighbours. Costlier than `purge`: use it only on ranges that held moved pages.
    fn reset(&self, addr: NonNull<u8>, size: usize) -> bool;

    /// A monotonic clock in nanoseconds (for purge delays and lock-hold times).
    fn now_ns(&self) -> u64;

    /// Moves the pages of `[from, from + size)` to `[to, to + size)` (both inside reservations,
    /// not overlapping) without copying where the OS can move page tables.
    fn remap(&self, from: NonNull<u8>, to: NonNull<u8>, size: usize) -> Remap;

    /// Returns a whole reservation made by [`Os::reserve`].
    fn release(&self, addr: NonNull<u8>, size: usize);
}
