//! The Lightfield emulator: the `/v1/files` endpoints of `docs/api/lightfield.md` and the
//! presigned storage URLs they hand out, served by the emulator itself.
//!
//! Owns the paths, JSON shapes, status codes and error envelopes of those endpoints. Storage is
//! the shared [`Store`]: one record per file in the `lightfield_files` table and one blob per
//! file (namespace `lightfield`, keyed by id). Records are also kept in memory, loaded once from
//! the store, so a listing of thousands of files does not read thousands of record files per
//! page. Submodules: `request` (decoding and validation), `reply` (envelopes), `storage`
//! (signing, the presigned `PUT` and the ranged download).
//!
//! Invariants and choices (the spec is silent on those marked *choice*):
//! - Every `/v1` call needs `Authorization: Bearer <key>` (checked first: 401) and then
//!   `Lightfield-Version: 2026-03-01` (400 `version_header`). The valid key is the configured
//!   token, or any key starting `sk_lf_` when none is configured.
//! - Statuses: PENDING until `complete`; COMPLETED; CANCELLED by `cancel`; EXPIRED when a
//!   PENDING session passes its `expiresAt` (evaluated on every read, so no timer runs).
//!   `expiresAt` is null in every status but PENDING.
//! - *choice*: `complete`/`cancel` of a file that is not PENDING and `url` of a file that is not
//!   COMPLETED are 409 `conflict`; `complete` without uploaded bytes, with a different size or
//!   with a wrong `md5` is 422 `unprocessable_content` (param `md5` or `sizeBytes`) and the file
//!   stays PENDING, so the client may upload again or cancel.
//! - *choice*: upload sessions live one hour and download URLs fifteen minutes
//!   ([`LightfieldState::with_upload_ttl`] and [`LightfieldState::with_download_ttl`] change
//!   that for tests).
//! - Listing is newest first (creation order); every status is listed.
//! - `knowledge_*` purposes stamp the filename with epoch milliseconds before the last
//!   extension and add `if-none-match: *` to the upload headers, as the real service does.
//! - Rate-limit headers are not emulated; 429 comes only from injected faults.

mod reply;
mod request;
mod storage;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell};

use super::store::Store;
use super::{EmulatorConfig, iso_millis};
use request::Purpose;

/// The only API version the spec knows.
pub const API_VERSION: &str = "2026-03-01";
/// The store table holding one record per file.
const FILES_TABLE: &str = "lightfield_files";
/// The store table holding the signing secret, so presigned URLs survive a restart.
const SECRETS_TABLE: &str = "lightfield_secret";
/// The blob namespace holding file bodies, keyed by file id.
const BLOB_NS: &str = "lightfield";
/// How long an upload session stays PENDING before it expires.
const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// How long a download URL works.
const DEFAULT_DOWNLOAD_TTL: Duration = Duration::from_secs(900);
/// The prefix every Lightfield API key has.
const KEY_PREFIX: &str = "sk_lf_";

/// Everything the Lightfield handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LightfieldState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// The one valid API key; `None` accepts any `sk_lf_` key.
    token: Option<String>,
    upload_ttl: Duration,
    download_ttl: Duration,
    /// Loaded from the store on first use.
    loaded: OnceCell<Loaded>,
}

/// State loaded lazily from the store (the router is built outside any runtime).
#[derive(Debug)]
struct Loaded {
    /// Keys the signatures of presigned URLs.
    secret: String,
    /// Every file record by id. Lock order: taken alone; held across the record write so that a
    /// status change and its persistence are one step.
    files: Mutex<HashMap<String, FileRecord>>,
}

/// Upload status as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Status {
    Pending,
    Completed,
    Cancelled,
    Expired,
}

/// What the presigned PUT received.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Uploaded {
    size: u64,
    md5: String,
}

/// One file as stored. Times are unix milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FileRecord {
    id: String,
    filename: String,
    mime_type: String,
    size_bytes: u64,
    /// As last written; read through [`FileRecord::status_at`], which applies expiry.
    status: Status,
    created_ms: i64,
    /// Creation order, so files created in the same millisecond still list newest first.
    seq: u64,
    completed_ms: Option<i64>,
    /// When the upload session ends (kept after it is irrelevant; shown only while PENDING).
    session_expires_ms: i64,
    upload_headers: BTreeMap<String, String>,
    uploaded: Option<Uploaded>,
}

impl FileRecord {
    /// The status at `now`: a PENDING session past its expiry is EXPIRED.
    fn status_at(&self, now: i64) -> Status {
        match self.status {
            Status::Pending if now >= self.session_expires_ms => Status::Expired,
            status => status,
        }
    }

