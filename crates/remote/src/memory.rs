//! An in-memory [`Remote`] for unit tests of the filesystem core.
//!
//! By default it behaves like a name-keyed API with containers (like Mix, without the name
//! rewriting); [`MemoryRemote::shaped`] gives it the shape of any of the four APIs (flat or
//! with containers, overwrite by name or id-keyed with names that need not be unique, with or
//! without delete), so the core's tests run on every shape below FUSE. It counts calls per
//! operation, so tests can assert "one listing, no read". With
//! [`MemoryRemote::with_parts`] it takes uploads in parts through the shared chunked driver,
//! counting parts in flight and failing chosen parts by plan.

use sessionfs_io::lock::Locked;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::http::RetryConfig;
use super::multipart::{self, Part, PartLayout, PartPolicy, PartUploader};
use super::{
    ByteStream, Capabilities, Container, ContainerRef, ErrorKind, NameRules, ObjectMeta, Remote,
    RemoteError, RemoteResult, UploadSource,
};

/// Objects of one container (`""` for the flat root), by id: the name on name-keyed shapes.
type Objects = BTreeMap<String, (ObjectMeta, Bytes)>;

/// The shapes of the four APIs, as far as the core sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiShape {
    /// Containers, an upload replaces the object of its name, delete (Mix sessions).
    Mix,
    /// Flat, every upload a new object (names need not be unique), no delete, no empty
    /// objects, uploads carry an md5 (Lightfield).
    Lightfield,
    /// Flat, every upload a new object, delete (Appmixer).
    Appmixer,
    /// Containers, every upload a new object, delete (Fluxer channels).
    Fluxer,
}

impl ApiShape {
    /// Every shape, for tests that run on each.
    pub const ALL: [ApiShape; 4] = [Self::Mix, Self::Lightfield, Self::Appmixer, Self::Fluxer];

    /// What an API of this shape can do.
    pub fn capabilities(self) -> Capabilities {
        let (containers, overwrite_by_name, delete) = match self {
            Self::Mix => (true, true, true),
            Self::Lightfield => (false, false, false),
            Self::Appmixer => (false, false, true),
            Self::Fluxer => (true, false, true),
        };
        Capabilities {
            containers,
            delete,
            range_reads: true,
            overwrite_by_name,
            max_object_bytes: u64::MAX,
            min_object_bytes: u64::from(self == Self::Lightfield),
            upload_md5: self == Self::Lightfield,
            name_rules: NameRules::default(),
            streaming_upload: false,
        }
    }
}

/// An in-memory remote with containers.
pub struct MemoryRemote {
    capabilities: Capabilities,
    /// Uploads go through the chunked driver with this layout and policy.
    parts: Option<(PartLayout, usize)>,
    state: Mutex<State>,
    /// What the chunked uploads did; never held with `state`.
    part_log: Mutex<PartLog>,
    versions: AtomicU64,
}

/// What chunked uploads did, for tests of the driver.
#[derive(Clone, Debug, Default)]
pub struct PartLog {
    /// Parts being received right now.
    pub in_flight: usize,
    /// Most parts ever received at once.
    pub max_in_flight: usize,
    /// Attempts per part number, in the order they started.
    pub attempts: Vec<u64>,
    /// Uploads aborted.
    pub aborts: u64,
    /// Failures still to inject per part number: (how many more, whether temporary).
    failures: HashMap<u64, (u32, bool)>,
    /// Refusals (403, as of an expired presigned URL) still to inject per part number.
    denials: HashMap<u64, u32>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Container>,
    objects: HashMap<String, Objects>,
    calls: HashMap<&'static str, u64>,
}

impl Default for MemoryRemote {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRemote {
    /// An empty remote of the Mix shape: containers, overwrite by name, delete.
    pub fn new() -> Self {
        Self::shaped(ApiShape::Mix)
    }

    /// An empty remote of `shape`.
    pub fn shaped(shape: ApiShape) -> Self {
        Self {
            capabilities: shape.capabilities(),
            parts: None,
            state: Mutex::new(State::default()),
            part_log: Mutex::new(PartLog::default()),
            versions: AtomicU64::new(1),
        }
    }

    /// The same remote, taking uploads in parts of `part_size` bytes numbered from
    /// `first_number`, at most `max_in_flight` at once, through the shared driver.
    pub fn with_parts(mut self, part_size: u64, first_number: u64, max_in_flight: usize) -> Self {
        let layout = PartLayout {
            part_size,
            first_number,
        };
        self.parts = Some((layout, max_in_flight));
        self
    }

