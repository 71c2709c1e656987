//! What the samples add up to: a table of call stacks (buckets), each with the estimated
//! objects and bytes allocated there and still in use, and a record per sampled block that
//! is still live (its bucket and the estimate it added, taken off again at its free).
//!
//! Both live in memory mapped for them (`MAP_NORESERVE`: only what is used is committed),
//! never in the allocator being profiled, under one mutex that no allocation path holds
//! otherwise: a sampled allocation captures its stack first, then takes the mutex for a hash
//! lookup and a few additions. Estimates are fixed-point (1/65536 of an object), so a free
//! takes off exactly what its allocation added.
//!
//! Layer: `sampling`; calls `sampling::stack`, `sync::mutex` and the OS (`mmap`).

use super::stack::{MAX_FRAMES, Stack};
use crate::sync::mutex::Mutex;

/// Call stacks the table tells apart; samples from more go to bucket 0 (an empty stack).
const MAX_BUCKETS: usize = 1 << 14;
/// Hash slots for the buckets (a power of two, at least twice `MAX_BUCKETS`).
const SLOTS: usize = 1 << 15;
/// Sampled blocks live at once; beyond that, allocations are not sampled.
const MAX_RECORDS: usize = 1 << 20;
/// One object, in the fixed-point unit of the estimates.
pub(crate) const ONE: u64 = 1 << 16;

/// A call stack and what was sampled there.
#[derive(Clone, Copy)]
pub(crate) struct Bucket {
    hash: u64,
    pub(crate) depth: u32,
    pub(crate) frames: [usize; MAX_FRAMES],
    /// Estimated objects (in units of 1/`ONE`) and bytes: allocated in all, and still live.
    pub(crate) alloc_objects: u64,
    pub(crate) alloc_bytes: u64,
    pub(crate) inuse_objects: u64,
    pub(crate) inuse_bytes: u64,
}

/// A live sampled block: its bucket and the estimate it added there (or, on the free list
/// of unused records, the next one).
#[derive(Clone, Copy)]
struct Record {
    bucket: u32,
    next_free: u32,
    objects: u64,
    bytes: u64,
}

pub(crate) struct Table {
    /// Null until the first sample maps the arrays.
    buckets: *mut Bucket,
    len: usize,
    /// Bucket index + 1 per hash slot, 0 for none.
    slots: *mut u32,
    records: *mut Record,
    /// Records handed out so far (the rest of the array is untouched).
    records_used: usize,
    /// The first free record + 1, 0 for none.
    free_records: u32,
    /// Mapping the arrays failed.
    failed: bool,
}

// SAFETY: the pointers are to private mappings, used only under `TABLE`'s mutex.
unsafe impl Send for Table {}

pub(crate) static TABLE: Mutex<Table> = Mutex::new(Table::new());

