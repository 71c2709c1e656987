//! `libvmarena.so`: vmarena behind the C allocation functions, with glibc's semantics, so that
//! any program can use it with `LD_PRELOAD`:
//!
//! ```sh
//! cargo build --release -p vmarena-c
//! LD_PRELOAD=$PWD/target/release/libvmarena.so your-program
//! ```
//!
//! A thin layer: every function maps to `vmarena::raw`. What makes it safe inside an arbitrary
//! process lives in the core: the thread-local heap needs no initialisation and never
//! allocates; a thread's heap is torn down by a pthread key destructor, not a TLS destructor
//! that would call `calloc`; allocations made while a heap is being set up (say, by
//! `pthread_setspecific` calling `calloc`) or after its teardown go to a shared fallback heap,
//! so there is no recursion; `fork` handlers keep `fork()` safe. The thread's heap is
//! reached through initial-exec TLS (no `__tls_get_addr`, which newer glibc may call `malloc`
//! from), so the library is `no_std`: the standard library's own thread-locals would be
//! general-dynamic. A panic aborts (none is expected: failures return null with `errno`
//! set), and no function here changes `errno` unless it fails.

#![cfg_attr(not(test), no_std)]

use core::ffi::{c_int, c_void};

use vmarena_core::raw;
use vmarena_core::raw::c;

#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    c::malloc(size).cast()
}

/// # Safety
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { c::free_block(ptr.cast()) }
}

#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    c::calloc(count, size).cast()
}

/// `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns null, as glibc does.
///
/// # Safety
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded from the caller.
    unsafe { c::realloc(ptr.cast(), size) }.cast()
}

/// # Safety
/// As for `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded from the caller.
    unsafe { c::reallocarray(ptr.cast(), count, size) }.cast()
}

/// # Safety
/// `out` is valid for a write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    match c::posix_memalign(align, size) {
        Ok(p) => {
            // SAFETY: guaranteed by the caller.
            unsafe { *out = p.cast() };
            0
        }
        Err(code) => code,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    c::aligned_alloc(align, size).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    c::memalign(align, size).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    c::valloc(size).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    c::pvalloc(size).cast()
}

/// # Safety
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    c::malloc_usable_size(ptr.cast())
}

/// C23 `free_sized`: the size is only a hint here.
///
/// # Safety
/// As for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, _size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { raw::free(ptr.cast()) }
}

/// C23 `free_aligned_sized`.
///
/// # Safety
/// As for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { raw::free(ptr.cast()) }
}

/// glibc's internal names, which some programs and libraries call directly (hook-style
/// wrappers, profilers): memory from them must be vmarena's too, or freeing it aborts.
#[unsafe(no_mangle)]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    malloc(size)
}

/// # Safety
/// As for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __libc_free(ptr: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { free(ptr) }
}

#[unsafe(no_mangle)]
pub extern "C" fn __libc_calloc(count: usize, size: usize) -> *mut c_void {
    calloc(count, size)
}

/// # Safety
/// As for `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded from the caller.
    unsafe { realloc(ptr, size) }
}

#[unsafe(no_mangle)]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

#[unsafe(no_mangle)]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    valloc(size)
}

#[unsafe(no_mangle)]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    pvalloc(size)
}

/// # Safety
/// As for `posix_memalign`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { posix_memalign(out, align, size) }
}

/// glibc's old name for `free`, still called by some programs.
///
/// # Safety
/// As for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { raw::free(ptr.cast()) }
}

/// Gives free memory back to the OS now, like glibc's `malloc_trim`. Returns 1 (memory may
/// have been released).
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> i32 {
    vmarena_core::collect();
    1
}

/// Writes vmarena's statistics to stderr (for people checking that the preload is in effect).
#[unsafe(no_mangle)]
pub extern "C" fn vmarena_print_stats() {
    let stats = vmarena_core::stats();
    let mut buf = Buffer::new();
    let _ = core::fmt::write(&mut buf, format_args!("{stats}\n"));
    buf.write_to_stderr();
}

/// glibc's `mallinfo2`, with vmarena's figures (see `vmarena::raw::c::MallInfo`).
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo2() -> libc::mallinfo2 {
    let m = c::mallinfo();
    libc::mallinfo2 {
        arena: m.arena,
        ordblks: 0,
        smblks: 0,
        hblks: m.hblks,
        hblkhd: m.hblkhd,
        usmblks: 0,
        fsmblks: 0,
        uordblks: m.uordblks,
        fordblks: m.fordblks,
        keepcost: 0,
    }
}

