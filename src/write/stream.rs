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
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use crate::remote::{ErrorKind, ObjectMeta, Remote, RemoteError, RemoteResult};

/// Largest piece read from the staging file per body chunk.
const CHUNK_BYTES: u64 = 256 * 1024;

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
    file: File,
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
        let body = Body {
            file: File::open(path)?,
            sent: 0,
            progress: receiver,
        };
        let stream = futures::stream::unfold(body, |mut body| async move {
            loop {
                let progress = *body.progress.borrow_and_update();
                if body.sent < progress.written {
                    let len = (progress.written - body.sent).min(CHUNK_BYTES) as usize;
                    let mut buf = vec![0; len];
                    return match body.file.read_exact_at(&mut buf, body.sent) {
                        Ok(()) => {
                            body.sent += len as u64;
                            Some((Ok(Bytes::from(buf)), body))
                        }
                        Err(err) => Some((Err(err), body)),
                    };
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

impl Drop for StreamingUpload {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
