//! Model checks of the lock protocol (run with `RUSTFLAGS="--cfg vmarena_loom"`, see
//! `.ci/run`). loom explores every interleaving (up to a preemption bound) under the C11 memory
//! model, and its `UnsafeCell` reports any access that is not ordered by happens-before, so
//! "reader and writer never overlap" is checked as "no data race on the region's contents".
//!
//! Layer: `sync`'s tests; drive `arena_lock` and `region_lock` under loom.

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::thread;

use super::arena_lock::ArenaLock;
use super::region_lock::{ReadFail, RegionLock};

/// A region: its lock and some contents a writer changes while the region is marked.
struct Region {
    lock: RegionLock,
    /// Non-atomic on purpose: loom flags any unsynchronised access.
    contents: UnsafeCell<(u64, u64)>,
}

impl Region {
    fn new() -> Region {
        Region {
            lock: RegionLock::new(),
            contents: UnsafeCell::new((0, 0)),
        }
    }
    fn read(&self) -> (u64, u64) {
        self.contents.with(|c| {
            // SAFETY: callers hold a region read reference or the arena read lock; loom checks
            // that this is ordered against every write.
            unsafe { *c }
        })
    }
    fn write(&self, v: u64) {
        self.contents.with_mut(|c| {
            // SAFETY: callers hold the arena write lock and have marked this region.
            unsafe { *c = (v, v) }
        })
    }
}

struct World {
    arena: ArenaLock,
    a: Region,
    b: Region,
}

fn world() -> Arc<World> {
    let w = Arc::new(World {
        arena: ArenaLock::new(),
        a: Region::new(),
        b: Region::new(),
    });
    {
        let guard = w.arena.write();
        w.a.lock.attach(&guard);
        w.b.lock.attach(&guard);
    }
    w
}

