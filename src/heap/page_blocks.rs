//! A page's blocks as any thread may see them, owner or not: whether an address is the start
//! of a block the page carved, and how the page's remote-free word packs its list of blocks,
//! their count and the abandoned tag. Both the page operations (`pages`) and the double-free
//! checks (`double_free`) build on these; neither calls the other for them.
//!
//! Layer: `heap`, at its bottom; calls `arena::page`, `heap::size_class` and `sync::atomic`.

use crate::arena::page::{Block, Page};
use crate::sync::atomic::Ordering;

use super::size_class::block_index;

/// True if `addr` is the start of a block the page has carved (and so may have handed out):
/// every free checks its pointer with this, the owner's as well as other threads'. A
/// multiply, a rotate and a compare on the page's shared line, no division.
#[inline(always)]
pub(crate) fn is_carved_block(page: &Page, addr: usize) -> bool {
    // Relaxed: fixed while the page is in use, which it is for any caller holding one of its
    // blocks (the owner wrote them before the block was handed out; the user's own
    // synchronisation brought the block, and so them, to this thread). For a page not in use
    // `carved` is 0 and nothing passes.
    let start = page.start.load(Ordering::Relaxed) as usize;
    let shift = page.block_shift.load(Ordering::Relaxed);
    let inverse = page.block_inverse.load(Ordering::Relaxed);
    let carved = page.carved.get();
    block_index(addr.wrapping_sub(start), shift, inverse) < carved as u64
}

/// Set in `xthread_free` while the page is abandoned: whoever clears it (a thread taking it
/// from the abandoned list, or the thread whose free empties the page) becomes the page's
/// owner.
pub(crate) const ABANDONED_TAG: usize = 1;

/// `xthread_free` also counts its blocks, in its top 16 bits (addresses use the low 48; a page
/// holds at most 8,192 blocks). With the count in the same word as the list, the owner takes
/// both with one swap and need not walk the list to count it: a walk over blocks another core
/// just wrote is a chain of cache misses, the main cost of remote frees in larson-like loads.
/// On an abandoned page it also tells a freeing thread when its free is the page's last.
pub(super) const COUNT_SHIFT: u32 = 48;
pub(super) const LIST_MASK: usize = (1 << COUNT_SHIFT) - 1 - ABANDONED_TAG;

/// The first block of the remote list in an `xthread_free` word (null if none).
pub(crate) fn list_of(word: *mut Block) -> *mut Block {
    word.map_addr(|a| a & LIST_MASK)
}

pub(super) fn count_of(word: *mut Block) -> u32 {
    (word.addr() >> COUNT_SHIFT) as u32
}
