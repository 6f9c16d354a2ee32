//! Directory rename within one container.
//!
//! Directories on every API here are name prefixes (`dir／file`, with an empty marker object
//! `dir／` for one made with mkdir), and no API can rename an object. So rename(2) of a
//! directory moves every object below it: each is copied to its new name and the old one is
//! deleted. The list of moves is recorded (`write::renames`) before the first one and removed
//! after the last; the next mount finishes a recorded rename before it mounts
//! ([`finish_dir_renames`]), so a crash never leaves both halves to be listed as one merged
//! tree. A move that fails undoes the moves before it. While a rename runs, the container's
//! listing waits (it would show both halves), and so does every file below (its lock is held).
//!
//! EXDEV (so `mv` copies by itself): renames of containers, into another container, on APIs
//! without delete (when a stored object would have to move), and over `--max-dir-rename`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::attrs::{MetaStore, Rekey};
use super::names;
use super::tree::{Content, DirOrigin, Ino, NodeKind};
use super::writeback::copy_object;
use super::{Error, Result, SessionFs};
use crate::write::{DirRename, Journal, ObjectMove, RenameLog, StagingArea};
use sessionfs_remote::{ErrorKind, ObjectMeta, Remote, UploadSource};

/// Objects moved at once.
const MOVES_IN_FLIGHT: usize = 4;

/// `--max-dir-rename BYTES,OBJECTS`: the largest directory rename carried out by copying;
/// a larger one answers EXDEV, and `mv` copies it itself (showing its progress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirRenameLimit {
    /// Bytes of the objects that would move.
    pub bytes: u64,
    /// Number of objects that would move (files, links, directory markers).
    pub objects: usize,
}

impl Default for DirRenameLimit {
    fn default() -> Self {
        Self {
            bytes: 1 << 30,
            objects: 10_000,
        }
    }
}

impl fmt::Display for DirRenameLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = bytesize::ByteSize(self.bytes)
            .to_string_as(true)
            .replace(' ', "");
        write!(f, "{bytes},{}", self.objects)
    }
}

impl FromStr for DirRenameLimit {
    type Err = String;

    /// `1GiB,10000`: a size, a comma, a count.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (bytes, objects) = text
            .split_once(',')
            .ok_or_else(|| format!("{text:?}: give a size and a count, e.g. 1GiB,10000"))?;
        let bytes = bytes
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|err| format!("{bytes:?} is not a size: {err}"))?;
        let objects = objects
            .trim()
            .parse()
            .map_err(|err| format!("{objects:?} is not a count of objects: {err}"))?;
        Ok(Self {
            bytes: bytes.as_u64(),
            objects,
        })
    }
}

/// What a directory rename moves, found in the tree.
struct Plan {
    rename: DirRename,
    /// The node each move belongs to (same order as `rename.moves`).
    nodes: Vec<Ino>,
    /// Every file below the directory, with its content lock.
    files: Vec<(Ino, Arc<tokio::sync::Mutex<Content>>)>,
    /// The marker of the empty directory being replaced, which stays as the moved one's.
    target_marker: Option<ObjectMeta>,
}

