//! The journal of directory renames in progress.
//!
//! No API here can rename, so a directory rename copies every object below the directory to
//! its new name and deletes the old one. A process killed half-way would leave both halves on
//! the server, which the next listing shows as two trees merged. So the whole list of moves is
//! recorded here before the first object moves, and removed when the last is done; the next
//! mount of the remote finishes every recorded rename before anything is mounted. Each move is
//! idempotent (copy unless the target exists, then delete the source unless it is gone), so a
//! record can be carried out any number of times. Records are written atomically (`records`),
//! in `staging_dir/renames`, a kind of their own beside the pending uploads.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records;

/// One object to move: where it is and which name it gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMove {
    /// The object's id before the move; the source is found by it, else by `from_name` (a
    /// rollback, whose sources are copies made by the rename, has none).
    pub from_id: Option<String>,
    /// Its stored name before the move.
    pub from_name: String,
    /// Its version before the move, so only attributes saved for that version follow it.
    pub version: String,
    /// The stored name it moves to.
    pub to_name: String,
}

/// A directory rename: every object below `from` moves below `to` in one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirRename {
    /// Names the record's file.
    pub id: String,
    /// The container both directories are in; `None` on flat APIs.
    pub container: Option<String>,
    /// The directory's path before the rename, for log lines and pending uploads below it.
    pub from: String,
    /// Its path after the rename.
    pub to: String,
    /// The objects to move: files, links and directory markers.
    pub moves: Vec<ObjectMove>,
}

impl DirRename {
    /// The rename that undoes this one, for moves that stopped half-way: sources are found by
    /// name, since the copies the rename made have ids the record never saw.
    pub fn reversed(&self) -> Self {
        Self {
            id: self.id.clone(),
            container: self.container.clone(),
            from: self.to.clone(),
            to: self.from.clone(),
            moves: self
                .moves
                .iter()
                .map(|step| ObjectMove {
                    from_id: None,
                    from_name: step.to_name.clone(),
                    version: String::new(),
                    to_name: step.from_name.clone(),
                })
                .collect(),
        }
    }
}

/// The rename records of one staging directory.
#[derive(Clone, Debug)]
pub struct RenameLog {
    dir: PathBuf,
}

impl RenameLog {
    /// The log kept in `staging_dir/renames`.
    pub fn open(staging_dir: &Path) -> io::Result<Self> {
        let dir = staging_dir.join("renames");
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Where the record `id` lives (named in log lines, so a user can find it).
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Records (or replaces, with its reversal) `rename`.
    pub fn record(&self, rename: &DirRename) -> io::Result<()> {
        records::write(&self.path_of(&rename.id), rename)
    }

    /// Forgets the record `id` (its rename is done).
    pub fn remove(&self, id: &str) {
        let _ = fs::remove_file(self.path_of(id));
    }

    /// Every recorded rename, oldest first. An unreadable record is an error: carrying on
    /// without it could show a half-moved tree.
    pub fn pending(&self) -> io::Result<Vec<DirRename>> {
        records::read_all::<DirRename>(&self.dir)?
            .into_iter()
            .map(|(path, record)| {
                record.map_err(|err| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unreadable rename record {}: {err}", path.display()),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_reverse_into_moves_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = RenameLog::open(dir.path()).unwrap();
        let rename = DirRename {
            id: "r1".into(),
            container: Some("c".into()),
            from: "a".into(),
            to: "b".into(),
            moves: vec![ObjectMove {
                from_id: Some("id-1".into()),
                from_name: "a／f".into(),
                version: "3".into(),
                to_name: "b／f".into(),
            }],
        };
        log.record(&rename).unwrap();
        assert_eq!(
            RenameLog::open(dir.path()).unwrap().pending().unwrap(),
            std::slice::from_ref(&rename)
        );
        let back = rename.reversed();
        assert_eq!((back.from.as_str(), back.to.as_str()), ("b", "a"));
        assert_eq!(back.moves[0].from_id, None);
        assert_eq!(back.moves[0].from_name, "b／f");
        assert_eq!(back.moves[0].to_name, "a／f");
        log.record(&back).unwrap();
        assert_eq!(
            log.pending().unwrap(),
            [back],
            "the reversal replaces the record"
        );
        log.remove("r1");
        assert!(log.pending().unwrap().is_empty());
    }
}
