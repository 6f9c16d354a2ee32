//! The Appmixer-shaped hostile server: a sign-in whose JWT has an `exp` past what a clock can
//! hold (above i64::MAX seconds); `GET /files` listings with bad names, sizes that lie
//! (downloads shorter and longer than listed, a body shorter than its Content-Length) and the
//! listing the test can turn into HTML, truncated JSON, the wrong shape, a negative length or an
//! error whose body is not a Boom; downloads refused with bodies that are not Booms (or a Boom
//! whose message holds a newline); and storms of 500s and 429s with `Retry-After` on any call
//! the test says, the chunked upload's included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{
    BinaryMount, CONTENT, LIED_SIZE, bad_name_rows, check_names, check_no_injected_lines,
    check_substitutes_logged_once, fails_with, fails_with_eio, html, names_in, query_number,
    ranged, runtime, serve, stored_bytes, works,
};
use crate::harness::{pseudo_random, q};

/// What `GET /files` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listing {
    Good,
    Html,
    Truncated,
    /// An object where the API gives an array.
    WrongShape,
    NegativeLength,
    /// A 400 whose body is JSON but not a Boom.
    NotBoom,
}

const LISTINGS: [Listing; 6] = [
    Listing::Good,
    Listing::Html,
    Listing::Truncated,
    Listing::WrongShape,
    Listing::NegativeLength,
    Listing::NotBoom,
];

/// An uploaded file: its id, name and bytes.
type Uploaded = (String, String, Vec<u8>);

/// The text a refused download's message carries after a newline.
const INJECTED: &str = "INJECTED-LINE";

#[derive(Clone, Default)]
struct Server {
    /// Index into [`LISTINGS`], set by the test.
    listing: Arc<AtomicUsize>,
    /// Calls still to be answered 500 or 429 (set by the test; the sign-in is spared).
    storm: Arc<AtomicUsize>,
    sign_ins: Arc<AtomicUsize>,
    uploads: Arc<Mutex<Vec<Uploaded>>>,
}

impl Server {
    /// A 429 with `Retry-After: 0` while the storm lasts, but a 500 with `Retry-After: 1`
    /// for its last but one call.
    fn storm(&self) -> Option<Response> {
        let left = self.storm.load(Ordering::SeqCst);
        if left == 0
            || self
                .storm
                .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return None;
        }
        let (status, wait) = match left {
            2 => (StatusCode::INTERNAL_SERVER_ERROR, "1"),
            _ => (StatusCode::TOO_MANY_REQUESTS, "0"),
        };
        let boom = json!({"statusCode": status.as_u16(), "error": "Storm", "message": "try later"});
        Some((status, [(header::RETRY_AFTER, wait)], axum::Json(boom)).into_response())
    }
}

fn row(id: &str, name: &str, length: Value) -> Value {
    json!({
        "fileId": id, "filename": name, "length": length, "chunkSize": 261120,
        "uploadDate": "2026-01-01T00:00:00.000Z", "contentType": "application/octet-stream",
        "metadata": {"userId": "5f15d59cef81ecb3344fab55"},
    })
}

fn rows(server: &Server) -> Vec<Value> {
    let small = json!(CONTENT.len());
    let mut rows = bad_name_rows("name", |id, name| row(id, name, small.clone()));
    rows.extend([
        row("ok", "ok.txt", small.clone()),
        // Listed larger than the server holds, and smaller.
        row("shorter", "shorter.bin", json!(LIED_SIZE)),
        row("longer", "longer.bin", small.clone()),
        row("short", "short-body.bin", json!(LIED_SIZE)),
        row("gone", "gone.txt", small.clone()),
        row("denied", "denied.txt", small.clone()),
        row("injected", "injected.txt", small.clone()),
    ]);
    let uploads = server.uploads.lock().unwrap();
    rows.extend(
        uploads
            .iter()
            .map(|(id, name, bytes)| row(id, name, json!(bytes.len()))),
    );
    rows
}

