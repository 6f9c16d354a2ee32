//! Serving a stored file the way Go's `http.ServeContent` does for a GET: Content-Type from the
//! extension or sniffed, `Last-Modified`, `Accept-Ranges: bytes`, `If-Unmodified-Since` → 412,
//! `If-Modified-Since` → 304, `If-Range` by date, one byte range → 206, an unsatisfiable or
//! malformed range → 416. No ETag.
//!
//! Chosen differences: several ranges are answered with the whole file (200) instead of
//! `multipart/byteranges` (allowed by RFC 9110), and a zero-length suffix (`bytes=-0`) is
//! unsatisfiable (Go answers a nonsensical empty 206).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::reply;
use crate::store::Blob;

/// How many leading bytes content sniffing looks at (as Go's `DetectContentType`).
const SNIFF_BYTES: usize = 512;

/// One satisfiable byte range: `start` and `length` in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ByteRange {
    start: u64,
    length: u64,
}

/// Why a Range header was refused.
#[derive(Debug, PartialEq, Eq)]
enum RangeError {
    /// Malformed: Go answers 416 `invalid range` without Content-Range.
    Invalid,
    /// Well-formed but past the end: 416 with `Content-Range: bytes */size`.
    NoOverlap,
}

/// Answers a GET for `blob` (stored under `name`) with `request` headers, ServeContent style.
pub(super) async fn serve(
    blob: Blob,
    name: &str,
    request: &HeaderMap,
    serve_ranges: bool,
) -> std::io::Result<Response> {
    let size = blob.info.size;
    let modified = whole_seconds(blob.info.modified);
    let mut res = Response::new(Body::empty());
    let headers = res.headers_mut();
    if modified > UNIX_EPOCH {
        headers.insert(
            header::LAST_MODIFIED,
            header_value(&httpdate::fmt_http_date(modified)),
        );
    }

    if let Some(status) = failed_precondition(request, modified) {
        *res.status_mut() = status;
        return Ok(res);
    }

    let content_type = match type_by_extension(name) {
        Some(known) => known,
        None => sniff(&blob.read_prefix(SNIFF_BYTES).await?).to_string(),
    };
    let mut range = ByteRange {
        start: 0,
        length: size,
    };
    let mut status = StatusCode::OK;
    if let Some(spec) = request.get(header::RANGE).and_then(|v| v.to_str().ok())
        && serve_ranges
        && if_range_allows(request, modified)
    {
        match parse_range(spec, size) {
            Ok(ranges) if ranges.len() == 1 => {
                range = ranges[0];
                status = StatusCode::PARTIAL_CONTENT;
            }
            Ok(_) => {}
            Err(err) => return Ok(unsatisfiable(err, size)),
        }
    }

    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, header_value(&content_type));
    if serve_ranges {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.length));
    if status == StatusCode::PARTIAL_CONTENT {
        let last = range.start + range.length - 1;
        let value = format!("bytes {}-{last}/{size}", range.start);
        headers.insert(header::CONTENT_RANGE, header_value(&value));
    }
    *res.status_mut() = status;
    *res.body_mut() = Body::from_stream(blob.into_stream(range.start..range.start + range.length));
    Ok(res)
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("dates and ranges are ASCII")
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn header_date(request: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let text = request.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text).ok()
}

/// `If-Unmodified-Since` → 412, then `If-Modified-Since` → 304 (each only without its ETag
/// counterpart, as Go checks them).
fn failed_precondition(request: &HeaderMap, modified: SystemTime) -> Option<StatusCode> {
    if modified <= UNIX_EPOCH {
        return None;
    }
    if !request.contains_key(header::IF_MATCH)
        && header_date(request, header::IF_UNMODIFIED_SINCE).is_some_and(|since| modified > since)
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    if !request.contains_key(header::IF_NONE_MATCH)
        && header_date(request, header::IF_MODIFIED_SINCE).is_some_and(|since| modified <= since)
    {
        return Some(StatusCode::NOT_MODIFIED);
    }
    None
}

/// Without ETags only a date `If-Range` equal to the mtime keeps the Range.
fn if_range_allows(request: &HeaderMap, modified: SystemTime) -> bool {
    match request.get(header::IF_RANGE) {
        None => true,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| httpdate::parse_http_date(text).ok())
            .is_some_and(|date| modified > UNIX_EPOCH && date == modified),
    }
}

fn unsatisfiable(err: RangeError, size: u64) -> Response {
    // Go's serveError drops the caching headers, so only the plain-text error remains.
    let message = match err {
        RangeError::Invalid => "invalid range",
        RangeError::NoOverlap => "invalid range: failed to overlap",
    };
    let mut res = reply::plain(StatusCode::RANGE_NOT_SATISFIABLE, message);
    if err == RangeError::NoOverlap {
        res.headers_mut().insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes */{size}")),
        );
    }
    res
}

