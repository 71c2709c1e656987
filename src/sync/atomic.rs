//! One place that decides which atomics the crate uses.
//!
//! Normal builds use `core::sync::atomic`. Under `--cfg vmarena_loom` the lock protocol is
//! model-checked, so the same names resolve to loom's instrumented types. Nothing else in the
//! crate names `core::sync::atomic` or `loom` directly.
//!
//! Layer: `sync`, the bottom; calls nothing in the crate.

#[cfg(not(vmarena_loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(vmarena_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// Tells the CPU (or loom's scheduler) that we are spinning on a value another thread will change.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(vmarena_loom)]
    loom::thread::yield_now();
    #[cfg(not(vmarena_loom))]
    core::hint::spin_loop();
}

/// Declares a constructor that is `const` in normal builds (so the allocator can live in a
/// `static`) and plain under loom, whose atomics cannot be built in a const context.
macro_rules! loom_const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        #[cfg(not(vmarena_loom))]
        $(#[$attr])* $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(vmarena_loom)]
        $(#[$attr])* $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use loom_const_fn;
