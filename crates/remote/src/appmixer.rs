//! The Appmixer files API: a flat, id-keyed store with chunked multipart uploads behind a JWT
//! sign-in.
//!
//! Contract: `docs/api/appmixer.md` (the emulator in `emulator::appmixer` is the reference
//! where the docs are silent). Every call but the sign-in carries `Authorization: Bearer
//! <JWT>`; errors are Hapi/Boom bodies `{"statusCode","error","message"}` ([`boom_message`]).
//!
//! - **Sign-in**: `POST /user/auth` with `{"email","password"}` gives the JWT, at the first call
//!   (the mount makes one at once, so a wrong password stops it). A ready JWT (`--token`) is used
//!   as given. When the token's `exp` claim has passed, or a call answers 401, the client signs
//!   in again (at most once per call, and once for all the calls that failed together: the
//!   sign-in lock) and sends that call again; without a password the 401 is returned with a hint.
//!   The token, the sign-in and the calls' [`RequestPolicy`](super::http::RequestPolicy) live in
//!   the private part `auth`.
//! - **Listing**: `GET /files?limit=&offset=&sort=uploadDate:1,fileId:1` through the shared
//!   [`paging`](super::paging) driver (oldest first, so files created while we page land after
//!   the rows still to come), then `GET /files/count`: when a delete shifted the rows and the
//!   count disagrees, the listing is paged again (a few times at most). Names are not unique;
//!   the core disambiguates them.
//! - **Upload**: the shared chunked driver ([`multipart`](super::multipart)). Chunk 1 goes
//!   alone and creates the file; its answer's `fileId` is kept in the session ([`OnceLock`]) and
//!   sent with chunks 2..N, `--upload-parallel` at a time (default 1: in order, since the real
//!   server's handling of chunks out of order is unknown). A failed upload deletes the partial
//!   file. A 0-byte file is one empty chunk.
//! - **Read**: ranged `GET /files/:id`; a server that ignores Range (200) is skipped forward.
//!
//! Invariants: the password and the JWT are never logged: they go only into the sign-in body
//! and the `Authorization` header (which reqwest marks sensitive), and error messages carry the
//! server's message, never the request. A file's id is its version (new content is a new file).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{OnceLock, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::RequestBuilder;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde::de::DeserializeOwned;

mod auth;

use self::auth::{Auth, CREDENTIALS_HINT, Credentials, Token};
use super::http::HttpClient;
use super::multipart::{self, Part, PartLayout, PartPolicy, PartUploader};
use super::paging::collect_pages;
use super::{
    Capabilities, Container, ContainerRef, ErrorKind, NameRules, ObjectMeta, Remote, RemoteConfig,
    RemoteError, RemoteResult, UploadSource,
};

/// Bytes per upload chunk unless `--chunk-size` says otherwise.
pub const DEFAULT_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
/// Rows per `GET /files` page (the API documents no maximum; this keeps pages small).
/// Largest file we store on Appmixer (64 GiB, 8192 chunks of the default size): the docs give
/// no limit, so the bound is ours, as on Mix.
pub const MAX_OBJECT_BYTES: u64 = 64 << 30;
const PAGE_SIZE: usize = 100;
/// How often a listing is paged again when `/files/count` disagrees with it.
const LIST_ATTEMPTS: usize = 3;
/// The stable order listings are paged in: oldest first, ties by id.
const LIST_SORT: &str = "uploadDate:1,fileId:1";
/// An Appmixer server.
pub struct AppmixerRemote {
    http: HttpClient,
    capabilities: Capabilities,
    /// Bytes per chunk.
    chunk_bytes: u64,
    /// Chunks in flight per file after the first.
    upload_parallel: usize,
    auth: Auth,
}

/// The API's File object (the fields we use).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    file_id: String,
    filename: String,
    length: u64,
    upload_date: Option<String>,
    md5: Option<String>,
    content_type: Option<String>,
}

impl FileData {
    fn into_object(self) -> ObjectMeta {
        ObjectMeta {
            // Ids are immutable versions: new content is always a new file.
            version: self.file_id.clone(),
            id: self.file_id,
            name: self.filename,
            size: self.length,
            modified: self.upload_date.as_deref().and_then(parse_time),
            content_type: self.content_type,
            md5: self.md5.filter(|md5| !md5.is_empty()),
        }
    }
}

#[derive(Deserialize)]
struct Count {
    count: u64,
}

