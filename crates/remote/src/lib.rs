//! The remote side: one small async trait that every API implements, and its error type.
//!
//! [`Remote`] is object-level on purpose. A backend knows URLs, JSON shapes and its own error
//! envelope; it knows nothing of inodes, caching, retries or staging. Retries, timeouts and the
//! mapping of HTTP status to [`ErrorKind`] live once in [`http`]. The filesystem core asks
//! [`Remote::capabilities`] what an API can do and never matches on a backend's name.
//!
//! Layout: an API either has top-level *containers* (Mix sessions) that become the directories
//! under the mount root, or is flat (every object sits in the root). Containers may belong to a
//! group (Fluxer channels to their guild): then they sit one level deeper, in the group's
//! directory. Inside a container, object
//! names are opaque strings; the core encodes nested paths and characters the server would
//! rewrite into them (see `remote::names`).

pub mod answers;
pub mod appmixer;
pub mod budget;
#[cfg(any(test, feature = "test-util"))]
pub mod faulty;
pub mod fluxer;
pub mod http;
pub mod lightfield;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod mix;
pub mod multipart;
pub mod names;
pub mod observe;
pub mod paging;
pub mod scoped;
pub mod turns;
pub mod url_cache;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

pub use sessionfs_io::stream::ByteStream;

use budget::UploadMemory;
use observe::UploadProgress;

/// Which characters a server rewrites in object names, so the core can encode them reversibly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameRules {
    /// Unicode whitespace is replaced (Mix turns it into `_`).
    pub rewrites_whitespace: bool,
    /// Every `.` but the last is replaced (Mix).
    pub rewrites_inner_dots: bool,
    /// Runs of `_` collapse into one (Mix).
    pub collapses_underscores: bool,
    /// Longest object name the server keeps, in bytes, if it has a limit.
    pub max_name_bytes: Option<usize>,
}

/// What a remote API can do; the core and the tests branch on this, never on a backend's name.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Top-level directories are remote containers (Mix sessions); otherwise the root is flat.
    pub containers: bool,
    /// Objects can be deleted (Lightfield has no delete).
    pub delete: bool,
    /// Ranged GETs are honoured; otherwise the read path streams whole objects.
    pub range_reads: bool,
    /// An upload under an existing name replaces that object; otherwise names are not unique
    /// and every upload creates a new object (id-keyed APIs).
    pub overwrite_by_name: bool,
    /// Largest object the API accepts, in bytes: its documented limit, or a bound the client
    /// chose where it has none (SEMANTICS.md, "Largest file"). A write or truncate past it is
    /// EFBIG at once, before anything is staged, and no upload of a longer file is tried.
    pub max_object_bytes: u64,
    /// Smallest object the API accepts (Lightfield refuses empty files); smaller files stay
    /// local until they grow.
    pub min_object_bytes: u64,
    /// How the server rewrites names.
    pub name_rules: NameRules,
    /// Uploads carry an md5 the server checks, so staging computes it as bytes arrive.
    pub upload_md5: bool,
    /// [`Remote::upload_stream`] works: an upload can start before the length is known, so a
    /// file written from start to end is sent while it is being written.
    pub streaming_upload: bool,
}

impl Capabilities {
    /// Whether the object an upload replaces (by a write or a rename over it) is deleted once
    /// the new one is stored: on id-keyed APIs the old object stays beside the new one, and
    /// the client removes it where the API can delete; without delete (Lightfield) it stays,
    /// shown with its `~id`.
    pub fn deletes_superseded(&self) -> bool {
        !self.overwrite_by_name && self.delete
    }
}

/// A remote container (a Mix session, a Fluxer channel): one directory under the mount root, or
/// under its group's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Server-side id, used in every URL.
    pub id: String,
    /// Human title; the directory name is derived from it.
    pub title: String,
    /// Creation time, used as the directory's times and to order duplicates.
    pub created: SystemTime,
    /// The group it belongs to (a Fluxer guild): containers with a group appear inside one
    /// directory per group, which is not a container itself; `None` puts it under the root.
    pub group: Option<ContainerGroup>,
}

/// A group of containers (a Fluxer guild, or `@me` for direct messages): one directory under
/// the mount root that holds its containers' directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerGroup {
    /// Server-side id; groups with the same title stay apart by it.
    pub id: String,
    /// Human title; the directory name is derived from it.
    pub title: String,
    /// Creation time, used as the directory's times and to order duplicates.
    pub created: SystemTime,
}

/// Where an object lives: in the flat root (`None`) or in a container.
pub type ContainerRef<'a> = Option<&'a str>;

/// One remote object as a listing or an upload reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Stable id the API uses for this object (the stored name on name-keyed APIs).
    pub id: String,
    /// The name as stored on the server (still encoded).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, when the server reports one.
    pub modified: Option<SystemTime>,
    /// Changes whenever the content may have changed; cached bytes are keyed by it.
    pub version: String,
    /// MIME type, when known.
    pub content_type: Option<String>,
    /// Lower-case hex md5 of the content, when the server reports it.
    pub md5: Option<String>,
}

