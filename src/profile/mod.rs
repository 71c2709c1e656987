//! Heap profiling: turning sampling on and off, and writing what it found as a pprof profile
//! (`go tool pprof`, `pprof`, and every tool that reads Go's heap profiles). Sampling itself
//! is in `sampling`; this is the public face and the writer.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: vmarena::VmArena = vmarena::VmArena;
//!
//! vmarena::profile::start();
//! let kept: Vec<Vec<u8>> = (0..1000).map(|_| vec![0; 4096]).collect();
//! vmarena::profile::write_to_path("heap.pb.gz").expect("profile written");
//! # drop(kept);
//! ```
//!
//! Writing never allocates through the allocator it describes: the samples are copied out
//! under the table's lock into mapped memory, then the profile is encoded and compressed in
//! mapped buffers and written with `write(2)`.
//!
//! Layer: the top (beside `global`); calls `heap` (to turn sampling on in live heaps),
//! `sampling`, `options` and its submodules.

mod buffer;
mod gzip;
mod maps;
mod pprof;

use buffer::Buf;

use crate::sampling;
use crate::sampling::table::{Bucket, TABLE};

/// Why a profile could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The path is too long (4096 bytes at most, after `%p`) or holds a NUL byte.
    BadPath,
    /// Opening or writing the file failed with this `errno`.
    Io(i32),
    /// No memory could be mapped to build the profile.
    OutOfMemory,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::BadPath => write!(f, "profile path too long or with a NUL byte"),
            Error::Io(errno) => write!(f, "writing the profile failed (errno {errno})"),
            Error::OutOfMemory => write!(f, "no memory to build the profile"),
        }
    }
}

/// Starts sampling allocations in every thread (threads started later too), at the interval
/// `VMARENA_PROFILE_SAMPLE` set (or [`set_sample_interval`]; 512 KiB by default). Samples
/// taken before a [`stop`] are kept. The calling thread samples from its next allocation,
/// threads running already within 256 KiB allocated.
pub fn start() {
    crate::heap::set_sampling(true);
}

/// Stops sampling. The samples so far stay in the profile; blocks sampled before still leave
/// its in-use figures when they are freed.
pub fn stop() {
    crate::heap::set_sampling(false);
}

/// Sets the mean distance between samples, in bytes allocated (each allocation of `size`
/// bytes is sampled with probability `1 - exp(-size / bytes)`). Threads take it at their next
/// sample.
pub fn set_sample_interval(bytes: u64) {
    sampling::set_interval(bytes);
}

/// The profile as it stands, gzip-compressed.
fn build() -> Result<Buf, Error> {
    // Copy the buckets out under the lock; encode (which calls `dladdr`, and so may wait for
    // the dynamic loader's lock) without it.
    let mut copy = Buf::new();
    let count = {
        let table = TABLE.lock();
        let buckets = table.buckets();
        // SAFETY: `Bucket` is plain old data; its bytes are copied as they are.
        copy.push(unsafe {
            core::slice::from_raw_parts(
                buckets.as_ptr().cast::<u8>(),
                core::mem::size_of_val(buckets),
            )
        });
        buckets.len()
    };
    if !copy.ok() {
        return Err(Error::OutOfMemory);
    }
    let buckets = if count == 0 {
        &[][..]
    } else {
        // SAFETY: the buffer holds `count` buckets copied whole, and a mapping is page-aligned.
        unsafe { core::slice::from_raw_parts(copy.as_slice().as_ptr().cast::<Bucket>(), count) }
    };
    let raw = pprof::encode(buckets, sampling::interval()).ok_or(Error::OutOfMemory)?;
    let gz = gzip::compress(raw.as_slice());
    if gz.ok() {
        Ok(gz)
    } else {
        Err(Error::OutOfMemory)
    }
}

/// Writes the profile to `path` (`%p` in it becomes the process id), replacing the file.
pub fn write_to_path(path: &str) -> Result<(), Error> {
    write_path_bytes(path.as_bytes())
}

