//! The inode table: every name the mount shows, and how listings are merged into it.
//!
//! The tree has three levels of meaning. The root; under it, on APIs with containers, one
//! directory per container (a *scope*), or per group of containers with the containers' own
//! directories inside (Fluxer: a guild, then its channels); inside a scope, the objects of
//! that container arranged into directories by the `/` in their decoded names. On flat APIs
//! the root itself is the one scope. A scope is listed as a whole, so one `LIST` fills the
//! attributes of every child; the root and the group directories are filled by one listing of
//! the containers.
//!
//! Invariants: an inode number is never reused; a node is reachable from the root exactly when
//! `linked` is true; a node's `container` is the id of its scope (`None` on flat APIs and for
//! the root). The tree is behind a std mutex and never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::attrs::Stored;
use super::names::{self, Candidate, Winner};
use crate::write::StagingFile;
use sessionfs_remote::{Container, ContainerGroup, ObjectMeta};

/// An inode number.
pub type Ino = u64;

/// The root's inode number, fixed by FUSE.
pub const ROOT_INO: Ino = 1;

/// Where a directory came from, which decides whether a refresh may remove it.
#[derive(Clone, Debug)]
pub enum DirOrigin {
    /// The mount root.
    Root,
    /// A remote container (Mix session, Fluxer channel).
    Container(Container),
    /// A group of containers (Fluxer guild): holds container directories, is not one itself.
    Group(ContainerGroup),
    /// Implied by the paths of objects inside it; disappears when it holds nothing.
    Implicit,
    /// Made with `mkdir` and kept remotely by an empty marker object.
    Marker(ObjectMeta),
    /// Made with `mkdir` where no marker can be stored; lives until unmount.
    Local,
}

/// A directory's entries.
#[derive(Debug)]
pub struct DirNode {
    /// Child names to inodes, sorted so listings are stable.
    pub children: BTreeMap<String, Ino>,
    /// Where it came from.
    pub origin: DirOrigin,
    /// When this scope root was last listed (only meaningful on scope roots).
    pub listed_at: Option<Instant>,
}

/// The mutable state of a file's content, behind an async lock held across uploads so that
/// writes, renames and unlinks wait for an upload in flight.
#[derive(Debug, Default)]
pub struct Content {
    /// The local copy, while open for writing or not yet uploaded.
    pub staged: Option<StagingFile>,
    /// The staged copy differs from the remote object.
    pub dirty: bool,
    /// The journal holds a record of this pending upload.
    pub journaled: bool,
    /// The staged copy is what the application last committed (closed or fsynced), its
    /// record says so, and the upload of it is not confirmed yet.
    pub committed: bool,
    /// The committed bytes, kept aside (and recorded as committed) when the application wrote
    /// again before their upload was confirmed; the live copy is then uncommitted.
    pub snapshot: Option<StagingFile>,
    /// Open handles that may write.
    pub writers: usize,
    /// The upload running while the file is written from start to end, if any; dropping it
    /// aborts it.
    pub stream: Option<crate::write::StreamingUpload>,
}

/// A regular file.
#[derive(Debug)]
pub struct FileNode {
    /// The remote object, once it exists.
    pub remote: Option<ObjectMeta>,
    /// Length as the mount shows it (staged length while staged).
    pub size: u64,
    /// Kept in the staging area, never uploaded (editor scratch files).
    pub local_only: bool,
    /// A symbolic link: its content is the target, stored under a marked name.
    pub symlink: bool,
    /// The version whose bytes the kernel page cache may hold.
    pub cached_version: Option<String>,
    /// Content state; see [`Content`].
    pub content: Arc<tokio::sync::Mutex<Content>>,
}

/// What a node is.
#[derive(Debug)]
pub enum NodeKind {
    /// A directory.
    Dir(DirNode),
    /// A regular file.
    File(FileNode),
}

/// Attributes set locally (create, chmod, chown, utime, writes); loaded from and saved to the
/// metadata store (`attrs`) where one is configured.
#[derive(Clone, Debug, Default)]
pub struct LocalMeta {
    /// Permission bits.
    pub perm: Option<u16>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Access time.
    pub atime: Option<SystemTime>,
    /// Modification time.
    pub mtime: Option<SystemTime>,
    /// Change time.
    pub ctime: Option<SystemTime>,
}

