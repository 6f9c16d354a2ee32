//! Open file and directory handles.
//!
//! A file handle remembers whether it may write (so `flush` knows whether to upload) and keeps
//! a small sequential read-ahead buffer for files read straight from the remote. A directory
//! handle holds the snapshot of entries taken at `opendir`, so paging through a large directory
//! with `readdir` offsets is consistent even while the listing is refreshed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::Attr;
use super::tree::Ino;

/// Smallest read-ahead request, and the one used after a seek.
pub const MIN_READAHEAD_BYTES: u64 = 1 << 20;
/// Largest read-ahead request on a sequential stream.
pub const MAX_READAHEAD_BYTES: u64 = 16 << 20;

/// Bytes fetched ahead for a sequential reader.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Offset of `data` in the file.
    pub start: u64,
    /// The bytes fetched last.
    pub data: Bytes,
    /// Size of the next fetch; doubles while reads stay sequential.
    pub window: u64,
    /// Where the next sequential read would start.
    pub next_offset: u64,
    /// The object version the buffer belongs to.
    pub version: String,
}

impl ReadAhead {
    /// The buffered bytes for `offset..offset+size`, if all of them are buffered (or the buffer
    /// reaches the end of the file at `file_size`).
    pub fn get(&self, version: &str, offset: u64, size: u64, file_size: u64) -> Option<Bytes> {
        let end = (offset + size).min(file_size);
        let buffered_end = self.start + self.data.len() as u64;
        if self.version != version || offset < self.start || end > buffered_end {
            return None;
        }
        let from = (offset - self.start) as usize;
        let to = (end.max(offset) - self.start) as usize;
        Some(self.data.slice(from..to))
    }

    /// How much to fetch for a read at `offset`: more while the reader is sequential.
    pub fn next_window(&mut self, offset: u64) -> u64 {
        self.window = if offset == self.next_offset && self.window > 0 {
            (self.window * 2).min(MAX_READAHEAD_BYTES)
        } else {
            MIN_READAHEAD_BYTES
        };
        self.window
    }
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
        /// Read-ahead for remote reads.
        readahead: tokio::sync::Mutex<ReadAhead>,
    },
    /// An open directory with its entries as listed at `opendir`.
    Dir {
        /// `(name, attributes)`, including `.` and `..`.
        entries: Vec<(String, Attr)>,
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
        self.open
            .lock()
            .unwrap()
            .insert(fh, std::sync::Arc::new(handle));
        fh
    }

    /// The handle `fh`, if open.
    pub fn get(&self, fh: u64) -> Option<std::sync::Arc<Handle>> {
        self.open.lock().unwrap().get(&fh).cloned()
    }

    /// Closes `fh`.
    pub fn remove(&self, fh: u64) -> Option<std::sync::Arc<Handle>> {
        self.open.lock().unwrap().remove(&fh)
    }

    /// Whether any file handle refers to `ino`.
    pub fn is_open(&self, ino: Ino) -> bool {
        self.open
            .lock()
            .unwrap()
            .values()
            .any(|h| matches!(**h, Handle::File { ino: open, .. } if open == ino))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_doubles_on_sequential_reads_and_resets_on_seek() {
        let mut ra = ReadAhead::default();
        assert_eq!(ra.next_window(0), MIN_READAHEAD_BYTES);
        ra.next_offset = MIN_READAHEAD_BYTES;
        assert_eq!(ra.next_window(MIN_READAHEAD_BYTES), 2 * MIN_READAHEAD_BYTES);
        ra.next_offset = 99;
        assert_eq!(ra.next_window(5), MIN_READAHEAD_BYTES);
    }

    #[test]
    fn buffered_bytes_are_served_only_for_the_same_version() {
        let ra = ReadAhead {
            start: 10,
            data: Bytes::from_static(b"abcdef"),
            version: "v1".into(),
            ..Default::default()
        };
        assert_eq!(ra.get("v1", 11, 2, 100).unwrap(), "bc");
        assert_eq!(
            ra.get("v1", 14, 10, 16).unwrap(),
            "ef",
            "short at end of file"
        );
        assert!(ra.get("v2", 11, 2, 100).is_none());
        assert!(ra.get("v1", 14, 10, 100).is_none());
    }
}
