//! The Mix REST API: sessions are containers, session files are objects.
//!
//! Contract: `docs/api/mix.md`. No auth. Uploads are one multipart `POST` with a part named
//! `file`; the server rewrites names (whitespace, inner dots, `_` runs), which [`NameRules`]
//! declares so the core can encode around it. Listings are not paged. Reads use `Range`; a
//! server that ignores it (200 with the whole body) is handled by skipping to the offset.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{self, HttpClient, Plain, RequestPolicy};
use super::turns::{OrderedTurns, Turn};
use super::{
    ByteStream, Capabilities, Container, ContainerRef, ErrorKind, NameRules, ObjectMeta, Remote,
    RemoteConfig, RemoteError, RemoteResult, UploadSource,
};

/// Characters escaped in a path segment: everything but RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How the Mix server rewrites uploaded names (`sanitizeFilename`), so the core encodes
/// around it.
pub const NAME_RULES: NameRules = NameRules {
    rewrites_whitespace: true,
    rewrites_inner_dots: true,
    collapses_underscores: true,
    max_name_bytes: None,
};

/// The browser mode we create sessions with; Mix requires one and this one needs no extras.
/// Largest file we store on Mix (64 GiB): the server's code has no limit (its spec declares
/// 413 "File too large (max 32MB)" but no handler sends it), so the bound is ours, far above
/// any file of a session and far below what a stray offset would make us send.
pub const MAX_OBJECT_BYTES: u64 = 64 << 30;
const BROWSER_MODE: &str = "local-browser-service";

/// Objects with downloads left open when the server ignored `Range`.
const OPEN_BODIES: usize = 4;
/// Downloads of one object kept open at different positions.
const BODIES_PER_OBJECT: usize = 3;
/// How far ahead an open download may be skipped to instead of downloading from the start.
const MAX_FORWARD_SKIP_BYTES: u64 = 64 << 20;
/// Skipped bytes an open download keeps for reads that arrive slightly out of order (block
/// requests run in parallel), so they need no new download from byte 0.
const MAX_SKIPPED_BYTES: u64 = 16 << 20;
/// Skipped bytes kept by all open downloads together (each may hold up to
/// [`MAX_SKIPPED_BYTES`] more while a read uses it).
const MAX_TOTAL_SKIPPED_BYTES: u64 = 32 << 20;

/// A whole-body download kept open at `position`, with the most recent bytes it skipped.
#[derive(Debug)]
struct OpenBody {
    position: u64,
    cursor: http::BodyCursor,
    skipped: std::collections::VecDeque<(u64, Bytes)>,
    skipped_bytes: u64,
}

impl OpenBody {
    fn new(cursor: http::BodyCursor) -> Self {
        Self {
            position: 0,
            cursor,
            skipped: Default::default(),
            skipped_bytes: 0,
        }
    }

    /// Whether a read at `start` can be served without a new download.
    fn serves(&self, start: u64) -> bool {
        let ahead = start >= self.position && start - self.position <= MAX_FORWARD_SKIP_BYTES;
        ahead
            || self
                .skipped
                .iter()
                .any(|(at, bytes)| (*at..*at + bytes.len() as u64).contains(&start))
    }

    /// Drops the oldest piece of skipped bytes and returns its length.
    fn forget_oldest_skipped(&mut self) -> u64 {
        let Some((_, oldest)) = self.skipped.pop_front() else {
            return 0;
        };
        self.skipped_bytes -= oldest.len() as u64;
        oldest.len() as u64
    }