/// One inode.
#[derive(Debug)]
pub struct Node {
    /// Its number.
    pub ino: Ino,
    /// Parent directory (the root is its own parent).
    pub parent: Ino,
    /// Local name in the parent.
    pub name: String,
    /// Scope (container id) it lives in.
    pub container: Option<String>,
    /// Directory or file.
    pub kind: NodeKind,
    /// chmod/chown/utime overrides.
    pub meta: LocalMeta,
    /// Reachable from the root.
    pub linked: bool,
}

impl Node {
    /// The file part, if this is a file.
    pub fn file(&self) -> Option<&FileNode> {
        match &self.kind {
            NodeKind::File(file) => Some(file),
            NodeKind::Dir(_) => None,
        }
    }

    /// The file part, mutably.
    pub fn file_mut(&mut self) -> Option<&mut FileNode> {
        match &mut self.kind {
            NodeKind::File(file) => Some(file),
            NodeKind::Dir(_) => None,
        }
    }

    /// The directory part, if this is a directory.
    pub fn dir(&self) -> Option<&DirNode> {
        match &self.kind {
            NodeKind::Dir(dir) => Some(dir),
            NodeKind::File(_) => None,
        }
    }

    fn dir_mut(&mut self) -> Option<&mut DirNode> {
        match &mut self.kind {
            NodeKind::Dir(dir) => Some(dir),
            NodeKind::File(_) => None,
        }
    }
}

/// The inode table.
#[derive(Debug)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// The root holds containers (true) or is itself the flat scope (false).
    containers: bool,
    /// Remote names already logged as shown under a substitute.
    substitutes: names::SubstituteLog,
}

impl Tree {
    /// A tree with only the root.
    pub fn new(containers: bool) -> Self {
        let root = Node {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            container: None,
            kind: NodeKind::Dir(DirNode {
                children: BTreeMap::new(),
                origin: DirOrigin::Root,
                listed_at: None,
            }),
            meta: LocalMeta::default(),
            linked: true,
        };
        Self {
            nodes: HashMap::from([(ROOT_INO, root)]),
            next_ino: ROOT_INO + 1,
            containers,
            substitutes: names::SubstituteLog::default(),
        }
    }

    /// The node `ino`, if it exists.
    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The node `ino`, mutably.
    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The child `name` of directory `parent`.
    pub fn child(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.get(parent)?.dir()?.children.get(name).copied()
    }

    /// The inode of the scope root that `ino` belongs to: the root itself on flat APIs, and for
    /// the root and group directories on container APIs, else the container directory at or
    /// above `ino`.
    pub fn scope_of(&self, mut ino: Ino) -> Ino {
        if !self.containers {
            return ROOT_INO;
        }
        while let Some(node) = self.get(ino) {
            let container = node
                .dir()
                .is_some_and(|d| matches!(d.origin, DirOrigin::Container(_)));
            if container || ino == ROOT_INO {
                return ino;
            }
            ino = node.parent;
        }
        ROOT_INO
    }

    /// Whether `ino` is a directory that holds containers: the root, or a group directory.
    pub fn is_container_list(&self, ino: Ino) -> bool {
        self.containers
            && (ino == ROOT_INO
                || self
                    .get(ino)
                    .and_then(Node::dir)
                    .is_some_and(|d| matches!(d.origin, DirOrigin::Group(_))))
    }

