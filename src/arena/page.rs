//! Page descriptors: one per page of a small-object region, kept in page tables outside the
//! pages themselves (so user data can never overwrite allocator metadata).
//!
//! A page has one owner at a time: the heap of the thread whose id is in `owner`, or nobody
//! (free in its region, or abandoned). Only the owner touches the [`OwnerCell`] fields, with one
//! exception: while a page is abandoned it has no owner, and its `next`/`prev` link it into an
//! abandoned list, changed by whoever holds that list's mutex (`heap::abandon`). Ownership
//! moves between threads only through an Acquire/Release pair (the region's page bitmap, the
//! abandoned tag in `xthread_free`, or the abandoned list's mutex), so the new owner sees
//! everything the old one wrote. Other
//! threads touch only the atomics: `xthread_free` (frees from other threads), `owner` (to tell
//! whether a free is local), and `block_size`, `carved` and the block divisor (to validate a
//! pointer).
//!
//! Layer: `arena` (the descriptor), though most fields are the heap's state (see
//! `heap::pages`); calls only `sync::atomic` and `config`.

use core::cell::UnsafeCell;

use super::region::Region;
use crate::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A free block: its first word links to the next free block of the same page.
#[repr(C)]
pub(crate) struct Block {
    pub(crate) next: *mut Block,
}

/// A field only the page's owner reads or writes (or, for an abandoned page's `next`/`prev`,
/// the holder of its abandoned list's mutex).
pub(crate) struct OwnerCell<T: Copy>(UnsafeCell<T>);

impl<T: Copy> OwnerCell<T> {
    pub(crate) const fn new(value: T) -> OwnerCell<T> {
        OwnerCell(UnsafeCell::new(value))
    }

    /// # Safety
    /// The calling thread owns the page (or holds it exclusively, e.g. while setting it up).
    #[inline(always)]
    pub(crate) unsafe fn get(&self) -> T {
        // SAFETY: the caller is the only thread accessing this field (see above).
        unsafe { *self.0.get() }
    }

    /// # Safety
    /// As for [`OwnerCell::get`].
    #[inline(always)]
    pub(crate) unsafe fn set(&self, value: T) {
        // SAFETY: the caller is the only thread accessing this field (see above).
        unsafe { *self.0.get() = value }
    }
}

/// A count only the page's owner changes but anyone may read (for statistics): a Relaxed load
/// and store, never a read-modify-write, so it costs the owner what a plain field would.
pub(crate) struct OwnerCount(AtomicU32);

impl OwnerCount {
    pub(crate) const fn new(value: u32) -> OwnerCount {
        OwnerCount(AtomicU32::new(value))
    }

    #[inline(always)]
    pub(crate) fn get(&self) -> u32 {
        // Relaxed: written only by the owner; other readers want a recent value, nothing more.
        self.0.load(Ordering::Relaxed)
    }

    /// Only the page's owner calls this.
    #[inline(always)]
    pub(crate) fn set(&self, value: u32) {
        // Relaxed: as for `get`.
        self.0.store(value, Ordering::Relaxed);
    }
}

/// `owner` of a page that no thread owns (free in its region, or abandoned).
pub(crate) const NO_OWNER: usize = 0;
/// Set in `owner` while the page sits in its heap's full list, so that the owner's free fast
/// path (which compares `owner` with its id) falls into the slow path that un-fulls the page.
pub(crate) const OWNER_FULL_FLAG: usize = 1;

