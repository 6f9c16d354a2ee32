//! What `sessionfs status` asks the core: files with local changes not uploaded yet, and the
//! caches' use against their limits ([`MountView`]).

use super::SessionFs;
use super::tree::{Ino, ROOT_INO};
use sessionfs_remote::RateLimitState;

/// Bytes in use of a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Bytes in use.
    pub used: u64,
    /// The limit (`--memory-limit`, `--cache-size`).
    pub limit: u64,
}

/// What the core tells `sessionfs status` (implemented by `SessionFs`; the status report reads
/// it, so the core names no part of the report).
pub trait MountView: Send + Sync {
    /// Files with local changes not uploaded yet that no upload is sending right now: path
    /// inside the mount and staged size. Files busy at the moment of asking may be left out.
    fn waiting_files(&self) -> Vec<(String, u64)>;
    /// The memory budget's use.
    fn memory(&self) -> Usage;
    /// The disk cache's use, if there is one.
    fn disk_cache(&self) -> Option<Usage>;
    /// The client's rate-limit state, where the API has limits it paces itself by.
    fn rate_limit(&self) -> Option<RateLimitState>;
}

impl SessionFs {
    /// The path of `ino` inside the mount, as a user would type it after the mount point.
    pub(super) fn mount_path(&self, mut ino: Ino) -> String {
        let tree = self.tree();
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            let Some(node) = tree.get(ino) else { break };
            parts.push(node.name.clone());
            ino = node.parent;
        }
        parts.reverse();
        parts.join("/")
    }
}

impl MountView for SessionFs {
    fn waiting_files(&self) -> Vec<(String, u64)> {
        let files = self.tree().files_below(ROOT_INO);
        files
            .into_iter()
            .filter_map(|ino| {
                let content = self.content_of(ino).ok()?;
                // A file locked now is being written or uploaded; uploads report themselves.
                let state = content.try_lock().ok()?;
                let size = state.staged.as_ref().filter(|_| state.dirty)?.len();
                drop(state);
                let local_only = self
                    .tree()
                    .get(ino)
                    .and_then(|node| node.file())
                    .is_none_or(|file| file.local_only);
                (!local_only).then(|| (self.mount_path(ino), size))
            })
            .collect()
    }

    fn memory(&self) -> Usage {
        let budget = self.blocks.budget();
        Usage {
            used: budget.used(),
            limit: budget.limit(),
        }
    }

    fn rate_limit(&self) -> Option<RateLimitState> {
        self.remote.rate_limit()
    }

    fn disk_cache(&self) -> Option<Usage> {
        self.blocks
            .disk_use()
            .map(|(used, limit)| Usage { used, limit })
    }
}
