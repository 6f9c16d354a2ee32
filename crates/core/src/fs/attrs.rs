//! The local metadata store of one remote: the POSIX attributes the APIs cannot hold (mode,
//! owner, group, times, symlink), kept in an embedded crash-safe database (redb) under the
//! mount's cache directory, so they survive a remount on this machine.
//!
//! Entries are keyed by (container, object id) and hold the version they describe: an entry
//! whose object has another version on the server was written for bytes that are gone, so it
//! is dropped and the server's attributes apply. Calls are short local I/O; callers make them
//! outside the tree lock.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::tree::LocalMeta;

/// `container \0 object id` → JSON of [`Stored`].
const ATTRS: TableDefinition<&str, &[u8]> = TableDefinition::new("attrs");

/// The attributes of one object version, as kept in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The object version these attributes belong to.
    pub version: String,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Change time.
    pub ctime: Time,
    /// The object is a symbolic link.
    pub symlink: bool,
}

impl Stored {
    /// The in-memory overrides these attributes stand for.
    pub fn local_meta(&self) -> LocalMeta {
        LocalMeta {
            perm: Some(self.perm),
            uid: Some(self.uid),
            gid: Some(self.gid),
            atime: Some(self.atime.system_time()),
            mtime: Some(self.mtime.system_time()),
            ctime: Some(self.ctime.system_time()),
        }
    }
}

/// A time as seconds and nanoseconds from the epoch (negative before 1970).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    secs: i64,
    nanos: u32,
}

impl From<SystemTime> for Time {
    fn from(time: SystemTime) -> Self {
        match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => Self {
                secs: after.as_secs() as i64,
                nanos: after.subsec_nanos(),
            },
            Err(before) => {
                let before = before.duration();
                let (secs, nanos) = (before.as_secs() as i64, before.subsec_nanos());
                if nanos == 0 {
                    Self { secs: -secs, nanos }
                } else {
                    Self {
                        secs: -secs - 1,
                        nanos: 1_000_000_000 - nanos,
                    }
                }
            }
        }
    }
}

impl Time {
    /// The time as a `SystemTime`.
    pub fn system_time(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        if self.secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(self.secs as u64) + nanos
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs()) + nanos
        }
    }
}

/// One object whose attributes follow it to a new id and version ([`MetaStore::rekey`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rekey {
    /// The id it had.
    pub from_id: String,
    /// The version the entry must describe to move (an older entry is dropped).
    pub from_version: String,
    /// The id it has now.
    pub to_id: String,
    /// The version it has now.
    pub to_version: String,
}

/// The store of one remote.
pub struct MetaStore {
    db: Database,
}

/// A store failure, as text for the log (the store never fails an operation).
pub type StoreError = String;

fn key(container: Option<&str>, id: &str) -> String {
    format!("{}\0{id}", container.unwrap_or(""))
}

