//! Namespace operations of [`SessionFs`]: lookup, attributes, mkdir, rmdir, create, symlink,
//! unlink, rename, directory listings and statfs. Each checks what the layout and the API
//! allow, changes the inode tree, and asks the write-back engine (`writeback`) for any upload
//! or delete it needs.

use sessionfs_io::lock::Locked;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::handles::Handle;
use super::names;
use super::tree::{
    Content, DirOrigin, FileNode, Ino, LocalMeta, Node, NodeKind, ROOT_INO, new_dir,
};
use super::{Attr, Caller, Entry, Error, FsStats, Opened, Result, SessionFs};
use sessionfs_remote::{ErrorKind, ObjectMeta};

/// Changes requested by `setattr`.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    /// New permission bits (the file type bits are ignored).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New length.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
}

/// Set-user-id and set-group-id bits.
const SETID_BITS: u16 = 0o6000;

impl SessionFs {
    pub(super) fn check_name(name: &str) -> Result<()> {
        if name.len() > names::NAME_MAX_BYTES {
            return Err(Error::name_too_long(format!(
                "name of {} bytes is longer than {}",
                name.len(),
                names::NAME_MAX_BYTES
            )));
        }
        Ok(())
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.config.read_only {
            return Err(Error::read_only());
        }
        Ok(())
    }

    pub(super) fn dir_of(&self, ino: Ino) -> Result<()> {
        match self.tree().get(ino).map(|n| n.dir().is_some()) {
            Some(true) => Ok(()),
            Some(false) => Err(Error::not_dir(format!("inode {ino} is not a directory"))),
            None => Err(Error::not_found(format!("inode {ino}"))),
        }
    }

    /// Looks `name` up in `parent`.
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Entry> {
        Self::check_name(name)?;
        self.dir_of(parent)?;
        let ino = self.existing_child(parent, name).await?;
        Ok(self.entry(self.attr(ino)?))
    }

    /// The inode of `name` in `parent`, from a listing younger than the TTL; ENOENT if none.
    pub(super) async fn existing_child(&self, parent: Ino, name: &str) -> Result<Ino> {
        self.ensure_fresh(parent).await?;
        self.tree()
            .child(parent, name)
            .ok_or_else(|| Error::not_found(name))
    }