fn write_path_bytes(path: &[u8]) -> Result<(), Error> {
    let mut c_path = [0u8; 4097];
    let len = expand_path(path, &mut c_path[..4096]).ok_or(Error::BadPath)?;
    c_path[len] = 0;
    let profile = build()?;
    // SAFETY: a NUL-terminated path in our buffer; the descriptor is ours until closed.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(Error::Io(crate::os::errno()));
    }
    let mut rest = profile.as_slice();
    let mut result = Ok(());
    while !rest.is_empty() {
        // SAFETY: writes from our buffer, within its length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let errno = crate::os::errno();
            if errno == libc::EINTR {
                continue;
            }
            result = Err(Error::Io(errno));
            break;
        }
        rest = &rest[n as usize..];
    }
    // SAFETY: our descriptor.
    if unsafe { libc::close(fd) } != 0 && result.is_ok() {
        result = Err(Error::Io(crate::os::errno()));
    }
    result
}

/// Writes the profile to `out` (gzip-compressed pprof).
#[cfg(feature = "std")]
pub fn write(out: &mut impl std::io::Write) -> std::io::Result<()> {
    let profile = build().map_err(|e| std::io::Error::other(std::format!("{e}")))?;
    out.write_all(profile.as_slice())
}

/// `path` with `%p` replaced by the process id, into `out`; its length, or `None` if it does
/// not fit or holds a NUL byte.
fn expand_path(path: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut pid_text = [0u8; 20];
    // SAFETY: getpid cannot fail.
    let mut pid = unsafe { libc::getpid() } as u64;
    let mut at = pid_text.len();
    loop {
        at -= 1;
        pid_text[at] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let pid_text = &pid_text[at..];
    let mut len = 0;
    let mut i = 0;
    while i < path.len() {
        let piece: &[u8] = if path[i..].starts_with(b"%p") {
            i += 2;
            pid_text
        } else {
            i += 1;
            &path[i - 1..i]
        };
        if piece.contains(&0) {
            return None;
        }
        out.get_mut(len..len + piece.len())?.copy_from_slice(piece);
        len += piece.len();
    }
    Some(len)
}

/// `vmarena_profile_dump(path)` for C: 0, or -1 with `errno` set.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[doc(hidden)] // the C function's body (`raw::exports`)
pub unsafe fn dump_c(path: *const core::ffi::c_char) -> i32 {
    if path.is_null() {
        crate::os::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: NUL-terminated (caller).
    let path = unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes();
    match write_path_bytes(path) {
        Ok(()) => 0,
        Err(Error::Io(errno)) => {
            crate::os::set_errno(errno);
            -1
        }
        Err(Error::BadPath) => {
            crate::os::set_errno(libc::ENAMETOOLONG);
            -1
        }
        Err(Error::OutOfMemory) => {
            crate::os::set_errno(libc::ENOMEM);
            -1
        }
    }
}

/// At exit: the profile to `VMARENA_PROFILE_OUT`, if set (a message on stderr if that fails).
extern "C" fn at_exit() {
    let Some(path) = crate::options::profile_out() else {
        return;
    };
    if let Err(e) = write_path_bytes(path) {
        crate::stderr::line(format_args!("heap profile not written: {e}"));
    }
}

// As the statistics report at exit (`options::report`): `.fini_array` runs after `main`
// returns or `exit` is called, in Rust and C programs alike, and allocates nothing.
#[used]
#[unsafe(link_section = ".fini_array")]
static AT_EXIT: extern "C" fn() = at_exit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_p_becomes_the_process_id() {
        let mut out = [0u8; 64];
        let n = expand_path(b"/tmp/heap.%p.pb.gz", &mut out).unwrap();
        let expected = std::format!("/tmp/heap.{}.pb.gz", std::process::id());
        assert_eq!(&out[..n], expected.as_bytes());
        assert_eq!(expand_path(b"a\0b", &mut out), None);
        assert_eq!(expand_path(&[b'x'; 65], &mut out), None);
    }
}
