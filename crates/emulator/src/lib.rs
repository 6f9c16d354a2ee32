//! Faithful emulators of the remote APIs, served with axum on loopback.
//!
//! Each API has one router file (`mix.rs`, ...) that owns its paths, JSON shapes, status codes and
//! error envelopes. What every API shares lives beside them: the on-disk object store
//! (`store.rs`), the fault-injection and network-simulation layer (`faults.rs`), single-range
//! downloads (`ranged.rs`), receiving an upload body under a limit (`body.rs`), and, for the
//! S3-style storage URLs Lightfield and Fluxer hand out, their signing (`presign.rs`) and XML
//! errors (`s3_error.rs`); and [`serve`], which binds a listener and serves a router until the
//! returned handle is shut down.
//!
//! `sessionfs serve` runs one emulator in the foreground; `sessionfs mount` without `--endpoint`
//! runs one inside the mount process, so the README's first command needs nothing else.

pub mod appmixer;
mod body;
pub mod faults;
pub mod fluxer;
pub mod lightfield;
pub mod mix;
mod presign;
pub mod ranged;
mod s3_error;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use faults::{FaultCounts, FaultSpec};

/// Everything `serve` needs to start an emulator; also built by the mount command and tests.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Directory that holds the emulator's objects; survives restarts.
    pub data_dir: PathBuf,
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Injected failures (`--faults`), off by default.
    pub faults: FaultSpec,
    /// Seed for the fault RNG, so a failing fault test can be replayed.
    pub fault_seed: u64,
    /// Where the injected faults are counted; clone it before spawning to read the counts.
    pub fault_counts: std::sync::Arc<FaultCounts>,
    /// Delay added before each response (`--latency`).
    pub latency: Duration,
    /// Per-connection cap on request and response body bytes per second, each way
    /// (`--bandwidth`); `None` = unlimited.
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Largest accepted upload (`--max-upload-size`); `None` = no limit, as the real Mix server.
    pub max_upload_bytes: Option<u64>,
    /// Honour `Range` on downloads (`--no-range` turns it off, as the newest Mix server serves
    /// uploaded files with a plain 200).
    pub serve_ranges: bool,
    /// The one API key an emulator with auth accepts (`--token`); `None` accepts any key of
    /// the API's documented shape (Lightfield: `sk_lf_...`).
    pub token: Option<String>,
    /// Accounts an emulator with user sign-in accepts (Appmixer, `--user EMAIL:PASSWORD`,
    /// repeatable, so tests can have several users); empty makes the emulator generate one.
    pub users: Vec<appmixer::Login>,
    /// Lifetime of the session tokens it issues (`--token-ttl`); short in tests.
    pub token_ttl: Duration,
    /// What only the Fluxer emulator reads (bot token, upload flows, limits, channels).
    pub fluxer: fluxer::FluxerConfig,
}

impl EmulatorConfig {
    /// A config for `dir` on an ephemeral loopback port with no faults and no limits.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            faults: FaultSpec::default(),
            fault_seed: 0,
            fault_counts: Default::default(),
            latency: Duration::ZERO,
            bandwidth_bytes_per_sec: None,
            max_upload_bytes: None,
            serve_ranges: true,
            token: None,
            users: Vec::new(),
            token_ttl: appmixer::DEFAULT_TOKEN_TTL,
            fluxer: fluxer::FluxerConfig::default(),
        }
    }
}

/// A time as ISO-8601 with milliseconds and `Z` (`2026-04-08T12:00:00.000Z`), as JavaScript's
/// `toISOString` writes it and as the Lightfield, Appmixer and Fluxer docs show their times.
pub fn iso_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `bytes` (a digest) as lower-case hex, the form every API here writes md5s and signatures in.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running emulator. Dropping it stops the server.
pub struct RunningEmulator {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningEmulator {
    /// Base URL for clients, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Wraps an emulator's router in the fault and network-simulation layer `config` asks for
/// (`--faults`, `--latency`, `--bandwidth`, ...).
pub fn with_faults(app: axum::Router, config: &EmulatorConfig) -> axum::Router {
    faults::layer(app, config)
}

/// Binds `config.listen` and serves `app` (one emulator's router) on the current tokio runtime
/// until the returned handle is shut down or dropped.
pub async fn serve(app: axum::Router, config: &EmulatorConfig) -> std::io::Result<RunningEmulator> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    // Without TCP_NODELAY the body written after the headers waits for a delayed ACK (about
    // 40 ms per small response), which would make the emulator a poor baseline.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(err) = served {
            log::error!("emulator on {addr} stopped: {err}");
        }
    });
    Ok(RunningEmulator {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}