    /// The node's path inside its scope, components joined by `/`.
    pub fn path_in_scope(&self, ino: Ino) -> String {
        let scope = self.scope_of(ino);
        let mut parts = Vec::new();
        let mut current = ino;
        while current != scope {
            let Some(node) = self.get(current) else { break };
            parts.push(node.name.as_str());
            current = node.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Adds a child node and returns its inode number. The caller has checked the name is free.
    pub fn insert(&mut self, parent: Ino, name: &str, kind: NodeKind, meta: LocalMeta) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        let container = own_container(&kind).or_else(|| self.container_for_child(parent));
        self.nodes.insert(
            ino,
            Node {
                ino,
                parent,
                name: name.to_string(),
                container,
                kind,
                meta,
                linked: true,
            },
        );
        if let Some(dir) = self.get_mut(parent).and_then(Node::dir_mut) {
            dir.children.insert(name.to_string(), ino);
        }
        ino
    }

    fn container_for_child(&self, parent: Ino) -> Option<String> {
        let parent_node = self.get(parent)?;
        match &parent_node.dir()?.origin {
            DirOrigin::Container(container) => Some(container.id.clone()),
            _ => parent_node.container.clone(),
        }
    }

    /// Takes `ino` out of its parent. The node stays in the table (open handles may still use
    /// it) until [`Self::forget_if_unused`] drops it.
    pub fn unlink(&mut self, ino: Ino) {
        let Some(node) = self.get_mut(ino) else {
            return;
        };
        node.linked = false;
        let (parent, name) = (node.parent, node.name.clone());
        if let Some(dir) = self.get_mut(parent).and_then(Node::dir_mut)
            && dir.children.get(&name) == Some(&ino)
        {
            dir.children.remove(&name);
        }
    }

    /// Drops an unlinked node that nothing refers to any more.
    pub fn forget_if_unused(&mut self, ino: Ino, open_handles: bool) {
        if let Some(node) = self.get(ino)
            && !node.linked
            && !open_handles
        {
            self.nodes.remove(&ino);
        }
    }

    /// Moves `ino` to `new_parent` under `new_name`, unlinking whatever was there.
    pub fn move_node(&mut self, ino: Ino, new_parent: Ino, new_name: &str) {
        if let Some(existing) = self.child(new_parent, new_name)
            && existing != ino
        {
            self.unlink(existing);
        }
        self.unlink(ino);
        let own = self.get(ino).and_then(|node| own_container(&node.kind));
        let container = own.or_else(|| self.container_for_child(new_parent));
        if let Some(node) = self.get_mut(ino) {
            node.parent = new_parent;
            node.name = new_name.to_string();
            node.container = container;
            node.linked = true;
        }
        if let Some(dir) = self.get_mut(new_parent).and_then(Node::dir_mut) {
            dir.children.insert(new_name.to_string(), ino);
        }
    }

    /// Every node below `dir` (depth first), with its path relative to `dir`.
    pub fn descendants(&self, dir: Ino) -> Vec<(String, Ino)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), dir)];
        while let Some((prefix, ino)) = stack.pop() {
            let Some(children) = self.get(ino).and_then(Node::dir).map(|d| &d.children) else {
                continue;
            };
            for (name, &child) in children {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                out.push((path.clone(), child));
                stack.push((path, child));
            }
        }
        out
    }

    /// Replaces the container directories with `containers`: ungrouped ones under the root, the
    /// others inside one directory per group. Keeps the inode of every container and group that
    /// is still there. Duplicate titles among siblings: the oldest keeps the name.
    ///
    /// A container directory seen for the first time takes its attributes from `stored` (by
    /// container id).
    pub fn merge_containers(
        &mut self,
        containers: Vec<Container>,
        stored: &HashMap<String, Stored>,
        now: Instant,
    ) {
        let mut top = Vec::new();
        let mut members: BTreeMap<String, Vec<Wanted>> = BTreeMap::new();
        for container in containers {
            let group_title = container.group.as_ref().map(|group| group.title.as_str());
            for title in std::iter::once(container.title.as_str()).chain(group_title) {
                if let Some(why) = names::unshowable(title) {
                    let shown = names::dir_name_from_title(title);
                    self.substitutes.note(title, &shown, why);
                }
            }
            match container.group.clone() {
                None => top.push(Wanted::container(container)),
                Some(group) => {
                    let member = Wanted::container(container);
                    let slot = members.entry(group.id.clone()).or_default();
                    if slot.is_empty() {
                        top.push(Wanted {
                            key: format!("g:{}", group.id),
                            candidate: Candidate {
                                name: names::dir_name_from_title(&group.title),
                                id: group.id.clone(),
                                time: group.created,
                            },
                            origin: DirOrigin::Group(group),
                        });
                    }
                    slot.push(member);
                }
            }
        }
        let placed = self.merge_dirs(ROOT_INO, top, stored);
        for (group_id, wanted) in members {
            if let Some(&dir) = placed.get(&format!("g:{group_id}")) {
                self.merge_dirs(dir, wanted, stored);
            }
        }
        if let Some(dir) = self.get_mut(ROOT_INO).and_then(Node::dir_mut) {
            dir.listed_at = Some(now);
        }
    }

    /// Makes the container and group directories in `parent` exactly `wanted` (by key), keeping
    /// the inodes of those still there; returns every key's inode.
    fn merge_dirs(
        &mut self,
        parent: Ino,
        wanted: Vec<Wanted>,
        stored: &HashMap<String, Stored>,
    ) -> HashMap<String, Ino> {
        let candidates: Vec<Candidate> = wanted.iter().map(|w| w.candidate.clone()).collect();
        let wanted_names = names::disambiguate(&candidates, Winner::Oldest);
        let existing: HashMap<String, Ino> = self
            .descendants_one_level(parent)
            .into_iter()
            .filter_map(|ino| Some((origin_key(&self.get(ino)?.dir()?.origin)?, ino)))
            .collect();
        let mut placed = HashMap::new();
        for (wanted, name) in wanted.into_iter().zip(wanted_names) {
            let ino = match existing.get(&wanted.key) {
                Some(&ino) => {
                    if let Some(dir) = self.get_mut(ino).and_then(Node::dir_mut) {
                        dir.origin = wanted.origin;
                    }
                    if self.get(ino).is_some_and(|n| n.name != name) {
                        self.move_node(ino, parent, &name);
                    }
                    ino
                }
                None => {
                    let meta = match &wanted.origin {
                        DirOrigin::Container(c) => stored.get(&c.id).map(Stored::local_meta),
                        _ => None,
                    };
                    self.insert(
                        parent,
                        &name,
                        new_dir(wanted.origin),
                        meta.unwrap_or_default(),
                    )
                }
            };
            placed.insert(wanted.key, ino);
        }
        for (key, ino) in existing {
            if !placed.contains_key(&key) {
                self.unlink(ino);
            }
        }
        placed
    }

    /// Bytes and count of the files the mount knows it stores: every file reachable from the
    /// root, at the length it shows (the listed size, or the staged length while written).
    /// Only what has been listed counts, so scopes never opened add nothing.
    pub fn stored_files(&self) -> (u64, u64) {
        self.nodes
            .values()
            .filter(|node| node.linked)
            .filter_map(Node::file)
            .fold((0, 0), |(bytes, count), file| {
                (bytes + file.size, count + 1)
            })
    }

    /// Every file inode below `dir`.
    pub fn files_below(&self, dir: Ino) -> Vec<Ino> {
        self.descendants(dir)
            .into_iter()
            .filter(|(_, ino)| self.get(*ino).is_some_and(|node| node.file().is_some()))
            .map(|(_, ino)| ino)
            .collect()
    }

    fn descendants_one_level(&self, dir: Ino) -> Vec<Ino> {
        self.get(dir)
            .and_then(Node::dir)
            .map(|d| d.children.values().copied().collect())
            .unwrap_or_default()
    }

    /// Merges a fresh listing of the scope rooted at `scope` into the tree.
    ///
    /// Local state wins where it exists: a file with unsaved writes or open handles keeps its
    /// node even if the remote object vanished, and files not yet uploaded are kept. Everything
    /// else follows the listing: new objects appear, vanished ones disappear, changed ones get
    /// the new size and version. `busy` tells which files have open handles.
    ///
    /// `stored` holds the scope's entries of the metadata store by object id: a file or marker
    /// seen for the first time takes its attributes from the entry of its version; a file that
    /// changed on the server (another version than the tree knew) loses its local attributes,
    /// so the server's apply. Returns the ids whose entries describe another version than the
    /// listed one (and than any the tree knew): the caller drops them from the store.
    pub fn merge_objects(
        &mut self,
        scope: Ino,
        objects: Vec<ObjectMeta>,
        busy: &dyn Fn(Ino) -> bool,
        stored: &HashMap<String, Stored>,
        now: Instant,
    ) -> Vec<String> {
        let mut objects = objects;
        objects.retain(plausible_size);
        let mut stale: Vec<String> = Vec::new();
        for object in &objects {
            if let Some(entry) = stored.get(&object.id)
                && entry.version != object.version
            {
                stale.push(object.id.clone());
            }
        }
        let (mut files, mut markers) = arrange(objects, &mut self.substitutes);
        let known_versions = self.merge_known(scope, &mut files, &mut markers, busy, stored);
        self.add_markers(scope, markers, stored);
        self.add_files(scope, files, stored);
        self.prune_implicit_dirs(scope);
        if let Some(dir) = self.get_mut(scope).and_then(Node::dir_mut) {
            dir.listed_at = Some(now);
        }
        // An entry for the version the tree knew (our own upload, not yet listed) stays.
        stale.retain(|id| known_versions.get(id) != stored.get(id).map(|e| &e.version));
        stale
    }

    /// The nodes already below `scope` follow the listing: each takes its listed object (and
    /// leaves `files` and `markers`), or loses it. Returns the version the tree knew of each
    /// object id it held.
    fn merge_known(
        &mut self,
        scope: Ino,
        files: &mut HashMap<String, Listed>,
        markers: &mut HashMap<String, ObjectMeta>,
        busy: &dyn Fn(Ino) -> bool,
        stored: &HashMap<String, Stored>,
    ) -> HashMap<String, String> {
        let mut known_versions: HashMap<String, String> = HashMap::new();
        for (path, ino) in self.descendants(scope) {
            let Some(node) = self.get_mut(ino) else {
                continue;
            };
            match &mut node.kind {
                NodeKind::File(file) => match files.remove(&path).map(|listed| listed.meta) {
                    Some(mut meta) => {
                        // Listings may omit what the upload answer told us about the same version.
                        if let Some(old) =
                            file.remote.as_ref().filter(|o| o.version == meta.version)
                        {
                            meta.md5 = meta.md5.or_else(|| old.md5.clone());
                            meta.content_type =
                                meta.content_type.or_else(|| old.content_type.clone());
                        }
                        let unsaved = file.remote.is_none() || busy(ino);
                        if !unsaved && file.remote.as_ref() != Some(&meta) {
                            file.size = meta.size;
                        }
                        let changed_on_server = !unsaved
                            && file
                                .remote
                                .as_ref()
                                .is_some_and(|old| old.version != meta.version);
                        if let Some(old) = &file.remote {
                            known_versions.insert(old.id.clone(), old.version.clone());
                        }
                        if changed_on_server {
                            node.meta = matching(stored, &meta).unwrap_or_default();
                        }
                        file.remote = Some(meta);
                    }
                    None if file.remote.is_some() => {
                        if busy(ino) {
                            file.remote = None;
                        } else {
                            self.unlink(ino);
                        }
                    }
                    None => {}
                },
                NodeKind::Dir(dir) => match markers.remove(&path) {
                    Some(meta) => dir.origin = DirOrigin::Marker(meta),
                    None => {
                        if matches!(dir.origin, DirOrigin::Marker(_)) {
                            dir.origin = DirOrigin::Implicit;
                        }
                    }
                },
            }
        }
        known_versions
    }

    /// Directories for the listed markers no node held yet, with their stored attributes.
    fn add_markers(
        &mut self,
        scope: Ino,
        markers: HashMap<String, ObjectMeta>,
        stored: &HashMap<String, Stored>,
    ) {
        for (path, meta) in markers {
            let dir = self.ensure_dirs(scope, &path);
            let local = matching(stored, &meta);
            if let Some(node) = self.get_mut(dir)
                && let NodeKind::Dir(dir) = &mut node.kind
            {
                if let Some(local) = local {
                    node.meta = local;
                }
                dir.origin = DirOrigin::Marker(meta);
            }
        }
    }

    /// File nodes for the listed objects no node held yet, with their stored attributes.
    fn add_files(
        &mut self,
        scope: Ino,
        files: HashMap<String, Listed>,
        stored: &HashMap<String, Stored>,
    ) {
        for (path, Listed { meta, symlink }) in files {
            let (parent_path, name) = match path.rfind('/') {
                Some(slash) => (&path[..slash], &path[slash + 1..]),
                None => ("", path.as_str()),
            };
            let parent = self.ensure_dirs(scope, parent_path);
            if self.child(parent, name).is_some() {
                // A directory of the same name wins; the object stays reachable by no name.
                log::warn!(
                    "remote object {:?} hidden by a directory of the same name",
                    meta.name
                );
                continue;
            }
            let local = matching(stored, &meta).unwrap_or_default();
            let file = NodeKind::File(FileNode {
                size: meta.size,
                remote: Some(meta),
                local_only: false,
                symlink,
                cached_version: None,
                content: Default::default(),
            });
            self.insert(parent, name, file, local);
        }
    }

    /// The directory at `path` under `scope`, created as implicit directories where missing.
    fn ensure_dirs(&mut self, scope: Ino, path: &str) -> Ino {
        let mut current = scope;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current = match self.child(current, part) {
                Some(ino) if self.get(ino).is_some_and(|n| n.dir().is_some()) => ino,
                Some(_) => {
                    log::warn!(
                        "a file and a directory are both named {part:?}; the directory is hidden"
                    );
                    return current;
                }
                None => self.insert(
                    current,
                    part,
                    new_dir(DirOrigin::Implicit),
                    LocalMeta::default(),
                ),
            };
        }
        current
    }

    /// Removes implicit directories that hold nothing, deepest first.
    fn prune_implicit_dirs(&mut self, scope: Ino) {
        let mut candidates = self.descendants(scope);
        candidates.sort_by_key(|(path, _)| std::cmp::Reverse(path.matches('/').count()));
        for (_, ino) in candidates {
            let empty_implicit = self.get(ino).and_then(Node::dir).is_some_and(|dir| {
                matches!(dir.origin, DirOrigin::Implicit) && dir.children.is_empty()
            });
            if empty_implicit {
                self.unlink(ino);
                self.nodes.remove(&ino);
            }
        }
    }
}

