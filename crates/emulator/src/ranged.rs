//! Downloads of one stored blob with at most one byte range, as object storage (S3 and the
//! CDNs in front of it) serves them: the Lightfield presigned URLs and Fluxer's attachments.
//!
//! One `bytes=a-b`, `bytes=a-` or `bytes=-n` range gets 206 with `Content-Range`; several
//! ranges or a syntax storage ignores get the whole body with 200; a range that starts past
//! the end (or an empty suffix) is unsatisfiable, and the API's own error body is sent with
//! `Content-Range: bytes */size`. Bodies stream from the store.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::store::Blob;

/// What a `Range` header asks of a body of some size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsked {
    /// Serve the whole body (no range, several ranges, or a syntax storage ignores).
    Whole,
    /// Serve bytes `start..end`.
    Part(u64, u64),
    /// The range starts past the end: 416.
    Unsatisfiable,
}

/// Reads one `Range` header value against a body of `size` bytes.
pub fn parse_single_range(spec: &str, size: u64) -> RangeAsked {
    let Some((first, last)) = spec
        .strip_prefix("bytes=")
        .filter(|list| !list.contains(','))
        .and_then(|one| one.trim().split_once('-'))
    else {
        return RangeAsked::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(suffix)) if suffix > 0 && size > 0 => {
            RangeAsked::Part(size.saturating_sub(suffix), size)
        }
        (true, _, _) => RangeAsked::Unsatisfiable,
        (false, Some(start), _) if start >= size => RangeAsked::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => RangeAsked::Part(start, size),
        (false, Some(start), Some(end)) if end >= start => {
            RangeAsked::Part(start, (end + 1).min(size))
        }
        _ => RangeAsked::Whole,
    }
}

/// Answers a GET of `blob` with its `content_type`, honouring the request's Range when
/// `serve_ranges`; `unsatisfiable` builds the API's error answer for a range past the end.
pub fn blob_response(
    blob: Blob,
    request: &HeaderMap,
    serve_ranges: bool,
    content_type: &str,
    unsatisfiable: impl FnOnce() -> Response,
) -> Response {
    let size = blob.info.size;
    let range = request
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| serve_ranges)
        .map_or(RangeAsked::Whole, |spec| parse_single_range(spec, size));
    let (status, start, end) = match range {
        RangeAsked::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeAsked::Unsatisfiable => {
            let mut res = unsatisfiable();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return res;
        }
        RangeAsked::Whole => (StatusCode::OK, 0, size),
    };
    let mut res = Response::new(Body::from_stream(blob.into_stream(start..end)));
    *res.status_mut() = status;
    let out = res.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        out.insert(header::CONTENT_TYPE, value);
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if serve_ranges {
        out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        out.insert(header::CONTENT_RANGE, value);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_is_served_and_the_rest_means_the_whole_body() {
        use RangeAsked::{Part, Unsatisfiable, Whole};
        assert_eq!(parse_single_range("bytes=0-4", 10), Part(0, 5));
        assert_eq!(parse_single_range("bytes=5-", 10), Part(5, 10));
        assert_eq!(parse_single_range("bytes=-3", 10), Part(7, 10));
        assert_eq!(parse_single_range("bytes=8-100", 10), Part(8, 10));
        assert_eq!(parse_single_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_single_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_single_range("bytes=0-1,4-5", 10), Whole);
        assert_eq!(parse_single_range("items=0-1", 10), Whole);
        assert_eq!(parse_single_range("bytes=5-2", 10), Whole);
    }
}
