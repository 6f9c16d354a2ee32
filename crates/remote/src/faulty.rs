//! A [`Remote`] wrapper that fails by plan, so every fault test is reproducible: "the 2nd
//! `upload` answers 503", "every `list` is refused". No randomness.

use sessionfs_io::lock::Locked;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ByteStream, Capabilities, Container, ContainerRef, ErrorKind, ObjectMeta, Remote, RemoteError,
    RemoteResult, UploadSource,
};

/// When an operation fails.
#[derive(Clone, Copy, Debug)]
pub enum When {
    /// Only the n-th call (1-based).
    Nth(u64),
    /// Every call from now on.
    Always,
}

/// Wraps a remote and injects failures into chosen operations.
pub struct FaultyRemote {
    inner: Arc<dyn Remote>,
    state: Mutex<Plan>,
}

#[derive(Default)]
struct Plan {
    faults: HashMap<&'static str, (When, ErrorKind)>,
    calls: HashMap<&'static str, u64>,
}

impl FaultyRemote {
    /// Passes everything through to `inner` until a fault is planned.
    pub fn new(inner: Arc<dyn Remote>) -> Self {
        Self {
            inner,
            state: Mutex::new(Plan::default()),
        }
    }

    /// Makes `operation` (a trait method name) fail with `kind` as `when` says.
    pub fn fail(&self, operation: &'static str, when: When, kind: ErrorKind) {
        self.state.locked().faults.insert(operation, (when, kind));
    }

    fn check(&self, operation: &'static str) -> RemoteResult<()> {
        let mut plan = self.state.locked();
        let count = {
            let calls = plan.calls.entry(operation).or_default();
            *calls += 1;
            *calls
        };
        match plan.faults.get(operation) {
            Some((When::Always, kind)) => Err(injected(operation, *kind)),
            Some((When::Nth(n), kind)) if *n == count => Err(injected(operation, *kind)),
            _ => Ok(()),
        }
    }
}

fn injected(operation: &str, kind: ErrorKind) -> RemoteError {
    let temporary = matches!(kind, ErrorKind::Unavailable | ErrorKind::RateLimited);
    RemoteError {
        kind,
        temporary,
        message: format!("{operation}: injected {kind:?}"),
        retry_after: None,
    }
}

#[async_trait]
impl Remote for FaultyRemote {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }

    async fn list_containers(&self) -> RemoteResult<Vec<Container>> {
        self.check("list_containers")?;
        self.inner.list_containers().await
    }

    async fn create_container(&self, title: &str) -> RemoteResult<Container> {
        self.check("create_container")?;
        self.inner.create_container(title).await
    }

    async fn remove_container(&self, id: &str) -> RemoteResult<()> {
        self.check("remove_container")?;
        self.inner.remove_container(id).await
    }

    async fn list(&self, container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>> {
        self.check("list")?;
        self.inner.list(container).await
    }

    async fn read(
        &self,
        container: ContainerRef<'_>,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes> {
        self.check("read")?;
        self.inner.read(container, object, range).await
    }

    async fn upload(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<ObjectMeta> {
        self.check("upload")?;
        self.inner.upload(container, name, source).await
    }

    async fn delete(&self, container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()> {
        self.check("delete")?;
        self.inner.delete(container, object).await
    }

    async fn upload_stream(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        body: ByteStream,
    ) -> RemoteResult<ObjectMeta> {
        self.check("upload_stream")?;
        self.inner.upload_stream(container, name, body).await
    }
}
