//! The write-back engine of [`SessionFs`]: staged copies, the journal of pending uploads, and
//! the upload of a file's staged copy (streamed or whole) under its content lock, planned by
//! `upload_plan` and carried out here (commit, send, then what follows a stored upload). A
//! failed upload leaves the file dirty and staged, so a later flush, fsync or the unmount drain
//! tries again; the drain and `keep_pending` are what the mount lifecycle calls at the end.

use std::sync::Arc;

use futures::StreamExt;

use super::names;
use super::tree::{Content, DirOrigin, FileNode, Ino, Node, NodeKind, ROOT_INO};
use super::upload_plan::{self, NodeFacts, SendFrom, SendPlan, UploadFacts, UploadPlan};
use super::{Error, Result, SessionFs};
use crate::write::{PendingUpload, StagingFile};
use sessionfs_remote::{ErrorKind, ObjectMeta, Remote, UploadSource};

/// Size of each ranged GET when a whole object is copied into the staging area.
const COPY_CHUNK_BYTES: u64 = 8 << 20;

/// Where a file's bytes go on the remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) container: Option<String>,
    pub(super) name: String,
}

impl SessionFs {
    /// Uploads the empty object that keeps directory `ino` when it holds no file.
    pub(super) async fn store_marker(&self, ino: Ino) -> Result<ObjectMeta> {
        let (container, path) = {
            let tree = self.tree();
            let node = tree.get(ino).ok_or_else(|| Error::not_found("directory"))?;
            (node.container.clone(), tree.path_in_scope(ino))
        };
        let name = names::encode(&format!("{path}/"), &self.remote.capabilities().name_rules);
        let empty = self.new_staging()?;
        let source = UploadSource::new(empty.path(), 0);
        Ok(self
            .remote
            .upload(container.as_deref(), &name, &source)
            .await?)
    }

    /// Stores the marker of directory `ino`, made with `mkdir`, if it has none yet, so the
    /// directory lasts on the server while it holds no file.
    pub(super) async fn store_marker_of(&self, ino: Ino) -> Result<()> {
        let local = matches!(
            self.tree().get(ino).map(|n| &n.kind),
            Some(NodeKind::Dir(dir)) if matches!(dir.origin, DirOrigin::Local)
        );
        if !local {
            return Ok(());
        }
        let object = self.store_marker(ino).await?;
        if let Some(NodeKind::Dir(dir)) = self.tree().get_mut(ino).map(|n| &mut n.kind) {
            dir.origin = DirOrigin::Marker(object);
        }
        Ok(())
    }

