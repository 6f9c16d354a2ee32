//! The filesystem core: `SessionFs<R: Remote>`, with async methods named after FUSE operations
//! that return plain structs. It knows nothing of fuser; `fuse.rs` adapts it.
//!
//! Design: one inode tree ([`tree::Tree`]) fed by whole-scope listings under a TTL, so one
//! `LIST` answers every `lookup` and `getattr` in a directory (and a miss in a fresh listing is
//! a cached negative answer). Reads of unmodified files go through the mount's block cache
//! (`crate::cache`); writes go to a staging file and the whole file is uploaded on flush, fsync
//! or close, with the error returned there. Our own changes update the tree at once; other
//! clients' changes show up when the TTL runs out.
//!
//! Locks: the tree is a std mutex, never held across an await. A file's content lock (async) is
//! held across its upload, so writes, renames and unlinks of that file wait for the upload.
//! Order: content lock, then tree lock; never the other way.

pub mod attrs;
mod container_path;
mod delayed;
mod dir_rename;
pub mod error;
mod file_rename;
mod files;
pub mod fuse;
pub mod handles;
use sessionfs_io::lock::Locked;
use sessionfs_remote::names;
mod namespace;
mod pending;
mod read;
pub mod scratch;
#[cfg(test)]
mod tests;
pub mod tree;
mod upload_plan;
mod writeback;
mod xattr;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use attrs::{MetaStore, Stored};
pub use container_path::container_at;
pub use dir_rename::{DirRenameLimit, finish_dir_renames};
pub use error::{Error, Result};
use handles::Handles;
pub use pending::{MountView, Usage};
use scratch::ScratchPatterns;
use tree::{DirOrigin, Ino, Node, NodeKind, Tree};

use crate::cache::{BlockCache, CacheConfig, MemoryBudget};
use crate::write::{Journal, RenameLog, StagingArea};
use sessionfs_remote::Remote;
use sessionfs_remote::observe::UploadProgress;

/// What kind of inode an [`Attr`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

/// Attributes of an inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Directory or file.
    pub kind: FileKind,
    /// Length in bytes.
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Number of links (2 for directories, 1 for files).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
}

/// A looked-up or created name: its attributes and how long the kernel may cache them.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The attributes.
    pub attr: Attr,
    /// How long the kernel may trust them.
    pub ttl: Duration,
}

/// An opened file.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    /// The handle number.
    pub fh: u64,
    /// The kernel may keep its page cache: the object is unchanged since it was last read.
    pub keep_cache: bool,
}

/// Numbers for `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    /// Block size in bytes.
    pub block_size: u32,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub blocks_free: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
    /// Longest name.
    pub name_max: u32,
}

/// Settings of the filesystem core.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// How long a listing answers lookups before it is fetched again.
    pub metadata_ttl: Duration,
    /// Owner of what has no owner of its own: objects from the server without an entry in the
    /// metadata store, and the mount root.
    pub uid: u32,
    /// Group of what has no group of its own.
    pub gid: u32,
    /// `--uid`: every file, directory and link created through the mount belongs to this user
    /// rather than to the process that created it.
    pub force_uid: Option<u32>,
    /// `--gid`: likewise for the group.
    pub force_gid: Option<u32>,
    /// The metadata store of this remote (`attrs`); `None` keeps attributes in memory only.
    pub meta_store: Option<PathBuf>,
    /// Permission bits of files.
    pub file_mode: u16,
    /// Permission bits of directories.
    pub dir_mode: u16,
    /// Where staging files go.
    pub staging_dir: PathBuf,
    /// Names kept local.
    pub scratch: ScratchPatterns,
    /// Refuse every change.
    pub read_only: bool,
    /// Answer `user.sessionfs.*` xattrs (`mount --xattrs`). Off (the default), the kernel stops
    /// asking (ENOSYS), which saves `ls -l` two round trips per file (it asks for the SELinux
    /// label and the ACL).
    pub xattrs: bool,
    /// The block cache and the global memory budget.
    pub cache: CacheConfig,
    /// `--write-back`: a close returns once the file is staged and journaled, and its upload
    /// starts this long after the last close; `None` uploads before the close returns.
    pub write_back: Option<Duration>,
    /// The largest directory rename carried out by moving objects (`--max-dir-rename`).
    pub max_dir_rename: DirRenameLimit,
    /// Most bytes the staging directory may hold (`--max-staged`); `None`: no cap.
    pub max_staged: Option<u64>,
    /// Where this mount's uploads report their progress and failures for `sessionfs status`
    /// (the handle `run::mount` also gives the report); the default is a fresh one.
    pub uploads: UploadProgress,
}

