//! `NAME:SUBDIR`: one container of a remote (a Mix session, a Fluxer channel) as a flat
//! remote, so the mount's root is that container's contents. The core needs nothing else: it
//! sees an API without containers, and every call goes to the one container.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ByteStream, Capabilities, Container, ContainerRef, ObjectMeta, RateLimitState, Remote,
    RemoteResult, UploadSource,
};

/// One container of `inner`, as a remote without containers.
pub struct OneContainer {
    inner: Arc<dyn Remote>,
    container: Container,
    /// The path it was chosen by, for log lines.
    path: String,
    capabilities: Capabilities,
}

impl OneContainer {
    /// `container` of `inner` alone, chosen by `path` (its directory in a mount of all of
    /// `inner`, which the core resolves: `fs::container_at`).
    pub fn new(inner: Arc<dyn Remote>, container: Container, path: &str) -> Self {
        let mut capabilities = inner.capabilities().clone();
        capabilities.containers = false;
        Self {
            inner,
            container,
            path: path.to_string(),
            capabilities,
        }
    }

    fn id(&self) -> ContainerRef<'_> {
        Some(&self.container.id)
    }
}

#[async_trait]
impl Remote for OneContainer {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn describe(&self) -> String {
        format!("{}, only {}", self.inner.describe(), self.path)
    }

    fn rate_limit(&self) -> Option<RateLimitState> {
        self.inner.rate_limit()
    }

    async fn list_containers(&self) -> RemoteResult<Vec<Container>> {
        // A check that the container is still there, as the mount's first call.
        self.inner.list(self.id()).await.map(|_| Vec::new())
    }

    async fn list(&self, _container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>> {
        self.inner.list(self.id()).await
    }

    async fn read(
        &self,
        _container: ContainerRef<'_>,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes> {
        self.inner.read(self.id(), object, range).await
    }

    async fn upload(
        &self,
        _container: ContainerRef<'_>,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<ObjectMeta> {
        self.inner.upload(self.id(), name, source).await
    }

    async fn delete(&self, _container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()> {
        self.inner.delete(self.id(), object).await
    }

    async fn upload_stream(
        &self,
        _container: ContainerRef<'_>,
        name: &str,
        body: ByteStream,
    ) -> RemoteResult<ObjectMeta> {
        self.inner.upload_stream(self.id(), name, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryRemote;

    #[tokio::test]
    async fn one_container_is_the_root_and_others_stay_apart() {
        let memory = Arc::new(MemoryRemote::new());
        let inner: Arc<dyn Remote> = memory.clone();
        let work = inner.create_container("work").await.unwrap();
        inner.create_container("home").await.unwrap();
        let scoped = OneContainer::new(inner.clone(), work.clone(), "work");
        assert!(!scoped.capabilities().containers);
        let source_dir = tempfile::tempdir().unwrap();
        let path = source_dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        scoped
            .upload(None, "a.txt", &UploadSource::new(&path, 3))
            .await
            .unwrap();
        let listed = inner.list(Some(&work.id)).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "a.txt");
        assert_eq!(scoped.list(None).await.unwrap().len(), 1);
    }
}
