//! The Mix emulator: sessions and session files, as `docs/api/mix.md` documents the newest
//! Go server (`rest_sessions.go`, `rest_files.go`, `session_asset_server.go`).
//!
//! Owns the paths, JSON shapes, status codes, error envelopes and CORS headers of those
//! endpoints; storage is the shared [`Store`](super::store::Store): one record per session in
//! the `mix_sessions` table, and one blob namespace per session (named by its id) holding its
//! files under their stored names. Submodules: `create` (decoding and validating a new session),
//! `names` (upload name rules), `content` (GET like `http.ServeContent`), `reply` (Go-shaped
//! responses).
//!
//! Invariants and choices:
//! - Files live in a flat namespace per session (the spec's wording), not the newest server's
//!   shared `uploads/` namespace; deleting a session deletes its files.
//! - Every files route checks, in Go's order: UUID syntax (400), session exists (404), then the
//!   operation. Session routes accept any id (unknown → 404).
//! - File names are opaque keys: a `{filename}` segment is percent-decoded by the router and
//!   looked up as is, so `%2F` can never reach outside the session.
//! - Uploads stream to disk; with `max_upload_bytes` set, a larger body is refused with 413 as
//!   soon as it crosses the limit. Without it there is no limit, as in the real server.
//! - Only `main` sessions can be created, so `includeSubagents` never changes a listing.
//! - A session's record is deleted before its files, and an upload re-checks its session after
//!   committing, so no file outlives its session.
//! - Several ranges in one GET get the whole file (200), not `multipart/byteranges`.

mod content;
mod create;
mod names;
mod reply;

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::EmulatorConfig;
use super::body::{self, ReceiveError};
use super::store::{BlobInfo, Store};

/// The store table holding one record per session.
const SESSIONS_TABLE: &str = "mix_sessions";

/// Everything the Mix handlers share: the store and the configured behaviour choices.
#[derive(Clone, Debug)]
pub struct MixState {
    store: Store,
    max_upload_bytes: Option<u64>,
    zero_modified: bool,
    /// Honour `Range` (Go's `ServeContent`); without it every GET gets the whole body with 200,
    /// as the newest server's storage provider does for uploaded files.
    serve_ranges: bool,
}

impl MixState {
    /// Opens the store in `config.data_dir`; sessions and files written before are kept.
    pub fn open(config: &EmulatorConfig) -> io::Result<MixState> {
        Ok(MixState {
            store: Store::open(&config.data_dir)?,
            max_upload_bytes: config.max_upload_bytes,
            zero_modified: false,
            serve_ranges: config.serve_ranges,
        })
    }

    /// With `true`, FileInfo `modified` is always 0 like the newest server's storage provider;
    /// the default reports the real mtime, which clients can use.
    pub fn with_zero_modified(mut self, zero: bool) -> MixState {
        self.zero_modified = zero;
        self
    }
}

