//! What a heap does with a page it owns: set it up for a size class, carve fresh blocks,
//! pop and push blocks, and take in the blocks other threads freed.
//!
//! Three lists per page (free-list sharding, as in mimalloc): `free` to allocate from,
//! `local_free` for the owner's frees, `xthread_free` for other threads' frees. Keeping the
//! owner's frees apart from `free` means the allocation fast path never sees a block it just
//! freed, and the slow path runs at a steady cadence where remote frees get collected.
//!
//! Allocation clears a block's double-free marker (see `double_free`).
//!
//! Layer: `heap`; calls `arena::page`, `heap::page_blocks` (the carved test, the remote-free word),
//! `heap::size_class`, `heap::double_free` (to clear markers), `config` and `sync::atomic`.

use crate::arena::page::{Block, OWNER_FULL_FLAG, Page};
use crate::config::PageKind;
use crate::sync::atomic::Ordering;

use super::page_blocks::{ABANDONED_TAG, is_carved_block, list_of};
use super::page_blocks::{COUNT_SHIFT, LIST_MASK, count_of};
use super::size_class::{block_divisor, class_size, page_kind};

/// Fresh blocks carved per extension: enough to make the slow path rare, few enough not to
/// touch (and so commit) much memory the program may never use.
const EXTEND_BYTES: usize = 16 << 10;
const EXTEND_MIN_BLOCKS: u32 = 4;

/// Debug builds (and so the fuzz targets) check every block that enters or leaves a free list
/// of its owner: a corrupted list or a block of another page fails here, not later as a
/// block handed out twice.
#[inline(always)]
fn debug_assert_block_of(page: &Page, block: *mut Block) {
    if cfg!(debug_assertions) {
        assert!(
            is_carved_block(page, block as usize),
            "block {block:p} is not a carved block of page {:p}",
            page as *const Page
        );
    }
}

/// Prepares a just-claimed page for `class`, owned by `owner`.
///
/// # Safety
/// The caller has exclusive use of the page (it just claimed or reclaimed it).
pub(crate) unsafe fn init(page: &Page, class: usize, fresh: bool, owner: usize) {
    let size = class_size(class);
    let kind: PageKind = page_kind(class);
    // SAFETY: exclusive use (caller).
    unsafe {
        page.free.set(core::ptr::null_mut());
        page.local_free.set(core::ptr::null_mut());
        page.used.set(0);
        page.max_blocks.set((kind.page_size() / size) as u32);
        page.class.set(class as u8);
        page.free_is_zero.set(false);
        page.fresh.set(fresh);
        page.next.set(core::ptr::null_mut());
        page.prev.set(core::ptr::null_mut());
    }
    // Relaxed: no block of this page exists yet, so no other thread can be looking; the
    // page reaches other threads only through blocks the user passes with their own sync.
    debug_assert!(page.xthread_free.load(Ordering::Relaxed).is_null());
    debug_assert!(
        page.owner.load(Ordering::Relaxed) == crate::arena::page::NO_OWNER
            && page.block_size.load(Ordering::Relaxed) == 0,
        "a page in use was handed out again"
    );
    let (shift, inverse) = block_divisor(class);
    page.block_shift.store(shift, Ordering::Relaxed);
    page.block_inverse.store(inverse, Ordering::Relaxed);
    page.carved.set(0);
    page.block_size.store(size, Ordering::Relaxed);
    page.owner.store(owner, Ordering::Relaxed);
}

/// Carves fresh blocks onto the (empty) free list, each marked free as a freed block is (see
/// `double_free::mark_carved`). Returns false if the page is fully carved.
///
/// # Safety
/// The calling thread owns the page and its free list is empty.
#[inline(always)]
pub(crate) unsafe fn extend(page: &Page) -> bool {
    // SAFETY: owner (caller).
    unsafe {
        let (carved, max_blocks) = (page.carved.get(), page.max_blocks.get());
        if carved == max_blocks {
            return false;
        }
        let size = page.block_size.load(Ordering::Relaxed);
        let count = ((EXTEND_BYTES / size) as u32)
            .max(EXTEND_MIN_BLOCKS)
            .min(max_blocks - carved);
        let start = page.start.load(Ordering::Relaxed);
        let first = start.add(carved as usize * size).cast::<Block>();
        let last = first.byte_add((count as usize - 1) * size);
        let mut block = first;
        if size > 8 {
            // Above 8 bytes each block also gets its free marker, in the same pass.
            let key = super::double_free::free_key();
            while block != last {
                let next = block.byte_add(size);
                (*block).next = next;
                super::double_free::mark_carved(block, key);
                block = next;
            }
            super::double_free::mark_carved(last, key);
        } else {
            while block != last {
                let next = block.byte_add(size);
                (*block).next = next;
                block = next;
            }
        }
        (*last).next = core::ptr::null_mut();
        page.free.set(first);
        // Relaxed: the new blocks reach other threads only through the user's synchronisation,
        // which orders this store before their frees (see `is_carved_block`).
        page.carved.set(carved + count);
        page.free_is_zero.set(page.fresh.get());
        true
    }
}