/// Reads a Hapi/Boom error body `{"statusCode","error","message"}` (the status is in the log
/// line already, so only the message is kept), its control characters as spaces: the message
/// ends up in one log line, and a newline from the server must not start a line of its own.
pub fn boom_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Boom {
        /// Required, so that only a Boom body matches; its value is in the status line.
        #[allow(dead_code)]
        status_code: u16,
        message: String,
    }
    serde_json::from_slice::<Boom>(body)
        .ok()
        .map(|boom| boom.message.replace(char::is_control, " "))
}

fn parse_time(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(SystemTime::from)
}

fn file_path(prefix: &str, id: &str) -> String {
    format!("{prefix}{}", utf8_percent_encode(id, NON_ALPHANUMERIC))
}

impl AppmixerRemote {
    /// A client for the Appmixer server at `config.endpoint`; fails without credentials
    /// (`user` with `password`, or a ready JWT in `token`).
    pub fn new(config: &RemoteConfig) -> RemoteResult<Self> {
        let token = config.token.as_deref().filter(|t| !t.is_empty());
        let login = match (&config.user, &config.password) {
            (Some(email), Some(password)) if !email.is_empty() && !password.is_empty() => {
                Some(Credentials {
                    email: email.clone(),
                    password: password.clone(),
                })
            }
            _ => None,
        };
        if login.is_none() && token.is_none() {
            let missing = match &config.user {
                Some(_) => "a password for --user",
                None => "credentials",
            };
            return Err(RemoteError::new(
                ErrorKind::PermissionDenied,
                format!("appmixer needs {missing}: {CREDENTIALS_HINT}"),
            ));
        }
        Ok(Self {
            http: HttpClient::new(&config.endpoint, boom_message)?.with_retry(config.retry.clone()),
            capabilities: Capabilities {
                containers: false,
                delete: true,
                range_reads: true,
                overwrite_by_name: false,
                // The docs give no name rules and no size limit; the bound is ours.
                max_object_bytes: MAX_OBJECT_BYTES,
                min_object_bytes: 0,
                name_rules: NameRules::default(),
                upload_md5: false,
                streaming_upload: false,
            },
            chunk_bytes: config.part_size.unwrap_or(DEFAULT_CHUNK_BYTES).max(1),
            upload_parallel: config.upload_parallel.unwrap_or(1).max(1),
            auth: Auth {
                login,
                signing_in: tokio::sync::Mutex::new(()),
                token: RwLock::new(token.map(Token::new)),
            },
        })
    }

    /// A signed GET of `path_and_query`, its JSON answer decoded.
    async fn get<T: DeserializeOwned>(&self, what: &str, path_and_query: &str) -> RemoteResult<T> {
        let url = self.http.url(path_and_query);
        let build = || async {
            Ok(self
                .http
                .client()
                .get(&url)
                .header("Accept", "application/json"))
        };
        self.http.call_json(what, &self.auth, build).await
    }

    /// Pages through every complete file once (rows may repeat if the listing shifted).
    async fn list_once(&self) -> RemoteResult<Vec<FileData>> {
        let id = |file: &FileData| file.file_id.clone();
        collect_pages(PAGE_SIZE, id, |offset| async move {
            let path = format!("/files?limit={PAGE_SIZE}&offset={offset}&sort={LIST_SORT}");
            self.get::<Vec<FileData>>("list files", &path).await
        })
        .await
    }

    /// The multipart `POST /files` of one chunk; its body is reopened for every attempt.
    fn chunk_request(
        &self,
        session: &UploadSession,
        part: &Part,
        source: &UploadSource,
    ) -> RemoteResult<RequestBuilder> {
        let length = part.range.end - part.range.start;
        let body = reqwest::Body::wrap_stream(source.part_body(&session.what, part.range.clone())?);
        let file = reqwest::multipart::Part::stream_with_length(body, length)
            .file_name(session.name.clone())
            .mime_str(sessionfs_io::mime::for_upload(&session.name))
            .map_err(|err| RemoteError::protocol(format!("{}: {err}", session.what)))?;
        let mut request = self
            .http
            .client()
            .post(self.http.url("/files"))
            .header("Accept", "application/json")
            .header("uploader-chunk-number", part.number)
            .header("uploader-chunks-total", part.count)
            .header("uploader-chunk-size", length)
            .multipart(reqwest::multipart::Form::new().part("file", file));
        match session.file_id.get() {
            Some(id) => request = request.header("uploader-file-id", id.as_str()),
            None if part.number == 1 => {
                // Sent as its UTF-8 bytes (what the emulator reads); the core's name encoding
                // leaves no control characters in it.
                let name = HeaderValue::from_bytes(session.name.as_bytes()).map_err(|_| {
                    RemoteError::new(
                        ErrorKind::InvalidInput,
                        format!("{}: the name cannot be sent in a header", session.what),
                    )
                })?;
                request = request.header("uploader-file-name", name);
            }
            None => {
                return Err(RemoteError::protocol(format!(
                    "{}: chunk {} is ready before chunk 1 created the file",
                    session.what, part.number
                )));
            }
        }
        Ok(request)
    }
}

