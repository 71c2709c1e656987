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
//! Whose fields are whose. The arena's: `start`, `region` and `index` (set when it creates the
//! region's page table, fixed while the region is attached), and the "not in use" values of
//! `owner`, `block_size`, `carved`, `xthread_free` and `used` it stores when it creates a page
//! or takes one back (`Arena::release_page`). Everything else, and those five while the page
//! is in use, is the heap's: `heap::pages` sets a claimed page up (`pages::init`) and runs its
//! free lists, `heap::page_list` links it through `next`/`prev`, `heap::page_blocks` reads the
//! block geometry. The descriptor lives here because the page map and the regions' page
//! tables, both the arena's, hold it.
//!
//! Layer: `arena` (the descriptor); calls only `sync::atomic`, `counter` and `config`.

use core::cell::UnsafeCell;

use super::region::Region;
use crate::counter::OwnerCount32;
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
    pub(crate) used: OwnerCount32,
    /// Blocks that fit in the page.
    pub(crate) max_blocks: OwnerCell<u32>,
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
    /// Blocks carved from the page so far (the rest has never been touched), 0 while the page
    /// is not in use: a pointer is a block of the page only below this. The owner changes it;
    /// every free reads it.
    pub(crate) carved: OwnerCount32,
    /// The block size is `odd << block_shift`, and `block_inverse` is `odd`'s inverse modulo
    /// 2^64: together they tell a block's start from any other address without a division
    /// (`heap::page_blocks::is_carved_block`). Fixed while the page is in use.
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
            used: OwnerCount32::new(0),
            max_blocks: OwnerCell::new(0),
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
            carved: OwnerCount32::new(0),
            block_inverse: AtomicU64::new(0),
            block_shift: AtomicU32::new(0),
            _pad1: [0; 16],
            _pad2: [0; 12],
        }
    }
}

impl Page {
    /// Checks what the owner of an in-use page can check (mimalloc's `mi_page_is_valid`):
    /// owned by `owner` (a heap's id, with or without [`OWNER_FULL_FLAG`]), a block size,
    /// `used <= carved <= max_blocks`, and the free lists hold at most
    /// the blocks not in use, each a carved block of this page. Panics on a violation. Checks
    /// whenever it is called (tests call it in any profile); the allocator's own calls are in
    /// debug builds only.
    ///
    /// # Safety
    /// The calling thread owns the page (the `OwnerCell` fields are its own).
    #[cfg_attr(not(debug_assertions), allow(dead_code))] // tests call it in any profile
    pub(crate) unsafe fn validate(&self, owner: usize) {
        // Relaxed: the owner's own stores, or fixed while the page is in use.
        let id = self.owner.load(Ordering::Relaxed);
        assert_eq!(id & !OWNER_FULL_FLAG, owner, "page owned by another heap");
        let size = self.block_size.load(Ordering::Relaxed);
        assert!(size != 0, "an in-use page without a block size");
        let carved = self.carved.get();
        // SAFETY: owner (caller).
        let max_blocks = unsafe { self.max_blocks.get() };
        let used = self.used.get();
        assert!(
            used <= carved && carved <= max_blocks,
            "page counts out of order"
        );
        let start = self.start.load(Ordering::Relaxed) as usize;
        let end = start + carved as usize * size;
        let mut free = 0u32;
        // SAFETY: owner (caller).
        for head in unsafe { [self.free.get(), self.local_free.get()] } {
            let mut block = head;
            while !block.is_null() {
                let at = block as usize;
                assert!(
                    (start..end).contains(&at) && (at - start) % size == 0,
                    "a free-list link that is not a carved block of its page"
                );
                free += 1;
                assert!(
                    free <= carved - used,
                    "free lists longer than the free blocks"
                );
                // SAFETY: a carved block of the page (checked above), owned by the caller.
                block = unsafe { (*block).next };
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of `carved` blocks of 64 bytes over `memory`, `used` of them handed out and
    /// the rest on the free list, owned by heap 4.
    fn page_over(memory: &mut [u64], carved: u32, used: u32) -> Page {
        let page = Page::new();
        let start = memory.as_mut_ptr().cast::<u8>();
        page.owner.store(4, Ordering::Relaxed);
        page.block_size.store(64, Ordering::Relaxed);
        page.start.store(start, Ordering::Relaxed);
        page.carved.set(carved);
        page.used.set(used);
        let mut head: *mut Block = core::ptr::null_mut();
        for i in used..carved {
            let block = start.wrapping_add(i as usize * 64).cast::<Block>();
            // SAFETY: inside `memory`, aligned; the test owns the page.
            unsafe {
                (*block).next = head;
            }
            head = block;
        }
        // SAFETY: the test owns the page.
        unsafe {
            page.max_blocks.set(carved + 2);
            page.free.set(head);
        }
        page
    }

    #[test]
    fn a_consistent_page_validates() {
        let mut memory = [0u64; 8 * 8];
        let page = page_over(&mut memory, 8, 3);
        // SAFETY: the test owns the page.
        unsafe { page.validate(4) };
        page.owner.store(4 | OWNER_FULL_FLAG, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { page.validate(4) };
    }

    #[test]
    #[should_panic(expected = "free lists longer than the free blocks")]
    fn a_free_list_longer_than_the_free_blocks_fails() {
        let mut memory = [0u64; 8 * 8];
        let page = page_over(&mut memory, 8, 3);
        page.used.set(4); // one block counted in use is still on the free list
        // SAFETY: the test owns the page.
        unsafe { page.validate(4) };
    }

    #[test]
    #[should_panic(expected = "page owned by another heap")]
    fn a_page_of_another_heap_fails() {
        let mut memory = [0u64; 8 * 8];
        let page = page_over(&mut memory, 8, 3);
        // SAFETY: the test owns the page.
        unsafe { page.validate(8) };
    }
}