    fn view(&self, now: i64) -> FileJson<'_> {
        let status = self.status_at(now);
        FileJson {
            id: &self.id,
            status,
            filename: &self.filename,
            mime_type: &self.mime_type,
            size_bytes: self.size_bytes,
            created_at: iso_millis(self.created_ms),
            completed_at: self.completed_ms.map(iso_millis),
            expires_at: (status == Status::Pending).then(|| iso_millis(self.session_expires_ms)),
        }
    }
}

/// The spec's `File` object; every key is always present, nullable ones as `null`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileJson<'a> {
    id: &'a str,
    status: Status,
    filename: &'a str,
    mime_type: &'a str,
    size_bytes: u64,
    created_at: String,
    completed_at: Option<String>,
    expires_at: Option<String>,
}

/// `FileCreateResponse`: a `File` plus where and how to upload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedJson<'a> {
    #[serde(flatten)]
    file: FileJson<'a>,
    upload_url: String,
    upload_headers: &'a BTreeMap<String, String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

impl LightfieldState {
    /// Opens the store in `config.data_dir`; files written before are kept. The API key is
    /// `config.token`, or any `sk_lf_` key when it is `None`.
    pub fn open(config: &EmulatorConfig) -> io::Result<LightfieldState> {
        Ok(LightfieldState {
            inner: Arc::new(Inner {
                store: Store::open(&config.data_dir)?,
                token: config.token.clone(),
                upload_ttl: DEFAULT_UPLOAD_TTL,
                download_ttl: DEFAULT_DOWNLOAD_TTL,
                loaded: OnceCell::new(),
            }),
        })
    }

    /// Sets how long upload sessions stay PENDING (tests use zero to see EXPIRED).
    pub fn with_upload_ttl(self, ttl: Duration) -> LightfieldState {
        self.tweak(|inner| inner.upload_ttl = ttl)
    }

    /// Sets how long download URLs work (tests use zero to see them expire).
    pub fn with_download_ttl(self, ttl: Duration) -> LightfieldState {
        self.tweak(|inner| inner.download_ttl = ttl)
    }

    fn tweak(self, change: impl FnOnce(&mut Inner)) -> LightfieldState {
        let mut inner = Arc::try_unwrap(self.inner).expect("configured before it is shared");
        change(&mut inner);
        LightfieldState {
            inner: Arc::new(inner),
        }
    }

    async fn loaded(&self) -> io::Result<&Loaded> {
        self.inner
            .loaded
            .get_or_try_init(|| async {
                let store = &self.inner.store;
                let secret = store.signing_secret(SECRETS_TABLE).await?;
                let files = store
                    .list_records::<FileRecord>(FILES_TABLE)
                    .await?
                    .into_iter()
                    .collect();
                Ok(Loaded {
                    secret,
                    files: Mutex::new(files),
                })
            })
            .await
    }

    /// Writes `record` to the store, then to memory; the caller holds the files lock.
    async fn save(
        &self,
        files: &mut HashMap<String, FileRecord>,
        record: FileRecord,
    ) -> io::Result<()> {
        self.inner
            .store
            .put_record(FILES_TABLE, &record.id, &record)
            .await?;
        files.insert(record.id.clone(), record);
        Ok(())
    }
}

/// The Lightfield routes: the `/v1` API behind the key and version checks, and the storage
/// URLs, which check their signature instead.
pub fn router(state: LightfieldState) -> Router {
    let api = Router::new()
        .route("/v1/files", post(create_file).get(list_files))
        .route("/v1/files/{id}", get(retrieve_file))
        .route("/v1/files/{id}/complete", post(complete_file))
        .route("/v1/files/{id}/cancel", post(cancel_file))
        .route("/v1/files/{id}/url", get(file_url))
        .route_layer(middleware::from_fn_with_state(state.clone(), check_headers));
    let storage = Router::new()
        .route(
            "/_storage/upload/{id}",
            put(storage::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/_storage/download/{id}", get(storage::download));
    let not_found = || async { reply::not_found("No route matches this method and path.") };
    // A known path with another method gets the same enveloped 404 (axum's own 405 has no body).
    api.merge(storage)
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state)
}

/// Auth first (401), then the version header (400 `version_header`).
async fn check_headers(State(st): State<LightfieldState>, req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let valid = match (key, &st.inner.token) {
        (None, _) | (Some(""), _) => {
            return reply::unauthorized("Missing API key: send 'Authorization: Bearer sk_lf_...'.");
        }
        (Some(key), Some(token)) => key == token,
        (Some(key), None) => key.starts_with(KEY_PREFIX),
    };
    if !valid {
        return reply::unauthorized("Invalid API key.");
    }
    let version = req.headers().get("lightfield-version");
    if version.is_none_or(|v| v != API_VERSION) {
        return reply::bad_request(
            "version_header",
            Some("Lightfield-Version"),
            &format!("Missing or invalid Lightfield-Version header; use '{API_VERSION}'."),
        );
    }
    next.run(req).await
}

fn unknown_file(id: &str) -> Response {
    reply::not_found(&format!(
        "No resource found in 'files' with the given ID '{id}'."
    ))
}

/// `{scheme}://{Host}` of the request, so presigned URLs point back at this emulator.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A fresh id: `fil_`, the creation time, then random characters (the short id shown in
/// disambiguated names comes from the random tail).
fn new_id(created_ms: i64) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("fil_{created_ms:011x}{}", &random[..13])
}

