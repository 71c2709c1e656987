//! The heap's own tests: hand-over of pages between heaps (abandonment, adoption, the free
//! that empties an abandoned page), the fallback heap, and what a sentinel heap hands to its
//! caller. They drive `Heap`s directly, on the process's arena (no thread needs to start or
//! exit), one test at a time: the abandoned lists and the fallback heap are process-wide.
//!
//! Layer: `heap`'s tests; drive `heap_core`, `abandon`, `fallback` and `size_class` on the
//! process's `arena`.

use std::boxed::Box;
use std::sync::Mutex;
use std::vec::Vec;

use super::heap_core::{AlwaysAlive, FALLBACK_HEAP_ID, HeapCore, HeapState, NoHeap, new_heap_id};
use super::{abandon, fallback, size_class};
use crate::arena::ARENA;
use crate::arena::page::{NO_OWNER, Page};
use crate::sync::atomic::{AtomicUsize, Ordering};

/// The abandoned lists and the fallback heap are shared: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the others still run, one at a time.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A live heap of its own (no thread's: nothing reaps it).
fn live_heap() -> &'static HeapCore {
    let heap = Box::leak(Box::new(HeapCore::new()));
    heap.start(new_heap_id(), 0);
    heap
}

fn class_of(size: usize) -> (usize, usize) {
    let class = size_class::class_for_layout(size, 8).unwrap();
    (class, size_class::class_size(class))
}

fn page_of(block: *mut u8) -> &'static Page {
    ARENA
        .lookup_page(block as usize)
        .expect("a small block has a page")
}

fn alloc(heap: &HeapCore, (class, size): (usize, usize)) -> *mut u8 {
    let block = heap.alloc::<AlwaysAlive, false, false>(class, size);
    assert!(!block.is_null());
    block
}

/// Frees `block` from `heap`, wherever the block's page is.
fn free(heap: &HeapCore, block: *mut u8, size: usize) {
    // SAFETY: a live block the test gives up.
    unsafe { heap.free::<AlwaysAlive, false>(page_of(block), block.cast(), size) };
}

fn fill(block: *mut u8, size: usize, tag: u8) {
    // SAFETY: a live block of at least `size` bytes.
    unsafe { core::ptr::write_bytes(block, tag, size) };
}

fn holds(block: *mut u8, size: usize, tag: u8) -> bool {
    // SAFETY: a live block of at least `size` bytes.
    unsafe { core::slice::from_raw_parts(block, size) }
        .iter()
        .all(|&b| b == tag)
}

fn owner(page: &Page) -> usize {
    // Relaxed: the test's own thread wrote it last.
    page.owner.load(Ordering::Relaxed)
}

fn in_use(page: &Page) -> bool {
    // Relaxed: as for `owner`.
    page.block_size.load(Ordering::Relaxed) != 0
}

#[test]
fn an_abandoned_page_is_taken_over_by_the_next_heap_that_needs_its_class() {
    let _serial = serial();
    let class = class_of(48);
    let size = class.1;
    let a = live_heap();
    let blocks: Vec<*mut u8> = (0..8).map(|_| alloc(a, class)).collect();
    for (i, &block) in blocks.iter().enumerate() {
        fill(block, size, i as u8 + 1);
    }
    let page = page_of(blocks[0]);
    assert!(blocks.iter().all(|&b| core::ptr::eq(page_of(b), page)));
    let before = abandon::count();

    a.abandon_all();
    assert_eq!(
        abandon::count(),
        before + 1,
        "the page with live blocks waits"
    );
    assert_eq!(owner(page), NO_OWNER);

    let b = live_heap();
    let fresh = alloc(b, class);
    assert!(
        core::ptr::eq(page_of(fresh), page),
        "b took the abandoned page"
    );
    assert_eq!(abandon::count(), before);
    assert!(!blocks.contains(&fresh), "a live block handed out again");
    for (i, &block) in blocks.iter().enumerate() {
        assert!(
            holds(block, size, i as u8 + 1),
            "block {i} changed hands intact"
        );
    }
    b.validate();
    // The old blocks are b's now: freed by the owner, the page empties.
    for &block in blocks.iter().chain([&fresh]) {
        free(b, block, size);
    }
    b.collect();
    assert!(!in_use(page), "the emptied page went back to its region");
    b.validate();
}

#[test]
fn a_free_that_empties_an_abandoned_page_gives_it_back_to_its_region() {
    let _serial = serial();
    let class = class_of(200);
    let a = live_heap();
    let block = alloc(a, class);
    let page = page_of(block);
    let before = abandon::count();
    a.abandon_all();
    assert_eq!(abandon::count(), before + 1);

    let b = live_heap();
    free(b, block, class.1);
    assert_eq!(abandon::count(), before, "the page left the abandoned list");
    assert!(!in_use(page), "and went back to its region");
    b.validate();
}

#[test]
fn the_fallback_heap_takes_in_remote_frees_and_gives_empty_pages_back_on_collect() {
    let _serial = serial();
    let (class, size) = class_of(720);
    let block = fallback::alloc::<false, false>(class, size);
    assert!(!block.is_null());
    fill(block, size, 0x5a);
    let page = page_of(block);
    assert_eq!(owner(page) & !1, FALLBACK_HEAP_ID);

    let other = live_heap();
    free(other, block, size);
    assert!(in_use(page), "a remote free leaves the page with its owner");
    fallback::collect();
    assert!(
        !in_use(page),
        "collect took the free in and gave the page back"
    );
}

static NO_HEAP_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static NO_HEAP_FREES: AtomicUsize = AtomicUsize::new(0);

/// Records what a sentinel heap handed to its caller.
enum Recorder {}

impl NoHeap for Recorder {
    fn alloc<const ZERO: bool, const USABLE: bool>(
        heap: &HeapCore,
        _class: usize,
        _size: usize,
    ) -> *mut u8 {
        assert_ne!(heap.state(), HeapState::Alive);
        NO_HEAP_ALLOCS.fetch_add(1, Ordering::Relaxed);
        core::ptr::null_mut()
    }

    fn count_free(_heap: &HeapCore, _bytes: usize) {
        NO_HEAP_FREES.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_sentinel_heap_hands_allocations_to_its_caller_and_frees_into_the_owners_page() {
    let _serial = serial();
    let (class, size) = class_of(96);
    let sentinel: &HeapCore = Box::leak(Box::new(HeapCore::sentinel(HeapState::Destroyed)));
    let allocs = NO_HEAP_ALLOCS.load(Ordering::Relaxed);
    let block = sentinel.alloc::<Recorder, false, false>(class, size);
    assert!(block.is_null(), "the caller's answer");
    assert_eq!(NO_HEAP_ALLOCS.load(Ordering::Relaxed), allocs + 1);

    // A thread without a heap frees another heap's block: a remote free, counted by the
    // caller only while requested bytes are counted.
    let owner_heap = live_heap();
    let block = alloc(owner_heap, (class, size));
    let page = page_of(block);
    let frees = NO_HEAP_FREES.load(Ordering::Relaxed);
    // SAFETY: a live block the test gives up.
    unsafe { sentinel.free::<Recorder, false>(page, block.cast(), size) };
    let counted = usize::from(super::modes::tracking_requested());
    assert_eq!(NO_HEAP_FREES.load(Ordering::Relaxed), frees + counted);
    assert!(in_use(page), "the page stays its owner's");
    owner_heap.collect();
    assert!(!in_use(page), "the owner took the free in");
}
