//! The pprof format (`profile.proto` of github.com/google/pprof), encoded by hand: a heap
//! profile as Go's have it, with four values per call stack (`alloc_objects`, `alloc_space`,
//! `inuse_objects`, `inuse_space`), the program's mappings (so `pprof` symbolizes from the
//! binaries), and function names where `dladdr` knows them (exported symbols; `pprof` replaces
//! them with its own symbolization where it finds the file).
//!
//! Layer: `profile`; calls `profile::buffer`, `profile::maps`, `sampling` (the buckets) and the
//! OS (`dladdr`, the clock).

use super::buffer::Buf;
use super::maps;
use crate::sampling::table::{Bucket, ONE};

/// Frames that are the allocator's own, or the allocation functions programs call: `pprof`
/// drops them (and everything they called) from each stack, so that the profile's innermost
/// frames are the program's. (Matched whole against demangled names.)
const DROP_FRAMES: &str = "<?vmarena::.*|__rust_(alloc|alloc_zeroed|realloc)|__rg_.*|\
                           malloc|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|\
                           memalign|valloc|pvalloc|operator new.*|_Zn[wa].*";

/// Where encoded bytes go: a `Buf`, or a small message being built on the stack.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Buf {
    fn put(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }
}

/// A nested message, built before its length prefix is written. Big enough for a sample of
/// 64 frames (at most 10 bytes a varint).
struct Scratch {
    bytes: [u8; 1024],
    len: usize,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            bytes: [0; 1024],
            len: 0,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Sink for Scratch {
    fn put(&mut self, bytes: &[u8]) {
        // Every message written here is bounded well below the capacity (see above).
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

fn varint(s: &mut impl Sink, mut v: u64) {
    let mut bytes = [0u8; 10];
    let mut n = 0;
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            bytes[n] = low;
            n += 1;
            break;
        }
        bytes[n] = low | 0x80;
        n += 1;
    }
    s.put(&bytes[..n]);
}

/// A varint field (proto3: zero is the default and is left out).
fn uint(s: &mut impl Sink, field: u64, v: u64) {
    if v != 0 {
        varint(s, field << 3);
        varint(s, v);
    }
}

/// A length-delimited field: bytes, a string, a nested message or a packed list.
fn bytes(s: &mut impl Sink, field: u64, data: &[u8]) {
    varint(s, field << 3 | 2);
    varint(s, data.len() as u64);
    s.put(data);
}

/// The string table (field 6), written at the end; indices in order of first use.
struct Strings {
    buf: Buf,
    count: u64,
}

impl Strings {
    fn add(&mut self, s: &[u8]) -> u64 {
        bytes(&mut self.buf, 6, s);
        self.count += 1;
        self.count - 1
    }
}

/// A map from non-zero `u64` keys to ids, open addressing in a mapped table.
struct Ids {
    table: Buf,
    mask: usize,
}

impl Ids {
    fn with_room_for(n: usize) -> Ids {
        let slots = (2 * n).next_power_of_two().max(16);
        Ids {
            table: Buf::zeroed(16 * slots),
            mask: slots - 1,
        }
    }

    /// The id of `key`, or `None` and a slot to give it one with `insert`.
    fn get(&mut self, key: u64) -> Result<u64, usize> {
        let mut slot = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) as usize & self.mask;
        let table = self.table.as_slice();
        loop {
            let entry = &table[16 * slot..16 * slot + 16];
            let k = u64::from_le_bytes(entry[..8].try_into().unwrap());
            if k == 0 {
                return Err(slot);
            }
            if k == key {
                return Ok(u64::from_le_bytes(entry[8..].try_into().unwrap()));
            }
            slot = (slot + 1) & self.mask;
        }
    }

    fn insert(&mut self, slot: usize, key: u64, id: u64) {
        let entry = &mut self.table.as_mut_slice()[16 * slot..16 * slot + 16];
        entry[..8].copy_from_slice(&key.to_le_bytes());
        entry[8..].copy_from_slice(&id.to_le_bytes());
    }
}

fn hex(data: &[u8], out: &mut [u8; 128]) -> usize {
    let digits = b"0123456789abcdef";
    let n = data.len().min(64);
    for (i, &b) in data[..n].iter().enumerate() {
        out[2 * i] = digits[usize::from(b >> 4)];
        out[2 * i + 1] = digits[usize::from(b & 15)];
    }
    2 * n
}

/// The estimate in whole objects (rounded).
fn objects(fixed: u64) -> u64 {
    (fixed + ONE / 2) / ONE
}

