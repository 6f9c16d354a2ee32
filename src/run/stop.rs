//! The end of a mount: waiting for what stops it (a signal, `sessionfs unmount`, or an
//! unmount from outside), and the drain of pending uploads with its progress.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use super::RunError;
use super::mountpoint::Mounted;
use crate::fs::SessionFs;
use crate::status::server::StatusServer;

/// Without a terminal, the drain's progress is logged this often.
const QUIET_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What ended the wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT or SIGTERM (no bound), or `sessionfs unmount` (its `--timeout`): drain for at
    /// most the duration, then unmount.
    Drain(Option<Duration>),
    /// Unmounted from outside (`umount`): the kernel ended the session.
    Unmounted,
}

/// Waits for SIGINT or SIGTERM, an unmount request on the status socket, or the mount to end
/// by an external unmount.
pub async fn wait_for_stop(session: &Mounted, status: Option<&StatusServer>) -> Stop {
    let signal = super::wait_for_signal();
    tokio::pin!(signal);
    let request = async {
        match status {
            Some(status) => status.unmount_requested().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(request);
    loop {
        tokio::select! {
            _ = &mut signal => return Stop::Drain(None),
            timeout = &mut request => return Stop::Drain(timeout),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if session.is_finished() {
                    return Stop::Unmounted;
                }
            }
        }
    }
}

/// Uploads every pending file, for at most `timeout`; meanwhile the files and bytes left go
/// to stderr every second when it is a terminal, else to the log every ten seconds.
pub async fn drain(
    fs: &SessionFs,
    status: Option<&StatusServer>,
    timeout: Option<Duration>,
    staging_dir: &Path,
) {
    let progress = async {
        let Some(status) = status else {
            return std::future::pending().await;
        };
        let terminal = std::io::stderr().is_terminal();
        let mut ticks = tokio::time::interval(match terminal {
            true => crate::status::server::PROGRESS_EVERY,
            false => QUIET_PROGRESS_EVERY,
        });
        loop {
            ticks.tick().await;
            let report = status.report();
            match (report.pending.is_empty(), terminal) {
                (true, _) => {}
                (false, true) => eprintln!("{}", report.drain_line()),
                (false, false) => log::info!("{}", report.drain_line()),
            }
        }
    };
    let bounded = async {
        match timeout {
            Some(timeout) => tokio::time::timeout(timeout, fs.drain()).await.ok(),
            None => Some(fs.drain().await),
        }
    };
    let drained = tokio::select! {
        drained = bounded => drained,
        () = progress => return,
    };
    match drained {
        Some(Ok(n)) if n > 0 => log::info!("uploaded {n} pending file(s)"),
        Some(Ok(_)) => {}
        Some(Err(err)) => log::error!(
            "{}; the staged copies stay in {}",
            err.message,
            staging_dir.display()
        ),
        None => log::error!(
            "stopped waiting for uploads after {} (--timeout); what is left stays in {} and \
             the next mount of this remote uploads it",
            humantime::format_duration(timeout.unwrap_or_default()),
            staging_dir.display()
        ),
    }
}

/// Waits for what ends the mount, then: on a signal or `sessionfs unmount`, uploads what is
/// pending (bounded by its `--timeout`) and unmounts our mount; after an unmount from outside,
/// leaves the path alone (a new mount may be there already). A failed unmount is returned for
/// the caller to report once what is pending is kept for the next mount.
pub fn serve_until_stopped(
    runtime: &tokio::runtime::Runtime,
    fs: &SessionFs,
    mounted: Mounted,
    status: Option<&StatusServer>,
    staging_dir: &Path,
) -> Result<(), RunError> {
    let stopped = runtime.block_on(wait_for_stop(&mounted, status));
    super::systemd::stopping();
    if let Some(status) = status {
        status.set_draining();
    }
    match stopped {
        Stop::Drain(timeout) => {
            log::info!("unmounting: uploading pending files first");
            runtime.block_on(drain(fs, status, timeout, staging_dir));
            mounted.unmount()
        }
        Stop::Unmounted => {
            mounted.finish_unmounted();
            Ok(())
        }
    }
}