/// A container or group directory as a listing of containers wants it.
struct Wanted {
    /// `c:<container id>` or `g:<group id>`: what keeps its inode across listings.
    key: String,
    candidate: Candidate,
    origin: DirOrigin,
}

impl Wanted {
    fn container(container: Container) -> Self {
        Self {
            key: format!("c:{}", container.id),
            candidate: Candidate {
                name: names::dir_name_from_title(&container.title),
                id: container.id.clone(),
                time: container.created,
            },
            origin: DirOrigin::Container(container),
        }
    }
}

/// The [`Wanted::key`] of a container or group directory.
fn origin_key(origin: &DirOrigin) -> Option<String> {
    match origin {
        DirOrigin::Container(c) => Some(format!("c:{}", c.id)),
        DirOrigin::Group(g) => Some(format!("g:{}", g.id)),
        _ => None,
    }
}

/// The id of the container a container directory stands for.
fn own_container(kind: &NodeKind) -> Option<String> {
    match kind {
        NodeKind::Dir(DirNode {
            origin: DirOrigin::Container(container),
            ..
        }) => Some(container.id.clone()),
        _ => None,
    }
}

/// A new empty directory node.
pub fn new_dir(origin: DirOrigin) -> NodeKind {
    NodeKind::Dir(DirNode {
        children: BTreeMap::new(),
        origin,
        listed_at: None,
    })
}