impl SessionFs {
    /// Renames directory `ino` to `new_name` in `new_parent` (replacing `target`, an empty
    /// directory, if given) by moving every object below it; see the module docs.
    pub(super) async fn rename_dir(
        &self,
        ino: Ino,
        target: Option<Ino>,
        parent: Ino,
        new_parent: Ino,
        new_name: &str,
    ) -> Result<()> {
        let scope = self.tree().scope_of(ino);
        let listing = self.refresh_lock(scope);
        let _listing = listing.lock().await;
        let first = self.plan_dir_rename(ino, target, new_parent, new_name)?;
        let mut files = first.files;
        files.sort_by_key(|(ino, _)| *ino);
        let mut locked = Vec::with_capacity(files.len());
        for (_, content) in &files {
            locked.push(content.clone().lock_owned().await);
        }
        // A fresh listing, taken while no file below can upload: the plan then holds every
        // object the server has below the directory, even one a listing younger than the TTL
        // missed (an upload that ended while it was taken). Files made below the directory
        // while the locks were taken move too.
        self.refresh(scope).await?;
        let plan = self.plan_dir_rename(ino, target, new_parent, new_name)?;
        for (ino, content) in &plan.files {
            if files.iter().all(|(known, _)| known != ino) {
                locked.push(content.clone().try_lock_owned().map_err(|_| {
                    Error::busy(format!(
                        "rename of a directory: inode {ino} is being changed"
                    ))
                })?);
            }
        }
        for state in &mut locked {
            // An upload streaming under the old name is dropped; the file uploads at close.
            state.stream = None;
        }
        let moved = self.carry_out_live(&plan.rename).await?;
        self.settle(&plan.rename, &moved);
        self.renames.remove(&plan.rename.id);
        {
            let mut tree = self.tree();
            for (node, object) in plan.nodes.iter().zip(&moved) {
                let (Some(object), Some(node)) = (object, tree.get_mut(*node)) else {
                    continue;
                };
                match &mut node.kind {
                    NodeKind::File(file) => {
                        file.remote = Some(object.clone());
                        file.cached_version = None;
                    }
                    NodeKind::Dir(dir) => dir.origin = DirOrigin::Marker(object.clone()),
                }
            }
            tree.move_node(ino, new_parent, new_name);
            if let Some(node) = tree.get_mut(ino) {
                node.meta.ctime = Some(SystemTime::now());
                if let (NodeKind::Dir(dir), Some(marker)) = (&mut node.kind, plan.target_marker)
                    && !matches!(dir.origin, DirOrigin::Marker(_))
                {
                    dir.origin = DirOrigin::Marker(marker);
                }
            }
        }
        for step in &plan.rename.moves {
            if let Some(id) = &step.from_id {
                self.blocks
                    .forget_object(plan.rename.container.as_deref(), id);
            }
        }
        drop(locked);
        self.persist(ino);
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        Ok(())
    }

    /// The moves of renaming `ino`, or why it cannot be renamed here.
    fn plan_dir_rename(
        &self,
        ino: Ino,
        target: Option<Ino>,
        new_parent: Ino,
        new_name: &str,
    ) -> Result<Plan> {
        let tree = self.tree();
        let node = tree.get(ino).ok_or_else(|| Error::not_found(new_name))?;
        let movable = node.dir().is_some_and(|dir| {
            matches!(
                dir.origin,
                DirOrigin::Implicit | DirOrigin::Marker(_) | DirOrigin::Local
            )
        });
        if !movable {
            return Err(Error::cross_device(format!(
                "{}: {} cannot rename a container; `mv` copies it",
                node.name,
                self.remote.describe()
            )));
        }
        if tree.scope_of(ino) != tree.scope_of(new_parent) || tree.is_container_list(new_parent) {
            return Err(Error::cross_device(format!(
                "{new_name}: a directory moves to another container by copying"
            )));
        }
        let mut target_marker = None;
        if let Some(target) = target.and_then(|t| tree.get(t)) {
            let Some(dir) = target.dir() else {
                return Err(Error::not_dir(format!("{new_name}: not a directory")));
            };
            if !dir.children.is_empty() {
                return Err(Error::not_empty(new_name));
            }
            if let DirOrigin::Marker(marker) = &dir.origin {
                target_marker = Some(marker.clone());
            }
        }
        let rules = self.remote.capabilities().name_rules;
        let from = tree.path_in_scope(ino);
        let to = match tree.path_in_scope(new_parent) {
            parent if parent.is_empty() => new_name.to_string(),
            parent => format!("{parent}/{new_name}"),
        };
        let mut plan = Plan {
            rename: DirRename {
                id: uuid::Uuid::new_v4().to_string(),
                container: node.container.clone(),
                from,
                to: to.clone(),
                moves: Vec::new(),
            },
            nodes: Vec::new(),
            files: Vec::new(),
            target_marker,
        };
        let mut bytes = 0;
        let below = std::iter::once((String::new(), ino)).chain(tree.descendants(ino));
        for (relative, child) in below {
            let Some(child_node) = tree.get(child) else {
                continue;
            };
            let path = match relative.is_empty() {
                true => to.clone(),
                false => format!("{to}/{relative}"),
            };
            let (object, to_name) = match &child_node.kind {
                NodeKind::File(file) => {
                    plan.files.push((child, file.content.clone()));
                    match &file.remote {
                        Some(object) if !file.local_only => match file.symlink {
                            true => (object, names::encode_link(&path, &rules)),
                            false => (object, names::encode(&path, &rules)),
                        },
                        _ => continue,
                    }
                }
                NodeKind::Dir(dir) => match &dir.origin {
                    DirOrigin::Marker(marker) => {
                        (marker, names::encode(&format!("{path}/"), &rules))
                    }
                    _ => continue,
                },
            };
            bytes += object.size;
            plan.nodes.push(child);
            plan.rename.moves.push(ObjectMove {
                from_id: Some(object.id.clone()),
                from_name: object.name.clone(),
                version: object.version.clone(),
                to_name,
            });
        }
        let limit = self.config.max_dir_rename;
        if plan.rename.moves.len() > limit.objects || bytes > limit.bytes {
            return Err(Error::cross_device(format!(
                "{new_name}: the rename would move {} objects of {bytes} bytes, over \
                 --max-dir-rename {limit}; `mv` copies it instead",
                plan.rename.moves.len()
            )));
        }
        if !plan.rename.moves.is_empty() && !self.remote.capabilities().delete {
            return Err(Error::cross_device(format!(
                "{new_name}: {} has no delete, so stored files cannot move; `mv` copies them",
                self.remote.describe()
            )));
        }
        Ok(plan)
    }