impl FsConfig {
    /// Defaults for the current user, staging under `staging_dir`.
    pub fn new(staging_dir: impl Into<PathBuf>) -> Self {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Self {
            metadata_ttl: Duration::from_secs(1),
            uid,
            gid,
            force_uid: None,
            force_gid: None,
            meta_store: None,
            file_mode: 0o644,
            dir_mode: 0o755,
            staging_dir: staging_dir.into(),
            scratch: ScratchPatterns::default(),
            read_only: false,
            xattrs: false,
            cache: CacheConfig::default(),
            write_back: None,
            max_dir_rename: DirRenameLimit::default(),
            max_staged: None,
            uploads: UploadProgress::default(),
        }
    }
}

/// Who asks for an operation: the uid and gid of the calling process (from the FUSE request),
/// and its pid, to look up its supplementary groups when a rule needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process (or thread) id; 0 when unknown, which leaves only the primary group.
    pub pid: u32,
}

impl Caller {
    /// The superuser.
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    /// Whether the caller is the superuser.
    pub fn is_root(self) -> bool {
        self.uid == 0
    }

    /// Whether the calling process is gone or being killed (a SIGKILL pending, which is also
    /// what a Ctrl-C of a program without a SIGINT handler becomes). The kernel waits for our
    /// answer to a request it has sent even then, since fuser answers FUSE_INTERRUPT with
    /// ENOSYS; a long wait can look at this to answer early.
    pub fn is_being_killed(self) -> bool {
        const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
        if self.pid == 0 {
            return false;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return true;
        };
        status
            .lines()
            .filter_map(|line| {
                line.strip_prefix("SigPnd:")
                    .or_else(|| line.strip_prefix("ShdPnd:"))
            })
            .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .any(|mask| mask & SIGKILL_BIT != 0)
    }

    /// Whether `gid` is the caller's primary group or one of its supplementary groups. A FUSE
    /// request carries only the primary one, so the others are read from the `Groups:` line of
    /// `/proc/PID/status` (none when the process is gone).
    pub fn in_group(self, gid: u32) -> bool {
        if gid == self.gid {
            return true;
        }
        if self.pid == 0 {
            return false;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid));
        status.is_ok_and(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Groups:"))
                .is_some_and(|groups| {
                    groups
                        .split_whitespace()
                        .any(|group| group.parse() == Ok(gid))
                })
        })
    }
}

/// The store key of container directories (their attributes are kept by container id).
const CONTAINERS_KEY: &str = "\u{1}containers";

/// The filesystem over one remote.
pub struct SessionFs {
    remote: Arc<dyn Remote>,
    config: FsConfig,
    staging: StagingArea,
    journal: Journal,
    /// Directory renames in progress.
    renames: RenameLog,
    mounted_at: SystemTime,
    /// The inode tree. Never held across an await.
    tree: Mutex<Tree>,
    handles: Handles,
    /// Attributes that last across mounts; called outside the tree lock.
    store: Option<MetaStore>,
    /// Blocks of remote objects, under the global memory budget.
    blocks: Arc<BlockCache>,
    /// One lock per scope so concurrent lookups share one listing request.
    refresh_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    /// Files whose upload waits for `--write-back`'s delay; `None` uploads at close.
    delayed: Option<Arc<delayed::Delayed>>,
}

impl SessionFs {
    /// A filesystem over `remote`. Fails if the staging or disk-cache directory cannot be
    /// made, or the memory limit is too small for the block size.
    pub fn new(remote: Arc<dyn Remote>, config: FsConfig) -> std::io::Result<Self> {
        let staging = StagingArea::new(&config.staging_dir)?;
        let journal = Journal::open(&config.staging_dir)?;
        let renames = RenameLog::open(&config.staging_dir)?;
        let containers = remote.capabilities().containers;
        let budget = MemoryBudget::new(config.cache.memory_limit);
        let blocks = Arc::new(BlockCache::new(config.cache.clone(), budget)?);
        let store = config.meta_store.as_deref().and_then(|path| {
            MetaStore::open(path)
                .inspect_err(|err| {
                    log::warn!("{err}; modes, owners and times last only until unmount")
                })
                .ok()
        });
        let delayed = (config.write_back).map(|delay| Arc::new(delayed::Delayed::new(delay)));
        Ok(Self {
            store,
            remote,
            config,
            staging,
            journal,
            renames,
            mounted_at: SystemTime::now(),
            tree: Mutex::new(Tree::new(containers)),
            handles: Handles::default(),
            blocks,
            refresh_locks: Mutex::new(HashMap::new()),
            delayed,
        })
    }

