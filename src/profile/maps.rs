//! The program's mappings for a profile: each executable mapping of a file in
//! `/proc/self/maps` (address range, file offset, path), with the exact start of its code
//! segment and its GNU build id from the dynamic loader (`dl_iterate_phdr`), so that `pprof`
//! finds the right binary to symbolize from and symbolizes every address right.
//!
//! Layer: `profile`; calls `profile::buffer` and the OS (`open`, `read`, `dl_iterate_phdr`).

use super::buffer::Buf;

/// One executable mapping of a file; `path` points into the maps text.
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
        executable: perms.get(2) == Some(&b'x'),
        offset,
        path,
    })
}

/// A loaded object's code segment, as the dynamic loader knows it: its exact start and end in
/// memory, its offset in the file, and the object's GNU build id.
#[derive(Clone, Copy)]
struct Segment {
    start: u64,
    end: u64,
    offset: u64,
    build_id_len: u8,
    build_id: [u8; 64],
}

/// Every loaded object's executable segments, from `dl_iterate_phdr`, which holds the loader's
/// lock while it calls back, so no object is unloaded while its headers and notes are read.
/// (Not from the files: they may have changed since they were mapped.)
fn code_segments() -> Buf {
    extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        out: *mut libc::c_void,
    ) -> i32 {
        // SAFETY: the loader passes a valid `dl_phdr_info` for a loaded object, whose program
        // headers and loaded segments stay mapped during the call; `out` is our `Buf`.
        unsafe {
            let info = &*info;
            let out = &mut *out.cast::<Buf>();
            let phdrs = core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let mut segment = Segment {
                start: 0,
                end: 0,
                offset: 0,
                build_id_len: 0,
                build_id: [0; 64],
            };
            for ph in phdrs.iter().filter(|ph| ph.p_type == libc::PT_NOTE) {
                let notes = core::slice::from_raw_parts(
                    (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize) as *const u8,
                    ph.p_memsz as usize,
                );
                if let Some(id) = find_build_id(notes) {
                    let n = id.len().min(64);
                    segment.build_id[..n].copy_from_slice(&id[..n]);
                    segment.build_id_len = n as u8;
                }
            }
            for ph in phdrs
                .iter()
                .filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0)
            {
                segment.start = info.dlpi_addr.wrapping_add(ph.p_vaddr);
                segment.end = segment.start.wrapping_add(ph.p_memsz);
                segment.offset = ph.p_offset;
                out.push(core::slice::from_raw_parts(
                    (&raw const segment).cast::<u8>(),
                    core::mem::size_of::<Segment>(),
                ));
            }
        }
        0
    }
    let mut out = Buf::new();
    // SAFETY: `visit` matches the callback's signature and only writes `out`, alive across
    // the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut out).cast()) };
    out
}

/// Calls `f` with every executable mapping of a file in `maps` (the text from [`read_maps`]).
/// Where the dynamic loader knows the code segment in it, the mapping starts at the segment's
/// first byte (not at its page) with the segment's own file offset: given the page's offset,
/// `pprof` can take the read-only segment that ends on that page (lld lays binaries out so)
/// for the code and symbolize every address a little off.
pub(crate) fn for_each_mapping(maps: &[u8], mut f: impl FnMut(Mapping<'_>)) {
    let segments_buf = code_segments();
    let bytes = segments_buf.as_slice();
    let segment_size = core::mem::size_of::<Segment>();
    let segments = (0..bytes.len() / segment_size).map(|i| {
        // SAFETY: the buffer holds whole `Segment`s, copied as bytes (read unaligned).
        unsafe {
            bytes
                .as_ptr()
                .add(i * segment_size)
                .cast::<Segment>()
                .read_unaligned()
        }
    });
    for line in maps.split(|&c| c == b'\n').filter_map(parse) {
        if !line.executable || !line.path.starts_with(b"/") {
            continue;
        }
        let known = segments
            .clone()
            .find(|s| s.start < line.end && line.start < s.end);
        let (start, offset) = known.map_or((line.start, line.offset), |s| {
            let skip = s.start.saturating_sub(line.start);
            (line.start + skip, line.offset + skip)
        });
        f(Mapping {
            start,
            end: line.end,
            offset,
            path: line.path,
            build_id: known
                .as_ref()
                .map_or(&[], |s| &s.build_id[..usize::from(s.build_id_len)]),
        });
    }
}

fn u32_at(notes: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(notes.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize)
}

/// The GNU build id among ELF notes (a `PT_NOTE` segment's bytes), if there is one.
fn find_build_id(notes: &[u8]) -> Option<&[u8]> {
    let mut at = 0usize;
    while at.checked_add(12)? <= notes.len() {
        let (namesz, descsz, kind) = (
            u32_at(notes, at)?,
            u32_at(notes, at + 4)?,
            u32_at(notes, at + 8)?,
        );
        let name = at + 12;
        let desc = name.checked_add(namesz.checked_next_multiple_of(4)?)?;
        if kind == 3 && notes.get(name..name.checked_add(namesz)?)? == b"GNU\0" {
            return notes.get(desc..desc.checked_add(descsz)?);
        }
        at = desc.checked_add(descsz.checked_next_multiple_of(4)?)?;
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
        assert!(line.executable);
        assert_eq!(line.path, b"/tmp/a b/lib.so");
    }
}
