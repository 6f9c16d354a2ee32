//! `sessionfs status [MNT] [--json]` and `sessionfs unmount MNT [--timeout DUR]`: the client
//! side of the mounts' status sockets.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::report::Report;
use super::server::{self, Message};

/// How long a mount may take to answer `status`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Without a terminal, the drain's progress is printed every this many seconds.
const QUIET_PROGRESS_EVERY: u32 = 10;

/// A running mount: its socket and its report.
struct Found {
    socket: PathBuf,
    report: Report,
}

/// Every mount with a socket in `server::socket_dir`, sockets of dead mounts removed.
fn running_mounts() -> Vec<Found> {
    let dir = server::socket_dir();
    server::remove_stale(&dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sock"))
        .filter_map(|socket| {
            ask_status(&socket)
                .inspect_err(|err| log::debug!("{}: {err}", socket.display()))
                .ok()
                .map(|report| Found { socket, report })
        })
        .collect();
    found.sort_by(|a, b| a.report.mountpoint.cmp(&b.report.mountpoint));
    found
}

fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(stream)
}

fn ask_status(socket: &Path) -> std::io::Result<Report> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(b"status\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

/// The mount at `mountpoint`, or an error saying there is none. Right after `umount` and a
/// new mount on the same path, the old process still answers while it finishes: the mount
/// serving the path is one not draining, the newest of them (its socket made last).
fn mount_at(mountpoint: &Path) -> Result<Found, String> {
    let wanted = std::fs::canonicalize(mountpoint)
        .map_err(|err| format!("{}: {err}", mountpoint.display()))?;
    let made = |found: &Found| {
        std::fs::metadata(&found.socket)
            .and_then(|m| m.modified())
            .ok()
    };
    running_mounts()
        .into_iter()
        .filter(|found| Path::new(&found.report.mountpoint) == wanted)
        .min_by_key(|found| (found.report.draining, std::cmp::Reverse(made(found))))
        .ok_or_else(|| {
            format!(
                "no running sessionfs mount of this user at {} (its socket would be in {})",
                wanted.display(),
                server::socket_dir().display()
            )
        })
}

/// `sessionfs status`: the report of the mount at `mountpoint`, or of every mount of this
/// user; as text, or as JSON (an object for one mount point, else an array).
pub fn status(mountpoint: Option<&Path>, json: bool) -> Result<(), String> {
    let reports: Vec<Report> = match mountpoint {
        Some(mountpoint) => vec![mount_at(mountpoint)?.report],
        None => running_mounts()
            .into_iter()
            .map(|found| found.report)
            .collect(),
    };
    let out = match (json, mountpoint) {
        (true, Some(_)) => serde_json::to_string_pretty(&reports[0]),
        (true, None) => serde_json::to_string_pretty(&reports),
        (false, _) if reports.is_empty() => Ok("no sessionfs mounts running".to_string()),
        (false, _) => Ok(reports
            .iter()
            .map(Report::text)
            .collect::<Vec<_>>()
            .join("\n")),
    }
    .map_err(|err| err.to_string())?;
    println!("{}", out.trim_end());
    Ok(())
}

/// `sessionfs unmount`: asks the mount at `mountpoint` to upload what is pending (for at most
/// `timeout`) and unmount, printing the progress to stderr (every second on a terminal);
/// returns how many files stay pending. A mount without a socket is unmounted plainly.
pub fn unmount(mountpoint: &Path, timeout: Option<Duration>) -> Result<usize, String> {
    let found = match mount_at(mountpoint) {
        Ok(found) => found,
        Err(_) => return crate::run::unmount(mountpoint).map(|()| 0),
    };
    let talk = || -> std::io::Result<Option<usize>> {
        let mut stream = connect(&found.socket)?;
        let request = match timeout {
            Some(timeout) => format!("unmount {}\n", timeout.as_millis()),
            None => "unmount\n".to_string(),
        };
        stream.write_all(request.as_bytes())?;
        let terminal = std::io::stderr().is_terminal();
        let mut lines = 0u32;
        for line in BufReader::new(stream).lines() {
            match serde_json::from_str::<Message>(&line?).map_err(std::io::Error::other)? {
                Message::Progress(report) => {
                    if !report.pending.is_empty()
                        && (terminal || lines.is_multiple_of(QUIET_PROGRESS_EVERY))
                    {
                        eprintln!("{}", report.drain_line());
                    }
                    lines += 1;
                }
                Message::Done { kept } => return Ok(Some(kept)),
            }
        }
        Ok(None)
    };
    match talk() {
        Ok(Some(kept)) => Ok(kept),
        Ok(None) => Err(format!(
            "the mount at {} ended without saying whether everything was uploaded; see its log",
            found.report.mountpoint
        )),
        Err(err) => Err(format!(
            "cannot ask the mount at {} to unmount: {err}",
            found.report.mountpoint
        )),
    }
}