    /// Records `rename` and carries it out; a failure undoes the moves made so far (or leaves
    /// that to the next mount when the undoing fails too).
    async fn carry_out_live(&self, rename: &DirRename) -> Result<Vec<Option<ObjectMeta>>> {
        if rename.moves.is_empty() {
            return Ok(Vec::new());
        }
        let record = |rename: &DirRename| {
            self.renames.record(rename).map_err(|err| {
                Error::io(format!(
                    "cannot record the rename of {:?} in {} ({err}); nothing was moved",
                    rename.from,
                    self.renames.path_of(&rename.id).display()
                ))
            })
        };
        record(rename)?;
        let err = match carry_out(&*self.remote, &self.staging, rename).await {
            Ok(moved) => return Ok(moved),
            Err(err) => err,
        };
        let back = rename.reversed();
        let undone = match record(&back) {
            Ok(()) => carry_out(&*self.remote, &self.staging, &back)
                .await
                .map(drop),
            Err(err) => Err(err),
        };
        match undone {
            Ok(()) => self.renames.remove(&rename.id),
            Err(undo) => log::error!(
                "{}; the rename of {:?} to {:?} is undone by the next mount ({})",
                undo.message,
                rename.from,
                rename.to,
                self.renames.path_of(&rename.id).display()
            ),
        }
        Err(err.context(format!("rename {:?} to {:?}", rename.from, rename.to)))
    }

    /// The moves of `rename` are done: pending uploads below it and stored attributes follow.
    fn settle(&self, rename: &DirRename, moved: &[Option<ObjectMeta>]) {
        if let Err(err) = settle(&self.journal, self.store.as_ref(), rename, moved) {
            log::warn!("{err}");
        }
    }
}

/// Pending uploads below the renamed directory name their new paths, and the stored attributes
/// of each moved object follow it to its new id and version.
fn settle(
    journal: &Journal,
    store: Option<&MetaStore>,
    rename: &DirRename,
    moved: &[Option<ObjectMeta>],
) -> std::result::Result<(), String> {
    let container = rename.container.as_deref();
    journal
        .move_prefix(container, &rename.from, &rename.to)
        .map_err(|err| {
            format!(
                "cannot move the pending uploads below {:?} to {:?}: {err}",
                rename.from, rename.to
            )
        })?;
    let Some(store) = store else { return Ok(()) };
    let rekeys: Vec<Rekey> = rename
        .moves
        .iter()
        .zip(moved)
        .filter_map(|(step, object)| {
            Some(Rekey {
                from_id: step.from_id.clone()?,
                from_version: step.version.clone(),
                to_id: object.as_ref()?.id.clone(),
                to_version: object.as_ref()?.version.clone(),
            })
        })
        .collect();
    store
        .rekey(container, &rekeys)
        .map_err(|err| format!("{err}; the moved files' modes, owners and times are lost"))
}

