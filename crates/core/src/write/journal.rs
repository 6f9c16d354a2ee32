//! The write-back journal: which staged files hold bytes the remote has not got yet.
//!
//! A file becomes dirty with its first write; from then until its upload succeeds, a small
//! record beside the staging area names its container, its path, its staged copy and whether
//! the application has committed that content (closed or fsynced the file). A process that is
//! killed (or an unmount whose uploads failed) leaves records and staged copies behind, and the
//! next mount of the same remote, before it mounts, uploads the committed ones and moves the
//! uncommitted ones into the recovery folder: only content an application committed ever
//! reaches the server, and nothing written is lost. Records are written atomically
//! (`records`), so a crash never leaves half a record.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StagingArea, records};
use sessionfs_remote::names;
use std::sync::Arc;

use sessionfs_remote::{Remote, UploadSource, UploadStarted};

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
    /// The application committed this content (closed or fsynced it), so it may reach the
    /// server; uncommitted content goes to the recovery folder after a crash instead. Records
    /// written before this field existed count as committed, as they were then treated.
    #[serde(default = "committed_by_default")]
    pub committed: bool,
    /// The server's id of this content's upload while it runs (an Appmixer partial file, a
    /// Lightfield session), so the next mount removes what a killed upload left half-done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_upload: Option<String>,
}

fn committed_by_default() -> bool {
    true
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
        records::write(&self.record_path(&upload.staged), upload)
    }

    /// A hook for [`UploadSource::on_started`] that adds the server's upload id to `record`
    /// as soon as the server has one.
    pub fn started_hook(&self, record: PendingUpload) -> UploadStarted {
        let journal = self.clone();
        UploadStarted(Arc::new(move |id: &str| {
            let record = PendingUpload {
                server_upload: Some(id.to_owned()),
                ..record.clone()
            };
            if let Err(err) = journal.record(&record) {
                log::warn!(
                    "cannot record the upload id of {:?} ({err}); after a crash its unfinished \
                     upload may stay on the server",
                    record.path
                );
            }
        }))
    }

    /// Forgets the record of the staged file named `staged` (uploaded, or deleted).
    pub fn remove(&self, staged: &str) {
        let _ = fs::remove_file(self.record_path(staged));
    }

    /// A directory at `from` in `container` was renamed to `to`: records of files below it now
    /// name their new paths. Idempotent (a rename finished after a crash rewrites again).
    pub fn move_prefix(&self, container: Option<&str>, from: &str, to: &str) -> io::Result<()> {
        let prefix = format!("{from}/");
        for mut upload in self.pending()? {
            if upload.container.as_deref() != container {
                continue;
            }
            if let Some(rest) = upload.path.strip_prefix(&prefix) {
                upload.path = format!("{to}/{rest}");
                self.record(&upload)?;
            }
        }
        Ok(())
    }

    /// Every pending upload, oldest first. Unreadable records are reported and skipped.
    pub fn pending(&self) -> io::Result<Vec<PendingUpload>> {
        let mut pending = Vec::new();
        for (path, record) in records::read_all::<PendingUpload>(&self.dir)? {
            match record {
                Ok(record) => pending.push(record),
                Err(_) => log::warn!("skipping unreadable journal record {}", path.display()),
            }
        }
        Ok(pending)
    }
}

/// What [`replay`] did with the records an earlier process left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Committed files uploaded.
    pub uploaded: usize,
    /// Committed files whose upload failed again; they stay for the next mount.
    pub failed: usize,
    /// Uncommitted files moved into the recovery folder.
    pub recovered: usize,
}

/// Handles what an earlier process left in `journal`, before anything is mounted: each
/// committed staged copy goes up under its recorded path, then its record and copy are
/// removed; copies that fail stay for the next mount. Each uncommitted copy is moved into
/// `recovery` (as `CONTAINER/PATH.recovered-TIMESTAMP`, one log line each) and never uploaded.
/// Staged files no record names are leftovers and are deleted.
pub async fn replay<R: Remote + ?Sized>(
    journal: &Journal,
    staging: &StagingArea,
    remote: &R,
    recovery: &Path,
) -> io::Result<Replayed> {
    let pending = journal.pending()?;
    let rules = remote.capabilities().name_rules;
    let mut done = Replayed::default();
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
        if !upload.committed {
            let moved = recover(&path, &upload, recovery)?;
            log::warn!(
                "{:?} was being written when an earlier mount ended and was never closed or \
                 fsynced; it was not uploaded, and its content is in {}",
                upload.path,
                moved.display()
            );
            journal.remove(&upload.staged);
            done.recovered += 1;
            continue;
        }
        // The killed process's unfinished upload goes first, so nothing half-done stays.
        if let Some(id) = &upload.server_upload {
            match remote.abort_upload(upload.container.as_deref(), id).await {
                Ok(()) => log::info!(
                    "removed the unfinished upload {id} of {:?} an earlier mount left",
                    upload.path
                ),
                Err(err) => log::warn!(
                    "{}; the unfinished upload of {:?} may stay on the server",
                    err.message,
                    upload.path
                ),
            }
        }
        // Past the largest file the API stores (a copy staged before that was checked at
        // every write) the upload cannot succeed: not tried, kept.
        let max = remote.capabilities().max_object_bytes;
        if meta.len() > max {
            log::error!(
                "{:?} is {} bytes, more than {} stores ({max} bytes); it is not uploaded and \
                 stays in {} as {}",
                upload.path,
                meta.len(),
                remote.describe(),
                staging.dir().display(),
                upload.staged
            );
            keep.push(upload.staged);
            done.failed += 1;
            continue;
        }
        let name = match upload.symlink {
            true => names::encode_link(&upload.path, &rules),
            false => names::encode(&upload.path, &rules),
        };
        // A backend that needs the md5 computes it from the staged copy.
        let source = UploadSource {
            on_started: Some(journal.started_hook(PendingUpload {
                server_upload: None,
                ..upload.clone()
            })),
            ..UploadSource::new(&path, meta.len())
        };
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
                done.uploaded += 1;
            }
            Err(err) => {
                log::error!(
                    "{}; {:?} stays in {} for the next mount",
                    err.message,
                    upload.path,
                    staging.dir().display()
                );
                keep.push(upload.staged);
                done.failed += 1;
            }
        }
    }
    staging.remove_strays(&keep)?;
    Ok(done)
}

