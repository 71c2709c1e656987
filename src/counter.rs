//! The one counter idiom of the crate: a number that one thread at a time (its owner) changes
//! and any thread may read, kept in an atomic so that reading it from elsewhere is no data
//! race, and changed by the owner with a Relaxed load and store, never a read-modify-write,
//! so that counting costs the owner what a plain field would. Statistics and the page's
//! `used` count are built on it; nothing synchronises through it.
//!
//! Where several threads write one counter (the shared tallies of threads without a heap),
//! they use [`add_shared`](OwnerCount::add_shared) instead, a Relaxed read-modify-write.
//!
//! Layer: a leaf service any layer may call; calls only `sync::atomic`.

use crate::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

macro_rules! owner_count {
    ($(#[$doc:meta])* $name:ident, $atomic:ty, $int:ty) => {
        $(#[$doc])*
        pub(crate) struct $name($atomic);

        #[allow(dead_code)] // each width uses what it needs
        impl $name {
            pub(crate) const fn new(value: $int) -> $name {
                $name(<$atomic>::new(value))
            }

            /// The value (any thread). Relaxed: a recent value is all a reader wants.
            #[inline(always)]
            pub(crate) fn get(&self) -> $int {
                self.0.load(Ordering::Relaxed)
            }

            /// Sets the value (the owner only). Relaxed: as for `get`.
            #[inline(always)]
            pub(crate) fn set(&self, value: $int) {
                self.0.store(value, Ordering::Relaxed);
            }

            /// Adds `n`, wrapping (the owner only: a load and a store, which another writer
            /// could interleave with and lose).
            #[inline(always)]
            pub(crate) fn add(&self, n: $int) {
                self.set(self.get().wrapping_add(n));
            }

            /// Adds `n`, wrapping, from any thread. Relaxed: statistics.
            #[inline]
            pub(crate) fn add_shared(&self, n: $int) {
                self.0.fetch_add(n, Ordering::Relaxed);
            }

            /// Takes the value, leaving zero (to fold the counts of an owner that is gone into
            /// shared ones). Relaxed: statistics.
            pub(crate) fn take(&self) -> $int {
                self.0.swap(0, Ordering::Relaxed)
            }
        }
    };
}

owner_count!(
    /// A `usize` count (bytes, blocks, pages).
    OwnerCount,
    AtomicUsize,
    usize
);
owner_count!(
    /// A `u32` count, where space is short (a page descriptor's `used`).
    OwnerCount32,
    AtomicU32,
    u32
);
owner_count!(
    /// A `u64` count of events, which may pass 2^32 on 32-bit targets.
    OwnerCount64,
    AtomicU64,
    u64
);
