//! `mount --daemon`: the same command again in the background, which says when it is ready
//! through a socket it inherits; the foreground process returns then (or prints the log of a
//! mount that failed).

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::RunError;
use super::mountpoint::prepare_mountpoint;
use crate::cli::{self, MountArgs};

/// The environment variable that hands the background mount its end of the readiness socket.
const READY_FD_ENV: &str = "SESSIONFS_READY_FD";

/// How long `--daemon` waits for the background mount to be ready.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `sessionfs mount --daemon`: starts the same command without `--daemon` in a new session,
/// its output in a log file, and returns once it says the mount is ready (or prints the log
/// and fails if the process ends first).
pub fn daemonize(args: &MountArgs) -> Result<(), RunError> {
    use std::os::unix::process::CommandExt;
    let mountpoint = prepare_mountpoint(&args.mountpoint)?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(cli::default_cache_dir);
    fs::create_dir_all(&cache_dir).map_err(|err| format!("{}: {err}", cache_dir.display()))?;
    let argv: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|arg| arg != "--daemon")
        .collect();
    let exe =
        std::env::current_exe().map_err(|err| format!("cannot find sessionfs itself: {err}"))?;
    let log_path = args
        .log_file
        .clone()
        .unwrap_or_else(|| cache_dir.join(format!("sessionfs-{}.log", std::process::id())));
    // Appended to, as the mount itself does with --log-file; a failure shows what this run
    // added.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|err| format!("cannot open the log file {}: {err}", log_path.display()))?;
    let log_start = log.metadata().map_or(0, |meta| meta.len());
    // The child's end stays open across exec; the child writes to it once the mount answers.
    let (mut ready, child_end) =
        UnixStream::pair().map_err(|err| format!("cannot start the mount: {err}"))?;
    let child_fd = child_end.as_raw_fd();
    let mut command = std::process::Command::new(exe);
    command
        .args(argv)
        .env(READY_FD_ENV, child_fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|err| err.to_string())?)
        .stderr(log);
    // SAFETY: between fork and exec this only detaches the child from our terminal and keeps
    // its end of the socket open across exec; neither touches memory.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            if libc::fcntl(child_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start the mount: {err}"))?;
    drop(child_end);
    ready
        .set_read_timeout(Some(DAEMON_READY_TIMEOUT))
        .map_err(|err| err.to_string())?;
    let mut answer = [0u8; 8];
    match ready.read(&mut answer) {
        Ok(n) if n > 0 => {
            println!(
                "mounted on {} in the background (pid {}, log {}); stop with `sessionfs \
                 unmount {}`",
                mountpoint.display(),
                child.id(),
                log_path.display(),
                mountpoint.display()
            );
            Ok(())
        }
        // The socket closed without a word: the mount ended before it was ready.
        Ok(_) => {
            let status = child.wait().map_err(|err| err.to_string())?;
            let log = fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
            Err(format!("the mount ended ({status}):\n{}", log.trim_end()))
        }
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!(
                "the mount was not ready after {DAEMON_READY_TIMEOUT:?}; see {}",
                log_path.display()
            ))
        }
        Err(err) => Err(format!("cannot hear from the mount: {err}")),
    }
}

/// Tells the process that started this one with `--daemon` that the mount is ready. Does
/// nothing when this process was not started that way.
pub fn notify_ready() {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|fd| fd.parse::<i32>().ok())
    else {
        return;
    };
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: the parent passed this descriptor, open, for us alone (see `daemonize`), and
    // `TAKEN` makes sure it is taken over only once.
    let mut ready = unsafe { UnixStream::from_raw_fd(fd) };
    if let Err(err) = std::io::Write::write_all(&mut ready, b"ready") {
        log::warn!("cannot tell the starting process that the mount is ready: {err}");
    }
}
