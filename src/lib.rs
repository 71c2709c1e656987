//! # vmarena
//!
//! A concurrent memory allocator for Linux built on the kernel's per-VMA lock design. The
//! address space it manages (the arena) is split into regions, like a process's VMAs; each
//! region has its own lock, and the arena has a sequence count modelled on the kernel's
//! `mm_lock_seq`. Threads allocate small blocks from thread-local pages with no lock and no
//! atomic read-modify-write; they refill pages by taking a region in shared mode, so many
//! threads carve pages from one region at once; operations that reshape the address space
//! take the arena write lock and mark only the regions they touch, so threads working
//! elsewhere never wait for them.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: vmarena::VmArena = vmarena::VmArena;
//!
//! fn main() {
//!     let v: Vec<u64> = (0..1000).collect();
//!     assert_eq!(v.iter().sum::<u64>(), 499_500);
//!     println!("{}", vmarena::stats());
//! }
//! ```
//!
//! Statistics come from [`stats()`]; `VMARENA_SHOW_STATS=1` prints them on stderr at exit.
//! Every environment variable vmarena reads (the purge delay, the purger thread, counting of
//! requested bytes, the report at exit, verbose output, the checked mode) is in one table in
//! `README.md`; they are read once, before the first allocation, and invalid values or unknown
//! `VMARENA_*` names are reported on stderr and ignored.
//!
//! See `ARCHITECTURE.md` for how it works and why.
//!
//! # Platforms
//!
//! Linux on x86_64 and aarch64 (glibc), where it is built and tested. Linux on other
//! architectures compiles, untested, with the thread's heap reached through a `std`
//! `thread_local!` instead of the assembly slot (so no `no_std` C library there). Other
//! operating systems are refused at compile time: the arena is built on Linux system calls
//! (`mremap`, `MADV_DONTNEED`, `MAP_FIXED_NOREPLACE`, futexes).
//!
//! # Features
//!
//! * `override`: the program exports vmarena's C allocation functions (`malloc`, `free`,
//!   `calloc`, `realloc`, `posix_memalign`, ...: [`raw::exports`]), so C code linked into it and
//!   libc itself allocate from vmarena too:
//!
//!   ```toml
//!   [dependencies]
//!   vmarena = { version = "0.1", features = ["override"] }
//!   ```
//! * `allocator-api2` (on by default): [`Heap`] and [`VmArena`] implement the `Allocator`
//!   trait of the allocator-api2 crate, so its `Vec` and `Box`, and hashbrown's maps, can live
//!   in them.
//! * `nightly`: the same for `core::alloc::Allocator` (nightly Rust), for std's collections.
//! * `checked`: checked mode always on (see `VMARENA_CHECKED` in the README): every
//!   allocation validates the free-list link it pops, so a write into a freed block aborts
//!   with its address instead of crashing later. It costs the fast path (measured in
//!   `BENCHMARKS.md`); the default build pays nothing for its existence.
//! * `baselines`, `ablation`, `fuzzing`: for the benchmarks and fuzz targets only.
//!
//! # Heaps
//!
//! A [`Heap`] is an isolated heap: its blocks never share a page with another heap's, any
//! thread may use it, and dropping it gives all of its memory back at once (blocks still
//! allocated from it die with it, as with `mi_heap_destroy`):
//!
//! ```
//! let heap = vmarena::Heap::new();
//! let mut names = allocator_api2::vec::Vec::with_capacity_in(1, &heap);
//! names.push(42u64);
//! assert_eq!(heap.stats().bytes_in_use, 8);
//! drop(names);
//! drop(heap);
//! ```

#![cfg_attr(not(test), no_std)]
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "vmarena supports Linux only (x86_64 and aarch64): it is built on Linux system calls \
     (mremap, MADV_DONTNEED, MAP_FIXED_NOREPLACE, futexes). Use std::alloc::System elsewhere."
);

// Everything uses `core` and `libc`. `std` comes in only for tests, for the fuzzing entry
// points, and where the thread's heap slot is a `thread_local!` (Miri, and targets without the
// assembly slot of `heap/slot.rs`): a program on x86-64 or AArch64 Linux gets no `std` from
// vmarena, so the C library (`capi/`) is `no_std` and has no general-dynamic TLS at all.
#[cfg(any(
    test,
    miri,
    feature = "fuzzing",
    feature = "std",
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
))]
extern crate std;

