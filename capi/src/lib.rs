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
//! so there is no recursion; `pthread_atfork` handlers keep `fork()` safe. Panics cannot unwind
//! out of these functions (an `extern "C"` function aborts instead), and none are expected:
//! failures return null with `errno` set.

use core::ffi::c_void;

use vmarena_core::raw;

/// glibc's `malloc` alignment on 64-bit targets (`2 * sizeof(size_t)`); C code relies on it.
const MALLOC_ALIGN: usize = 16;

fn set_errno(code: i32) {
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() = code };
}

/// A result pointer, with `errno = ENOMEM` when null.
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    or_enomem(raw::alloc(size, MALLOC_ALIGN, false))
}

/// # Safety
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { raw::free(ptr.cast()) }
}

#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) => or_enomem(raw::alloc(total, MALLOC_ALIGN, true)),
        None => or_enomem(core::ptr::null_mut()),
    }
}

/// `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns null, as glibc does.
///
/// # Safety
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: forwarded from the caller.
        unsafe { raw::free(ptr.cast()) };
        return core::ptr::null_mut();
    }
    // SAFETY: forwarded from the caller; C blocks are aligned to at most their request, and
    // realloc only promises malloc's alignment.
    or_enomem(unsafe { raw::realloc(ptr.cast(), size, MALLOC_ALIGN) })
}

/// # Safety
/// As for `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(total) => unsafe { realloc(ptr, total) },
        None => or_enomem(core::ptr::null_mut()),
    }
}

/// # Safety
/// `out` is valid for a write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = raw::alloc(size, align.max(MALLOC_ALIGN), false);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { *out = p.cast() };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    or_enomem(raw::alloc(size, align.max(MALLOC_ALIGN), false))
}

/// glibc rounds an alignment that is not a power of two up to the next one.
#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(align) = align.max(MALLOC_ALIGN).checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    };
    or_enomem(raw::alloc(size, align, false))
}

#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    or_enomem(raw::alloc(size, raw::page_size(), false))
}

/// Like `valloc`, with the size rounded up to whole pages (0 becomes one page).
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = raw::page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(rounded) => or_enomem(raw::alloc(rounded, page, false)),
        None => or_enomem(core::ptr::null_mut()),
    }
}

/// # Safety
/// `ptr` is null or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    raw::usable_size(ptr.cast())
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
    let mut buf = Buffer {
        bytes: [0; 2048],
        len: 0,
    };
    let _ = core::fmt::write(&mut buf, format_args!("{stats}\n"));
    // SAFETY: writing our buffer to stderr; a failed write changes nothing.
    unsafe { libc::write(2, buf.bytes.as_ptr().cast(), buf.len) };
}

/// A fixed buffer `core::fmt` can write into without allocating.
struct Buffer {
    bytes: [u8; 2048],
    len: usize,
}

impl core::fmt::Write for Buffer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// At load: if `VMARENA_VERIFY` is set, say so on stderr (tests use it to check that the
/// preload took effect).
extern "C" fn on_load() {
    // SAFETY: getenv with a NUL-terminated name; only compared with null.
    if unsafe { !libc::getenv(c"VMARENA_VERIFY".as_ptr()).is_null() } {
        let msg = b"vmarena: libvmarena.so is the allocator\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;