    /// Uploads every file with unsaved local content, several at a time; returns how many were
    /// uploaded. Used when unmounting so that no write is lost (with `--write-back`, this is
    /// where the files still waiting for their delay go).
    pub async fn drain(&self) -> Result<usize> {
        self.store_delayed_markers().await;
        let files = self.tree().files_below(ROOT_INO);
        let results: Vec<Option<Result<()>>> = futures::stream::iter(files)
            .map(|ino| async move {
                let content = self.content_of(ino).ok()?;
                let mut state = content.lock().await;
                if !state.dirty {
                    return None;
                }
                // Refused for good (too large) and unchanged since: kept for the next mount,
                // not retried; its refusal was logged when it came.
                if state
                    .staged
                    .as_ref()
                    .and_then(StagingFile::refused)
                    .is_some()
                {
                    return None;
                }
                Some(self.upload_locked(ino, &mut state).await)
            })
            .buffer_unordered(super::delayed::UPLOADS_IN_FLIGHT)
            .collect()
            .await;
        let mut uploaded = 0;
        let mut first_error = None;
        for result in results.into_iter().flatten() {
            match result {
                Ok(()) => uploaded += 1,
                Err(err) => {
                    log::error!("{}", err.message);
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(uploaded),
        }
    }

    pub(super) fn content_of(&self, ino: Ino) -> Result<Arc<tokio::sync::Mutex<Content>>> {
        let tree = self.tree();
        let node = tree
            .get(ino)
            .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
        match &node.kind {
            NodeKind::File(file) => Ok(file.content.clone()),
            NodeKind::Dir(_) => Err(Error::is_dir(format!("{}: is a directory", node.name))),
        }
    }

    /// The content of `ino` changed (write, truncate): its length, and mtime and ctime now.
    pub(super) fn set_size(&self, ino: Ino, size: u64) {
        if let Some(node) = self.tree().get_mut(ino) {
            let now = std::time::SystemTime::now();
            node.meta.mtime = Some(now);
            node.meta.ctime = Some(now);
            if let Some(file) = node.file_mut() {
                file.size = size;
                file.cached_version = None;
            }
        }
    }

    pub(super) fn remote_object(&self, ino: Ino) -> Result<(Option<String>, ObjectMeta)> {
        let tree = self.tree();
        let node = tree
            .get(ino)
            .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
        let object = node
            .file()
            .and_then(|f| f.remote.clone())
            .ok_or_else(|| Error::not_found(&node.name))?;
        Ok((node.container.clone(), object))
    }

    /// The journal record of `ino`'s live staged copy; `None` for files that are never
    /// uploaded (local-only) or not staged.
    fn record_of(&self, ino: Ino, state: &Content, committed: bool) -> Option<PendingUpload> {
        let tree = self.tree();
        let node = tree.get(ino)?;
        let file = node.file().filter(|file| !file.local_only)?;
        Some(PendingUpload {
            container: node.container.clone(),
            path: tree.path_in_scope(ino),
            symlink: file.symlink,
            staged: state.staged.as_ref()?.name(),
            committed,
            server_upload: None,
        })
    }

    /// Writes `record` to the journal; a failure is logged, since the upload can still work.
    fn write_record(&self, record: &PendingUpload) -> bool {
        match self.journal.record(record) {
            Ok(()) => true,
            Err(err) => {
                log::warn!(
                    "cannot record the pending upload of {:?} ({err}); it is lost if this \
                     process dies before the upload",
                    record.path
                );
                false
            }
        }
    }

    /// Marks the file's staged copy as ahead of the remote and, the first time, records that in
    /// the journal (as uncommitted unless it was committed), so a crash before the upload
    /// does not lose it. Local-only
    /// files are never uploaded and never recorded.
    pub(super) fn mark_dirty(&self, ino: Ino, state: &mut Content) {
        if self
            .tree()
            .get(ino)
            .and_then(Node::file)
            .is_none_or(|f| f.local_only)
        {
            return;
        }
        state.dirty = true;
        if state.journaled {
            return;
        }
        // A record written again (after a rename) keeps what it said about the commit.
        if let Some(record) = self.record_of(ino, state, state.committed) {
            state.journaled = self.write_record(&record);
        }
    }

    /// Called before the staged copy changes: if it holds committed bytes whose upload is not
    /// confirmed, they are copied aside and recorded as committed, and the live copy becomes
    /// uncommitted, so a crash from here on uploads what the application committed, never
    /// what it is still writing.
    pub(super) fn before_change(&self, ino: Ino, state: &mut Content) -> Result<()> {
        let Some(live) = state.staged.as_ref().filter(|_| state.committed) else {
            return Ok(());
        };
        // Holes stay holes: a sparse file's snapshot costs its data, not its length.
        let snapshot = self.staging.copy_of(live)?;
        if let Some(mut record) = self.record_of(ino, state, true) {
            record.staged = snapshot.name();
            self.write_record(&record);
        }
        if let Some(record) = self.record_of(ino, state, false) {
            state.journaled = self.write_record(&record);
        }
        state.committed = false;
        state.snapshot = Some(snapshot);
        Ok(())
    }

    /// The application committed the file (close, fsync, or a clean unmount): its record now
    /// says so, and a snapshot of an earlier commit is no longer needed.
    pub(super) fn commit(&self, ino: Ino, state: &mut Content) {
        let record = self.record_of(ino, state, true);
        self.commit_record(state, record.as_ref());
    }

    /// [`Self::commit`] with the committed record already made (`None`: the file is never
    /// recorded).
    fn commit_record(&self, state: &mut Content, record: Option<&PendingUpload>) {
        if let Some(record) = record {
            state.journaled = self.write_record(record);
            state.committed = state.journaled;
        }
        self.drop_snapshot(state);
    }

    fn drop_snapshot(&self, state: &mut Content) {
        if let Some(snapshot) = state.snapshot.take() {
            self.journal.remove(&snapshot.name());
        }
    }

    /// Marks the staged copy as matching the remote (or as never to be uploaded).
    pub(super) fn mark_clean(&self, state: &mut Content) {
        state.dirty = false;
        state.committed = false;
        self.drop_snapshot(state);
        if state.journaled {
            if let Some(staged) = &state.staged {
                self.journal.remove(&staged.name());
            }
            state.journaled = false;
        }
    }

    /// Keeps the staged copies of files that could not be uploaded (they stay recorded in the
    /// journal), so the next mount uploads them; returns how many. Called as the process ends.
    pub async fn keep_pending(&self) -> usize {
        let files = self.tree().files_below(ROOT_INO);
        let mut kept = 0;
        for ino in files {
            let Ok(content) = self.content_of(ino) else {
                continue;
            };
            let mut state = content.lock().await;
            if let Some(snapshot) = state.snapshot.take() {
                snapshot.keep();
            }
            if state.dirty
                && state.journaled
                && let Some(staged) = state.staged.take()
            {
                staged.keep();
                // The next mount uploads it; a flush that still arrives (a detached mount's
                // last writer) finds nothing to upload here.
                state.dirty = false;
                kept += 1;
            }
        }
        kept
    }

    /// A new staging file, hashing what is written only where the API checks an md5 (hashing
    /// costs more than the rest of the write path).
    pub(super) fn new_staging(&self) -> std::io::Result<StagingFile> {
        self.staging.create(self.remote.capabilities().upload_md5)
    }

    /// Gives the file a staged copy: empty when `empty`, else a copy of the remote object.
    pub(super) async fn ensure_staged(
        &self,
        ino: Ino,
        state: &mut Content,
        empty: bool,
    ) -> Result<()> {
        if state.staged.is_some() {
            return Ok(());
        }
        let mut staged = self.new_staging()?;
        if !empty && let Ok((container, object)) = self.remote_object(ino) {
            copy_object(&*self.remote, container.as_deref(), &object, &mut staged).await?;
        }
        state.staged = Some(staged);
        Ok(())
    }

    /// Uploads `ino` if it has unsaved content.
    pub(super) async fn upload(&self, ino: Ino) -> Result<()> {
        let content = self.content_of(ino)?;
        let mut state = content.lock().await;
        self.upload_locked(ino, &mut state).await
    }

    /// Uploads the staged copy of `ino` while its content lock is held. On failure the file
    /// stays dirty and staged, so a later flush, fsync or the unmount drain tries again.
    pub(super) async fn upload_locked(&self, ino: Ino, state: &mut Content) -> Result<()> {
        let facts = self.upload_facts(ino, state);
        match upload_plan::plan(ino, &facts, self.remote.capabilities())? {
            UploadPlan::Nothing => Ok(()),
            UploadPlan::TooShort { name, len, min } => {
                // Stays dirty, so the upload happens once the file has grown and is flushed again.
                log::info!(
                    "{name:?} has {len} bytes and {} stores files of at least {min}; it stays \
                     local until it has content",
                    self.remote.describe()
                );
                Ok(())
            }
            UploadPlan::Send(plan) => self.send(ino, state, plan).await,
        }
    }

    /// Reads what [`upload_plan::plan`] needs from the content and the inode table.
    fn upload_facts(&self, ino: Ino, state: &Content) -> UploadFacts {
        let record = self.record_of(ino, state, true);
        let tree = self.tree();
        let node = tree.get(ino).map(|node| {
            let file = node.file().expect("content belongs to a file");
            NodeFacts {
                target: self.target_of(&tree, node, file),
                local_only: file.local_only,
                linked: node.linked,
                record,
            }
        });
        UploadFacts {
            dirty: state.dirty,
            node,
            staged_len: state.staged.as_ref().map_or(0, StagingFile::len),
            refused: (state.staged.as_ref())
                .and_then(StagingFile::refused)
                .map(str::to_owned),
            stream_to: state.stream.as_ref().map(|stream| Target {
                container: stream.container.clone(),
                name: stream.name.clone(),
            }),
        }
    }

    /// Carries out `plan`: commits (the record says "committed" before any byte is sent),
    /// sends from the planned copy, and on success hands the stored object to [`Self::stored`].
    async fn send(&self, ino: Ino, state: &mut Content, plan: SendPlan) -> Result<()> {
        self.commit_record(state, plan.record.as_ref());
        let staged = state.staged.as_ref().expect("a dirty file is staged");
        let source = UploadSource {
            path: staged.path().to_path_buf(),
            size: staged.len(),
            md5: match plan.md5 {
                true => Some(staged.md5()?),
                false => None,
            },
            memory: Some(self.blocks.clone()),
            // Only a journaled file's record may be rewritten (its upload removes it).
            on_started: (state.journaled)
                .then(|| plan.record.clone())
                .flatten()
                .map(|record| self.journal.started_hook(record)),
            progress: self.config.uploads.clone(),
        };
        let path = self.mount_path(ino);
        let uploads = &self.config.uploads;
        let _progress = uploads.start(&path, &source.path, source.size);
        let target = &plan.target;
        let streamed = match (state.stream.take(), plan.from) {
            (Some(stream), SendFrom::Stream) => match stream.finish(source.size).await {
                Ok(object) => Some(object),
                Err(err) => {
                    log::info!("{}; uploading the staged copy instead", err.message);
                    None
                }
            },
            _ => None,
        };
        let object = match streamed {
            Some(object) => object,
            None => match self
                .remote
                .upload(target.container.as_deref(), &target.name, &source)
                .await
            {
                Ok(object) => object,
                Err(err) => {
                    let permanent = err.kind == ErrorKind::TooLarge;
                    let mut err = Error::from(err).at_risk();
                    if permanent {
                        // No retry can help: said once, kept staged and journaled (the next
                        // mount tries once more), and not sent again until it changes.
                        err.message = format!(
                            "{}; {path:?} stays staged and journaled and is not sent again \
                             until it is written or truncated",
                            err.message,
                        );
                        if let Some(staged) = state.staged.as_mut() {
                            staged.refuse(err.message.clone());
                        }
                    }
                    uploads.failed(&path, &err.message);
                    return Err(err);
                }
            },
        };
        uploads.succeeded(&path);
        self.stored(ino, state, &plan, object, &source).await;
        Ok(())
    }

    /// What follows a stored upload: the file is clean (its record goes), the tree holds the
    /// new object and its attributes move to it, and on an id-keyed API with delete the object
    /// it supersedes goes last, so the name never shows two files.
    async fn stored(
        &self,
        ino: Ino,
        state: &mut Content,
        plan: &SendPlan,
        mut object: ObjectMeta,
        source: &UploadSource,
    ) {
        let target = &plan.target;
        object.md5 = object.md5.or(source.md5.clone());
        log::debug!(
            "uploaded inode {ino} as {:?}: {} bytes, md5 {}",
            object.name,
            source.size,
            source.md5.as_deref().unwrap_or("-")
        );
        if object.name != target.name {
            log::warn!(
                "{} stored {:?} as {:?}; it will be listed under the stored name",
                self.remote.describe(),
                target.name,
                object.name
            );
        }
        self.mark_clean(state);
        self.blocks
            .forget_object(target.container.as_deref(), &object.id);
        let new_id = object.id.clone();
        let superseded = self
            .tree()
            .get_mut(ino)
            .and_then(Node::file_mut)
            .and_then(|file| {
                file.size = source.size;
                file.cached_version = Some(object.version.clone());
                file.remote.replace(object)
            });
        // The attributes move to the new object id and version.
        self.persist(ino);
        if let Some(old) = superseded.as_ref().filter(|old| old.id != new_id) {
            self.forget_stored(target.container.as_deref(), std::slice::from_ref(&old.id));
        }
        // On an id-keyed API the new content is a new object: once it is stored, the one it
        // replaces goes (where the API can delete), so the name never shows two files.
        if let Some(old) = superseded.filter(|old| old.id != new_id)
            && plan.delete_superseded
            && let Err(err) = self
                .delete_remote(target.container.as_deref(), &old, &target.name)
                .await
        {
            log::warn!(
                "{}; the previous version of {:?} stays on the server",
                err.message,
                target.name
            );
        }
    }

    /// Where the bytes of `node` go: its existing object's name on APIs that overwrite by name,
    /// else the encoded path.
    pub(super) fn target_of(
        &self,
        tree: &super::tree::Tree,
        node: &Node,
        file: &FileNode,
    ) -> Target {
        let caps = self.remote.capabilities();
        let path = tree.path_in_scope(node.ino);
        let name = match &file.remote {
            Some(object) if caps.overwrite_by_name => object.name.clone(),
            _ if file.symlink => names::encode_link(&path, &caps.name_rules),
            _ => names::encode(&path, &caps.name_rules),
        };
        Target {
            container: node.container.clone(),
            name,
        }
    }
}

/// Copies the whole of `object` into `staged` with ranged GETs (staging a file before a
/// change, or moving an object to a new name, since no API can rename).
pub(super) async fn copy_object<R: Remote + ?Sized>(
    remote: &R,
    container: Option<&str>,
    object: &ObjectMeta,
    staged: &mut StagingFile,
) -> Result<()> {
    let mut offset = 0;
    while offset < object.size {
        let end = (offset + COPY_CHUNK_BYTES).min(object.size);
        let data = remote.read(container, object, offset..end).await?;
        if data.is_empty() {
            return Err(Error::io(format!(
                "{:?} ended early at byte {offset} while being copied",
                object.name
            )));
        }
        // The server sends a hole's zeros; whole blocks of them stay holes here.
        staged.write_keeping_holes(offset, &data)?;
        offset += data.len() as u64;
    }
    staged.set_len(object.size)?;
    Ok(())
}
