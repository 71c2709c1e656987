//! The process environment, read without allocating: one variable's value, and the names of
//! every `VMARENA_*` variable (to find misspelt ones).
//!
//! Layer: `options`, a leaf service; calls nothing in the crate (`libc` only).

use core::ffi::{CStr, c_char};

unsafe extern "C" {
    /// The C library's environment (POSIX). Null until the C library has set it up.
    static environ: *const *const c_char;
}

/// True once the C library has set the environment up. A `malloc` under `LD_PRELOAD` can run
/// before that (from the dynamic loader or the C library's own start-up); options are read
/// later then, not fixed at their defaults.
pub(super) fn ready() -> bool {
    // SAFETY: reading the pointer itself; the C library writes it once, before `main` and
    // before any thread is created.
    !unsafe { environ }.is_null()
}

/// The value of `name`, if it is set.
pub(super) fn get(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string that
    // stays valid while no one changes the environment (callers use it at once).
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { CStr::from_ptr(value) }.to_bytes())
}

/// Calls `f` with the name of every variable in the environment that starts with `prefix`.
pub(super) fn names_with_prefix(prefix: &[u8], mut f: impl FnMut(&[u8])) {
    // SAFETY: `environ` is null or a null-terminated array of NUL-terminated strings, which
    // stay valid while no one changes the environment (as for getenv).
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let bytes = CStr::from_ptr(*entry).to_bytes();
            let name = bytes
                .iter()
                .position(|&b| b == b'=')
                .map_or(bytes, |end| &bytes[..end]);
            if name.starts_with(prefix) {
                f(name);
            }
            entry = entry.add(1);
        }
    }
}
