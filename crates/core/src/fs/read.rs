//! The read path: a staged copy is read locally; a remote object through the mount's block
//! cache, with the handle's prefetcher choosing how far ahead to fetch, and whether the read
//! is random (then only the small units around it are fetched).
//!
//! A handle reads one version of an object: the one it saw at its first remote read. When a
//! listing later shows that another client replaced the object, blocks of the pinned version
//! still in the cache are served, and a block that would have to be fetched fails with ESTALE
//! (the server only has the new bytes, and one handle must never return a mix). Reopening the
//! file reads the new version. A new version that came from our own upload is simply adopted.

use sessionfs_io::lock::Locked;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::handles::Handle;
use super::tree::Ino;
use super::{Error, Result, SessionFs};
use crate::cache::{Fetch, ObjectKey, Source};
use sessionfs_remote::{ErrorKind, ObjectMeta, Remote, RemoteError, RemoteResult};

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

/// Stands in for the fetch of a version the server no longer has.
struct Replaced {
    name: String,
}

impl Fetch for Replaced {
    fn fetch(&self, _range: Range<u64>) -> BoxFuture<'static, RemoteResult<Bytes>> {
        let message = format!(
            "{:?} was replaced on the server while open; reopen it to read the new version",
            self.name
        );
        Box::pin(async move { Err(RemoteError::new(ErrorKind::Conflict, message)) })
    }
}

impl SessionFs {
    /// Reads from the staged copy if there is one, else from the remote through the cache.
    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let content = self.content_of(ino)?;
        {
            let state = content.lock().await;
            if let Some(staged) = &state.staged {
                return Ok(Bytes::from(staged.read_at(offset, size as usize)?));
            }
        }
        let (container, current) = self.remote_object(ino)?;
        let handle = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::bad_handle("read on a closed handle"))?;
        let Handle::File { readahead, .. } = &*handle else {
            return Err(Error::is_dir("read on a directory handle"));
        };
        let ours = self.is_own_version(ino, &current);
        let (object, ahead, consumed, random) = {
            let mut state = readahead.locked();
            let pinned = state.pinned.get_or_insert_with(|| current.clone());
            if pinned.version != current.version && ours {
                *pinned = current.clone();
            }
            let object = pinned.clone();
            if offset >= object.size {
                return Ok(Bytes::new());
            }
            let config = self.blocks.config();
            let ahead =
                state
                    .prefetcher
                    .on_read(offset, size as u64, object.size, config.window_cap());
            let consumed = state.prefetcher.consumed(config.block_size);
            let consumed = consumed.filter(|_| !state.bypasses_page_cache);
            let random = state.prefetcher.window() == 0;
            (object, ahead, consumed, random)
        };
        let replaced = object.version != current.version;
        let source = self.source(container, object, replaced);
        // Without Range every request downloads from the start: no smaller unit is cheaper.
        let data = if random && self.remote.capabilities().range_reads {
            self.blocks
                .read_random(&source, offset, size as u64)
                .await?
        } else {
            self.blocks
                .read(&source, offset, size as u64, ahead)
                .await?
        };
        if let Some(blocks) = consumed {
            self.blocks.release(&source, blocks);
        }
        Ok(data)
    }

    /// Whether `current` is the version our own upload made (or a reader opened since), as
    /// opposed to one a listing found.
    fn is_own_version(&self, ino: Ino, current: &ObjectMeta) -> bool {
        let tree = self.tree();
        tree.get(ino)
            .and_then(|node| node.file())
            .and_then(|file| file.cached_version.as_ref())
            .is_some_and(|version| *version == current.version)
    }

    /// What the cache needs to read `object`: its key (with its version) and how to fetch it.
    /// When the server has `replaced` it, only cached blocks can be read.
    fn source(&self, container: Option<String>, object: ObjectMeta, replaced: bool) -> Source {
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
            fetch: if replaced {
                Arc::new(Replaced { name: object.name })
            } else {
                Arc::new(RemoteFetch {
                    remote: self.remote.clone(),
                    container,
                    object,
                })
            },
            max_request_bytes,
        }
    }
}