/// One upload: its name, and the file chunk 1 created.
struct UploadSession {
    what: String,
    name: String,
    size: u64,
    /// Set once, from chunk 1's answer.
    file_id: OnceLock<String>,
}

/// Appmixer's upload in the shared driver's terms: chunk 1 creates the file, the rest join it.
struct Uploads<'a>(&'a AppmixerRemote);

#[async_trait]
impl PartUploader for Uploads<'_> {
    type Session = UploadSession;
    type Sent = FileData;
    type Completed = FileData;

    fn policy(&self) -> PartPolicy {
        PartPolicy {
            max_in_flight: self.0.upload_parallel,
            first_part_alone: true,
            presigned_parts: false,
            retry: self.0.http.retry_config().clone(),
        }
    }

    async fn start(
        &self,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<(UploadSession, PartLayout)> {
        let session = UploadSession {
            what: format!("upload {name:?}"),
            name: name.to_owned(),
            size: source.size,
            file_id: OnceLock::new(),
        };
        let layout = PartLayout {
            part_size: self.0.chunk_bytes,
            first_number: 1,
        };
        Ok((session, layout))
    }

    async fn put_part(
        &self,
        session: &UploadSession,
        part: &Part,
        source: &UploadSource,
    ) -> RemoteResult<FileData> {
        let what = format!("{} (chunk {} of {})", session.what, part.number, part.count);
        let build = || async { self.0.chunk_request(session, part, source) };
        let response = self.0.http.attempt(&what, &self.0.auth, &build).await?;
        let file: FileData = self.0.http.json(&what, response).await?;
        if part.number == 1 {
            // A retried chunk 1 whose first attempt was stored leaves that incomplete file
            // behind, unlisted: the API has no way to make the create idempotent.
            let _ = session.file_id.set(file.file_id.clone());
        }
        Ok(file)
    }

    async fn complete(
        &self,
        session: &UploadSession,
        parts: Vec<FileData>,
    ) -> RemoteResult<FileData> {
        // With chunks in flight together, the last one answered need not be the last stored.
        let newest = parts.into_iter().max_by_key(|file| file.length);
        let file = match newest {
            Some(file) if file.length == session.size => file,
            _ => {
                let id = session.file_id.get().expect("chunk 1 was stored");
                let path = file_path("/files/metadata/", id);
                self.0.get(&session.what, &path).await?
            }
        };
        if file.length != session.size {
            return Err(RemoteError::protocol(format!(
                "{}: appmixer holds {} of its {} bytes after every chunk was sent",
                session.what, file.length, session.size
            )));
        }
        Ok(file)
    }

    fn server_upload(&self, session: &UploadSession) -> Option<String> {
        session.file_id.get().cloned()
    }

    async fn abort(&self, session: &UploadSession) -> RemoteResult<()> {
        let Some(id) = session.file_id.get() else {
            return Ok(());
        };
        self.0.delete_partial(&session.what, id).await
    }

    async fn finalize(&self, _session: UploadSession, file: FileData) -> RemoteResult<ObjectMeta> {
        Ok(file.into_object())
    }
}

impl AppmixerRemote {
    /// Deletes the file `id` (its answer is JSON, read and dropped).
    async fn delete_file(&self, what: &str, id: &str) -> RemoteResult<()> {
        let url = self.http.url(&file_path("/files/", id));
        let build = || async { Ok(self.http.client().delete(&url)) };
        self.http
            .call_json::<serde_json::Value, _, _, _>(what, &self.auth, build)
            .await
            .map(drop)
    }

    /// Deletes the partial file `id` of the upload `what` (a failed or interrupted one).
    async fn delete_partial(&self, what: &str, id: &str) -> RemoteResult<()> {
        let what = format!("delete the partial file of the unfinished {what} ({id})");
        self.delete_file(&what, id).await
    }
}

