//! Free ranges of the reservations, and splitting and merging them.
//!
//! Every region of a reservation, used or free, is on an address-ordered list (`addr_prev`,
//! `addr_next`), so a region that is freed merges with free neighbours in O(1). Free ranges are
//! also kept in bins by size (`floor(log2(len / 64 KiB))`) for a good-fit search. All of this
//! is single-threaded code: it only runs under the arena write lock. Free ranges are not in
//! the page map, so lookups never find them; the one lock-free reader is the speculative
//! "can this large block grow in place?" check (`blocks.rs`), which follows a block's
//! `addr_next` to its neighbour: so address links are stored with Release.
//!
//! Layer: `arena`; calls `arena`'s own `region` and `meta`, and `os`, `config` and
//! `sync::atomic`.

use super::meta::Descriptors;
use super::region::{Region, RegionKind};
use crate::config::{SLICE_SHIFT, align_up};
use crate::os::Os;
use crate::sync::arena_lock::ArenaWriteGuard;
use crate::sync::atomic::{AtomicPtr, Ordering};

const BINS: usize = 48;

fn bin_of(len: usize) -> usize {
    ((len >> SLICE_SHIFT).max(1).ilog2() as usize).min(BINS - 1)
}

fn get(link: &AtomicPtr<Region>) -> Option<&'static Region> {
    // Relaxed: under the arena write lock. SAFETY: descriptors are never freed.
    unsafe { link.load(Ordering::Relaxed).as_ref() }
}

fn set(link: &AtomicPtr<Region>, to: Option<&Region>) {
    // Release: speculative readers follow address links without the lock (see `region_at`).
    // (Bin links, which only the lock's holder reads, need no more than Relaxed; one store for
    // both keeps the merge code simple, off every fast path.)
    link.store(
        to.map_or(core::ptr::null_mut(), |r| (r as *const Region).cast_mut()),
        Ordering::Release,
    );
}

pub(crate) struct FreeRanges {
    bins: [*mut Region; BINS],
    /// Free bytes in all bins (for statistics and tests).
    pub(crate) bytes: usize,
    /// Free bytes of the dirty ranges: freed and still resident, waiting for their purge.
    pub(crate) dirty_bytes: usize,
}

/// The first address at or after the start of `r` congruent to `phase` modulo `align` (where a
/// block placed in `r` would start), or `None` if there is none below the top of memory.
fn placed_in(r: &Region, align: usize, phase: usize) -> Option<usize> {
    align_up((r.start() as usize).saturating_sub(phase), align)?.checked_add(phase)
}

impl FreeRanges {
    pub(crate) const fn new() -> FreeRanges {
        FreeRanges {
            bins: [core::ptr::null_mut(); BINS],
            bytes: 0,
            dirty_bytes: 0,
        }
    }

    fn insert(&mut self, r: &'static Region) {
        debug_assert_eq!(r.kind(), RegionKind::Free);
        let bin = bin_of(r.len());
        // SAFETY: bins hold descriptors, which are never freed.
        let head = unsafe { self.bins[bin].as_ref() };
        set(&r.bin_prev, None);
        set(&r.bin_next, head);
        if let Some(head) = head {
            set(&head.bin_prev, Some(r));
        }
        self.bins[bin] = (r as *const Region).cast_mut();
        self.bytes += r.len();
        if r.is_dirty() {
            self.dirty_bytes += r.len();
        }
    }

    pub(super) fn remove(&mut self, r: &'static Region) {
        let (prev, next) = (get(&r.bin_prev), get(&r.bin_next));
        match prev {
            Some(prev) => set(&prev.bin_next, next),
            None => {
                self.bins[bin_of(r.len())] =
                    next.map_or(core::ptr::null_mut(), |n| (n as *const Region).cast_mut())
            }
        }
        if let Some(next) = next {
            set(&next.bin_prev, prev);
        }
        self.bytes -= r.len();
        if r.is_dirty() {
            self.dirty_bytes -= r.len();
        }
    }

