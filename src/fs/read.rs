//! The read path: a staged copy is read locally; a remote object through the mount's block
//! cache, with the handle's prefetcher choosing how far ahead to fetch.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::handles::Handle;
use super::tree::Ino;
use super::{Error, Result, SessionFs};
use crate::cache::{Fetch, ObjectKey, Source};
use crate::remote::{ObjectMeta, Remote, RemoteResult};

/// Fetches byte ranges of one remote object with `Remote::read`.
struct RemoteFetch<R: Remote + ?Sized> {
    remote: Arc<R>,
    container: Option<String>,
    object: ObjectMeta,
}

impl<R: Remote + ?Sized> Fetch for RemoteFetch<R> {
    fn fetch(&self, range: Range<u64>) -> BoxFuture<'static, RemoteResult<Bytes>> {
        let remote = self.remote.clone();
        let container = self.container.clone();
        let object = self.object.clone();
        Box::pin(async move { remote.read(container.as_deref(), &object, range).await })
    }
}

impl<R: Remote + ?Sized> SessionFs<R> {
    /// Reads from the staged copy if there is one, else from the remote through the cache.
    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let content = self.content_of(ino)?;
        {
            let state = content.lock().await;
            if let Some(staged) = &state.staged {
                return Ok(Bytes::from(staged.read_at(offset, size as usize)?));
            }
        }
        let (container, object) = self.remote_object(ino)?;
        if offset >= object.size {
            return Ok(Bytes::new());
        }
        let handle = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::new(libc::EBADF, "read on a closed handle"))?;
        let Handle::File { readahead, .. } = &*handle else {
            return Err(Error::new(libc::EISDIR, "read on a directory handle"));
        };
        let ahead = readahead.lock().unwrap().on_read(
            offset,
            size as u64,
            object.size,
            self.blocks.config().window_cap(),
        );
        let source = self.source(container, object);
        Ok(self
            .blocks
            .read(&source, offset, size as u64, ahead)
            .await?)
    }

    /// What the cache needs to read `object`: its key (with its version) and how to fetch it.
    fn source(&self, container: Option<String>, object: ObjectMeta) -> Source {
        let config = self.blocks.config();
        // Without Range every request downloads from the start: make requests as large as
        // the budget allows so an object is streamed in as few GETs as possible.
        let max_request_bytes = if self.remote.capabilities().range_reads {
            config.max_request_bytes
        } else {
            (config.memory_limit / 2).max(config.block_size)
        };
        Source {
            key: Arc::new(ObjectKey {
                container: container.clone(),
                id: object.id.clone(),
                version: object.version.clone(),
            }),
            size: object.size,
            fetch: Arc::new(RemoteFetch {
                remote: self.remote.clone(),
                container,
                object,
            }),
            max_request_bytes,
        }
    }
}