/// A staged file ready to be uploaded. The file is not modified while the upload runs.
#[derive(Clone, Debug)]
pub struct UploadSource {
    /// Local file holding exactly the bytes to upload.
    pub path: PathBuf,
    /// Its length in bytes.
    pub size: u64,
    /// Lower-case hex md5, for APIs that verify it, when the core computed it while staging.
    pub md5: Option<String>,
    /// Where the buffers of parts in flight are reserved (the mount's memory budget, which
    /// the core may free cached bytes from to make room); `None` sends one part's buffers at
    /// a time without a budget.
    pub memory: Option<Arc<dyn UploadMemory>>,
    /// Told the id of the server's upload (a partial file, a session) as soon as the server
    /// has one, so the journal can name it and a later mount can remove it after a crash.
    pub on_started: Option<UploadStarted>,
    /// Where the bytes sent of this upload are counted (the mount's own handle, in which the
    /// write-back engine registered the upload by its staged path); the default is a fresh
    /// handle with nothing registered, so nothing is counted.
    pub progress: UploadProgress,
}

/// A callback given the id of a server-side upload in progress (see
/// [`UploadSource::on_started`]).
#[derive(Clone)]
pub struct UploadStarted(pub Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for UploadStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadStarted")
    }
}

impl UploadSource {
    /// A source of `size` bytes at `path`, with no md5 and no memory budget.
    pub fn new(path: impl Into<PathBuf>, size: u64) -> Self {
        Self {
            path: path.into(),
            size,
            md5: None,
            memory: None,
            on_started: None,
            progress: UploadProgress::default(),
        }
    }

    /// Tells [`UploadSource::on_started`], if set, that the server's upload `id` exists.
    pub fn started(&self, id: &str) {
        if let Some(UploadStarted(hook)) = &self.on_started {
            hook(id);
        }
    }

    /// The staged bytes as a request body, read without the page cache where possible
    /// (`sessionfs_io::direct`); `what` names the upload in the error when the copy cannot be opened.
    pub fn body(&self, what: &str) -> RemoteResult<ByteStream> {
        self.part_body(what, 0..self.size)
    }

    /// Bytes `range` of the staged copy as a request body (one part of a chunked upload).
    /// The bytes it yields count as sent in the upload's progress ([`UploadSource::progress`]).
    pub fn part_body(&self, what: &str, range: Range<u64>) -> RemoteResult<ByteStream> {
        let whole = range == (0..self.size);
        let body = sessionfs_io::direct::file_body(&self.path, range).map_err(|err| {
            RemoteError::protocol(format!("{what}: cannot open the staged copy: {err}"))
        })?;
        Ok(match self.progress.counter(&self.path, whole) {
            Some(sent) => body
                .inspect(move |chunk| {
                    if let Ok(chunk) = chunk {
                        sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                })
                .boxed(),
            None => body,
        })
    }

    /// The content's md5: the one computed while staging, else one pass over the staged copy.
    pub async fn md5(&self) -> RemoteResult<String> {
        if let Some(md5) = &self.md5 {
            return Ok(md5.clone());
        }
        let (path, size) = (self.path.clone(), self.size);
        tokio::task::spawn_blocking(move || {
            sessionfs_io::checksum::md5_of_file(&std::fs::File::open(path)?, size)
        })
        .await
        .map_err(|err| RemoteError::protocol(format!("hashing the staged copy failed: {err}")))?
        .map_err(|err| RemoteError::protocol(format!("cannot read the staged copy: {err}")))
    }
}

/// The closed set of ways a remote call fails; `fs::error` maps each to one errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object or container does not exist (404).
    NotFound,
    /// The credentials were refused (401, 403).
    PermissionDenied,
    /// The name is taken where the API does not overwrite (409 on create).
    AlreadyExists,
    /// The server asked us to slow down (429) and retries ran out.
    RateLimited,
    /// The object is over the API's size limit (413).
    TooLarge,
    /// The API cannot do this at all (no delete, no rename...).
    Unsupported,
    /// The request was refused as invalid (400, 422): a name or value the API cannot hold.
    InvalidInput,
    /// The account or server is out of space or quota (507).
    NoSpace,
    /// The object changed underneath us or is in the wrong state (409, 412).
    Conflict,
    /// The server is down, unreachable, timed out, or answered 5xx; retries ran out.
    Unavailable,
    /// The server answered something we cannot understand (malformed JSON, bad headers).
    Protocol,
}

/// A failed remote call: what kind, whether a retry could help, and a message for the log.
#[derive(Debug)]
pub struct RemoteError {
    /// What happened, for the errno mapping.
    pub kind: ErrorKind,
    /// Whether the same call may succeed later (used by the retry loop).
    pub temporary: bool,
    /// Lower-case, says what failed; never contains a token or a presigned query string.
    pub message: String,
    /// How long the server asked us to wait, if it said.
    pub retry_after: Option<Duration>,
}

