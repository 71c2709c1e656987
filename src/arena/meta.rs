//! Allocator metadata: chunks of memory straight from the OS, carved into type-stable pools of
//! region descriptors and page tables. Nothing here is ever returned to the OS, which is what
//! lets lock-free readers hold stale descriptor pointers safely (the kernel gets the same
//! guarantee from `SLAB_TYPESAFE_BY_RCU`). The arena's pools run under the arena write lock;
//! the thread heaps' pool (in `heap::lifecycle`) under the heap registry's mutex, and the
//! isolated heaps' pool (in `isolated`) under their registry's.
//!
//! Layer: `arena`; calls `os` (for chunks), `config` and `sync::atomic`. `heap::lifecycle` and
//! `isolated` build their pools of heap descriptors on it.

use core::ptr::NonNull;

use super::page::{Page, PageTable};
use super::region::Region;
use crate::config::{META_CHUNK_SIZE, align_up};
use crate::os::Os;
use crate::sync::atomic::{AtomicPtr, Ordering};

/// A bump allocator over OS chunks.
pub(crate) struct MetaChunks {
    /// The unused rest of the current chunk (null before the first).
    next: *mut u8,
    end: usize,
    /// Bytes of metadata mapped from the OS (for statistics: `Stats::bytes_metadata`).
    bytes_mapped: usize,
}

impl MetaChunks {
    pub(crate) const fn new() -> MetaChunks {
        MetaChunks {
            next: core::ptr::null_mut(),
            end: 0,
            bytes_mapped: 0,
        }
    }

    fn alloc(&mut self, os: &impl Os, size: usize, align: usize) -> Option<NonNull<u8>> {
        let pad = align_up(self.next as usize, align)? - self.next as usize;
        let mut start = self.next.wrapping_add(pad);
        if self.next.is_null() || start as usize + size > self.end {
            let chunk = align_up(size.max(META_CHUNK_SIZE), os.page_size())?;
            let base = os.reserve(chunk, align.max(os.page_size()))?;
            self.bytes_mapped += chunk;
            start = base.as_ptr();
            self.end = start as usize + chunk;
        }
        self.next = start.wrapping_add(size);
        // Fresh OS memory reads as zero; the pools initialise what they carve.
        NonNull::new(start)
    }

    /// Bytes mapped from the OS (for statistics).
    pub(crate) fn bytes_mapped(&self) -> usize {
        self.bytes_mapped
    }
}

/// Something kept in a type-stable [`Pool`].
pub(crate) trait Pooled: Sized + 'static {
    /// Writes a new, unused object at `slot`.
    ///
    /// # Safety
    /// `slot` is valid for writes of `Self` and aligned.
    unsafe fn init(slot: *mut Self);
    /// The link the pool uses while the object is unused.
    fn pool_link(&self) -> &AtomicPtr<Self>;
}

impl Pooled for Region {
    unsafe fn init(slot: *mut Self) {
        // SAFETY: guaranteed by the caller.
        unsafe { slot.write(Region::new()) }
    }
    fn pool_link(&self) -> &AtomicPtr<Self> {
        &self.pool_next
    }
}

impl Pooled for PageTable {
    unsafe fn init(slot: *mut Self) {
        // SAFETY: guaranteed by the caller; fields are written one by one so the 50 KiB table
        // is never built on the stack.
        unsafe {
            (&raw mut (*slot).next_free).write(AtomicPtr::new(core::ptr::null_mut()));
            let pages = (&raw mut (*slot).pages).cast::<Page>();
            for i in 0..crate::config::MAX_REGION_PAGES {
                pages.add(i).write(Page::new());
            }
        }
    }
    fn pool_link(&self) -> &AtomicPtr<Self> {
        &self.next_free
    }
}

/// A free list of objects that once created stay objects of this type forever.
pub(crate) struct Pool<T: Pooled> {
    free: *mut T,
    /// Objects ever created (for statistics and tests).
    created: usize,
}

impl<T: Pooled> Pool<T> {
    pub(crate) const fn new() -> Pool<T> {
        Pool {
            free: core::ptr::null_mut(),
            created: 0,
        }
    }

    /// An unused object, from the free list or newly carved from metadata chunks.
    pub(crate) fn take(&mut self, meta: &mut MetaChunks, os: &impl Os) -> Option<&'static T> {
        if let Some(item) = NonNull::new(self.free) {
            // SAFETY: pooled objects are never freed.
            let item: &'static T = unsafe { item.as_ref() };
            // Relaxed: a pool is only used under one lock (the arena write lock, or the heap
            // registry's mutex for heaps).
            self.free = item
                .pool_link()
                .swap(core::ptr::null_mut(), Ordering::Relaxed);
            return Some(item);
        }
        let slot = meta
            .alloc(os, core::mem::size_of::<T>(), core::mem::align_of::<T>())?
            .cast::<T>();
        // SAFETY: the chunk memory is ours, sized and aligned for T, and never freed.
        unsafe {
            T::init(slot.as_ptr());
            self.created += 1;
            Some(slot.as_ref())
        }
    }

    /// Returns an object the arena no longer uses. It stays a `T`: stale readers may still
    /// look at it and must check its identity.
    pub(crate) fn give(&mut self, item: &'static T) {
        // Relaxed: under the pool's lock.
        item.pool_link().store(self.free, Ordering::Relaxed);
        self.free = (item as *const T).cast_mut();
    }
}

/// Everything a write session takes descriptors from: the pools and the chunks they grow from.
pub(crate) struct Descriptors {
    chunks: MetaChunks,
    regions: Pool<Region>,
    tables: Pool<PageTable>,
    /// Every region descriptor ever created, newest first, through `Region::next_created`
    /// (for a forked child, which must reset every region's reader count).
    all_regions: *const Region,
}

impl Descriptors {
    pub(crate) const fn new() -> Descriptors {
        Descriptors {
            chunks: MetaChunks::new(),
            regions: Pool::new(),
            tables: Pool::new(),
            all_regions: core::ptr::null(),
        }
    }

    pub(crate) fn take_region(&mut self, os: &impl Os) -> Option<&'static Region> {
        let created = self.regions.created;
        let region = self.regions.take(&mut self.chunks, os)?;
        if self.regions.created != created {
            // Relaxed: written once, under the arena write lock, read under it.
            region
                .next_created
                .store(self.all_regions.cast_mut(), Ordering::Relaxed);
            self.all_regions = region;
        }
        Some(region)
    }

    /// Every region descriptor ever created, in use or pooled. The caller holds the arena
    /// write lock.
    pub(crate) fn all_regions(&self) -> impl Iterator<Item = &'static Region> + '_ {
        // SAFETY: descriptors are never freed; the links are set once, at creation.
        let mut cursor = unsafe { self.all_regions.as_ref() };
        core::iter::from_fn(move || {
            let region = cursor?;
            // SAFETY: as above. Relaxed: written under the lock the caller holds.
            cursor = unsafe { region.next_created.load(Ordering::Relaxed).as_ref() };
            Some(region)
        })
    }

    pub(crate) fn give_region(&mut self, region: &'static Region) {
        self.regions.give(region);
    }

    pub(crate) fn take_table(&mut self, os: &impl Os) -> Option<&'static PageTable> {
        self.tables.take(&mut self.chunks, os)
    }

    pub(crate) fn give_table(&mut self, table: &'static PageTable) {
        self.tables.give(table);
    }

    /// Bytes mapped from the OS for descriptors and page tables.
    pub(crate) fn bytes_mapped(&self) -> usize {
        self.chunks.bytes_mapped
    }
}
