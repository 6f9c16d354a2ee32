//! The Mix-shaped hostile server: sessions with bad titles and duplicate ids, and one session
//! per kind of bad answer (listings that are not JSON, absurd sizes, lying reads).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::fs::{FsConfig, SessionFs};
use sessionfs::remote::RemoteConfig;
use sessionfs::remote::http::RetryConfig;

use super::{
    CONTENT, LIED_SIZE, bad_names, check_names, fails_with_eio, html, run, runtime, serve,
    stored_bytes, works,
};
use crate::harness::mount;

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
        "names" => std::iter::once(ok(CONTENT.len() as u64))
            .chain(
                bad_names()
                    .iter()
                    .enumerate()
                    .map(|(i, name)| file(name, json!(1 + i), json!(0))),
            )
            .collect(),
        "html" => return html(),
        "truncated" => return r#"[{"name":"ok.txt","size":1"#.into_response(),
        "negative" => json!([file("neg.txt", json!(-5), json!(0))]),
        "absurd" => json!([
            file("huge.bin", json!(u64::MAX), json!(i64::MAX)),
            file("far.bin", json!(1u64 << 62), json!(-1)),
        ]),
        "ranges" | "short" => json!([file("data.bin", json!(LIED_SIZE), json!(0))]),
        _ => json!([ok(CONTENT.len() as u64)]),
    };
    axum::Json(listing).into_response()
}

async fn content(UrlPath((id, _name)): UrlPath<(String, String)>, headers: HeaderMap) -> Response {
    stored_bytes(&id, &headers)
}

fn router() -> Router {
    Router::new()
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}/files", get(files))
        .route("/api/sessions/{id}/files/{name}", get(content))
}

#[test]
fn hostile_answers_get_clear_errors_and_the_mount_stays_alive() {
    let _ = env_logger::builder().is_test(true).try_init();
    let runtime = runtime();
    let endpoint = serve(&runtime, |_| router());

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
    let session = mount(&fs, &runtime, mnt.path(), false);
    let m = |rest: &str| format!("'{}/{rest}'", mnt.path().display());

    // The root lists every session it can show, under names a directory can have.
    works(&format!("ls -a {}", m("")));
    check_names(mnt.path());

    // Bad object names are skipped or encoded; the good one reads back.
    works(&format!("ls -a {}", m("names")));
    check_names(&mnt.path().join("names"));
    assert_eq!(works(&format!("cat {}", m("names/ok.txt"))).stdout, CONTENT);

    // Bodies that are not the JSON asked for: EIO.
    for dir in ["html", "truncated", "negative"] {
        fails_with_eio(&format!("ls {}", m(dir)));
    }

    // Absurd sizes and times: a size no file can have is left out, the rest listed; a 200
    // whose Content-Range is not the whole body is refused.
    let absurd = works(&format!("ls -l {}", m("absurd")));
    let listed = String::from_utf8_lossy(&absurd.stdout);
    assert!(
        !listed.contains("huge.bin") && listed.contains("far.bin"),
        "{listed}"
    );
    fails_with_eio(&format!("head -c 64 {}", m("absurd/far.bin")));

    // A 206 of other bytes than asked, and a body shorter than its Content-Length: EIO.
    for name in ["ranges/data.bin", "short/data.bin"] {
        fails_with_eio(&format!("cat {}", m(name)));
    }

    // The mount is alive and answers as before.
    let again = run(&format!("cat {}", m("names/ok.txt")));
    assert_eq!(again.stdout, CONTENT, "{again:?}");
    session.unmount().unwrap();
}