/// Pops a block from the free list (which must not be empty) and clears its free marker.
///
/// # Safety
/// The calling thread owns the page; `page.free` is not null.
#[inline(always)]
pub(crate) unsafe fn pop(page: &Page, block: *mut Block, class: usize) {
    debug_assert_block_of(page, block);
    // SAFETY: owner (caller); `block` is the head of the page's free list, a block of this
    // page that no one else uses.
    unsafe {
        page.free.set((*block).next);
        page.used.set(page.used.get() + 1);
        super::double_free::clear_marker(block, class);
    }
}

/// Zeroes the first `size` bytes of a block just popped from `page`, skipping the work when the
/// page's free list was known to be zero apart from the link word. (A carved block also holds
/// its free marker in its second word, which `pop` has cleared already.)
///
/// # Safety
/// `block` was just popped from `page`, which the caller owns, and has room for `size` bytes.
#[inline(always)]
pub(crate) unsafe fn zero(page: &Page, block: *mut Block, size: usize) {
    // SAFETY: as above.
    unsafe {
        if page.free_is_zero.get() {
            (*block).next = core::ptr::null_mut();
        } else {
            core::ptr::write_bytes(block.cast::<u8>(), 0, size);
        }
    }
}

/// Pushes a block freed by its owner. Returns true if the page is now empty.
///
/// # Safety
/// The calling thread owns the page; `block` is a live block of it.
#[inline(always)]
pub(crate) unsafe fn push_local(page: &Page, block: *mut Block) -> bool {
    debug_assert_block_of(page, block);
    // SAFETY: owner (caller).
    unsafe {
        (*block).next = page.local_free.get();
        page.local_free.set(block);
        let used = page.used.get() - 1;
        page.used.set(used);
        used == 0
    }
}

/// Blocks other threads freed into the page that its owner has not taken in yet.
pub(crate) fn remote_frees(page: &Page) -> usize {
    // Relaxed: a statistic; the owner's `collect` takes them in with Acquire.
    count_of(page.xthread_free.load(Ordering::Relaxed)) as usize
}

