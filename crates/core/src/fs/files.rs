//! Operations on open files: open, write, flush, fsync and release (reads live in `read`).
//! Writes go to the staged copy (and to a streamed upload while the file is written in
//! order); flush, fsync and the last release hand the file to the write-back engine.

use std::sync::Mutex;

use bytes::Bytes;

use super::handles::{Handle, ReadState};
use super::tree::{Content, Ino, Node};
use super::{Error, Opened, Result, SessionFs};
use crate::write::{QUEUE_BYTES, StreamingUpload};

/// How long a write past `--max-staged` waits for other files' uploads to free room: as long
/// as an upload keeps retrying by default.
const STAGED_ROOM_WAIT: std::time::Duration = sessionfs_remote::http::DEFAULT_RETRY_DEADLINE;

impl SessionFs {
    /// Opens a file. Opening for writing stages the whole file locally first (unless it is
    /// being truncated), so random writes and appends work like on a local disk. `direct`: the
    /// caller asked for `O_DIRECT`, so the kernel will not cache what it reads.
    pub async fn open(
        &self,
        ino: Ino,
        writable: bool,
        truncate: bool,
        direct: bool,
    ) -> Result<Opened> {
        if writable {
            self.check_writable()?;
        }
        let content = self.content_of(ino)?;
        let mut keep_cache = false;
        if writable {
            let mut state = content.lock().await;
            self.ensure_staged(ino, &mut state, truncate).await?;
            if truncate {
                self.before_change(ino, &mut state)?;
                state.staged.as_mut().expect("staged above").set_len(0)?;
                self.mark_dirty(ino, &mut state);
                state.stream = None;
                self.set_size(ino, 0);
            }
            state.writers += 1;
        } else {
            let staged = content.lock().await.staged.is_some();
            let mut tree = self.tree();
            if let Some(file) = tree.get_mut(ino).and_then(Node::file_mut)
                && !staged
            {
                let version = file.remote.as_ref().map(|m| m.version.clone());
                keep_cache = version.is_some() && file.cached_version == version;
                file.cached_version = version;
            }
        }
        let fh = self.handles.insert(Handle::File {
            ino,
            writable,
            readahead: Mutex::new(ReadState {
                bypasses_page_cache: direct,
                ..Default::default()
            }),
        });
        Ok(Opened { fh, keep_cache })
    }

    /// Writes into the staged copy; past `--max-staged`, after waiting for other files'
    /// uploads to free room, ENOSPC.
    pub async fn write(&self, ino: Ino, fh: u64, offset: u64, data: Bytes) -> Result<u32> {
        match self.handles.get(fh).as_deref() {
            Some(Handle::File { writable: true, .. }) => {}
            _ => {
                return Err(Error::bad_handle("write on a handle not open for writing"));
            }
        }
        self.check_largest_file(offset.saturating_add(data.len() as u64))?;
        let content = self.content_of(ino)?;
        let mut state = content.lock().await;
        self.before_change(ino, &mut state)?;
        let staged = state
            .staged
            .as_mut()
            .ok_or_else(|| Error::bad_handle("file is not staged for writing"))?;
        let own = staged.len();
        let bytes = self.staging.bytes();
        match self.config.max_staged {
            Some(cap) => {
                let growth = (offset + data.len() as u64).saturating_sub(own);
                if growth > 0 && !bytes.room_for(growth, own, cap, STAGED_ROOM_WAIT).await {
                    return Err(Error::no_space(format!(
                        "the staging directory holds {} bytes, and {growth} more would pass \
                         --max-staged ({cap}); uploads freed no room in {STAGED_ROOM_WAIT:?}",
                        bytes.used()
                    )));
                }
            }
            // No cap: the disk's own free space, less a reserve. What a write can allocate is
            // its own length (a hole it leaves costs nothing).
            None => {
                let dir = self.staging.dir();
                let need = data.len() as u64;
                if let Some(short) = bytes.room_on_disk(dir, need, own, STAGED_ROOM_WAIT).await {
                    return Err(Error::no_space(format!(
                        "the staging file system of {} has {} bytes free, and {need} more \
                         would leave less than the {} bytes kept free without --max-staged \
                         (5% of it, at most 1 GiB); uploads freed no room in \
                         {STAGED_ROOM_WAIT:?}",
                        dir.display(),
                        short.free,
                        short.reserve
                    )));
                }
            }
        }
        let appended = offset == staged.len();
        staged.write_at(offset, &data)?;
        let len = staged.len();
        self.mark_dirty(ino, &mut state);
        let written = data.len() as u32;
        match &mut state.stream {
            Some(stream) if appended => {
                let alive = stream.push(data).await;
                if !alive {
                    // The upload failed already; the staged copy is sent at flush.
                    state.stream = None;
                }
            }
            // A write elsewhere: the streamed bytes are no longer the file; upload at flush.
            Some(_) => state.stream = None,
            // With --write-back the upload waits for its delay, so nothing streams.
            None if offset == 0 && appended && self.delayed.is_none() => {
                self.start_stream(ino, &mut state, data).await
            }
            None => {}
        }
        self.set_size(ino, len);
        Ok(written)
    }

