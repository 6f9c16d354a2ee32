//! The report a running mount answers `sessionfs status` with: what it mounts (never a
//! secret), what is pending, failed or recovered, cache use against the limits, and request
//! counts; its text form; and the one-line progress of a drain.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytesize::ByteSize;

use crate::fs::{MountView, Usage};
use crate::remote::RateLimitState;
use crate::remote::observe::{Failure, RequestCounts, RequestStats, UploadProgress};

/// A file whose content is not on the server yet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingFile {
    /// Path inside the mount.
    pub path: String,
    /// Bytes sent of the current upload (0 while waiting).
    pub bytes_done: u64,
    /// Size of the staged copy.
    pub bytes_total: u64,
    /// An upload is running; else the file waits for its close, fsync or the unmount drain.
    pub uploading: bool,
}

/// The files a crashed mount left in the recovery folder.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recovery {
    /// The folder of this remote.
    pub dir: String,
    /// Files in it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a mount says about itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The mount process.
    pub pid: u32,
    /// Where it is mounted.
    pub mountpoint: String,
    /// The named remote (`NAME:`, or `NAME:SUBDIR` for one container), if mounted by name.
    pub remote: Option<String>,
    /// The backend (`mix`, `fluxer`, ...).
    pub backend: String,
    /// The server's base URL without credentials or query, or the embedded emulator.
    pub endpoint: String,
    /// Seconds since the mount started.
    pub uptime_secs: u64,
    /// It is uploading what is pending before it unmounts.
    pub draining: bool,
    /// Files not on the server yet.
    pub pending: Vec<PendingFile>,
    /// The last failed upload of each file that has not uploaded since.
    pub failed: Vec<Failure>,
    /// The recovery folder of this remote.
    pub recovery: Recovery,
    /// The memory budget of cached blocks, prefetch and write buffers.
    pub memory: Usage,
    /// The disk tier of the block cache, when `--cache-size` turned it on.
    pub disk_cache: Option<Usage>,
    /// Requests, errors and retries since the mount started.
    pub requests: RequestCounts,
    /// The rate-limit state, where the API has one (Fluxer).
    pub rate_limit: Option<RateLimitState>,
}

/// What a mount knows about itself from its start.
#[derive(Clone, Debug)]
pub struct MountInfo {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The named remote as it was given (`NAME:` or `NAME:SUBDIR`), if any.
    pub remote: Option<String>,
    /// The backend's name.
    pub backend: String,
    /// What to show as the endpoint (see [`redact_endpoint`]).
    pub endpoint: String,
    /// When it started.
    pub started: Instant,
    /// The recovery folder of this remote.
    pub recovery_dir: PathBuf,
    /// The requests of this mount's client (the handle its `RetryConfig` counts into).
    pub requests: RequestStats,
    /// This mount's uploads (the handle its core's `FsConfig::uploads` reports into).
    pub uploads: UploadProgress,
}

impl MountInfo {
    /// The report now; `draining` once the unmount's drain has started.
    pub fn report(&self, view: &dyn MountView, draining: bool) -> Report {
        let (active, failed) = self.uploads.snapshot();
        let mut pending: Vec<PendingFile> = active
            .into_iter()
            .map(|upload| PendingFile {
                path: upload.path,
                bytes_done: upload.bytes_done,
                bytes_total: upload.bytes_total,
                uploading: true,
            })
            .collect();
        for (path, size) in view.waiting_files() {
            if !pending.iter().any(|file| file.path == path) {
                pending.push(PendingFile {
                    path,
                    bytes_done: 0,
                    bytes_total: size,
                    uploading: false,
                });
            }
        }
        pending.sort_by(|a, b| a.path.cmp(&b.path));
        Report {
            pid: std::process::id(),
            mountpoint: self.mountpoint.display().to_string(),
            remote: self.remote.clone(),
            backend: self.backend.clone(),
            endpoint: self.endpoint.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            draining,
            pending,
            failed,
            recovery: recovery(&self.recovery_dir),
            memory: view.memory(),
            disk_cache: view.disk_cache(),
            requests: self.requests.snapshot(),
            rate_limit: view.rate_limit(),
        }
    }
}

