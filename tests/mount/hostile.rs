//! Hostile servers: small Mix-, Lightfield-, Appmixer- and Fluxer-shaped APIs in the test that
//! answer with bad names, duplicate ids, absurd sizes and times, HTML, truncated or malformed
//! JSON, error bodies of the wrong shape, wrong Content-Ranges, short bodies, storms of 500s and
//! 429s, rate-limit headers no clock can hold, and download URLs that expire early. Through a
//! real mount, `ls`, `cat` and `cp` of what they serve either work or fail with a clear errno,
//! never hang or panic, and the mount keeps answering afterwards.
//!
//! This file holds what the servers share: the names no local file can have, the storage
//! answers that lie about their bytes, download URLs that expire when the test says, the mount
//! of the binary with its log, and the checks of what the mount shows and logs.

mod appmixer;
mod fluxer;
mod lightfield;
mod mix;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::harness::{Mounted, q, sessionfs_command, sh_output};

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

/// One listing row per name of [`bad_names`]: `row` makes it from an id (`prefix` and the
/// name's index) and the name.
fn bad_name_rows(prefix: &str, row: impl Fn(&str, &str) -> Value) -> Vec<Value> {
    bad_names()
        .iter()
        .enumerate()
        .map(|(i, name)| row(&format!("{prefix}{i}"), name))
        .collect()
}

/// The number a request's query gives `key`, if it gives one.
fn query_number(query: &[(String, String)], key: &str) -> Option<u64> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
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
    fails_with(command, "Input/output error");
}

/// `command` fails, and its error message is `errno` (`strerror`'s text, as tools print it).
fn fails_with(command: &str, errno: &str) {
    let out = run(command);
    assert!(
        !out.status.success() && errno_of(&out).contains(errno),
        "`{command}` fails with {errno:?}: {out:?}"
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

/// The names in `dir`, as `ls` shows them.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What storage answers for a URL that has expired, as S3 words it.
fn expired() -> Response {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                <Message>Request has expired</Message></Error>";
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

/// An honest 206 of the bytes of `bytes` the Range header asks for.
fn ranged(bytes: &[u8], headers: &HeaderMap) -> Response {
    let range = range_of(headers, bytes.len() as u64);
    let (start, end) = (range.start as usize, range.end as usize);
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", end.max(1) - 1, bytes.len()),
        )
        .body(Body::from(bytes[start..end].to_vec()))
        .unwrap()
}

/// Download URLs (`?token=N`) that claim to live an hour but expire when the test says:
/// every token handed out before [`Expiry::expire_all`] is refused from then on.
#[derive(Clone, Default)]
struct Expiry {
    /// Tokens below this one have expired.
    valid_from: Arc<AtomicU64>,
    next_token: Arc<AtomicU64>,
    /// Tokens handed out for the watched file, and storage GETs refused as expired.
    handed_out: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl Expiry {
    /// A fresh token; `watched` counts it as one for the file whose reads the test checks.
    fn token(&self, watched: bool) -> u64 {
        if watched {
            self.handed_out.fetch_add(1, Ordering::SeqCst);
        }
        self.next_token.fetch_add(1, Ordering::SeqCst)
    }

    /// Every token handed out so far expires.
    fn expire_all(&self) {
        (self.valid_from).store(self.next_token.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Whether the `token` of a storage GET's query is still valid (a refusal is counted).
    fn allows(&self, query: &[(String, String)]) -> bool {
        let token = query_number(query, "token");
        let valid = token.is_some_and(|t| t >= self.valid_from.load(Ordering::SeqCst));
        if !valid {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        valid
    }

    /// A read of `path` (holding `bytes`, several ranged GETs long) after its download URL
    /// expired: the read meets 403 "Request has expired", fetches a fresh URL and gets every
    /// byte, none of them garbage.
    fn check_read_after_expiry(&self, path: &str, bytes: &[u8]) {
        works(&format!("head -c 100 {path}"));
        self.expire_all();
        let read = works(&format!("cat {path}"));
        assert!(read.stdout == bytes, "{path} reads back whole");
        let (urls, refusals) = (
            self.handed_out.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
        );
        eprintln!("{path}: {urls} download URLs, {refusals} refused as expired");
        assert!(refusals >= 1, "the read met an expired URL");
        assert!(
            urls > refusals,
            "each refusal got a fresh URL ({urls} urls)"
        );
    }
}

/// A `sessionfs mount` of a hostile server run as the binary (a panic ends it and fails the
/// test), logging at info into a file the test reads; retries give up after 3 s, so no step
/// waits long.
struct BinaryMount {
    mounted: Mounted,
    home: tempfile::TempDir,
    mnt: tempfile::TempDir,
    log: PathBuf,
    /// The mount's arguments but the log file.
    args: Vec<String>,
}

impl BinaryMount {
    /// Mounts `backend` at `endpoint` with the `extra` arguments and `env` variables.
    fn start(backend: &str, endpoint: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let log = home.path().join("mount.log");
        let args: Vec<String> = [
            "mount",
            mnt.path().to_str().unwrap(),
            "--backend",
            backend,
            "--endpoint",
            endpoint,
            "--retry-deadline",
            "3s",
        ]
        .iter()
        .chain(extra)
        .map(|arg| arg.to_string())
        .collect();
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--log-file", log.to_str().unwrap()]);
        let mut command = sessionfs_command(home.path(), &all);
        command.env("RUST_LOG", "info").envs(env.iter().copied());
        let (mounted, _) = Mounted::start(command, mnt.path());
        Self {
            mounted,
            home,
            mnt,
            log,
            args,
        }
    }

    /// The mount point.
    fn dir(&self) -> &Path {
        self.mnt.path()
    }

    /// `rest` below the mount point, quoted for the shell.
    fn at(&self, rest: &str) -> String {
        q(&self.mnt.path().join(rest))
    }

    /// The log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts (the process must exit with success); the whole log.
    fn unmount(self) -> String {
        self.mounted.unmount();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// One log line per name of [`substituted_names`] and of `also` (names of the server's own,
/// such as a directory's), however many listings showed it, each saying what to do.
fn check_substitutes_logged_once(log: &str, also: &[&str]) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("which a local file name cannot be"))
        .collect();
    let names = substituted_names()
        .into_iter()
        .chain(also.iter().map(|name| name.to_string()));
    let names: Vec<String> = names.collect();
    assert_eq!(lines.len(), names.len(), "{lines:#?}");
    for name in names {
        let quoted = format!("{name:?}");
        assert!(
            lines.iter().any(|line| line.contains(&quoted)),
            "{quoted} logged: {lines:#?}"
        );
    }
    assert!(
        lines.iter().all(|line| line.contains("Rename it")),
        "{lines:#?}"
    );
}

/// What a server's error said reached the log on one line: no line of the log starts with
/// `marker` (a server's text after a newline it sent).
fn check_no_injected_lines(log: &str, marker: &str) {
    assert!(
        log.contains(marker),
        "the server's message is logged:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|line| line.trim_start().starts_with(marker)),
        "a server's newline split a log line:\n{log}"
    );
}
