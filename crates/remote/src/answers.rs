//! Checks of what a server answered before its bytes are trusted: a read's `Content-Range`
//! must describe the bytes that were asked for, or they would be cached at the wrong offset.

use std::ops::Range;

use reqwest::header::CONTENT_RANGE;
use reqwest::{Response, StatusCode};

use super::{RemoteError, RemoteResult};

/// The first byte of a `bytes START-END/TOTAL` value.
fn range_start(value: &str) -> Option<u64> {
    let (start, _) = value.strip_prefix("bytes ")?.split_once('-')?;
    start.trim().parse().ok()
}

/// Refuses a ranged read's answer whose bytes are not the ones asked for: a 206 must say with
/// `Content-Range` that it starts at `range.start`; a 200 (the whole body) that carries a
/// `Content-Range` with a start must say it starts at 0. A refusal is a protocol error (EIO),
/// not retried.
pub fn check_content_range(
    what: &str,
    response: &Response,
    range: &Range<u64>,
) -> RemoteResult<()> {
    let status = response.status();
    let header = (response.headers().get(CONTENT_RANGE)).map(|v| v.to_str().unwrap_or("?"));
    let start = header.and_then(range_start);
    let expected = match status {
        StatusCode::PARTIAL_CONTENT => range.start,
        // A whole body is refused only when it says it starts elsewhere.
        StatusCode::OK if start.is_none_or(|start| start == 0) => return Ok(()),
        StatusCode::OK => 0,
        _ => return Ok(()),
    };
    if start == Some(expected) {
        return Ok(());
    }
    Err(RemoteError::protocol(format!(
        "{what}: the server answered {} with Content-Range {} for bytes from {expected}; its \
         bytes were not used",
        status.as_u16(),
        header.unwrap_or("(none)")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, range: Option<&str>) -> Response {
        let mut builder = axum::http::Response::builder().status(status);
        if let Some(range) = range {
            builder = builder.header("Content-Range", range);
        }
        Response::from(builder.body(Vec::<u8>::new()).unwrap())
    }

    #[test]
    fn only_the_bytes_asked_for_pass() {
        let asked = 100..200;
        let check = |status, header| check_content_range("read", &response(status, header), &asked);
        assert!(check(206, Some("bytes 100-199/1000")).is_ok());
        assert!(check(200, None).is_ok());
        assert!(check(200, Some("bytes 0-999/1000")).is_ok());
        assert!(check(206, Some("bytes 107-206/1000")).is_err());
        assert!(check(206, None).is_err());
        assert!(check(206, Some("garbage")).is_err());
        assert!(check(200, Some("bytes */1000")).is_ok());
        assert!(check(200, Some("bytes 99-114/115")).is_err());
    }
}