/// Sorts a listing into file paths and directory markers, decoding names and giving duplicate
/// names unique suffixes (the newest object keeps the plain name).
fn arrange(
    objects: Vec<ObjectMeta>,
    substitutes: &mut names::SubstituteLog,
) -> (HashMap<String, Listed>, HashMap<String, ObjectMeta>) {
    let mut markers = HashMap::new();
    let mut plain = Vec::new();
    for meta in objects {
        let link_base = names::strip_link_mark(&meta.name).map(str::to_string);
        let symlink = link_base.is_some();
        let path = names::decode(link_base.as_deref().unwrap_or(&meta.name));
        match path.strip_suffix('/') {
            Some(dir) if valid_path(dir) && !symlink => {
                markers.insert(dir.to_string(), meta);
            }
            _ => {
                let path = match path.split('/').find_map(names::unshowable) {
                    None => path,
                    Some(why) => {
                        // Not a usable path (empty parts, `..`): show it flat, slashes substituted.
                        let shown = names::dir_name_from_title(&path);
                        substitutes.note(&meta.name, &shown, why);
                        shown
                    }
                };
                plain.push((path, Listed { meta, symlink }));
            }
        }
    }
    let candidates: Vec<Candidate> = plain
        .iter()
        .map(|(path, listed)| Candidate {
            name: path.clone(),
            id: listed.meta.id.clone(),
            time: listed.meta.modified.unwrap_or(SystemTime::UNIX_EPOCH),
        })
        .collect();
    let unique = names::disambiguate(&candidates, Winner::Newest);
    let files = unique
        .into_iter()
        .zip(plain)
        .map(|(path, (_, listed))| (path, listed))
        .collect();
    (files, markers)
}