    /// Makes the next `times` attempts to send part `number` fail, temporarily (a retry may
    /// help) or for good.
    pub fn fail_part(&self, number: u64, times: u32, temporary: bool) {
        let mut log = self.part_log.locked();
        log.failures.insert(number, (times, temporary));
    }

    /// Refuses part `number` with permission denied (as storage refuses an expired presigned
    /// URL) the next `times` attempts.
    pub fn deny_part(&self, number: u64, times: u32) {
        self.part_log.locked().denials.insert(number, times);
    }

    /// What the chunked uploads did so far.
    pub fn part_log(&self) -> PartLog {
        self.part_log.locked().clone()
    }

    /// The same remote, taking streamed uploads.
    pub fn with_streaming(mut self) -> Self {
        self.capabilities.streaming_upload = true;
        self
    }

    /// How many times `operation` (a trait method name) was called.
    pub fn calls(&self, operation: &str) -> u64 {
        let state = self.state.locked();
        state.calls.get(operation).copied().unwrap_or(0)
    }

    /// Stores `data` as `name` in container `container` (`""` for the flat root), as another
    /// client would: over the object of that name where the shape overwrites by name, else as
    /// a new object beside it.
    pub fn put(&self, container: &str, name: &str, data: &[u8]) -> ObjectMeta {
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let id = match self.capabilities.overwrite_by_name {
            true => name.to_string(),
            false => format!("obj{version}"),
        };
        let meta = ObjectMeta {
            id: id.clone(),
            name: name.to_string(),
            size: data.len() as u64,
            modified: Some(SystemTime::now()),
            version: version.to_string(),
            content_type: None,
            md5: None,
        };
        let mut state = self.state.locked();
        state
            .objects
            .entry(container.to_string())
            .or_default()
            .insert(id, (meta.clone(), Bytes::copy_from_slice(data)));
        meta
    }

    /// The bytes of the newest object named `name` in container `container` (`""` for the
    /// flat root), if any.
    pub fn get(&self, container: &str, name: &str) -> Option<Bytes> {
        let state = self.state.locked();
        state
            .objects
            .get(container)?
            .values()
            .filter(|(meta, _)| meta.name == name)
            .max_by_key(|(meta, _)| meta.version.parse::<u64>().unwrap_or(0))
            .map(|(_, data)| data.clone())
    }

    fn count(&self, operation: &'static str) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.locked();
        *state.calls.entry(operation).or_default() += 1;
        state
    }
}

fn missing(what: &str) -> RemoteError {
    RemoteError::new(ErrorKind::NotFound, format!("{what} not found"))
}

fn key(container: ContainerRef<'_>) -> String {
    container.unwrap_or("").to_string()
}

#[async_trait]
impl Remote for MemoryRemote {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }

    async fn list_containers(&self) -> RemoteResult<Vec<Container>> {
        let state = self.count("list_containers");
        Ok(state.containers.values().cloned().collect())
    }

    async fn create_container(&self, title: &str) -> RemoteResult<Container> {
        if !self.capabilities.containers {
            return Err(super::no_containers(&self.describe()));
        }
        let mut state = self.count("create_container");
        let container = Container {
            id: uuid::Uuid::new_v4().to_string(),
            title: title.to_string(),
            created: SystemTime::now(),
            group: None,
        };
        state
            .containers
            .insert(container.id.clone(), container.clone());
        state.objects.insert(container.id.clone(), Objects::new());
        Ok(container)
    }

    async fn remove_container(&self, id: &str) -> RemoteResult<()> {
        let mut state = self.count("remove_container");
        state.objects.remove(id);
        state
            .containers
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| missing(id))
    }

    async fn list(&self, container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>> {
        let state = self.count("list");
        let objects = state.objects.get(&key(container));
        Ok(objects
            .map(|objects| objects.values().map(|(meta, _)| meta.clone()).collect())
            .unwrap_or_default())
    }

    async fn read(
        &self,
        container: ContainerRef<'_>,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes> {
        let state = self.count("read");
        let (_, data) = state
            .objects
            .get(&key(container))
            .and_then(|objects| objects.get(&object.id))
            .ok_or_else(|| missing(&object.name))?;
        let end = (range.end as usize).min(data.len());
        let start = (range.start as usize).min(end);
        Ok(data.slice(start..end))
    }

    async fn upload(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<ObjectMeta> {
        drop(self.count("upload"));
        if self.parts.is_some() {
            let uploads = Uploads {
                remote: self,
                container: key(container),
            };
            return multipart::upload_in_parts(&uploads, name, source).await;
        }
        let data = std::fs::read(&source.path)
            .map_err(|err| RemoteError::protocol(format!("read staged file: {err}")))?;
        Ok(self.put(&key(container), name, &data))
    }

    async fn upload_stream(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        mut body: ByteStream,
    ) -> RemoteResult<ObjectMeta> {
        drop(self.count("upload_stream"));
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| {
                RemoteError::new(ErrorKind::Unavailable, format!("body ended: {err}"))
            })?;
            data.extend_from_slice(&chunk);
        }
        Ok(self.put(&key(container), name, &data))
    }

    async fn delete(&self, container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()> {
        let mut state = self.count("delete");
        if !self.capabilities.delete {
            return Err(RemoteError::new(
                ErrorKind::Unsupported,
                format!("{}: memory of this shape has no delete", object.name),
            ));
        }
        state
            .objects
            .get_mut(&key(container))
            .and_then(|objects| objects.remove(&object.id))
            .map(|_| ())
            .ok_or_else(|| missing(&object.name))
    }
}

