//! Open file and directory handles.
//!
//! A file handle remembers whether it may write (so `flush` knows whether to upload) and keeps
//! its [`ReadState`]: the sequential-access detector of its reader and the object version it
//! reads; the fetched bytes themselves live in the mount's one block cache. A directory handle
//! holds the snapshot of entries taken at `opendir`, so paging through a large directory with
//! `readdir` offsets is consistent even while the listing is refreshed.

use sessionfs_io::lock::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Attr;
use super::tree::Ino;
use crate::cache::Prefetcher;
use sessionfs_remote::ObjectMeta;

/// What a file handle remembers about its reads of the remote object.
#[derive(Debug, Default)]
pub struct ReadState {
    /// Decides how far ahead to fetch.
    pub prefetcher: Prefetcher,
    /// The object version this handle reads, pinned at its first remote read so that one
    /// handle never returns bytes of two versions.
    pub pinned: Option<ObjectMeta>,
    /// Opened with `O_DIRECT`: its reads skip the kernel's page cache, so the blocks it has
    /// read stay in ours.
    pub bypasses_page_cache: bool,
}

/// What an open handle refers to.
#[derive(Debug)]
pub enum Handle {
    /// An open file.
    File {
        /// Its inode.
        ino: Ino,
        /// Opened with write access.
        writable: bool,
        /// Prefetch window and pinned version of this handle's reads. Never held across an
        /// await.
        readahead: Mutex<ReadState>,
    },
    /// An open directory with its entries as listed at `opendir`, or at its last rewind.
    Dir {
        /// The directory.
        ino: Ino,
        /// `(name, attributes)`, including `.` and `..`; read again from the inode table when
        /// a read starts over from offset 0 (`rewinddir`), so names made since show.
        entries: Mutex<Vec<(String, Attr)>>,
        /// Whether a read has used `entries` yet: a read from offset 0 after one is a rewind.
        started: AtomicBool,
    },
}

/// The table of open handles.
#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, std::sync::Arc<Handle>>>,
}

impl Handles {
    /// Registers `handle` and returns its number.
    pub fn insert(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.locked().insert(fh, std::sync::Arc::new(handle));
        fh
    }

    /// The handle `fh`, if open.
    pub fn get(&self, fh: u64) -> Option<std::sync::Arc<Handle>> {
        self.open.locked().get(&fh).cloned()
    }

    /// Closes `fh`.
    pub fn remove(&self, fh: u64) -> Option<std::sync::Arc<Handle>> {
        self.open.locked().remove(&fh)
    }

    /// Whether any file handle refers to `ino`.
    pub fn is_open(&self, ino: Ino) -> bool {
        self.open
            .locked()
            .values()
            .any(|h| matches!(**h, Handle::File { ino: open, .. } if open == ino))
    }

    /// Every inode with an open file handle, for checks over many files at once.
    pub fn open_files(&self) -> HashSet<Ino> {
        self.open
            .locked()
            .values()
            .filter_map(|h| match **h {
                Handle::File { ino, .. } => Some(ino),
                Handle::Dir { .. } => None,
            })
            .collect()
    }
}
