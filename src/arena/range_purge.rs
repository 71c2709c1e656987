//! Purging free ranges: freed memory that is still resident (dirty) goes back to the OS when
//! its delay has passed, or, when the arena needs fresh memory, beyond a bound (those due
//! first). A purged range merges with its clean neighbours.
//!
//! Layer: `arena`; an `impl` block of `arena::ranges`'s `FreeRanges`; calls `arena::region`,
//! `arena::meta` (descriptors for merging) and `os`.

use super::meta::Descriptors;
use super::ranges::{Dirt, FreeRanges};
use super::region::Region;
use crate::os::Os;
use crate::sync::arena_lock::ArenaWriteGuard;

/// Dirty free ranges purged by one purge session at most (the rest wait for the next).
const MAX_PURGES_PER_SESSION: usize = 256;

impl FreeRanges {
    /// Purges dirty free ranges whose delay has passed (all of them if `force`), then merges
    /// them with clean neighbours. Returns the bytes purged and the earliest due time left.
    pub(crate) fn purge(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        os: &impl Os,
        now: u64,
        force: bool,
    ) -> (usize, u64) {
        let mut purged = 0;
        // Each round purges one range and restarts, because merging changes the bins under
        // the cursor. Free ranges are few; the bound keeps one session short regardless.
        for _ in 0..MAX_PURGES_PER_SESSION {
            let Some(r) = self.find_dirty(|due| force || due <= now) else {
                break;
            };
            let Some(len) = self.purge_range(guard, descriptors, os, r) else {
                break;
            };
            purged += len;
        }
        let mut next = u64::MAX;
        self.for_each(|r| {
            if r.is_dirty() {
                next = next.min(r.purge_due());
            }
        });
        (purged, next)
    }

    /// Purges dirty free ranges, those due first, until at most `budget` bytes of them are
    /// left (see `Arena::freed_resident_budget`). Returns the bytes purged.
    pub(crate) fn purge_over(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        os: &impl Os,
        budget: usize,
    ) -> usize {
        let mut purged = 0;
        for _ in 0..MAX_PURGES_PER_SESSION {
            if self.dirty_bytes <= budget {
                break;
            }
            let mut first: Option<&'static Region> = None;
            self.for_each(|r| {
                if r.is_dirty() && first.is_none_or(|f| r.purge_due() < f.purge_due()) {
                    first = Some(r);
                }
            });
            let Some(r) = first else { break };
            let Some(len) = self.purge_range(guard, descriptors, os, r) else {
                break;
            };
            purged += len;
        }
        purged
    }

    fn find_dirty(&self, due: impl Fn(u64) -> bool) -> Option<&'static Region> {
        let mut found = None;
        self.for_each(|r| {
            if found.is_none() && r.is_dirty() && due(r.purge_due()) {
                found = Some(r);
            }
        });
        found
    }

    /// Purges the dirty free range `r` (resets it if pages were moved into it), then merges it
    /// with its clean neighbours (so `r` may describe another range afterwards). Returns the
    /// bytes purged, or `None` if the system refused, leaving `r` as it was.
    fn purge_range(
        &mut self,
        guard: &ArenaWriteGuard<'_>,
        descriptors: &mut Descriptors,
        os: &impl Os,
        r: &'static Region,
    ) -> Option<usize> {
        let addr = core::ptr::NonNull::new(r.start())?;
        let len = r.len();
        let ok = if r.is_moved() {
            os.reset(addr, len)
        } else {
            os.purge(addr, len)
        };
        if !ok {
            return None;
        }
        self.remove(r);
        Dirt::CLEAN.apply(guard, r);
        self.merge_and_insert(guard, descriptors, r);
        Some(len)
    }
}
