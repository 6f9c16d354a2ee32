//! The bytes one staging directory holds, so `--max-staged` can cap them: every staging file
//! charges its length here while it exists, and a write that would go past the cap waits for
//! other files' uploads to release theirs.
//!
//! Invariant: [`StagedBytes::used`] is the sum of the lengths of the live staging files made
//! through one `StagingArea` (a file kept for the next mount stops counting when kept).
//!
//! Without `--max-staged` the staging file system itself is the budget: a write that would
//! leave less than [`default_reserve`] of it free waits the same way, then fails with ENOSPC,
//! so a mount fills its disk no more than a cap would ([`StagedBytes::room_on_disk`]).

use std::io;
use std::path::Path;
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

    /// Without a cap: waits until writing `need` more bytes into the staging directory `dir`
    /// leaves at least [`default_reserve`] of its file system free, for at most `wait`; `own`
    /// is what the writing file holds already. Returns what is short when it does not fit: at
    /// once if nothing else is staged (no upload can free room), else once `wait` is over. A
    /// file system that cannot be asked (`statvfs` fails) counts as having room.
    pub async fn room_on_disk(
        &self,
        dir: &Path,
        need: u64,
        own: u64,
        wait: Duration,
    ) -> Option<DiskShort> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let released = self.0.released.notified();
            let short = disk_short(dir, need)?;
            if self.used() <= own {
                return Some(short);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return disk_short(dir, need);
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

/// Without `--max-staged`, the free space a write must leave on the staging file system: 5% of
/// it, at most 1 GiB (so a large disk is not held back by more than a GiB, and a small one
/// keeps a twentieth for everything else on it).
pub fn default_reserve(total: u64) -> u64 {
    (total / 20).min(DEFAULT_RESERVE_MAX)
}

/// The most [`default_reserve`] keeps free.
pub const DEFAULT_RESERVE_MAX: u64 = 1 << 30;

/// A write that does not fit on the staging file system: what it had and what it needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskShort {
    /// Bytes free (for an unprivileged user) on the staging file system.
    pub free: u64,
    /// Bytes the write could add.
    pub need: u64,
    /// What must stay free ([`default_reserve`]).
    pub reserve: u64,
}

/// `Some` when writing `need` bytes into `dir` would leave less than [`default_reserve`] free.
fn disk_short(dir: &Path, need: u64) -> Option<DiskShort> {
    let (free, total) = match disk_space(dir) {
        Ok(space) => space,
        Err(err) => {
            log::debug!("cannot ask {} for its free space: {err}", dir.display());
            return None;
        }
    };
    let reserve = default_reserve(total);
    (free.saturating_sub(need) < reserve).then_some(DiskShort {
        free,
        need,
        reserve,
    })
}

/// Bytes free to an unprivileged user, and the size, of the file system holding `dir`.
pub fn disk_space(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type, filled on success.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    let unit = stat.f_frsize;
    Ok((
        stat.f_bavail.saturating_mul(unit),
        stat.f_blocks.saturating_mul(unit),
    ))
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

    #[test]
    fn the_default_reserve_is_a_twentieth_of_the_disk_up_to_a_gib() {
        assert_eq!(default_reserve(10 << 30), 512 << 20);
        assert_eq!(default_reserve(20 << 30), 1 << 30);
        assert_eq!(default_reserve(2 << 40), 1 << 30);
        assert_eq!(default_reserve(0), 0);
    }

    #[tokio::test]
    async fn without_a_cap_a_write_that_would_eat_the_reserve_fails_at_once_when_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = disk_space(dir.path()).unwrap();
        assert!(total > 0 && free <= total);
        let reserve = default_reserve(total);
        let total_bytes = StagedBytes::default();
        let mut own = total_bytes.charge();
        own.set(100);
        let wait = Duration::from_secs(3600);
        // Small writes fit (this test needs the disk to have its reserve and 1 MiB free).
        if free > reserve + (1 << 20) {
            assert_eq!(
                total_bytes.room_on_disk(dir.path(), 4096, 100, wait).await,
                None
            );
        }
        // A write as large as what is free would leave less than the reserve: with only the
        // writer's own bytes staged, nothing can free room, so no wait.
        let short = total_bytes
            .room_on_disk(dir.path(), free, 100, wait)
            .await
            .expect("refused");
        assert_eq!(short.need, free);
        assert_eq!(short.reserve, reserve);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_cap_a_write_waits_for_other_uploads_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = disk_space(dir.path()).unwrap();
        let total = StagedBytes::default();
        let mut other = total.charge();
        other.set(900);
        let started = tokio::time::Instant::now();
        assert!(
            total
                .room_on_disk(dir.path(), free, 0, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5), "it waited");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_fits_gives_up_after_the_wait() {
        let total = StagedBytes::default();
        let mut other = total.charge();
        other.set(900);
        assert!(!total.room_for(200, 0, 1000, Duration::from_secs(5)).await);
    }
}
