//! The C allocation functions with glibc's semantics, as Rust functions: what
//! [`super::exports`] exports under the C names (in `libvmarena.so`, or with the `override`
//! feature) and what the `c_api` fuzz target drives.
//! Like the C functions they return null on failure with `errno` set: `ENOMEM` when memory
//! cannot be had (vmarena sets it wherever it returns null for want of memory), `EINVAL` for
//! an impossible alignment; `posix_memalign` returns the error instead, as POSIX says.
//!
//! `malloc`, `calloc` and `free` (which is [`super::free`]) are the heap's fast paths
//! themselves (the fast path inlined, the slow paths reached by tail calls), out of line in
//! this crate so that the statics they read stay private to it and are addressed directly,
//! not through the GOT (see `src/global.rs`); an exported C function is one jump to them. The
//! rest inline into the exported functions and call out.
//!
//! Layer: the top, over `raw`; calls `raw`'s functions, `crate::stats()` (for `mallinfo`,
//! `malloc_stats` and `malloc_info`) and `os` (`errno`).

use super::{alloc, alloc_inline, page_size, realloc as resize, usable_size};
use crate::Stats;
use crate::os::set_errno;

/// glibc's `malloc` alignment on 64-bit targets (`2 * sizeof(size_t)`); C code relies on it.
pub const MALLOC_ALIGN: usize = 16;

/// `malloc(size)`: a unique block even for 0.
///
/// ```
/// use vmarena::raw::c;
///
/// let p = c::malloc(24);
/// assert!(!p.is_null() && p as usize % c::MALLOC_ALIGN == 0);
/// // SAFETY: a live block of 24 bytes or more; each block is freed once.
/// unsafe {
///     p.write_bytes(7, 24);
///     let q = c::realloc(p, 4000);
///     assert!((0..24).all(|i| *q.add(i) == 7));
///     c::free(q);
///     assert!(c::realloc(c::malloc(10), 0).is_null()); // freed, as glibc does
/// }
/// ```
#[inline(never)]
pub fn malloc(size: usize) -> *mut u8 {
    alloc_inline(size, MALLOC_ALIGN, false)
}

/// `calloc(count, size)`: zeroed, `ENOMEM` if the product overflows.
#[inline(never)]
pub fn calloc(count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        Some(total) => alloc_inline(total, MALLOC_ALIGN, true),
        None => failed(libc::ENOMEM),
    }
}

/// Null, with `errno = code`.
#[cold]
fn failed(code: i32) -> *mut u8 {
    set_errno(code);
    core::ptr::null_mut()
}

/// `free(ptr)` is [`super::free`] itself (null is ignored).
pub use super::free;

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
    // SAFETY: forwarded from the caller (`resize` allows a block aligned more than the 16
    // passed here, e.g. from `memalign`); realloc only promises malloc's alignment.
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
    match crate::config::align_up(size.max(1), page) {
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
    /// Committed memory of small-block pages.
    pub arena: usize,
    /// Large blocks (each a region of its own).
    pub hblks: usize,
    /// Bytes of large blocks.
    pub hblkhd: usize,
    /// Bytes of small blocks in use.
    pub uordblks: usize,
    /// Committed bytes of small-block pages not in use (`arena - uordblks`).
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

impl MallInfo {
    /// As glibc's `struct mallinfo2` (the fields vmarena has no figure for are 0).
    #[cfg(target_env = "gnu")]
    pub fn to_mallinfo2(self) -> libc::mallinfo2 {
        libc::mallinfo2 {
            arena: self.arena,
            ordblks: 0,
            smblks: 0,
            hblks: self.hblks,
            hblkhd: self.hblkhd,
            usmblks: 0,
            fsmblks: 0,
            uordblks: self.uordblks,
            fordblks: self.fordblks,
            keepcost: 0,
        }
    }

    /// As glibc's old `struct mallinfo`, in `int`s (clamped, where glibc wraps).
    #[cfg(target_env = "gnu")]
    pub fn to_mallinfo(self) -> libc::mallinfo {
        let int = |v: usize| v.min(core::ffi::c_int::MAX as usize) as core::ffi::c_int;
        libc::mallinfo {
            arena: int(self.arena),
            ordblks: 0,
            smblks: 0,
            hblks: int(self.hblks),
            hblkhd: int(self.hblkhd),
            usmblks: 0,
            fsmblks: 0,
            uordblks: int(self.uordblks),
            fordblks: int(self.fordblks),
            keepcost: 0,
        }
    }
}

/// Writes vmarena's statistics report to stderr, without allocating.
pub fn print_stats() {
    let stats = crate::stats();
    let mut buf = Buffer::new();
    let _ = core::fmt::write(&mut buf, format_args!("{stats}\n"));
    buf.write_to_stderr();
}

/// glibc's `malloc_stats()`: its totals in its format, then vmarena's report, on stderr.
pub fn malloc_stats() {
    let stats = crate::stats();
    let m = mallinfo_of(&stats);
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

/// glibc's `malloc_info(options, stream)`: an XML description of the allocator's state on
/// `stream`, in glibc's elements (one heap) plus a `<vmarena>` element with vmarena's own
/// counters. `options` must be 0 (else `EINVAL`, returned); 0 on success, -1 if the write
/// failed.
///
/// # Safety
/// `stream` is a valid `FILE`.
pub unsafe fn malloc_info(options: core::ffi::c_int, stream: *mut libc::FILE) -> core::ffi::c_int {
    if options != 0 {
        return libc::EINVAL;
    }
    let s = crate::stats();
    let m = mallinfo_of(&s);
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
