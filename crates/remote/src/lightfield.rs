//! The Lightfield files API: a flat, id-keyed store with presigned uploads and no delete.
//!
//! Contract: `docs/api/lightfield.md`. Every API call carries `Authorization: Bearer <key>`
//! and `Lightfield-Version`; the presigned storage URLs carry neither. Listing pages through
//! `GET /v1/files` with the shared [`paging`](super::paging) driver and keeps only COMPLETED
//! files; names are not unique (the core disambiguates them). An upload is three steps: create a
//! session, `PUT` the bytes to its `uploadUrl` with exactly its `uploadHeaders`, `complete` with
//! the md5: the shared chunked driver ([`multipart`](super::multipart)) with one part; if any
//! step after the create fails, the driver cancels the session so nothing is left PENDING.
//! Reads are ranged GETs on a download URL from `/v1/files/{id}/url`, kept in the shared
//! [`UrlCache`] until shortly before it expires and fetched again when storage answers 403.
//!
//! The API key is never logged: it goes only into the `Authorization` header (which reqwest
//! marks sensitive), and error messages carry the server's message, never the request.

use std::collections::HashMap;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::http::{self, HttpClient, RequestPolicy};
use super::multipart::{self, Part, PartLayout, PartPolicy, PartUploader};
use super::paging::collect_pages;
use super::url_cache::{self, UrlCache};
use super::{
    Capabilities, Container, ContainerRef, ErrorKind, NameRules, ObjectMeta, Remote, RemoteConfig,
    RemoteError, RemoteResult, UploadSource,
};

/// The API version this client speaks.
const API_VERSION: &str = "2026-03-01";
/// Rows per `GET /v1/files` page: the API's maximum.
const PAGE_SIZE: usize = 25;
/// The API's object size limit (512 MiB).
const MAX_OBJECT_BYTES: u64 = 512 * 1024 * 1024;
/// Longest filename the API keeps.
const MAX_NAME_BYTES: usize = 255;
/// Download URLs remembered at once.
const URL_CACHE_ENTRIES: usize = 1024;

/// A Lightfield server.
pub struct LightfieldRemote {
    http: HttpClient,
    key: ApiKey,
    capabilities: Capabilities,
    /// Download URL and its expiry per file id.
    urls: UrlCache,
}

/// How API calls are made: the key in `Authorization` (and `Lightfield-Version`), a refused key
/// with a hint on what to fix. Presigned storage URLs take neither.
struct ApiKey {
    /// Sent only in the `Authorization` header of API calls.
    token: String,
}

impl RequestPolicy for ApiKey {
    type Credential = ();

    fn authorize(&self, request: RequestBuilder, _credential: &()) -> RequestBuilder {
        request
            .bearer_auth(&self.token)
            .header("Lightfield-Version", API_VERSION)
    }

    fn refine(&self, _status: StatusCode, mut err: RemoteError) -> RemoteError {
        if err.kind == ErrorKind::PermissionDenied {
            err.message
                .push_str("; pass a valid lightfield API key with --token or SESSIONFS_TOKEN");
        }
        err
    }
}

/// The API's `File` object (the fields we use).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    id: String,
    status: String,
    filename: String,
    mime_type: String,
    size_bytes: u64,
    created_at: String,
    completed_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: String,
    upload_url: String,
    upload_headers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<FileData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownloadUrl {
    url: String,
    expires_at: String,
}

fn parse_time(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(SystemTime::from)
}

fn file_path(id: &str) -> String {
    format!("/v1/files/{}", utf8_percent_encode(id, NON_ALPHANUMERIC))
}

