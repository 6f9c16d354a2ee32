//! The steps of `sessionfs mount` before the kernel mount: reaching the remote (or starting the
//! embedded emulator) and checking it at once, finishing what an earlier mount left (directory
//! renames, journaled uploads), the core's config from the options, and the status socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::staging::StagingDir;
use super::{MOUNT_CHECK_DEADLINE, RunError, remote_config};
use crate::cli::{self, MountArgs};
use crate::emulator::{EmulatorConfig, RunningEmulator};
use crate::fs::attrs::MetaStore;
use crate::fs::scratch::ScratchPatterns;
use crate::fs::{FsConfig, SessionFs, container_at, finish_dir_renames};
use crate::remote::observe::RequestStats;
use crate::remote::scoped::OneContainer;
use crate::remote::{Remote, RemoteConfig, RemoteError};
use crate::status::report::MountInfo;
use crate::status::server::StatusServer;
use crate::write::StagingArea;
use crate::write::journal::{self, Journal};

/// A remote that answered: its client, and the embedded emulator serving it if there is one.
pub struct Connected {
    /// The embedded emulator, when the mount has no `--endpoint`.
    pub emulator: Option<RunningEmulator>,
    /// Said after "mounted ... on MNT": where the embedded emulator keeps its data.
    pub data_note: String,
    /// Names the remote for its staging directory (the embedded emulator's port changes every
    /// run, so its data directory names it instead; one container is a remote of its own).
    pub identity: String,
    /// The client's config, endpoint included.
    pub client: RemoteConfig,
    /// The client, scoped to one container for `NAME:SUBDIR`.
    pub remote: Arc<dyn Remote>,
}

/// Starts the embedded emulator when there is no endpoint, connects the client (counting into
/// `requests`) and checks the remote with one call that retries only briefly, so a wrong
/// endpoint or key fails the mount at once rather than after the retry deadline that rides
/// out outages of a running mount.
pub fn connect(
    args: &MountArgs,
    runtime: &tokio::runtime::Runtime,
    requests: &RequestStats,
) -> Result<Connected, RunError> {
    let mut client = remote_config(args)?;
    client.retry.requests = requests.clone();
    let (emulator, data_note, identity) = match &args.endpoint {
        Some(endpoint) => (None, String::new(), endpoint.clone()),
        None => {
            let data_dir = args
                .data
                .clone()
                .unwrap_or_else(|| cli::default_data_dir(args.backend));
            let mut config = EmulatorConfig::new(&data_dir);
            args.backend.embed(&mut config, &mut client);
            let server = runtime
                .block_on(args.backend.spawn_emulator(config))
                .map_err(|err| format!("cannot start the embedded emulator: {err}"))?;
            client.endpoint = server.endpoint();
            let note = format!(", embedded emulator data in {}", data_dir.display());
            let identity = format!("embedded:{}", data_dir.display());
            (Some(server), note, identity)
        }
    };
    let mut probe = client.clone();
    probe.retry.deadline = probe.retry.deadline.min(MOUNT_CHECK_DEADLINE);
    let probe = args.backend.connect(&probe).map_err(|err| err.message)?;
    let mut remote = args.backend.connect(&client).map_err(|err| err.message)?;
    let nothing = |err: RemoteError| format!("{}; nothing was mounted", err.message);
    match &args.container {
        // Finding the container is the probe.
        Some(path) => {
            let container = runtime
                .block_on(container_at(&*probe, path))
                .map_err(nothing)?;
            remote = Arc::new(OneContainer::new(remote, container, path));
        }
        None => {
            runtime.block_on(probe.list_containers()).map_err(nothing)?;
        }
    }
    // One container's pending files are its own: their journal names no container.
    let identity = match &args.container {
        Some(path) => format!("{identity}:{path}"),
        None => identity,
    };
    Ok(Connected {
        emulator,
        data_note,
        identity,
        client,
        remote,
    })
}