/// The Mix routes, with Go's CORS headers and router-level 404/405 answers.
pub fn router(state: MixState) -> Router {
    Router::new()
        .route(
            "/api/sessions",
            go_route(get(list_sessions).post(create_session), "GET, HEAD, POST"),
        )
        .route(
            "/api/sessions/{id}",
            go_route(get(get_session).delete(delete_session), "DELETE, GET, HEAD"),
        )
        .route(
            "/api/sessions/{id}/files",
            go_route(get(list_files), "GET, HEAD"),
        )
        .route(
            "/api/sessions/{id}/files/upload",
            go_route(
                post(upload_file)
                    .get(get_file_named_upload)
                    .delete(delete_file_named_upload),
                "DELETE, GET, HEAD, POST",
            )
            .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/sessions/{id}/files/{filename}",
            go_route(get(get_file).delete(delete_file), "DELETE, GET, HEAD"),
        )
        .fallback(|| async {
            router_level(reply::plain(StatusCode::NOT_FOUND, "404 page not found"))
        })
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// Adds Go semantics for the methods `route` lacks: HEAD matches the GET pattern and the
/// handler answers 405 itself; any other method gets the router's 405 with `Allow: allow`.
fn go_route(route: MethodRouter<MixState>, allow: &'static str) -> MethodRouter<MixState> {
    route
        .head(|| async { reply::plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed") })
        .fallback(move || async move {
            let mut res = reply::plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            router_level(res)
        })
}

/// Marks a response as produced by Go's `ServeMux` or CORS middleware rather than a Mix
/// handler, which decides which CORS headers it carries.
#[derive(Clone, Copy)]
struct RouterLevel;

fn router_level(mut res: Response) -> Response {
    res.extensions_mut().insert(RouterLevel);
    res
}

/// The server's CORS middleware (every response; OPTIONS → 200 empty), then the handlers'
/// narrower `Allow-Methods`/`Allow-Headers` on everything a handler answered.
async fn cors(req: Request, next: Next) -> Response {
    let mut res = if req.method() == Method::OPTIONS {
        router_level(StatusCode::OK.into_response())
    } else {
        next.run(req).await
    };
    let (methods, allowed) = if res.extensions().get::<RouterLevel>().is_none() {
        (
            "GET, POST, PUT, DELETE, OPTIONS",
            "Content-Type, Authorization",
        )
    } else {
        (
            "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            "Content-Type, Authorization, X-Requested-With",
        )
    };
    let headers = res.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(allowed),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    res
}

// ---- sessions ----

/// A session as stored. Counters, cost and parent links are not stored: the emulator runs no
/// agent, so they are always zero or empty.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRecord {
    id: String,
    title: String,
    browser_mode: String,
    #[serde(default)]
    cdp_url: String,
    /// Unix seconds, as the API reports them.
    created_at: i64,
    /// Sub-second part, only to order sessions created in the same second.
    created_nanos: u32,
    #[serde(default)]
    callbacks: Vec<Value>,
}

/// The `SessionData` response, keys in the Go struct's order, empty optionals omitted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionData<'a> {
    id: &'a str,
    title: &'a str,
    session_type: &'static str,
    browser_mode: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cdp_url: &'a str,
    user_message_count: i64,
    assistant_message_count: i64,
    tool_call_count: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    /// Go encodes a float64 zero as `0`, which serde would write as `0.0`.
    cost: i64,
    created_at: String,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    callbacks: &'a [Value],
}

impl SessionRecord {
    fn data(&self) -> SessionData<'_> {
        let created = chrono::DateTime::from_timestamp(self.created_at, 0).unwrap_or_default();
        SessionData {
            id: &self.id,
            title: &self.title,
            session_type: "main",
            browser_mode: &self.browser_mode,
            cdp_url: &self.cdp_url,
            user_message_count: 0,
            assistant_message_count: 0,
            tool_call_count: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: 0,
            created_at: created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            callbacks: &self.callbacks,
        }
    }
}

async fn list_sessions(State(st): State<MixState>) -> Response {
    match st.store.list_records::<SessionRecord>(SESSIONS_TABLE).await {
        Ok(records) => {
            let mut sessions: Vec<SessionRecord> = records.into_iter().map(|(_, s)| s).collect();
            sessions.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.created_nanos)));
            let data: Vec<SessionData> = sessions.iter().map(SessionRecord::data).collect();
            reply::json(StatusCode::OK, &data)
        }
        Err(err) => reply::internal_error("listing sessions", &err),
    }
}

async fn get_session(State(st): State<MixState>, Path(id): Path<String>) -> Response {
    match st
        .store
        .get_record::<SessionRecord>(SESSIONS_TABLE, &id)
        .await
    {
        Ok(Some(session)) => reply::json(StatusCode::OK, &session.data()),
        Ok(None) => reply::not_found("Session", &id),
        Err(err) => reply::internal_error("getting session", &err),
    }
}