    /// Starts sending a file whose `first` bytes were just written at offset 0, if the API
    /// takes streamed uploads and the memory budget has room for the queue (see
    /// `write::stream`).
    pub(super) async fn start_stream(&self, ino: Ino, state: &mut Content, first: Bytes) {
        if !self.remote.capabilities().streaming_upload {
            return;
        }
        let target = {
            let tree = self.tree();
            let Some(node) = tree.get(ino) else { return };
            let Some(file) = node.file() else { return };
            if file.local_only || file.symlink || !node.linked {
                return;
            }
            self.target_of(&tree, node, file)
        };
        let Some(memory) = self.blocks.try_reserve(QUEUE_BYTES) else {
            log::debug!("no streamed upload for inode {ino}: the memory budget is in use");
            return;
        };
        let mut upload =
            StreamingUpload::start(self.remote.clone(), target.container, target.name, memory);
        if upload.push(first).await {
            state.stream = Some(upload);
        }
    }

    /// Called on every `close` of a handle: uploads the file if it was written.
    pub async fn flush(&self, ino: Ino, fh: u64) -> Result<()> {
        if matches!(
            self.handles.get(fh).as_deref(),
            Some(Handle::File { writable: true, .. })
        ) {
            let content = self.content_of(ino)?;
            let mut state = content.lock().await;
            self.upload_or_delay(ino, &mut state).await?;
        }
        Ok(())
    }

    /// What a close does to a written file: upload it now, or with `--write-back` commit it
    /// in the journal and schedule its upload (uploading now if the journal cannot be written,
    /// since only the journal would keep it through a crash).
    async fn upload_or_delay(&self, ino: Ino, state: &mut Content) -> Result<()> {
        if let Some(delayed) = &self.delayed
            && state.dirty
        {
            if !state.committed {
                self.commit(ino, state);
            }
            if state.committed {
                delayed.schedule(ino);
                return Ok(());
            }
        }
        self.upload_locked(ino, state).await
    }

    /// Makes the file durable on the remote: a real upload whose error is returned.
    pub async fn fsync(&self, ino: Ino) -> Result<()> {
        self.upload(ino).await
    }

    /// Closes a handle; the staged copy is dropped once nothing needs it.
    pub async fn release(&self, ino: Ino, fh: u64) -> Result<()> {
        let Some(handle) = self.handles.remove(fh) else {
            return Ok(());
        };
        let Handle::File { writable, .. } = &*handle else {
            return Ok(());
        };
        let content = self.content_of(ino)?;
        let mut state = content.lock().await;
        if *writable {
            state.writers = state.writers.saturating_sub(1);
        }
        // A read-only handle leaves uploads to the writers' own flushes.
        let result = if state.dirty && *writable {
            self.upload_or_delay(ino, &mut state).await
        } else {
            Ok(())
        };
        self.drop_staged_if_unused(ino, &mut state);
        drop(state);
        let open = self.handles.is_open(ino);
        self.tree().forget_if_unused(ino, open);
        result
    }

    /// EFBIG when a file of `end` bytes is longer than the largest file the remote stores
    /// (a write ending there, a truncate to it), so nothing past it is ever staged or sent.
    pub(super) fn check_largest_file(&self, end: u64) -> Result<()> {
        let max = self.remote.capabilities().max_object_bytes;
        if end > max {
            return Err(Error::past_largest_file(self.remote.describe(), end, max));
        }
        Ok(())
    }

    /// Drops the staged copy of a file that no writer holds and that matches the remote.
    pub(super) fn drop_staged_if_unused(&self, ino: Ino, state: &mut Content) {
        let local_only = self
            .tree()
            .get(ino)
            .and_then(Node::file)
            .is_some_and(|f| f.local_only);
        if state.writers == 0 && !state.dirty && !local_only {
            state.staged = None;
        }
    }
}
