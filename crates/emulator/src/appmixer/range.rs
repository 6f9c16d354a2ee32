//! `Range` as Hapi answers it for a response of known length (`@hapi/ammo` parses the header,
//! Hapi's transmit applies it). This differs from the other emulators' servers on purpose:
//! - a header that does not parse (`items=0-1`, `bytes=5-2`, a start past the end, `bytes=-0`)
//!   is 416 with `Content-Range: bytes */size`, where S3 or Go would serve the whole body;
//! - ranges are merged when they overlap or touch; if more than one remains, the whole body is
//!   served with 200 (Hapi ignores multi-range requests);
//! - an empty body ignores Range.

use std::ops::Range;

/// What a Range header asks of a body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ranged {
    /// Serve everything with 200.
    Whole,
    /// Serve these bytes with 206.
    Part(Range<u64>),
    /// Answer 416.
    Unsatisfiable,
}

/// Reads `header` for a body of `size` bytes.
pub(super) fn parse(header: &str, size: u64) -> Ranged {
    if size == 0 {
        return Ranged::Whole;
    }
    let Some(list) = header
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("bytes="))
        .map(|_| &header[6..])
    else {
        return Ranged::Unsatisfiable;
    };
    let list = list.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    let mut ranges = Vec::new();
    for item in list.split(',').map(str::trim) {
        match one(item, size) {
            Some(range) => ranges.push(range),
            None => return Ranged::Unsatisfiable,
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    match &merged[..] {
        [only] => Ranged::Part(only.clone()),
        _ => Ranged::Whole,
    }
}

/// One `a-b`, `a-` or `-n` as `start..end`; `None` when malformed or unsatisfiable.
fn one(item: &str, size: u64) -> Option<Range<u64>> {
    let (first, last) = item.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (start, end) = match (first, last) {
        ("", suffix) if digits(suffix) => (size.saturating_sub(suffix.parse().ok()?), size),
        (from, "") if digits(from) => (from.parse().ok()?, size),
        (from, to) if digits(from) && digits(to) => {
            let to: u64 = to.parse().ok()?;
            (from.parse().ok()?, to.saturating_add(1).min(size))
        }
        _ => return None,
    };
    (start < end).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_like_hapi() {
        assert_eq!(parse("bytes=0-4", 10), Ranged::Part(0..5));
        assert_eq!(parse("BYTES=5-", 10), Ranged::Part(5..10));
        assert_eq!(parse("bytes=-3", 10), Ranged::Part(7..10));
        assert_eq!(parse("bytes=-30", 10), Ranged::Part(0..10));
        assert_eq!(parse("bytes=8-100", 10), Ranged::Part(8..10));
        assert_eq!(parse("bytes=0-1, 2-3", 10), Ranged::Part(0..4));
        assert_eq!(parse("bytes=0-1,5-6", 10), Ranged::Whole);
        assert_eq!(parse("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(parse("bytes=5-2", 10), Ranged::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(parse("items=0-1", 10), Ranged::Unsatisfiable);
        assert_eq!(parse("bytes=0-1,,2-3", 10), Ranged::Unsatisfiable);
        assert_eq!(parse("bytes=0-4", 0), Ranged::Whole);
    }
}