    /// Attributes of `ino`, refreshed from the remote once the TTL has passed.
    pub async fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.ensure_fresh(ino).await?;
        self.attr(ino)
    }

    /// Applies chmod, chown, utime and truncate, as Linux allows them: chown by root only
    /// (chgrp by the owner to one of its groups), chmod by the owner or root (anyone may only clear
    /// the set-id bits, which the kernel asks for on a write); a chown by a non-root user clears
    /// the set-id bits of a file. ctime moves on every change. The attributes are saved to the
    /// metadata store; a truncate is staged and, when no handle is open for writing, uploaded.
    pub async fn setattr(&self, ino: Ino, changes: SetAttr, caller: Caller) -> Result<Attr> {
        self.check_setattr(ino, &changes, caller)?;
        if let Some(size) = changes.size {
            self.check_writable()?;
            self.check_largest_file(size)?;
            let content = self.content_of(ino)?;
            let mut state = content.lock().await;
            self.ensure_staged(ino, &mut state, size == 0).await?;
            self.before_change(ino, &mut state)?;
            let staged = state.staged.as_mut().expect("staged above");
            staged.set_len(size)?;
            self.mark_dirty(ino, &mut state);
            state.stream = None;
            self.set_size(ino, size);
            if state.writers == 0 {
                self.upload_locked(ino, &mut state).await?;
            }
        }
        let attr = {
            let mut tree = self.tree();
            let node = tree
                .get_mut(ino)
                .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
            let is_file = node.file().is_some();
            let current = self.attr_of(node);
            let meta = &mut node.meta;
            let mut perm = current.perm;
            if let Some(mode) = changes.mode {
                perm = (mode & 0o7777) as u16;
            }
            let owner_changed = changes.uid.is_some_and(|u| u != current.uid)
                || changes.gid.is_some_and(|g| g != current.gid);
            if owner_changed && !caller.is_root() && is_file {
                perm &= !SETID_BITS;
            }
            if perm != current.perm || changes.mode.is_some() {
                meta.perm = Some(perm);
            }
            meta.uid = changes.uid.or(meta.uid);
            meta.gid = changes.gid.or(meta.gid);
            meta.atime = changes.atime.or(meta.atime);
            meta.mtime = changes.mtime.or(meta.mtime);
            meta.ctime = Some(SystemTime::now());
            self.attr_of(node)
        };
        self.persist(ino);
        Ok(attr)
    }

    /// EPERM unless `caller` may make `changes` to `ino`.
    fn check_setattr(&self, ino: Ino, changes: &SetAttr, caller: Caller) -> Result<()> {
        if caller.is_root() {
            return Ok(());
        }
        let current = self.attr(ino)?;
        let owner = caller.uid == current.uid;
        if let Some(uid) = changes.uid
            && uid != current.uid
        {
            return Err(Error::not_permitted(format!(
                "chown of inode {ino}: only root may give a file away"
            )));
        }
        if let Some(gid) = changes.gid
            && gid != current.gid
            && !(owner && caller.in_group(gid))
        {
            return Err(Error::not_permitted(format!(
                "chgrp of inode {ino}: only its owner may, and only to one of their groups"
            )));
        }
        if let Some(mode) = changes.mode {
            let perm = (mode & 0o7777) as u16;
            // What the kernel sends for a truncate or write by someone else: the same mode
            // with set-user-ID and maybe set-group-ID gone.
            let only_clears_setid =
                perm & !SETID_BITS == current.perm & !SETID_BITS && perm & !current.perm == 0;
            if !owner && !only_clears_setid {
                return Err(Error::not_permitted(format!(
                    "chmod of inode {ino}: only its owner or root may"
                )));
            }
        }
        Ok(())
    }

    /// `caller` wrote to `ino`: as Linux does, a write by a user other than root (or one the
    /// kernel marks so) clears set-user-id, and set-group-id where the group may execute.
    pub fn written_by(&self, ino: Ino, caller: Caller, kernel_says_kill: bool) {
        if caller.is_root() && !kernel_says_kill {
            return;
        }
        let changed = {
            let mut tree = self.tree();
            let Some(node) = tree.get_mut(ino) else {
                return;
            };
            let perm = self.attr_of(node).perm;
            let mut kill = libc::S_ISUID as u16;
            if perm & 0o010 != 0 {
                kill |= libc::S_ISGID as u16;
            }
            if perm & kill == 0 {
                return;
            }
            node.meta.perm = Some(perm & !kill);
            true
        };
        if changed {
            self.persist(ino);
        }
    }

    /// The owner and mode of something `caller` creates in `parent`: the caller, unless
    /// `--uid`/`--gid` force one. As on Linux, in a set-group-ID directory the new entry takes
    /// the directory's group, and a new directory the bit too; a new file keeps set-group-ID
    /// only if its creator is in its group (or root).
    fn new_meta(&self, parent: Ino, mode: Option<u32>, dir: bool, caller: Caller) -> LocalMeta {
        let now = SystemTime::now();
        let parent = self.attr(parent).ok();
        let inherits = parent
            .as_ref()
            .filter(|p| p.perm & libc::S_ISGID as u16 != 0);
        let gid = inherits.map_or(caller.gid, |parent| parent.gid);
        let mut perm = mode.map(|mode| (mode & 0o7777) as u16);
        if let Some(perm) = &mut perm {
            if dir && inherits.is_some() {
                *perm |= libc::S_ISGID as u16;
            }
            let group_may_run = *perm & 0o010 != 0;
            if !dir && group_may_run && !caller.is_root() && !caller.in_group(gid) {
                *perm &= !(libc::S_ISGID as u16);
            }
        }
        LocalMeta {
            perm,
            uid: Some(self.config.force_uid.unwrap_or(caller.uid)),
            gid: Some(self.config.force_gid.unwrap_or(gid)),
            atime: Some(now),
            mtime: Some(now),
            ctime: Some(now),
        }
    }

    /// A directory's entries changed: its mtime and ctime move to now, and are saved where the
    /// directory has an object to keep them by (a marker, a container).
    pub(super) fn touch_dir(&self, dir: Ino) {
        if let Some(node) = self.tree().get_mut(dir) {
            let now = SystemTime::now();
            node.meta.mtime = Some(now);
            node.meta.ctime = Some(now);
        }
        self.persist(dir);
    }

    /// Creates a directory: a container under the root of a container API, else a directory
    /// kept remotely by an empty marker object (or only locally where the API cannot delete).
    pub async fn mkdir(&self, parent: Ino, name: &str, mode: u32, caller: Caller) -> Result<Entry> {
        Self::check_name(name)?;
        self.check_writable()?;
        self.dir_of(parent)?;
        self.ensure_fresh(parent).await?;
        if self.tree().child(parent, name).is_some() {
            return Err(Error::exists(name));
        }
        let meta = self.new_meta(parent, Some(mode), true, caller);
        if self.tree().is_container_list(parent) {
            if parent != ROOT_INO {
                // A group's containers are made on the server; the API takes no group.
                return Err(Error::not_permitted(format!(
                    "mkdir {name}: {} makes no directories inside a group",
                    self.remote.describe()
                )));
            }
            let title = names::title_from_dir_name(name);
            let container = self.remote.create_container(&title).await?;
            let mut tree = self.tree();
            let ino = tree.insert(parent, name, new_dir(DirOrigin::Container(container)), meta);
            let attr = self.attr_of(tree.get(ino).expect("just inserted"));
            drop(tree);
            self.persist(ino);
            return Ok(self.entry(attr));
        }
        let ino = self
            .tree()
            .insert(parent, name, new_dir(DirOrigin::Local), meta);
        if self.remote.capabilities().delete {
            match &self.delayed {
                // With --write-back the marker waits for the delay like a file's upload.
                Some(delayed) => delayed.schedule(ino),
                None => {
                    if let Err(err) = self.store_marker_of(ino).await {
                        let mut tree = self.tree();
                        tree.unlink(ino);
                        tree.forget_if_unused(ino, false);
                        return Err(err.context(format!("mkdir {name}")));
                    }
                }
            }
        }
        self.persist(ino);
        self.touch_dir(parent);
        let attr = self.attr(ino)?;
        Ok(self.entry(attr))
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        self.check_writable()?;
        let ino = self.existing_child(parent, name).await?;
        self.dir_of(ino)?;
        self.ensure_fresh(ino).await?;
        let origin = {
            let tree = self.tree();
            let dir = tree
                .get(ino)
                .and_then(Node::dir)
                .ok_or_else(|| Error::not_found(name))?;
            if !dir.children.is_empty() {
                return Err(Error::not_empty(name));
            }
            dir.origin.clone()
        };
        match origin {
            DirOrigin::Container(container) => {
                match self.remote.remove_container(&container.id).await {
                    Ok(()) => {}
                    Err(err) if err.kind == ErrorKind::NotFound => {}
                    Err(err) => return Err(err.into()),
                }
            }
            DirOrigin::Marker(marker) => {
                let container = self.tree().get(ino).and_then(|n| n.container.clone());
                match self.remote.delete(container.as_deref(), &marker).await {
                    Ok(()) => {}
                    Err(err) if err.kind == ErrorKind::NotFound => {}
                    Err(err) => return Err(err.into()),
                }
                self.forget_stored(container.as_deref(), &[marker.id]);
            }
            DirOrigin::Group(_) => {
                return Err(Error::not_permitted(format!(
                    "rmdir {name}: a group's directory goes when its last container does"
                )));
            }
            DirOrigin::Root | DirOrigin::Implicit | DirOrigin::Local => {}
        }
        {
            let mut tree = self.tree();
            tree.unlink(ino);
            tree.forget_if_unused(ino, false);
        }
        self.touch_dir(parent);
        Ok(())
    }

    /// Creates and opens a file. Nothing is uploaded before the first flush or close.
    pub async fn create(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        truncate: bool,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        Self::check_name(name)?;
        self.check_writable()?;
        self.dir_of(parent)?;
        if self.tree().is_container_list(parent) {
            return Err(Error::not_permitted(format!(
                "{name}: files live inside a session directory; mkdir one and create the file there"
            )));
        }
        self.ensure_fresh(parent).await?;
        let existing = self.tree().child(parent, name);
        if let Some(existing) = existing {
            let opened = self.open(existing, true, truncate, false).await?;
            return Ok((self.entry(self.attr(existing)?), opened));
        }
        let staged = self.new_staging()?;
        let local_only = self.config.scratch.matches(name);
        let file = FileNode {
            remote: None,
            size: 0,
            local_only,
            symlink: false,
            cached_version: None,
            content: Arc::new(tokio::sync::Mutex::new(Content {
                staged: Some(staged),
                writers: 1,
                ..Content::default()
            })),
        };
        let meta = self.new_meta(parent, Some(mode), false, caller);
        let content = file.content.clone();
        let ino = self.tree().insert(parent, name, NodeKind::File(file), meta);
        self.touch_dir(parent);
        self.mark_dirty(ino, &mut *content.lock().await);
        let fh = self.handles.insert(Handle::File {
            ino,
            writable: true,
            readahead: Default::default(),
        });
        let attr = self.attr(ino)?;
        Ok((
            self.entry(attr),
            Opened {
                fh,
                keep_cache: false,
            },
        ))
    }

    /// Creates a symbolic link, stored as a small object whose content is the target (see
    /// `names::encode_link`); scratch names (emacs locks `.#name`) stay local.
    pub async fn symlink(
        &self,
        parent: Ino,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> Result<Entry> {
        Self::check_name(name)?;
        self.check_writable()?;
        self.dir_of(parent)?;
        if self.tree().is_container_list(parent) {
            return Err(Error::not_permitted(format!(
                "{name}: links live inside a session directory"
            )));
        }
        self.ensure_fresh(parent).await?;
        if self.tree().child(parent, name).is_some() {
            return Err(Error::exists(name));
        }
        let mut staged = self.new_staging()?;
        staged.write_at(0, target.as_bytes())?;
        let local_only = self.config.scratch.matches(name);
        let content = Arc::new(tokio::sync::Mutex::new(Content {
            staged: Some(staged),
            ..Content::default()
        }));
        let link = FileNode {
            remote: None,
            size: target.len() as u64,
            local_only,
            symlink: true,
            cached_version: None,
            content: content.clone(),
        };
        let meta = self.new_meta(parent, None, false, caller);
        let ino = self.tree().insert(parent, name, NodeKind::File(link), meta);
        let mut state = content.lock().await;
        self.mark_dirty(ino, &mut state);
        if let Err(err) = self.upload_locked(ino, &mut state).await {
            let mut tree = self.tree();
            tree.unlink(ino);
            tree.forget_if_unused(ino, false);
            return Err(err.context(format!("symlink {name}")));
        }
        drop(state);
        self.touch_dir(parent);
        let attr = self.attr(ino)?;
        Ok(self.entry(attr))
    }

    /// The target of a symbolic link.
    pub async fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let content = self.content_of(ino)?;
        let state = content.lock().await;
        if let Some(staged) = &state.staged {
            return Ok(staged.read_at(0, staged.len() as usize)?);
        }
        drop(state);
        let (container, object) = self.remote_object(ino)?;
        let target = self
            .remote
            .read(container.as_deref(), &object, 0..object.size)
            .await?;
        Ok(target.to_vec())
    }

    /// Deletes a file.
    pub async fn unlink(&self, parent: Ino, name: &str) -> Result<()> {
        self.check_writable()?;
        let ino = self.existing_child(parent, name).await?;
        if self.dir_of(ino).is_ok() {
            return Err(Error::is_dir(format!("{name}: is a directory")));
        }
        let content = self.content_of(ino)?;
        let mut state = content.lock().await;
        let (container, remote, local_only) = {
            let tree = self.tree();
            let node = tree.get(ino).ok_or_else(|| Error::not_found(name))?;
            let file = node.file().expect("checked above");
            (node.container.clone(), file.remote.clone(), file.local_only)
        };
        if let (Some(object), false) = (remote, local_only) {
            self.delete_remote(container.as_deref(), &object, name)
                .await?;
        }
        self.mark_clean(&mut state);
        state.stream = None;
        let open = self.handles.is_open(ino);
        if !open {
            state.staged = None;
        }
        {
            let mut tree = self.tree();
            tree.unlink(ino);
            tree.forget_if_unused(ino, open);
        }
        self.touch_dir(parent);
        Ok(())
    }

    pub(super) async fn delete_remote(
        &self,
        container: Option<&str>,
        object: &ObjectMeta,
        name: &str,
    ) -> Result<()> {
        if !self.remote.capabilities().delete {
            return Err(Error::not_permitted(format!(
                "{name}: {} has no delete; the file stays",
                self.remote.describe()
            )));
        }
        self.blocks.forget_object(container, &object.id);
        match self.remote.delete(container, object).await {
            Ok(()) => {}
            Err(err) if err.kind == ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        self.forget_stored(container, std::slice::from_ref(&object.id));
        Ok(())
    }

    /// Renames a file (`file_rename`: by re-uploading it under the new name, then deleting the
    /// old object), or a directory (`dir_rename`: every object below it moves the same way).
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        Self::check_name(new_name)?;
        self.check_writable()?;
        self.ensure_fresh(parent).await?;
        self.ensure_fresh(new_parent).await?;
        self.dir_of(new_parent)?;
        let (ino, target) = {
            let tree = self.tree();
            let ino = tree
                .child(parent, name)
                .ok_or_else(|| Error::not_found(name))?;
            (ino, tree.child(new_parent, new_name))
        };
        if target == Some(ino) {
            return Ok(());
        }
        if target.is_some() && no_replace {
            return Err(Error::exists(new_name));
        }
        if self.dir_of(ino).is_ok() {
            return self
                .rename_dir(ino, target, parent, new_parent, new_name)
                .await;
        }
        if let Some(target) = target
            && self.dir_of(target).is_ok()
        {
            return Err(Error::is_dir(format!("{new_name}: is a directory")));
        }
        if self.tree().is_container_list(new_parent) {
            return Err(Error::not_permitted(format!(
                "{new_name}: files live inside a session directory"
            )));
        }
        self.rename_file(ino, target, (parent, name), (new_parent, new_name))
            .await
    }

    /// Opens a directory: lists it (if the listing is stale) and snapshots its entries.
    pub async fn opendir(&self, ino: Ino) -> Result<u64> {
        self.dir_of(ino)?;
        self.ensure_fresh(ino).await?;
        let entries = self.dir_entries(ino)?;
        Ok(self.handles.insert(Handle::Dir {
            ino,
            entries: Mutex::new(entries),
            started: AtomicBool::new(false),
        }))
    }

    /// The entries of directory `ino` in the inode table, `.` and `..` first.
    fn dir_entries(&self, ino: Ino) -> Result<Vec<(String, Attr)>> {
        let tree = self.tree();
        let node = tree.get(ino).ok_or_else(|| Error::not_found("directory"))?;
        let dir = node
            .dir()
            .ok_or_else(|| Error::not_dir(format!("inode {ino}")))?;
        let parent = tree.get(node.parent).unwrap_or(node);
        let mut entries = vec![
            (".".to_string(), self.attr_of(node)),
            ("..".to_string(), self.attr_of(parent)),
        ];
        for (name, child) in &dir.children {
            if let Some(child) = tree.get(*child) {
                entries.push((name.clone(), self.attr_of(child)));
            }
        }
        Ok(entries)
    }

    /// Entries of an open directory from `offset` on. A read from offset 0 after earlier reads
    /// (`rewinddir`, `seekdir(0)`) lists the directory again, as a local disk does.
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<(u64, String, Attr)>> {
        let handle = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::bad_handle("readdir on a closed handle"))?;
        let Handle::Dir {
            ino,
            entries,
            started,
        } = &*handle
        else {
            return Err(Error::not_dir("readdir on a file handle"));
        };
        if started.swap(true, Ordering::AcqRel) && offset == 0 {
            let again = self.dir_entries(*ino)?;
            *entries.locked() = again;
        }
        let entries = entries.locked();
        Ok(entries
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(index, (name, attr))| (index as u64 + 1, name.clone(), attr.clone()))
            .collect())
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.handles.remove(fh);
    }

    /// Numbers for `df`: used is the bytes of the files the mount knows (listed or staged),
    /// free a large constant, since no API here reports a quota.
    pub fn statfs(&self) -> FsStats {
        const BLOCK_SIZE_BYTES: u64 = 4096;
        // No API here reports a quota: the capacity is what the mount stores plus a large
        // constant, so `df` shows real used bytes and never more than 100 %.
        const FREE_BYTES: u64 = 1 << 50;
        const FREE_FILES: u64 = 1 << 31;
        let (bytes, files) = self.tree().stored_files();
        let used_blocks = bytes.div_ceil(BLOCK_SIZE_BYTES);
        let free_blocks = FREE_BYTES / BLOCK_SIZE_BYTES;
        FsStats {
            block_size: BLOCK_SIZE_BYTES as u32,
            blocks: used_blocks + free_blocks,
            blocks_free: free_blocks,
            files: files + FREE_FILES,
            files_free: FREE_FILES,
            name_max: names::NAME_MAX_BYTES as u32,
        }
    }
}