async fn delete_session(State(st): State<MixState>, Path(id): Path<String>) -> Response {
    match st.store.delete_record(SESSIONS_TABLE, &id).await {
        Ok(true) => match st.store.delete_namespace(&id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(err) => reply::internal_error("deleting session", &err),
        },
        Ok(false) => reply::not_found("Session", &id),
        Err(err) => reply::internal_error("deleting session", &err),
    }
}

async fn create_session(State(st): State<MixState>, body: Bytes) -> Response {
    let req = match create::decode_create(&body) {
        Ok(req) => req,
        Err(message) => return reply::validation_error("body", &message),
    };
    if let Some(res) = create::reject_create(&req) {
        return res;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let session = SessionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        title: req.title,
        browser_mode: req.browser_mode,
        cdp_url: req.cdp_url,
        created_at: now.as_secs() as i64,
        created_nanos: now.subsec_nanos(),
        callbacks: req.callbacks,
    };
    match st
        .store
        .put_record(SESSIONS_TABLE, &session.id, &session)
        .await
    {
        Ok(()) => reply::json(StatusCode::CREATED, &session.data()),
        Err(err) => reply::internal_error("creating session", &err),
    }
}

// ---- files ----

/// The `FileInfo` response, keys in the Go struct's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileInfo<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_name: Option<&'a str>,
    size: u64,
    modified: i64,
    is_dir: bool,
    url: String,
}

impl MixState {
    /// Go's order for files routes: UUID syntax, then existence.
    async fn check_session(&self, id: &str) -> Result<(), Response> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(reply::validation_error("id", "invalid session ID format"));
        }
        match self
            .store
            .get_record::<SessionRecord>(SESSIONS_TABLE, id)
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(reply::not_found("Session", id)),
            Err(err) => Err(reply::internal_error("getting session", &err)),
        }
    }

    fn file_info<'a>(
        &self,
        base: &str,
        id: &str,
        blob: &'a BlobInfo,
        original: Option<&'a str>,
    ) -> FileInfo<'a> {
        let modified = match self.zero_modified {
            true => 0,
            false => blob
                .modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        FileInfo {
            name: &blob.key,
            original_name: original,
            size: blob.size,
            modified,
            is_dir: false,
            url: format!("{base}/api/sessions/{id}/files/{}", blob.key),
        }
    }
}

/// `{scheme}://{Host}` as the server builds file URLs: https only behind TLS or a proxy that
/// says so; the name is appended unescaped.
fn base_url(headers: &HeaderMap) -> String {
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v == "https");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    format!("{}://{host}", if https { "https" } else { "http" })
}

async fn list_files(
    State(st): State<MixState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(res) = st.check_session(&id).await {
        return res;
    }
    match st.store.list_blobs(&id).await {
        Ok(blobs) => {
            let base = base_url(&headers);
            let files: Vec<FileInfo> = blobs
                .iter()
                .map(|b| st.file_info(&base, &id, b, None))
                .collect();
            reply::json(StatusCode::OK, &files)
        }
        Err(err) => reply::internal_error("listing files", &err),
    }
}

/// The server's answer to a body that is not a multipart form; why is logged, since the
/// answer (as the real server's) does not say.
fn form_error(why: impl std::error::Error) -> Response {
    let cause = std::error::Error::source(&why).map(ToString::to_string);
    log::info!(
        "upload: failed to parse multipart form: {why} ({})",
        cause.as_deref().unwrap_or("no cause")
    );
    reply::validation_error("form", "failed to parse multipart form")
}

/// 413 in the spec's wording (`File too large (max 32MB)`) for the configured limit.
fn too_large(limit: u64) -> Response {
    reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "bad_request",
        &too_large_message(limit),
    )
}

fn too_large_message(limit: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    let max = match limit {
        n if n > 0 && n % MIB == 0 => format!("{}MB", n / MIB),
        n if n > 0 && n % 1024 == 0 => format!("{}KB", n / 1024),
        n => format!("{n} bytes"),
    };
    format!("File too large (max {max})")
}

