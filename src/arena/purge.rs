//! Giving memory back to the OS, with a delay and without a background thread (the opt-in
//! purger thread, `crate::purger`, only calls [`Arena::maybe_purge`] when a purge is due).
//!
//! Freed memory is not purged at once: a program that frees and allocates again would pay
//! for `madvise` and for faulting the pages back in. Instead, a pages region whose first page
//! comes back, and a large block's range when it is freed, get a due time (now + the purge
//! delay), and the arena keeps the earliest one. The allocator's own slow paths (a page going
//! back to its region, a large free) check that time and run a purge session when it has
//! passed: so a program that stops allocating but keeps freeing still gives memory back, and
//! one that does nothing pays nothing. [`Arena::collect`] purges everything at once.
//!
//! ## Who runs a due purge
//!
//! A purge never waits for the lock (frees trigger it, and frees never wait). So a purge that
//! is due but finds the arena lock held, by a write session or by a reader such as `stats()`,
//! or finds another thread purging, is left to the one in the way: the lock's holders call
//! `maybe_purge` after letting go (every session's end, every read lock's release), and the
//! purging thread looks at the schedule again when it is done. Each hand-off is the
//! store-buffering pattern, with SeqCst on both sides: the one who gives up schedules the
//! purge, then looks at the lock (or the flag) again; the one in the way lets go, then reads
//! the schedule; at least one of them sees the other. So whatever the lock was doing, a due
//! purge runs once the last thing in its way has gone (memory freed with a purge delay of 0 is
//! given back at once, `tests/idle.rs`); the one exception is a thread that has run
//! `MAX_ROUNDS` purges back to back for others, which leaves the rest to the next slow path. A
//! purge due later runs at the first slow path after that time, or on the opt-in purger thread.
//!
//! A purge session is a write session that marks only the regions it purges: refills from
//! other regions go on. Empty pages regions are removed; dirty free ranges are purged and
//! merged with their clean neighbours.
//!
//! Layer: `arena`; calls `arena`'s own `region` and `ranges`, and `os`, `config`, `stats` and
//! `options` (the default delay).

use core::ptr::NonNull;

use super::huge::HugePurge;
use super::region::{Backing, Region};
use super::{Arena, WriteSession, as_ptr, region_at};
use crate::config::HUGE_PAGE_SIZE;
use crate::os::Os;
use crate::stats::{adjust, bump};
use crate::sync::atomic::{Ordering, fence};

/// Nothing scheduled.
const NEVER: u64 = u64::MAX;

/// The most purges one call of `maybe_purge` runs back to back.
const MAX_ROUNDS: usize = 16;

impl<O: Os> Arena<O> {
    /// The purge delay in nanoseconds: `VMARENA_PURGE_DELAY_MS` (default 1 s, see
    /// `crate::options`) until [`crate::set_purge_delay`] changes it.
    pub(crate) fn purge_delay(&self) -> u64 {
        // Relaxed: a configuration value; racing first readers compute the same thing.
        let delay = self.purge_delay.load(Ordering::Relaxed);
        if delay != u64::MAX {
            return delay;
        }
        let ms = crate::options::purge_delay_ms();
        let delay = ms.saturating_mul(1_000_000).min(u64::MAX - 1);
        self.purge_delay.store(delay, Ordering::Relaxed);
        delay
    }