impl RemoteError {
    /// A permanent error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            temporary: false,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error that a retry may fix (5xx, 429, dropped connection).
    pub fn temporary(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            temporary: true,
            ..Self::new(kind, message)
        }
    }

    /// The server's answer could not be understood.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

/// What a flat API answers to a container operation; `remote` is its `describe()`.
fn no_containers(remote: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::Unsupported,
        format!("{remote} has no directories"),
    )
}

/// Shorthand for results of remote calls.
pub type RemoteResult<T> = Result<T, RemoteError>;

/// One remote file API. All methods are safe to call concurrently.
#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// What this API can do.
    fn capabilities(&self) -> &Capabilities;

    /// Names the backend and endpoint for log lines, e.g. `mix at http://127.0.0.1:8088`.
    fn describe(&self) -> String;

    /// Lists every container. Flat APIs return an empty list.
    async fn list_containers(&self) -> RemoteResult<Vec<Container>>;

    /// Creates a container titled `title`. Titles need not be unique. Flat APIs keep the
    /// default: `Unsupported`.
    async fn create_container(&self, title: &str) -> RemoteResult<Container> {
        let _ = title;
        Err(no_containers(&self.describe()))
    }

    /// Deletes a container and everything in it. `NotFound` if it is already gone. Flat APIs
    /// keep the default: `Unsupported`.
    async fn remove_container(&self, id: &str) -> RemoteResult<()> {
        let _ = id;
        Err(no_containers(&self.describe()))
    }

    /// Lists every object in `container` (all pages). An empty list means an empty container.
    async fn list(&self, container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>>;

    /// Reads `range` of `object`. The answer may be shorter than asked only at the end of the
    /// object. Idempotent. `NotFound` if the object is gone.
    async fn read(
        &self,
        container: ContainerRef<'_>,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes>;

    /// Uploads `source` as `name` and returns the stored object (whose name the server may
    /// have rewritten). On name-keyed APIs this replaces an object of the same name atomically.
    async fn upload(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<ObjectMeta>;

    /// Removes the server's unfinished upload `id` (an Appmixer partial file, a Lightfield
    /// session) that a killed process left behind, so it never lingers half-done. APIs with
    /// nothing to remove (unfinished uploads expire on their own) keep the default: nothing.
    async fn abort_upload(&self, container: ContainerRef<'_>, id: &str) -> RemoteResult<()> {
        let _ = (container, id);
        Ok(())
    }

    /// Deletes `object`. `NotFound` if it is already gone; `Unsupported` on APIs without delete.
    async fn delete(&self, container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()>;

    /// The client's rate-limit state, on APIs with rate limits it paces itself by (Fluxer).
    fn rate_limit(&self) -> Option<RateLimitState> {
        None
    }

    /// Uploads `body` as `name` while the body is still being produced (its length is not
    /// known up front). Tried once, never retried: the caller keeps the bytes and falls back
    /// to [`Remote::upload`]. A body that ends with an error aborts the upload and stores
    /// nothing. Only called when `capabilities().streaming_upload` is true.
    async fn upload_stream(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        body: ByteStream,
    ) -> RemoteResult<ObjectMeta> {
        let _ = (container, body);
        Err(RemoteError::new(
            ErrorKind::Unsupported,
            format!("{name}: {} takes no streamed uploads", self.describe()),
        ))
    }
}

/// Where the client stands with an API's rate limits, for `sessionfs status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimitState {
    /// Buckets (a route, per channel where the API counts so) whose quota the client knows.
    pub buckets: usize,
    /// Of those, how many are spent: their requests wait for the reset.
    pub exhausted: usize,
    /// Milliseconds left of a global hold (after a global 429), when one holds every request.
    pub global_hold_ms: Option<u64>,
}

/// How to reach a remote; `crate::backend` picks the client type that reads it.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Base URL of the server.
    pub endpoint: String,
    /// API token, for APIs with auth; never logged.
    pub token: Option<String>,
    /// Account to sign in as, for APIs that sign in with a password.
    pub user: Option<String>,
    /// Password of `user`; never logged.
    pub password: Option<String>,
    /// Upload parts in flight per file; `None` takes the backend's default.
    pub upload_parallel: Option<usize>,
    /// Bytes per upload part where the client chooses; `None` takes the backend's default.
    pub part_size: Option<u64>,
    /// How hard to retry temporary failures.
    pub retry: http::RetryConfig,
}

impl RemoteConfig {
    /// A config with the default retry policy.
    pub fn new(endpoint: impl Into<String>, token: Option<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token,
            user: None,
            password: None,
            upload_parallel: None,
            part_size: None,
            retry: http::RetryConfig::default(),
        }
    }
}