/// `POST /user/auth`: a JWT that never expires by any clock.
async fn sign_in(State(server): State<Server>) -> Response {
    server.sign_ins.fetch_add(1, Ordering::SeqCst);
    let claims = json!({ "id": "hostile", "scope": ["user"], "exp": i64::MAX as u64 + 1 });
    let key = jsonwebtoken::EncodingKey::from_secret(b"hostile");
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    axum::Json(json!({ "user": { "id": "hostile" }, "token": jwt })).into_response()
}

async fn count(State(server): State<Server>) -> Response {
    if let Some(storm) = server.storm() {
        return storm;
    }
    axum::Json(json!({ "count": rows(&server).len() })).into_response()
}

async fn list(
    State(server): State<Server>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(storm) = server.storm() {
        return storm;
    }
    let param = |key: &str| query_number(&query, key).map(|n| n as usize);
    let (offset, limit) = (param("offset").unwrap_or(0), param("limit").unwrap_or(100));
    let page: Vec<Value> = rows(&server).into_iter().skip(offset).take(limit).collect();
    match LISTINGS[server.listing.load(Ordering::SeqCst)] {
        Listing::Good => axum::Json(page).into_response(),
        Listing::Html => html(),
        Listing::Truncated => r#"[{"fileId":"ok","filename":"ok.txt","len"#.into_response(),
        Listing::WrongShape => axum::Json(json!({ "files": page })).into_response(),
        Listing::NegativeLength => {
            axum::Json(json!([row("neg", "negative.bin", json!(-5))])).into_response()
        }
        Listing::NotBoom => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": { "code": 7, "detail": ["sort"] } })),
        )
            .into_response(),
    }
}

async fn download(
    State(server): State<Server>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(storm) = server.storm() {
        return storm;
    }
    match id.as_str() {
        // The server holds 16 bytes of the 4 MiB listed, and says so.
        "shorter" => ranged(CONTENT, &headers),
        // It holds 64 KiB of the 16 bytes listed, and sends them all, Range or not.
        "longer" => CONTENT.repeat(4096).into_response(),
        "short" => stored_bytes("short", &headers),
        "gone" => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "gone", "code": 404 })),
        )
            .into_response(),
        "denied" => (StatusCode::FORBIDDEN, html()).into_response(),
        "injected" => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "statusCode": 400, "error": "Bad Request",
                "message": format!("no such range\n{INJECTED} sessionfs: all is well"),
            })),
        )
            .into_response(),
        _ => {
            let uploads = server.uploads.lock().unwrap();
            match uploads.iter().find(|(up, _, _)| *up == id) {
                Some((_, _, bytes)) => ranged(bytes, &headers),
                None => ranged(CONTENT, &headers),
            }
        }
    }
}

/// `POST /files`: one chunk, appended to `uploader-file-id` or creating a file.
async fn upload(State(server): State<Server>, headers: HeaderMap, mut form: Multipart) -> Response {
    if let Some(storm) = server.storm() {
        return storm;
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut bytes = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        bytes.extend_from_slice(&field.bytes().await.unwrap());
    }
    let mut uploads = server.uploads.lock().unwrap();
    let index = match text("uploader-file-id") {
        Some(id) => match uploads.iter().position(|(up, _, _)| *up == id) {
            Some(index) => index,
            None => return StatusCode::NOT_FOUND.into_response(),
        },
        None => {
            let id = format!("up{}", uploads.len());
            uploads.push((
                id,
                text("uploader-file-name").unwrap_or_default(),
                Vec::new(),
            ));
            uploads.len() - 1
        }
    };
    let (id, name, stored) = &mut uploads[index];
    stored.extend_from_slice(&bytes);
    axum::Json(row(id, name, json!(stored.len()))).into_response()
}

fn router(server: Server) -> Router {
    Router::new()
        .route("/user/auth", axum::routing::post(sign_in))
        .route("/files", get(list).post(upload))
        .route("/files/count", get(count))
        .route("/files/{id}", get(download))
        .with_state(server)
}