    /// A free range with room for `size` bytes at an address `start` with
    /// `start % align == phase`, and that address.
    fn find(&self, size: usize, align: usize, phase: usize) -> Option<(&'static Region, usize)> {
        self.find_where(size, align, phase, |_| true)
    }

    fn find_where(
        &self,
        size: usize,
        align: usize,
        phase: usize,
        wanted: impl Fn(&Region) -> bool,
    ) -> Option<(&'static Region, usize)> {
        for bin in bin_of(size)..BINS {
            // SAFETY: bins hold descriptors, which are never freed.
            let mut cursor = unsafe { self.bins[bin].as_ref() };
            while let Some(r) = cursor {
                if let Some(start) = placed_in(r, align, phase) {
                    if wanted(r) && start.checked_add(size).is_some_and(|end| end <= r.end()) {
                        return Some((r, start));
                    }
                }
                cursor = get(&r.bin_next);
            }
        }
        None
    }

    /// Takes the first `len` bytes of free range `r` for a neighbouring region that grows into
    /// it. Returns whether those bytes may be dirty, or `None` if `r` is not a free range that
    /// long.
    pub(crate) fn take_front(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        r: &'static Region,
        len: usize,
    ) -> Option<bool> {
        if r.kind() != RegionKind::Free || r.len() < len {
            return None;
        }
        self.remove(r);
        let dirty = r.is_dirty();
        if r.len() == len {
            link(get(&r.addr_prev), get(&r.addr_next));
            descriptors.give_region(r);
        } else {
            r.set_range(guard, r.start().wrapping_add(len), r.len() - len);
            self.insert(r);
        }
        Some(dirty)
    }

    /// Splits `[start, start + len)` off the end of region `owner` as a free range in state
    /// `dirt` (the caller shrinks `owner`). Returns false if metadata ran out (nothing changed).
    pub(crate) fn split_tail(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        os: &impl Os,
        owner: &'static Region,
        (start, len): (*mut u8, usize),
        dirt: Dirt,
    ) -> bool {
        let Some(tail) = descriptors.take_region(os) else {
            return false;
        };
        tail.set_range(guard, start, len);
        link(Some(tail), get(&owner.addr_next));
        link(Some(owner), Some(tail));
        self.release(guard, descriptors, tail, dirt);
        true
    }

    /// Adds a whole new reservation as one free range.
    pub(crate) fn add_reservation(&mut self, guard: &ArenaWriteGuard<'_>, r: &'static Region) {
        set(&r.addr_prev, None);
        set(&r.addr_next, None);
        Dirt::CLEAN.apply(guard, r);
        self.insert(r);
    }

    /// A dirty free range followed at once by a clean one, across which `size` bytes fit at an
    /// address congruent to `phase` modulo `align` that starts in the dirty one (so the block
    /// reuses resident memory and faults in only the rest): the dirty range and that address.
    fn find_dirty_then_clean(
        &self,
        size: usize,
        align: usize,
        phase: usize,
    ) -> Option<(&'static Region, usize)> {
        let mut found = None;
        self.for_each(|d| {
            if found.is_some() || !d.is_dirty() {
                return;
            }
            let Some(c) = get(&d.addr_next) else { return };
            if c.kind() != RegionKind::Free || c.is_dirty() || c.start() as usize != d.end() {
                return;
            }
            let Some(start) = placed_in(d, align, phase) else {
                return;
            };
            if start < d.end() && start.checked_add(size).is_some_and(|end| end <= c.end()) {
                found = Some((d, start));
            }
        });
        found
    }

