//! Settings read from the environment, without allocating (they are read on allocation
//! paths, before anything else may allocate).

use core::ffi::CStr;

/// The value of `name`, if it is set.
fn get(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string that
    // stays valid while no one changes the environment (callers read it at once).
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { CStr::from_ptr(value) }.to_bytes())
}

/// A decimal number (up to 18 digits); `None` if unset or not a number.
pub(crate) fn number(name: &CStr) -> Option<u64> {
    let bytes = get(name)?;
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// True if `name` is set to `1` (the one value that switches an option on).
pub(crate) fn flag(name: &CStr) -> bool {
    get(name) == Some(b"1")
}
