//! The on-disk object store every emulator keeps its state in.
//!
//! It knows nothing about any API. It holds two kinds of things under one root directory:
//! - **records**: small JSON documents in named tables (`records/<table>/<md5(key)>.json`, each
//!   file `{"key": .., "value": ..}`), read and written whole;
//! - **blobs**: byte bodies grouped in namespaces (`blobs/<md5(ns)>/<md5(key)>.blob`), written and
//!   read as streams so multi-GiB bodies never sit in memory. A `<md5(key)>.key` sidecar beside
//!   each blob records its real key for listing.
//!
//! Invariants:
//! - No path on disk is built from user input: keys and namespaces are MD5-hashed, table names are
//!   the caller's constants and are checked to be plain words.
//! - Every write goes to a fresh file in `tmp/` and is renamed into place, so a reader sees the
//!   old or the new content, never a mix; a reader that already opened a blob keeps its bytes
//!   even if the blob is overwritten or deleted meanwhile (Unix unlink semantics).
//! - A blob exists iff its `.blob` file exists; its `.key` sidecar is written before the blob is
//!   renamed into place and may outlive it (it only maps a hash back to its key).
//! - `tmp/` holds only writes in progress; it is emptied when the store is opened.
//!
//! Durability is "survives a restart of the process", not "survives a power cut": files are not
//! fsynced, which keeps multi-GiB uploads at disk speed.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;
use md5::{Digest, Md5};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Bytes per read when streaming a blob out: large reads into recycled buffers
/// (`sessionfs_io::direct`) keep the loopback baseline fast.
const READ_CHUNK_BYTES: usize = sessionfs_io::direct::CHUNK_BYTES;
/// Chunks read ahead of the consumer while streaming a blob out.
const READ_AHEAD_CHUNKS: usize = 2;
/// Write buffer for incoming blob bodies, so small network chunks become large disk writes.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// A handle to one store directory; cheap to clone and safe to share between requests.
#[derive(Clone, Debug)]
pub struct Store {
    root: Arc<PathBuf>,
}

/// What the store knows about one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// The key the blob was written under.
    pub key: String,
    /// Length in bytes.
    pub size: u64,
    /// When its content was last written.
    pub modified: SystemTime,
}

/// One stored record file: the key is kept so a table can be listed.
#[derive(Serialize, Deserialize)]
struct RecordFile<T> {
    key: String,
    value: T,
}

