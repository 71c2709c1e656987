//! The thread's heap slot: one pointer in thread-local storage, to the thread's heap, or to one
//! of the shared sentinel heaps while it has none (see `lifecycle`).
//!
//! The slot is *initial-exec* TLS, defined and accessed in assembly: a thread reaches it with
//! a load relative to the thread pointer, in every kind of binary. Rust's own `thread_local!`
//! compiles to general-dynamic TLS in a shared library, which reaches the slot through a call
//! to `__tls_get_addr` on every malloc and free; glibc 2.39 and later may call `malloc` from
//! inside that function (after a library with TLS is unloaded), which recurses into us. glibc's
//! advice for malloc replacements is initial-exec TLS. In an executable the linker relaxes the
//! access to a constant offset (local-exec). It is 8 bytes, so even a `dlopen` of a library
//! built on vmarena finds room for it in glibc's surplus of static TLS.
//!
//! The slot's initial value (in `.tdata`, so every new thread starts with it) points at the
//! `UNINIT` sentinel: the fast paths never test for null.
//!
//! Elsewhere (other architectures, Miri) the slot is a `thread_local!` `Cell`.
//!
//! The three sentinel heaps live here too: the slot's values while the thread has no heap
//! (`lifecycle` says when each is used).
//!
//! Layer: `heap`; names `heap_core::HeapCore`, nothing else.

use super::heap_core::{HeapCore, HeapState};

/// A slot value: a pointer to a heap that outlives the thread's use of it.
pub(crate) type HeapPtr = *const HeapCore;

/// A heap that no thread owns and no one writes: see `lifecycle`.
#[repr(transparent)]
pub(crate) struct Sentinel(pub(crate) HeapCore);

// SAFETY: a sentinel is never written. Its free lists are empty pages (`EMPTY_PAGE`), so the
// allocation fast path never pops from it; its id is `NO_HEAP`, which no page's owner equals,
// so no free treats one of its pages as local; every other path checks its state first.
unsafe impl Sync for Sentinel {}

pub(crate) static UNINIT: Sentinel = Sentinel(HeapCore::sentinel(HeapState::Uninit));
pub(crate) static INITIALISING: Sentinel = Sentinel(HeapCore::sentinel(HeapState::Initialising));
pub(crate) static DESTROYED: Sentinel = Sentinel(HeapCore::sentinel(HeapState::Destroyed));

#[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
mod imp {
    use super::HeapPtr;

    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        // Hidden: one slot per linked copy of vmarena (a program and a plugin each have
        // theirs), never exported.
        ".globl __vmarena_heap_slot",
        ".hidden __vmarena_heap_slot",
        ".type __vmarena_heap_slot, @tls_object",
        ".size __vmarena_heap_slot, 8",
        "__vmarena_heap_slot:",
        ".quad {uninit}",
        ".popsection",
        uninit = sym crate::heap::slot::UNINIT,
    );

    /// The slot's value.
    #[inline(always)]
    pub(crate) fn get() -> HeapPtr {
        let heap: HeapPtr;
        // SAFETY: the initial-exec sequence: the slot's offset from the thread pointer (from
        // the GOT, or a constant after relaxation), then a load through `fs`. It reads only
        // the GOT and this thread's slot, and writes nothing.
        unsafe {
            core::arch::asm!(
                "mov {heap}, qword ptr [rip + __vmarena_heap_slot@GOTTPOFF]",
                "mov {heap}, qword ptr fs:[{heap}]",
                heap = out(reg) heap,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        heap
    }

    /// Sets the slot's value.
    #[inline(always)]
    pub(crate) fn set(heap: HeapPtr) {
        // SAFETY: as for `get`, storing instead of loading; it writes only this thread's slot.
        unsafe {
            core::arch::asm!(
                "mov {offset}, qword ptr [rip + __vmarena_heap_slot@GOTTPOFF]",
                "mov qword ptr fs:[{offset}], {heap}",
                offset = out(reg) _,
                heap = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "aarch64", not(miri)))]
mod imp {
    use super::HeapPtr;

    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",%progbits",
        ".p2align 3",
        ".globl __vmarena_heap_slot",
        ".hidden __vmarena_heap_slot",
        ".type __vmarena_heap_slot, %tls_object",
        ".size __vmarena_heap_slot, 8",
        "__vmarena_heap_slot:",
        ".xword {uninit}",
        ".popsection",
        uninit = sym crate::heap::slot::UNINIT,
    );

    /// The slot's value.
    #[inline(always)]
    pub(crate) fn get() -> HeapPtr {
        let heap: HeapPtr;
        // SAFETY: the initial-exec sequence: the slot's offset from the thread pointer (from
        // the GOT, or constants after relaxation), then a load relative to `tpidr_el0`. It
        // reads only the GOT and this thread's slot, and writes nothing.
        unsafe {
            core::arch::asm!(
                "mrs {tp}, tpidr_el0",
                "adrp {offset}, :gottprel:__vmarena_heap_slot",
                "ldr {offset}, [{offset}, #:gottprel_lo12:__vmarena_heap_slot]",
                "ldr {heap}, [{tp}, {offset}]",
                tp = out(reg) _,
                offset = out(reg) _,
                heap = lateout(reg) heap,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        heap
    }

    /// Sets the slot's value.
    #[inline(always)]
    pub(crate) fn set(heap: HeapPtr) {
        // SAFETY: as for `get`, storing instead of loading; it writes only this thread's slot.
        unsafe {
            core::arch::asm!(
                "mrs {tp}, tpidr_el0",
                "adrp {offset}, :gottprel:__vmarena_heap_slot",
                "ldr {offset}, [{offset}, #:gottprel_lo12:__vmarena_heap_slot]",
                "str {heap}, [{tp}, {offset}]",
                tp = out(reg) _,
                offset = out(reg) _,
                heap = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri)
)))]
mod imp {
    use super::HeapPtr;
    use core::cell::Cell;

    std::thread_local! {
        static SLOT: Cell<HeapPtr> = const { Cell::new(&raw const crate::heap::slot::UNINIT.0) };
    }

    #[inline(always)]
    pub(crate) fn get() -> HeapPtr {
        SLOT.with(Cell::get)
    }

    #[inline(always)]
    pub(crate) fn set(heap: HeapPtr) {
        SLOT.with(|slot| slot.set(heap));
    }
}

/// The calling thread's heap (a sentinel while it has none of its own).
#[inline(always)]
pub(crate) fn heap() -> &'static HeapCore {
    // SAFETY: the slot always points at a sentinel (a static) or at the thread's heap, which
    // stays valid and the thread's until the thread points the slot elsewhere.
    unsafe { &*imp::get() }
}

/// Points the calling thread's slot at `heap`.
pub(crate) fn set(heap: &'static HeapCore) {
    imp::set(heap);
}
