//! The pointer → page/region map: what `free` uses to find a block's page without any lock.
//!
//! A two-level table over the 48-bit address space at slice (64 KiB) granularity: a fixed
//! top level of 4096 leaf pointers, each leaf covering 64 GiB with one word per slice. Leaves
//! are reserved address space (8 MiB each, only the touched parts become resident) and are
//! never freed; top-level entries without a leaf point at a shared leaf of zeros, so a lookup
//! never tests for a missing leaf. An entry holds a `&Page` for slices of small-object pages, a
//! `&Region` tagged with [`LARGE_TAG`] (the top bit) for the first slice of a large block, or
//! null: so "a page" is one signed test (`entry > 0`) on the free path.
//!
//! The top-level index is masked, not bounds-checked: an address beyond 48 bits (never a
//! pointer vmarena handed out) finds the entry of the address 2^48 below it, so every caller
//! checks the full address against what the entry describes (`is_carved_block` for pages,
//! the region's start for large blocks).
//!
//! Entries change only under the arena write lock, when a region is created or removed, and are
//! stored with Release after the descriptor they point to is initialised. Lookups load with
//! Acquire, so whatever a lookup finds is fully initialised for the reader even when nothing
//! else orders the two (speculative readers, which validate only afterwards). On x86-64 an
//! Acquire load is a plain load; on aarch64 it is `ldar`.
//!
//! Layer: `arena`; calls `os` (to reserve leaves), `config` and `sync::atomic`.

use core::ptr::NonNull;

use super::page::Page;
use super::region::Region;
use crate::config::{SLICE_SHIFT, SLICE_SIZE};
use crate::os::Os;
use crate::sync::atomic::{AtomicPtr, Ordering};

const ADDRESS_BITS: u32 = 48;
const LEAF_SHIFT: u32 = 36;
const TOP_ENTRIES: usize = 1 << (ADDRESS_BITS - LEAF_SHIFT);
const LEAF_ENTRIES: usize = 1 << (LEAF_SHIFT - SLICE_SHIFT);
pub(crate) const LEAF_BYTES: usize = LEAF_ENTRIES * core::mem::size_of::<usize>();

/// Top bit of an entry that points to a large block's region rather than a page (user-space
/// addresses never have it).
const LARGE_TAG: usize = 1 << (usize::BITS - 1);

type Leaf = [AtomicPtr<u8>; LEAF_ENTRIES];

/// The leaf of every top-level entry that has none: all null, never written.
static EMPTY_LEAF: Leaf = [const { AtomicPtr::new(core::ptr::null_mut()) }; LEAF_ENTRIES];

fn empty_leaf() -> *mut Leaf {
    (&raw const EMPTY_LEAF).cast_mut()
}