    /// `wanted` bytes at `start` (fewer at the end): from the skipped bytes, or by reading on.
    async fn read(&mut self, start: u64, wanted: usize) -> Result<Bytes, reqwest::Error> {
        if let Some((at, bytes)) = self
            .skipped
            .iter()
            .find(|(at, bytes)| (*at..*at + bytes.len() as u64).contains(&start))
        {
            let from = (start - at) as usize;
            return Ok(bytes.slice(from..(from + wanted).min(bytes.len())));
        }
        if start > self.position {
            // Only the last MAX_SKIPPED_BYTES of the gap are kept; the rest is dropped as it
            // arrives (a download from byte 0 to a far offset once held the whole gap).
            let gap = start - self.position;
            let dropped = gap.saturating_sub(MAX_SKIPPED_BYTES);
            let kept = self.cursor.read(dropped, (gap - dropped) as usize).await?;
            self.skipped_bytes += kept.len() as u64;
            self.skipped.push_back((self.position + dropped, kept));
            while self.skipped_bytes > MAX_SKIPPED_BYTES {
                self.forget_oldest_skipped();
            }
            self.position = start;
        }
        let data = self.cursor.read(0, wanted).await?;
        self.position += data.len() as u64;
        Ok(data)
    }
}

/// A Mix server.
pub struct MixRemote {
    http: HttpClient,
    capabilities: Capabilities,
    /// Whole-body downloads (the server ignored `Range`: the newest server does for uploaded
    /// files) kept open at their position, by URL and version, so that a sequential reader
    /// costs one GET per object instead of one per block. Never held across an await.
    open_bodies: std::sync::Mutex<lru::LruCache<String, Vec<OpenBody>>>,
    /// Set once the server has honoured a `Range` (206). Until then, and for good once it
    /// ignores one (200), reads of one object take turns in order of offset, so parallel block
    /// requests continue one download rather than each starting its own from byte 0.
    ranges_honoured: std::sync::atomic::AtomicBool,
    /// The turns of reads while ranges are not known to work.
    read_turns: OrderedTurns,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionData {
    id: String,
    title: String,
    created_at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileInfo {
    name: String,
    size: u64,
    modified: i64,
    is_dir: bool,
}

impl MixRemote {
    /// A client for the Mix server at `config.endpoint`.
    pub fn new(config: &RemoteConfig) -> RemoteResult<Self> {
        Ok(Self {
            http: HttpClient::new(&config.endpoint, http::error_envelope_message)?
                .with_retry(config.retry.clone()),
            open_bodies: std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(OPEN_BODIES).expect("non-zero"),
            )),
            ranges_honoured: std::sync::atomic::AtomicBool::new(false),
            read_turns: Default::default(),
            capabilities: Capabilities {
                containers: true,
                delete: true,
                range_reads: true,
                overwrite_by_name: true,
                max_object_bytes: MAX_OBJECT_BYTES,
                min_object_bytes: 0,
                upload_md5: false,
                name_rules: NAME_RULES,
                streaming_upload: true,
            },
        })
    }

    /// Unless the server is known to honour `Range`, waits for the turn of a read of `key` at
    /// `offset` (see `turns`).
    async fn read_turn(&self, key: &str, offset: u64) -> Option<Turn> {
        if self
            .ranges_honoured
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        Some(self.read_turns.take(key, offset).await)
    }

