//! The process's memory as the kernel reports it.

/// Resident memory of this process in bytes, from `/proc/self/statm`.
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// A figure of `/proc/self/status` in KiB: `"VmHWM:"` (peak RSS) or `"VmRSS:"` (RSS now).
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// [`resident_bytes`] without allocating (a stack buffer and plain system calls), for tests
/// that must not call the allocator while they look.
pub fn resident_bytes_without_allocating() -> usize {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; `buf` is valid for its length; the descriptor is ours.
    let len = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0, "open /proc/self/statm");
        let len = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        len
    };
    assert!(len > 0, "read /proc/self/statm");
    let second = buf[..len as usize]
        .split(|&b| b == b' ')
        .nth(1)
        .expect("statm has a resident field");
    let pages = second
        .iter()
        .fold(0usize, |n, &d| n * 10 + (d - b'0') as usize);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Minor page faults this process has taken so far (`getrusage`).
pub fn minor_faults() -> u64 {
    // SAFETY: a zeroed rusage is a valid out-parameter; getrusage only writes it.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_minflt as u64
}

/// The process's anonymous memory backed by transparent huge pages, in KiB
/// (`AnonHugePages` of `/proc/self/smaps_rollup`; 0 where the kernel does not say).
pub fn anon_huge_kib() -> u64 {
    let Ok(rollup) = std::fs::read_to_string("/proc/self/smaps_rollup") else {
        return 0;
    };
    rollup
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
