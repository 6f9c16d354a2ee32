//! What `sessionfs status` asks the core: files with local changes not uploaded yet, and the
//! caches' use against their limits ([`MountView`]).

use super::SessionFs;
use super::tree::{Ino, ROOT_INO};
use crate::remote::{RateLimitState, Remote};
use crate::status::report::{MountView, Usage};

impl<R: Remote + ?Sized> SessionFs<R> {
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

impl<R: Remote + ?Sized> MountView for SessionFs<R> {
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
