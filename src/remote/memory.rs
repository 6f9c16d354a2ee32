//! An in-memory [`Remote`] for unit tests of the filesystem core.
//!
//! It behaves like a name-keyed API with containers (like Mix, without the name rewriting) and
//! counts calls per operation, so tests can assert "one listing, no read".

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    ByteStream, Capabilities, Container, ContainerRef, ErrorKind, NameRules, ObjectMeta, Remote,
    RemoteError, RemoteResult, UploadSource,
};

/// Objects of one container, by name.
type Objects = BTreeMap<String, (ObjectMeta, Bytes)>;

/// An in-memory remote with containers.
pub struct MemoryRemote {
    capabilities: Capabilities,
    state: Mutex<State>,
    versions: AtomicU64,
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
    /// An empty remote.
    pub fn new() -> Self {
        Self {
            capabilities: Capabilities {
                containers: true,
                delete: true,
                range_reads: true,
                overwrite_by_name: true,
                max_object_bytes: None,
                min_object_bytes: 0,
                upload_md5: false,
                name_rules: NameRules::default(),
                streaming_upload: false,
            },
            state: Mutex::new(State::default()),
            versions: AtomicU64::new(1),
        }
    }

    /// The same remote, taking streamed uploads.
    pub fn with_streaming(mut self) -> Self {
        self.capabilities.streaming_upload = true;
        self
    }

    /// How many times `operation` (a trait method name) was called.
    pub fn calls(&self, operation: &str) -> u64 {
        let state = self.state.lock().unwrap();
        state.calls.get(operation).copied().unwrap_or(0)
    }

    /// Stores `data` as `name` in container `id`, as another client would.
    pub fn put(&self, container: &str, name: &str, data: &[u8]) -> ObjectMeta {
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let meta = ObjectMeta {
            id: name.to_string(),
            name: name.to_string(),
            size: data.len() as u64,
            modified: Some(SystemTime::now()),
            version: version.to_string(),
            content_type: None,
            md5: None,
        };
        let mut state = self.state.lock().unwrap();
        state
            .objects
            .entry(container.to_string())
            .or_default()
            .insert(
                name.to_string(),
                (meta.clone(), Bytes::copy_from_slice(data)),
            );
        meta
    }

    /// The bytes stored as `name` in container `id`, if any.
    pub fn get(&self, container: &str, name: &str) -> Option<Bytes> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .get(container)
            .and_then(|objects| objects.get(name))
            .map(|(_, data)| data.clone())
    }

    fn count(&self, operation: &'static str) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap();
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
        let mut state = self.count("create_container");
        let container = Container {
            id: uuid::Uuid::new_v4().to_string(),
            title: title.to_string(),
            created: SystemTime::now(),
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
            .and_then(|objects| objects.get(&object.name))
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
        let data = std::fs::read(&source.path)
            .map_err(|err| RemoteError::protocol(format!("read staged file: {err}")))?;
        drop(self.count("upload"));
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
        state
            .objects
            .get_mut(&key(container))
            .and_then(|objects| objects.remove(&object.name))
            .map(|_| ())
            .ok_or_else(|| missing(&object.name))
    }
}
