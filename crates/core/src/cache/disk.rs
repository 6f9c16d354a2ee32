//! The optional disk tier of the block cache (`--cache-dir` with `--cache-size`).
//!
//! Blocks fetched from the remote are also written here, one file per block, named by the md5
//! of the block key (object, version, index), so a changed object never reuses old files. An LRU
//! index in memory bounds the total size; the oldest files are deleted to make room. The
//! directory belongs to one mount: it is emptied when the tier opens and removed when it is
//! dropped, so nothing stale survives a restart.
//!
//! Writes run on the blocking pool, at most [`MAX_WRITES_IN_FLIGHT`] at a time; a block that
//! finds no free writer is simply not written (the tier is a cache, and an unbounded queue of
//! pending writes would defeat the memory budget). A block whose file vanished or cannot be
//! read is a miss, never an error.

use sessionfs_io::lock::Locked;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use md5::{Digest, Md5};
use tokio::sync::Semaphore;

use super::BlockKey;

/// Disk writes that may run at once; further blocks are skipped rather than queued.
pub const MAX_WRITES_IN_FLIGHT: usize = 4;

/// Blocks on local disk under a size cap.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    capacity_bytes: u64,
    writers: Arc<Semaphore>,
    /// Which blocks are on disk, least recently used first, and their total size.
    index: Mutex<Index>,
}

#[derive(Debug)]
struct Index {
    files: LruCache<BlockKey, u64>,
    bytes: u64,
}

impl DiskCache {
    /// Opens an empty tier in `dir` (created, or emptied if it exists) holding at most
    /// `capacity_bytes`.
    pub fn open(dir: &Path, capacity_bytes: u64) -> std::io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            capacity_bytes,
            writers: Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT)),
            index: Mutex::new(Index {
                files: LruCache::unbounded(),
                bytes: 0,
            }),
        })
    }

    fn path_of(&self, key: &BlockKey) -> PathBuf {
        let mut hasher = Md5::new();
        for part in [
            key.object.container.as_deref().unwrap_or(""),
            &key.object.id,
            &key.object.version,
        ] {
            hasher.update(part.len().to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.update(key.index.to_le_bytes());
        hasher.update(key.unit.to_le_bytes());
        let digest = hasher.finalize();
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// Whether `key` is on disk (and marks it recently used).
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.index.locked().files.get(key).is_some()
    }

    /// Reads `key` back, or `None` if it is not (or no longer) on disk.
    pub async fn load(&self, key: &BlockKey) -> Option<Bytes> {
        let expected = *self.index.locked().files.get(key)?;
        let path = self.path_of(key);
        let data = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .ok()?
            .ok()?;
        (data.len() as u64 == expected).then(|| Bytes::from(data))
    }

    /// Writes `data` as `key` in the background if a writer is free; evicts old blocks to stay
    /// under the cap.
    pub fn store(self: &Arc<Self>, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity_bytes || self.index.locked().files.contains(&key) {
            return;
        }
        let Ok(permit) = self.writers.clone().try_acquire_owned() else {
            return;
        };
        let tier = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let path = tier.path_of(&key);
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(err) = written {
                log::debug!("disk cache: cannot write {}: {err}", path.display());
                let _ = std::fs::remove_file(&tmp);
                return;
            }
            let victims = {
                let mut index = tier.index.locked();
                index.bytes += len;
                if let Some(old) = index.files.put(key, len) {
                    index.bytes -= old;
                }
                let mut victims = Vec::new();
                while index.bytes > tier.capacity_bytes {
                    let Some((victim, size)) = index.files.pop_lru() else {
                        break;
                    };
                    index.bytes -= size;
                    victims.push(victim);
                }
                victims
            };
            for victim in victims {
                let _ = std::fs::remove_file(tier.path_of(&victim));
            }
        });
    }

    /// Removes every block `matches` selects.
    pub fn forget(&self, matches: impl Fn(&BlockKey) -> bool) {
        let victims: Vec<(BlockKey, u64)> = {
            let mut index = self.index.locked();
            let keys: Vec<(BlockKey, u64)> = index
                .files
                .iter()
                .filter(|(key, _)| matches(key))
                .map(|(key, size)| (key.clone(), *size))
                .collect();
            for (key, size) in &keys {
                index.files.pop(key);
                index.bytes -= size;
            }
            keys
        };
        for (key, _) in victims {
            let _ = std::fs::remove_file(self.path_of(&key));
        }
    }

    /// Bytes on disk right now.
    pub fn bytes(&self) -> u64 {
        self.index.locked().bytes
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ObjectKey;
    use super::*;

    fn key(version: &str, index: u64) -> BlockKey {
        BlockKey {
            object: Arc::new(ObjectKey {
                container: Some("c".into()),
                id: "a.bin".into(),
                version: version.into(),
            }),
            index,
            unit: 6,
        }
    }

    async fn stored(tier: &Arc<DiskCache>, key: &BlockKey) {
        // Writes run in the background: wait for this one by polling the index.
        for _ in 0..1000 {
            if tier.contains(key) {
                return;
            }
            tokio::task::yield_now().await;
            tokio::task::spawn_blocking(|| ()).await.unwrap();
        }
        panic!("block never reached the disk tier");
    }

    #[tokio::test]
    async fn blocks_round_trip_by_version_and_stay_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let tier = Arc::new(DiskCache::open(&dir.path().join("blocks"), 10).unwrap());
        tier.store(key("v1", 0), Bytes::from_static(b"abcdef"));
        stored(&tier, &key("v1", 0)).await;
        assert_eq!(tier.load(&key("v1", 0)).await.unwrap(), "abcdef");
        assert!(tier.load(&key("v2", 0)).await.is_none(), "other version");
        tier.store(key("v1", 1), Bytes::from_static(b"ghijkl"));
        stored(&tier, &key("v1", 1)).await;
        assert!(!tier.contains(&key("v1", 0)), "oldest evicted");
        assert_eq!(tier.bytes(), 6);
        // The evicted block's file goes right after the index shows the new one: wait for it.
        let files = || {
            std::fs::read_dir(dir.path().join("blocks"))
                .unwrap()
                .count()
        };
        for _ in 0..1000 {
            if files() == 1 {
                break;
            }
            tokio::task::spawn_blocking(|| ()).await.unwrap();
        }
        assert_eq!(files(), 1);
    }
}