#[test]
fn hostile_appmixer_answers_get_clear_errors_and_storms_lose_nothing() {
    let runtime = runtime();
    let server = Server::default();
    let endpoint = serve(&runtime, |_| router(server.clone()));
    let mount = BinaryMount::start(
        "appmixer",
        &endpoint,
        &["--user", "hostile@example.com", "--metadata-ttl", "0s"],
        &[("SESSIONFS_PASSWORD", "hostile-password")],
    );
    let m = |rest: &str| mount.at(rest);

    // The JWT whose `exp` no clock holds signs in once and keeps working. Bad names are shown
    // under substitutes; everything listed at its true size reads back.
    for _ in 0..3 {
        works(&format!("ls -a {}", m("")));
    }
    check_names(mount.dir());
    let listed = names_in(mount.dir());
    for name in ["ok.txt", "shorter.bin", "longer.bin", "gone.txt"] {
        assert!(listed.iter().any(|l| l == name), "{name} in {listed:?}");
    }
    for name in listed.iter().filter(|name| {
        !["gone.txt", "denied.txt", "injected.txt", "longer.bin"].contains(&name.as_str())
            && std::fs::metadata(mount.dir().join(name)).unwrap().len() == CONTENT.len() as u64
    }) {
        assert_eq!(
            works(&format!("cat {}", m(name))).stdout,
            CONTENT,
            "{name:?}"
        );
    }

    // Sizes that lie: a download longer than listed gives the listed bytes; one shorter than
    // listed is ESTALE (the object changed while read), a body shorter than its
    // Content-Length EIO; never zeros in place of the missing bytes.
    assert_eq!(works(&format!("cat {}", m("longer.bin"))).stdout, CONTENT);
    fails_with(&format!("cat {}", m("shorter.bin")), "Stale file handle");
    fails_with_eio(&format!("cat {}", m("short-body.bin")));

    // Refusals whose bodies are not Booms keep the errno their status means.
    fails_with(
        &format!("cat {}", m("gone.txt")),
        "No such file or directory",
    );
    fails_with(&format!("cat {}", m("denied.txt")), "Permission denied");
    fails_with(&format!("cat {}", m("injected.txt")), "Invalid argument");

    // Listings that are not the JSON asked for, or refused with a body that is not a Boom:
    // the mount shows the last good listing.
    let good = names_in(mount.dir());
    for (index, kind) in LISTINGS.iter().enumerate().skip(1) {
        server.listing.store(index, Ordering::SeqCst);
        works(&format!("ls {}", m("")));
        assert_eq!(names_in(mount.dir()), good, "{kind:?}: the last listing");
    }
    server.listing.store(0, Ordering::SeqCst);

    // A storm of 500s and 429s with Retry-After on reads, listings and the upload's chunk:
    // each call waits as asked and succeeds; the bytes arrive whole.
    server.storm.store(3, Ordering::SeqCst);
    let started = std::time::Instant::now();
    assert_eq!(works(&format!("cat {}", m("ok.txt"))).stdout, CONTENT);
    assert!(
        started.elapsed().as_secs_f64() >= 0.9,
        "Retry-After: 1 was honoured"
    );
    let data = pseudo_random(100_000, 5);
    let local = mount.home.path().join("upload.bin");
    std::fs::write(&local, &data).unwrap();
    server.storm.store(3, Ordering::SeqCst);
    works(&format!("cp {} {}", q(&local), m("upload.bin")));
    {
        let uploads = server.uploads.lock().unwrap();
        assert_eq!(uploads.len(), 1, "one file made");
        assert_eq!(uploads[0].1, "upload.bin");
        assert!(uploads[0].2 == data, "the bytes arrived whole");
    }
    server.storm.store(3, Ordering::SeqCst);
    assert!(works(&format!("cat {}", m("upload.bin"))).stdout == data);
    assert_eq!(server.storm.load(Ordering::SeqCst), 0, "the storm was met");

    let log = mount.unmount();
    // Once by the mount's check of the server and once by the mount's own client; never
    // again, since the token does not expire.
    assert_eq!(
        server.sign_ins.load(Ordering::SeqCst),
        2,
        "signed in once per client"
    );
    check_substitutes_logged_once(&log, &[]);
    check_no_injected_lines(&log, INJECTED);
    let stale = log.matches("showing the last listing").count();
    assert!(
        stale >= LISTINGS.len() - 1,
        "{stale} stale listings logged:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
