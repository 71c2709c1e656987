//! The C allocation functions under their C names (`malloc`, `free`, `calloc`, `realloc`,
//! `posix_memalign`, ..., glibc's `__libc_*` names and introspection), each a one-line call
//! into [`super::c`].
//!
//! With the `override` feature they are defined here, in the program vmarena is linked into:
//! the linker then exports them from the executable, the dynamic linker binds libc's and
//! every shared library's calls to them, and C code linked into the program (and libc's own
//! `strdup`, `getline`, ...) allocates from vmarena:
//!
//! ```toml
//! [dependencies]
//! vmarena = { version = "0.1", features = ["override"] }
//! ```
//!
//! Memory from C and from Rust is then one heap: a block from C's `malloc` may be freed by
//! `libc::free` or handed to Rust code that frees it with `libc::free`, and
//! [`crate::usable_size`] knows it.
//!
//! The definitions are one macro, expanded here under the feature and by the C library
//! (`capi/`, `libvmarena.so`) in its own crate. The C library does not enable the feature
//! instead: cargo unifies a package's features across one build, so `cargo test --workspace`
//! would then build every test of vmarena with `malloc` replaced.
//!
//! Layer: the top, over `raw::c`; calls `raw::c`, `crate::usable_size` and `crate::collect`.

/// Defines the exported C functions in the crate that expands it (`capi/` does; with the
/// `override` feature vmarena does it itself, and then this expands to nothing, so that a
/// build with every feature on defines each name once).
#[cfg(not(feature = "override"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_c_functions {
    () => {
        $crate::__define_c_functions!();
    };
}

/// See above: vmarena itself defines the names.
#[cfg(feature = "override")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_c_functions {
    () => {};
}