// The crate's layers, bottom to top (each module's doc comment says its own place and what it
// calls; ARCHITECTURE.md, "Layers and modules"): `sync` → `os` → `arena` → `large`, `purger`
// → `heap` → `global`, `isolated`, `raw`, `allocator`, `fork` and this file, the public face;
// leaf services beside them: `config`, `stats`, `abort`, `stderr`, `options`, `list`, `ablation`.

// The loom build (`--cfg vmarena_loom`) is `sync` alone, used only by its models
// (`sync::loom_tests`, which exercise part of it): dead code there is expected.
#[cfg_attr(vmarena_loom, allow(dead_code, unused_imports))]
pub(crate) mod sync;

// Everything else is compiled only outside the loom build (`--cfg vmarena_loom`), which
// model-checks the lock protocol in `sync` and builds nothing else. Each item says so itself
// (no wrapping macro: rustfmt does not format modules declared inside a macro call).
#[cfg(not(vmarena_loom))]
pub mod raw;

#[cfg(all(not(vmarena_loom), feature = "ablation"))]
#[doc(hidden)]
pub mod ablation;
#[cfg(all(not(vmarena_loom), not(feature = "ablation")))]
mod ablation;
#[cfg(not(vmarena_loom))]
mod abort;
#[cfg(not(vmarena_loom))]
mod allocator;
#[cfg(not(vmarena_loom))]
pub(crate) mod arena;
#[cfg(not(vmarena_loom))]
pub(crate) mod config;
#[cfg(not(vmarena_loom))]
pub(crate) mod counter;
#[cfg(all(not(vmarena_loom), not(miri)))]
mod fork;
#[cfg(not(vmarena_loom))]
mod global;
#[cfg(not(vmarena_loom))]
pub(crate) mod heap;
#[cfg(not(vmarena_loom))]
mod isolated;
#[cfg(not(vmarena_loom))]
mod large;
#[cfg(not(vmarena_loom))]
pub(crate) mod list;
#[cfg(not(vmarena_loom))]
mod options;
#[cfg(not(vmarena_loom))]
pub(crate) mod os;
#[cfg(not(vmarena_loom))]
pub mod profile;
#[cfg(not(vmarena_loom))]
pub(crate) mod purger;
#[cfg(not(vmarena_loom))]
pub(crate) mod sampling;
#[cfg(not(vmarena_loom))]
mod stats;
#[cfg(not(vmarena_loom))]
mod stderr;

#[cfg(all(not(vmarena_loom), feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(not(vmarena_loom))]
pub use global::VmArena;
#[cfg(not(vmarena_loom))]
pub use isolated::{Heap, LocalHeap};
#[cfg(not(vmarena_loom))]
pub use stats::{Stats, ThreadStats};

/// A snapshot of the allocator's counters. Allocation-free, so it can be called from
/// anywhere, including while the program is low on memory. Not free: it walks every page
/// descriptor of every small-object region under the arena read lock (so it waits while a
/// write session runs; a few microseconds per GiB of small objects), and sums the heaps'
/// counters under the heap registry's mutex and the isolated heaps' registry's.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: vmarena::VmArena = vmarena::VmArena;
///
/// let big = vec![0u8; 1 << 20];
/// let stats = vmarena::stats();
/// assert!(stats.bytes_in_use >= big.len());
/// assert!(stats.bytes_reserved >= stats.bytes_in_use);
/// println!("{stats}"); // a report, one counter a line
/// ```
#[cfg(not(vmarena_loom))]
pub fn stats() -> Stats {
    let mut stats = Stats::default();
    arena::ARENA.fill_stats(&mut stats);
    heap::fill_stats(&mut stats);
    isolated::fill_stats(&mut stats);
    stats
}

