//! Pages of exited threads that still hold live blocks, per size class, waiting for another
//! thread to take them over.
//!
//! An abandoned page is on its class's list (linked through its own `next`/`prev`, changed only
//! under the list's mutex) and carries `ABANDONED_TAG` in its remote-free list. The tag is the
//! ownership token: exactly one thread clears it and becomes the owner, either a thread that
//! needs a page of this class ([`take`]) or the thread whose free empties the page (which
//! gives it back to its region; see `pages::push_remote`). Other frees leave the page here,
//! where the threads that allocate its class find it.
//! The owner unlinks the page; a list walker that finds the tag already cleared leaves the
//! page for its new owner to unlink.
//!
//! Layer: `heap`; calls `heap::pages` and `page_list`, `arena` (to give empty pages back),
//! `sync::mutex` and `stats`.

use crate::arena::ARENA;
use crate::arena::page::Page;
use crate::stats::Tally;
use crate::sync::mutex::Mutex;

use super::page_list::PageList;
use super::pages;
use super::size_class::NUM_CLASSES;

/// One class's abandoned pages. The list and the pages' links are only touched under the
/// list's mutex.
struct Abandoned {
    pages: PageList,
    /// Pages on the list (for statistics, read under the mutex).
    len: usize,
}

static ABANDONED: [Mutex<Abandoned>; NUM_CLASSES] = [const {
    Mutex::new(Abandoned {
        pages: PageList::new(),
        len: 0,
    })
}; NUM_CLASSES];

/// Hands over a page whose owner has set its `owner` to `NO_OWNER`.
pub(crate) fn put(class: usize, page: &'static Page) {
    let mut list = ABANDONED[class].lock();
    // SAFETY: under the list's mutex; the page is ours until tagged, and on no list.
    unsafe { list.pages.push_front(page) };
    list.len += 1;
    pages::tag_abandoned(page);
}

/// # Safety
/// `page` is on `list`, whose mutex the caller holds.
unsafe fn unlink(list: &mut Abandoned, page: &Page) {
    // SAFETY: forwarded from the caller.
    unsafe { list.pages.remove(page) };
    list.len -= 1;
}

/// Takes an abandoned page of `class`, if any; the caller becomes its owner.
pub(crate) fn take(class: usize) -> Option<&'static Page> {
    let mut list = ABANDONED[class].lock();
    // SAFETY: under the list's mutex; the walk stops at the page it unlinks.
    unsafe {
        for page in list.pages.iter() {
            if pages::untag_abandoned(page) {
                unlink(&mut list, page);
                return Some(page);
            }
        }
    }
    None
}

/// Unlinks a page the caller took over by freeing into it (see the module docs).
pub(crate) fn unlink_adopted(class: usize, page: &'static Page) {
    let mut list = ABANDONED[class].lock();
    // SAFETY: under the mutex; a page whose tag we cleared is still on its class's list.
    unsafe { unlink(&mut list, page) };
}

/// Pages waiting on the abandoned lists.
pub(crate) fn count() -> usize {
    ABANDONED.iter().map(|list| list.lock().len).sum()
}

/// Gives abandoned pages whose blocks have all been freed back to their regions, counting in
/// `tally` (the caller's).
pub(crate) fn release_empty(tally: &Tally) {
    for slot in &ABANDONED {
        let mut list = slot.lock();
        // SAFETY: under the list's mutex; the walk unlinks only the page it was given, and a
        // page we untag is ours.
        unsafe {
            for page in list.pages.iter() {
                if !pages::untag_abandoned(page) {
                    continue;
                }
                pages::collect(page);
                if pages::is_empty(page) {
                    unlink(&mut list, page);
                    ARENA.release_page(page, tally);
                } else {
                    pages::tag_abandoned(page);
                }
            }
        }
    }
}

/// Locks every abandoned list across `fork` (see `crate::fork`).
pub(crate) fn lock_for_fork() {
    for list in &ABANDONED {
        list.lock_raw();
    }
}

/// Unlocks what [`lock_for_fork`] locked, in the parent.
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and has not unlocked since.
pub(crate) unsafe fn unlock_after_fork_parent() {
    for list in ABANDONED.iter().rev() {
        // SAFETY: guaranteed by the caller.
        unsafe { list.unlock_raw() };
    }
}

/// Releases the locks in a forked child (the lists are consistent: the forking thread held
/// every one of them).
///
/// # Safety
/// The calling thread called [`lock_for_fork`] and is the only one in the process.
pub(crate) unsafe fn reset_after_fork_child() {
    for list in &ABANDONED {
        // SAFETY: guaranteed by the caller.
        unsafe { list.reset_after_fork() };
    }
}
