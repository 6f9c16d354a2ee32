//! Staging files: the local copy of a file while it is written.
//!
//! Every write goes to a staging file first (random writes, appends, truncation and re-opens
//! all work on it like on a local file); the whole file is uploaded from it on flush, fsync or
//! close. A staging file is deleted when it is dropped, so a file that reached the remote leaves
//! nothing behind. Large aligned writes (a `cp`, any big sequential write) bypass the page cache
//! (see `sessionfs_io::direct`); the kernel keeps them coherent with the buffered reads and writes of
//! everything else.
//!
//! Descriptors stay bounded however many files are open or waiting for their upload: the
//! area keeps at most [`MAX_OPEN_STAGING_FILES`] staging files open (two descriptors each at
//! most, buffered and `O_DIRECT`), least recently used first out; a staging file closed that
//! way is opened again by its path the next time it is read or written. Each staging file
//! owns its path for its whole life, so reopening always finds the same bytes.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use md5::{Digest, Md5};
use tempfile::TempPath;

use super::budget::{Charge, StagedBytes};
use super::sparse;
use sessionfs_io::direct;

/// Staging files an area keeps open at once (each holds one or two descriptors); past it the
/// least recently used is closed and reopened when next touched.
pub const MAX_OPEN_STAGING_FILES: usize = 256;

/// The directory that holds staging files.
#[derive(Clone, Debug)]
pub struct StagingArea {
    dir: PathBuf,
    /// What its live staging files hold, for `--max-staged`.
    bytes: StagedBytes,
    /// The staging files open now, shared by all of the area's files.
    open: Arc<OpenFiles>,
}

/// The descriptors of one open staging file.
#[derive(Debug)]
struct Descriptors {
    file: File,
    /// The same file opened with `O_DIRECT`, where the file system supports it.
    direct: Option<File>,
}

impl Descriptors {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: OpenOptions::new().read(true).write(true).open(path)?,
            direct: direct::open_direct(path, true),
        })
    }
}

/// The open staging files of an area, by staging file number, at most `capacity` of them.
#[derive(Debug)]
struct OpenFiles {
    /// Held only to look up, insert or remove one entry (never across I/O).
    lru: Mutex<LruCache<u64, Arc<Descriptors>>>,
    next_number: AtomicU64,
}

impl OpenFiles {
    fn new(capacity: usize) -> Self {
        Self {
            lru: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("non-zero"),
            )),
            next_number: AtomicU64::new(0),
        }
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Arc<Descriptors>>> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A staging file's place in [`OpenFiles`]; closes its descriptors when dropped.
#[derive(Debug)]
struct OpenSlot {
    number: u64,
    open: Arc<OpenFiles>,
}

impl OpenSlot {
    /// The file's descriptors: the open ones, else `path` opened again (closing the least
    /// recently used file's if the area is at its cap).
    fn get(&self, path: &Path) -> io::Result<Arc<Descriptors>> {
        if let Some(open) = self.open.lru().get(&self.number) {
            return Ok(open.clone());
        }
        let opened = Arc::new(Descriptors::open(path)?);
        self.open.lru().put(self.number, opened.clone());
        Ok(opened)
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.lru().pop(&self.number);
    }
}