/// Streams the first `file` part that has a filename into a new blob; other parts are skipped.
/// The blob is committed only after the whole form parsed, as Go parses it before storing.
async fn upload_file(
    State(st): State<MixState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    if let Err(res) = st.check_session(&id).await {
        return res;
    }
    let mut multipart = match multipart {
        Ok(multipart) => multipart,
        Err(rejection) => return form_error(rejection),
    };
    let mut upload = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => return form_error(err),
        };
        let wanted = upload.is_none() && field.name() == Some("file");
        let Some(original) = field
            .file_name()
            .filter(|n| wanted && !n.is_empty())
            .map(names::go_base)
        else {
            continue;
        };
        let original = original.to_owned();
        let name = names::sanitize_filename(&original);
        let limit = st.max_upload_bytes;
        let writer = match body::receive(&st.store, &id, &name, field, limit).await {
            Ok(received) => received.writer,
            // Only a limit makes a body too large.
            Err(ReceiveError::TooLarge { .. }) => return too_large(limit.unwrap_or_default()),
            Err(ReceiveError::Body(err)) => return form_error(err),
            Err(ReceiveError::Io(err)) => return reply::internal_error("uploading file", &err),
        };
        upload = Some((original, name, writer));
    }
    let Some((original, name, writer)) = upload else {
        return reply::validation_error("file", "file upload required");
    };
    let blob = match writer.commit().await {
        Ok(blob) => blob,
        Err(err) => return reply::internal_error("uploading file", &err),
    };
    // Deleting a session removes its record before its files, so a session deleted while this
    // upload streamed is seen here, and the file must not outlive it.
    if let Err(res) = st.check_session(&id).await {
        return match st.store.delete_namespace(&id).await {
            Ok(()) => res,
            Err(err) => reply::internal_error("uploading file", &err),
        };
    }
    let original = (original != name).then_some(original.as_str());
    reply::json(
        StatusCode::CREATED,
        &st.file_info(&base_url(&headers), &id, &blob, original),
    )
}

async fn get_file(
    State(st): State<MixState>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve_file(&st, &id, &name, &headers).await
}

/// `GET .../files/upload` is a download of a file named `upload`.
async fn get_file_named_upload(
    State(st): State<MixState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve_file(&st, &id, "upload", &headers).await
}

async fn serve_file(st: &MixState, id: &str, name: &str, headers: &HeaderMap) -> Response {
    if let Err(res) = st.check_session(id).await {
        return res;
    }
    let blob = match st.store.open_blob(id, name).await {
        Ok(Some(blob)) => blob,
        Ok(None) => return reply::not_found("File", name),
        Err(err) => return reply::internal_error("serving file", &err),
    };
    let mut res = match content::serve(blob, name, headers, st.serve_ranges).await {
        Ok(res) => res,
        Err(err) => return reply::internal_error("serving file", &err),
    };
    let status = res.status();
    let out = res.headers_mut();
    // Go's ServeContent drops Cache-Control again when it answers an error.
    if !status.is_client_error() {
        out.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
    }
    out.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    out.insert(header::EXPIRES, HeaderValue::from_static("0"));
    res
}

async fn delete_file(
    State(st): State<MixState>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    remove_file(&st, &id, &name).await
}

/// `DELETE .../files/upload` deletes a file named `upload`.
async fn delete_file_named_upload(State(st): State<MixState>, Path(id): Path<String>) -> Response {
    remove_file(&st, &id, "upload").await
}

async fn remove_file(st: &MixState, id: &str, name: &str) -> Response {
    if let Err(res) = st.check_session(id).await {
        return res;
    }
    match st.store.delete_blob(id, name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => reply::not_found("File", name),
        Err(err) => reply::internal_error("deleting file", &err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_limit_message_uses_whole_units() {
        assert_eq!(too_large_message(32 << 20), "File too large (max 32MB)");
        assert_eq!(too_large_message(4096), "File too large (max 4KB)");
        assert_eq!(too_large_message(10), "File too large (max 10 bytes)");
    }
}