    /// Takes `size` bytes at an address congruent to `phase` modulo `align` out of the free
    /// ranges. Returns the descriptor for the taken range (kind `Taken`, not attached, not in
    /// any list, with the dirt of the range it came from; the caller sets it up or releases it)
    /// and how many of its bytes are clean (not resident: they fault in when touched), or
    /// `None` if no free range fits or metadata ran out (then nothing changed).
    ///
    /// With `reuse`, a range that no dirty range holds may start in a dirty range and run on
    /// into the clean one right after it (for a large block: its memory is then partly
    /// resident already, so a program that frees and allocates large blocks of varying sizes
    /// faults in only the difference, and does not keep the freed range resident beside the
    /// new one). Its dirt is then the dirty range's.
    pub(crate) fn take(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        os: &impl Os,
        (size, align, phase): (usize, usize, usize),
        reuse: bool,
    ) -> Option<(&'static Region, usize)> {
        let exact = if reuse && self.dirty_bytes >= size {
            self.find_where(size, align, phase, |r| r.is_dirty())
        } else {
            None
        };
        let spanned = match exact {
            Some(_) => None,
            None if reuse => self.find_dirty_then_clean(size, align, phase),
            None => None,
        };
        let (free, start) = match exact.or(spanned) {
            Some(found) => found,
            None => self.find(size, align, phase)?,
        };
        // A spanned clean neighbour ends where the taken range may end.
        let neighbour = spanned.and_then(|(d, _)| get(&d.addr_next));
        let dirty_end = free.end();
        let b = neighbour.map_or(free.end(), |c| c.end());
        let (a, end) = (free.start() as usize, start + size);
        // Take every descriptor we may need first, so failure changes nothing.
        let carved = descriptors.take_region(os)?;
        let tail = if end < b {
            match descriptors.take_region(os) {
                Some(t) => Some(t),
                None => {
                    descriptors.give_region(carved);
                    return None;
                }
            }
        } else {
            None
        };
        self.remove(free);
        if let Some(c) = neighbour {
            // One free range from here on: the dirty one, grown over its clean neighbour.
            self.remove(c);
            free.set_range(guard, free.start(), b - a);
            link(Some(free), get(&c.addr_next));
            descriptors.give_region(c);
        }
        let (before, after) = (get(&free.addr_prev), get(&free.addr_next));
        let base = free.start();
        let dirt = Dirt::of(free);
        carved.set_kind(guard, RegionKind::Taken);
        carved.set_range(guard, base.wrapping_add(start - a), size);
        dirt.apply(guard, carved);
        // The head [a, start) keeps `free`'s descriptor; if it is empty the descriptor goes
        // back to the pool.
        let head = if start > a {
            free.set_range(guard, base, start - a);
            Some(free)
        } else {
            descriptors.give_region(free);
            None
        };
        if let Some(t) = tail {
            t.set_kind(guard, RegionKind::Free);
            t.set_range(guard, base.wrapping_add(end - a), b - end);
            // Past the dirty range's end, the tail is the clean neighbour's.
            if end >= dirty_end && neighbour.is_some() {
                Dirt::CLEAN.apply(guard, t);
            } else {
                dirt.apply(guard, t);
            }
        }
        // Address order: before, [head], carved, [tail], after.
        link(head.or(before), Some(carved));
        link(Some(carved), tail.or(after));
        if tail.is_some() {
            link(tail, after);
        }
        if let Some(h) = head {
            self.insert(h);
        }
        if let Some(t) = tail {
            self.insert(t);
        }
        let clean = if !dirt.is_dirty() {
            size
        } else {
            end.saturating_sub(dirty_end.max(start))
        };
        Some((carved, clean))
    }

    /// Returns a detached region's range to the free ranges in state `dirt`, merging it with
    /// free neighbours in the same state (clean with clean, dirty with dirty: a purge then
    /// never has to touch clean memory, and the committed-bytes count stays exact).
    pub(crate) fn release(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        r: &'static Region,
        dirt: Dirt,
    ) {
        r.set_kind(guard, RegionKind::Free);
        dirt.apply(guard, r);
        self.merge_and_insert(guard, descriptors, r);
    }