/// The endpoint without user, password or query (where a token could hide).
pub fn redact_endpoint(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(an endpoint that is not a URL)".to_string(),
    }
}

/// Counts the files and bytes under `dir` (missing: none).
fn recovery(dir: &Path) -> Recovery {
    let mut found = Recovery {
        dir: dir.display().to_string(),
        ..Recovery::default()
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                Ok(meta) => {
                    found.files += 1;
                    found.bytes += meta.len();
                }
                Err(_) => {}
            }
        }
    }
    found
}

fn size(bytes: u64) -> String {
    ByteSize(bytes).to_string_as(true)
}

impl Report {
    /// Files and bytes left to upload, as one line (the drain's progress).
    pub fn drain_line(&self) -> String {
        let total: u64 = self.pending.iter().map(|file| file.bytes_total).sum();
        let done: u64 = self.pending.iter().map(|file| file.bytes_done).sum();
        format!(
            "{}: {} file(s) left to upload, {} of {}",
            self.mountpoint,
            self.pending.len(),
            size(total - done),
            size(total)
        )
    }

    /// The report for people: a few lines, one per pending or failed file.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}  (pid {}{})\n  {} at {}, up {}\n",
            self.mountpoint,
            self.pid,
            if self.draining { ", unmounting" } else { "" },
            match &self.remote {
                Some(name) => format!("{name} ({})", self.backend),
                None => self.backend.clone(),
            },
            self.endpoint,
            humantime::format_duration(std::time::Duration::from_secs(self.uptime_secs))
        );
        out.push_str(&format!("  pending uploads: {}\n", self.pending.len()));
        for file in &self.pending {
            let state = match file.uploading {
                true => format!(
                    "{} of {} sent",
                    size(file.bytes_done),
                    size(file.bytes_total)
                ),
                false => format!("{}, waiting", size(file.bytes_total)),
            };
            out.push_str(&format!("    {}  {state}\n", file.path));
        }
        out.push_str(&format!("  failed uploads: {}\n", self.failed.len()));
        for failure in &self.failed {
            out.push_str(&format!("    {}  {}\n", failure.path, failure.reason));
        }
        out.push_str(&format!(
            "  recovery folder: {} file(s), {} in {}\n",
            self.recovery.files,
            size(self.recovery.bytes),
            self.recovery.dir
        ));
        out.push_str(&format!(
            "  memory: {} of {}; disk cache: {}\n",
            size(self.memory.used),
            size(self.memory.limit),
            match &self.disk_cache {
                Some(disk) => format!("{} of {}", size(disk.used), size(disk.limit)),
                None => "off".to_string(),
            }
        ));
        let errors: Vec<String> = self
            .requests
            .errors
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        out.push_str(&format!(
            "  requests: {}, retries: {}, errors: {}\n",
            self.requests.requests,
            self.requests.retries,
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        ));
        if let Some(limits) = &self.rate_limit {
            out.push_str(&format!(
                "  rate limits: {} bucket(s) known, {} spent until their reset{}\n",
                limits.buckets,
                limits.exhausted,
                match limits.global_hold_ms {
                    Some(ms) => format!("; every request held {ms} ms more (global 429)"),
                    None => String::new(),
                }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_lose_credentials_and_queries() {
        assert_eq!(
            redact_endpoint("https://user:secret@api.example.com/v1?token=abc"),
            "https://api.example.com/v1"
        );
        assert_eq!(
            redact_endpoint("http://127.0.0.1:8088"),
            "http://127.0.0.1:8088"
        );
    }

    #[test]
    fn the_recovery_folder_is_counted_below_its_containers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("session/sub")).unwrap();
        std::fs::write(dir.path().join("session/a.recovered-1"), b"abc").unwrap();
        std::fs::write(dir.path().join("session/sub/b.recovered-1"), b"de").unwrap();
        let found = recovery(dir.path());
        assert_eq!((found.files, found.bytes), (2, 5));
        assert_eq!(recovery(&dir.path().join("missing")).files, 0);
    }
}