impl MetaStore {
    /// Opens (or creates) the store at `path`. Fails when another process holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        }
        let db = Database::create(path)
            .map_err(|err| format!("cannot open the metadata store {}: {err}", path.display()))?;
        let store = Self { db };
        // The table exists from the start, so reads never meet a missing table.
        store.write(|table| {
            let _ = table;
            Ok(())
        })?;
        Ok(store)
    }

    fn write(
        &self,
        change: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let run = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(ATTRS)?;
                change(&mut table)?;
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(|err| format!("metadata store: {err}"))
    }

    /// Records the attributes of `id` in `container`, replacing what was there.
    pub fn put(
        &self,
        container: Option<&str>,
        id: &str,
        stored: &Stored,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(stored).map_err(|err| err.to_string())?;
        let key = key(container, id);
        self.write(|table| {
            table.insert(key.as_str(), value.as_slice())?;
            Ok(())
        })
    }

    /// Forgets `ids` in `container`.
    pub fn remove(&self, container: Option<&str>, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(|table| {
            for id in ids {
                table.remove(key(container, id).as_str())?;
            }
            Ok(())
        })
    }

    /// Moves the entries of objects that were copied to another id (a directory rename): the
    /// entry of each `from_id`, when it was saved for `from_version`, goes to `to_id` at
    /// `to_version`; one transaction for them all.
    pub fn rekey(&self, container: Option<&str>, moves: &[Rekey]) -> Result<(), StoreError> {
        if moves.is_empty() {
            return Ok(());
        }
        self.write(|table| {
            for step in moves {
                let old = table
                    .remove(key(container, &step.from_id).as_str())?
                    .map(|value| value.value().to_vec());
                let Some(mut stored) =
                    old.and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
                else {
                    continue;
                };
                if stored.version != step.from_version {
                    continue;
                }
                stored.version = step.to_version.clone();
                let value = serde_json::to_vec(&stored).expect("plain fields serialize");
                table.insert(key(container, &step.to_id).as_str(), value.as_slice())?;
            }
            Ok(())
        })
    }

    /// Every entry of `container`, by object id.
    pub fn entries(&self, container: Option<&str>) -> Result<HashMap<String, Stored>, StoreError> {
        let run = || -> Result<HashMap<String, Stored>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ATTRS)?;
            let start = key(container, "");
            let end = format!("{}\u{1}", container.unwrap_or(""));
            let mut out = HashMap::new();
            for row in table.range(start.as_str()..end.as_str())? {
                let (k, v) = row?;
                let id = k.value()[start.len()..].to_string();
                match serde_json::from_slice::<Stored>(v.value()) {
                    Ok(stored) => {
                        out.insert(id, stored);
                    }
                    Err(err) => log::warn!("metadata store: unreadable entry for {id:?}: {err}"),
                }
            }
            Ok(out)
        };
        run().map_err(|err| format!("metadata store: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(version: &str, perm: u16) -> Stored {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_500_000_001);
        Stored {
            version: version.into(),
            perm,
            uid: 1000,
            gid: 100,
            atime: t.into(),
            mtime: (SystemTime::UNIX_EPOCH - Duration::from_millis(1500)).into(),
            ctime: t.into(),
            symlink: false,
        }
    }

    #[test]
    fn entries_survive_a_reopen_per_container() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta").join("store.redb");
        {
            let store = MetaStore::open(&path).unwrap();
            store.put(Some("c1"), "a", &stored("1", 0o600)).unwrap();
            store.put(Some("c2"), "a", &stored("7", 0o755)).unwrap();
            store.put(None, "flat", &stored("2", 0o640)).unwrap();
            assert!(MetaStore::open(&path).is_err(), "one process at a time");
        }
        let store = MetaStore::open(&path).unwrap();
        let c1 = store.entries(Some("c1")).unwrap();
        assert_eq!(c1.len(), 1);
        assert_eq!(c1["a"], stored("1", 0o600));
        assert_eq!(store.entries(Some("c2")).unwrap()["a"].perm, 0o755);
        assert_eq!(store.entries(None).unwrap().len(), 1);
        let meta = c1["a"].local_meta();
        assert_eq!(
            meta.mtime,
            Some(SystemTime::UNIX_EPOCH - Duration::from_millis(1500)),
            "times before the epoch round-trip"
        );
        store.remove(Some("c1"), &["a".into()]).unwrap();
        assert!(store.entries(Some("c1")).unwrap().is_empty());

        let rekey = |from: &str, from_version: &str, to: &str| Rekey {
            from_id: from.into(),
            from_version: from_version.into(),
            to_id: to.into(),
            to_version: "9".into(),
        };
        store.put(Some("c1"), "moved", &stored("1", 0o600)).unwrap();
        store.put(Some("c1"), "stale", &stored("1", 0o600)).unwrap();
        store
            .rekey(
                Some("c1"),
                &[rekey("moved", "1", "new"), rekey("stale", "2", "other")],
            )
            .unwrap();
        let c1 = store.entries(Some("c1")).unwrap();
        assert_eq!(c1.keys().collect::<Vec<_>>(), ["new"], "{c1:?}");
        assert_eq!(c1["new"], stored("9", 0o600));
    }
}
