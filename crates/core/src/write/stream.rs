//! Streaming uploads: a file written from start to end is sent while it is being written.
//!
//! `cp` of a large file would otherwise take the time to stage it plus the time to upload it.
//! When the first write of an empty file lands at offset 0 and the API takes streamed uploads,
//! an upload starts at once, and every append hands its bytes to the request body as they are
//! (the staged copy is written too, and never read back for this). At flush the body ends and
//! the upload completes. Anything else (a write elsewhere, a truncate, a rename, an unlink)
//! drops the stream, which aborts the request so the server stores nothing, and the file is
//! uploaded from its staged copy as usual. The staged copy stays the source of truth.
//!
//! The body queues at most [`QUEUE_CHUNKS`] writes, held under the memory budget; a writer
//! faster than the network waits for room.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use sessionfs_remote::budget::MemoryHold;
use sessionfs_remote::{ErrorKind, ObjectMeta, Remote, RemoteError, RemoteResult};

/// Writes queued for the body: with writes of at most 1 MiB (the mount's `max_write`), at most
/// this many MiB per streamed file.
pub const QUEUE_CHUNKS: usize = 8;

/// Memory a streamed upload reserves for its queue.
pub const QUEUE_BYTES: u64 = (QUEUE_CHUNKS as u64) << 20;

/// An upload that runs while its file is written.
#[derive(Debug)]
pub struct StreamingUpload {
    chunks: Option<mpsc::Sender<Bytes>>,
    /// Set just before the queue closes on purpose; a queue that closes without it (the
    /// upload was dropped) ends the body with an error, so the server stores nothing.
    finished: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<RemoteResult<ObjectMeta>>>,
    /// Bytes handed to the body so far.
    queued: u64,
    /// The queue's share of the memory budget, given back when the upload is dropped.
    _memory: Box<dyn MemoryHold>,
    /// Container the upload goes to.
    pub container: Option<String>,
    /// Stored name the upload goes to.
    pub name: String,
}

impl StreamingUpload {
    /// Starts uploading `name`; its bytes come from [`push`](Self::push). `memory` pays for
    /// the queue (at least [`QUEUE_BYTES`]) until the upload is dropped.
    pub fn start<R: Remote + ?Sized>(
        remote: Arc<R>,
        container: Option<String>,
        name: String,
        memory: impl MemoryHold + 'static,
    ) -> Self {
        let (chunks, mut queue) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
        let finished = Arc::new(AtomicBool::new(false));
        let ended = finished.clone();
        let body = futures::stream::poll_fn(move |cx| match queue.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(None) if ended.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => {
                Poll::Ready(Some(Err(io::Error::other("streamed upload abandoned"))))
            }
            Poll::Pending => Poll::Pending,
        });
        let (task_container, task_name) = (container.clone(), name.clone());
        let task = tokio::spawn(async move {
            remote
                .upload_stream(task_container.as_deref(), &task_name, body.boxed())
                .await
        });
        Self {
            chunks: Some(chunks),
            finished,
            task: Some(task),
            queued: 0,
            _memory: Box::new(memory),
            container,
            name,
        }
    }

    /// Hands the next bytes of the file to the body, waiting while the queue is full. `false`
    /// when the upload has already ended (it failed): drop the stream and upload at close.
    pub async fn push(&mut self, chunk: Bytes) -> bool {
        let len = chunk.len() as u64;
        let Some(chunks) = &self.chunks else {
            return false;
        };
        if chunks.send(chunk).await.is_err() {
            return false;
        }
        self.queued += len;
        true
    }

    /// The file is complete at `len` bytes: ends the body and waits for the server's answer.
    pub async fn finish(mut self, len: u64) -> RemoteResult<ObjectMeta> {
        if self.queued != len {
            return Err(RemoteError::new(
                ErrorKind::Protocol,
                format!("streamed {} bytes of a {len}-byte file", self.queued),
            ));
        }
        self.finished.store(true, Ordering::Release);
        self.chunks = None;
        let task = self.task.take().expect("finished once");
        let object = task.await.map_err(|err| {
            RemoteError::new(ErrorKind::Protocol, format!("upload task: {err}"))
        })??;
        if object.size != len {
            return Err(RemoteError::new(
                ErrorKind::Protocol,
                format!("streamed {len} bytes but the server stored {}", object.size),
            ));
        }
        Ok(object)
    }
}

impl Drop for StreamingUpload {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