/// Chunked uploads into one container of a [`MemoryRemote`].
struct Uploads<'a> {
    remote: &'a MemoryRemote,
    container: String,
}

/// An upload in progress: its name and the parts received, by number.
struct PartSession {
    name: String,
    received: Mutex<BTreeMap<u64, Bytes>>,
}

/// Counts a part in flight for as long as it lives.
struct InFlight<'a>(&'a Mutex<PartLog>);

/// A failure injected into one part attempt.
enum Injected {
    Failed { temporary: bool },
    Denied,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.locked().in_flight -= 1;
    }
}

#[async_trait]
impl PartUploader for Uploads<'_> {
    type Session = PartSession;
    type Sent = u64;
    type Completed = Vec<u8>;

    fn policy(&self) -> PartPolicy {
        let (_, max_in_flight) = self.remote.parts.expect("uploads in parts");
        PartPolicy {
            max_in_flight,
            first_part_alone: false,
            // As if its parts went to presigned URLs (see `deny_part`).
            presigned_parts: true,
            retry: RetryConfig {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                ..RetryConfig::default()
            },
        }
    }

    async fn start(
        &self,
        name: &str,
        _source: &UploadSource,
    ) -> RemoteResult<(PartSession, PartLayout)> {
        let (layout, _) = self.remote.parts.expect("uploads in parts");
        let session = PartSession {
            name: name.to_string(),
            received: Mutex::new(BTreeMap::new()),
        };
        Ok((session, layout))
    }

    async fn put_part(
        &self,
        session: &PartSession,
        part: &Part,
        source: &UploadSource,
    ) -> RemoteResult<u64> {
        let failure = {
            let mut log = self.remote.part_log.locked();
            log.attempts.push(part.number);
            log.in_flight += 1;
            log.max_in_flight = log.max_in_flight.max(log.in_flight);
            let denied = match log.denials.get_mut(&part.number) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            };
            match log.failures.get_mut(&part.number) {
                _ if denied => Some(Injected::Denied),
                Some((left, temporary)) if *left > 0 => {
                    *left -= 1;
                    Some(Injected::Failed {
                        temporary: *temporary,
                    })
                }
                _ => None,
            }
        };
        let _counted = InFlight(&self.remote.part_log);
        // Let the other parts start, so overlap is real.
        tokio::time::sleep(Duration::from_millis(2)).await;
        if let Some(injected) = failure {
            let message = format!("part {} refused by plan", part.number);
            return Err(match injected {
                Injected::Failed { temporary: true } => {
                    RemoteError::temporary(ErrorKind::Unavailable, message)
                }
                Injected::Failed { temporary: false } => {
                    RemoteError::new(ErrorKind::InvalidInput, message)
                }
                Injected::Denied => RemoteError::new(ErrorKind::PermissionDenied, message),
            });
        }
        let mut body = source.part_body("memory part", part.range.clone())?;
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| RemoteError::protocol(err.to_string()))?;
            data.extend_from_slice(&chunk);
        }
        let mut received = session.received.locked();
        received.insert(part.number, Bytes::from(data));
        Ok(part.number)
    }

    async fn complete(&self, session: &PartSession, parts: Vec<u64>) -> RemoteResult<Vec<u8>> {
        let received = session.received.locked();
        // The object is the parts in the order the driver lists them.
        Ok(parts
            .iter()
            .flat_map(|number| received[number].iter().copied())
            .collect())
    }

    async fn abort(&self, _session: &PartSession) -> RemoteResult<()> {
        self.remote.part_log.locked().aborts += 1;
        Ok(())
    }

    async fn finalize(&self, session: PartSession, data: Vec<u8>) -> RemoteResult<ObjectMeta> {
        Ok(self.remote.put(&self.container, &session.name, &data))
    }
}
