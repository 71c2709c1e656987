//! Intrusive doubly linked lists of descriptors that are never freed (pages, heaps, isolated
//! heaps, large-block regions): the one list type the allocator links things with, so that
//! linking, unlinking and walking are written, and tested, once.
//!
//! A node says where its links are through a [`Links`] adapter (one node type may sit on
//! several kinds of list, one pair of links for each). A list knows its first and last node.
//! Who may change a list and its nodes' links, the thread that owns them or the holder of a
//! mutex, is each list's contract: the operations are `unsafe`, and each caller says why it
//! may.
//!
//! Layer: a leaf service; calls `sync::atomic` (for [`AtomicLinks`]).

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::null;

use crate::sync::atomic::{AtomicPtr, Ordering};

/// Where the nodes of one kind of list keep their links.
///
/// # Safety
/// `next` and `prev` return what `set_next` and `set_prev` last stored for the node (null
/// before the first store), and the node type's descriptors are never freed.
pub(crate) unsafe trait Links {
    type Node: 'static;
    /// # Safety
    /// The caller may read the node's links (the list's contract).
    unsafe fn next(node: &Self::Node) -> *const Self::Node;
    /// # Safety
    /// As for [`Links::next`].
    unsafe fn prev(node: &Self::Node) -> *const Self::Node;
    /// # Safety
    /// The caller may write the node's links (the list's contract).
    unsafe fn set_next(node: &Self::Node, next: *const Self::Node);
    /// # Safety
    /// As for [`Links::set_next`].
    unsafe fn set_prev(node: &Self::Node, prev: *const Self::Node);
}

/// A pair of links for nodes that other threads may read while one thread links them: atomics,
/// used Relaxed, because a list is only ever changed and walked by the one thread its contract
/// allows (under a mutex or by the owner); being atomics only keeps other fields of the node
/// readable by other threads.
pub(crate) struct AtomicLinks<T> {
    next: AtomicPtr<T>,
    prev: AtomicPtr<T>,
}

