//! Lists of pages, linked through the pages' own `next`/`prev`: a heap's queues and full lists
//! (changed only by the heap's owner) and the abandoned lists (changed only under their
//! mutex). A page is on at most one of them at a time.
//!
//! Layer: `heap`, a leaf of it; names `arena::page::Page` and uses `crate::list`.

use crate::arena::page::Page;
use crate::list::{Links, List};

/// The pair of links a page has for page lists.
pub(crate) enum PageLinks {}

// SAFETY: the links are the page's `next`/`prev` cells, which only these lists use; page
// descriptors are never freed.
unsafe impl Links for PageLinks {
    type Node = Page;
    unsafe fn next(page: &Page) -> *const Page {
        // SAFETY: the caller may read the links: it owns the page, or holds the mutex of the
        // abandoned list the page is on.
        unsafe { page.next.get() }
    }
    unsafe fn prev(page: &Page) -> *const Page {
        // SAFETY: as for `next`.
        unsafe { page.prev.get() }
    }
    unsafe fn set_next(page: &Page, next: *const Page) {
        // SAFETY: the caller may write the links (as for `next`).
        unsafe { page.next.set(next.cast_mut()) }
    }
    unsafe fn set_prev(page: &Page, prev: *const Page) {
        // SAFETY: as for `set_next`.
        unsafe { page.prev.set(prev.cast_mut()) }
    }
}

pub(crate) type PageList = List<PageLinks>;
