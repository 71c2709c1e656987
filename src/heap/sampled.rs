//! Where the heap meets heap-profile sampling (see `sampling`): a small allocation that a
//! heap's count-down picks is served as a large block that carries the sample, and large
//! allocations, frees and reallocations take samples on and off their blocks.
//!
//! Layer: `heap`; calls `heap::heap_core` (the struct), `free_path` (to give back the small
//! block a sample replaced), `sampling`, `large` and `arena` (region fields).

use super::heap_core::HeapCore;
use crate::arena::page::{Block, Page};
use crate::arena::region::Region;
use crate::sampling;
use crate::sync::atomic::Ordering;

impl HeapCore {
    /// The malloc fast path's sample: `block`, just popped from `page` for a request of `size`
    /// bytes, is to be sampled (`HeapCore::settle` said so). The request is served instead by
    /// a large block of its own carrying the sample, and `block` goes back to its page
    /// (uncounted: the count already taken stands for the sampled block).
    #[cold]
    #[inline(never)]
    pub(super) fn alloc_sampled<const ZERO: bool, const USABLE: bool>(
        &self,
        page: &'static Page,
        block: *mut Block,
        size: usize,
    ) -> *mut u8 {
        // This function and the fast path's end call in tail position (the fast path's frame
        // is gone): leaving their frames out leaves the program's first.
        let this: fn(&Self, &'static Page, *mut Block, usize) -> *mut u8 =
            Self::alloc_sampled::<ZERO, USABLE>;
        let past: fn(&Self, &'static Page, *mut Block, usize) -> *mut u8 =
            Self::alloc_past_countdown::<ZERO, USABLE>;
        let region = self.sample_region(&[this as usize, past as usize], size, ZERO);
        self.sampled();
        let Some(region) = region else {
            return block.cast(); // no memory or room for the sample: the block serves
        };
        if USABLE {
            // C frees count the block's size, as the counted allocation did (Relaxed: fixed
            // while the page is in use, and it is ours).
            region
                .large
                .set_requested(page.block_size.load(Ordering::Relaxed));
        }
        // SAFETY: our page, the current one of its class (not full); the block was just popped
        // and never handed out.
        unsafe { self.free_owned(page, block) };
        region.start()
    }

    /// A large block of `size` bytes was just allocated (or resized) in `region` for the
    /// heap's thread, by `caller` (a function of the allocator, left out of the stack):
    /// samples it if the count-down reaches it.
    pub(crate) fn sample_large(&self, region: &Region, size: usize, caller: usize) {
        if self.count_down(size) && self.settle(size) {
            self.sample_large_now(region, size, caller);
        }
    }

    #[cold]
    #[inline(never)]
    fn sample_large_now(&self, region: &Region, size: usize, caller: usize) {
        let now: fn(&Self, &Region, usize, usize) = Self::sample_large_now;
        let at: fn(&Self, *mut u8, usize, usize) = Self::sample_large_at;
        let internal = [now as usize, at as usize, caller];
        let stack = crate::sampling::stack::capture(&internal);
        if let Some(record) = sampling::record(&stack, size) {
            region.large.set_sample(record);
        }
        self.sampled();
    }
}

impl HeapCore {
    /// A large block for a sample of a small block of `size` bytes (a one-slice region the
    /// heap kept from an earlier sample, else a new one), carrying a sample of the calling
    /// thread's stack less the allocator's frames `internal`; `None` if there is no memory
    /// for it or no room in the table. Always inlined: its frame would be one more to leave
    /// out.
    #[inline(always)]
    fn sample_region(
        &self,
        internal: &[usize],
        size: usize,
        zeroed: bool,
    ) -> Option<&'static Region> {
        let stack = crate::sampling::stack::capture(internal);
        let region = match self.large_cache.take_for_sample() {
            Some(region) => {
                region.large.set_requested(size);
                if zeroed {
                    // SAFETY: the block is ours, a whole slice, above `size` bytes.
                    unsafe { core::ptr::write_bytes(region.start(), 0, size) };
                }
                region
            }
            None => crate::large::alloc_block(size, 1, zeroed)?,
        };
        let Some(record) = sampling::record(&stack, size) else {
            let live = crate::arena::large_block::LargeState::Live;
            crate::large::release(region, region.start(), live);
            return None;
        };
        region.large.set_sample(record);
        Some(region)
    }

    /// [`HeapCore::sample_large`] for the large block at `ptr` (found only if sampling is on).
    #[inline(never)]
    pub(crate) fn sample_large_at(&self, ptr: *mut u8, size: usize, caller: usize) {
        if self.counters.modes() & super::counters::SAMPLE == 0 {
            return;
        }
        if let crate::arena::pagemap::Entry::Large(region) =
            crate::arena::ARENA.lookup(ptr as usize)
        {
            self.sample_large(region, size, caller);
        }
    }
}

/// The large block of `region` leaves (freed, or resized into a new allocation): its sample,
/// if it carries one, leaves the in-use figures. True if it carried one.
pub(crate) fn forget_sample(region: &Region) -> bool {
    let record = region.large.take_sample();
    if record != 0 {
        sampling::forget(record);
    }
    record != 0
}