    pub(crate) fn set_purge_delay(&self, ns: u64) {
        // Relaxed: a configuration value.
        self.purge_delay
            .store(ns.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// Notes that something is due for purging at `due`.
    pub(crate) fn schedule_purge(&self, due: u64) {
        // SeqCst: a purge that is due must not be left to no one. This store and the reads of
        // the flag and the lock that follow it (in `maybe_purge` and `purge_session`) pair
        // with the releases of the flag and the lock, each followed by a read of the schedule
        // (the store-buffering pattern; see "Who runs a due purge" above). The purge session
        // re-checks everything under the write lock.
        self.next_purge.fetch_min(due, Ordering::SeqCst);
    }

    /// Forgets the purge schedule, as a purge between its sessions leaves it (for tests of a
    /// child forked then, through `crate::fuzzing`).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn forget_purge_schedule(&self) {
        // Relaxed: see `schedule_purge`.
        self.next_purge.store(NEVER, Ordering::Relaxed);
    }

    /// When the next purge is due (a monotonic time in nanoseconds), if one is scheduled.
    pub(crate) fn next_purge_due(&self) -> Option<u64> {
        // Relaxed: see `schedule_purge`.
        let due = self.next_purge.load(Ordering::Relaxed);
        (due != NEVER).then_some(due)
    }

    /// Runs the purges that are due. Cheap when nothing is scheduled (one load), and one clock
    /// read otherwise. Every session's end and every read lock's release call it (after the
    /// unlock and a SeqCst fence): see "Who runs a due purge" above.
    #[inline]
    pub(crate) fn maybe_purge(&self) {
        // SeqCst (here and on `purging`): see `schedule_purge`.
        let due = self.next_purge.load(Ordering::SeqCst);
        if due != NEVER && self.os.coarse_now_ns() >= due {
            self.purge_due();
        }
    }

    #[inline(never)]
    fn purge_due(&self) {
        // A bound on the rounds, so a stream of frees that keeps making purges due faster than
        // one thread runs them cannot keep that thread here: what is left then waits for the
        // next slow path.
        for _ in 0..MAX_ROUNDS {
            let due = self.next_purge.load(Ordering::SeqCst);
            let now = self.os.coarse_now_ns();
            if due == NEVER || now < due || self.purging.swap(true, Ordering::SeqCst) {
                return; // nothing due yet, or the flag's holder looks again when done
            }
            let finished = self.purge(now, false, false);
            self.purging.store(false, Ordering::SeqCst);
            // While we held the flag, a lock holder that let go may have found the purge due
            // and left it to us. Look again, unless the lock is held now: its holder then
            // finds the flag clear when it lets go. (SeqCst fence: the store-buffering
            // pattern once more, our flag store and lock load against its unlock and swap.)
            fence(Ordering::SeqCst);
            if !finished && self.lock.is_held() {
                return;
            }
        }
    }

    /// Gives every free page, empty pages region and dirty free range back to the OS now.
    pub(crate) fn collect(&self) {
        // Holding the flag (if no one else does) keeps the sessions' ends from starting purges
        // of their own in the middle of this one; a holder that left one to us is answered by
        // the look after it.
        let ours = !self.purging.swap(true, Ordering::SeqCst);
        self.purge(self.os.coarse_now_ns(), true, true);
        if ours {
            self.purging.store(false, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            self.maybe_purge();
        }
    }

    /// A session for a purge: waiting for the lock if `wait` (an explicit collect), else only
    /// if the lock is free now (a purge that a free triggered: frees never wait). When it is
    /// not, the purge is left due at `due` to the lock's holder, who runs `maybe_purge` when
    /// it lets go: `None` then.
    fn purge_session(&self, wait: bool, due: u64) -> Option<WriteSession<'_, O>> {
        if wait {
            return Some(self.write());
        }
        if let Some(session) = self.try_write() {
            return Some(session);
        }
        self.schedule_purge(due);
        // SeqCst: either the holder, reading the schedule after its unlock, sees ours, or we
        // see its unlock here (see `schedule_purge`).
        fence(Ordering::SeqCst);
        self.try_write()
    }

    /// Purges everything due by `now`, or everything if `force`: each pages region in a write
    /// session of its own (so a refill waits only while its own region is purged, never for
    /// the whole sweep), then the dirty free ranges in one more (no refill reads those). If
    /// not `wait`ing and the lock is busy, it stops and leaves the rest due now to the lock's
    /// holder (see `purge_session`), and returns false.
    fn purge(&self, now: u64, force: bool, wait: bool) -> bool {
        // Reset first: anything scheduled while we work lowers it again, and we lower it to
        // what we leave behind at the end. A swap, not a store: reading the schedule it
        // replaces orders the region hint its scheduler set before it (Relaxed) before our
        // scan of the hints, so the scan cannot miss what the reset wipes. SeqCst: see
        // `schedule_purge`.
        self.next_purge.swap(NEVER, Ordering::SeqCst);
        if force {
            // Make every region due now; the loop below then takes them one at a time.
            let _session = self.write();
            for region in self.all_page_regions() {
                region.set_purge_hint(1);
            }
        }
        let next = loop {
            let Some(mut session) = self.purge_session(wait, now) else {
                return false;
            };
            let mut due_region = None;
            let mut next = NEVER;
            for region in self.all_page_regions() {
                match region.purge_hint() {
                    0 => {}
                    due if due <= now && due_region.is_none() => due_region = Some(region),
                    due => next = next.min(due),
                }
            }
            let Some(region) = due_region else { break next };
            // Clear the (racy) hint before looking at the pages: a page released from now on
            // schedules a new purge. (A release racing with this may find the old due time
            // and not reschedule, or schedule before we clear and free its page after we
            // looked; its page then waits for the region's next release or a collect.)
            region.set_purge_hint(0);
            region.lock.start_write(&session.guard);
            if region.all_pages_free() {
                session.remove_page_region(region);
            } else {
                // Huge pages kept partly free bring the region back when they are due.
                let again = session.purge_free_pages(region, now, force);
                if again != NEVER && region.schedule_purge(again) {
                    self.schedule_purge(again);
                }
            }
        };
        let Some(session) = self.purge_session(wait, now.min(next)) else {
            return false;
        };
        let state = &mut *session.state;
        let (purged, ranges_next) =
            state
                .free
                .purge(&session.guard, &mut state.descriptors, &self.os, now, force);
        adjust(&self.counters.committed, -(purged as isize));
        bump(&self.counters.purged_bytes, purged as u64);
        drop(session);
        self.schedule_purge(next.min(ranges_next));
        true
    }
}

impl<O: Os> WriteSession<'_, O> {
    /// Removes a marked small-object region whose pages are all free; its range becomes a
    /// clean free range.
    fn remove_page_region(&mut self, region: &'static Region) {
        let arena = self.arena;
        let kind = region.page_kind().expect("a pages region");
        debug_assert!(region.lock.is_write_locked(&self.guard) && region.all_pages_free());
        region.lock.detach(&self.guard);
        let (start, len) = (region.start(), region.len());
        arena.map.clear(start as usize, len);
        let dirty_bytes = region.dirty_page_count() * kind.page_size();
        let backed_huge = (0..region.huge_page_count())
            .filter(|&huge| region.backing(huge) == Backing::Huge)
            .count();
        adjust(&arena.counters.huge_backed, -(backed_huge as isize));
        // A fresh mapping also drops the huge-page advice the kernel keeps for the range (the
        // next user of the range, a large block say, must not inherit it).
        let purged = NonNull::new(start).is_some_and(|p| {
            if region.is_moved() || region.huge_advised() {
                arena.os.reset(p, len)
            } else {
                arena.os.purge(p, len)
            }
        });
        // Unlink from the kind's list.
        let state = &mut *self.state;
        let (prev, next) = (region_at(&region.kind_prev), region_at(&region.kind_next));
        let next_ptr = next.map_or(core::ptr::null_mut(), as_ptr);
        match prev {
            Some(prev) => prev.kind_next.store(next_ptr, Ordering::Release),
            // Release: lock-free walkers that follow the new link see what it points to.
            None => arena.page_lists[kind.index()].store(next_ptr, Ordering::Release),
        }
        if let Some(next) = next {
            next.kind_prev.store(
                prev.map_or(core::ptr::null_mut(), as_ptr),
                Ordering::Relaxed,
            );
        }
        // Relaxed: a hint; stale hints are harmless (identity is checked after locking).
        let _ = arena.hints[kind.index()].compare_exchange(
            as_ptr(region),
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        // SAFETY: page tables are never freed; the region is detached, so no one claims from it.
        state.descriptors.give_table(unsafe { &*region.table() });
        region.set_table(&self.guard, core::ptr::null_mut());
        let dirt = if purged {
            adjust(&arena.counters.committed, -(dirty_bytes as isize));
            bump(&arena.counters.purged_bytes, dirty_bytes as u64);
            super::ranges::Dirt::CLEAN
        } else {
            super::ranges::Dirt::dirty(arena.os.coarse_now_ns(), region.is_moved())
        };
        state
            .free
            .release(&self.guard, &mut state.descriptors, region, dirt);
        adjust(&arena.counters.page_regions[kind.index()], -1);
    }

    /// Gives the free, touched pages of a marked region back to the OS, huge page by huge
    /// page (see `huge`): a huge page asked for is given back whole once entirely free, and
    /// broken up only once it has stayed partly free for the longer delay (or now, if
    /// `force`). Returns when to look again for a huge page kept partly free (`NEVER` if none
    /// is).
    fn purge_free_pages(&mut self, region: &'static Region, now: u64, force: bool) -> u64 {
        let arena = self.arena;
        let Some(kind) = region.page_kind() else {
            return NEVER;
        };
        debug_assert!(region.lock.is_write_locked(&self.guard));
        let mut next = NEVER;
        for huge in 0..region.huge_page_count() {
            let (word, mask) = region.huge_page_bits(huge);
            let bits = match arena.plan_huge_purge(region, huge, now, force) {
                HugePurge::Nothing => continue,
                HugePurge::KeepUntil(due) => {
                    next = next.min(due);
                    continue;
                }
                HugePurge::Whole => {
                    let dirty = region.purgeable_pages(word) & mask;
                    let start = region.huge_page_start(huge);
                    if NonNull::new(start).is_some_and(|p| arena.os.purge(p, HUGE_PAGE_SIZE)) {
                        let bytes = dirty.count_ones() as usize * kind.page_size();
                        region.clear_dirty(word, dirty);
                        adjust(&arena.counters.committed, -(bytes as isize));
                        bump(&arena.counters.purged_bytes, bytes as u64);
                    }
                    continue;
                }
                HugePurge::Pages(bits) => bits << mask.trailing_zeros(),
            };
            self.purge_page_runs(region, word, bits);
        }
        next
    }

    /// Purges the pages `bits` of bitmap word `word`, each run of adjacent pages with one call.
    fn purge_page_runs(&mut self, region: &'static Region, word: usize, mut bits: u64) {
        let arena = self.arena;
        let Some(kind) = region.page_kind() else {
            return;
        };
        while bits != 0 {
            let first = bits.trailing_zeros() as usize;
            let run = (bits >> first).trailing_ones() as usize;
            let run_bits = if run == 64 {
                u64::MAX
            } else {
                ((1u64 << run) - 1) << first
            };
            bits &= !run_bits;
            let page = region.page(word * 64 + first);
            // Relaxed: fixed while the region is attached.
            let start = page.start.load(Ordering::Relaxed);
            let bytes = run * kind.page_size();
            if NonNull::new(start).is_some_and(|p| arena.os.purge(p, bytes)) {
                region.clear_dirty(word, run_bits);
                adjust(&arena.counters.committed, -(bytes as isize));
                bump(&arena.counters.purged_bytes, bytes as u64);
            }
        }
    }
}
