//! Pages of exited threads that still hold live blocks, per size class, waiting for another
//! thread to take them over (`find_page` step 3). Frees into an abandoned page go onto its
//! remote-free list as usual; whoever takes the page collects them.
//!
//! While a page is on a list, the list's mutex holder is its owner: the links are the page's
//! own `next` field.

use crate::arena::ARENA;
use crate::arena::page::Page;
use crate::stats::adjust;
use crate::sync::mutex::Mutex;

use super::size_class::NUM_CLASSES;

struct List(*mut Page);

// SAFETY: the list is only used under its mutex.
unsafe impl Send for List {}

static ABANDONED: [Mutex<List>; NUM_CLASSES] = [const { Mutex::new(List(core::ptr::null_mut())) }; NUM_CLASSES];

/// Adds a page whose owner has set its `owner` to `NO_OWNER`.
pub(crate) fn put(class: usize, page: &'static Page) {
    let mut list = ABANDONED[class].lock();
    // SAFETY: the page is handed to the list; the mutex makes us its owner.
    unsafe { page.next.set(list.0) };
    list.0 = (page as *const Page).cast_mut();
    adjust(&ARENA.counters.abandoned_pages, 1);
}

/// Takes an abandoned page of `class`, if any; the caller becomes its owner.
pub(crate) fn take(class: usize) -> Option<&'static Page> {
    let mut list = ABANDONED[class].lock();
    // SAFETY: pages on the list are descriptors (never freed) owned by the mutex holder.
    let page = unsafe { list.0.as_ref() }?;
    // SAFETY: as above.
    list.0 = unsafe { page.next.get() };
    // SAFETY: as above.
    unsafe { page.next.set(core::ptr::null_mut()) };
    adjust(&ARENA.counters.abandoned_pages, -1);
    Some(page)
}

/// Gives empty abandoned pages back to their regions (for `collect()`).
pub(crate) fn release_empty() {
    for slot in &ABANDONED {
        let mut keep: *mut Page = core::ptr::null_mut();
        let mut list = slot.lock();
        // SAFETY: pages on the list are owned by us, the mutex holder.
        unsafe {
            while let Some(page) = list.0.as_ref() {
                list.0 = page.next.get();
                super::pages::collect(page);
                if super::pages::is_empty(page) {
                    adjust(&ARENA.counters.abandoned_pages, -1);
                    ARENA.release_page(page);
                } else {
                    page.next.set(keep);
                    keep = (page as *const Page).cast_mut();
                }
            }
        }
        list.0 = keep;
    }
}
