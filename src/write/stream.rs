//! Streaming uploads: a file written from start to end is sent while it is being written.
//!
//! `cp` of a large file would otherwise take the time to stage it plus the time to upload it.
//! When the first write of an empty file lands at offset 0 and the API takes streamed uploads,
//! an upload starts at once; its body reads the staging file up to the bytes written so far and
//! waits for more. Every append moves the end forward. At flush the end is fixed and the upload
//! completes. Anything else (a write elsewhere, a truncate, a rename, an unlink) drops the
//! stream, which aborts the request so the server stores nothing, and the file is uploaded from
//! its staged copy as usual. The staged copy stays the source of truth throughout.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use crate::direct::{self, ALIGN, CHUNK_BYTES};
use crate::remote::{ErrorKind, ObjectMeta, Remote, RemoteError, RemoteResult};

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Bytes of the staging file that are final.
    written: u64,
    /// No more bytes will come: the body ends at `written`.
    finished: bool,
}

/// An upload that runs while its file is written.
#[derive(Debug)]
pub struct StreamingUpload {
    progress: watch::Sender<Progress>,
    task: Option<tokio::task::JoinHandle<RemoteResult<ObjectMeta>>>,
    /// Container the upload goes to.
    pub container: Option<String>,
    /// Stored name the upload goes to.
    pub name: String,
}

struct Body {
    file: Arc<File>,
    /// Whether `file` was opened with `O_DIRECT` (reads then start at aligned offsets).
    direct: bool,
    sent: u64,
    progress: watch::Receiver<Progress>,
}

impl StreamingUpload {
    /// Starts uploading the staging file at `path` as `name`; nothing is final yet.
    pub fn start<R: Remote + ?Sized>(
        remote: Arc<R>,
        container: Option<String>,
        name: String,
        path: &Path,
    ) -> io::Result<Self> {
        let (progress, receiver) = watch::channel(Progress::default());
        let (file, direct) = match direct::open_direct(path, false) {
            Some(file) => (file, true),
            None => (File::open(path)?, false),
        };
        let body = Body {
            file: Arc::new(file),
            direct,
            sent: 0,
            progress: receiver,
        };
        let stream = futures::stream::unfold(body, |mut body| async move {
            loop {
                let progress = *body.progress.borrow_and_update();
                // Direct reads start at aligned offsets: until the end is known, send only
                // whole aligned pieces.
                let ready = if body.direct && !progress.finished {
                    progress.written - progress.written % ALIGN as u64
                } else {
                    progress.written
                };
                if body.sent < ready {
                    let len = (ready - body.sent).min(CHUNK_BYTES as u64) as usize;
                    let chunk = body.read(len).await;
                    if chunk.is_ok() {
                        body.sent += len as u64;
                    }
                    return Some((chunk, body));
                }
                if progress.finished {
                    return None;
                }
                if body.progress.changed().await.is_err() {
                    // The upload was dropped: end the body with an error so nothing is stored.
                    return Some((Err(io::Error::other("streamed upload abandoned")), body));
                }
            }
        });
        let (task_container, task_name) = (container.clone(), name.clone());
        let task = tokio::spawn(async move {
            remote
                .upload_stream(task_container.as_deref(), &task_name, stream.boxed())
                .await
        });
        Ok(Self {
            progress,
            task: Some(task),
            container,
            name,
        })
    }

    /// Bytes `0..written` of the staging file are final and may be sent.
    pub fn advance(&self, written: u64) {
        self.progress.send_modify(|p| p.written = written);
    }

    /// The file is complete at `len` bytes: ends the body and waits for the server's answer.
    pub async fn finish(mut self, len: u64) -> RemoteResult<ObjectMeta> {
        self.progress.send_modify(|p| {
            p.written = len;
            p.finished = true;
        });
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

impl Body {
    /// The next `len` final bytes, read on a blocking thread.
    async fn read(&self, len: usize) -> io::Result<Bytes> {
        let (file, direct, offset) = (self.file.clone(), self.direct, self.sent);
        let chunk =
            tokio::task::spawn_blocking(move || direct::read_chunk(&file, direct, offset, len))
                .await
                .map_err(io::Error::other)??;
        if chunk.len() == len {
            Ok(chunk)
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the staged copy is shorter than the bytes written",
            ))
        }
    }
}

impl Drop for StreamingUpload {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