impl StagingArea {
    /// Uses (and creates) `dir` for staging files.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self::with_open_cap(dir, MAX_OPEN_STAGING_FILES))
    }

    fn with_open_cap(dir: PathBuf, cap: usize) -> Self {
        Self {
            dir,
            bytes: StagedBytes::default(),
            open: Arc::new(OpenFiles::new(cap)),
        }
    }

    /// A new, empty staging file; with `hash_md5` its md5 is computed as bytes arrive in order.
    pub fn create(&self, hash_md5: bool) -> io::Result<StagingFile> {
        let (file, path) = tempfile::Builder::new()
            .prefix("staged-")
            .tempfile_in(&self.dir)?
            .into_parts();
        let slot = OpenSlot {
            number: self.open.next_number.fetch_add(1, Ordering::Relaxed),
            open: self.open.clone(),
        };
        let descriptors = Descriptors {
            direct: direct::open_direct(&path, true),
            file,
        };
        slot.open.lru().put(slot.number, Arc::new(descriptors));
        Ok(StagingFile {
            slot,
            path,
            len: 0,
            hasher: hash_md5.then(Md5::new),
            hash_md5,
            charge: self.bytes.charge(),
            refused: None,
        })
    }

    /// A new staging file holding what `from` holds, its holes kept (see `super::sparse`), and
    /// its md5 state, so a snapshot costs the data written, not the file's length.
    pub fn copy_of(&self, from: &StagingFile) -> io::Result<StagingFile> {
        let mut copy = self.create(from.hash_md5)?;
        sparse::copy_sparse(
            &from.descriptors()?.file,
            &copy.descriptors()?.file,
            from.len,
        )?;
        copy.len = from.len;
        copy.hasher = from.hasher.clone();
        copy.charge.set(copy.len);
        Ok(copy)
    }

    /// The bytes its live staging files hold.
    pub fn bytes(&self) -> &StagedBytes {
        &self.bytes
    }

    /// Where staging files live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the staging file named `name` (as [`StagingFile::name`] gave it).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Deletes staging files left by an earlier process that `keep` does not name (copies of
    /// files that had reached the remote when that process died).
    pub fn remove_strays(&self, keep: &[String]) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("staged-") && !keep.contains(&name) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// One staged file. Its length is tracked here so attributes never need a `stat`, and its md5
/// is computed as the bytes arrive, as long as they arrive in order (a `cp`, a download).
#[derive(Debug)]
pub struct StagingFile {
    /// Its descriptors, open or to be opened again from `path`.
    slot: OpenSlot,
    path: TempPath,
    len: u64,
    /// md5 of bytes `0..len`, while every write so far has been an append.
    hasher: Option<Md5>,
    /// Whether to keep `hasher` going (a truncate to zero restarts it).
    hash_md5: bool,
    /// Its length, counted in the area's [`StagedBytes`] until it is dropped or kept.
    charge: Charge,
    /// Why the remote refused these bytes for good (too large), until they change: no upload
    /// of the same bytes is tried again.
    refused: Option<String>,
}