    /// Fails with `Conflict` when a download response describes another version than
    /// `object` (its total size or its whole-second mtime differ): the file was replaced
    /// between the listing and this request, and its bytes must not be cached as the old ones.
    fn check_version(
        what: &str,
        response: &reqwest::Response,
        object: &ObjectMeta,
    ) -> RemoteResult<()> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let size = match response.status() {
            StatusCode::PARTIAL_CONTENT => header("Content-Range")
                .and_then(|range| range.rsplit_once('/'))
                .and_then(|(_, total)| total.parse::<u64>().ok()),
            _ => response.content_length(),
        };
        let modified =
            header("Last-Modified").and_then(|date| httpdate::parse_http_date(date).ok());
        let size_differs = size.is_some_and(|size| size != object.size);
        let modified_differs = matches!(
            (object.modified, modified),
            (Some(expected), Some(served)) if expected != served
        );
        if size_differs || modified_differs {
            return Err(RemoteError::new(
                ErrorKind::Conflict,
                format!("{what}: the file changed on the server while being read; reopen it"),
            ));
        }
        Ok(())
    }

    /// Continues an open whole-body download of `key` for `wanted` bytes at `start`, if one
    /// can serve them; `None` (a new request is needed) if none can or it broke.
    async fn continue_open_body(&self, key: &str, start: u64, wanted: usize) -> Option<Bytes> {
        let mut body = self.take_open_body(key, start)?;
        let data = body.read(start, wanted).await.ok()?;
        self.keep_open_body(key.to_string(), body);
        Some(data)
    }

    /// A new GET of `range` of `object` at `url`. A server that ignores `Range` answers with
    /// the whole body: it is skipped to the offset and kept open under `key` for the reads
    /// that follow.
    async fn download(
        &self,
        what: &str,
        url: &str,
        key: &str,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes> {
        let wanted = (range.end - range.start) as usize;
        self.http
            .retrying(|| async {
                let response = self.http.get_range(what, url, &range).await?;
                super::answers::check_content_range(what, &response, &range)?;
                match response.status() {
                    StatusCode::PARTIAL_CONTENT => {
                        self.ranges_honoured
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        Self::check_version(what, &response, object)?;
                        http::collect_range(response, 0, wanted)
                            .await
                            .map_err(|err| self.http.transport_error(what, &err))
                    }
                    // The server ignored Range: skip to the offset in the whole body, and keep
                    // the download open for the reads that follow.
                    StatusCode::OK => {
                        log::debug!("whole-body download for a read at {}", range.start);
                        Self::check_version(what, &response, object)?;
                        let mut body = OpenBody::new(http::BodyCursor::new(response));
                        let data = body
                            .read(range.start, wanted)
                            .await
                            .map_err(|err| self.http.transport_error(what, &err))?;
                        self.keep_open_body(key.to_string(), body);
                        Ok(data)
                    }
                    StatusCode::RANGE_NOT_SATISFIABLE => Ok(Bytes::new()),
                    _ => Err(self.http.status_error(what, response).await),
                }
            })
            .await
    }

    /// An open whole-body download of `key` that can serve a read at `start`, taken out.
    fn take_open_body(&self, key: &str, start: u64) -> Option<OpenBody> {
        let mut bodies = self.open_bodies.lock().unwrap_or_else(|p| p.into_inner());
        let open = bodies.get_mut(key)?;
        let index = open.iter().position(|body| body.serves(start))?;
        Some(open.remove(index))
    }

    /// Keeps a whole-body download open for the reads that follow; a reader far ahead of
    /// another gets a download of its own, up to [`BODIES_PER_OBJECT`].
    fn keep_open_body(&self, key: String, body: OpenBody) {
        let mut bodies = self.open_bodies.lock().unwrap_or_else(|p| p.into_inner());
        let open = bodies.get_or_insert_mut(key, Vec::new);
        if open.len() >= BODIES_PER_OBJECT {
            open.remove(0);
        }
        open.push(body);
        // Over the shared cap, the oldest skipped bytes of the fullest download go first.
        let mut total: u64 = bodies
            .iter()
            .flat_map(|(_, open)| open.iter())
            .map(|body| body.skipped_bytes)
            .sum();
        while total > MAX_TOTAL_SKIPPED_BYTES {
            let fullest = bodies
                .iter_mut()
                .flat_map(|(_, open)| open.iter_mut())
                .max_by_key(|body| body.skipped_bytes)
                .expect("bytes are counted");
            total -= fullest.forget_oldest_skipped();
        }
    }

    /// A GET of `url` whose answer is JSON of type `T`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
    ) -> RemoteResult<T> {
        let build = || async {
            Ok(self
                .http
                .client()
                .get(url)
                .header("Accept", "application/json"))
        };
        self.http.call_json(what, &Plain, build).await
    }

    fn session_path(id: &str) -> String {
        format!("/api/sessions/{}", utf8_percent_encode(id, SEGMENT))
    }

    fn file_path(session: &str, name: &str) -> String {
        format!(
            "{}/files/{}",
            Self::session_path(session),
            utf8_percent_encode(name, SEGMENT)
        )
    }

    fn container(container: ContainerRef<'_>) -> RemoteResult<&str> {
        container.ok_or_else(|| {
            RemoteError::new(
                ErrorKind::InvalidInput,
                "mix keeps files only inside sessions",
            )
        })
    }

    /// The multipart `POST` that uploads `part` as `name`.
    fn upload_request(
        &self,
        url: &str,
        name: &str,
        part: reqwest::multipart::Part,
    ) -> RemoteResult<reqwest::RequestBuilder> {
        let part = part
            .file_name(name.to_string())
            .mime_str("application/octet-stream")
            .map_err(|err| RemoteError::protocol(err.to_string()))?;
        // Names are sent as raw UTF-8 (what Go's multipart reader expects); the name encoding
        // guarantees they hold no quote, backslash or control character.
        let form = reqwest::multipart::Form::new()
            .percent_encode_noop()
            .part("file", part);
        Ok(self
            .http
            .client()
            .post(url)
            .header("Accept", "application/json")
            .multipart(form))
    }

    fn to_container(&self, session: SessionData) -> Container {
        let created = chrono::DateTime::parse_from_rfc3339(&session.created_at)
            .map(SystemTime::from)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Container {
            id: session.id,
            title: session.title,
            created,
            group: None,
        }
    }

    fn to_object(file: FileInfo) -> ObjectMeta {
        // The newest server reports `modified: 0`; then the size alone versions the object.
        let modified = (file.modified > 0)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(file.modified as u64));
        ObjectMeta {
            id: file.name.clone(),
            version: format!("{}:{}", file.size, file.modified),
            name: file.name,
            size: file.size,
            modified,
            content_type: None,
            md5: None,
        }
    }
}

