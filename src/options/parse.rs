//! Parsing option values: pure functions of the bytes, so every spelling is unit-tested.
//!
//! Layer: `options`; calls nothing in the crate.

/// The kinds of value an option takes, each with one accepted spelling.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// `0` (off) or `1` (on). Nothing else (`yes`, `true`, the empty string) is accepted:
    /// one spelling leaves no doubt about what a value means.
    Flag,
    /// A whole number of milliseconds: decimal digits only, at most 18 of them.
    Millis,
    /// The huge-page policy: `0` (off), `1` (on) or `2` (always advise).
    Thp,
    /// A whole number of bytes, at least 1: decimal digits only, at most 18 of them.
    Bytes,
    /// A file path: any non-empty value (the table keeps 1 for "set"; the getter reads the
    /// path itself from the environment).
    Path,
}

impl Kind {
    /// What a value of this kind looks like (the end of the "ignoring" warning).
    pub(crate) const fn expected(self) -> &'static str {
        match self {
            Kind::Flag => "expected 0 or 1",
            Kind::Millis => "expected milliseconds, a whole number",
            Kind::Thp => "expected 0 (off), 1 (on) or 2 (always)",
            Kind::Bytes => "expected bytes, a whole number from 1",
            Kind::Path => "expected a file path",
        }
    }
}

/// The value `bytes` spells for an option of `kind`, or `None` if it is not a valid one.
pub(crate) fn parse(kind: Kind, bytes: &[u8]) -> Option<u64> {
    match kind {
        Kind::Flag => match bytes {
            b"0" => Some(0),
            b"1" => Some(1),
            _ => None,
        },
        Kind::Millis => whole_number(bytes),
        Kind::Bytes => whole_number(bytes).filter(|&n| n >= 1),
        Kind::Path => (!bytes.is_empty()).then_some(1),
        Kind::Thp => match bytes {
            b"0" => Some(0),
            b"1" => Some(1),
            b"2" => Some(2),
            _ => None,
        },
    }
}

/// Decimal digits only, at most 18 of them (which cannot overflow a u64, whose maximum has 20).
fn whole_number(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_whole_numbers_from_1_and_paths_anything_but_empty() {
        assert_eq!(parse(Kind::Bytes, b"524288"), Some(524_288));
        for bad in [&b""[..], b"0", b"1k", b"-5", b" 1"] {
            assert_eq!(parse(Kind::Bytes, bad), None, "{bad:?}");
        }
        assert_eq!(parse(Kind::Path, b"/tmp/heap.%p.pb.gz"), Some(1));
        assert_eq!(parse(Kind::Path, b""), None);
    }

    #[test]
    fn flags_are_0_or_1() {
        assert_eq!(parse(Kind::Flag, b"0"), Some(0));
        assert_eq!(parse(Kind::Flag, b"1"), Some(1));
        for bad in [&b""[..], b"yes", b"true", b"on", b"2", b"01", b" 1", b"1 "] {
            assert_eq!(parse(Kind::Flag, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_huge_page_policy_is_0_1_or_2() {
        for (text, value) in [(&b"0"[..], 0), (b"1", 1), (b"2", 2)] {
            assert_eq!(parse(Kind::Thp, text), Some(value));
        }
        for bad in [&b""[..], b"3", b"on", b"always", b"02", b" 1"] {
            assert_eq!(parse(Kind::Thp, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn millis_are_whole_numbers() {
        assert_eq!(parse(Kind::Millis, b"0"), Some(0));
        assert_eq!(parse(Kind::Millis, b"250"), Some(250));
        assert_eq!(parse(Kind::Millis, b"007"), Some(7));
        assert_eq!(
            parse(Kind::Millis, b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"abc",
            b"-1",
            b"1.5",
            b"100ms",
            b" 100",
            b"1e3",
            b"1000000000000000000", // 19 digits
        ] {
            assert_eq!(parse(Kind::Millis, bad), None, "{bad:?}");
        }
    }
}
