//! The staging directory of one remote: claimed by one mount at a time (an advisory lock), so
//! only one process replays its journal.

use std::fs;
use std::path::{Path, PathBuf};

use super::RunError;
use crate::backend::Backend;

/// The staging directory of one remote, held by at most one mount at a time so that only one
/// process replays its journal. A second mount of the same remote gets a private directory.
pub struct StagingDir {
    pub path: PathBuf,
    /// This mount owns the remote's directory and replays what an earlier mount left.
    pub replay: bool,
    /// Holds the advisory lock while the mount runs.
    _lock: Option<fs::File>,
}

impl StagingDir {
    pub fn claim(cache_dir: &Path, backend: Backend, identity: &str) -> Result<Self, RunError> {
        use md5::{Digest, Md5};
        let key = format!("{:x}", Md5::digest(identity.as_bytes()));
        let backend = backend.name();
        let shared = cache_dir
            .join("staging")
            .join(format!("{backend}-{}", &key[..16]));
        fs::create_dir_all(&shared).map_err(|err| {
            format!(
                "cannot create staging directory {}: {err}",
                shared.display()
            )
        })?;
        let lock = fs::File::create(shared.join(".lock"))
            .map_err(|err| format!("cannot lock {}: {err}", shared.display()))?;
        // SAFETY: flock on a file descriptor we own; it stays open as long as `lock` lives.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } == 0;
        if locked {
            return Ok(Self {
                path: shared,
                replay: true,
                _lock: Some(lock),
            });
        }
        let private =
            shared.with_file_name(format!("{backend}-{}-{}", &key[..16], std::process::id()));
        log::info!(
            "another mount of this remote is running; staging in {}",
            private.display()
        );
        Ok(Self {
            path: private,
            replay: false,
            _lock: None,
        })
    }

    /// Removes a private directory that holds nothing pending.
    pub fn release(self, kept: usize) {
        if !self.replay && kept == 0 {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
