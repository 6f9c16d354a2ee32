//! The write-back journal: which staged files hold bytes the remote has not got yet.
//!
//! A file becomes dirty with its first write; from then until its upload succeeds, a small
//! record beside the staging area names its container, its path and its staged copy. A process
//! that is killed (or an unmount whose uploads failed) leaves records and staged copies behind,
//! and the next mount of the same remote uploads them before it mounts. Records are written
//! atomically (temporary file, then rename), so a crash never leaves half a record.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StagingArea;
use crate::fs::names;
use crate::remote::{Remote, UploadSource};

/// One file whose staged bytes still have to reach the remote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    /// Container (Mix session id) the file lives in; `None` on flat APIs.
    pub container: Option<String>,
    /// The file's path inside its container, components joined by `/`.
    pub path: String,
    /// Whether the file is a symbolic link (its content is the target).
    pub symlink: bool,
    /// File name of the staged copy inside the staging directory.
    pub staged: String,
}

/// The records of one staging directory.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal kept in `staging_dir/journal`.
    pub fn open(staging_dir: &Path) -> io::Result<Self> {
        let dir = staging_dir.join("journal");
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn record_path(&self, staged: &str) -> PathBuf {
        self.dir.join(format!("{staged}.json"))
    }

    /// Records (or updates, after a rename) that `upload` is pending.
    pub fn record(&self, upload: &PendingUpload) -> io::Result<()> {
        let path = self.record_path(&upload.staged);
        let temporary = path.with_extension("tmp");
        fs::write(&temporary, serde_json::to_vec(upload)?)?;
        fs::rename(&temporary, &path)
    }

    /// Forgets the record of the staged file named `staged` (uploaded, or deleted).
    pub fn remove(&self, staged: &str) {
        let _ = fs::remove_file(self.record_path(staged));
    }

    /// Every pending upload, oldest first. Unreadable records are reported and skipped.
    pub fn pending(&self) -> io::Result<Vec<PendingUpload>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let modified = fs::metadata(&path)?.modified()?;
            match fs::read(&path).map(|bytes| serde_json::from_slice::<PendingUpload>(&bytes)) {
                Ok(Ok(record)) => records.push((modified, record)),
                _ => log::warn!("skipping unreadable journal record {}", path.display()),
            }
        }
        records.sort_by_key(|(modified, _)| *modified);
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }
}

/// Uploads what an earlier process left in `journal`, before anything is mounted: each staged
/// copy goes up under its recorded path, then its record and copy are removed. Copies that fail
/// stay for the next mount. Staged files no record names are leftovers and are deleted.
/// Returns `(uploaded, failed)`.
pub async fn replay<R: Remote + ?Sized>(
    journal: &Journal,
    staging: &StagingArea,
    remote: &R,
) -> io::Result<(usize, usize)> {
    let pending = journal.pending()?;
    let rules = remote.capabilities().name_rules;
    let (mut uploaded, mut failed) = (0, 0);
    let mut keep = Vec::new();
    for upload in pending {
        let path = staging.path_of(&upload.staged);
        let Ok(meta) = fs::metadata(&path) else {
            log::warn!(
                "the staged copy of {:?} is gone; nothing to upload",
                upload.path
            );
            journal.remove(&upload.staged);
            continue;
        };
        let name = match upload.symlink {
            true => names::encode_link(&upload.path, &rules),
            false => names::encode(&upload.path, &rules),
        };
        // A backend that needs the md5 computes it from the staged copy.
        let source = UploadSource::new(&path, meta.len());
        match remote
            .upload(upload.container.as_deref(), &name, &source)
            .await
        {
            Ok(_) => {
                log::info!(
                    "uploaded {:?}, left pending by an earlier mount",
                    upload.path
                );
                journal.remove(&upload.staged);
                let _ = fs::remove_file(&path);
                uploaded += 1;
            }
            Err(err) => {
                log::error!(
                    "{}; {:?} stays in {} for the next mount",
                    err.message,
                    upload.path,
                    staging.dir().display()
                );
                keep.push(upload.staged);
                failed += 1;
            }
        }
    }
    staging.remove_strays(&keep)?;
    Ok((uploaded, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let upload = PendingUpload {
            container: Some("s1".into()),
            path: "dir/a b.txt".into(),
            symlink: false,
            staged: "staged-abc".into(),
        };
        journal.record(&upload).unwrap();
        let renamed = PendingUpload {
            path: "dir/c.txt".into(),
            ..upload.clone()
        };
        journal.record(&renamed).unwrap();
        let reopened = Journal::open(dir.path()).unwrap();
        assert_eq!(reopened.pending().unwrap(), vec![renamed]);
        reopened.remove("staged-abc");
        assert!(reopened.pending().unwrap().is_empty());
    }
}