impl<T> AtomicLinks<T> {
    pub(crate) const fn new() -> AtomicLinks<T> {
        AtomicLinks {
            next: AtomicPtr::new(core::ptr::null_mut()),
            prev: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    pub(crate) fn next(&self) -> *const T {
        // Relaxed: see the type's docs.
        self.next.load(Ordering::Relaxed)
    }

    pub(crate) fn prev(&self) -> *const T {
        // Relaxed: see the type's docs.
        self.prev.load(Ordering::Relaxed)
    }

    pub(crate) fn set_next(&self, next: *const T) {
        // Relaxed: see the type's docs.
        self.next.store(next.cast_mut(), Ordering::Relaxed);
    }

    pub(crate) fn set_prev(&self, prev: *const T) {
        // Relaxed: see the type's docs.
        self.prev.store(prev.cast_mut(), Ordering::Relaxed);
    }
}

/// Declares `$adapter`, the [`Links`] adapter of lists whose nodes, of type `$node`, link
/// through their [`AtomicLinks`] field `$field`. Only for descriptor types that are never freed
/// (the adapter's `unsafe impl` rests on it), and one adapter per field.
macro_rules! atomic_links {
    ($(#[$doc:meta])* $vis:vis $adapter:ident: $node:ty, $($field:ident).+) => {
        $(#[$doc])*
        $vis enum $adapter {}

        // SAFETY: the node's own `$($field).+` pair, which only this adapter's lists use; the node
        // type's descriptors are never freed (the macro's contract).
        unsafe impl $crate::list::Links for $adapter {
            type Node = $node;
            unsafe fn next(node: &$node) -> *const $node {
                node.$($field).+.next()
            }
            unsafe fn prev(node: &$node) -> *const $node {
                node.$($field).+.prev()
            }
            unsafe fn set_next(node: &$node, next: *const $node) {
                node.$($field).+.set_next(next);
            }
            unsafe fn set_prev(node: &$node, prev: *const $node) {
                node.$($field).+.set_prev(prev);
            }
        }
    };
}
pub(crate) use atomic_links;

/// A doubly linked list of `L::Node`s.
pub(crate) struct List<L: Links> {
    first: Cell<*const L::Node>,
    last: Cell<*const L::Node>,
    _links: PhantomData<L>,
}

// SAFETY: a list holds pointers to descriptors that are never freed; moving it to another
// thread moves the right to change it, which its contract governs (a mutex, or ownership).
unsafe impl<L: Links> Send for List<L> {}

impl<L: Links> List<L> {
    pub(crate) const fn new() -> List<L> {
        List {
            first: Cell::new(null()),
            last: Cell::new(null()),
            _links: PhantomData,
        }
    }

    pub(crate) fn first(&self) -> Option<&'static L::Node> {
        // SAFETY: nodes are descriptors, never freed (`Links`).
        unsafe { self.first.get().as_ref() }
    }

    /// The first node as a pointer (null if the list is empty).
    pub(crate) fn first_ptr(&self) -> *const L::Node {
        self.first.get()
    }

    /// The last node as a pointer (null if the list is empty).
    pub(crate) fn last_ptr(&self) -> *const L::Node {
        self.last.get()
    }

    /// # Safety
    /// The caller may change this list and `node`'s links (the list's contract); `node` is on
    /// no list of this kind.
    pub(crate) unsafe fn push_front(&self, node: &'static L::Node) {
        let first = self.first.get();
        // SAFETY: (whole block) the caller may change the list, and so its nodes' links.
        unsafe {
            L::set_prev(node, null());
            L::set_next(node, first);
            match first.as_ref() {
                Some(first) => L::set_prev(first, node),
                None => self.last.set(node),
            }
        }
        self.first.set(node);
    }

    /// # Safety
    /// As for [`List::push_front`].
    pub(crate) unsafe fn push_back(&self, node: &'static L::Node) {
        let last = self.last.get();
        // SAFETY: (whole block) as for `push_front`.
        unsafe {
            L::set_next(node, null());
            L::set_prev(node, last);
            match last.as_ref() {
                Some(last) => L::set_next(last, node),
                None => self.first.set(node),
            }
        }
        self.last.set(node);
    }

    /// Unlinks `node` and clears its links.
    ///
    /// # Safety
    /// The caller may change this list and its nodes' links; `node` is on this list.
    pub(crate) unsafe fn remove(&self, node: &L::Node) {
        // SAFETY: (whole block) the caller may change the list; `node`'s neighbours are nodes
        // of it, never freed.
        unsafe {
            let (prev, next) = (L::prev(node), L::next(node));
            match prev.as_ref() {
                Some(prev) => L::set_next(prev, next),
                None => self.first.set(next),
            }
            match next.as_ref() {
                Some(next) => L::set_prev(next, prev),
                None => self.last.set(prev),
            }
            L::set_next(node, null());
            L::set_prev(node, null());
        }
    }

    /// Walks the list front to back. Each node's successor is read before the node is
    /// yielded, so the walker may remove (or move elsewhere) the node it was just given.
    ///
    /// # Safety
    /// The caller may read this list's links for as long as it walks (the list's contract),
    /// and changes no other node of the list meanwhile.
    pub(crate) unsafe fn iter(&self) -> impl Iterator<Item = &'static L::Node> + use<L> {
        let mut cursor = self.first.get();
        core::iter::from_fn(move || {
            // SAFETY: nodes are never freed (`Links`); the caller may read the links.
            let node = unsafe { cursor.as_ref()? };
            // SAFETY: as above.
            cursor = unsafe { L::next(node) };
            Some(node)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    struct Node {
        id: usize,
        links: AtomicLinks<Node>,
    }

    // Test nodes are leaked, never freed.
    atomic_links!(ByLinks: Node, links);

    fn nodes(n: usize) -> Vec<&'static Node> {
        (0..n)
            .map(|id| {
                &*Box::leak(Box::new(Node {
                    id,
                    links: AtomicLinks::new(),
                }))
            })
            .collect()
    }

    /// The ids front to back, checking every back link on the way and `last` at the end.
    fn ids(list: &List<ByLinks>) -> Vec<usize> {
        let mut seen = Vec::new();
        let mut prev: *const Node = null();
        // SAFETY: the test's own list, one thread.
        for node in unsafe { list.iter() } {
            assert_eq!(node.links.prev(), prev, "back link of node {}", node.id);
            prev = node;
            seen.push(node.id);
        }
        assert_eq!(list.last_ptr(), prev, "last");
        assert_eq!(list.first_ptr().is_null(), seen.is_empty(), "first");
        seen
    }

    #[test]
    fn pushes_at_both_ends_keep_both_directions_consistent() {
        let n = nodes(4);
        let list = List::<ByLinks>::new();
        assert_eq!(ids(&list), []);
        // SAFETY: (whole test) the test's own list, one thread; each node pushed once.
        unsafe {
            list.push_back(n[1]);
            list.push_front(n[0]);
            list.push_back(n[2]);
            list.push_back(n[3]);
        }
        assert_eq!(ids(&list), [0, 1, 2, 3]);
        assert_eq!(list.first().map(|f| f.id), Some(0));
    }

    #[test]
    fn removing_first_middle_last_and_only_nodes_relinks_the_rest() {
        let n = nodes(4);
        let list = List::<ByLinks>::new();
        // SAFETY: (whole test) the test's own list, one thread; nodes removed are on it.
        unsafe {
            for node in &n {
                list.push_back(node);
            }
            list.remove(n[1]);
            assert_eq!(ids(&list), [0, 2, 3]);
            list.remove(n[0]);
            assert_eq!(ids(&list), [2, 3]);
            list.remove(n[3]);
            assert_eq!(ids(&list), [2]);
            list.remove(n[2]);
            assert_eq!(ids(&list), []);
            // A removed node's links are cleared, so it can go on a list again.
            assert!(n[1].links.next().is_null() && n[1].links.prev().is_null());
            list.push_front(n[1]);
        }
        assert_eq!(ids(&list), [1]);
    }

    #[test]
    fn a_walker_may_remove_the_node_it_was_given() {
        let n = nodes(5);
        let list = List::<ByLinks>::new();
        // SAFETY: (whole test) the test's own list, one thread; the walker removes only the
        // node it was given.
        unsafe {
            for node in &n {
                list.push_back(node);
            }
            for node in list.iter() {
                if node.id % 2 == 0 {
                    list.remove(node);
                }
            }
        }
        assert_eq!(ids(&list), [1, 3]);
    }
}