/// What finishing an earlier mount's work leaves for this one.
pub struct Recovered {
    /// The metadata store, when this mount owns the staging directory (a second mount of the
    /// same remote keeps attributes in memory only: the store is one process's at a time).
    pub meta_store: Option<PathBuf>,
    /// Where content no program ever committed is kept, named like the staging directory.
    pub recovery_dir: PathBuf,
}

/// Finishes what an earlier mount of this remote left: its recorded directory renames first
/// (the pending uploads' records then name the paths the renames gave them), then its
/// journaled uploads.
pub fn recover(
    runtime: &tokio::runtime::Runtime,
    remote: &dyn Remote,
    staging: &StagingDir,
    cache_dir: &Path,
) -> Result<Recovered, RunError> {
    let staging_dir = &staging.path;
    let named_like_staging = staging_dir.file_name().unwrap_or_default();
    let meta_store = staging.replay.then(|| {
        cache_dir
            .join("metadata")
            .join(named_like_staging)
            .with_extension("redb")
    });
    if let Some(path) = &meta_store {
        let store = MetaStore::open(path)
            .inspect_err(|err| log::warn!("{err}"))
            .ok();
        runtime.block_on(finish_dir_renames(remote, staging_dir, store.as_ref()))?;
    }
    let recovery_dir = cache_dir.join("recovery").join(named_like_staging);
    if staging.replay {
        let journal = Journal::open(staging_dir).map_err(|err| err.to_string())?;
        let area = StagingArea::new(staging_dir).map_err(|err| err.to_string())?;
        match runtime.block_on(journal::replay(&journal, &area, remote, &recovery_dir)) {
            Ok(done) if done == journal::Replayed::default() => {}
            Ok(done) => log::info!(
                "files left by an earlier mount: {} uploaded, {} still pending, {} never \
                 committed and kept in {}",
                done.uploaded,
                done.failed,
                done.recovered,
                recovery_dir.display()
            ),
            Err(err) => log::error!(
                "cannot read the journal in {}: {err}",
                staging_dir.display()
            ),
        }
    }
    Ok(Recovered {
        meta_store,
        recovery_dir,
    })
}

/// The core's config from the mount options.
pub fn core_config(
    args: &MountArgs,
    staging_dir: &Path,
    cache_dir: &Path,
    meta_store: Option<PathBuf>,
) -> FsConfig {
    let mut config = FsConfig::new(staging_dir);
    config.metadata_ttl = args.metadata_ttl;
    config.read_only = args.read_only;
    config.xattrs = args.xattrs;
    config.file_mode = args.file_mode;
    config.dir_mode = args.dir_mode;
    config.uid = args.uid.unwrap_or(config.uid);
    config.gid = args.gid.unwrap_or(config.gid);
    config.force_uid = args.uid;
    config.force_gid = args.gid;
    config.meta_store = meta_store;
    config.max_dir_rename = args.max_dir_rename;
    config.cache.memory_limit = args.memory_limit.as_u64();
    config.write_back = args.write_back;
    config.max_staged = args.max_staged.map(|size| size.as_u64());
    if args.cache_size.as_u64() > 0 {
        let blocks_dir = cache_dir.join(format!("blocks-{}", std::process::id()));
        config.cache.disk = Some((blocks_dir, args.cache_size.as_u64()));
    }
    if let Some(patterns) = &args.local_only {
        config.scratch =
            ScratchPatterns::new(patterns.iter().filter(|p| !p.is_empty()).cloned().collect());
    }
    config
}

/// Serves `sessionfs status` for this mount on its socket; without one the mount goes on and
/// says that `status` will not see it.
pub fn serve_status(
    runtime: &tokio::runtime::Runtime,
    info: MountInfo,
    fs: Arc<SessionFs>,
) -> Option<StatusServer> {
    let _runtime = runtime.enter();
    StatusServer::start(info, fs)
        .inspect_err(|err| {
            log::warn!(
                "cannot serve the status socket in {} ({err}); `sessionfs status` will not see \
                 this mount",
                crate::status::server::socket_dir().display()
            )
        })
        .ok()
}
