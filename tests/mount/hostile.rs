//! A hostile server: a small Mix-shaped API in the test that answers with bad names, duplicate
//! ids, absurd sizes and times, HTML, truncated or malformed JSON, wrong Content-Ranges and
//! short bodies. Through a real mount, `ls` and `cat` of what it serves either work or fail
//! with a clear errno (EIO), never hang or panic, and the mount keeps answering afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::fs::{FsConfig, SessionFs};
use sessionfs::remote::RemoteConfig;
use sessionfs::remote::http::RetryConfig;

use crate::harness::{mount, sh_output};

/// Bytes of every file the server serves, whatever its listing claims.
const CONTENT: &[u8] = b"0123456789abcdef";

fn session(id: &str, title: &str) -> Value {
    json!({"id": id, "title": title, "createdAt": "2026-01-01T00:00:00Z"})
}

fn file(name: &str, size: Value, modified: Value) -> Value {
    json!({"name": name, "size": size, "modified": modified, "isDir": false})
}

async fn sessions() -> Response {
    axum::Json(json!([
        session("names", "names"),
        session("dup", "dup"),
        session("dup", "dup again"),
        session("slash", "a/b"),
        session("dots", ".."),
        session("nul", "nul\u{0}title"),
        session("html", "html"),
        session("truncated", "truncated"),
        session("negative", "negative"),
        session("absurd", "absurd"),
        session("ranges", "ranges"),
        session("short", "short"),
    ]))
    .into_response()
}

async fn files(UrlPath(id): UrlPath<String>) -> Response {
    let ok = |size: u64| file("ok.txt", json!(size), json!(1_700_000_000));
    let listing = match id.as_str() {
        "names" => json!([
            ok(CONTENT.len() as u64),
            file("nul\u{0}name", json!(1), json!(0)),
            file("a/b", json!(1), json!(0)),
            file("..", json!(1), json!(0)),
            file(".", json!(1), json!(0)),
            file("", json!(1), json!(0)),
            file("new\nline", json!(1), json!(0)),
            file(&"x".repeat(300), json!(1), json!(0)),
            file("twice.txt", json!(1), json!(0)),
            file("twice.txt", json!(2), json!(0)),
        ]),
        "html" => {
            return (
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response();
        }
        "truncated" => return r#"[{"name":"ok.txt","size":1"#.into_response(),
        "negative" => json!([file("neg.txt", json!(-5), json!(0))]),
        "absurd" => json!([
            file("huge.bin", json!(u64::MAX), json!(i64::MAX)),
            file("far.bin", json!(1u64 << 62), json!(-1)),
        ]),
        "ranges" | "short" => json!([file("data.bin", json!(4 << 20), json!(0))]),
        _ => json!([ok(CONTENT.len() as u64)]),
    };
    axum::Json(listing).into_response()
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

async fn content(UrlPath((id, _name)): UrlPath<(String, String)>, headers: HeaderMap) -> Response {
    let start = range_start(&headers);
    match id.as_str() {
        // A 206 for other bytes than asked.
        "ranges" => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", start + 7, start + 7 + 15, 4 << 20),
            )
            .body(Body::from(CONTENT))
            .unwrap(),
        // A body that ends before its Content-Length.
        "short" => {
            let stream = futures::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::from_static(CONTENT),
            )]);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, (4u64 << 20).to_string())
                .body(Body::from_stream(stream))
                .unwrap()
        }
        // Whatever a listing claimed, the same few bytes (with a 200 whose Content-Range is
        // wrong for files said to be huge).
        "absurd" => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_RANGE, "bytes 99-114/115")
            .body(Body::from(CONTENT))
            .unwrap(),
        _ => CONTENT.into_response(),
    }
}

fn router() -> Router {
    Router::new()
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}/files", get(files))
        .route("/api/sessions/{id}/files/{name}", get(content))
}

/// Runs `command` under a time limit (a hang fails the test instead of stalling it).
fn run(command: &str) -> std::process::Output {
    sh_output(&format!("timeout 60 {command}"))
}

fn errno_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn hostile_answers_get_clear_errors_and_the_mount_stays_alive() {
    let _ = env_logger::builder().is_test(true).try_init();
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, router()).await });

    let mut config = RemoteConfig::new(&endpoint, None);
    config.retry = RetryConfig {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryConfig::default()
    };
    let remote = Backend::Mix.connect(&config).unwrap();
    let staging = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let fs = Arc::new(SessionFs::new(remote, FsConfig::new(staging.path())).unwrap());
    let session = mount(&fs, &runtime, Backend::Mix, mnt.path(), false);
    let m = |rest: &str| format!("'{}/{rest}'", mnt.path().display());

    // The root lists every session it can show, under names a directory can have.
    let root = run(&format!("ls -a {}", m("")));
    assert!(root.status.success(), "ls of the root: {}", errno_of(&root));
    check_names(mnt.path());

    // Bad object names are skipped or encoded; the good one reads back.
    let names = run(&format!("ls -a {}", m("names")));
    assert!(names.status.success(), "ls names: {}", errno_of(&names));
    check_names(&mnt.path().join("names"));
    let ok = run(&format!("cat {}", m("names/ok.txt")));
    assert_eq!(ok.stdout, CONTENT, "{}", errno_of(&ok));

    // Bodies that are not the JSON asked for: EIO.
    for dir in ["html", "truncated", "negative"] {
        let out = run(&format!("ls {}", m(dir)));
        assert!(!out.status.success(), "ls {dir} fails");
        assert!(
            errno_of(&out).contains("Input/output error"),
            "ls {dir}: {}",
            errno_of(&out)
        );
    }

    // Absurd sizes and times: a size no file can have is left out, the rest listed; a 200
    // whose Content-Range is not the whole body is refused.
    let absurd = run(&format!("ls -l {}", m("absurd")));
    assert!(absurd.status.success(), "ls absurd: {}", errno_of(&absurd));
    let listed = String::from_utf8_lossy(&absurd.stdout);
    assert!(
        !listed.contains("huge.bin") && listed.contains("far.bin"),
        "{listed}"
    );
    let out = run(&format!("head -c 64 {}", m("absurd/far.bin")));
    assert!(
        !out.status.success() && errno_of(&out).contains("Input/output error"),
        "far.bin: {out:?}"
    );

    // A 206 of other bytes than asked, and a body shorter than its Content-Length: EIO.
    for name in ["ranges/data.bin", "short/data.bin"] {
        let out = run(&format!("cat {}", m(name)));
        assert!(!out.status.success(), "cat {name} fails");
        assert!(
            errno_of(&out).contains("Input/output error"),
            "cat {name}: {}",
            errno_of(&out)
        );
    }

    // The mount is alive and answers as before.
    let again = run(&format!("cat {}", m("names/ok.txt")));
    assert_eq!(again.stdout, CONTENT, "{}", errno_of(&again));
    drop(session);
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
