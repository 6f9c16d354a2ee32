//! The Lightfield-shaped hostile server: `GET /v1/files` pages of File objects with bad names,
//! duplicate ids, absurd sizes and unparsable times, a listing the test can turn into HTML,
//! truncated JSON, the wrong shape, or a name with bytes that are not UTF-8; `GET /v1/files/{id}/url` that
//! may answer HTML or the wrong JSON; and presigned storage URLs that lie about their bytes or
//! (for `expiring.bin`) expire when the test says, long before the `expiresAt` they were handed
//! out with, answering 403 `AccessDenied` "Request has expired" as S3 does; likewise the upload
//! URL of the first upload session. The mount runs as the binary, so its log can be read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put as put_route};
use axum::{Json, body::Bytes};
use serde_json::{Value, json};

use super::{
    BinaryMount, CONTENT, Expiry, LIED_SIZE, bad_name_rows, check_names,
    check_substitutes_logged_once, expired, fails_with_eio, html, names_in, query_number, ranged,
    runtime, serve, stored_bytes, works,
};
use crate::harness::{pseudo_random, q, user_command};

const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");

/// Size of the file whose download URLs work once: several ranged GETs long.
const EXPIRING_BYTES: usize = 9 << 20;

/// What `GET /v1/files` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listing {
    Good,
    Html,
    Truncated,
    WrongShape,
    /// The same full page at every offset.
    IgnoresOffset,
    NotUtf8,
}

const LISTINGS: [Listing; 6] = [
    Listing::Good,
    Listing::Html,
    Listing::Truncated,
    Listing::WrongShape,
    Listing::IgnoresOffset,
    Listing::NotUtf8,
];

#[derive(Clone)]
struct Server {
    endpoint: String,
    /// Index into [`LISTINGS`], set by the test.
    listing: Arc<AtomicUsize>,
    expiring: Arc<Vec<u8>>,
    /// The download URLs of every file; those of `expiring.bin` are counted.
    expiry: Expiry,
    /// Upload sessions in creation order: filename, status, the bytes PUT.
    uploads: Arc<Mutex<Vec<Upload>>>,
}

#[derive(Clone, Debug)]
struct Upload {
    filename: String,
    size: u64,
    status: &'static str,
    bytes: Option<Vec<u8>>,
}

fn row(id: &str, name: &str, size: Value) -> Value {
    json!({
        "id": id, "object": "file", "status": "COMPLETED", "filename": name,
        "mimeType": "application/octet-stream", "sizeBytes": size,
        "createdAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:01Z",
    })
}

fn rows(expiring: usize) -> Vec<Value> {
    let small = json!(CONTENT.len());
    let mut rows = bad_name_rows("fil_name", |id, name| row(id, name, small.clone()));
    rows.extend([
        row("fil_ok", "ok.txt", small.clone()),
        // The same id twice: the first row counts.
        row("fil_dup", "dup-first.txt", small.clone()),
        row("fil_dup", "dup-second.txt", small.clone()),
        // Times no parser takes: the file is still listed.
        json!({
            "id": "fil_times", "status": "COMPLETED", "filename": "times.txt",
            "mimeType": "text/plain", "sizeBytes": CONTENT.len(),
            "createdAt": "yesterday", "completedAt": "17",
        }),
        // Not COMPLETED: not listed.
        json!({
            "id": "fil_pending", "status": "PENDING", "filename": "pending.txt",
            "mimeType": "text/plain", "sizeBytes": 1, "createdAt": "2026-01-01T00:00:00Z",
            "completedAt": null,
        }),
        row("fil_huge", "huge.bin", json!(u64::MAX)),
        row("fil_absurd", "far.bin", json!(1u64 << 62)),
        row("fil_ranges", "ranges.bin", json!(LIED_SIZE)),
        row("fil_short", "short.bin", json!(LIED_SIZE)),
        row("fil_htmlurl", "html-url.txt", small.clone()),
        row("fil_badurl", "bad-url.txt", small.clone()),
        row("fil_expiring", "expiring.bin", json!(expiring)),
    ]);
    rows
}