/// The definitions. Every function keeps `errno` unless it fails (see [`super::c`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __define_c_functions {
    () => {
        use core::ffi::{c_int, c_void};

        use $crate::raw::c;

        /// C `malloc`.
        #[unsafe(no_mangle)]
        pub extern "C" fn malloc(size: usize) -> *mut c_void {
            c::malloc(size).cast()
        }

        /// C `free`.
        ///
        /// # Safety
        /// `ptr` is null or a live block from this allocator.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn free(ptr: *mut c_void) {
            // SAFETY: forwarded from the caller.
            unsafe { c::free(ptr.cast()) }
        }

        /// C `calloc`.
        #[unsafe(no_mangle)]
        pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
            c::calloc(count, size).cast()
        }

        /// C `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
        /// returns null, as glibc does.
        ///
        /// # Safety
        /// `ptr` is null or a live block from this allocator.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
            // SAFETY: forwarded from the caller.
            unsafe { c::realloc(ptr.cast(), size) }.cast()
        }

        /// `reallocarray`: `realloc` with an overflow-checked size.
        ///
        /// # Safety
        /// As for `realloc`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn reallocarray(
            ptr: *mut c_void,
            count: usize,
            size: usize,
        ) -> *mut c_void {
            // SAFETY: forwarded from the caller.
            unsafe { c::reallocarray(ptr.cast(), count, size) }.cast()
        }

        /// POSIX `posix_memalign`.
        ///
        /// # Safety
        /// `out` is valid for a write of a pointer.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn posix_memalign(
            out: *mut *mut c_void,
            align: usize,
            size: usize,
        ) -> c_int {
            match c::posix_memalign(align, size) {
                Ok(p) => {
                    // SAFETY: guaranteed by the caller.
                    unsafe { *out = p.cast() };
                    0
                }
                Err(code) => code,
            }
        }

        /// C11 `aligned_alloc`.
        #[unsafe(no_mangle)]
        pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
            c::aligned_alloc(align, size).cast()
        }

        /// glibc's `memalign`.
        #[unsafe(no_mangle)]
        pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
            c::memalign(align, size).cast()
        }

        /// `valloc`: page-aligned.
        #[unsafe(no_mangle)]
        pub extern "C" fn valloc(size: usize) -> *mut c_void {
            c::valloc(size).cast()
        }

        /// glibc's `pvalloc`: page-aligned, whole pages.
        #[unsafe(no_mangle)]
        pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
            c::pvalloc(size).cast()
        }

        /// glibc's `malloc_usable_size`.
        ///
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
            unsafe { c::free(ptr.cast()) }
        }

        /// C23 `free_aligned_sized`.
        ///
        /// # Safety
        /// As for `free`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, _align: usize, _size: usize) {
            // SAFETY: forwarded from the caller.
            unsafe { c::free(ptr.cast()) }
        }

        /// glibc's internal name for `malloc`, which some programs and libraries call directly
        /// (hook-style wrappers, profilers): memory from these names must be vmarena's too, or
        /// freeing it aborts.
        #[unsafe(no_mangle)]
        pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
            malloc(size)
        }

        /// glibc's internal name for `free`.
        ///
        /// # Safety
        /// As for `free`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn __libc_free(ptr: *mut c_void) {
            // SAFETY: forwarded from the caller.
            unsafe { free(ptr) }
        }

        /// glibc's internal name for `calloc`.
        #[unsafe(no_mangle)]
        pub extern "C" fn __libc_calloc(count: usize, size: usize) -> *mut c_void {
            calloc(count, size)
        }

        /// glibc's internal name for `realloc`.
        ///
        /// # Safety
        /// As for `realloc`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
            // SAFETY: forwarded from the caller.
            unsafe { realloc(ptr, size) }
        }

        /// glibc's internal name for `memalign`.
        #[unsafe(no_mangle)]
        pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
            memalign(align, size)
        }

        /// glibc's internal name for `valloc`.
        #[unsafe(no_mangle)]
        pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
            valloc(size)
        }

        /// glibc's internal name for `pvalloc`.
        #[unsafe(no_mangle)]
        pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
            pvalloc(size)
        }

        /// glibc's internal name for `posix_memalign`.
        ///
        /// # Safety
        /// As for `posix_memalign`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn __posix_memalign(
            out: *mut *mut c_void,
            align: usize,
            size: usize,
        ) -> c_int {
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
            unsafe { c::free(ptr.cast()) }
        }

        /// Gives free memory back to the OS now, like glibc's `malloc_trim`. Returns 1
        /// (memory may have been released).
        #[unsafe(no_mangle)]
        pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
            $crate::collect();
            1
        }

        /// Writes vmarena's statistics to stderr (for people checking that vmarena is the
        /// allocator).
        #[unsafe(no_mangle)]
        pub extern "C" fn vmarena_print_stats() {
            c::print_stats()
        }

        /// Writes the heap profile (pprof format, gzip) to `path` (`%p`: the process id).
        /// Returns 0, or -1 with `errno` set. Sampling runs with `VMARENA_PROFILE=1` (or
        /// after `vmarena_profile_start`).
        ///
        /// # Safety
        /// `path` is a NUL-terminated string.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn vmarena_profile_dump(path: *const core::ffi::c_char) -> c_int {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::profile::dump_c(path) }
        }

        /// Starts sampling allocations for the heap profile, in every thread.
        #[unsafe(no_mangle)]
        pub extern "C" fn vmarena_profile_start() {
            $crate::profile::start()
        }

        /// Stops sampling (the samples so far stay in the profile).
        #[unsafe(no_mangle)]
        pub extern "C" fn vmarena_profile_stop() {
            $crate::profile::stop()
        }

        /// glibc's `mallinfo2`, with vmarena's figures (see `vmarena::raw::c::MallInfo`).
        #[cfg(target_env = "gnu")]
        #[unsafe(no_mangle)]
        pub extern "C" fn mallinfo2() -> $crate::raw::exports::__libc::mallinfo2 {
            c::mallinfo().to_mallinfo2()
        }

        /// glibc's `mallinfo`: `mallinfo2` in `int`s.
        #[cfg(target_env = "gnu")]
        #[unsafe(no_mangle)]
        pub extern "C" fn mallinfo() -> $crate::raw::exports::__libc::mallinfo {
            c::mallinfo().to_mallinfo()
        }

        /// glibc's tuning knobs have no meaning here (no arenas, thresholds or trimming of a
        /// top chunk); like glibc for the ones it knows, it accepts them and returns 1.
        /// Purging is tuned with `VMARENA_PURGE_DELAY_MS`.
        #[unsafe(no_mangle)]
        pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
            1
        }

        /// glibc's `malloc_stats`: its totals in its format, then vmarena's report, on stderr.
        #[unsafe(no_mangle)]
        pub extern "C" fn malloc_stats() {
            c::malloc_stats()
        }

        /// glibc's `malloc_info`; `options` must be 0.
        ///
        /// # Safety
        /// `stream` is a valid `FILE`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn malloc_info(
            options: c_int,
            stream: *mut $crate::raw::exports::__libc::FILE,
        ) -> c_int {
            // SAFETY: forwarded from the caller.
            unsafe { c::malloc_info(options, stream) }
        }
    };
}

/// The `libc` the definitions name types of (the expanding crate may not depend on it).
#[doc(hidden)]
pub use libc as __libc;

#[cfg(feature = "override")]
crate::__define_c_functions!();