/// Moves the uncommitted staged copy at `staged` into `recovery`, under its container and
/// path with the time appended, and returns where it went.
fn recover(staged: &Path, upload: &PendingUpload, recovery: &Path) -> io::Result<PathBuf> {
    let container = upload.container.as_deref().unwrap_or("_root");
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let relative: PathBuf = upload
        .path
        .split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .collect();
    let mut target = recovery.join(sanitize(container)).join(relative);
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    target.set_file_name(format!("{name}.recovered-{stamp}"));
    fs::create_dir_all(target.parent().expect("under the recovery folder"))?;
    if fs::rename(staged, &target).is_err() {
        // Another file system: copy (holes kept), then drop the staged copy.
        let from = fs::File::open(staged)?;
        let to = fs::File::create(&target)?;
        super::sparse::copy_sparse(&from, &to, from.metadata()?.len())?;
        fs::remove_file(staged)?;
    }
    Ok(target)
}

/// A container id as one path component.
fn sanitize(component: &str) -> String {
    component.replace(['/', '\0'], "_")
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
            committed: false,
            server_upload: None,
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

    #[test]
    fn a_directory_rename_moves_the_records_below_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let record = |container: &str, path: &str, staged: &str| PendingUpload {
            container: Some(container.into()),
            path: path.into(),
            symlink: false,
            staged: staged.into(),
            committed: true,
            server_upload: None,
        };
        for upload in [
            record("c", "a/x", "s1"),
            record("c", "a/deep/y", "s2"),
            record("c", "ab/z", "s3"),
            record("d", "a/w", "s4"),
        ] {
            journal.record(&upload).unwrap();
        }
        journal.move_prefix(Some("c"), "a", "b/n").unwrap();
        let mut paths: Vec<(String, String)> = journal
            .pending()
            .unwrap()
            .into_iter()
            .map(|u| (u.staged, u.path))
            .collect();
        paths.sort();
        let expected = [
            ("s1", "b/n/x"),
            ("s2", "b/n/deep/y"),
            ("s3", "ab/z"),
            ("s4", "a/w"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(s, p)| (s.to_string(), p.to_string()))
            .collect();
        assert_eq!(paths, expected);
    }

    #[test]
    fn records_without_the_committed_field_count_as_committed() {
        let old = r#"{"container":null,"path":"a","symlink":false,"staged":"s"}"#;
        let record: PendingUpload = serde_json::from_str(old).unwrap();
        assert!(record.committed);
    }

    #[tokio::test]
    async fn replay_uploads_committed_copies_and_recovers_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let staging_dir = dir.path().join("staging");
        let recovery = dir.path().join("recovery");
        let area = StagingArea::new(&staging_dir).unwrap();
        let journal = Journal::open(&staging_dir).unwrap();
        let remote = sessionfs_remote::memory::MemoryRemote::new();
        for (path, content, committed) in [
            ("docs/saved.txt", &b"closed by its writer"[..], true),
            ("docs/half.txt", &b"still being written"[..], false),
        ] {
            let mut staged = area.create(false).unwrap();
            staged.write_at(0, content).unwrap();
            journal
                .record(&PendingUpload {
                    container: Some("c".into()),
                    path: path.into(),
                    symlink: false,
                    staged: staged.name(),
                    committed,
                    server_upload: None,
                })
                .unwrap();
            staged.keep();
        }
        let done = replay(&journal, &area, &remote, &recovery).await.unwrap();
        assert_eq!(
            done,
            Replayed {
                uploaded: 1,
                failed: 0,
                recovered: 1
            }
        );
        let rules = remote.capabilities().name_rules;
        let saved = names::encode("docs/saved.txt", &rules);
        assert_eq!(
            remote.get("c", &saved).unwrap(),
            &b"closed by its writer"[..]
        );
        let half = names::encode("docs/half.txt", &rules);
        assert!(
            remote.get("c", &half).is_none(),
            "uncommitted content never uploads"
        );
        let recovered: Vec<_> = fs::read_dir(recovery.join("c/docs"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(recovered.len(), 1);
        let name = recovered[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("half.txt.recovered-"), "{name}");
        assert_eq!(fs::read(&recovered[0]).unwrap(), b"still being written");
        assert!(journal.pending().unwrap().is_empty());
    }
}
