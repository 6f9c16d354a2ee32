//! Uploads of this process in flight, with bytes sent of the staged size, and the last failed
//! upload of each file with its reason: what `sessionfs status` shows of the write path.
//!
//! The write-back engine opens an [`Upload`] per upload of a staged copy; the request body
//! built from that copy ([`crate::remote::UploadSource::part_body`]) finds its counter by the
//! staged path and adds each chunk as it is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A file being uploaded, as the status report shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Path inside the mount.
    pub path: String,
    /// Bytes handed to the request bodies so far (at most `bytes_total`).
    pub bytes_done: u64,
    /// Size of the staged copy.
    pub bytes_total: u64,
}

/// The last failed upload of a file, until one succeeds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// Path inside the mount.
    pub path: String,
    /// What the server or the network answered (no secrets: the client's messages carry none).
    pub reason: String,
    /// When, in seconds since the Unix epoch.
    pub at_unix: u64,
}

struct Active {
    id: u64,
    path: String,
    staged: PathBuf,
    total: u64,
    done: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    active: Vec<Active>,
    failed: BTreeMap<String, Failure>,
}

/// Longest list of failures kept; the oldest go first.
const MAX_FAILURES: usize = 100;

/// The uploads of one process (see [`uploads`]).
#[derive(Default)]
pub struct Uploads {
    state: Mutex<State>,
}

/// One upload in flight; it leaves the list when dropped.
pub struct Upload<'a> {
    uploads: &'a Uploads,
    id: u64,
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        self.uploads
            .state()
            .active
            .retain(|active| active.id != self.id);
    }
}

impl Uploads {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `path` (inside the mount) starts uploading its staged copy at `staged`, `total` bytes.
    pub fn start(&self, path: &str, staged: &Path, total: u64) -> Upload<'_> {
        let mut state = self.state();
        state.next_id += 1;
        let id = state.next_id;
        state.active.push(Active {
            id,
            path: path.to_string(),
            staged: staged.to_path_buf(),
            total,
            done: Arc::new(AtomicU64::new(0)),
        });
        Upload { uploads: self, id }
    }

    /// The sent-bytes counter of the upload of the staged copy at `staged`, if one is running.
    /// `restart` when the body about to be sent is the whole file again (a retry), so the
    /// count starts over.
    pub fn counter(&self, staged: &Path, restart: bool) -> Option<Arc<AtomicU64>> {
        let state = self.state();
        let active = state.active.iter().find(|active| active.staged == staged)?;
        if restart {
            active.done.store(0, Ordering::Relaxed);
        }
        Some(active.done.clone())
    }

    /// The upload of `path` failed with `reason`.
    pub fn failed(&self, path: &str, reason: &str) {
        let at_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut state = self.state();
        state.failed.insert(
            path.to_string(),
            Failure {
                path: path.to_string(),
                reason: reason.to_string(),
                at_unix,
            },
        );
        while state.failed.len() > MAX_FAILURES {
            let oldest = state
                .failed
                .values()
                .min_by_key(|failure| failure.at_unix)
                .map(|failure| failure.path.clone());
            if let Some(oldest) = oldest {
                state.failed.remove(&oldest);
            }
        }
    }

    /// The upload of `path` succeeded: an earlier failure no longer stands.
    pub fn succeeded(&self, path: &str) {
        self.state().failed.remove(path);
    }

    /// The uploads in flight and the failures that stand.
    pub fn snapshot(&self) -> (Vec<Progress>, Vec<Failure>) {
        let state = self.state();
        let active = state
            .active
            .iter()
            .map(|active| Progress {
                path: active.path.clone(),
                bytes_done: active.done.load(Ordering::Relaxed).min(active.total),
                bytes_total: active.total,
            })
            .collect();
        (active, state.failed.values().cloned().collect())
    }
}

/// This process's uploads.
pub fn uploads() -> &'static Uploads {
    static UPLOADS: std::sync::OnceLock<Uploads> = std::sync::OnceLock::new();
    UPLOADS.get_or_init(Uploads::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_counts_its_bytes_and_leaves_when_done() {
        let uploads = Uploads::default();
        let staged = Path::new("/staging/1");
        {
            let _upload = uploads.start("s/a.bin", staged, 100);
            let counter = uploads.counter(staged, true).unwrap();
            counter.fetch_add(40, Ordering::Relaxed);
            let (active, _) = uploads.snapshot();
            assert_eq!(active[0].bytes_done, 40);
            assert_eq!(active[0].bytes_total, 100);
            // A retry of the whole body starts the count again; more than the total is capped.
            uploads
                .counter(staged, true)
                .unwrap()
                .fetch_add(500, Ordering::Relaxed);
            assert_eq!(uploads.snapshot().0[0].bytes_done, 100);
        }
        assert!(uploads.snapshot().0.is_empty());
        assert!(uploads.counter(staged, false).is_none());
    }

    #[test]
    fn a_failure_stands_until_the_file_uploads() {
        let uploads = Uploads::default();
        uploads.failed("s/big", "too large (413)");
        uploads.failed("s/big", "too large again (413)");
        let (_, failed) = uploads.snapshot();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].reason, "too large again (413)");
        uploads.succeeded("s/big");
        assert!(uploads.snapshot().1.is_empty());
    }
}