/// `playbook.md` → `playbook_1713045600000.md`; `archive.tar.gz` → `archive.tar_1713045600000.gz`.
fn stamp(filename: &str, ms: i64) -> String {
    match filename.rfind('.') {
        Some(dot) if dot > 0 => format!("{}_{ms}{}", &filename[..dot], &filename[dot..]),
        _ => format!("{filename}_{ms}"),
    }
}

async fn create_file(
    State(st): State<LightfieldState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match request::decode_create(&body) {
        Ok(req) => req,
        Err(res) => return *res,
    };
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(err) => return reply::internal_error("creating file", &err),
    };
    let now = now_ms();
    let knowledge = req.purpose == Some(Purpose::Knowledge);
    let mut upload_headers = BTreeMap::from([("content-type".to_owned(), req.mime_type.clone())]);
    if knowledge {
        upload_headers.insert("if-none-match".to_owned(), "*".to_owned());
    }
    let mut files = loaded.files.lock().await;
    let seq = files.values().map(|r| r.seq + 1).max().unwrap_or(0);
    let record = FileRecord {
        id: new_id(now),
        seq,
        filename: if knowledge {
            stamp(&req.filename, now)
        } else {
            req.filename
        },
        mime_type: req.mime_type,
        size_bytes: req.size_bytes,
        status: Status::Pending,
        created_ms: now,
        completed_ms: None,
        session_expires_ms: now.saturating_add(ms(st.inner.upload_ttl)),
        upload_headers,
        uploaded: None,
    };
    let upload_url = storage::presign(
        &base_url(&headers),
        &loaded.secret,
        storage::Op::Upload,
        &record.id,
        record.session_expires_ms,
    );
    if let Err(err) = st.save(&mut files, record.clone()).await {
        return reply::internal_error("creating file", &err);
    }
    reply::json(
        StatusCode::OK,
        &CreatedJson {
            file: record.view(now),
            upload_url,
            upload_headers: &record.upload_headers,
        },
    )
}

async fn list_files(
    State(st): State<LightfieldState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return reply::bad_request("invalid_type", None, "Malformed query string.");
    };
    let (offset, limit) = match request::decode_page(&query) {
        Ok(page) => page,
        Err(res) => return *res,
    };
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(err) => return reply::internal_error("listing files", &err),
    };
    let files = loaded.files.lock().await;
    let mut all: Vec<&FileRecord> = files.values().collect();
    all.sort_by_key(|record| std::cmp::Reverse(record.seq));
    let now = now_ms();
    let data: Vec<FileJson> = all
        .iter()
        .skip(offset.min(usize::MAX as u64) as usize)
        .take(limit as usize)
        .map(|record| record.view(now))
        .collect();
    reply::json(
        StatusCode::OK,
        &serde_json::json!({ "object": "list", "data": data, "totalCount": all.len() }),
    )
}

async fn retrieve_file(State(st): State<LightfieldState>, Path(id): Path<String>) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(err) => return reply::internal_error("retrieving file", &err),
    };
    match loaded.files.lock().await.get(&id) {
        Some(record) => reply::json(StatusCode::OK, &record.view(now_ms())),
        None => unknown_file(&id),
    }
}

