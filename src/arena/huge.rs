//! Huge pages: which 2 MiB ranges of the pages regions the kernel is asked to back with one
//! transparent huge page, and when (the policy `VMARENA_THP=1`, the default).
//!
//! A huge page costs RSS where it is sparse (the kernel backs all 2 MiB at the first touch)
//! and saves TLB misses and page faults where it is dense. So the arena decides huge page by
//! huge page, as tcmalloc's Temeraire does, where mimalloc v3 advises every arena huge:
//!
//! * **Pack.** A region hands out the pages of its fullest huge page first
//!   (`Region::claim_page`), so a program's pages fill huge pages one after the other, and
//!   pages freed here and there are refilled before an empty huge page is opened.
//! * **Ask when it will be dense.** Once a region has had [`HUGE_MIN_TOUCHED`] touched (any
//!   region: from then on the arena counts the heap as big), the first
//!   claim of a page in a huge page no page of which was touched since its last purge asks for
//!   a huge page there (`MADV_HUGEPAGE`) before the page is touched: packing fills it before
//!   the next one opens, and its first fault brings all 2 MiB in one fault. A huge page that
//!   was touched in small pages (before the region reached the threshold, or after it was
//!   broken up) and fills up is collapsed into a huge page (`MADV_COLLAPSE`, Linux 6.1; else
//!   the advice, and the kernel's khugepaged collapses it in its own time).
//! * **Give back whole.** A purge gives a huge page that is entirely free back with one
//!   `MADV_DONTNEED` over its 2 MiB. One that is only partly free keeps its free pages (a
//!   64 KiB purge would split it) for [`HUGE_BREAK_DELAYS`] purge delays; still partly free
//!   then, it is *broken up*: its free pages are purged like small pages, and the kernel is
//!   told not to collapse it again (`MADV_NOHUGEPAGE`, or khugepaged would fill the holes).
//! * **Small programs pay nothing**: below the threshold no huge page is asked for, so a
//!   program whose small objects fit in 16 MiB keeps small pages, its RSS and start-up.
//!
//! The system decides first: THP `never`, or `prctl(PR_SET_THP_DISABLE)`, means no advice at
//! all. `VMARENA_THP=0` turns the policy off; `2` asks for huge pages for every pages region
//! and every large block of 2 MiB or more, from the start (mimalloc's choice). Large blocks
//! are otherwise left to the system's setting: a block is one region of its own, often written
//! once and freed soon (an I/O buffer), and zeroing a 2 MiB page for a block touched in part
//! costs more than it saves (measured: `BENCHMARKS.md`, "Huge pages").
//!
//! Layer: `arena`; calls `arena`'s own `region`, and `os`, `config`, `options` and `stats`.

use core::ptr::NonNull;

use super::Arena;
use super::region::{Backing, Region};
use crate::config::{HUGE_BREAK_DELAYS, HUGE_MIN_TOUCHED, HUGE_PAGE_SIZE, align_up};
use crate::os::{Os, ThpSystem};
use crate::stats::{adjust, bump};
use crate::sync::atomic::Ordering;

/// What the arena does about huge pages (the option, as the system allows it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Policy {
    /// Never asks (`VMARENA_THP=0`, or the system has none).
    Off,
    /// Asks where pages fill huge pages densely (the default).
    Dense,
    /// Asks for every pages region and large block of 2 MiB or more (`VMARENA_THP=2`).
    Always,
}

const UNKNOWN: u8 = 0;

impl Policy {
    const fn encode(self) -> u8 {
        match self {
            Policy::Off => 1,
            Policy::Dense => 2,
            Policy::Always => 3,
        }
    }
}

impl<O: Os> Arena<O> {
    /// The huge-page policy, worked out at its first use from `VMARENA_THP` and the system's
    /// setting.
    pub(crate) fn huge_policy(&self) -> Policy {
        // Relaxed: a cache of a value every thread works out the same.
        match self.huge_policy.load(Ordering::Relaxed) {
            UNKNOWN => self.resolve_huge_policy(),
            1 => Policy::Off,
            2 => Policy::Dense,
            _ => Policy::Always,
        }
    }

    #[cold]
    fn resolve_huge_policy(&self) -> Policy {
        let policy = match (crate::options::thp(), self.os.thp_system()) {
            (0, _) | (_, ThpSystem::Never) => Policy::Off,
            (2, _) => Policy::Always,
            _ => Policy::Dense,
        };
        // Relaxed: see `huge_policy`.
        self.huge_policy.store(policy.encode(), Ordering::Relaxed);
        policy
    }

    /// Forgets the policy, so that the next use works it out again (tests that change the
    /// fake back end's system setting).
    #[cfg(test)]
    pub(crate) fn reset_huge_policy(&self) {
        // Relaxed: see `huge_policy`.
        self.huge_policy.store(UNKNOWN, Ordering::Relaxed);
    }

