//! Where free ranges come from: the free ranges of the existing reservations, or, when none
//! fits, a new reservation. The arena grows without bound while the OS gives address space;
//! page-map lookups cover every reservation because the map spans the whole address space.

use super::WriteSession;
use super::pagemap::LEAF_BYTES;
use super::ranges::Dirt;
use super::region::{Region, RegionKind};
use crate::config::{MAX_RESERVATIONS, RESERVATION_ALIGN, RESERVATION_SIZE, align_up};
use crate::os::Os;
use crate::stats::adjust;

impl<O: Os> WriteSession<'_, O> {
    /// Takes a free range starting at an address congruent to `phase` modulo `align`,
    /// reserving more address space if none fits.
    pub(super) fn take_range(
        &mut self,
        size: usize,
        align: usize,
        phase: usize,
    ) -> Option<&'static Region> {
        let os = &self.arena.os;
        let state = &mut *self.state;
        if let Some(r) = state
            .free
            .take(&mut state.descriptors, os, size, align, phase)
        {
            return Some(r);
        }
        self.add_reservation(size.checked_add(phase)?, align)?;
        let state = &mut *self.state;
        state
            .free
            .take(&mut state.descriptors, os, size, align, phase)
    }

    /// Adds a reservation with room for `size` bytes aligned to `align`.
    fn add_reservation(&mut self, size: usize, align: usize) -> Option<()> {
        let arena = self.arena;
        let state = &mut *self.state;
        if state.reservation_count == MAX_RESERVATIONS {
            return None;
        }
        let align = align.max(RESERVATION_ALIGN);
        let needed = align_up(size, RESERVATION_ALIGN);
        // Ask for a full reservation; if the OS refuses (address-space limits, strict
        // overcommit) settle for less, down to what this request needs.
        let mut len = needed.max(RESERVATION_SIZE);
        let base = loop {
            if let Some(base) = arena.os.reserve(len, align) {
                break base;
            }
            if len == needed {
                return None;
            }
            len = align_up(len / 2, RESERVATION_ALIGN).max(needed);
        };
        let Some(new_leaves) = arena
            .map
            .ensure_leaves(&arena.os, base.as_ptr() as usize, len)
        else {
            arena.os.release(base, len);
            return None;
        };
        state.leaf_bytes += new_leaves * LEAF_BYTES;
        let Some(region) = state.descriptors.take_region(&arena.os) else {
            arena.os.release(base, len);
            return None;
        };
        region.set_kind(RegionKind::Free);
        region.set_range(base.as_ptr(), len);
        Dirt::CLEAN.apply(region);
        state.free.add_reservation(region);
        state.reservation_count += 1;
        adjust(&arena.counters.reserved, len as isize);
        state.publish_metadata(&arena.counters);
        Some(())
    }
}