    /// Bytes the staging directory holds now (files being written or waiting for an upload),
    /// the figure `--max-staged` caps.
    pub fn staged_bytes(&self) -> u64 {
        self.staging.bytes().used()
    }

    /// The block cache (its counters and the global memory budget).
    pub fn block_cache(&self) -> &BlockCache {
        &self.blocks
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.locked()
    }

    fn entry(&self, attr: Attr) -> Entry {
        Entry {
            attr,
            ttl: self.config.metadata_ttl,
        }
    }

    /// Attributes of `node`.
    fn attr_of(&self, node: &Node) -> Attr {
        let (kind, size, perm, nlink, remote_time) = match &node.kind {
            NodeKind::Dir(dir) => {
                let created = match &dir.origin {
                    DirOrigin::Container(c) => Some(c.created),
                    DirOrigin::Group(g) => Some(g.created),
                    DirOrigin::Marker(meta) => meta.modified,
                    _ => None,
                };
                (FileKind::Dir, 0, self.config.dir_mode, 2, created)
            }
            NodeKind::File(file) => {
                let modified = file.remote.as_ref().and_then(|m| m.modified);
                if file.symlink {
                    (FileKind::Symlink, file.size, 0o777, 1, modified)
                } else {
                    (
                        FileKind::File,
                        file.size,
                        self.config.file_mode,
                        1,
                        modified,
                    )
                }
            }
        };
        // An open file or directory whose name is gone (unlinked, or replaced by a rename) has
        // no links left, as `fstat` on a local disk shows.
        let nlink = if node.linked { nlink } else { 0 };
        let mtime = node.meta.mtime.or(remote_time).unwrap_or(self.mounted_at);
        Attr {
            ino: node.ino,
            kind,
            size,
            perm: node.meta.perm.unwrap_or(perm),
            nlink,
            uid: node.meta.uid.unwrap_or(self.config.uid),
            gid: node.meta.gid.unwrap_or(self.config.gid),
            atime: node.meta.atime.unwrap_or(mtime),
            mtime,
            ctime: node.meta.ctime.unwrap_or(mtime),
        }
    }

    /// Attributes of `ino`, or ENOENT.
    fn attr(&self, ino: Ino) -> Result<Attr> {
        let tree = self.tree();
        let node = tree
            .get(ino)
            .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
        Ok(self.attr_of(node))
    }