#[async_trait]
impl Remote for MixRemote {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn describe(&self) -> String {
        format!("mix at {}", self.http.endpoint())
    }

    async fn list_containers(&self) -> RemoteResult<Vec<Container>> {
        let what = "list sessions";
        let url = self.http.url("/api/sessions?includeSubagents=false");
        // An older server generation answers `null` for no sessions.
        let sessions: Option<Vec<SessionData>> = self.get_json(what, &url).await?;
        Ok(sessions
            .unwrap_or_default()
            .into_iter()
            .map(|session| self.to_container(session))
            .collect())
    }

    async fn create_container(&self, title: &str) -> RemoteResult<Container> {
        let what = format!("create session {title:?}");
        let url = self.http.url("/api/sessions");
        let body = serde_json::json!({ "title": title, "browserMode": BROWSER_MODE });
        // Retried only when the server refused the request before handling it (429, 503): a
        // create that failed otherwise may have succeeded, and a retry would make a second
        // session with the same title.
        let response = self
            .http
            .retrying(|| async {
                let response = self
                    .http
                    .client()
                    .post(&url)
                    .header("Accept", "application/json")
                    .json(&body)
                    .send()
                    .await
                    .map_err(|err| RemoteError {
                        temporary: false,
                        ..self.http.transport_error(&what, &err)
                    })?;
                match response.status() {
                    StatusCode::CREATED => Ok(response),
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                        Err(self.http.status_error(&what, response).await)
                    }
                    _ => Err(RemoteError {
                        temporary: false,
                        ..self.http.status_error(&what, response).await
                    }),
                }
            })
            .await?;
        let session: SessionData = self.http.json(&what, response).await?;
        Ok(self.to_container(session))
    }

    async fn remove_container(&self, id: &str) -> RemoteResult<()> {
        let url = self.http.url(&Self::session_path(id));
        let what = format!("delete session {id}");
        self.http
            .call(&what, &Plain, || async {
                Ok(self.http.client().delete(&url))
            })
            .await?;
        Ok(())
    }

    async fn list(&self, container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>> {
        let session = Self::container(container)?;
        let what = format!("list files of session {session}");
        let url = self
            .http
            .url(&format!("{}/files", Self::session_path(session)));
        let files: Option<Vec<FileInfo>> = self.get_json(&what, &url).await?;
        Ok(files
            .unwrap_or_default()
            .into_iter()
            // Older servers list their thumbnail cache directory; it holds no user files.
            .filter(|file| !file.is_dir)
            .map(Self::to_object)
            .collect())
    }

    async fn read(
        &self,
        container: ContainerRef<'_>,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes> {
        let session = Self::container(container)?;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let what = format!("read {:?} in session {session}", object.name);
        let url = self.http.url(&Self::file_path(session, &object.name));
        let wanted = (range.end - range.start) as usize;
        let key = format!("{url}#{}", object.version);
        let mut turn = self.read_turn(&key, range.start).await;
        let data = match self.continue_open_body(&key, range.start, wanted).await {
            Some(data) => data,
            None => {
                self.download(&what, &url, &key, object, range.clone())
                    .await?
            }
        };
        if let Some(turn) = &mut turn {
            turn.continue_at(range.start + data.len() as u64);
        }
        Ok(data)
    }

    async fn upload(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<ObjectMeta> {
        let session = Self::container(container)?;
        let what = format!("upload {name:?} to session {session}");
        let url = self
            .http
            .url(&format!("{}/files/upload", Self::session_path(session)));
        let build = || async {
            let body = reqwest::Body::wrap_stream(source.body(&what)?);
            let part = reqwest::multipart::Part::stream_with_length(body, source.size);
            self.upload_request(&url, name, part)
        };
        let file: FileInfo = self.http.call_json(&what, &FormCutAgain, build).await?;
        Ok(Self::to_object(file))
    }

    async fn upload_stream(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        body: ByteStream,
    ) -> RemoteResult<ObjectMeta> {
        let session = Self::container(container)?;
        let what = format!("upload {name:?} to session {session} while it is written");
        let url = self
            .http
            .url(&format!("{}/files/upload", Self::session_path(session)));
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body));
        let request = self.upload_request(&url, name, part)?;
        let response = self.http.transmit(&what, request).await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.http.status_error(&what, response).await);
        }
        let file: FileInfo = self.http.json(&what, response).await?;
        Ok(Self::to_object(file))
    }

    async fn delete(&self, container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()> {
        let session = Self::container(container)?;
        let url = self.http.url(&Self::file_path(session, &object.name));
        let what = format!("delete {:?} in session {session}", object.name);
        self.http
            .call(&what, &Plain, || async {
                Ok(self.http.client().delete(&url))
            })
            .await?;
        Ok(())
    }
}