/// `count` zeroed `T`s in a private anonymous mapping (committed as touched), or null.
fn map<T>(count: usize) -> *mut T {
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            count * core::mem::size_of::<T>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Unmaps what [`map`] gave for `count` `T`s (nothing if null).
fn unmap<T>(p: *mut T, count: usize) {
    if !p.is_null() {
        // SAFETY: a mapping of ours, of this size, not used.
        unsafe { libc::munmap(p.cast(), count * core::mem::size_of::<T>()) };
    }
}

fn hash(stack: &Stack) -> u64 {
    // FNV-1a over the frames.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &frame in &stack.frames[..stack.depth] {
        h = (h ^ frame as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1 // never 0, the empty bucket's
}

impl Table {
    /// An empty table; its arrays are mapped at the first sample.
    const fn new() -> Table {
        Table {
            buckets: core::ptr::null_mut(),
            len: 0,
            slots: core::ptr::null_mut(),
            records: core::ptr::null_mut(),
            records_used: 0,
            free_records: 0,
            failed: false,
        }
    }

    /// Maps the arrays on first use; false if that failed (then, or before: it is not tried
    /// again, and no sample is taken).
    fn ready(&mut self) -> bool {
        if self.failed {
            return false;
        }
        if self.buckets.is_null() {
            let buckets = map::<Bucket>(MAX_BUCKETS);
            let slots = map::<u32>(SLOTS);
            let records = map::<Record>(MAX_RECORDS);
            if buckets.is_null() || slots.is_null() || records.is_null() {
                unmap(buckets, MAX_BUCKETS);
                unmap(slots, SLOTS);
                unmap(records, MAX_RECORDS);
                self.failed = true;
                return false;
            }
            (self.buckets, self.slots, self.records) = (buckets, slots, records);
            self.len = 1; // bucket 0: the empty stack, for samples beyond MAX_BUCKETS
        }
        true
    }

    /// The bucket of `stack`, added if new.
    fn bucket_of(&mut self, stack: &Stack) -> u32 {
        let h = hash(stack);
        let mut slot = h as usize & (SLOTS - 1);
        loop {
            // SAFETY: `slot < SLOTS`, within the mapping.
            let entry = unsafe { &mut *self.slots.add(slot) };
            if *entry == 0 {
                if self.len == MAX_BUCKETS {
                    return 0;
                }
                let index = self.len;
                self.len += 1;
                // SAFETY: `index < MAX_BUCKETS`, within the mapping, and unused until now.
                let bucket = unsafe { &mut *self.buckets.add(index) };
                bucket.hash = h;
                bucket.depth = stack.depth as u32;
                bucket.frames = stack.frames;
                *entry = index as u32 + 1;
                return index as u32;
            }
            let index = *entry as usize - 1;
            // SAFETY: an index the table handed out.
            let bucket = unsafe { &*self.buckets.add(index) };
            if bucket.hash == h
                && bucket.frames[..bucket.depth as usize] == stack.frames[..stack.depth]
            {
                return index as u32;
            }
            slot = (slot + 1) & (SLOTS - 1);
        }
    }

    /// Adds a sample standing for `objects` (fixed point) and `bytes` at `stack`; returns its
    /// record (index + 1), or `None` if the table is full or could not be mapped.
    pub(crate) fn add(&mut self, stack: &Stack, objects: u64, bytes: u64) -> Option<u32> {
        if !self.ready() {
            return None;
        }
        let record = if self.free_records != 0 {
            let index = self.free_records - 1;
            // SAFETY: a record index the table handed out.
            self.free_records = unsafe { (*self.records.add(index as usize)).next_free };
            index
        } else if self.records_used < MAX_RECORDS {
            self.records_used += 1;
            self.records_used as u32 - 1
        } else {
            return None;
        };
        let bucket = self.bucket_of(stack);
        // SAFETY: indices the table handed out, within the mappings.
        unsafe {
            *self.records.add(record as usize) = Record {
                bucket,
                next_free: 0,
                objects,
                bytes,
            };
            // Saturating: a bucket that allocates past 2^64 (units of 1/65536 object) stays at
            // the top rather than wrapping to nonsense.
            let b = &mut *self.buckets.add(bucket as usize);
            b.alloc_objects = b.alloc_objects.saturating_add(objects);
            b.alloc_bytes = b.alloc_bytes.saturating_add(bytes);
            b.inuse_objects = b.inuse_objects.saturating_add(objects);
            b.inuse_bytes = b.inuse_bytes.saturating_add(bytes);
        }
        Some(record + 1)
    }

    /// Takes the sampled block of `record` (from [`Table::add`]) off its bucket's in-use
    /// figures.
    pub(crate) fn remove(&mut self, record: u32) {
        let index = (record as usize).wrapping_sub(1);
        if index >= self.records_used {
            // Never unwind here: the caller holds the table's lock.
            crate::abort::internal("a heap-profile sample record that was never handed out");
        }
        // SAFETY: a record the table handed out, within the mapping.
        unsafe {
            let r = *self.records.add(index);
            let b = &mut *self.buckets.add(r.bucket as usize);
            b.inuse_objects = b.inuse_objects.saturating_sub(r.objects);
            b.inuse_bytes = b.inuse_bytes.saturating_sub(r.bytes);
            (*self.records.add(index)).next_free = self.free_records;
        }
        self.free_records = record;
    }

    /// The buckets so far (the first is the empty stack's).
    pub(crate) fn buckets(&self) -> &[Bucket] {
        if self.buckets.is_null() {
            return &[];
        }
        // SAFETY: the first `len` buckets are set; the mapping lives as long as the process.
        unsafe { core::slice::from_raw_parts(self.buckets, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[usize]) -> Stack {
        let mut s = Stack {
            depth: frames.len(),
            frames: [0; MAX_FRAMES],
        };
        s.frames[..frames.len()].copy_from_slice(frames);
        s
    }

    #[test]
    fn frees_take_off_exactly_what_allocations_added() {
        let mut table = Table::new();
        let (a, b) = (stack(&[1, 2, 3]), stack(&[1, 2, 4]));
        let r1 = table.add(&a, 3 * ONE, 300).unwrap();
        let r2 = table.add(&a, ONE, 100).unwrap();
        let r3 = table.add(&b, ONE / 2, 7).unwrap();
        assert_eq!(
            table.buckets().len(),
            3,
            "the empty bucket and one per stack"
        );
        table.remove(r1);
        let r4 = table.add(&b, ONE, 10).unwrap();
        assert_eq!(r4, r1, "a freed record is reused");
        let find = |frames: &[usize]| {
            *table
                .buckets()
                .iter()
                .find(|x| &x.frames[..x.depth as usize] == frames)
                .unwrap()
        };
        let ba = find(&[1, 2, 3]);
        assert_eq!((ba.alloc_objects, ba.alloc_bytes), (4 * ONE, 400));
        assert_eq!((ba.inuse_objects, ba.inuse_bytes), (ONE, 100));
        let bb = find(&[1, 2, 4]);
        assert_eq!((bb.inuse_objects, bb.inuse_bytes), (ONE + ONE / 2, 17));
        table.remove(r2);
        table.remove(r3);
        table.remove(r4);
        assert!(
            table
                .buckets()
                .iter()
                .all(|x| x.inuse_bytes == 0 && x.inuse_objects == 0)
        );
    }
}