/// The sidecar that maps a blob's hashed file name back to its key.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    key: String,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and discards writes a previous process left
    /// unfinished.
    pub fn open(dir: &Path) -> io::Result<Store> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        for sub in ["tmp", "records", "blobs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Store {
            root: Arc::new(dir.to_path_buf()),
        })
    }

    /// Writes `value` as the record `key` of `table`, replacing any previous one atomically.
    pub async fn put_record<T: Serialize>(
        &self,
        table: &str,
        key: &str,
        value: &T,
    ) -> io::Result<()> {
        let dir = self.table_dir(table)?;
        tokio::fs::create_dir_all(&dir).await?;
        let body = serde_json::to_vec(&RecordFile {
            key: key.to_owned(),
            value,
        })?;
        self.write_atomic(&dir.join(format!("{}.json", hash(key))), &body)
            .await
    }

    /// Reads the record `key` of `table`; `None` when there is none.
    pub async fn get_record<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
    ) -> io::Result<Option<T>> {
        let path = self.table_dir(table)?.join(format!("{}.json", hash(key)));
        match read_json::<RecordFile<T>>(&path).await? {
            Some(file) if file.key == key => Ok(Some(file.value)),
            _ => Ok(None),
        }
    }

    /// The emulator's signing secret kept in `table`, made (random, 256 bits) on first use, so
    /// the URLs and tokens it signs stay valid across restarts.
    pub async fn signing_secret(&self, table: &str) -> io::Result<String> {
        const KEY: &str = "signing";
        if let Some(secret) = self.get_record::<String>(table, KEY).await? {
            return Ok(secret);
        }
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.put_record(table, KEY, &secret).await?;
        Ok(secret)
    }

    /// Every record of `table` with its key, in no particular order.
    pub async fn list_records<T: DeserializeOwned>(
        &self,
        table: &str,
    ) -> io::Result<Vec<(String, T)>> {
        let dir = self.table_dir(table)?;
        let mut out = Vec::new();
        for path in files_with_extension(&dir, "json").await? {
            // A record deleted between the listing and the read simply drops out.
            if let Some(file) = read_json::<RecordFile<T>>(&path).await? {
                out.push((file.key, file.value));
            }
        }
        Ok(out)
    }

    /// Removes the record `key` of `table`; `false` when there was none.
    pub async fn delete_record(&self, table: &str, key: &str) -> io::Result<bool> {
        let path = self.table_dir(table)?.join(format!("{}.json", hash(key)));
        remove_if_present(&path).await
    }

    /// Starts writing the blob `key` in namespace `ns`. Nothing is visible until
    /// [`BlobWriter::commit`]; dropping the writer discards what was written.
    pub async fn create_blob(&self, ns: &str, key: &str) -> io::Result<BlobWriter> {
        let temp = self.temp_path();
        let file = tokio::fs::File::create(&temp).await?;
        Ok(BlobWriter {
            file: tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            temp: Some(temp),
            store: self.clone(),
            ns: ns.to_owned(),
            key: key.to_owned(),
            written: 0,
        })
    }

    /// Opens the blob `key` in `ns` for reading; `None` when it does not exist. The returned
    /// handle keeps reading the content it opened even if the blob is replaced afterwards.
    pub async fn open_blob(&self, ns: &str, key: &str) -> io::Result<Option<Blob>> {
        let (blob_path, key_path) = self.blob_paths(ns, key);
        match read_json::<KeyFile>(&key_path).await? {
            Some(file) if file.key == key => {}
            _ => return Ok(None),
        }
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(&blob_path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err),
            };
            let meta = file.metadata()?;
            let info = BlobInfo {
                key,
                size: meta.len(),
                modified: meta.modified()?,
            };
            Ok(Some(Blob { info, file }))
        })
        .await?
    }

    /// Every blob in `ns`, sorted by key.
    pub async fn list_blobs(&self, ns: &str) -> io::Result<Vec<BlobInfo>> {
        let dir = self.ns_dir(ns);
        // One blocking task for the whole listing: a task per file costs more than the I/O.
        tokio::task::spawn_blocking(move || list_blobs_in(&dir))
            .await
            .map_err(io::Error::other)?
    }

    /// Removes the blob `key` from `ns`; `false` when there was none. Readers that already
    /// opened it finish with the old bytes.
    pub async fn delete_blob(&self, ns: &str, key: &str) -> io::Result<bool> {
        let (blob_path, key_path) = self.blob_paths(ns, key);
        match read_json::<KeyFile>(&key_path).await? {
            Some(file) if file.key == key => remove_if_present(&blob_path).await,
            _ => Ok(false),
        }
    }

    /// Removes every blob of `ns`.
    pub async fn delete_namespace(&self, ns: &str) -> io::Result<()> {
        match tokio::fs::remove_dir_all(self.ns_dir(ns)).await {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    fn table_dir(&self, table: &str) -> io::Result<PathBuf> {
        let plain = !table.is_empty()
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("store table name {table:?} is not a plain word"),
            ));
        }
        Ok(self.root.join("records").join(table))
    }

    fn ns_dir(&self, ns: &str) -> PathBuf {
        self.root.join("blobs").join(hash(ns))
    }

    fn blob_paths(&self, ns: &str, key: &str) -> (PathBuf, PathBuf) {
        let dir = self.ns_dir(ns);
        let name = hash(key);
        (
            dir.join(format!("{name}.blob")),
            dir.join(format!("{name}.key")),
        )
    }

    fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    async fn write_atomic(&self, path: &Path, body: &[u8]) -> io::Result<()> {
        let temp = self.temp_path();
        tokio::fs::write(&temp, body).await?;
        if let Err(err) = tokio::fs::rename(&temp, path).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(err);
        }
        Ok(())
    }
}

