//! The lock protocol, modelled on Linux's per-VMA locks (`include/linux/mmap_lock.h`).
//!
//! * [`arena_lock`]: the arena lock and its 64-bit seqcount (`mmap_lock` + `mm_lock_seq`),
//!   write sessions, the shared fallback, and speculation (`try_begin` / `retry`).
//! * [`region_lock`]: the per-region reader reference and `lock_seq` (`vm_refcnt` +
//!   `vm_lock_seq`): `start_read`, `start_write`, attach and detach.
//! * [`rwlock`], [`mutex`], [`futex`]: the non-allocating blocking primitives underneath.
//! * [`atomic`]: the atomics in use (core's, or loom's when model checking).
//!
//! Layer: the bottom; every other module may call it.

pub(crate) mod arena_lock;
pub(crate) mod atomic;
pub(crate) mod futex;
pub(crate) mod mutex;
pub(crate) mod region_lock;
pub(crate) mod rwlock;

#[cfg(all(test, vmarena_loom))]
mod loom_tests;