impl StagingFile {
    /// Reads up to `size` bytes at `offset`; shorter only at the end of the file.
    pub fn read_at(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; (end - offset) as usize];
        self.descriptors()?.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Writes `data` at `offset`, growing the file (with a hole) as needed.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let open = self.descriptors()?;
        match &open.direct {
            Some(direct) if direct::is_direct_write(offset, data) => {
                direct.write_all_at(data, offset)?
            }
            _ => open.file.write_all_at(data, offset)?,
        }
        match &mut self.hasher {
            Some(hasher) if offset == self.len => hasher.update(data),
            _ => self.hasher = None,
        }
        self.len = self.len.max(offset + data.len() as u64);
        self.charge.set(self.len);
        self.refused = None;
        Ok(())
    }

    /// Writes `data` at `offset` like [`StagingFile::write_at`], except that past the end of
    /// the file whole blocks of zeros are not written but left as holes (a downloaded copy of
    /// a file that was sparse where it was written).
    pub fn write_keeping_holes(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset < self.len {
            return self.write_at(offset, data);
        }
        let open = self.descriptors()?;
        for run in sparse::runs_to_write(offset, data) {
            open.file
                .write_all_at(&data[run.clone()], offset + run.start as u64)?;
        }
        let end = offset + data.len() as u64;
        // The file reaches `end` even where its last blocks were left out.
        if end > self.len {
            open.file.set_len(end)?;
        }
        match &mut self.hasher {
            Some(hasher) if offset == self.len => hasher.update(data),
            _ => self.hasher = None,
        }
        self.len = self.len.max(end);
        self.charge.set(self.len);
        self.refused = None;
        Ok(())
    }

    /// Truncates or extends the file to `len` bytes (extended sparsely: `ftruncate` allocates
    /// nothing).
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.descriptors()?.file.set_len(len)?;
        if len == 0 {
            self.hasher = self.hash_md5.then(Md5::new);
        } else if len != self.len {
            self.hasher = None;
        }
        self.len = len;
        self.charge.set(len);
        self.refused = None;
        Ok(())
    }

    /// Lower-case hex md5 of the content: free when it was written in order, else one pass
    /// over the file.
    pub fn md5(&self) -> io::Result<String> {
        if let Some(hasher) = &self.hasher {
            return Ok(format!("{:x}", hasher.clone().finalize()));
        }
        sessionfs_io::checksum::md5_of_file(&self.descriptors()?.file, self.len)
    }

    fn descriptors(&self) -> io::Result<Arc<Descriptors>> {
        self.slot.get(&self.path)
    }

    /// Records that the remote refused these bytes for good (`why`); cleared by the next
    /// write or truncate.
    pub fn refuse(&mut self, why: String) {
        self.refused = Some(why);
    }

    /// Why the remote refused these bytes for good, if it did and they have not changed since.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
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

    /// The file's name inside the staging directory, for the journal.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Keeps the file on disk after it is dropped, so the next mount can upload it.
    pub fn keep(self) {
        if let Err(err) = self.path.keep() {
            log::error!("cannot keep staged copy {}: {err}", err.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_follows_appends_without_a_second_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StagingArea::new(dir.path()).unwrap().create(true).unwrap();
        file.write_at(0, b"hello ").unwrap();
        file.write_at(6, b"world").unwrap();
        assert!(file.hasher.is_some());
        assert_eq!(
            file.md5().unwrap(),
            format!("{:x}", Md5::digest(b"hello world"))
        );
        file.set_len(0).unwrap();
        file.write_at(0, b"again").unwrap();
        assert_eq!(file.md5().unwrap(), format!("{:x}", Md5::digest(b"again")));
    }

    #[test]
    fn random_writes_holes_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::new(dir.path()).unwrap();
        let mut file = area.create(true).unwrap();
        file.write_at(4, b"tail").unwrap();
        assert_eq!(file.read_at(0, 100).unwrap(), b"\0\0\0\0tail");
        file.write_at(0, b"he").unwrap();
        file.set_len(6).unwrap();
        assert_eq!(file.read_at(0, 100).unwrap(), b"he\0\0ta");
        assert_eq!(file.read_at(6, 10).unwrap(), b"");
        assert_eq!(
            file.md5().unwrap(),
            format!("{:x}", Md5::digest(b"he\0\0ta"))
        );
        let path = file.path().to_path_buf();
        drop(file);
        assert!(!path.exists(), "a dropped staging file is deleted");
    }

    #[test]
    fn a_copy_of_a_sparse_file_keeps_its_holes_bytes_and_md5() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::new(dir.path()).unwrap();
        let mut file = area.create(true).unwrap();
        const LEN: u64 = 1 << 30;
        file.write_at(0, b"head").unwrap();
        file.set_len(LEN - 8192).unwrap();
        file.write_at(LEN - 8192, &[b'x'; 4096]).unwrap();
        file.set_len(LEN).unwrap();
        let copy = area.copy_of(&file).unwrap();
        assert_eq!(copy.len(), LEN);
        assert_eq!(area.bytes().used(), 2 * LEN, "each copy charges its length");
        let on_disk = sparse::allocated_bytes(&File::open(copy.path()).unwrap()).unwrap();
        assert!(
            on_disk <= 64 << 10,
            "1 GiB with 4 KiB of data takes {on_disk} bytes"
        );
        assert_eq!(copy.read_at(0, 8).unwrap(), b"head\0\0\0\0");
        assert_eq!(copy.read_at(LEN - 8192, 4096).unwrap(), vec![b'x'; 4096]);
        assert_eq!(copy.read_at(LEN - 4096, 8192).unwrap(), vec![0; 4096]);
        // An md5 state is copied only when the original had one (written in order).
        let mut ordered = area.create(true).unwrap();
        ordered.write_at(0, b"in order").unwrap();
        let copy = area.copy_of(&ordered).unwrap();
        assert!(copy.hasher.is_some());
        assert_eq!(
            copy.md5().unwrap(),
            format!("{:x}", Md5::digest(b"in order"))
        );
        ordered.write_at(2, b"!").unwrap();
        assert_eq!(
            copy.read_at(0, 100).unwrap(),
            b"in order",
            "copies are apart"
        );
    }

    #[test]
    fn a_download_written_keeping_holes_leaves_its_zero_blocks_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::new(dir.path()).unwrap();
        let mut file = area.create(true).unwrap();
        let mut expected = Vec::new();
        // Chunks as a download brings them: zeros, then data, then zeros to the end.
        for chunk in [vec![0u8; 8 << 20], vec![0u8; 8 << 20]] {
            file.write_keeping_holes(file.len(), &chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        let mut data = vec![0u8; 1 << 20];
        data[12345] = 9;
        file.write_keeping_holes(file.len(), &data).unwrap();
        expected.extend_from_slice(&data);
        file.write_keeping_holes(file.len(), &[0u8; 8 << 20])
            .unwrap();
        expected.extend_from_slice(&[0u8; 8 << 20]);
        assert_eq!(file.len(), expected.len() as u64);
        assert_eq!(std::fs::metadata(file.path()).unwrap().len(), file.len());
        let on_disk = sparse::allocated_bytes(&File::open(file.path()).unwrap()).unwrap();
        assert!(
            on_disk <= 64 << 10,
            "25 MiB of mostly zeros take {on_disk} bytes"
        );
        assert!(std::fs::read(file.path()).unwrap() == expected);
        assert_eq!(file.md5().unwrap(), format!("{:x}", Md5::digest(&expected)));
        assert!(file.hasher.is_some(), "md5 kept while written in order");
        // A write over existing bytes writes its zeros.
        file.write_keeping_holes((16 << 20) + 12288, &[0u8; 4096])
            .unwrap();
        assert_eq!(file.read_at((16 << 20) + 12345, 1).unwrap(), vec![0]);
    }

    #[test]
    fn a_refusal_lasts_until_the_bytes_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StagingArea::new(dir.path()).unwrap().create(false).unwrap();
        file.write_at(0, b"too large").unwrap();
        file.refuse("413".to_string());
        assert_eq!(file.refused(), Some("413"));
        file.write_at(0, b"smaller").unwrap();
        assert_eq!(file.refused(), None, "a write clears it");
        file.refuse("413".to_string());
        file.set_len(3).unwrap();
        assert_eq!(file.refused(), None, "a truncate clears it");
    }

    #[test]
    fn direct_and_buffered_writes_read_back_as_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StagingArea::new(dir.path()).unwrap().create(true).unwrap();
        const N: usize = direct::MIN_DIRECT_BYTES;
        let block = |byte: u8| direct::AlignedBuf::copy_of(&[byte; N]);
        file.write_at(0, &block(1)).unwrap();
        file.write_at(10, b"buffered").unwrap();
        file.write_at(N as u64, &block(2)).unwrap();
        file.write_at(0, &block(3)).unwrap();
        file.write_at(2 * N as u64, b"tail").unwrap();
        let mut expected = vec![3; N];
        expected.extend_from_slice(&[2; N]);
        expected.extend_from_slice(b"tail");
        assert_eq!(file.read_at(0, 1 << 20).unwrap(), expected);
        assert_eq!(std::fs::read(file.path()).unwrap(), expected);
        assert_eq!(file.md5().unwrap(), format!("{:x}", Md5::digest(&expected)));
    }

    #[test]
    fn past_the_cap_staging_files_are_closed_and_reopened_with_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::with_open_cap(dir.path().to_path_buf(), 2);
        let mut files: Vec<StagingFile> = (0..5).map(|_| area.create(true).unwrap()).collect();
        assert_eq!(area.open.lru().len(), 2, "only the last two stay open");
        for (i, file) in files.iter_mut().enumerate() {
            file.write_at(0, format!("file {i}").as_bytes()).unwrap();
            assert!(area.open.lru().len() <= 2);
        }
        for (i, file) in files.iter_mut().enumerate().rev() {
            file.write_at(6, b"!").unwrap();
            assert_eq!(
                file.read_at(0, 100).unwrap(),
                format!("file {i}!").as_bytes()
            );
            assert_eq!(
                file.md5().unwrap(),
                format!("{:x}", Md5::digest(file.read_at(0, 100).unwrap()))
            );
        }
        files.truncate(1);
        assert_eq!(
            area.open.lru().len(),
            1,
            "a dropped file's descriptors are closed"
        );
        let kept = files.pop().unwrap();
        let path = kept.path().to_path_buf();
        kept.keep();
        assert_eq!(std::fs::read(&path).unwrap(), b"file 0!");
        assert_eq!(area.open.lru().len(), 0);
    }
}