#[async_trait]
impl Remote for AppmixerRemote {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn describe(&self) -> String {
        format!("appmixer at {}", self.http.endpoint())
    }

    /// Appmixer is flat, so there are no containers; the call still signs in and counts the
    /// files, so that a mount with a wrong password fails at once with a clear message.
    async fn list_containers(&self) -> RemoteResult<Vec<Container>> {
        let _: Count = self.get("count files", "/files/count").await?;
        Ok(Vec::new())
    }

    async fn abort_upload(&self, _container: ContainerRef<'_>, id: &str) -> RemoteResult<()> {
        match self.delete_partial("upload", id).await {
            Err(err) if err.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn list(&self, _container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rows = self.list_once().await?;
            let mut seen = HashSet::new();
            let files: Vec<FileData> = rows
                .into_iter()
                .filter(|file| seen.insert(file.file_id.clone()))
                .collect();
            let count: Count = self.get("count files", "/files/count").await?;
            // A file deleted while we paged shifts later rows back, so one may be skipped.
            if count.count == files.len() as u64 || attempt == LIST_ATTEMPTS {
                return Ok(files.into_iter().map(FileData::into_object).collect());
            }
            log::debug!(
                "appmixer listed {} files but counts {}; listing again",
                files.len(),
                count.count
            );
        }
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
        let url = self.http.url(&file_path("/files/", &object.id));
        let build = || async {
            let bytes = format!("bytes={}-{}", range.start, range.end - 1);
            Ok(self.http.client().get(&url).header("Range", bytes))
        };
        self.http
            .read_range(
                &what,
                &range,
                || self.http.signed(&what, &self.auth, &build),
                |response| self.http.refused(&what, &self.auth, response),
            )
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

    async fn delete(&self, _container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()> {
        let what = format!("delete {:?} ({})", object.name, object.id);
        self.delete_file(&what, &object.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_required_at_connect_time() {
        let mut config = RemoteConfig::new("http://127.0.0.1:1", None);
        let err = AppmixerRemote::new(&config).err().expect("no credentials");
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert!(err.message.contains("--user"), "{}", err.message);
        config.user = Some("a@example.com".into());
        let err = AppmixerRemote::new(&config).err().expect("no password");
        assert!(err.message.contains("a password"), "{}", err.message);
        config.password = Some("secret".into());
        assert!(AppmixerRemote::new(&config).is_ok());
        let token_only = RemoteConfig::new("http://127.0.0.1:1", Some("a.b.c".into()));
        assert!(AppmixerRemote::new(&token_only).is_ok());
    }

    #[test]
    fn boom_bodies_give_their_message() {
        let body = br#"{"statusCode":401,"error":"Unauthorized","message":"Token expired"}"#;
        assert_eq!(boom_message(body).as_deref(), Some("Token expired"));
        assert_eq!(boom_message(b"<html>"), None);
        let body = br#"{"statusCode":400,"error":"Bad Request","message":"no\nWARN forged\r"}"#;
        assert_eq!(boom_message(body).as_deref(), Some("no WARN forged "));
        assert_eq!(
            boom_message(br#"{"error":"gone","code":404}"#),
            None,
            "not a Boom"
        );
    }

    #[test]
    fn file_json_becomes_an_object_keyed_by_its_id() {
        let file: FileData = serde_json::from_str(
            r#"{"length":5,"chunkSize":261120,"uploadDate":"2020-07-24T19:19:49.755Z",
                "filename":"a.png","md5":"1d0ed5eb2cacbab4526de272837102dd",
                "metadata":{"userId":"5f15d59cef81ecb3344fab55"},"contentType":"image/png",
                "fileId":"f179c163-2ad8-4f9d-bce5-95200691b7f9"}"#,
        )
        .unwrap();
        let object = file.into_object();
        assert_eq!(object.id, "f179c163-2ad8-4f9d-bce5-95200691b7f9");
        assert_eq!(object.version, object.id);
        assert_eq!((object.name.as_str(), object.size), ("a.png", 5));
        assert_eq!(object.content_type.as_deref(), Some("image/png"));
        assert_eq!(
            object.md5.as_deref(),
            Some("1d0ed5eb2cacbab4526de272837102dd")
        );
        let ms = object
            .modified
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH);
        assert_eq!(ms.unwrap().as_millis(), 1_595_618_389_755);
    }
}