    /// After a claim of page `index` of `region`: asks for a huge page where the claim opens
    /// a huge page that will be dense, or fills one that was touched in small pages (see the
    /// module docs). The caller owns the page, so the region stays attached.
    pub(crate) fn back_huge_after_claim(&self, region: &Region, index: usize) {
        if self.huge_policy() != Policy::Dense {
            return;
        }
        let huge = region.huge_page_of(index);
        if region.backing(huge) == Backing::Huge || !self.heap_is_big(region) {
            return;
        }
        let (free, dirty) = region.huge_page_free_and_dirty(huge);
        let claimed = 1u64 << (index - huge * region.pages_per_huge_page());
        let Some(start) = NonNull::new(region.huge_page_start(huge)) else {
            return;
        };
        if dirty == claimed {
            // The first page touched in this huge page: ask before it is touched.
            if region.set_backing(huge, Backing::Small, Backing::Huge) {
                // Counted with the swap, so that a purge that undoes it meanwhile uncounts
                // what was counted.
                adjust(&self.counters.huge_backed, 1);
                if self.os.advise_huge(start, HUGE_PAGE_SIZE) {
                    bump(&self.counters.huge_advised, 1);
                } else if region.set_backing(huge, Backing::Huge, Backing::Small) {
                    // Not asked after all: a later claim may try again.
                    adjust(&self.counters.huge_backed, -1);
                }
            }
        } else if free == 0 && region.set_backing(huge, Backing::Small, Backing::Huge) {
            // Full, and touched in small pages: one huge page now, if the kernel can.
            let collapsed = self.os.advise_huge(start, HUGE_PAGE_SIZE)
                && self.os.collapse_huge(start, HUGE_PAGE_SIZE);
            bump(
                if collapsed {
                    &self.counters.huge_collapsed
                } else {
                    &self.counters.huge_advised
                },
                1,
            );
            adjust(&self.counters.huge_backed, 1);
        }
    }

    /// True once the heap is big enough for huge pages: some region has had
    /// [`HUGE_MIN_TOUCHED`] touched (`region` now, or one before it; the arena remembers).
    fn heap_is_big(&self, region: &Region) -> bool {
        // Relaxed: a hint that only ever goes from false to true.
        if self.heap_is_big.load(Ordering::Relaxed) {
            return true;
        }
        let big = region.touched_bytes() >= HUGE_MIN_TOUCHED;
        if big {
            self.heap_is_big.store(true, Ordering::Relaxed);
        }
        big
    }

    /// Asks for huge pages for a whole new pages region (`VMARENA_THP=2`).
    pub(crate) fn back_region_huge(&self, region: &Region) {
        if self.huge_policy() != Policy::Always {
            return;
        }
        let Some(start) = NonNull::new(region.start()) else {
            return;
        };
        if self.os.advise_huge(start, region.len()) {
            for huge in 0..region.huge_page_count() {
                if region.set_backing(huge, Backing::Small, Backing::Huge) {
                    adjust(&self.counters.huge_backed, 1);
                }
            }
            bump(&self.counters.huge_advised, region.huge_page_count() as u64);
        }
    }

    /// Asks for huge pages for a new large block's whole huge pages (`VMARENA_THP=2`).
    pub(crate) fn back_large_huge(&self, start: *mut u8, len: usize) {
        if self.huge_policy() != Policy::Always || len < HUGE_PAGE_SIZE {
            return;
        }
        let Some(first) = align_up(start as usize, HUGE_PAGE_SIZE) else {
            return;
        };
        let end = (start as usize + len) & !(HUGE_PAGE_SIZE - 1);
        if let Some(at) = NonNull::new(first as *mut u8).filter(|_| end > first) {
            if self.os.advise_huge(at, end - first) {
                bump(
                    &self.counters.huge_advised,
                    ((end - first) / HUGE_PAGE_SIZE) as u64,
                );
            }
        }
    }
}

/// What a purge session does with the free pages of one huge page of a marked region.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HugePurge {
    /// Purge these pages (bits of the huge page's pages), each run with one call, as small
    /// pages.
    Pages(u64),
    /// Purge the whole huge page with one call (every page free).
    Whole,
    /// Keep its free pages for now; look again at this time (a partly free huge page not yet
    /// due to be broken up).
    KeepUntil(u64),
    /// Nothing to purge.
    Nothing,
}

impl<O: Os> Arena<O> {
    /// Decides what a purge at `now` does with huge page `huge` of `region` (marked by the
    /// caller's session), and breaks it up if it is due, or at once if `force` (`collect()`):
    /// see the module docs.
    pub(crate) fn plan_huge_purge(
        &self,
        region: &Region,
        huge: usize,
        now: u64,
        force: bool,
    ) -> HugePurge {
        let (free, dirty) = region.huge_page_free_and_dirty(huge);
        let purgeable = free & dirty;
        if region.backing(huge) == Backing::Small {
            return if purgeable == 0 {
                HugePurge::Nothing
            } else {
                HugePurge::Pages(purgeable)
            };
        }
        let all_free = free.count_ones() as usize == region.pages_per_huge_page();
        if purgeable == 0 || all_free {
            region.set_sparse_since(huge, 0);
            return if purgeable == 0 {
                HugePurge::Nothing
            } else {
                bump(&self.counters.huge_given_back, 1);
                HugePurge::Whole
            };
        }
        // Partly free: broken up only once it has stayed so for the longer delay.
        let since = match region.sparse_since(huge) {
            0 => {
                region.set_sparse_since(huge, now);
                now
            }
            since => since,
        };
        let due = since.saturating_add(self.break_delay());
        if now < due && !force {
            return HugePurge::KeepUntil(due);
        }
        region.set_sparse_since(huge, 0);
        if region.set_backing(huge, Backing::Huge, Backing::Small) {
            if let Some(start) = NonNull::new(region.huge_page_start(huge)) {
                self.os.forbid_huge(start, HUGE_PAGE_SIZE);
            }
            bump(&self.counters.huge_broken, 1);
            adjust(&self.counters.huge_backed, -1);
        }
        HugePurge::Pages(purgeable)
    }

    /// How long a huge page stays partly free before it is broken up.
    fn break_delay(&self) -> u64 {
        self.purge_delay().saturating_mul(HUGE_BREAK_DELAYS)
    }
}