/// The profile of `buckets`, sampled at `interval` bytes, uncompressed; `None` if memory for
/// it could not be mapped.
pub(crate) fn encode(buckets: &[Bucket], interval: u64) -> Option<Buf> {
    let mut out = Buf::new();
    let mut strings = Strings {
        buf: Buf::new(),
        count: 0,
    };
    strings.add(b"");
    let mut inuse_space = 0;
    for (kind, unit) in [
        (&b"alloc_objects"[..], &b"count"[..]),
        (b"alloc_space", b"bytes"),
        (b"inuse_objects", b"count"),
        (b"inuse_space", b"bytes"),
    ] {
        let mut value_type = Scratch::new();
        let kind = strings.add(kind);
        uint(&mut value_type, 1, kind);
        uint(&mut value_type, 2, strings.add(unit));
        bytes(&mut out, 1, value_type.as_slice());
        inuse_space = kind;
    }
    let mut period_type = Scratch::new();
    uint(&mut period_type, 1, strings.add(b"space"));
    uint(&mut period_type, 2, strings.add(b"bytes"));
    bytes(&mut out, 11, period_type.as_slice());
    uint(&mut out, 12, interval);
    uint(&mut out, 14, inuse_space);
    uint(&mut out, 7, strings.add(DROP_FRAMES.as_bytes()));
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    uint(
        &mut out,
        9,
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64,
    );

    // Mappings, kept as (start, end, id) for the locations' lookups.
    let maps_text = maps::read_maps();
    let mut ranges = Buf::new();
    let mut mapping_id = 0u64;
    maps::for_each_mapping(maps_text.as_slice(), |m| {
        mapping_id += 1;
        let mut mapping = Scratch::new();
        uint(&mut mapping, 1, mapping_id);
        uint(&mut mapping, 2, m.start);
        uint(&mut mapping, 3, m.end);
        uint(&mut mapping, 4, m.offset);
        uint(&mut mapping, 5, strings.add(m.path));
        if !m.build_id.is_empty() {
            let mut text = [0u8; 128];
            let n = hex(m.build_id, &mut text);
            uint(&mut mapping, 6, strings.add(&text[..n]));
        }
        bytes(&mut out, 3, mapping.as_slice());
        for v in [m.start, m.end, mapping_id] {
            ranges.push(&v.to_le_bytes());
        }
    });
    let ranges = ranges.as_slice();
    let mapping_of = |addr: u64| {
        ranges.chunks_exact(24).find_map(|r| {
            let field = |i: usize| u64::from_le_bytes(r[8 * i..8 * i + 8].try_into().unwrap());
            (field(0) <= addr && addr < field(1)).then(|| field(2))
        })
    };

    let frames: usize = buckets.iter().map(|b| b.depth as usize).sum();
    let mut locations = Ids::with_room_for(frames);
    let mut functions = Ids::with_room_for(frames);
    if !locations.table.ok() || !functions.table.ok() {
        return None;
    }
    let (mut next_location, mut next_function) = (0u64, 0u64);
    for bucket in buckets.iter().filter(|b| b.alloc_objects != 0) {
        let mut ids = Scratch::new();
        for &frame in &bucket.frames[..bucket.depth as usize] {
            let address = frame as u64;
            let id = match locations.get(address) {
                Ok(id) => id,
                Err(slot) => {
                    next_location += 1;
                    locations.insert(slot, address, next_location);
                    let function = function_of(
                        address,
                        &mut functions,
                        &mut next_function,
                        &mut strings,
                        &mut out,
                    );
                    let mut location = Scratch::new();
                    uint(&mut location, 1, next_location);
                    uint(&mut location, 2, mapping_of(address).unwrap_or(0));
                    uint(&mut location, 3, address);
                    if function != 0 {
                        let mut line = Scratch::new();
                        uint(&mut line, 1, function);
                        bytes(&mut location, 4, line.as_slice());
                    }
                    bytes(&mut out, 4, location.as_slice());
                    next_location
                }
            };
            varint(&mut ids, id);
        }
        let mut values = Scratch::new();
        for v in [
            objects(bucket.alloc_objects),
            bucket.alloc_bytes,
            objects(bucket.inuse_objects),
            bucket.inuse_bytes,
        ] {
            varint(&mut values, v);
        }
        let mut sample = Scratch::new();
        bytes(&mut sample, 1, ids.as_slice());
        bytes(&mut sample, 2, values.as_slice());
        bytes(&mut out, 2, sample.as_slice());
    }
    out.push(strings.buf.as_slice());
    let ok = out.ok() && strings.buf.ok() && locations.table.ok() && functions.table.ok();
    ok.then_some(out)
}

/// The function id of the symbol `dladdr` finds for `address` (writing the function the
/// first time), or 0 if it finds none.
fn function_of(
    address: u64,
    functions: &mut Ids,
    next_function: &mut u64,
    strings: &mut Strings,
    out: &mut Buf,
) -> u64 {
    // SAFETY: an all-zero `Dl_info` is a valid out-value; `dladdr` only reads the address.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::dladdr(address as *const libc::c_void, &mut info) } == 0
        || info.dli_sname.is_null()
    {
        return 0;
    }
    let key = info.dli_sname as u64;
    match functions.get(key) {
        Ok(id) => id,
        Err(slot) => {
            *next_function += 1;
            functions.insert(slot, key, *next_function);
            // SAFETY: `dladdr` gave a NUL-terminated name in the object's string table.
            let name = unsafe { core::ffi::CStr::from_ptr(info.dli_sname) }.to_bytes();
            let name = strings.add(name);
            let mut function = Scratch::new();
            uint(&mut function, 1, *next_function);
            uint(&mut function, 2, name);
            uint(&mut function, 3, name);
            bytes(out, 5, function.as_slice());
            *next_function
        }
    }
}
