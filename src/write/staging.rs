//! Staging files: the local copy of a file while it is written.
//!
//! Every write goes to a staging file first (random writes, appends, truncation and re-opens
//! all work on it like on a local file); the whole file is uploaded from it on flush, fsync or
//! close. A staging file is deleted when it is dropped, so a file that reached the remote leaves
//! nothing behind.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tempfile::TempPath;

/// The directory that holds staging files.
#[derive(Clone, Debug)]
pub struct StagingArea {
    dir: PathBuf,
}

impl StagingArea {
    /// Uses (and creates) `dir` for staging files.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// A new, empty staging file.
    pub fn create(&self) -> io::Result<StagingFile> {
        let (file, path) = tempfile::Builder::new()
            .prefix("staged-")
            .tempfile_in(&self.dir)?
            .into_parts();
        Ok(StagingFile { file, path, len: 0 })
    }

    /// Where staging files live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// One staged file. Its length is tracked here so attributes never need a `stat`.
#[derive(Debug)]
pub struct StagingFile {
    file: File,
    path: TempPath,
    len: u64,
}

impl StagingFile {
    /// Reads up to `size` bytes at `offset`; shorter only at the end of the file.
    pub fn read_at(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; (end - offset) as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Writes `data` at `offset`, growing the file (with a hole) as needed.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        self.len = self.len.max(offset + data.len() as u64);
        Ok(())
    }

    /// Truncates or extends the file to `len` bytes.
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    /// Current length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Path of the staged bytes, for streaming an upload.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_writes_holes_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::new(dir.path()).unwrap();
        let mut file = area.create().unwrap();
        file.write_at(4, b"tail").unwrap();
        assert_eq!(file.read_at(0, 100).unwrap(), b"\0\0\0\0tail");
        file.write_at(0, b"he").unwrap();
        file.set_len(6).unwrap();
        assert_eq!(file.read_at(0, 100).unwrap(), b"he\0\0ta");
        assert_eq!(file.read_at(6, 10).unwrap(), b"");
        let path = file.path().to_path_buf();
        drop(file);
        assert!(!path.exists(), "a dropped staging file is deleted");
    }
}
