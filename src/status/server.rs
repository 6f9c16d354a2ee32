//! The mount's status socket: `<pid>.sock` in [`socket_dir`], one per mount, so `status`
//! without a mount point finds every sessionfs mount of this user. It answers one request per
//! connection, a line: `status` (one JSON [`Report`] line back) or `unmount [MILLIS]` (the
//! mount drains and unmounts, at most MILLIS waiting for uploads; a [`Message::Progress`] line
//! every second, then [`Message::Done`]).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use super::report::{MountInfo, Report};
use crate::fs::MountView;

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an `unmount` connection is told the drain's progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One line the mount sends on an `unmount` connection.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Where the drain is.
    Progress(Box<Report>),
    /// Unmounted; `kept` files could not be uploaded and stay journaled for the next mount.
    Done {
        /// Files left pending.
        kept: usize,
    },
}

/// Where mounts put their sockets: `$SESSIONFS_RUNTIME_DIR` if set; for root `/run/sessionfs`
/// (the same for a root shell, mount(8) and a systemd unit, whatever their environment);
/// else `$XDG_RUNTIME_DIR/sessionfs`, else `/run/user/UID/sessionfs` where that exists, else
/// `run/` under the default cache directory.
pub fn socket_dir() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|dir| !dir.is_empty());
    if let Some(dir) = set("SESSIONFS_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        return PathBuf::from("/run/sessionfs");
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("sessionfs");
    }
    let user_run = PathBuf::from(format!("/run/user/{uid}"));
    if user_run.is_dir() {
        return user_run.join("sessionfs");
    }
    crate::cli::default_cache_dir().join("run")
}

struct Shared {
    info: MountInfo,
    view: Arc<dyn MountView>,
    draining: watch::Sender<bool>,
    done: watch::Sender<Option<usize>>,
    unmount: mpsc::Sender<Option<Duration>>,
}

impl Shared {
    fn report(&self) -> Report {
        self.info.report(&*self.view, *self.draining.borrow())
    }
}

/// The running socket; removed when dropped.
pub struct StatusServer {
    path: PathBuf,
    shared: Arc<Shared>,
    unmount: tokio::sync::Mutex<mpsc::Receiver<Option<Duration>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    /// Binds this process's socket and serves it on the current tokio runtime. Sockets of
    /// mounts that are gone are removed first.
    pub fn start(info: MountInfo, view: Arc<dyn MountView>) -> std::io::Result<Self> {
        let dir = socket_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        remove_stale(&dir);
        let path = dir.join(format!("{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let (unmount_tx, unmount_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            info,
            view,
            draining: watch::channel(false).0,
            done: watch::channel(None).0,
            unmount: unmount_tx,
        });
        let served = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, served.clone()));
            }
        });
        Ok(Self {
            path,
            shared,
            unmount: tokio::sync::Mutex::new(unmount_rx),
            task,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for an `unmount` request; its answer is how long the drain may take.
    pub async fn unmount_requested(&self) -> Option<Duration> {
        self.unmount.lock().await.recv().await.flatten()
    }

    /// The report now.
    pub fn report(&self) -> Report {
        self.shared.report()
    }

    /// The drain has started: reports say so.
    pub fn set_draining(&self) {
        self.shared.draining.send_replace(true);
    }

    /// Unmounted with `kept` files left pending: `unmount` clients get their answer, and
    /// this returns once they have it (or after [`REQUEST_TIMEOUT`]).
    pub async fn finished(&self, kept: usize) {
        self.shared.done.send_replace(Some(kept));
        let waiting = tokio::time::Instant::now();
        // Each `unmount` connection holds a receiver until it has sent its answer.
        while self.shared.done.receiver_count() > 0 && waiting.elapsed() < REQUEST_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the sockets in `dir` that nobody listens on (their mount died).
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "sock")
            && std::os::unix::net::UnixStream::connect(&path)
                .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

async fn answer(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut read = BufReader::new(read);
    if !matches!(
        tokio::time::timeout(REQUEST_TIMEOUT, read.read_line(&mut line)).await,
        Ok(Ok(n)) if n > 0
    ) {
        return;
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("status"), None) => {
            let _ = send(&mut write, &shared.report()).await;
        }
        (Some("unmount"), timeout) => {
            let timeout = timeout
                .and_then(|millis| millis.parse().ok())
                .map(Duration::from_millis);
            // A second request while one is queued is the same unmount.
            let _ = shared.unmount.try_send(timeout);
            let mut done = shared.done.subscribe();
            loop {
                let kept = *done.borrow_and_update();
                if let Some(kept) = kept {
                    let _ = send(&mut write, &Message::Done { kept }).await;
                    return;
                }
                if send(&mut write, &Message::Progress(Box::new(shared.report())))
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::time::timeout(PROGRESS_EVERY, done.changed()).await;
            }
        }
        _ => {
            let _ = write.write_all(b"{\"error\":\"unknown request\"}\n").await;
        }
    }
}

async fn send<T: serde::Serialize>(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    value: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}