impl LightfieldRemote {
    /// A client for the Lightfield server at `config.endpoint`; fails without a token.
    pub fn new(config: &RemoteConfig) -> RemoteResult<Self> {
        let token = config
            .token
            .clone()
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                RemoteError::new(
                    ErrorKind::PermissionDenied,
                    "lightfield needs an API key (sk_lf_...): pass --token or set SESSIONFS_TOKEN",
                )
            })?;
        Ok(Self {
            http: HttpClient::new(&config.endpoint, http::error_envelope_message)?
                .with_retry(config.retry.clone()),
            key: ApiKey { token },
            capabilities: Capabilities {
                containers: false,
                delete: false,
                range_reads: true,
                overwrite_by_name: false,
                max_object_bytes: MAX_OBJECT_BYTES,
                min_object_bytes: 1,
                upload_md5: true,
                name_rules: NameRules {
                    max_name_bytes: Some(MAX_NAME_BYTES),
                    ..NameRules::default()
                },
                // The presigned PUT needs the exact size and md5 up front.
                streaming_upload: false,
            },
            urls: UrlCache::new(URL_CACHE_ENTRIES),
        })
    }

    /// Calls the API and decodes its JSON answer; a refused key gets a hint on what to fix.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> RemoteResult<T> {
        let url = self.http.url(path_and_query);
        let build = || async {
            let request = self
                .http
                .client()
                .request(method.clone(), &url)
                .header("Accept", "application/json");
            Ok(match &body {
                Some(body) => request.json(body),
                None => request,
            })
        };
        self.http.call_json(what, &self.key, build).await
    }

    fn to_object(file: FileData) -> ObjectMeta {
        let modified = file
            .completed_at
            .as_deref()
            .and_then(parse_time)
            .or_else(|| parse_time(&file.created_at));
        ObjectMeta {
            // Ids are immutable versions: new content is always a new id.
            version: file.id.clone(),
            id: file.id,
            name: file.filename,
            size: file.size_bytes,
            modified,
            content_type: Some(file.mime_type),
            md5: None,
        }
    }

    /// A download URL for `id`: the cached one unless it is about to expire or `fresh` is set.
    async fn download_url(&self, id: &str, fresh: bool) -> RemoteResult<String> {
        if !fresh && let Some(url) = self.urls.get(id) {
            return Ok(url);
        }
        let what = format!("get a download url for {id}");
        let answer: DownloadUrl = self
            .call(&what, Method::GET, &format!("{}/url", file_path(id)), None)
            .await?;
        let expires = parse_time(&answer.expires_at).unwrap_or(SystemTime::UNIX_EPOCH);
        self.urls.put(id, answer.url.clone(), expires);
        Ok(answer.url)
    }
}

impl LightfieldRemote {
    /// Cancels the upload session `id` of the upload `what` (a failed or interrupted one), so
    /// no PENDING file stays.
    async fn cancel(&self, what: &str, id: &str) -> RemoteResult<()> {
        let cancel = format!("cancel the unfinished {what} ({id})");
        let path = format!("{}/cancel", file_path(id));
        self.call::<serde_json::Value>(&cancel, Method::POST, &path, None)
            .await
            .map(drop)
    }
}

/// A created upload session, and the md5 it must be completed with.
struct UploadSession {
    what: String,
    created: Created,
    md5: String,
}

/// Lightfield's upload in the shared driver's terms: one part, the presigned PUT.
struct Uploads<'a>(&'a LightfieldRemote);