/// The calling thread's allocated and freed bytes and blocks, read without a lock: cheap
/// enough to call around a piece of code to see what it allocated. Counted only while
/// requested bytes are tracked (see [`ThreadStats`]).
///
/// ```
/// #[global_allocator]
/// static GLOBAL: vmarena::VmArena = vmarena::VmArena;
///
/// vmarena::track_requested_bytes(true);
/// let before = vmarena::thread_stats();
/// let v = vec![0u8; 1000];
/// let after = vmarena::thread_stats();
/// assert!(after.bytes_allocated - before.bytes_allocated >= 1000);
/// drop(v);
/// ```
#[cfg(not(vmarena_loom))]
pub fn thread_stats() -> ThreadStats {
    heap::thread_stats()
}

/// Gives every free page and empty region back to the OS now, like `malloc_trim(0)` or
/// `mi_collect(true)`: the calling thread's empty pages and the freed large blocks it kept
/// for reuse (and the regions kept for heap-profile samples), the fallback heap's and exited threads' empty pages (and the pages of threads
/// that died without their exit hook) go back to their regions, then the free pages of every
/// small-object region and every dirty free range are purged (`MADV_DONTNEED`) and empty
/// regions removed.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: vmarena::VmArena = vmarena::VmArena;
///
/// let blocks: Vec<Box<[u8; 1000]>> = (0..10_000).map(|_| Box::new([1; 1000])).collect();
/// let before = vmarena::stats().bytes_purged;
/// drop(blocks);
/// vmarena::collect();
/// assert!(vmarena::stats().bytes_purged > before);
/// ```
#[cfg(not(vmarena_loom))]
pub fn collect() {
    heap::collect();
    arena::ARENA.collect();
}

/// Turns counting of requested bytes (`Stats::bytes_requested`) on or off. Off by default: it
/// costs every malloc and free a detour from its fast path (about 30 instructions a pair). The count is exact if it is on from the
/// start (`VMARENA_STATS=1`); turned on later, blocks allocated before and freed after make it
/// drift by their size. The calling thread's own heap counts from its next allocation; other
/// threads' heaps, isolated heaps and the fallback heap count their frees at once and their
/// allocations within 256 KiB allocated (each looks at the switch that often).
///
/// ```
/// #[global_allocator]
/// static GLOBAL: vmarena::VmArena = vmarena::VmArena;
///
/// vmarena::track_requested_bytes(true);
/// assert!(vmarena::stats().bytes_requested.is_some());
/// vmarena::track_requested_bytes(false);
/// assert_eq!(vmarena::stats().bytes_requested, None);
/// ```
#[cfg(not(vmarena_loom))]
pub fn track_requested_bytes(on: bool) {
    heap::set_tracking_requested(on);
    isolated::set_counting(on);
}

/// Sets how long freed memory stays mapped before it is purged (given back to the OS with
/// `MADV_DONTNEED`). The default is 1 s, or `VMARENA_PURGE_DELAY_MS` from the environment.
/// Zero purges at the next opportunity. Purging happens on the allocator's own slow paths
/// (pages going back to their regions, large frees); [`collect`] purges everything now.
///
/// ```
/// vmarena::set_purge_delay(std::time::Duration::from_millis(250));
/// assert_eq!(vmarena::stats().purge_delay_ms, 250);
/// ```
#[cfg(not(vmarena_loom))]
pub fn set_purge_delay(delay: core::time::Duration) {
    arena::ARENA.set_purge_delay(delay.as_nanos().min(u64::MAX as u128) as u64);
}

/// The number of bytes usable from `ptr` to the end of its block, where `ptr` is a block vmarena
/// returned (or, for blocks up to 64 KiB, points into one): `usable_size(p) >= layout.size()`
/// for the layout `p` was allocated with. Answered from a lock-free speculative lookup,
/// validated by the arena's sequence count (while write sessions keep it busy, under the arena
/// read lock instead). Returns `None` for pointers vmarena does not manage.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: vmarena::VmArena = vmarena::VmArena;
///
/// let v: Vec<u8> = Vec::with_capacity(100);
/// assert!(vmarena::usable_size(v.as_ptr()).unwrap() >= 100);
/// let on_stack = 0u8;
/// assert_eq!(vmarena::usable_size(&on_stack), None);
/// ```
#[cfg(not(vmarena_loom))]
pub fn usable_size(ptr: *const u8) -> Option<usize> {
    global::usable_size(ptr)
}
