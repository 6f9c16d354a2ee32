//! The Mix REST API: sessions are containers, session files are objects.
//!
//! Contract: `shared/api/mix.md`. No auth. Uploads are one multipart `POST` with a part named
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

use super::http::{self, HttpClient};
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
const BROWSER_MODE: &str = "local-browser-service";

/// A Mix server.
pub struct MixRemote {
    http: HttpClient,
    capabilities: Capabilities,
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
            capabilities: Capabilities {
                containers: true,
                delete: true,
                range_reads: true,
                overwrite_by_name: true,
                max_object_bytes: None,
                min_object_bytes: 0,
                upload_md5: false,
                name_rules: NAME_RULES,
                streaming_upload: true,
            },
        })
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

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> RemoteResult<T> {
        let body = response
            .bytes()
            .await
            .map_err(|err| self.http.transport_error(what, &err))?;
        serde_json::from_slice(&body).map_err(|err| {
            RemoteError::protocol(format!(
                "{what}: {} sent malformed JSON ({err})",
                self.http.endpoint()
            ))
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
        let response = self
            .http
            .send(what, || async {
                Ok(self
                    .http
                    .client()
                    .get(&url)
                    .header("Accept", "application/json"))
            })
            .await?;
        // An older server generation answers `null` for no sessions.
        let sessions: Option<Vec<SessionData>> = self.json(what, response).await?;
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
        // Not retried: a create that timed out may have succeeded, and a retry would make a
        // second session with the same title.
        let response = self
            .http
            .client()
            .post(&url)
            .header("Accept", "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|err| self.http.transport_error(&what, &err))?;
        if response.status() != StatusCode::CREATED {
            return Err(self.http.status_error(&what, response).await);
        }
        let session: SessionData = self.json(&what, response).await?;
        Ok(self.to_container(session))
    }

    async fn remove_container(&self, id: &str) -> RemoteResult<()> {
        let url = self.http.url(&Self::session_path(id));
        self.http
            .send(&format!("delete session {id}"), || async {
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
        let response = self
            .http
            .send(&what, || async {
                Ok(self
                    .http
                    .client()
                    .get(&url)
                    .header("Accept", "application/json"))
            })
            .await?;
        let files: Option<Vec<FileInfo>> = self.json(&what, response).await?;
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
        self.http
            .retrying(&what, || async {
                let response = self
                    .http
                    .client()
                    .get(&url)
                    .header("Range", format!("bytes={}-{}", range.start, range.end - 1))
                    .send()
                    .await
                    .map_err(|err| self.http.transport_error(&what, &err))?;
                let skip = match response.status() {
                    StatusCode::PARTIAL_CONTENT => 0,
                    // The server ignored Range: skip to the offset in the full body.
                    StatusCode::OK => range.start,
                    StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Bytes::new()),
                    _ => return Err(self.http.status_error(&what, response).await),
                };
                http::collect_range(response, skip, wanted)
                    .await
                    .map_err(|err| self.http.transport_error(&what, &err))
            })
            .await
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
        let response =
            self.http
                .send(&what, || async {
                    let file = tokio::fs::File::open(&source.path).await.map_err(|err| {
                        RemoteError::new(
                            ErrorKind::Protocol,
                            format!("{what}: cannot open the staged copy: {err}"),
                        )
                    })?;
                    let body = reqwest::Body::wrap_stream(
                        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
                    );
                    let part = reqwest::multipart::Part::stream_with_length(body, source.size);
                    self.upload_request(&url, name, part)
                })
                .await?;
        let file: FileInfo = self.json(&what, response).await?;
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
        let response = self
            .upload_request(&url, name, part)?
            .send()
            .await
            .map_err(|err| self.http.transport_error(&what, &err))?;
        if response.status() != StatusCode::CREATED {
            return Err(self.http.status_error(&what, response).await);
        }
        let file: FileInfo = self.json(&what, response).await?;
        Ok(Self::to_object(file))
    }

    async fn delete(&self, container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()> {
        let session = Self::container(container)?;
        let url = self.http.url(&Self::file_path(session, &object.name));
        self.http
            .send(
                &format!("delete {:?} in session {session}", object.name),
                || async { Ok(self.http.client().delete(&url)) },
            )
            .await?;
        Ok(())
    }
}
