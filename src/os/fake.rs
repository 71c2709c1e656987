//! A back end that needs no address-space tricks: reservations are plain anonymous read-write
//! mappings (the one kind Miri emulates), purging zeroes, remapping copies, nothing is ever
//! unmapped. It counts what the arena asked of it, so tests can check. Used by unit tests,
//! under Miri (as the process arena's back end) and by the `protocol` fuzz target.
//!
//! Layer: `os`; calls only `sync::atomic`.

use core::ptr::NonNull;

use super::{Os, Remap, ThpSystem};
use crate::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

pub(crate) struct FakeOs {
    pub(crate) reserved: AtomicUsize,
    pub(crate) purged: AtomicUsize,
    pub(crate) remapped: AtomicUsize,
    /// Reservations fail once this many bytes are reserved: exhaustion, or the commit limit of
    /// strict overcommit, where every reserved byte is charged.
    pub(crate) limit: AtomicUsize,
    /// What [`Os::strict_overcommit`] answers.
    pub(crate) strict: AtomicBool,
    /// The clock: tests move it by hand.
    pub(crate) now: AtomicU64,
    /// What [`Os::thp_system`] answers: 0 never, 1 madvise (the default), 2 always.
    pub(crate) thp: AtomicU8,
    /// Whether [`Os::collapse_huge`] succeeds (a kernel with `MADV_COLLAPSE`).
    pub(crate) can_collapse: AtomicBool,
    /// Whether [`Os::advise_huge`] succeeds (it fails where `madvise` would: no memory to
    /// split the mapping, a seccomp filter).
    pub(crate) can_advise: AtomicBool,
    /// Whether [`Os::remap`] succeeds (it fails where `mremap` would: the mapping limit).
    pub(crate) can_remap: AtomicBool,
    /// Bytes advised, collapsed and forbidden huge pages, for tests to check.
    pub(crate) advised: AtomicUsize,
    pub(crate) collapsed: AtomicUsize,
    pub(crate) forbidden: AtomicUsize,
}

impl FakeOs {
    pub(crate) const fn new(limit: usize) -> FakeOs {
        FakeOs {
            reserved: AtomicUsize::new(0),
            purged: AtomicUsize::new(0),
            remapped: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            strict: AtomicBool::new(false),
            now: AtomicU64::new(1),
            thp: AtomicU8::new(1),
            can_collapse: AtomicBool::new(true),
            can_advise: AtomicBool::new(true),
            can_remap: AtomicBool::new(true),
            advised: AtomicUsize::new(0),
            collapsed: AtomicUsize::new(0),
            forbidden: AtomicUsize::new(0),
        }
    }
}

impl Os for FakeOs {
    fn page_size(&self) -> usize {
        4096
    }

    fn reserve(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // Relaxed: statistics for tests, no ordering needed.
        let total = self.reserved.load(Ordering::Relaxed).checked_add(size)?;
        if total > self.limit.load(Ordering::Relaxed) {
            return None;
        }
        let align = align.max(self.page_size());
        let padded = size.checked_add(align - self.page_size())?;
        // SAFETY: a new private anonymous mapping overlaps nothing. Its pages read as zero and
        // are only backed once touched, so big reservations cost nothing.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                padded,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        // The unaligned head and tail stay mapped (Miri cannot unmap part of a mapping).
        let offset = (raw as usize).next_multiple_of(align) - raw as usize;
        self.reserved.fetch_add(size, Ordering::Relaxed);
        // SAFETY: `offset + size <= padded`.
        NonNull::new(unsafe { raw.cast::<u8>().add(offset) })
    }

    fn strict_overcommit(&self) -> bool {
        self.strict.load(Ordering::Relaxed)
    }

    fn purge(&self, addr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the caller owns the range inside one of our reservations.
        unsafe { core::ptr::write_bytes(addr.as_ptr(), 0, size) };
        self.purged.fetch_add(size, Ordering::Relaxed);
        true
    }

    fn reset(&self, addr: NonNull<u8>, size: usize) -> bool {
        self.purge(addr, size)
    }

    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    fn remap(&self, from: NonNull<u8>, to: NonNull<u8>, size: usize) -> Remap {
        // Relaxed: a knob a test sets before the call it affects, on the same thread.
        if !self.can_remap.load(Ordering::Relaxed) {
            return Remap::Failed;
        }
        // SAFETY: both ranges lie in our reservations, are owned by the caller and disjoint.
        unsafe {
            core::ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), size);
            core::ptr::write_bytes(from.as_ptr(), 0, size);
        }
        self.remapped.fetch_add(size, Ordering::Relaxed);
        Remap::Moved
    }

    fn thp_system(&self) -> ThpSystem {
        match self.thp.load(Ordering::Relaxed) {
            0 => ThpSystem::Never,
            1 => ThpSystem::Madvise,
            _ => ThpSystem::Always,
        }
    }

    fn advise_huge(&self, _addr: NonNull<u8>, size: usize) -> bool {
        // Relaxed: as `can_remap` in `remap`.
        if !self.can_advise.load(Ordering::Relaxed) {
            return false;
        }
        self.advised.fetch_add(size, Ordering::Relaxed);
        true
    }

    fn collapse_huge(&self, _addr: NonNull<u8>, size: usize) -> bool {
        if !self.can_collapse.load(Ordering::Relaxed) {
            return false;
        }
        self.collapsed.fetch_add(size, Ordering::Relaxed);
        true
    }

    fn forbid_huge(&self, _addr: NonNull<u8>, size: usize) -> bool {
        self.forbidden.fetch_add(size, Ordering::Relaxed);
        true
    }

    fn release(&self, _addr: NonNull<u8>, size: usize) {
        // The charge goes back, the memory does not: tests may still hold stale pointers into
        // it, as real type-stable metadata would allow. It is reclaimed at process exit.
        self.reserved.fetch_sub(size, Ordering::Relaxed);
    }
}
