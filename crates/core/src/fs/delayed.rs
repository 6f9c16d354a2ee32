//! Delayed uploads (`--write-back DELAY`): a close returns once the file's content is staged
//! and committed in the journal, and the upload starts DELAY later, several at a time. A
//! directory made with `mkdir` waits the same way for its marker object.
//!
//! rclone's `--vfs-write-back` is the model. A file closed again before its upload starts is
//! due DELAY after its last close and uploaded once. An fsync still uploads at once and
//! returns the upload's error; the unmount drain uploads whatever is still waiting; a crash
//! leaves committed journal records, which the next mount uploads. A file written again after
//! its close (so its live copy is no longer what was committed) is skipped: its next close
//! schedules it again, and until then its committed bytes are safe in the journal's snapshot.
//!
//! Invariants: the queue holds each file once (the map is keyed by inode), so it is bounded
//! by the files with staged copies; at most [`UPLOADS_IN_FLIGHT`] delayed uploads run at once;
//! the worker holds the filesystem only weakly, so it ends when the filesystem is dropped.

use sessionfs_io::lock::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::SessionFs;
use super::tree::Ino;

/// Delayed uploads in flight at once.
pub const UPLOADS_IN_FLIGHT: usize = 8;
/// How long a failed delayed upload waits before it is tried again (its own retries within
/// the retry deadline came first).
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Longest sleep of the worker between two looks at whether the filesystem still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The files waiting for their delayed upload, and when each is due.
pub(super) struct Delayed {
    delay: Duration,
    due: Mutex<HashMap<Ino, Instant>>,
    wake: Notify,
}

impl Delayed {
    /// A queue whose uploads start `delay` after the last close.
    pub(super) fn new(delay: Duration) -> Self {
        Self {
            delay,
            due: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    fn due(&self) -> std::sync::MutexGuard<'_, HashMap<Ino, Instant>> {
        self.due.locked()
    }

    /// `ino` was closed: its upload is due `delay` from now (later than any earlier schedule).
    pub(super) fn schedule(&self, ino: Ino) {
        self.due_in(ino, self.delay);
    }

    fn due_in(&self, ino: Ino, after: Duration) {
        self.due().insert(ino, Instant::now() + after);
        self.wake.notify_one();
    }

    /// Files waiting for their delayed upload.
    pub(super) fn waiting(&self) -> usize {
        self.due().len()
    }

    /// Takes every waiting inode at once (the unmount drain).
    fn take_all(&self) -> Vec<Ino> {
        self.due().drain().map(|(ino, _)| ino).collect()
    }

    /// Takes the files due by `now`; also returns when the next one is due.
    fn take_due(&self, now: Instant) -> (Vec<Ino>, Option<Instant>) {
        let mut due = self.due();
        let ready: Vec<Ino> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in &ready {
            due.remove(ino);
        }
        (ready, due.values().min().copied())
    }
}

impl SessionFs {
    /// Starts the worker that runs delayed uploads on `runtime`; does nothing without
    /// `--write-back`. Call once, after the filesystem is in its `Arc`.
    pub fn start_delayed_uploads(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        if let Some(delayed) = self.delayed.clone() {
            runtime.spawn(run(Arc::downgrade(self), delayed));
        }
    }

    /// Files closed and waiting for their delayed upload (for `status` and the unmount).
    pub fn delayed_uploads_waiting(&self) -> usize {
        self.delayed.as_ref().map_or(0, |delayed| delayed.waiting())
    }

    /// Stores the markers of directories still waiting for their delay, 8 at a time (the
    /// unmount drain; files it uploads itself). Other waiting inodes stay queued.
    pub(super) async fn store_delayed_markers(&self) {
        let Some(delayed) = &self.delayed else { return };
        let waiting = delayed.take_all();
        let (dirs, files): (Vec<Ino>, Vec<Ino>) = waiting
            .into_iter()
            .partition(|&ino| self.dir_of(ino).is_ok());
        for ino in files {
            delayed.schedule(ino);
        }
        futures::stream::iter(dirs)
            .for_each_concurrent(UPLOADS_IN_FLIGHT, |ino| async move {
                if let Err(err) = self.store_marker_of(ino).await {
                    log::warn!(
                        "{}; the empty directory is kept only on this machine",
                        err.message
                    );
                }
            })
            .await;
    }

    /// The delayed upload of `ino` (a directory's marker, or a file if it is still what its
    /// last close committed).
    async fn upload_delayed(&self, ino: Ino, delayed: &Delayed) {
        if self.dir_of(ino).is_ok() {
            if let Err(err) = self.store_marker_of(ino).await {
                log::warn!("{}; tried again in {RETRY_AFTER:?}", err.message);
                delayed.due_in(ino, RETRY_AFTER);
            }
            return;
        }
        let Ok(content) = self.content_of(ino) else {
            return; // removed meanwhile
        };
        let mut state = content.lock().await;
        if !state.dirty || !state.committed {
            return; // uploaded by an fsync, or written again since: its next close schedules it
        }
        match self.upload_locked(ino, &mut state).await {
            Ok(()) => self.drop_staged_if_unused(ino, &mut state),
            // Refused as too large, said once where it was refused: only a change of the file
            // (whose close schedules it again) can help, so it is not tried again on a timer.
            Err(err) if err.errno == libc::EFBIG => {}
            Err(err) => {
                log::warn!(
                    "{}; the delayed upload is tried again in {RETRY_AFTER:?} (the file stays \
                     staged and journaled)",
                    err.message
                );
                delayed.due_in(ino, RETRY_AFTER);
            }
        }
    }
}

async fn run(fs: Weak<SessionFs>, delayed: Arc<Delayed>) {
    let slots = Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT));
    loop {
        let (ready, next) = delayed.take_due(Instant::now());
        for ino in ready {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(fs) = fs.upgrade() else { return };
            let delayed = delayed.clone();
            tokio::spawn(async move {
                fs.upload_delayed(ino, &delayed).await;
                drop(slot);
            });
        }
        let wake_at = next
            .unwrap_or_else(|| Instant::now() + IDLE_CHECK)
            .min(Instant::now() + IDLE_CHECK);
        tokio::select! {
            _ = delayed.wake.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
        if fs.strong_count() == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_file_closed_again_is_due_after_its_last_close_and_taken_once() {
        let queue = Delayed::new(Duration::from_secs(5));
        queue.schedule(7);
        tokio::time::advance(Duration::from_secs(3)).await;
        queue.schedule(7);
        queue.schedule(8);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(queue.take_due(Instant::now()).0, Vec::<Ino>::new());
        assert_eq!(queue.waiting(), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        let (mut ready, next) = queue.take_due(Instant::now());
        ready.sort_unstable();
        assert_eq!((ready, next), (vec![7, 8], None));
        assert_eq!(queue.waiting(), 0);
    }
}
