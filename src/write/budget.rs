//! The bytes one staging directory holds, so `--max-staged` can cap them: every staging file
//! charges its length here while it exists, and a write that would go past the cap waits for
//! other files' uploads to release theirs.
//!
//! Invariant: [`StagedBytes::used`] is the sum of the lengths of the live staging files made
//! through one `StagingArea` (a file kept for the next mount stops counting when kept).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The running total of staged bytes, shared by a staging area and its files.
#[derive(Clone, Debug, Default)]
pub struct StagedBytes(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    used: AtomicU64,
    released: Notify,
}

impl StagedBytes {
    /// Bytes staged now.
    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::SeqCst)
    }

    /// Waits until `growth` more bytes fit under `cap`, for at most `wait`; `own` is what the
    /// writing file holds already, which no other upload can release. Returns false when they
    /// do not fit: at once if nothing else is staged, else once `wait` is over.
    pub async fn room_for(&self, growth: u64, own: u64, cap: u64, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so a release in between is not missed.
            let released = self.0.released.notified();
            let used = self.used();
            if used.saturating_add(growth) <= cap {
                return true;
            }
            if used <= own {
                return false;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.used().saturating_add(growth) <= cap;
            }
        }
    }

    /// A charge of zero bytes, grown and shrunk with its file.
    pub(super) fn charge(&self) -> Charge {
        Charge {
            total: self.clone(),
            bytes: 0,
        }
    }
}

/// One staging file's share of [`StagedBytes`], given back when it is dropped.
#[derive(Debug)]
pub(super) struct Charge {
    total: StagedBytes,
    bytes: u64,
}

impl Charge {
    /// The file is now `len` bytes long.
    pub(super) fn set(&mut self, len: u64) {
        if len > self.bytes {
            self.total
                .0
                .used
                .fetch_add(len - self.bytes, Ordering::SeqCst);
        } else if len < self.bytes {
            self.total
                .0
                .used
                .fetch_sub(self.bytes - len, Ordering::SeqCst);
            self.total.0.released.notify_waiters();
        }
        self.bytes = len;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_waits_for_another_file_to_go_and_gives_up_alone() {
        let total = StagedBytes::default();
        let mut other = total.charge();
        other.set(600);
        let mut own = total.charge();
        own.set(300);
        assert_eq!(total.used(), 900);
        // Nothing but the writer's own bytes could ever leave: no wait.
        let alone = StagedBytes::default();
        let mut only = alone.charge();
        only.set(900);
        assert!(
            !alone
                .room_for(200, 900, 1000, Duration::from_secs(3600))
                .await
        );
        // Another file's bytes leave while the writer waits.
        let waiting = {
            let total = total.clone();
            tokio::spawn(async move {
                total
                    .room_for(200, 300, 1000, Duration::from_secs(60))
                    .await
            })
        };
        tokio::task::yield_now().await;
        drop(other);
        assert!(waiting.await.unwrap());
        assert_eq!(total.used(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_fits_gives_up_after_the_wait() {
        let total = StagedBytes::default();
        let mut other = total.charge();
        other.set(900);
        assert!(!total.room_for(200, 0, 1000, Duration::from_secs(5)).await);
    }
}