#[async_trait]
impl PartUploader for Uploads<'_> {
    type Session = UploadSession;
    type Sent = ();
    type Completed = FileData;

    fn policy(&self) -> PartPolicy {
        PartPolicy {
            max_in_flight: 1,
            first_part_alone: false,
            presigned_parts: true,
            retry: self.0.http.retry_config().clone(),
        }
    }

    async fn start(
        &self,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<(UploadSession, PartLayout)> {
        let what = format!("upload {name:?}");
        if source.size == 0 {
            return Err(RemoteError::new(
                ErrorKind::InvalidInput,
                format!("{what}: lightfield cannot store empty files (the minimum is 1 byte)"),
            ));
        }
        if source.size > MAX_OBJECT_BYTES {
            return Err(RemoteError::new(
                ErrorKind::TooLarge,
                format!("{what}: lightfield holds files of at most 512 MiB"),
            ));
        }
        let md5 = source.md5().await?;
        let created: Created = self
            .0
            .call(
                &what,
                Method::POST,
                "/v1/files",
                Some(serde_json::json!({
                    "filename": name,
                    "mimeType": sessionfs_io::mime::for_upload(name),
                    "sizeBytes": source.size,
                })),
            )
            .await?;
        // The presigned PUT takes the whole file.
        let layout = PartLayout {
            part_size: source.size,
            first_number: 1,
        };
        Ok((UploadSession { what, created, md5 }, layout))
    }

    async fn put_part(
        &self,
        session: &UploadSession,
        part: &Part,
        source: &UploadSource,
    ) -> RemoteResult<()> {
        let what = &session.what;
        let body = reqwest::Body::wrap_stream(source.part_body(what, part.range.clone())?);
        let mut request = self
            .0
            .http
            .client()
            .put(&session.created.upload_url)
            .header("Content-Length", part.range.end - part.range.start)
            .body(body);
        for (name, value) in &session.created.upload_headers {
            request = request.header(name, value);
        }
        self.0.http.send_once(what, request).await.map(drop)
    }

    async fn complete(&self, session: &UploadSession, _parts: Vec<()>) -> RemoteResult<FileData> {
        let (what, id) = (&session.what, &session.created.id);
        let path = format!("{}/complete", file_path(id));
        let body = serde_json::json!({ "md5": session.md5 });
        let completed = self
            .0
            .call::<FileData>(what, Method::POST, &path, Some(body))
            .await;
        match completed {
            // A retried complete whose first attempt succeeded finds the file COMPLETED.
            Err(err) if err.kind == ErrorKind::Conflict => {
                let file: FileData = self.0.call(what, Method::GET, &file_path(id), None).await?;
                if file.status == "COMPLETED" {
                    Ok(file)
                } else {
                    Err(err)
                }
            }
            other => other,
        }
    }

    fn server_upload(&self, session: &UploadSession) -> Option<String> {
        Some(session.created.id.clone())
    }

    async fn abort(&self, session: &UploadSession) -> RemoteResult<()> {
        self.0.cancel(&session.what, &session.created.id).await
    }

    async fn finalize(&self, session: UploadSession, file: FileData) -> RemoteResult<ObjectMeta> {
        Ok(ObjectMeta {
            md5: Some(session.md5),
            ..LightfieldRemote::to_object(file)
        })
    }
}

#[async_trait]
impl Remote for LightfieldRemote {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn abort_upload(&self, _container: ContainerRef<'_>, id: &str) -> RemoteResult<()> {
        self.cancel("upload", id).await
    }

    fn describe(&self) -> String {
        format!("lightfield at {}", self.http.endpoint())
    }

    /// Lightfield is flat, so there are no containers; the call still asks for one row of the
    /// listing so that a mount with a wrong key fails at once with a clear message.
    async fn list_containers(&self) -> RemoteResult<Vec<Container>> {
        let _: Page = self
            .call("list files", Method::GET, "/v1/files?limit=1", None)
            .await?;
        Ok(Vec::new())
    }

    async fn list(&self, _container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>> {
        let id = |file: &FileData| file.id.clone();
        let rows = collect_pages(PAGE_SIZE, id, |offset| async move {
            let path = format!("/v1/files?limit={PAGE_SIZE}&offset={offset}");
            let page: Page = self.call("list files", Method::GET, &path, None).await?;
            Ok(page.data)
        })
        .await?;
        let mut seen = std::collections::HashSet::new();
        Ok(rows
            .into_iter()
            .filter(|file| file.status == "COMPLETED")
            // A file created while we paged shifts the rows, so one may come twice.
            .filter(|file| seen.insert(file.id.clone()))
            .map(Self::to_object)
            .collect())
    }

    async fn read(
        &self,
        _container: ContainerRef<'_>,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let what = format!("read {:?} ({})", object.name, object.id);
        // Storage refuses an expired URL with 403.
        let stale = |err: &RemoteError| err.kind == ErrorKind::PermissionDenied;
        url_cache::read_with_fresh_url(&self.http, &what, &range, stale, |fresh| {
            self.download_url(&object.id, fresh)
        })
        .await
    }

    async fn upload(
        &self,
        _container: ContainerRef<'_>,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<ObjectMeta> {
        multipart::upload_in_parts(&Uploads(self), name, source).await
    }

    async fn delete(&self, _container: ContainerRef<'_>, _object: &ObjectMeta) -> RemoteResult<()> {
        Err(RemoteError::new(
            ErrorKind::Unsupported,
            "lightfield has no delete",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_missing_token_is_refused_at_connect_time() {
        let config = RemoteConfig::new("http://127.0.0.1:1", None);
        let err = LightfieldRemote::new(&config).err().expect("no token");
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert!(err.message.contains("--token"), "{}", err.message);
    }
}