    pub(super) fn merge_and_insert(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        r: &'static Region,
    ) {
        let dirt = Dirt::of(r);
        let mut merged = r;
        if let Some(prev) = get(&r.addr_prev)
            .filter(|p| p.kind() == RegionKind::Free && Dirt::of(p).mergeable(dirt))
        {
            self.remove(prev);
            prev.set_range(guard, prev.start(), prev.len() + r.len());
            Dirt::of(prev).merge(dirt).apply(guard, prev);
            link(Some(prev), get(&r.addr_next));
            descriptors.give_region(r);
            merged = prev;
        }
        let dirt = Dirt::of(merged);
        if let Some(next) = get(&merged.addr_next)
            .filter(|n| n.kind() == RegionKind::Free && Dirt::of(n).mergeable(dirt))
        {
            self.remove(next);
            merged.set_range(guard, merged.start(), merged.len() + next.len());
            dirt.merge(Dirt::of(next)).apply(guard, merged);
            link(Some(merged), get(&next.addr_next));
            descriptors.give_region(next);
        }
        self.insert(merged);
    }

    /// Checks every free range (see `Region::validate`): free, in the bin of its size.
    #[cfg_attr(not(debug_assertions), allow(dead_code))] // tests call it in any profile
    pub(crate) fn validate(&self, guard: &ArenaWriteGuard<'_>) {
        for (bin, head) in self.bins.iter().enumerate() {
            // SAFETY: bins hold descriptors, which are never freed.
            let mut cursor = unsafe { head.as_ref() };
            while let Some(r) = cursor {
                assert_eq!(
                    r.kind(),
                    RegionKind::Free,
                    "a free-range bin holds a {:?}",
                    r.kind()
                );
                assert_eq!(bin_of(r.len()), bin, "a free range in the wrong bin");
                r.validate(guard);
                cursor = get(&r.bin_next);
            }
        }
    }

    pub(super) fn for_each(&self, mut f: impl FnMut(&'static Region)) {
        for head in self.bins {
            // SAFETY: bins hold descriptors, which are never freed.
            let mut cursor = unsafe { head.as_ref() };
            while let Some(r) = cursor {
                f(r);
                cursor = get(&r.bin_next);
            }
        }
    }
}

/// The state of a range's memory: clean (reads as zero, not resident), or dirty since some
/// time and due for purging at `due`; `moved` if pages moved in by `mremap` may still form
/// kernel mappings of their own there (purge then resets the mapping).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Dirt {
    /// 0 when clean, else when the range should be purged.
    pub(crate) due: u64,
    pub(crate) moved: bool,
}

impl Dirt {
    pub(crate) const CLEAN: Dirt = Dirt {
        due: 0,
        moved: false,
    };

    pub(crate) fn dirty(due: u64, moved: bool) -> Dirt {
        Dirt {
            due: due.max(1),
            moved,
        }
    }

    pub(crate) fn of(r: &Region) -> Dirt {
        if r.is_dirty() {
            Dirt {
                due: r.purge_due().max(1),
                moved: r.is_moved(),
            }
        } else {
            Dirt {
                due: 0,
                moved: r.is_moved(),
            }
        }
    }

    pub(crate) fn is_dirty(self) -> bool {
        self.due != 0
    }

    fn mergeable(self, other: Dirt) -> bool {
        self.is_dirty() == other.is_dirty()
    }

    /// Two neighbours become one range: purge when the later of the two is due.
    fn merge(self, other: Dirt) -> Dirt {
        Dirt {
            due: self.due.max(other.due),
            moved: self.moved || other.moved,
        }
    }

    pub(crate) fn apply(self, guard: &ArenaWriteGuard<'_>, r: &Region) {
        r.set_dirty(guard, self.is_dirty());
        r.set_purge_due(guard, self.due);
        r.set_moved(guard, self.moved);
    }
}

/// Makes `a` and `b` address neighbours.
fn link(a: Option<&'static Region>, b: Option<&'static Region>) {
    if let Some(a) = a {
        set(&a.addr_next, b);
    }
    if let Some(b) = b {
        set(&b.addr_prev, a);
    }
}
