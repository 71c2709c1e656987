//! The C allocation functions with glibc's semantics, as Rust functions: what `libvmarena.so`
//! exports (`capi/` only gives them their names) and what the `c_api` fuzz target drives.
//! Like the C functions they return null on failure with `errno` set: `ENOMEM` when memory
//! cannot be had (vmarena sets it wherever it returns null for want of memory), `EINVAL` for
//! an impossible alignment; `posix_memalign` returns the error instead, as POSIX says.
//!
//! Everything here inlines into the exported symbols, so C's `malloc` and `free` are the
//! heap's fast paths with no call in between, and reach their slow paths by tail calls.

use super::{alloc, free, page_size, realloc as resize, usable_size};
use crate::Stats;
use crate::os::set_errno;

/// glibc's `malloc` alignment on 64-bit targets (`2 * sizeof(size_t)`); C code relies on it.
pub const MALLOC_ALIGN: usize = 16;

/// `malloc(size)`: a unique block even for 0.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    alloc(size, MALLOC_ALIGN, false)
}

/// `calloc(count, size)`: zeroed, `ENOMEM` if the product overflows.
#[inline(always)]
pub fn calloc(count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        Some(total) => alloc(total, MALLOC_ALIGN, true),
        None => failed(libc::ENOMEM),
    }
}

/// Null, with `errno = code`.
#[cold]
fn failed(code: i32) -> *mut u8 {
    set_errno(code);
    core::ptr::null_mut()
}

/// `free(ptr)`; null is ignored.
///
/// # Safety
/// `ptr` is null or a live block from vmarena, not used after this call.
#[inline(always)]
pub unsafe fn free_block(ptr: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe { free(ptr) }
}

/// `realloc(ptr, size)`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
/// returns null (leaving `errno` alone), as glibc does. On failure the block is unchanged.
///
/// # Safety
/// `ptr` is null or a live block from vmarena (not used again unless this fails).
#[inline]
pub unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: forwarded from the caller.
        unsafe { free(ptr) };
        return core::ptr::null_mut();
    }
    // SAFETY: forwarded from the caller; C blocks are aligned to at most their request, and
    // realloc only promises malloc's alignment.
    unsafe { resize(ptr, size, MALLOC_ALIGN) }
}

/// `reallocarray(ptr, count, size)`: `realloc` with an overflow-checked size.
///
/// # Safety
/// As for [`realloc`].
#[inline]
pub unsafe fn reallocarray(ptr: *mut u8, count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(total) => unsafe { realloc(ptr, total) },
        None => failed(libc::ENOMEM),
    }
}

/// `posix_memalign`: the block, or the error (`EINVAL` unless `align` is a power of two and
/// a multiple of `sizeof(void *)`, `ENOMEM`); `errno` is left alone.
#[inline]
pub fn posix_memalign(align: usize, size: usize) -> Result<*mut u8, i32> {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut u8>() != 0 {
        return Err(libc::EINVAL);
    }
    crate::os::errno_preserved(|| {
        let p = alloc(size, align.max(MALLOC_ALIGN), false);
        if p.is_null() {
            Err(libc::ENOMEM)
        } else {
            Ok(p)
        }
    })
}

/// `aligned_alloc`: `EINVAL` unless `align` is a power of two (as glibc 2.38 and later).
#[inline]
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return failed(libc::EINVAL);
    }
    alloc(size, align.max(MALLOC_ALIGN), false)
}

/// `memalign`: glibc rounds an alignment that is not a power of two up to the next one.
#[inline]
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    match align.max(MALLOC_ALIGN).checked_next_power_of_two() {
        Some(align) => alloc(size, align, false),
        None => failed(libc::EINVAL),
    }
}

/// `valloc`: aligned to the OS page.
#[inline]
pub fn valloc(size: usize) -> *mut u8 {
    alloc(size, page_size(), false)
}

/// `pvalloc`: like `valloc`, with the size rounded up to whole pages (0 becomes one page).
#[inline]
pub fn pvalloc(size: usize) -> *mut u8 {
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(rounded) => alloc(rounded, page, false),
        None => failed(libc::ENOMEM),
    }
}

/// `malloc_usable_size`: 0 for null; aborts on a pointer that is not a live block's start.
#[inline]
pub fn malloc_usable_size(ptr: *mut u8) -> usize {
    usable_size(ptr)
}

/// glibc's `struct mallinfo2` with vmarena's figures: `arena` is the committed memory of
/// small-block pages and `uordblks` the small blocks in use (`fordblks` the rest); `hblks`
/// and `hblkhd` count large blocks (vmarena's regions of their own, glibc's mmapped chunks).
/// The fields glibc uses for its own structures (free chunks, fastbins, the top chunk) are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallInfo {
    pub arena: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub uordblks: usize,
    pub fordblks: usize,
}

/// `mallinfo2()`.
pub fn mallinfo() -> MallInfo {
    mallinfo_of(&crate::stats())
}

/// [`mallinfo`] of a given snapshot.
pub fn mallinfo_of(stats: &Stats) -> MallInfo {
    let small_in_use = stats.bytes_in_use.saturating_sub(stats.large_bytes);
    let small_committed = stats
        .bytes_committed
        .saturating_sub(stats.large_bytes)
        .max(small_in_use);
    MallInfo {
        arena: small_committed,
        hblks: stats.large_regions,
        hblkhd: stats.large_bytes,
        uordblks: small_in_use,
        fordblks: small_committed - small_in_use,
    }
}
