//! What the client layer counts for `sessionfs status`: requests, retries and errors by kind
//! ([`RequestStats`]), and uploads in flight with bytes sent and the last failure of each file
//! ([`UploadProgress`]).
//!
//! Both are handles, one of each per mount: `run::mount` makes them and hands the same ones to
//! the client ([`crate::http::RetryConfig::requests`]), the upload bodies
//! ([`crate::UploadSource::progress`]), the core (`FsConfig::uploads`) and the status
//! report. They live here, below `status`, because the layer that produces the numbers should
//! not depend on the one that shows them, and they are injected rather than process-wide so two
//! mounts (or two clients in one test process) never count into each other's report.
//!
//! Invariants: a clone shares its original's counts (an `Arc` inside), while `Default` makes a
//! fresh, unshared instance, so a client or a source built without one counts only for itself.

use sessionfs_io::lock::Locked;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::ErrorKind;

/// Requests, errors and retries of one client (one mount), by kind; cheap to clone, and a
/// clone counts into the same numbers. [`crate::http::RetryConfig::run`] counts every
/// attempt through it.
#[derive(Clone, Debug, Default)]
pub struct RequestStats(Arc<RequestCounters>);

#[derive(Debug, Default)]
struct RequestCounters {
    attempts: AtomicU64,
    retries: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// What [`RequestStats`] counted so far, as the status report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    /// Attempts sent (a retry is one more).
    pub requests: u64,
    /// Attempts that failed, by kind of failure (`Unavailable`, `RateLimited`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Failed attempts that were tried again.
    pub retries: u64,
}

impl RequestStats {
    /// One attempt is being sent.
    pub fn attempt(&self) {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt failed with `kind`; `retried` when it is tried again.
    pub fn failed(&self, kind: ErrorKind, retried: bool) {
        *self
            .0
            .errors
            .locked()
            .entry(format!("{kind:?}"))
            .or_default() += 1;
        if retried {
            self.0.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            requests: self.0.attempts.load(Ordering::Relaxed),
            errors: self.0.errors.locked().clone(),
            retries: self.0.retries.load(Ordering::Relaxed),
        }
    }
}

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

/// The uploads of one mount in flight, with bytes sent of the staged size, and the last failed
/// upload of each file with its reason: what `sessionfs status` shows of the write path. Cheap
/// to clone; a clone shares the list.
///
/// The write-back engine opens an [`UploadInFlight`] per upload of a staged copy; the request
/// body built from that copy ([`crate::UploadSource::part_body`]) finds its counter
/// by the staged path in the source's handle and adds each chunk as it is sent.
#[derive(Clone, Default)]
pub struct UploadProgress(Arc<Mutex<State>>);

impl fmt::Debug for UploadProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("UploadProgress")
            .field("active", &state.active.len())
            .field("failed", &state.failed.len())
            .finish()
    }
}

/// One upload in flight; it leaves the list when dropped.
pub struct UploadInFlight {
    uploads: UploadProgress,
    id: u64,
}

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        self.uploads
            .state()
            .active
            .retain(|active| active.id != self.id);
    }
}

impl UploadProgress {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.locked()
    }

    /// `path` (inside the mount) starts uploading its staged copy at `staged`, `total` bytes.
    pub fn start(&self, path: &str, staged: &Path, total: u64) -> UploadInFlight {
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
        UploadInFlight {
            uploads: self.clone(),
            id,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_retries_apart() {
        let counts = RequestStats::default();
        counts.attempt();
        counts.attempt();
        counts.attempt();
        counts.failed(ErrorKind::Unavailable, true);
        counts.failed(ErrorKind::Unavailable, true);
        counts.failed(ErrorKind::TooLarge, false);
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.requests, 3);
        assert_eq!(snapshot.retries, 2);
        assert_eq!(snapshot.errors["Unavailable"], 2);
        assert_eq!(snapshot.errors["TooLarge"], 1);
    }

    #[test]
    fn an_upload_counts_its_bytes_and_leaves_when_done() {
        let uploads = UploadProgress::default();
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
        let uploads = UploadProgress::default();
        uploads.failed("s/big", "too large (413)");
        uploads.failed("s/big", "too large again (413)");
        let (_, failed) = uploads.snapshot();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].reason, "too large again (413)");
        uploads.succeeded("s/big");
        assert!(uploads.snapshot().1.is_empty());
    }

    #[test]
    fn request_stats_clones_share_counts_and_defaults_do_not() {
        let mine = RequestStats::default();
        let shared = mine.clone();
        let other = RequestStats::default();
        shared.attempt();
        shared.failed(ErrorKind::Unavailable, true);
        assert_eq!(mine.snapshot().requests, 1);
        assert_eq!(mine.snapshot().retries, 1);
        assert_eq!(other.snapshot(), RequestCounts::default());
    }

    #[test]
    fn upload_progress_clones_share_the_list_and_defaults_do_not() {
        let uploads = UploadProgress::default();
        let other_uploads = UploadProgress::default();
        let staged = Path::new("/staging/1");
        let _upload = uploads.clone().start("s/a.bin", staged, 10);
        uploads.clone().failed("s/b.bin", "refused");
        assert_eq!(uploads.snapshot().0.len(), 1);
        assert_eq!(uploads.snapshot().1.len(), 1);
        assert!(other_uploads.counter(staged, false).is_none());
        assert_eq!(other_uploads.snapshot(), (Vec::new(), Vec::new()));
    }

    #[tokio::test]
    async fn an_upload_body_counts_into_its_own_mounts_handle_only() {
        use futures::StreamExt;

        let dir = tempfile::tempdir().unwrap();
        let (staged, elsewhere) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&staged, vec![7u8; 5000]).unwrap();
        // Two mounts in one process, each uploading a file of its own.
        let mine = UploadProgress::default();
        let other = UploadProgress::default();
        let _mine = mine.start("s/a.bin", &staged, 5000);
        let _other = other.start("t/b.bin", &elsewhere, 300);
        other.failed("t/c.bin", "refused (413)");
        let source = crate::UploadSource {
            progress: mine.clone(),
            ..crate::UploadSource::new(&staged, 5000)
        };
        let mut body = source.body("a.bin").unwrap();
        let mut sent = 0;
        while let Some(chunk) = body.next().await {
            sent += chunk.unwrap().len();
        }
        assert_eq!(sent, 5000);

        let (active, failed) = mine.snapshot();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].path.as_str(), active[0].bytes_done),
            ("s/a.bin", 5000)
        );
        assert!(failed.is_empty(), "{failed:?}");
        let (active, failed) = other.snapshot();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].path.as_str(), active[0].bytes_done),
            ("t/b.bin", 0)
        );
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].path, "t/c.bin");

        // A source built without the mount's handle counts into nobody's list.
        let unwired = crate::UploadSource::new(&staged, 5000);
        let mut body = unwired.part_body("a.bin", 0..100).unwrap();
        while body.next().await.is_some() {}
        assert_eq!(mine.snapshot().0[0].bytes_done, 5000);
    }
}