/// Go's `parseRange`: `bytes=` then comma-separated `a-b`, `a-` or `-n`. Ranges starting past
/// the end are skipped; if that leaves none it is [`RangeError::NoOverlap`]. If the ranges add
/// up to more than the file, the whole file is served (empty result), as Go does.
fn parse_range(spec: &str, size: u64) -> Result<Vec<ByteRange>, RangeError> {
    let Some(list) = spec.strip_prefix("bytes=") else {
        return Err(RangeError::Invalid);
    };
    let trim = |s: &str| s.trim_matches([' ', '\t', '\r', '\n']).to_owned();
    let mut ranges = Vec::new();
    let mut no_overlap = false;
    for item in list.split(',').map(trim).filter(|item| !item.is_empty()) {
        let (start, end) = item.split_once('-').ok_or(RangeError::Invalid)?;
        let (start, end) = (trim(start), trim(end));
        let number = |s: &str| s.parse::<u64>().map_err(|_| RangeError::Invalid);
        if start.is_empty() {
            let suffix = number(&end)?.min(size);
            if suffix == 0 {
                no_overlap = true;
                continue;
            }
            ranges.push(ByteRange {
                start: size - suffix,
                length: suffix,
            });
            continue;
        }
        let start = number(&start)?;
        if start >= size {
            no_overlap = true;
            continue;
        }
        let length = if end.is_empty() {
            size - start
        } else {
            let end = number(&end)?;
            if start > end {
                return Err(RangeError::Invalid);
            }
            end.min(size - 1) - start + 1
        };
        ranges.push(ByteRange { start, length });
    }
    if no_overlap && ranges.is_empty() {
        return Err(RangeError::NoOverlap);
    }
    if ranges.iter().map(|r| r.length).sum::<u64>() > size {
        return Ok(Vec::new());
    }
    Ok(ranges)
}

/// The type Go's `mime.TypeByExtension` gives: the shared table, with `charset=utf-8` on text.
fn type_by_extension(name: &str) -> Option<String> {
    let essence = sessionfs_io::mime::by_extension(name)?;
    Some(match essence.starts_with("text/") {
        true => format!("{essence}; charset=utf-8"),
        false => essence.to_string(),
    })
}

/// A small subset of Go's `DetectContentType`: a few magic numbers, then "text" when no byte is
/// a binary control character (Go does not check UTF-8 validity), else octet-stream.
fn sniff(prefix: &[u8]) -> &'static str {
    const MAGIC: [(&[u8], &str); 6] = [
        (b"%PDF-", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF8", "image/gif"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b\x08", "application/x-gzip"),
    ];
    if let Some((_, kind)) = MAGIC.iter().find(|(magic, _)| prefix.starts_with(magic)) {
        return kind;
    }
    let binary = |b: &u8| matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f);
    if prefix.iter().any(binary) {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, length: u64) -> ByteRange {
        ByteRange { start, length }
    }

    #[test]
    fn parses_ranges_like_go() {
        assert_eq!(parse_range("bytes=0-4", 10), Ok(vec![r(0, 5)]));
        assert_eq!(parse_range("bytes=5-", 10), Ok(vec![r(5, 5)]));
        assert_eq!(parse_range("bytes=-3", 10), Ok(vec![r(7, 3)]));
        assert_eq!(parse_range("bytes=-30", 10), Ok(vec![r(0, 10)]));
        assert_eq!(parse_range("bytes=8-100", 10), Ok(vec![r(8, 2)]));
        assert_eq!(
            parse_range("bytes= 1-2 , 4-5", 10),
            Ok(vec![r(1, 2), r(4, 2)])
        );
        assert_eq!(
            parse_range("bytes=0-9,0-9", 10),
            Ok(vec![]),
            "more than the file: whole file"
        );
        assert_eq!(parse_range("bytes=", 10), Ok(vec![]));
        assert_eq!(parse_range("bytes=10-", 10), Err(RangeError::NoOverlap));
        assert_eq!(parse_range("bytes=-0", 10), Err(RangeError::NoOverlap));
        assert_eq!(parse_range("bytes=0-", 0), Err(RangeError::NoOverlap));
        assert_eq!(parse_range("bytes=20-,0-1", 10), Ok(vec![r(0, 2)]));
        for bad in [
            "items=0-1",
            "bytes=5",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
            "bytes=--1",
        ] {
            assert_eq!(parse_range(bad, 10), Err(RangeError::Invalid), "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            type_by_extension("a.TXT").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            type_by_extension("a.tar.gz").as_deref(),
            Some("application/gzip")
        );
        assert_eq!(type_by_extension("README"), None);
        assert_eq!(sniff(b""), "text/plain; charset=utf-8");
        assert_eq!(sniff("héllo\n".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), "image/png");
        assert_eq!(sniff(b"\x00\x01\x02"), "application/octet-stream");
    }
}
