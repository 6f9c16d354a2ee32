//! Crash-safe record files, shared by the journal of pending uploads and the journal of
//! directory renames: one JSON file per record in a directory, written atomically (temporary
//! file, then rename) so a crash never leaves half a record, and read back oldest first.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Writes `record` as JSON to `path`, atomically.
pub fn write<T: Serialize>(path: &Path, record: &T) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, serde_json::to_vec(record)?)?;
    fs::rename(&temporary, path)
}

/// Every `*.json` record in `dir`, oldest first, each with its path and what parsing it gave
/// (the caller decides what an unreadable record means).
pub fn read_all<T: DeserializeOwned>(dir: &Path) -> io::Result<Vec<(PathBuf, Result<T, String>)>> {
    let mut records: Vec<(SystemTime, PathBuf, Result<T, String>)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let modified = fs::metadata(&path)?.modified()?;
        let parsed = fs::read(&path)
            .map_err(|err| err.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|err| err.to_string()));
        records.push((modified, path, parsed));
    }
    records.sort_by_key(|(modified, _, _)| *modified);
    Ok(records
        .into_iter()
        .map(|(_, path, parsed)| (path, parsed))
        .collect())
}