/// A listed object that shows as a file or a symbolic link.
struct Listed {
    meta: ObjectMeta,
    symlink: bool,
}

fn valid_path(path: &str) -> bool {
    path.split('/').all(names::valid_component)
}

/// Whether a listed object's size is one a file can have (the kernel refuses attributes over
/// `i64::MAX` bytes with EIO and no word); an absurd one is left out with one log line.
/// The stored attributes of `meta`'s object, if the store describes this very version.
fn matching(stored: &HashMap<String, Stored>, meta: &ObjectMeta) -> Option<LocalMeta> {
    stored
        .get(&meta.id)
        .filter(|entry| entry.version == meta.version)
        .map(Stored::local_meta)
}

fn plausible_size(object: &ObjectMeta) -> bool {
    let plausible = i64::try_from(object.size).is_ok();
    if !plausible {
        log::warn!(
            "the server listed {:?} with a size of {} bytes, more than a file can have; it \
             is not shown",
            object.name,
            object.size
        );
    }
    plausible
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            id: name.to_string(),
            name: name.to_string(),
            size,
            modified: None,
            version: size.to_string(),
            content_type: None,
            md5: None,
        }
    }

    fn names_under(tree: &Tree, dir: Ino) -> Vec<String> {
        tree.get(dir)
            .unwrap()
            .dir()
            .unwrap()
            .children
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn listing_builds_nested_dirs_and_keeps_inodes_stable() {
        let mut tree = Tree::new(false);
        let never_busy = |_| false;
        let now = Instant::now();
        tree.merge_objects(
            ROOT_INO,
            vec![
                object("a.txt", 1),
                object("src／main.rs", 2),
                object("empty／", 0),
            ],
            &never_busy,
            &HashMap::new(),
            now,
        );
        assert_eq!(names_under(&tree, ROOT_INO), ["a.txt", "empty", "src"]);
        let src = tree.child(ROOT_INO, "src").unwrap();
        let main = tree.child(src, "main.rs").unwrap();
        assert_eq!(tree.path_in_scope(main), "src/main.rs");

        tree.merge_objects(
            ROOT_INO,
            vec![object("src／main.rs", 5)],
            &never_busy,
            &HashMap::new(),
            now,
        );
        assert_eq!(
            tree.child(src, "main.rs"),
            Some(main),
            "same inode after a refresh"
        );
        assert_eq!(tree.get(main).unwrap().file().unwrap().size, 5);
        assert_eq!(
            names_under(&tree, ROOT_INO),
            ["src"],
            "vanished objects and markers go"
        );
    }

    #[test]
    fn stored_files_sum_what_the_listing_shows() {
        let mut tree = Tree::new(false);
        let now = Instant::now();
        let objects = vec![object("a", 1000), object("d／b", 24), object("gone", 7)];
        tree.merge_objects(ROOT_INO, objects, &|_| false, &HashMap::new(), now);
        assert_eq!(tree.stored_files(), (1031, 3));
        tree.merge_objects(
            ROOT_INO,
            vec![object("a", 1000)],
            &|_| false,
            &HashMap::new(),
            now,
        );
        assert_eq!(
            tree.stored_files(),
            (1000, 1),
            "vanished objects no longer count"
        );
    }

    #[test]
    fn busy_files_survive_a_listing_without_them() {
        let mut tree = Tree::new(false);
        let now = Instant::now();
        tree.merge_objects(
            ROOT_INO,
            vec![object("open.txt", 1)],
            &|_| false,
            &HashMap::new(),
            now,
        );
        let ino = tree.child(ROOT_INO, "open.txt").unwrap();
        tree.merge_objects(ROOT_INO, vec![], &|i| i == ino, &HashMap::new(), now);
        assert_eq!(tree.child(ROOT_INO, "open.txt"), Some(ino));
        assert!(tree.get(ino).unwrap().file().unwrap().remote.is_none());
    }

    #[test]
    fn containers_with_the_same_title_get_unique_stable_names() {
        let t = |s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let c = |id: &str, title: &str, s| Container {
            id: id.into(),
            title: title.into(),
            created: t(s),
            group: None,
        };
        let mut tree = Tree::new(true);
        let now = Instant::now();
        tree.merge_containers(
            vec![c("11111111-a", "work", 1), c("22222222-b", "a/b", 2)],
            &HashMap::new(),
            now,
        );
        let work = tree.child(ROOT_INO, "work").unwrap();
        tree.merge_containers(
            vec![
                c("11111111-a", "work", 1),
                c("22222222-b", "a/b", 2),
                c("33333333-c", "work", 3),
            ],
            &HashMap::new(),
            now,
        );
        assert_eq!(
            names_under(&tree, ROOT_INO),
            ["a／b", "work", "work~33333333"]
        );
        assert_eq!(tree.child(ROOT_INO, "work"), Some(work));
        let session = tree.child(ROOT_INO, "a／b").unwrap();
        let file = tree.insert(
            session,
            "f",
            new_dir(DirOrigin::Local),
            LocalMeta::default(),
        );
        assert_eq!(
            tree.get(file).unwrap().container.as_deref(),
            Some("22222222-b")
        );
        assert_eq!(tree.scope_of(file), session);
    }

    #[test]
    fn grouped_containers_sit_in_one_directory_per_group() {
        let t = |s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let group = |id: &str, title: &str, s| ContainerGroup {
            id: id.into(),
            title: title.into(),
            created: t(s),
        };
        let c = |id: &str, title: &str, g: &ContainerGroup| Container {
            id: id.into(),
            title: title.into(),
            created: g.created,
            group: Some(g.clone()),
        };
        let (home, twin, me) = (
            group("1001", "home", 1),
            group("2002", "home", 2),
            group("@me", "@me", 0),
        );
        let mut tree = Tree::new(true);
        let now = Instant::now();
        let listing = vec![
            c("11", "general", &home),
            c("12", "files", &home),
            c("21", "general", &twin),
            c("31", "guest", &me),
        ];
        tree.merge_containers(listing.clone(), &HashMap::new(), now);
        assert_eq!(names_under(&tree, ROOT_INO), ["@me", "home", "home~2002"]);
        let home_dir = tree.child(ROOT_INO, "home").unwrap();
        assert_eq!(names_under(&tree, home_dir), ["files", "general"]);
        assert!(tree.is_container_list(home_dir), "a group holds containers");
        let general = tree.child(home_dir, "general").unwrap();
        assert!(!tree.is_container_list(general));
        assert_eq!(
            tree.scope_of(home_dir),
            ROOT_INO,
            "listed with the containers"
        );
        assert_eq!(tree.scope_of(general), general);
        let sub = tree.insert(
            general,
            "sub",
            new_dir(DirOrigin::Local),
            LocalMeta::default(),
        );
        let file = tree.insert(sub, "f", new_dir(DirOrigin::Local), LocalMeta::default());
        assert_eq!(tree.scope_of(file), general);
        assert_eq!(tree.path_in_scope(file), "sub/f");
        assert_eq!(tree.get(file).unwrap().container.as_deref(), Some("11"));

        // A channel goes, a guild goes: the rest keep their inodes.
        tree.merge_containers(
            vec![listing[0].clone(), listing[3].clone()],
            &HashMap::new(),
            now,
        );
        assert_eq!(names_under(&tree, ROOT_INO), ["@me", "home"]);
        assert_eq!(tree.child(ROOT_INO, "home"), Some(home_dir));
        assert_eq!(names_under(&tree, home_dir), ["general"]);
        assert_eq!(tree.child(home_dir, "general"), Some(general));
    }
}
