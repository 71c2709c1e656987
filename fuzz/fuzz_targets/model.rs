//! The model the `ops`, `threads`, `c_api` and `fork` targets check vmarena against: every live
//! block with its layout and fill pattern, kept in address order so overlaps show up at once.
// Shared by several targets, each of which uses part of it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::Mutex;

pub static ALLOC: vmarena::VmArena = vmarena::VmArena;

/// The fuzzer's bytes as a stream of numbers.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub fn u16(&mut self) -> Option<usize> {
        Some(self.byte()? as usize | (self.byte()? as usize) << 8)
    }
    /// A size from 1 byte to 32 MiB, mostly small.
    pub fn size(&mut self) -> Option<usize> {
        Some(match self.byte()? % 16 {
            0..=9 => 1 + self.byte()? as usize,
            10..=12 => 1 + self.u16()?,
            13..=14 => 1 + self.u16()? * 16,
            _ => 1 + self.u16()? * 512,
        })
    }
    /// An alignment from 1 byte to 8 MiB (beyond the page size).
    pub fn align(&mut self) -> Option<usize> {
        let b = self.byte()?;
        Some(1 << if b < 200 { b % 5 } else { b % 24 })
    }
}

// The block pattern is the test kit's tagged pattern (`vmarena_testkit::tagged_pattern`: the
// seed as the tag), shared with the soak test.
use vmarena_testkit::tagged_pattern;

/// # Safety
/// `ptr` is valid for `len` bytes of writes.
pub unsafe fn fill(ptr: *mut u8, len: usize, seed: u8) {
    // SAFETY: forwarded from the caller.
    unsafe { tagged_pattern::fill(ptr, len, u64::from(seed)) }
}

/// Checks the first `upto` bytes of a block filled as `len` bytes with `seed`.
///
/// # Safety
/// `ptr` is valid for `upto` bytes of reads.
pub unsafe fn check(ptr: *const u8, len: usize, upto: usize, seed: u8) {
    // SAFETY: forwarded from the caller.
    unsafe { tagged_pattern::check(ptr, len, upto, u64::from(seed)) }
}

/// # Safety
/// `ptr` is valid for `len` bytes of reads.
pub unsafe fn check_zero(ptr: *const u8, len: usize) {
    // SAFETY: forwarded from the caller.
    if let Some((at, byte)) = unsafe { tagged_pattern::first_nonzero(ptr, len) } {
        panic!(
            "zeroed block {ptr:p} ({len} bytes, usable {:?}) has {byte:#x} at byte {at}",
            vmarena::usable_size(ptr),
        );
    }
}

#[derive(Clone, Copy)]
pub struct Live {
    pub ptr: usize,
    pub layout: Layout,
    pub seed: u8,
}

// SAFETY: plain data; blocks are handed between threads on purpose.
unsafe impl Send for Live {}

/// The live blocks, by address.
#[derive(Default)]
pub struct Model {
    live: BTreeMap<usize, Live>,
    bytes: usize,
}

/// The model stops allocating past this many live bytes (the fuzzer must not run out of RAM).
const MAX_LIVE_BYTES: usize = 512 << 20;

impl Model {
    pub fn nth(&self, n: usize) -> Option<Live> {
        let len = self.live.len();
        (len > 0).then(|| *self.live.values().nth(n % len).unwrap())
    }

    /// Records a new block; panics if it overlaps a live one or is misaligned.
    pub fn insert(&mut self, block: Live) {
        let (start, end) = (block.ptr, block.ptr + block.layout.size());
        assert_eq!(
            start % block.layout.align(),
            0,
            "{:?} misaligned at {start:#x}",
            block.layout
        );
        if let Some((_, prev)) = self.live.range(..=start).next_back() {
            assert!(
                prev.ptr + prev.layout.size() <= start,
                "block {start:#x} overlaps {:#x}",
                prev.ptr
            );
        }
        if let Some((&next, _)) = self.live.range(start..).next() {
            assert!(end <= next, "block {start:#x}..{end:#x} overlaps {next:#x}");
        }
        let usable = vmarena::usable_size(start as *const u8).expect("vmarena knows its block");
        assert!(
            usable >= block.layout.size(),
            "usable size {usable} < {}",
            block.layout.size()
        );
        self.bytes += block.layout.size();
        self.live.insert(start, block);
    }