/// What a map entry says about an address.
#[derive(Clone, Copy)]
pub(crate) enum Entry {
    None,
    Page(&'static Page),
    Large(&'static Region),
}

pub(crate) struct PageMap {
    top: [AtomicPtr<Leaf>; TOP_ENTRIES],
}

impl PageMap {
    pub(crate) const fn new() -> PageMap {
        PageMap {
            top: [const { AtomicPtr::new((&raw const EMPTY_LEAF).cast_mut()) }; TOP_ENTRIES],
        }
    }

    /// The entry for `addr`.
    #[inline(always)]
    pub(crate) fn lookup(&self, addr: usize) -> Entry {
        let raw = self.raw(addr);
        match (raw.addr() as isize).signum() {
            // SAFETY: untagged non-null entries are page descriptors, which are never freed.
            1 => Entry::Page(unsafe { &*raw.cast::<Page>() }),
            0 => Entry::None,
            // SAFETY: tagged entries are region descriptors, which are never freed.
            _ => Entry::Large(unsafe { &*raw.map_addr(|a| a & !LARGE_TAG).cast::<Region>() }),
        }
    }

    /// The page of `addr` if it is in small-object pages: the free path's lookup, one test
    /// instead of decoding an [`Entry`].
    #[inline(always)]
    pub(crate) fn lookup_page(&self, addr: usize) -> Option<&'static Page> {
        let raw = self.raw(addr);
        // SAFETY: positive entries are page descriptors, which are never freed.
        ((raw.addr() as isize) > 0).then(|| unsafe { &*raw.cast::<Page>() })
    }

    #[inline(always)]
    fn raw(&self, addr: usize) -> *mut u8 {
        // Acquire: pairs with the Release that published the (zeroed) leaf.
        let leaf = self.top[(addr >> LEAF_SHIFT) & (TOP_ENTRIES - 1)].load(Ordering::Acquire);
        let index = (addr >> SLICE_SHIFT) & (LEAF_ENTRIES - 1);
        // SAFETY: leaves (and the empty leaf) are never freed and `index` is within the leaf.
        // Acquire: pairs with the Release in `set` (see the module docs).
        unsafe { (*leaf)[index].load(Ordering::Acquire) }
    }

    /// Makes sure leaves exist for `[start, start + len)`; returns how many were added, or
    /// `None` if the range is beyond the map or the OS refused memory. Caller holds the arena
    /// write lock.
    pub(crate) fn ensure_leaves(&self, os: &impl Os, start: usize, len: usize) -> Option<usize> {
        let last = start + len - 1;
        if last >> LEAF_SHIFT >= TOP_ENTRIES {
            return None;
        }
        let mut added = 0;
        for top in (start >> LEAF_SHIFT)..=(last >> LEAF_SHIFT) {
            // Relaxed: only the write-lock holder stores leaves.
            if self.top[top].load(Ordering::Relaxed) == empty_leaf() {
                let leaf = os.reserve(LEAF_BYTES, crate::config::SLICE_SIZE)?;
                // Release: the (zeroed) leaf is complete before anyone can reach it.
                self.top[top].store(leaf.as_ptr().cast(), Ordering::Release);
                added += 1;
            }
        }
        Some(added)
    }

    /// Points every slice of `[start, start + len)` at `page`. Caller holds the write lock.
    pub(crate) fn set_page(&self, start: usize, len: usize, page: &Page) {
        self.set(start, len, (page as *const Page).cast_mut().cast());
    }

    /// Points the slice at `start` (a large block's first) at the block's `region`.
    pub(crate) fn set_large(&self, start: usize, region: &Region) {
        let tagged = (region as *const Region)
            .cast_mut()
            .cast::<u8>()
            .map_addr(|a| a | LARGE_TAG);
        self.set(start, SLICE_SIZE, tagged);
    }

    /// Clears the entries of `[start, start + len)`. Caller holds the write lock.
    pub(crate) fn clear(&self, start: usize, len: usize) {
        self.set(start, len, core::ptr::null_mut());
    }

    fn set(&self, start: usize, len: usize, value: *mut u8) {
        debug_assert!(start % SLICE_SIZE == 0 && len % SLICE_SIZE == 0);
        let mut addr = start;
        while addr < start + len {
            // Relaxed: leaves for this range were ensured by the same lock holder.
            let leaf = self.top[addr >> LEAF_SHIFT].load(Ordering::Relaxed);
            assert!(leaf != empty_leaf(), "page-map leaf ensured before use");
            let leaf = NonNull::new(leaf).expect("page-map leaf ensured before use");
            let index = (addr >> SLICE_SHIFT) & (LEAF_ENTRIES - 1);
            // Release: the descriptor's initialisation is visible to whoever reads the entry
            // with an Acquire, as every lookup does (speculative readers included: see the
            // module docs).
            // SAFETY: leaves are never freed.
            unsafe { leaf.as_ref()[index].store(value, Ordering::Release) };
            addr += SLICE_SIZE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::FakeOs;

    #[test]
    fn entries_round_trip_and_clear() {
        let os = FakeOs::new(usize::MAX);
        let map = std::boxed::Box::new(PageMap::new());
        let page = std::boxed::Box::leak(std::boxed::Box::new(Page::new()));
        let region = std::boxed::Box::leak(std::boxed::Box::new(Region::new()));
        let base = 0x7f00_0000_0000usize;
        assert_eq!(map.ensure_leaves(&os, base, 8 * SLICE_SIZE), Some(1));
        map.set_page(base, 2 * SLICE_SIZE, page);
        map.set_large(base + 2 * SLICE_SIZE, region);
        for offset in [0, 1, SLICE_SIZE, 2 * SLICE_SIZE - 1] {
            assert!(matches!(map.lookup(base + offset), Entry::Page(p) if core::ptr::eq(p, page)));
        }
        for offset in [2 * SLICE_SIZE, 3 * SLICE_SIZE - 8] {
            assert!(
                matches!(map.lookup(base + offset), Entry::Large(r) if core::ptr::eq(r, region))
            );
        }
        assert!(
            matches!(map.lookup(base + 3 * SLICE_SIZE), Entry::None),
            "only a large block's first slice is mapped"
        );
        assert!(matches!(map.lookup(base - 1), Entry::None), "no leaf there");
        assert!(
            matches!(map.lookup(usize::MAX), Entry::None),
            "beyond 48 bits, where nothing is mapped"
        );
        assert!(
            matches!(map.lookup(base + (1 << 48)), Entry::Page(_)),
            "beyond 48 bits the map aliases (callers check the full address)"
        );
        map.clear(base, 5 * SLICE_SIZE);
        assert!(matches!(map.lookup(base), Entry::None));
    }
}