/// Page descriptors are three cache lines, aligned, each line with one kind of traffic:
/// * the first only the owner writes (every malloc and free),
/// * the second everyone reads and almost no one writes (owner id, block size, where it is),
/// * the third other threads write (their frees, with a CAS).
///
/// So no two threads write one line, unless they contend on the same page's remote list, and
/// no remote free steals the owner's line (measurements: `docs/findings.md`).
#[repr(C, align(64))]
pub(crate) struct Page {
    // ---- line 1: the owner's ----
    /// Blocks ready to allocate.
    pub(crate) free: OwnerCell<*mut Block>,
    /// Blocks the owner freed since `free` was last refilled.
    pub(crate) local_free: OwnerCell<*mut Block>,
    /// Blocks handed out and not yet returned to the owner's lists (read by `stats()`).
    pub(crate) used: OwnerCount,
    /// Blocks carved from the page so far (the rest has never been touched).
    pub(crate) capacity: OwnerCell<u32>,
    /// Blocks that fit in the page.
    pub(crate) reserved: OwnerCell<u32>,
    /// Size class of the blocks.
    pub(crate) class: OwnerCell<u8>,
    /// True while every block on `free` is zero except its link word.
    pub(crate) free_is_zero: OwnerCell<bool>,
    /// True if the page's never-carved part is zero (fresh from the OS or purged).
    pub(crate) fresh: OwnerCell<bool>,
    /// Links in the owner heap's queue for the size class.
    pub(crate) next: OwnerCell<*mut Page>,
    pub(crate) prev: OwnerCell<*mut Page>,
    _pad1: [u8; 16],

    // ---- line 2: read by everyone ----
    /// Id of the owning heap (a thread's, or an isolated heap's; a multiple of 4), possibly
    /// with [`OWNER_FULL_FLAG`]: every free compares it with its own heap's id.
    pub(crate) owner: AtomicUsize,
    /// Block size while the page is in use, else 0 (read to validate pointers).
    pub(crate) block_size: AtomicUsize,
    /// Fixed while the region is attached.
    pub(crate) start: AtomicPtr<u8>,
    pub(crate) region: AtomicPtr<Region>,
    pub(crate) index: AtomicU32,
    /// Blocks carved from the page so far (the owner's `capacity`, for everyone to read), 0
    /// while the page is not in use: a pointer is a block of the page only below this.
    pub(crate) carved: AtomicU32,
    /// The block size is `odd << block_shift`, and `block_inverse` is `odd`'s inverse modulo
    /// 2^64: together they tell a block's start from any other address without a division
    /// (`heap::pages::is_carved_block`). Fixed while the page is in use.
    pub(crate) block_inverse: AtomicU64,
    pub(crate) block_shift: AtomicU32,
    _pad2: [u8; 12],

    // ---- line 3: written by other threads ----
    /// Blocks freed by other threads, pushed with a CAS, taken by the owner with a swap.
    pub(crate) xthread_free: AtomicPtr<Block>,
}

const _: () = assert!(core::mem::size_of::<Page>() == 192);
const _: () = assert!(core::mem::offset_of!(Page, owner) == 64);
const _: () = assert!(core::mem::offset_of!(Page, xthread_free) == 128);

// SAFETY: the shared fields are atomics; the `OwnerCell` fields are only accessed by the page's
// single owner, and ownership is handed over with Release/Acquire (see the module docs).
unsafe impl Sync for Page {}

impl Page {
    pub(crate) const fn new() -> Page {
        Page {
            free: OwnerCell::new(core::ptr::null_mut()),
            local_free: OwnerCell::new(core::ptr::null_mut()),
            used: OwnerCount::new(0),
            capacity: OwnerCell::new(0),
            reserved: OwnerCell::new(0),
            class: OwnerCell::new(0),
            free_is_zero: OwnerCell::new(false),
            fresh: OwnerCell::new(false),
            next: OwnerCell::new(core::ptr::null_mut()),
            prev: OwnerCell::new(core::ptr::null_mut()),
            owner: AtomicUsize::new(NO_OWNER),
            xthread_free: AtomicPtr::new(core::ptr::null_mut()),
            block_size: AtomicUsize::new(0),
            start: AtomicPtr::new(core::ptr::null_mut()),
            region: AtomicPtr::new(core::ptr::null_mut()),
            index: AtomicU32::new(0),
            carved: AtomicU32::new(0),
            block_inverse: AtomicU64::new(0),
            block_shift: AtomicU32::new(0),
            _pad1: [0; 16],
            _pad2: [0; 12],
        }
    }
}

/// The page descriptors of one small-object region; pooled and type-stable like regions.
#[repr(C)]
pub(crate) struct PageTable {
    /// Link in the pool's free list.
    pub(crate) next_free: AtomicPtr<PageTable>,
    pub(crate) pages: [Page; crate::config::MAX_REGION_PAGES],
}