/// Uploads: [`Plain`], and the server's 400 for a form that ended early ("failed to parse
/// multipart form", Go's `ParseMultipartForm` failing) is retried: the body was cut on the way,
/// so the upload (which replaces the file whole) is sent again like any transient failure. Seen
/// on the wan profile.
struct FormCutAgain;

impl RequestPolicy for FormCutAgain {
    type Credential = ();

    fn refine(&self, _status: StatusCode, mut err: RemoteError) -> RemoteError {
        err.temporary |= err.kind == ErrorKind::InvalidInput
            && err.message.contains("failed to parse multipart form");
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_form_cut_on_the_way_is_sent_again() {
        let refused = |message: &str| RemoteError::new(ErrorKind::InvalidInput, message);
        let cut = refused(
            "upload: server answered 400 Bad Request: Validation error for field 'form': failed \
             to parse multipart form",
        );
        let refined = FormCutAgain.refine(StatusCode::BAD_REQUEST, cut);
        assert!(refined.temporary);
        assert_eq!(refined.kind, ErrorKind::InvalidInput);
        let other = refused("upload: server answered 400 Bad Request: bad name");
        assert!(
            !FormCutAgain
                .refine(StatusCode::BAD_REQUEST, other)
                .temporary
        );
        let conflict = RemoteError::new(ErrorKind::Conflict, "failed to parse multipart form");
        assert!(
            !FormCutAgain
                .refine(StatusCode::CONFLICT, conflict)
                .temporary
        );
    }
}
