//! The program's mappings for a profile: each executable mapping of a file in
//! `/proc/self/maps` (address range, file offset, path) and the file's GNU build id, read from
//! its ELF notes in memory, so that `pprof` finds the right binary to symbolize from.
//!
//! Layer: `profile`; calls `profile::buffer` and the OS (`open`, `read`).

use super::buffer::Buf;

/// One executable mapping of a file; `path` and `build_id` point into the maps text and the
/// mapped ELF image.
pub(crate) struct Mapping<'a> {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) offset: u64,
    pub(crate) path: &'a [u8],
    pub(crate) build_id: &'a [u8],
}

/// The text of `/proc/self/maps` (empty if it cannot be read).
pub(crate) fn read_maps() -> Buf {
    let mut buf = Buf::new();
    // SAFETY: a NUL-terminated path; the descriptor is ours until closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return buf;
    }
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: reads into our stack buffer, within its length.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
        buf.push(&chunk[..n as usize]);
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    buf
}

/// One line of the maps text, parsed.
struct Line<'a> {
    start: u64,
    end: u64,
    readable: bool,
    executable: bool,
    offset: u64,
    path: &'a [u8],
}

fn hex(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 16 {
        return None;
    }
    field.iter().try_fold(0u64, |n, &c| {
        let digit = (c as char).to_digit(16)?;
        Some(n << 4 | u64::from(digit))
    })
}

fn parse(line: &[u8]) -> Option<Line<'_>> {
    let mut fields = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let dash = range.iter().position(|&c| c == b'-')?;
    let (start, end) = (hex(&range[..dash])?, hex(&range[dash + 1..])?);
    let perms = fields.next()?;
    let offset = hex(fields.next()?)?;
    let _device = fields.next()?;
    let _inode = fields.next()?;
    // The path is the rest of the line (it may hold spaces).
    let path_start = fields
        .next()
        .map(|f| f.as_ptr() as usize - line.as_ptr() as usize);
    let path = path_start.map_or(&[][..], |at| &line[at..]);
    Some(Line {
        start,
        end,
        readable: perms.first() == Some(&b'r'),
        executable: perms.get(2) == Some(&b'x'),
        offset,
        path,
    })
}

/// Calls `f` with every executable mapping of a file in `maps` (the text from [`read_maps`]).
pub(crate) fn for_each_mapping<'a>(maps: &'a [u8], mut f: impl FnMut(Mapping<'a>)) {
    let lines = || maps.split(|&c| c == b'\n').filter_map(parse);
    for line in lines() {
        if !line.executable || !line.path.starts_with(b"/") {
            continue;
        }
        // The file's ELF header is where its offset-0 mapping starts, if that is readable.
        let image = lines()
            .find(|l| l.path == line.path && l.offset == 0 && l.readable)
            .map(|l| (l.start, l.end - l.start));
        // SAFETY: a readable mapping of the process, `len` bytes from `base`, which stays
        // mapped while the program runs (the library it belongs to is loaded).
        let image = image.map(|(base, len)| unsafe {
            core::slice::from_raw_parts(base as *const u8, len as usize)
        });
        let build_id = image.map_or(&[][..], build_id);
        // Where the code segment really begins: the mapping starts at the page holding its
        // first byte. `pprof` finds the segment from the file offset; given the page's offset
        // it can pick the read-only segment before it (which lld ends on the same page) and
        // symbolize every address a little off.
        let skip = image
            .and_then(|image| segment_start(image, line.offset))
            .unwrap_or(0);
        f(Mapping {
            start: line.start + skip,
            end: line.end,
            offset: line.offset + skip,
            path: line.path,
            build_id,
        });
    }
}

fn u16_at(image: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(image: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn u64_at(image: &[u8], at: usize) -> Option<usize> {
    Some(u64::from_le_bytes(image.get(at..at + 8)?.try_into().ok()?) as usize)
}

/// How far into the page at file offset `page_offset` the executable `PT_LOAD` segment that
/// starts on that page begins, if one does.
fn segment_start(image: &[u8], page_offset: u64) -> Option<u64> {
    if image.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(image, 0x20)?,
        u16_at(image, 0x36)?,
        u16_at(image, 0x38)?,
    );
    (0..phnum).find_map(|i| {
        let ph = phoff + i * phentsize;
        let (kind, flags, offset) = (
            u32_at(image, ph)?,
            u32_at(image, ph + 4)?,
            u64_at(image, ph + 8)? as u64,
        );
        let executable_load = kind == 1 && flags & 1 != 0;
        (executable_load && offset & !0xfff == page_offset).then_some(offset - page_offset)
    })
}

/// The GNU build id in the notes of the ELF64 image that starts `image` (its first mapped
/// bytes), or nothing.
fn build_id(image: &[u8]) -> &[u8] {
    find_build_id(image).unwrap_or(&[])
}

fn find_build_id(image: &[u8]) -> Option<&[u8]> {
    if image.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(image, 0x20)?,
        u16_at(image, 0x36)?,
        u16_at(image, 0x38)?,
    );
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(image, ph)? != 4 {
            continue; // not PT_NOTE
        }
        let (mut at, size) = (u64_at(image, ph + 8)?, u64_at(image, ph + 32)?);
        let end = at.checked_add(size)?;
        while at + 12 <= end {
            let (namesz, descsz, kind) = (
                u32_at(image, at)?,
                u32_at(image, at + 4)?,
                u32_at(image, at + 8)?,
            );
            let name = at + 12;
            let desc = name + namesz.next_multiple_of(4);
            if kind == 3 && image.get(name..name + namesz)? == b"GNU\0" {
                return image.get(desc..desc + descsz);
            }
            at = desc + descsz.next_multiple_of(4);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_test_binary_with_its_build_id() {
        let maps = read_maps();
        let here = finds_this_test_binary_with_its_build_id as fn() as usize as u64;
        let mut found = false;
        for_each_mapping(maps.as_slice(), |m| {
            if (m.start..m.end).contains(&here) {
                found = true;
                assert!(m.path.starts_with(b"/"));
                // Rust's linker invocation asks for a build id on Linux; if the toolchain did
                // not, the note is simply absent.
                assert!(
                    m.build_id.is_empty() || m.build_id.len() >= 8,
                    "{:?}",
                    m.build_id
                );
            }
        });
        assert!(found, "no executable mapping holds this function");
    }

    #[test]
    fn parses_a_line_with_spaces_in_its_path() {
        let line = parse(b"7f00-7f10 r-xp 00002000 08:01 1234    /tmp/a b/lib.so").unwrap();
        assert_eq!(
            (line.start, line.end, line.offset),
            (0x7f00, 0x7f10, 0x2000)
        );
        assert!(line.executable && line.readable);
        assert_eq!(line.path, b"/tmp/a b/lib.so");
    }
}
