//! Where free ranges come from: the free ranges of the existing reservations, or, when none
//! fits, a new reservation. The arena grows without bound while the OS gives address space;
//! page-map lookups cover every reservation because the map spans the whole address space.
//!
//! Layer: `arena`; calls `arena`'s own `region`, `ranges` and `pagemap`, and `os`, `config` and
//! `stats`.

use super::WriteSession;
use super::pagemap::LEAF_BYTES;
use super::ranges::Dirt;
use super::region::{Region, RegionKind};
use crate::config::{
    MAX_RESERVATIONS, RESERVATION_ALIGN, RESERVATION_SIZE, STRICT_RESERVATION_SIZE, align_up,
};
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
        self.take_range_reusing(size, align, phase, false)
            .map(|(region, _)| region)
    }

    /// [`WriteSession::take_range`] for a large block: `reuse` as `FreeRanges::take` says.
    /// Returns the range and how many of its bytes are clean.
    pub(super) fn take_range_reusing(
        &mut self,
        size: usize,
        align: usize,
        phase: usize,
        reuse: bool,
    ) -> Option<(&'static Region, usize)> {
        let os = &self.arena.os;
        let state = &mut *self.state;
        let want = (size, align, phase);
        if let Some(taken) = state
            .free
            .take(&self.guard, &mut state.descriptors, os, want, reuse)
        {
            return Some(taken);
        }
        self.add_reservation(size.checked_add(phase)?, align)?;
        let state = &mut *self.state;
        state
            .free
            .take(&self.guard, &mut state.descriptors, os, want, reuse)
    }

    /// Adds a reservation with room for `size` bytes aligned to `align`.
    fn add_reservation(&mut self, size: usize, align: usize) -> Option<()> {
        let arena = self.arena;
        if self.state.reservation_count == MAX_RESERVATIONS {
            return None;
        }
        let align = align.max(RESERVATION_ALIGN);
        let needed = align_up(size, RESERVATION_ALIGN)?;
        // Ask for a full reservation; if anything fails (address-space limits, the commit
        // limit of strict overcommit, where the leaves and descriptors a reservation needs
        // are charged too) settle for less, down to what this request needs.
        let mut len = needed.max(self.reservation_size());
        loop {
            if self.try_reservation(len, align).is_some() {
                break;
            }
            if len == needed {
                return None;
            }
            len = align_up(len / 2, RESERVATION_ALIGN)?.max(needed);
        }
        let state = &mut *self.state;
        state.reservation_count += 1;
        adjust(&arena.counters.reserved, len as isize);
        state.publish_metadata(&arena.counters);
        Some(())
    }

    /// How much to reserve at a time: 4 GiB of address space costs nothing with overcommit.
    /// Under strict overcommit every reserved byte is charged against the machine's commit
    /// limit, so reservations start small and double as the arena grows.
    fn reservation_size(&self) -> usize {
        if self.arena.os.strict_overcommit() {
            let doublings = self.state.reservation_count.min(5) as u32;
            (STRICT_RESERVATION_SIZE << doublings).min(RESERVATION_SIZE)
        } else {
            RESERVATION_SIZE
        }
    }

    /// Reserves `len` bytes with the page-map leaves and the descriptor they need, and adds
    /// them as a free range; on any failure gives everything it took back.
    fn try_reservation(&mut self, len: usize, align: usize) -> Option<()> {
        let arena = self.arena;
        let state = &mut *self.state;
        let base = arena.os.reserve(len, align)?;
        let Some(new_leaves) = arena
            .map
            .ensure_leaves(&arena.os, base.as_ptr() as usize, len)
        else {
            arena.os.release(base, len);
            return None;
        };
        // Leaves are kept even if the rest fails: the map only ever grows.
        state.leaf_bytes += new_leaves * LEAF_BYTES;
        let Some(region) = state.descriptors.take_region(&arena.os) else {
            arena.os.release(base, len);
            return None;
        };
        region.set_kind(&self.guard, RegionKind::Free);
        region.set_range(&self.guard, base.as_ptr(), len);
        Dirt::CLEAN.apply(&self.guard, region);
        state.free.add_reservation(&self.guard, region);
        Some(())
    }
}