async fn list(
    State(server): State<Server>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let param = |key: &str| query_number(&query, key).map(|n| n as usize);
    let (offset, limit) = (param("offset").unwrap_or(0), param("limit").unwrap_or(25));
    let page: Vec<Value> = rows(server.expiring.len())
        .into_iter()
        .skip(offset)
        .take(limit)
        .collect();
    match LISTINGS[server.listing.load(Ordering::SeqCst)] {
        Listing::Good => axum::Json(json!({ "object": "list", "data": page })).into_response(),
        Listing::Html => html(),
        Listing::Truncated => r#"{"object":"list","data":[{"id":"fil_ok","#.into_response(),
        Listing::WrongShape => axum::Json(json!({ "data": { "id": "fil_ok" } })).into_response(),
        Listing::IgnoresOffset => {
            let same: Vec<Value> = rows(server.expiring.len())
                .into_iter()
                .cycle()
                .take(limit)
                .collect();
            axum::Json(json!({ "object": "list", "data": same })).into_response()
        }
        Listing::NotUtf8 => {
            // The good page and a name with two bytes that are not UTF-8.
            let mut page = page;
            if offset == 0 {
                page.push(row("fil_notutf8", "bad-MARK.txt", json!(CONTENT.len())));
            }
            let text = serde_json::to_string(&json!({ "object": "list", "data": page })).unwrap();
            let (before, after) = text.split_once("MARK").unwrap();
            let body = [before.as_bytes(), &[0xff, 0xfe], after.as_bytes()].concat();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

async fn url(State(server): State<Server>, UrlPath(id): UrlPath<String>) -> Response {
    match id.as_str() {
        "fil_htmlurl" => return html(),
        "fil_badurl" => return axum::Json(json!({ "url": 5, "expiresAt": [] })).into_response(),
        _ => {}
    }
    let token = server.expiry.token(id == "fil_expiring");
    // A URL that claims to live an hour, so the client keeps it.
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    axum::Json(json!({
        "object": "file_url",
        "url": format!("{}/_storage/{id}?token={token}", server.endpoint),
        "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
    .into_response()
}

async fn storage(
    State(server): State<Server>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let kind = id.trim_start_matches("fil_");
    if kind != "expiring" {
        return stored_bytes(kind, &headers);
    }
    if !server.expiry.allows(&query) {
        return expired();
    }
    ranged(&server.expiring, &headers)
}

/// The upload session number of a `fil_upN` id.
fn session_of(id: &str) -> usize {
    id.trim_start_matches("fil_up")
        .parse()
        .unwrap_or(usize::MAX)
}

async fn create(State(server): State<Server>, Json(body): Json<Value>) -> Response {
    let mut uploads = server.uploads.lock().unwrap();
    let id = format!("fil_up{}", uploads.len());
    uploads.push(Upload {
        filename: body["filename"].as_str().unwrap_or_default().to_string(),
        size: body["sizeBytes"].as_u64().unwrap_or_default(),
        status: "PENDING",
        bytes: None,
    });
    Json(json!({
        "id": id, "status": "PENDING",
        "uploadUrl": format!("{}/_upload/{id}", server.endpoint), "uploadHeaders": {},
    }))
    .into_response()
}

/// The PUT of the first session meets an expired URL; the others are stored.
async fn put(State(server): State<Server>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    let session = session_of(&id);
    if session == 0 {
        return expired();
    }
    match server.uploads.lock().unwrap().get_mut(session) {
        Some(upload) => upload.bytes = Some(body.to_vec()),
        None => return StatusCode::NOT_FOUND.into_response(),
    }
    StatusCode::OK.into_response()
}

async fn finish(
    State(server): State<Server>,
    UrlPath((id, action)): UrlPath<(String, String)>,
) -> Response {
    let mut uploads = server.uploads.lock().unwrap();
    let Some(upload) = uploads.get_mut(session_of(&id)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    upload.status = match action.as_str() {
        "complete" if upload.bytes.is_some() => "COMPLETED",
        "cancel" => "CANCELLED",
        _ => return StatusCode::CONFLICT.into_response(),
    };
    let mut file = row(&id, &upload.filename, json!(upload.size));
    file["status"] = json!(upload.status);
    Json(file).into_response()
}

fn router(server: Server) -> Router {
    Router::new()
        .route("/v1/files", get(list).post(create))
        .route("/v1/files/{id}/url", get(url))
        .route("/v1/files/{id}/{action}", post(finish))
        .route("/_storage/{id}", get(storage))
        .route("/_upload/{id}", put_route(put))
        .with_state(server)
}

#[test]
fn hostile_lightfield_answers_get_clear_errors_and_expired_urls_are_fetched_again() {
    let runtime = runtime();
    let listing = Arc::new(AtomicUsize::new(0));
    let expiring = Arc::new(pseudo_random(EXPIRING_BYTES, 13));
    let expiry = Expiry::default();
    let uploads: Arc<Mutex<Vec<Upload>>> = Arc::default();
    let endpoint = serve(&runtime, |endpoint| {
        router(Server {
            endpoint: endpoint.to_string(),
            listing: listing.clone(),
            expiring: expiring.clone(),
            expiry: expiry.clone(),
            uploads: uploads.clone(),
        })
    });

    let mount = BinaryMount::start(
        "lightfield",
        &endpoint,
        &["--token", "sk_lf_hostile", "--metadata-ttl", "0s"],
        &[],
    );
    let m = |rest: &str| mount.at(rest);

    // Bad names are shown under substitutes; everything listed reads back.
    for _ in 0..3 {
        works(&format!("ls -a {}", m("")));
    }
    check_names(mount.dir());
    let listed = names_in(mount.dir());
    let shows = |name: &str| listed.iter().any(|listed| listed == name);
    for name in [
        "ok.txt",
        "dup-first.txt",
        "times.txt",
        "far.bin",
        "expiring.bin",
    ] {
        assert!(shows(name), "{name} in {listed:?}");
    }
    for name in ["dup-second.txt", "pending.txt", "huge.bin"] {
        assert!(!shows(name), "{name} not in {listed:?}");
    }
    for name in listed.iter().filter(|name| {
        let path = mount.dir().join(name);
        path.is_file() && std::fs::metadata(&path).unwrap().len() == CONTENT.len() as u64
    }) {
        if !name.ends_with("-url.txt") {
            assert_eq!(
                works(&format!("cat {}", m(name))).stdout,
                CONTENT,
                "{name:?}"
            );
        }
    }

    // Download URLs and storage answers that are wrong: EIO.
    for name in ["html-url.txt", "bad-url.txt", "ranges.bin", "short.bin"] {
        fails_with_eio(&format!("cat {}", m(name)));
    }
    fails_with_eio(&format!("head -c 64 {}", m("far.bin")));

    // The URL the client keeps expires after its first read; the next read meets 403
    // "Request has expired", fetches a fresh URL and gets every byte.
    expiry.check_read_after_expiry(&m("expiring.bin"), &expiring);

    // Listings that are not the JSON asked for: the mount shows the last good listing (and
    // logs why); a new mount refuses to start, saying what the server sent. A name that is not
    // UTF-8 does not spoil the listing it is in.
    let good = names_in(mount.dir());
    for (index, kind) in LISTINGS.iter().enumerate().skip(1) {
        listing.store(index, Ordering::SeqCst);
        works(&format!("ls {}", m("")));
        if *kind == Listing::NotUtf8 {
            // Bytes that are not UTF-8 show as U+FFFD; the file reads by its id.
            let name = "bad-\u{FFFD}\u{FFFD}.txt";
            let mut expected = good.clone();
            expected.push(name.to_string());
            expected.sort();
            assert_eq!(names_in(mount.dir()), expected, "{kind:?}");
            assert_eq!(works(&format!("cat {}", m(name))).stdout, CONTENT);
            continue;
        }
        assert_eq!(names_in(mount.dir()), good, "{kind:?}: the last listing");
        if *kind == Listing::Html {
            let other = tempfile::tempdir().unwrap();
            let other_mnt = other.path().join("mnt");
            std::fs::create_dir(&other_mnt).unwrap();
            let mut args = mount.args.clone();
            args[1] = other_mnt.to_str().unwrap().to_string();
            let mut command = user_command("timeout", other.path(), &["30", BIN]);
            let refused = command.args(&args).output().unwrap();
            let said = String::from_utf8_lossy(&refused.stderr);
            assert!(
                !refused.status.success() && said.contains("malformed JSON"),
                "a mount of a server answering HTML: {refused:?}"
            );
        }
    }
    listing.store(0, Ordering::SeqCst);
    assert_eq!(works(&format!("cat {}", m("ok.txt"))).stdout, CONTENT);

    // An upload whose presigned URL storage refuses as expired starts over with a new
    // session: the copy succeeds, the refused session is cancelled, nothing is left PENDING.
    let data = pseudo_random(100_000, 7);
    let local = mount.home.path().join("upload.bin");
    std::fs::write(&local, &data).unwrap();
    works(&format!("cp {} {}", q(&local), m("upload.bin")));
    let uploads = uploads.lock().unwrap().clone();
    let statuses: Vec<&str> = uploads.iter().map(|u| u.status).collect();
    assert_eq!(statuses, ["CANCELLED", "COMPLETED"], "{uploads:?}");
    assert_eq!(uploads[1].filename, "upload.bin");
    assert!(
        uploads[1].bytes.as_deref() == Some(&data[..]),
        "the bytes arrived whole"
    );
    let log = mount.unmount();
    check_substitutes_logged_once(&log, &[]);
    let stale = log.matches("showing the last listing").count();
    assert!(stale >= 4, "{stale} stale listings logged:\n{log}");
    assert!(
        log.contains("did not advance"),
        "an endless listing is cut short:\n{log}"
    );
    assert_eq!(log.matches("not UTF-8").count(), 1, "logged once:\n{log}");
}