/// Carries out the moves of `rename`: one listing of the container, then for each move the
/// source is copied to its target unless the target is listed, and deleted unless it is gone.
/// Returns the object now at each target (`None` when neither was there).
async fn carry_out<R: Remote + ?Sized>(
    remote: &R,
    staging: &StagingArea,
    rename: &DirRename,
) -> Result<Vec<Option<ObjectMeta>>> {
    let container = rename.container.as_deref();
    let listed = remote.list(container).await?;
    let by_id: HashMap<&str, &ObjectMeta> = listed.iter().map(|o| (o.id.as_str(), o)).collect();
    let by_name: HashMap<&str, &ObjectMeta> = listed.iter().map(|o| (o.name.as_str(), o)).collect();
    let moves: Vec<_> = rename
        .moves
        .iter()
        .map(|step| {
            // By id, else by name: a rollback knows no ids, and another client may have
            // replaced the object since the tree listed it.
            let source = step
                .from_id
                .as_deref()
                .and_then(|id| by_id.get(id))
                .or_else(|| by_name.get(step.from_name.as_str()));
            let target = by_name.get(step.to_name.as_str());
            move_one(
                remote,
                staging,
                container,
                step,
                source.copied(),
                target.copied(),
            )
        })
        .collect();
    futures::stream::iter(moves)
        .buffered(MOVES_IN_FLIGHT)
        .try_collect()
        .await
}

/// One idempotent move: copy unless the target exists, then delete the source unless gone.
async fn move_one<R: Remote + ?Sized>(
    remote: &R,
    staging: &StagingArea,
    container: Option<&str>,
    step: &ObjectMove,
    source: Option<&ObjectMeta>,
    target: Option<&ObjectMeta>,
) -> Result<Option<ObjectMeta>> {
    let moved = match (target, source) {
        (Some(target), _) => Some(target.clone()),
        (None, Some(source)) => {
            let mut copy = staging.create(false)?;
            copy_object(remote, container, source, &mut copy).await?;
            let upload = UploadSource::new(copy.path(), copy.len());
            Some(remote.upload(container, &step.to_name, &upload).await?)
        }
        (None, None) => {
            log::warn!(
                "{:?} is gone from the server, so nothing moves to {:?}",
                step.from_name,
                step.to_name
            );
            None
        }
    };
    if let Some(source) = source {
        match remote.delete(container, source).await {
            Ok(()) => {}
            Err(err) if err.kind == ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(moved)
}

/// Finishes, before anything is mounted, every directory rename an earlier process recorded
/// and did not complete (or the undoing of one that failed); returns how many. An error means
/// the mount must not go ahead: the server would show both halves of a tree.
pub async fn finish_dir_renames<R: Remote + ?Sized>(
    remote: &R,
    staging_dir: &std::path::Path,
    store: Option<&MetaStore>,
) -> std::result::Result<usize, String> {
    let log = RenameLog::open(staging_dir).map_err(|err| err.to_string())?;
    let journal = Journal::open(staging_dir).map_err(|err| err.to_string())?;
    let staging = StagingArea::new(staging_dir).map_err(|err| err.to_string())?;
    let pending = log.pending().map_err(|err| err.to_string())?;
    for rename in &pending {
        let moved = carry_out(remote, &staging, rename).await.map_err(|err| {
            format!(
                "cannot finish the rename of {:?} to {:?} that an earlier mount began: {}; \
                 nothing was mounted: mount again once the server answers (the record is {})",
                rename.from,
                rename.to,
                err.message,
                log.path_of(&rename.id).display()
            )
        })?;
        if let Err(err) = settle(&journal, store, rename, &moved) {
            log::warn!("{err}");
        }
        log.remove(&rename.id);
        log::info!(
            "finished the rename of {:?} to {:?} that an earlier mount began ({} objects)",
            rename.from,
            rename.to,
            rename.moves.len()
        );
    }
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_reads_a_size_and_a_count() {
        let limit: DirRenameLimit = "1GiB,10000".parse().unwrap();
        assert_eq!(limit, DirRenameLimit::default());
        assert_eq!(limit.to_string(), "1.0GiB,10000");
        assert_eq!(
            "64MiB, 3".parse::<DirRenameLimit>().unwrap(),
            DirRenameLimit {
                bytes: 64 << 20,
                objects: 3
            }
        );
        assert!("1GiB".parse::<DirRenameLimit>().is_err());
        assert!("lots,3".parse::<DirRenameLimit>().is_err());
    }
}