/// Reads region `r` the way the allocator's refill path does: the region read lock, or the
/// arena read lock if that fails. Returns what it read and whether the fast path was taken.
fn read_region(w: &World, r: &Region) -> ((u64, u64), bool) {
    match r.lock.start_read(&w.arena) {
        Ok(_guard) => (r.read(), true),
        Err(ReadFail::Locked) => {
            let _shared = w.arena.read();
            (r.read(), false)
        }
        Err(ReadFail::Detached) => unreachable!("regions stay attached in this model"),
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    // Blocked threads spin (yield) in the futex stand-in; give them room.
    builder.max_branches = 20_000;
    builder.check(f);
}

/// A reader and a writer on the same region never overlap, and a reader never sees a
/// half-written region.
#[test]
fn reader_and_writer_on_one_region_never_overlap() {
    model(|| {
        let w = world();
        let w2 = w.clone();
        let writer = thread::spawn(move || {
            let guard = w2.arena.write();
            w2.a.lock.start_write(&guard);
            w2.a.write(1);
        });
        let (seen, _) = read_region(&w, &w.a);
        assert!(seen == (0, 0) || seen == (1, 1), "torn read {seen:?}");
        writer.join().unwrap();
        // After the session, the reader sees the write whichever path it takes.
        assert_eq!(read_region(&w, &w.a).0, (1, 1));
    });
}

/// While a write session has region A marked, a reader of region B takes the fast path and
/// finishes before the session ends.
#[test]
fn reader_of_another_region_is_not_blocked() {
    model(|| {
        let w = world();
        let reader_done = Arc::new(AtomicBool::new(false));
        let marked = Arc::new(AtomicBool::new(false));
        let (w2, done2, marked2) = (w.clone(), reader_done.clone(), marked.clone());
        let writer = thread::spawn(move || {
            let guard = w2.arena.write();
            w2.a.lock.start_write(&guard);
            w2.a.write(1);
            marked2.store(true, Ordering::Release);
            // Hold the session until the reader of B has finished: if B's reader were blocked
            // by this session, loom would report the deadlock.
            while !done2.load(Ordering::Acquire) {
                thread::yield_now();
            }
            drop(guard);
        });
        while !marked.load(Ordering::Acquire) {
            thread::yield_now();
        }
        let guard =
            w.b.lock
                .start_read(&w.arena)
                .expect("B must be readable during A's session");
        assert_eq!(w.b.read(), (0, 0));
        drop(guard);
        reader_done.store(true, Ordering::Release);
        writer.join().unwrap();
    });
}

/// A speculative read that overlaps a write session is always rejected; an accepted one is
/// never torn.
#[test]
fn speculation_overlapping_a_write_is_rejected() {
    model(|| {
        let arena = Arc::new(ArenaLock::new());
        let fields = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let (arena2, fields2) = (arena.clone(), fields.clone());
        let writer = thread::spawn(move || {
            let _guard = arena2.write();
            // Fields read speculatively are atomics written Relaxed inside the session.
            fields2.0.store(1, Ordering::Relaxed);
            fields2.1.store(1, Ordering::Relaxed);
        });
        if let Some(seq) = arena.speculate_try_begin() {
            let x = fields.0.load(Ordering::Relaxed);
            let y = fields.1.load(Ordering::Relaxed);
            if !arena.speculate_retry(seq) {
                assert_eq!(x, y, "validated speculation saw a half-done write");
            } else {
                // Rejected: must only happen if a session started after `try_begin`.
                assert!(arena.seq_hint() > seq);
            }
        }
        writer.join().unwrap();
    });
}

/// One increment at the end of a session releases every region it marked, and the writer's
/// stores to each of them are visible to readers that take the fast path afterwards.
#[test]
fn ending_a_session_releases_every_marked_region() {
    model(|| {
        let w = world();
        let done = Arc::new(AtomicBool::new(false));
        let (w2, done2) = (w.clone(), done.clone());
        let writer = thread::spawn(move || {
            {
                let guard = w2.arena.write();
                w2.a.lock.start_write(&guard);
                w2.b.lock.start_write(&guard);
                w2.a.write(1);
                w2.b.write(2);
            }
            done2.store(true, Ordering::Release);
        });
        // Before the end: whatever path, never a torn or overlapping read.
        let (seen, _) = read_region(&w, &w.b);
        assert!(seen == (0, 0) || seen == (2, 2), "torn read {seen:?}");
        while !done.load(Ordering::Acquire) {
            thread::yield_now();
        }
        for (region, v) in [(&w.a, 1), (&w.b, 2)] {
            let guard = region
                .lock
                .start_read(&w.arena)
                .expect("released by the session end");
            assert_eq!(region.read(), (v, v));
            drop(guard);
        }
        writer.join().unwrap();
    });
}

/// A reader racing with the detach of its region either reads the region before the writer
/// changes it, or is told to fall back / look again; it never reads a region being torn down.
#[test]
fn detach_waits_for_readers_and_refuses_new_ones() {
    model(|| {
        let w = world();
        let w2 = w.clone();
        let writer = thread::spawn(move || {
            let guard = w2.arena.write();
            w2.a.lock.start_write(&guard);
            w2.a.lock.detach(&guard);
            // The descriptor is now free to be reused: rewrite its contents.
            w2.a.write(7);
        });
        match w.a.lock.start_read(&w.arena) {
            Ok(_guard) => assert_eq!(w.a.read(), (0, 0)),
            Err(ReadFail::Locked) | Err(ReadFail::Detached) => {}
        }
        writer.join().unwrap();
        assert_eq!(
            w.a.lock.start_read(&w.arena).err(),
            Some(ReadFail::Detached)
        );
    });
}

/// A reader that falls back to the arena read lock and a writer exclude each other: the reader
/// sees the region before or after the whole session, never during it.
#[test]
fn fallback_reader_and_writer_exclude_each_other() {
    model(|| {
        let w = world();
        let w2 = w.clone();
        let writer = thread::spawn(move || {
            let guard = w2.arena.write();
            w2.a.lock.start_write(&guard);
            w2.a.write(3);
        });
        {
            let _shared = w.arena.read();
            let v = w.a.read();
            assert!(v == (0, 0) || v == (3, 3));
        }
        writer.join().unwrap();
    });
}