/// Pushes a block freed by a thread that does not own the page (any thread may call this).
/// Returns true if the page was abandoned and this free emptied it: the caller then owns the
/// page (to give it back to its region).
///
/// A free into an abandoned page that leaves live blocks keeps the page abandoned, where
/// threads that allocate its size class find it. Taking it over instead would strand it with
/// a thread that only frees (a main thread freeing what exited workers left, a consumer): the
/// page's free room would be lost to everyone else until its last block went.
///
/// # Safety
/// `block` is a live block of `page` that the caller gives up.
#[inline(always)]
pub(crate) unsafe fn push_remote(page: &Page, block: *mut Block) -> bool {
    // Relaxed: the CAS validates; a page found abandoned is reread with Acquire.
    let mut head = page.xthread_free.load(Ordering::Relaxed);
    // The common case, a page with a live owner, costs a link and a CAS; abandoned pages,
    // which need their `used` count, take the path below.
    while head.addr() & ABANDONED_TAG == 0 {
        // SAFETY: the block is ours until the CAS publishes it.
        unsafe { (*block).next = list_of(head) };
        debug_assert!(block.addr() < 1 << COUNT_SHIFT && count_of(head) < u16::MAX as u32);
        let new = block.map_addr(|a| a | ((head.addr() & !LIST_MASK) + (1 << COUNT_SHIFT)));
        // Release: the link (and the user's last writes to the block) happen before the
        // owner's Acquire swap in `collect`. Relaxed on failure: the loop only rereads.
        match page.xthread_free.compare_exchange_weak(
            head,
            new,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return false,
            Err(now) => head = now,
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { push_remote_abandoned(page, block) }
}

/// [`push_remote`] into a page found abandoned (it may have been taken over since).
///
/// # Safety
/// As for [`push_remote`].
#[cold]
#[inline(never)]
unsafe fn push_remote_abandoned(page: &Page, block: *mut Block) -> bool {
    // Acquire (here and on a failed CAS): if the page is abandoned we read its `used` below,
    // which the abandoning thread wrote before its Release in `tag_abandoned`.
    let mut head = page.xthread_free.load(Ordering::Acquire);
    loop {
        let abandoned = head.addr() & ABANDONED_TAG != 0;
        let count = count_of(head) + 1;
        // `used` does not change while the page is abandoned (only an owner changes it), and
        // counts the blocks live when it was abandoned; the remote list holds those freed since.
        let last = abandoned && count >= page.used.get();
        // SAFETY: the block is ours until the CAS publishes it.
        unsafe { (*block).next = list_of(head) };
        debug_assert!(block.addr() < 1 << COUNT_SHIFT && count_of(head) < u16::MAX as u32);
        let keep_tag = if abandoned && !last { ABANDONED_TAG } else { 0 };
        let new = block.map_addr(|a| a | keep_tag | (count as usize) << COUNT_SHIFT);
        // Release: as in `push_remote`. Acquire: if we clear the tag we take the page over
        // and must see what the abandoning thread wrote before setting it.
        match page.xthread_free.compare_exchange_weak(
            head,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return last,
            Err(now) => head = now,
        }
    }
}

/// Tags an abandoned page's remote list; the page is up for grabs from now on.
pub(crate) fn tag_abandoned(page: &Page) {
    // Relaxed: the CAS validates.
    let mut head = page.xthread_free.load(Ordering::Relaxed);
    // Release: the page's state (written by the abandoning thread) happens before whoever
    // clears the tag with an Acquire.
    while let Err(now) = page.xthread_free.compare_exchange_weak(
        head,
        head.map_addr(|a| a | ABANDONED_TAG),
        Ordering::Release,
        Ordering::Relaxed,
    ) {
        head = now;
    }
}

/// Tries to take an abandoned page over by clearing its tag. False if another thread (one
/// freeing into it) took it first.
pub(crate) fn untag_abandoned(page: &Page) -> bool {
    // Relaxed: the CAS validates.
    let mut head = page.xthread_free.load(Ordering::Relaxed);
    while head.addr() & ABANDONED_TAG != 0 {
        // Acquire: pairs with `tag_abandoned` (see there).
        match page.xthread_free.compare_exchange_weak(
            head,
            head.map_addr(|a| a & !ABANDONED_TAG),
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(now) => head = now,
        }
    }
    false
}

/// Takes in the blocks other threads freed (updating `used`), and if the free list is empty
/// refills it from the owner's own frees.
///
/// # Safety
/// The calling thread owns the page.
pub(crate) unsafe fn collect(page: &Page) {
    // SAFETY: owner (caller).
    unsafe {
        // Relaxed peek first: avoids a read-modify-write when there is nothing to take.
        if !page.xthread_free.load(Ordering::Relaxed).is_null() {
            // Acquire: pairs with the freeing threads' Release CAS.
            let word = page
                .xthread_free
                .swap(core::ptr::null_mut(), Ordering::Acquire);
            let list = list_of(word);
            page.used.set(page.used.get() - count_of(word));
            if page.local_free.get().is_null() {
                page.local_free.set(list);
            } else if page.free.get().is_null() {
                page.free.set(list);
                page.free_is_zero.set(false);
            } else {
                // Both lists in use (a collect outside the allocation path): append the
                // remote ones to the owner's frees, walking them this once, each link checked
                // before it is followed (a write after free must end in the named abort).
                let mut tail = list;
                loop {
                    let next = (*tail).next;
                    if next.is_null() {
                        break;
                    }
                    if !is_carved_block(page, next as usize) {
                        crate::abort::corrupted_free_list(tail.cast(), next.cast());
                    }
                    tail = next;
                }
                (*tail).next = page.local_free.get();
                page.local_free.set(list);
            }
        }
        if page.free.get().is_null() && !page.local_free.get().is_null() {
            page.free.set(page.local_free.get());
            page.local_free.set(core::ptr::null_mut());
            page.free_is_zero.set(false);
        }
    }
}

/// True if the page has a block ready or can carve one.
///
/// # Safety
/// The calling thread owns the page.
pub(crate) unsafe fn has_room(page: &Page) -> bool {
    // SAFETY: owner (caller).
    unsafe { !page.free.get().is_null() || page.carved.get() < page.max_blocks.get() }
}

/// True if every block of the page is free (after a `collect` by its owner).
pub(crate) fn is_empty(page: &Page) -> bool {
    page.used.get() == 0
}

/// Sets or clears the flag that sends the owner's frees into this page down the slow path.
pub(crate) fn set_full_flag(page: &Page, owner: usize, full: bool) {
    let value = if full { owner | OWNER_FULL_FLAG } else { owner };
    // Relaxed: other threads only compare `owner` with their own id, which never matches
    // either value.
    page.owner.store(value, Ordering::Relaxed);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::heap::size_class::{NUM_CLASSES, class_of};

    /// A page over heap memory, as a region would set it up.
    pub(crate) struct TestPage {
        pub(crate) page: std::boxed::Box<Page>,
        memory: std::vec::Vec<u64>,
    }

    pub(crate) fn test_page(class: usize) -> TestPage {
        let kind = page_kind(class);
        let mut memory = std::vec![0u64; kind.page_size() / 8];
        let page = std::boxed::Box::new(Page::new());
        page.start
            .store(memory.as_mut_ptr().cast(), Ordering::Relaxed);
        // SAFETY: the page is ours alone.
        unsafe { init(&page, class, true, 8) };
        TestPage { page, memory }
    }

    pub(crate) fn alloc(page: &Page, class: usize) -> Option<*mut Block> {
        // SAFETY: single-threaded test owning the page.
        unsafe {
            if page.free.get().is_null() {
                collect(page);
            }
            if page.free.get().is_null() && !extend(page) {
                return None;
            }
            let block = page.free.get();
            pop(page, block, class);
            Some(block)
        }
    }

    #[test]
    fn a_page_hands_out_every_block_once_and_all_come_back() {
        for class in [
            0,
            1,
            7,
            8,
            20,
            class_of(8192),
            class_of(8193),
            class_of(65536),
            NUM_CLASSES - 1,
        ] {
            let t = test_page(class);
            let size = class_size(class);
            let base = t.memory.as_ptr() as usize;
            let mut blocks = std::vec::Vec::new();
            while let Some(b) = alloc(&t.page, class) {
                let offset = b as usize - base;
                assert_eq!(offset % size, 0, "class {class}: misaligned block");
                assert!(offset + size <= page_kind(class).page_size());
                blocks.push(b as usize);
            }
            let max_blocks = page_kind(class).page_size() / size;
            assert_eq!(blocks.len(), max_blocks);
            blocks.sort();
            blocks.dedup();
            assert_eq!(blocks.len(), max_blocks, "a block was handed out twice");
            for (i, &b) in blocks.iter().enumerate() {
                // SAFETY: live blocks of our page.
                let empty = unsafe { push_local(&t.page, b as *mut Block) };
                assert_eq!(empty, i + 1 == max_blocks);
            }
            assert!(is_empty(&t.page));
        }
    }

    #[test]
    fn remote_frees_are_collected_and_counted() {
        let class = class_of(48);
        let t = test_page(class);
        let blocks: std::vec::Vec<_> = (0..10).map(|_| alloc(&t.page, class).unwrap()).collect();
        // SAFETY: blocks are live blocks of the page, freed once each.
        unsafe {
            for &b in &blocks[..6] {
                push_remote(&t.page, b);
            }
            assert_eq!(t.page.used.get(), 10);
            collect(&t.page);
            assert_eq!(t.page.used.get(), 4);
        }
        // Everything not live can be handed out again, the six freed blocks included.
        let mut rest = std::vec::Vec::new();
        while let Some(b) = alloc(&t.page, class) {
            rest.push(b);
        }
        assert_eq!(
            rest.len(),
            page_kind(class).page_size() / class_size(class) - 4
        );
        for b in &blocks[..6] {
            assert!(rest.contains(b), "a remotely freed block was lost");
        }
    }

    #[test]
    fn an_abandoned_page_stays_abandoned_until_the_free_that_empties_it() {
        let class = class_of(48);
        let t = test_page(class);
        let blocks: std::vec::Vec<_> = (0..5).map(|_| alloc(&t.page, class).unwrap()).collect();
        tag_abandoned(&t.page);
        // SAFETY: live blocks of the page, freed once each by a "remote" thread.
        unsafe {
            for (i, &b) in blocks.iter().enumerate() {
                let last = push_remote(&t.page, b);
                assert_eq!(last, i + 1 == blocks.len(), "free {i} of {}", blocks.len());
                // Until the last free the page stays up for grabs; that free takes it over.
                let tagged = t.page.xthread_free.load(Ordering::Relaxed).addr() & ABANDONED_TAG;
                assert_eq!(tagged != 0, !last);
            }
            collect(&t.page);
        }
        assert!(is_empty(&t.page));
    }

    #[test]
    fn fresh_pages_hand_out_zero_blocks_without_writing_them() {
        let class = class_of(256);
        let t = test_page(class);
        let block = alloc(&t.page, class).unwrap();
        // SAFETY: owner; block just popped.
        unsafe {
            assert!(t.page.free_is_zero.get());
            zero(&t.page, block, 256);
            let bytes = core::slice::from_raw_parts(block.cast::<u8>(), 256);
            assert!(bytes.iter().all(|&b| b == 0));
            // Reused blocks are not known to be zero.
            block.cast::<u8>().write_bytes(0xAB, 256);
            push_local(&t.page, block);
            t.page.free.set(core::ptr::null_mut());
            t.page.carved.set(t.page.max_blocks.get());
            collect(&t.page);
            assert!(!t.page.free_is_zero.get());
            let again = t.page.free.get();
            pop(&t.page, again, class);
            zero(&t.page, again, 256);
            let bytes = core::slice::from_raw_parts(again.cast::<u8>(), 256);
            assert!(bytes.iter().all(|&b| b == 0), "reused block must be zeroed");
        }
    }
}