/// Why a PENDING file cannot complete yet, checked against what the PUT received.
fn completion_problem(record: &FileRecord, md5: Option<&str>) -> Option<Response> {
    let Some(uploaded) = &record.uploaded else {
        return Some(reply::unprocessable(
            None,
            "No file bytes were uploaded; PUT them to uploadUrl first.",
        ));
    };
    if uploaded.size != record.size_bytes {
        return Some(reply::unprocessable(
            Some("sizeBytes"),
            &format!(
                "Uploaded {} bytes but sizeBytes is {}.",
                uploaded.size, record.size_bytes
            ),
        ));
    }
    if md5.is_some_and(|md5| md5 != uploaded.md5) {
        return Some(reply::unprocessable(
            Some("md5"),
            "The md5 checksum does not match the uploaded bytes.",
        ));
    }
    None
}

fn not_pending(record: &FileRecord, status: Status, operation: &str) -> Response {
    reply::conflict(&format!(
        "Only PENDING files can be {operation}; file '{}' is {}.",
        record.id,
        status_name(status)
    ))
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Pending => "PENDING",
        Status::Completed => "COMPLETED",
        Status::Cancelled => "CANCELLED",
        Status::Expired => "EXPIRED",
    }
}

async fn complete_file(
    State(st): State<LightfieldState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let md5 = match request::decode_complete(&body) {
        Ok(md5) => md5,
        Err(res) => return *res,
    };
    let changed = leave_pending(&st, &id, "completing file", "completed", |record, now| {
        completion_problem(record, md5.as_deref()).or_else(|| {
            record.status = Status::Completed;
            record.completed_ms = Some(now);
            None
        })
    })
    .await;
    let (record, now) = match changed {
        Ok(done) => done,
        Err(res) => return res,
    };
    reply::json(StatusCode::OK, &record.view(now))
}

/// Moves the PENDING file `id` out of PENDING: `change` checks the record and edits the copy
/// that is saved, or refuses with a response. Complete and cancel share it; the saved record
/// and the time it was judged at come back.
async fn leave_pending(
    st: &LightfieldState,
    id: &str,
    doing: &str,
    verb: &str,
    change: impl FnOnce(&mut FileRecord, i64) -> Option<Response>,
) -> Result<(FileRecord, i64), Response> {
    let loaded = st
        .loaded()
        .await
        .map_err(|err| reply::internal_error(doing, &err))?;
    let mut files = loaded.files.lock().await;
    let Some(record) = files.get(id) else {
        return Err(unknown_file(id));
    };
    let now = now_ms();
    let status = record.status_at(now);
    if status != Status::Pending {
        return Err(not_pending(record, status, verb));
    }
    let mut record = record.clone();
    if let Some(refused) = change(&mut record, now) {
        return Err(refused);
    }
    st.save(&mut files, record.clone())
        .await
        .map_err(|err| reply::internal_error(doing, &err))?;
    Ok((record, now))
}

async fn cancel_file(
    State(st): State<LightfieldState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(res) = request::decode_cancel(&body) {
        return *res;
    }
    let changed = leave_pending(&st, &id, "cancelling file", "cancelled", |record, _| {
        record.status = Status::Cancelled;
        record.uploaded = None;
        None
    })
    .await;
    let (record, now) = match changed {
        Ok(done) => done,
        Err(res) => return res,
    };
    if let Err(err) = st.inner.store.delete_blob(BLOB_NS, &id).await {
        return reply::internal_error("cancelling file", &err);
    }
    reply::json(StatusCode::OK, &record.view(now))
}

async fn file_url(
    State(st): State<LightfieldState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(err) => return reply::internal_error("signing a download URL", &err),
    };
    let files = loaded.files.lock().await;
    let Some(record) = files.get(&id) else {
        return unknown_file(&id);
    };
    let now = now_ms();
    let status = record.status_at(now);
    if status != Status::Completed {
        return reply::conflict(&format!(
            "Download URLs are only available for COMPLETED files; file '{id}' is {}.",
            status_name(status)
        ));
    }
    let expires = now.saturating_add(ms(st.inner.download_ttl));
    let url = storage::presign(
        &base_url(&headers),
        &loaded.secret,
        storage::Op::Download,
        &id,
        expires,
    );
    reply::json(
        StatusCode::OK,
        &serde_json::json!({ "url": url, "expiresAt": iso_millis(expires) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knowledge_names_are_stamped_before_the_last_extension() {
        assert_eq!(stamp("playbook.md", 17), "playbook_17.md");
        assert_eq!(stamp("archive.tar.gz", 17), "archive.tar_17.gz");
        assert_eq!(stamp("README", 17), "README_17");
        assert_eq!(stamp(".env", 17), ".env_17");
    }

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(iso_millis(1_775_649_600_123), "2026-04-08T12:00:00.123Z");
    }
}
