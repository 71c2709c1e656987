//! `libvmarena.so`: vmarena behind the C allocation functions, with glibc's semantics, so that
//! any program can use it with `LD_PRELOAD`:
//!
//! ```sh
//! cargo build --release -p vmarena-c
//! LD_PRELOAD=$PWD/target/release/libvmarena.so your-program
//! ```
//!
//! A thin layer: the functions are vmarena's (`vmarena::raw::exports`), each a call into
//! `vmarena::raw::c`. What makes it safe inside an arbitrary process lives in the core: the
//! thread-local heap needs no initialisation and never allocates; a thread's heap is torn down by a pthread key destructor, not a TLS destructor
//! that would call `calloc`; allocations made while a heap is being set up (say, by
//! `pthread_setspecific` calling `calloc`) or after its teardown go to a shared fallback heap,
//! so there is no recursion; `fork` handlers keep `fork()` safe. The thread's heap is
//! reached through initial-exec TLS (no `__tls_get_addr`, which newer glibc may call `malloc`
//! from), so the library is `no_std`: the standard library's own thread-locals would be
//! general-dynamic. A panic aborts (none is expected: failures return null with `errno`
//! set), and no function here changes `errno` unless it fails.

#![cfg_attr(not(test), no_std)]

// The C functions (`malloc`, `free`, ..., glibc's internal names and introspection) are
// defined in vmarena (`vmarena::raw::exports`), the same definitions its `override` feature
// gives a Rust program.
vmarena_core::__export_c_functions!();

/// Rust's own allocations, if any crate linked in here makes them (the `alloc` crate can come
/// in through feature unification in workspace builds), are vmarena's too.
#[cfg(not(test))]
#[global_allocator]
static RUST_ALLOCATIONS: vmarena_core::VmArena = vmarena_core::VmArena;

/// A panic has nowhere to unwind to in a C program: say so and abort. (None is expected.)
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    let msg = b"vmarena: internal error (panic)\n";
    // SAFETY: writing a static buffer to stderr, then aborting.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

/// The precompiled `core` names Rust's unwinding personality routine in its unwind tables.
/// With `panic = "abort"` nothing unwinds through Rust frames, so it never runs; if anything
/// ever asked it to, aborting is the only sound answer.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// At load: read the options if no allocation has yet (`vmarena::raw::init`; vmarena's own
/// constructor has installed the `fork` handlers); with `VMARENA_VERIFY=1`, say so on stderr
/// (tests use it to check that the preload took effect).
extern "C" fn on_load() {
    vmarena_core::raw::init();
    if vmarena_core::raw::verify_requested() {
        let msg = b"vmarena: libvmarena.so is the allocator\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;