/// A blob being written. Bytes go to a temporary file; [`BlobWriter::commit`] renames it into
/// place. Dropping an uncommitted writer deletes the temporary file.
pub struct BlobWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
    /// `None` once committed.
    temp: Option<PathBuf>,
    store: Store,
    ns: String,
    key: String,
    written: u64,
}

impl BlobWriter {
    /// Appends `data` to the blob.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data).await?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far; callers enforce size limits with it while streaming.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the blob visible, replacing any blob with the same key atomically.
    pub async fn commit(mut self) -> io::Result<BlobInfo> {
        self.file.flush().await?;
        let dir = self.store.ns_dir(&self.ns);
        tokio::fs::create_dir_all(&dir).await?;
        let (blob_path, key_path) = self.store.blob_paths(&self.ns, &self.key);
        if read_json::<KeyFile>(&key_path).await?.is_none() {
            let body = serde_json::to_vec(&KeyFile {
                key: self.key.clone(),
            })?;
            self.store.write_atomic(&key_path, &body).await?;
        }
        let temp = self
            .temp
            .as_ref()
            .expect("an uncommitted writer has a temp file");
        tokio::fs::rename(temp, &blob_path).await?;
        self.temp = None;
        let meta = tokio::fs::metadata(&blob_path).await?;
        Ok(BlobInfo {
            key: self.key.clone(),
            size: self.written,
            modified: meta.modified()?,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            // Best effort: a leftover is also removed the next time the store is opened.
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// An opened blob: its metadata and a handle on exactly the content that was current when it
/// was opened.
#[derive(Debug)]
pub struct Blob {
    /// Key, size and mtime of the opened content.
    pub info: BlobInfo,
    file: std::fs::File,
}

impl Blob {
    /// Up to `n` bytes from the start, for content sniffing.
    pub async fn read_prefix(&self, n: usize) -> io::Result<Vec<u8>> {
        let file = self.file.try_clone()?;
        tokio::task::spawn_blocking(move || {
            sessionfs_io::direct::read_chunk(&file, false, 0, n).map(|prefix| prefix.to_vec())
        })
        .await?
    }

    /// Streams the bytes in `range` (clamped to the size). A blocking reader thread reads
    /// ahead a few large chunks, so disk reads overlap with sending; it stops when the stream
    /// is dropped. A blob that shrank under us ends the stream with `UnexpectedEof`.
    pub fn into_stream(
        self,
        range: Range<u64>,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD_CHUNKS);
        let end = range.end.min(self.info.size);
        let file = self.file;
        tokio::task::spawn_blocking(move || {
            let mut pos = range.start;
            while pos < end {
                let want = (end - pos).min(READ_CHUNK_BYTES as u64) as usize;
                let item = match sessionfs_io::direct::read_chunk(&file, false, pos, want) {
                    Ok(chunk) if chunk.is_empty() => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob shrank while read",
                    )),
                    Ok(chunk) => {
                        pos += chunk.len() as u64;
                        Ok(chunk)
                    }
                    Err(err) => Err(err),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}

/// Lower-case hex MD5 of `s`: a fixed-shape file name that no input can turn into a path.
fn hash(s: &str) -> String {
    crate::hex(&Md5::digest(s.as_bytes()))
}

/// Reads and parses a JSON file; `None` when it does not exist.
async fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match tokio::fs::read(path).await {
        Ok(body) => Ok(Some(serde_json::from_slice(&body)?)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

async fn remove_if_present(path: &Path) -> io::Result<bool> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// The blobs of one namespace directory, sorted by key (blocking).
fn list_blobs_in(dir: &Path) -> io::Result<Vec<BlobInfo>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut out = Vec::new();
    for entry in entries {
        let blob_path = entry?.path();
        if blob_path.extension().is_none_or(|e| e != "blob") {
            continue;
        }
        let meta = match std::fs::metadata(&blob_path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let key = match std::fs::read(blob_path.with_extension("key")) {
            Ok(body) => serde_json::from_slice::<KeyFile>(&body)?.key,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        out.push(BlobInfo {
            key,
            size: meta.len(),
            modified: meta.modified()?,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Files directly in `dir` ending in `.ext`; an absent directory has none.
async fn files_with_extension(dir: &Path, ext: &str) -> io::Result<Vec<PathBuf>> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut out = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn read_all(blob: Blob, range: Range<u64>) -> Vec<u8> {
        let chunks: Vec<Bytes> = blob.into_stream(range).try_collect().await.unwrap();
        chunks.concat()
    }

    async fn put(store: &Store, ns: &str, key: &str, body: &[u8]) -> BlobInfo {
        let mut writer = store.create_blob(ns, key).await.unwrap();
        writer.write(body).await.unwrap();
        writer.commit().await.unwrap()
    }

    #[tokio::test]
    async fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_record("things", "a/../b", &42u32).await.unwrap();
        store.put_record("things", "c", &7u32).await.unwrap();
        assert_eq!(
            store.get_record::<u32>("things", "a/../b").await.unwrap(),
            Some(42)
        );

        let store = Store::open(dir.path()).unwrap();
        let mut all = store.list_records::<u32>("things").await.unwrap();
        all.sort();
        assert_eq!(all, vec![("a/../b".to_owned(), 42), ("c".to_owned(), 7)]);
        assert!(store.delete_record("things", "c").await.unwrap());
        assert!(!store.delete_record("things", "c").await.unwrap());
        assert_eq!(store.get_record::<u32>("things", "c").await.unwrap(), None);
        assert!(store.put_record("../x", "k", &1u8).await.is_err());
    }

    #[tokio::test]
    async fn blobs_are_invisible_until_committed_and_overwrite_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        put(&store, "ns", "../../etc/passwd", b"old").await;
        let old = store
            .open_blob("ns", "../../etc/passwd")
            .await
            .unwrap()
            .unwrap();

        let mut writer = store.create_blob("ns", "../../etc/passwd").await.unwrap();
        writer.write(b"new bytes").await.unwrap();
        assert_eq!(writer.written(), 9);
        let still_old = store
            .open_blob("ns", "../../etc/passwd")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_all(still_old, 0..u64::MAX).await, b"old");
        writer.commit().await.unwrap();

        assert_eq!(
            read_all(old, 0..u64::MAX).await,
            b"old",
            "an open reader keeps its bytes"
        );
        let new = store
            .open_blob("ns", "../../etc/passwd")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(new.info.size, 9);
        assert_eq!(new.read_prefix(3).await.unwrap(), b"new");
        assert_eq!(read_all(new, 4..100).await, b"bytes");
    }

    #[tokio::test]
    async fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut writer = store.create_blob("ns", "k").await.unwrap();
        writer.write(b"partial").await.unwrap();
        drop(writer);
        assert!(store.open_blob("ns", "k").await.unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn list_delete_and_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        put(&store, "one", "b", b"22").await;
        put(&store, "one", "a", b"1").await;
        put(&store, "two", "a", b"333").await;
        let keys: Vec<(String, u64)> = store
            .list_blobs("one")
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.key, b.size))
            .collect();
        assert_eq!(keys, vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);

        assert!(store.delete_blob("one", "a").await.unwrap());
        assert!(!store.delete_blob("one", "a").await.unwrap());
        assert_eq!(store.list_blobs("one").await.unwrap().len(), 1);

        store.delete_namespace("one").await.unwrap();
        store.delete_namespace("one").await.unwrap();
        assert!(store.list_blobs("one").await.unwrap().is_empty());
        assert_eq!(store.list_blobs("two").await.unwrap()[0].size, 3);
    }

    #[tokio::test]
    async fn streams_more_than_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let body: Vec<u8> = (0..READ_CHUNK_BYTES * 2 + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        put(&store, "ns", "big", &body).await;
        let blob = store.open_blob("ns", "big").await.unwrap().unwrap();
        assert_eq!(read_all(blob, 0..u64::MAX).await, body);
        let blob = store.open_blob("ns", "big").await.unwrap().unwrap();
        let from = READ_CHUNK_BYTES as u64 - 5;
        assert_eq!(
            read_all(blob, from..from + 10).await,
            &body[from as usize..from as usize + 10]
        );
    }
}
