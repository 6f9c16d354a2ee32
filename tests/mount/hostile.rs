//! Hostile servers: small Mix- and Lightfield-shaped APIs in the test that answer with bad
//! names, duplicate ids, absurd sizes and times, HTML, truncated or malformed JSON, wrong
//! Content-Ranges, short bodies and (Lightfield) download URLs that expire after one use.
//! Through a real mount, `ls` and `cat` of what they serve either work or fail with a clear
//! errno (EIO), never hang or panic, and the mount keeps answering afterwards.
//!
//! This file holds what both servers share: the names no local file can have, the storage
//! answers that lie about their bytes, and the checks of what the mount shows.

mod lightfield;
mod mix;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::harness::sh_output;

/// Bytes of every small file the servers serve, whatever their listing claims.
const CONTENT: &[u8] = b"0123456789abcdef";

/// Size the servers give the files whose reads they answer wrongly.
const LIED_SIZE: u64 = 4 << 20;

/// Names a listing may hold that no local file can have as they are (or that two files
/// share); each must be left out or shown under a substitute, never break the directory.
fn bad_names() -> Vec<String> {
    [
        "nul\u{0}name",
        "a/b",
        "..",
        ".",
        "",
        "new\nline",
        &"x".repeat(300),
        "twice.txt",
        "twice.txt",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The names of [`bad_names`] that must show under a substitute (with one log line each).
fn substituted_names() -> Vec<String> {
    ["nul\u{0}name", "..", ".", "", &"x".repeat(300)]
        .map(str::to_string)
        .to_vec()
}

/// A listing that is not the JSON asked for, as a server behind a broken proxy sends it.
fn html() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html")],
        "<html><body>502 Bad Gateway</body></html>",
    )
        .into_response()
}

/// The first byte a `Range: bytes=START-END` header asks for.
fn range_start(headers: &HeaderMap) -> u64 {
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The bytes a `Range: bytes=START-END` header asks for, cut to `len`.
fn range_of(headers: &HeaderMap, len: u64) -> std::ops::Range<u64> {
    let end = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(len, |last| (last + 1).min(len));
    range_start(headers).min(end)..end
}

/// The storage answer for `kind`: `ranges`, a 206 of other bytes than asked; `short`, a body
/// that ends before its Content-Length; `absurd`, a 200 whose Content-Range is not the whole
/// body; anything else, [`CONTENT`].
fn stored_bytes(kind: &str, headers: &HeaderMap) -> Response {
    let start = range_start(headers);
    match kind {
        "ranges" => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{LIED_SIZE}", start + 7, start + 7 + 15),
            )
            .body(Body::from(CONTENT))
            .unwrap(),
        "short" => {
            let stream = futures::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::from_static(CONTENT),
            )]);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, LIED_SIZE.to_string())
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "absurd" => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_RANGE, "bytes 99-114/115")
            .body(Body::from(CONTENT))
            .unwrap(),
        _ => CONTENT.into_response(),
    }
}

/// A multi-threaded runtime for a server (and an in-process mount).
fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    )
}

/// Serves the router `make` builds for its own endpoint on 127.0.0.1; returns the endpoint.
fn serve(runtime: &tokio::runtime::Runtime, make: impl FnOnce(&str) -> Router) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let router = make(&endpoint);
    runtime.spawn(async move { axum::serve(listener, router).await });
    endpoint
}

/// Runs `command` under a time limit (a hang fails the test instead of stalling it).
fn run(command: &str) -> Output {
    sh_output(&format!("timeout 60 {command}"))
}

fn errno_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `command` fails with EIO.
fn fails_with_eio(command: &str) {
    let out = run(command);
    assert!(
        !out.status.success() && errno_of(&out).contains("Input/output error"),
        "`{command}` fails with EIO: {out:?}"
    );
}

/// `command` succeeds; its output.
fn works(command: &str) -> Output {
    let out = run(command);
    assert!(out.status.success(), "`{command}`: {}", errno_of(&out));
    out
}

/// Every entry of `dir` is a name a directory may hold.
fn check_names(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        let bytes = name.as_encoded_bytes();
        assert!(
            !bytes.is_empty()
                && bytes.len() <= 255
                && !bytes.contains(&0)
                && !bytes.contains(&b'/')
                && name != "."
                && name != "..",
            "bad name {name:?} in {}",
            dir.display()
        );
    }
}
