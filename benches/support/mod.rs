//! The allocators the benchmarks compare, each called directly through `GlobalAlloc`, so one
//! benchmark binary measures them side by side in the same run. mimalloc and jemalloc are
//! built from C, so they come only with `--features baselines`; without it the benchmarks
//! compare vmarena with glibc (`System`), which needs no C compiler.
#![allow(dead_code, unused_imports)]

#[cfg(feature = "baselines")]
use std::alloc::Layout;
use std::alloc::{GlobalAlloc, System};

/// mimalloc (v3) through its maintained bindings, `libmimalloc-sys`.
#[cfg(feature = "baselines")]
pub struct MiMalloc;

// SAFETY: mimalloc's aligned entry points return blocks honouring size and alignment, or null.
#[cfg(feature = "baselines")]
unsafe impl GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc accepts any size and power-of-two alignment.
        unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast() }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block mimalloc allocated.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a block mimalloc allocated with this alignment.
        unsafe { libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast() }
    }
}

pub static VMARENA: vmarena::VmArena = vmarena::VmArena;
#[cfg(feature = "baselines")]
pub static MIMALLOC: MiMalloc = MiMalloc;
#[cfg(feature = "baselines")]
pub static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
pub static GLIBC: System = System;

/// Every allocator under comparison, with the name used in reports (in this order: the
/// reports' tables and charts follow it).
pub fn all() -> Vec<(&'static str, &'static (dyn GlobalAlloc + Sync))> {
    vec![
        ("vmarena", &VMARENA),
        #[cfg(feature = "baselines")]
        ("mimalloc", &MIMALLOC),
        #[cfg(feature = "baselines")]
        ("jemalloc", &JEMALLOC),
        ("glibc", &GLIBC),
    ]
}

/// The criterion settings all allocator benchmarks share: short, because there are many of
/// them and the machine has two cores.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_millis(1500))
        .sample_size(30)
}

// The generator and the RSS figures come from the test kit the tests and fuzz targets share.
pub use vmarena_testkit::Xorshift64 as Rng;
pub use vmarena_testkit::proc::{anon_huge_kib, minor_faults, status_kib};

/// The most memory the kernel backed with huge pages (`AnonHugePages`, KiB) while a workload
/// ran: a thread samples it every 20 ms. (It allocates a little through the allocator under
/// test, as any monitoring thread would.)
pub struct HugeSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl HugeSampler {
    pub fn start() -> HugeSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut most = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(anon_huge_kib());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            most.max(anon_huge_kib())
        });
        HugeSampler { stop, thread }
    }

    /// Stops sampling; the most seen, in KiB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
