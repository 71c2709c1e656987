//! gzip (RFC 1952) around one deflate block (RFC 1951) with the fixed Huffman codes and a
//! greedy LZ77 match finder: about what `gzip -1` gets on a profile's repetitive varints,
//! in a few dozen lines and no allocation (the output and the match table are `Buf`s).
//!
//! Layer: `profile`; calls `profile::buffer`.

use super::buffer::Buf;

/// The gzip form of `data`.
pub(crate) fn compress(data: &[u8]) -> Buf {
    let mut out = Buf::new();
    // Magic, deflate, no flags, no time, no extra flags, Unix.
    out.push(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    let mut bits = Bits {
        out: &mut out,
        acc: 0,
        count: 0,
    };
    bits.put(1, 1); // the final block
    bits.put(1, 2); // fixed Huffman codes
    deflate(data, &mut bits);
    put_symbol(&mut bits, 256); // end of block
    bits.flush();
    out.push(&crc32(data).to_le_bytes());
    out.push(&(data.len() as u32).to_le_bytes());
    out
}

/// Bits, least significant first, as deflate packs them.
struct Bits<'a> {
    out: &'a mut Buf,
    acc: u64,
    count: u32,
}

impl Bits<'_> {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.count;
        self.count += count;
        while self.count >= 8 {
            self.out.push_byte(self.acc as u8);
            self.acc >>= 8;
            self.count -= 8;
        }
    }

    /// A Huffman code, which deflate stores most significant bit first.
    fn put_code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    fn flush(&mut self) {
        if self.count > 0 {
            self.out.push_byte(self.acc as u8);
        }
        self.acc = 0;
        self.count = 0;
    }
}

/// A literal/length symbol in the fixed code.
fn put_symbol(bits: &mut Bits<'_>, symbol: u32) {
    match symbol {
        0..=143 => bits.put_code(0x30 + symbol, 8),
        144..=255 => bits.put_code(0x190 + symbol - 144, 9),
        256..=279 => bits.put_code(symbol - 256, 7),
        _ => bits.put_code(0xc0 + symbol - 280, 8),
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// A back-reference: `len` bytes (3..=258) from `distance` bytes back (1..=32768).
fn put_match(bits: &mut Bits<'_>, len: usize, distance: usize) {
    let l = LENGTH_BASE
        .iter()
        .rposition(|&base| usize::from(base) <= len)
        .unwrap_or(0);
    put_symbol(bits, 257 + l as u32);
    bits.put(
        (len - usize::from(LENGTH_BASE[l])) as u32,
        u32::from(LENGTH_EXTRA[l]),
    );
    let d = DISTANCE_BASE
        .iter()
        .rposition(|&base| usize::from(base) <= distance)
        .unwrap_or(0);
    bits.put_code(d as u32, 5);
    bits.put(
        (distance - usize::from(DISTANCE_BASE[d])) as u32,
        u32::from(DISTANCE_EXTRA[d]),
    );
}

const WINDOW: usize = 32 << 10;
const MAX_MATCH: usize = 258;
const HASH_BITS: u32 = 15;

fn hash3(data: &[u8], i: usize) -> usize {
    let v = u32::from(data[i]) | u32::from(data[i + 1]) << 8 | u32::from(data[i + 2]) << 16;
    (v.wrapping_mul(0x9e37_79b1) >> (32 - HASH_BITS)) as usize
}

fn deflate(data: &[u8], bits: &mut Bits<'_>) {
    // The last position (+1) each 3-byte hash was seen at; 0 for never.
    let mut heads = Buf::zeroed(4 << HASH_BITS);
    if !heads.ok() {
        for &byte in data {
            put_symbol(bits, u32::from(byte));
        }
        return;
    }
    let table = heads.as_mut_slice();
    let mut head = |h: usize, now: usize| -> usize {
        let slot = &mut table[4 * h..4 * h + 4];
        let before = u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]) as usize;
        slot.copy_from_slice(&(now as u32 + 1).to_le_bytes());
        before
    };
    let mut i = 0;
    while i < data.len() {
        if i + 3 <= data.len() {
            let candidate = head(hash3(data, i), i);
            if candidate != 0 && i - (candidate - 1) <= WINDOW {
                let from = candidate - 1;
                let limit = MAX_MATCH.min(data.len() - i);
                let len = (0..limit)
                    .take_while(|&k| data[from + k] == data[i + k])
                    .count();
                if len >= 3 {
                    put_match(bits, len, i - from);
                    for k in i + 1..(i + len).min(data.len().saturating_sub(2)) {
                        head(hash3(data, k), k);
                    }
                    i += len;
                    continue;
                }
            }
        }
        put_symbol(bits, u32::from(data[i]));
        i += 1;
    }
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// The CRC-32 gzip's trailer carries (IEEE 802.3, reflected).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::vec::Vec;

    fn round_trip(data: &[u8]) -> usize {
        let gz = compress(data);
        assert!(gz.ok());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut back)
            .expect("a valid gzip stream");
        assert_eq!(back, data);
        gz.len()
    }

    #[test]
    fn decompresses_to_the_original() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        round_trip(b"");
        round_trip(b"a");
        round_trip(b"abcabcabcabcabcabcabc");
        let mut x = 1u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        round_trip(&noise);
        // Repetitive data (like a profile's varints) shrinks.
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 1000).to_le_bytes())
            .collect();
        let size = round_trip(&text);
        assert!(size < text.len() / 4, "{size} of {}", text.len());
    }
}