/// glibc's `mallinfo`: `mallinfo2` in `int`s (clamped, where glibc wraps).
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo() -> libc::mallinfo {
    let m = mallinfo2();
    let int = |v: usize| v.min(c_int::MAX as usize) as c_int;
    libc::mallinfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

/// glibc's tuning knobs have no meaning here (no arenas, thresholds or trimming of a top
/// chunk); like glibc for the ones it knows, it accepts them and returns 1. Purging is tuned
/// with `VMARENA_PURGE_DELAY_MS`.
#[unsafe(no_mangle)]
pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// glibc's `malloc_stats`: its totals in its format, then vmarena's report, on stderr.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    let stats = vmarena_core::stats();
    let m = c::mallinfo_of(&stats);
    let mut buf = Buffer::new();
    let _ = core::fmt::write(
        &mut buf,
        format_args!(
            "Total (incl. mmap):\nsystem bytes     = {:>10}\nin use bytes     = {:>10}\n\
             max mmap regions = {:>10}\nmax mmap bytes   = {:>10}\n{stats}\n",
            m.arena + m.hblkhd,
            m.uordblks + m.hblkhd,
            m.hblks,
            m.hblkhd,
        ),
    );
    buf.write_to_stderr();
}

/// glibc's `malloc_info`: an XML description of the allocator's state on `stream`, in glibc's
/// elements (one heap) plus a `<vmarena>` element with vmarena's own counters. `options` must
/// be 0.
///
/// # Safety
/// `stream` is a valid `FILE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    if options != 0 {
        return libc::EINVAL;
    }
    let s = vmarena_core::stats();
    let m = c::mallinfo_of(&s);
    let mut buf = Buffer::new();
    let _ = core::fmt::write(
        &mut buf,
        format_args!(
            "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n</sizes>\n\
             <total type=\"fast\" count=\"0\" size=\"0\"/>\n\
             <total type=\"rest\" count=\"0\" size=\"{free}\"/>\n\
             <system type=\"current\" size=\"{small}\"/>\n<system type=\"max\" size=\"{small}\"/>\n\
             <aspace type=\"total\" size=\"{small}\"/>\n<aspace type=\"mprotect\" size=\"{small}\"/>\n\
             </heap>\n\
             <total type=\"fast\" count=\"0\" size=\"0\"/>\n\
             <total type=\"rest\" count=\"0\" size=\"{free}\"/>\n\
             <total type=\"mmap\" count=\"{large_count}\" size=\"{large}\"/>\n\
             <system type=\"current\" size=\"{committed}\"/>\n<system type=\"max\" size=\"{committed}\"/>\n\
             <aspace type=\"total\" size=\"{reserved}\"/>\n<aspace type=\"mprotect\" size=\"{reserved}\"/>\n\
             <vmarena in_use=\"{in_use}\" committed=\"{committed}\" reserved=\"{reserved}\" \
             metadata=\"{metadata}\" purged=\"{purged}\" page_regions=\"{regions}\" \
             pages_in_use=\"{pages}\" pages_abandoned=\"{abandoned}\" large_blocks=\"{large_count}\" \
             threads_started=\"{started}\" threads_exited=\"{exited}\"/>\n</malloc>\n",
            free = m.fordblks,
            small = m.arena,
            large_count = m.hblks,
            large = m.hblkhd,
            committed = s.bytes_committed,
            reserved = s.bytes_reserved,
            in_use = s.bytes_in_use,
            metadata = s.bytes_metadata,
            purged = s.bytes_purged,
            regions = s.page_regions.iter().sum::<usize>(),
            pages = s.pages_in_use.iter().sum::<usize>(),
            abandoned = s.pages_abandoned,
            started = s.threads_started,
            exited = s.threads_exited,
        ),
    );
    // SAFETY: our buffer, to the caller's stream (which may allocate: we hold no lock).
    let written = unsafe { libc::fwrite(buf.bytes.as_ptr().cast(), 1, buf.len, stream) };
    if written == buf.len { 0 } else { -1 }
}

/// A fixed buffer `core::fmt` can write into without allocating (longer text is cut).
struct Buffer {
    bytes: [u8; 4096],
    len: usize,
}

impl Buffer {
    fn new() -> Buffer {
        Buffer {
            bytes: [0; 4096],
            len: 0,
        }
    }

    fn write_to_stderr(&self) {
        // SAFETY: writing our buffer to stderr; a failed write changes nothing.
        unsafe { libc::write(2, self.bytes.as_ptr().cast(), self.len) };
    }
}

impl core::fmt::Write for Buffer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

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

/// At load: install the `fork` handlers before any other library can register its own (see
/// `vmarena::raw::init`, which also reads the options if no allocation has yet); with
/// `VMARENA_VERIFY=1`, say so on stderr (tests use it to check that the preload took effect).
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