    pub fn remove(&mut self, ptr: usize) -> Live {
        let block = self.live.remove(&ptr).expect("a live block");
        self.bytes -= block.layout.size();
        block
    }

    pub fn full(&self) -> bool {
        self.bytes > MAX_LIVE_BYTES
    }

    /// Bytes of the live blocks' layouts.
    pub fn live_bytes(&self) -> usize {
        self.bytes
    }

    pub fn check_all(&self) {
        for b in self.live.values() {
            // SAFETY: live blocks of the model.
            unsafe { check(b.ptr as *const u8, b.layout.size(), b.layout.size(), b.seed) };
        }
    }

    pub fn drain(&mut self) -> Vec<Live> {
        self.bytes = 0;
        std::mem::take(&mut self.live).into_values().collect()
    }
}

/// Every live block of every thread, by start address, with its end: a block handed to two
/// threads at once shows up here when the second one gets it (a per-thread model cannot see
/// that, and the fill patterns of two threads may agree).
static EVERY_LIVE_BLOCK: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

fn register(ptr: usize, len: usize) {
    let mut all = EVERY_LIVE_BLOCK.lock().unwrap_or_else(|e| e.into_inner());
    let end = ptr + len;
    if let Some((&start, &prev_end)) = all.range(..=ptr).next_back() {
        assert!(
            prev_end <= ptr,
            "block {ptr:#x}..{end:#x} overlaps live block {start:#x}..{prev_end:#x} (another thread's?)"
        );
    }
    if let Some((&next, &next_end)) = all.range(ptr..).next() {
        assert!(
            end <= next,
            "block {ptr:#x}..{end:#x} overlaps live block {next:#x}..{next_end:#x} (another thread's?)"
        );
    }
    all.insert(ptr, end);
}

fn unregister(ptr: usize) {
    let mut all = EVERY_LIVE_BLOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert!(all.remove(&ptr).is_some(), "block {ptr:#x} is not live");
}

/// Allocates (zeroed or not), checks and fills a block; `None` if the allocator said null.
pub fn alloc(layout: Layout, zeroed: bool, seed: u8) -> Option<Live> {
    // SAFETY: non-zero size (the model's sizes start at 1).
    let ptr = unsafe {
        if zeroed {
            ALLOC.alloc_zeroed(layout)
        } else {
            ALLOC.alloc(layout)
        }
    };
    if ptr.is_null() {
        return None;
    }
    register(ptr as usize, layout.size());
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe {
        if zeroed {
            check_zero(ptr, layout.size());
        }
        fill(ptr, layout.size(), seed);
    }
    Some(Live {
        ptr: ptr as usize,
        layout,
        seed,
    })
}

/// Checks and frees a block.
pub fn free(block: Live) {
    // SAFETY: a live block, freed once.
    unsafe {
        check(
            block.ptr as *const u8,
            block.layout.size(),
            block.layout.size(),
            block.seed,
        );
        unregister(block.ptr);
        ALLOC.dealloc(block.ptr as *mut u8, block.layout);
    }
}

/// Reallocates a block, checks its prefix survived, fills the rest. On failure the old block
/// must be intact and is returned.
pub fn realloc(block: Live, new_size: usize, seed: u8) -> Live {
    let Ok(new_layout) = Layout::from_size_align(new_size, block.layout.align()) else {
        return block;
    };
    // SAFETY: a live block; non-zero new size that is valid with the alignment.
    unsafe {
        check(
            block.ptr as *const u8,
            block.layout.size(),
            block.layout.size(),
            block.seed,
        );
        unregister(block.ptr);
        let ptr = ALLOC.realloc(block.ptr as *mut u8, block.layout, new_size);
        if ptr.is_null() {
            register(block.ptr, block.layout.size());
            check(
                block.ptr as *const u8,
                block.layout.size(),
                block.layout.size(),
                block.seed,
            );
            return block;
        }
        assert_eq!(
            ptr as usize % block.layout.align(),
            0,
            "realloc lost the alignment"
        );
        register(ptr as usize, new_size);
        check(
            ptr,
            block.layout.size(),
            block.layout.size().min(new_size),
            block.seed,
        );
        fill(ptr, new_size, seed);
        Live {
            ptr: ptr as usize,
            layout: new_layout,
            seed,
        }
    }
}