    /// Makes sure the listing of the scope holding `ino` is younger than the TTL. When the
    /// remote cannot be reached but an older listing exists, that listing keeps answering
    /// (metadata stays usable offline); without any listing the error is returned.
    async fn ensure_fresh(&self, ino: Ino) -> Result<()> {
        let scope = self.tree().scope_of(ino);
        if self.is_fresh(scope) {
            return Ok(());
        }
        let lock = self.refresh_lock(scope);
        let _guard = lock.lock().await;
        if self.is_fresh(scope) {
            return Ok(());
        }
        match self.refresh(scope).await {
            Ok(()) => Ok(()),
            Err(err) if self.was_listed(scope) => {
                log::warn!("{}; showing the last listing", err.message);
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The lock that one listing of `scope` holds at a time (and a directory rename in it,
    /// so no listing shows the rename half done).
    fn refresh_lock(&self, scope: Ino) -> Arc<tokio::sync::Mutex<()>> {
        self.refresh_locks
            .locked()
            .entry(scope)
            .or_default()
            .clone()
    }

    fn listed_at(&self, scope: Ino) -> Option<Instant> {
        self.tree().get(scope)?.dir()?.listed_at
    }

    fn is_fresh(&self, scope: Ino) -> bool {
        self.listed_at(scope)
            .is_some_and(|at| at.elapsed() < self.config.metadata_ttl)
    }

    fn was_listed(&self, scope: Ino) -> bool {
        self.listed_at(scope).is_some()
    }

    /// Lists the scope rooted at `scope` and merges the answer into the tree.
    async fn refresh(&self, scope: Ino) -> Result<()> {
        let (is_container_list, container, linked) = {
            let tree = self.tree();
            let node = tree
                .get(scope)
                .ok_or_else(|| Error::not_found("directory"))?;
            (
                tree.is_container_list(scope),
                node.container.clone(),
                node.linked,
            )
        };
        if !linked {
            return Ok(());
        }
        if is_container_list {
            let containers = self.remote.list_containers().await?;
            let stored = self.stored_entries(Some(CONTAINERS_KEY));
            self.tree()
                .merge_containers(containers, &stored, Instant::now());
            return Ok(());
        }
        let objects = self.remote.list(container.as_deref()).await?;
        let stored = self.stored_entries(container.as_deref());
        // Handles and content are checked before the tree is locked for the merge: the open
        // files once, then each file's content, so a refresh is linear in files plus handles.
        let files = self.tree().files_below(scope);
        let open = self.handles.open_files();
        let busy_files: HashSet<Ino> = files
            .into_iter()
            .filter(|&i| open.contains(&i) || self.holds_local_content(i))
            .collect();
        let stale = self.tree().merge_objects(
            scope,
            objects,
            &|ino| busy_files.contains(&ino),
            &stored,
            Instant::now(),
        );
        self.forget_stored(container.as_deref(), &stale);
        Ok(())
    }

    /// The metadata store's entries of `container` (empty without a store or on failure).
    fn stored_entries(&self, container: Option<&str>) -> HashMap<String, Stored> {
        let Some(store) = &self.store else {
            return HashMap::new();
        };
        store.entries(container).unwrap_or_else(|err| {
            log::warn!("{err}");
            HashMap::new()
        })
    }

    /// Drops the store's entries of `ids` in `container`.
    pub(crate) fn forget_stored(&self, container: Option<&str>, ids: &[String]) {
        if let Some(store) = &self.store
            && let Err(err) = store.remove(container, ids)
        {
            log::warn!("{err}");
        }
    }

    /// Saves the attributes of `ino` under its object's id and version: a file's object, a
    /// directory's marker, a container. Nothing is saved for what has no object yet (a file
    /// is saved once uploaded) or never will (implicit and local-only directories).
    pub(crate) fn persist(&self, ino: Ino) {
        let Some(store) = &self.store else { return };
        let saved = {
            let tree = self.tree();
            let Some(node) = tree.get(ino) else { return };
            let (container, id, version, symlink) = match &node.kind {
                NodeKind::File(file) if !file.local_only => match &file.remote {
                    Some(object) => (
                        node.container.clone(),
                        object.id.clone(),
                        object.version.clone(),
                        file.symlink,
                    ),
                    None => return,
                },
                NodeKind::Dir(dir) => match &dir.origin {
                    DirOrigin::Marker(object) => (
                        node.container.clone(),
                        object.id.clone(),
                        object.version.clone(),
                        false,
                    ),
                    DirOrigin::Container(c) => (
                        Some(CONTAINERS_KEY.to_string()),
                        c.id.clone(),
                        String::new(),
                        false,
                    ),
                    _ => return,
                },
                NodeKind::File(_) => return,
            };
            let attr = self.attr_of(node);
            let stored = Stored {
                version,
                perm: attr.perm,
                uid: attr.uid,
                gid: attr.gid,
                atime: attr.atime.into(),
                mtime: attr.mtime.into(),
                ctime: attr.ctime.into(),
                symlink,
            };
            (container, id, stored)
        };
        let (container, id, stored) = saved;
        if let Err(err) = store.put(container.as_deref(), &id, &stored) {
            log::warn!("{err}; the attributes of inode {ino} last only until unmount");
        }
    }

    /// Whether a file holds unsaved local content (or is being changed right now); such a
    /// file, like an open one, keeps its local state through a listing refresh.
    fn holds_local_content(&self, ino: Ino) -> bool {
        let content = self
            .tree()
            .get(ino)
            .and_then(Node::file)
            .map(|file| file.content.clone());
        match content {
            Some(content) => match content.try_lock() {
                Ok(state) => state.staged.is_some(),
                Err(_) => true,
            },
            None => false,
        }
    }
}
