//! The mount lifecycle: check the mount point, start the embedded emulator when there is no
//! endpoint, mount, wait for a signal or an external unmount, drain uploads, unmount.

mod daemon;
mod mount_helper;
mod mountinfo;
mod mountpoint;
mod readahead;
mod setup;
mod staging;
mod stop;
mod systemd;

use std::sync::Arc;
use std::time::Duration;

use crate::cli::config::{ConfigFile, read_secret_file};
use crate::cli::{self, MountArgs, ServeArgs};
use crate::emulator::EmulatorConfig;
use crate::fs::SessionFs;
use crate::remote::RemoteConfig;
use crate::remote::observe::{RequestStats, UploadProgress};
use crate::status::report::{MountInfo, redact_endpoint};
pub use daemon::daemonize;
pub use mount_helper::{HELPER_NAMES, run as mount_helper};
pub use mountpoint::{
    MountOptions, Mounted, lazy_unmount, mount as mount_core, prepare_mountpoint, unmount,
};
use staging::StagingDir;

/// How long the check at mount time retries an unreachable or failing server.
const MOUNT_CHECK_DEADLINE: Duration = Duration::from_secs(5);

/// A failure that ends the command with a message and a non-zero exit.
pub type RunError = String;

fn runtime() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sessionfs-io")
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))
}

/// `sessionfs serve`: runs one emulator until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<(), RunError> {
    let data_dir = args
        .data
        .unwrap_or_else(|| cli::default_data_dir(args.backend));
    let mut config = EmulatorConfig::new(&data_dir);
    config.listen = args.listen;
    config.faults = args.faults;
    config.fault_seed = args.fault_seed;
    config.latency = args.latency;
    config.bandwidth_bytes_per_sec = args.bandwidth.map(|b| b.as_u64());
    config.max_upload_bytes = args.max_upload_size.map(|b| b.as_u64());
    config.serve_ranges = !args.no_range;
    config.token = args.token;
    config.users = args.users;
    config.token_ttl = args.token_ttl;
    config.fluxer.bot_token = args.bot_token;
    config.fluxer.uploads = args.uploads;
    config.fluxer.max_attachment_bytes = args.max_attachment_size.map(|b| b.as_u64());
    config.fluxer.rate_limits = !args.no_rate_limits;
    config.fluxer.channels = args.channels;
    config.fluxer.upload_ttl = args.upload_ttl;
    let runtime = runtime()?;
    runtime.block_on(async {
        let server = args
            .backend
            .spawn_emulator(config)
            .await
            .map_err(|err| format!("cannot serve on {}: {err}", args.listen))?;
        println!(
            "serving the {} emulator on {} with data in {}",
            args.backend,
            server.endpoint(),
            data_dir.display()
        );
        wait_for_signal().await;
        server.shutdown().await;
        Ok(())
    })
}

/// `sessionfs mount`: mounts and stays in the foreground until unmounted or signalled.
pub fn mount(args: MountArgs) -> Result<(), RunError> {
    if args.options.iter().any(|word| word == "remount") {
        // `sessionfs mount -o remount,ro MNT`, as `mount -o remount,ro MNT`.
        let words: Vec<&str> = args.options.iter().map(String::as_str).collect();
        return mountpoint::remount(&args.mountpoint, &words);
    }
    if args.daemon {
        return daemonize(&args);
    }
    let mountpoint = prepare_mountpoint(&args.mountpoint)?;
    crate::cache::memory::limit_allocator_arenas();
    mountpoint::raise_open_file_limit();
    let runtime = runtime()?;
    // This mount's counters: the client and the core count into them, the status report
    // reads them.
    let requests = RequestStats::default();
    let uploads = UploadProgress::default();
    let connected = setup::connect(&args, &runtime, &requests)?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(cli::default_cache_dir);
    let staging = StagingDir::claim(&cache_dir, args.backend, &connected.identity)?;
    let recovered = setup::recover(&runtime, &*connected.remote, &staging, &cache_dir)?;
    let mut config = setup::core_config(&args, &staging.path, &cache_dir, recovered.meta_store);
    config.uploads = uploads.clone();
    let fs = Arc::new(
        SessionFs::new(connected.remote.clone(), config).map_err(|err| {
            format!(
                "cannot set up staging in {} and the block cache: {err}",
                cache_dir.display()
            )
        })?,
    );
    let mount_options = MountOptions::new(
        args.read_only,
        args.allow_other,
        &args.options,
        &mount_source(&args, connected.emulator.is_some()),
    );
    let mounted = mountpoint::mount(
        fs.clone(),
        runtime.handle().clone(),
        &mountpoint,
        &mount_options,
    )
    .map_err(|err| format!("cannot mount on {}: {err}", mountpoint.display()))?;
    println!(
        "mounted {} on {}{}\nunmount with `umount {}` (or Ctrl-C here)",
        connected.remote.describe(),
        mountpoint.display(),
        connected.data_note,
        mountpoint.display()
    );
    let info = MountInfo {
        mountpoint: mountpoint.clone(),
        remote: args
            .remote
            .as_ref()
            .map(|name| format!("{name}:{}", args.container.as_deref().unwrap_or_default())),
        backend: args.backend.name().to_string(),
        endpoint: match &connected.emulator {
            Some(_) => format!(
                "{} (embedded emulator)",
                redact_endpoint(&connected.client.endpoint)
            ),
            None => redact_endpoint(&connected.client.endpoint),
        },
        started: std::time::Instant::now(),
        recovery_dir: recovered.recovery_dir,
        requests,
        uploads,
    };
    let status = setup::serve_status(&runtime, info, fs.clone());
    daemon::notify_ready();
    systemd::ready();
    let unmounted =
        stop::serve_until_stopped(&runtime, &fs, mounted, status.as_ref(), &staging.path);
    let kept = runtime.block_on(fs.keep_pending());
    if kept > 0 {
        log::error!(
            "{kept} file(s) could not be uploaded; they stay in {} and the next mount of this \
             remote uploads them",
            staging.path.display()
        );
    }
    if let Some(server) = connected.emulator {
        runtime.block_on(server.shutdown());
    }
    staging.release(kept);
    if let Some(status) = &status {
        runtime.block_on(status.finished(kept));
    }
    unmounted?;
    log::info!("unmounted {}", mountpoint.display());
    Ok(())
}

/// The source a mount shows (`findmnt -S`, `df`, `umount SOURCE`) unless `-o fsname=` names
/// one: `NAME:` or `NAME:SUBDIR` for a named remote, else the endpoint's host, else
/// `sessionfs` (the embedded emulator).
fn mount_source(args: &MountArgs, embedded: bool) -> String {
    if let Some(name) = &args.remote {
        return format!("{name}:{}", args.container.as_deref().unwrap_or_default());
    }
    let host = args
        .endpoint
        .as_deref()
        .filter(|_| !embedded)
        .and_then(|endpoint| reqwest::Url::parse(endpoint).ok())
        .and_then(|url| url.host_str().map(str::to_string));
    host.unwrap_or_else(|| "sessionfs".to_string())
}

/// The client's config from the mount options: endpoint, credentials (the token from
/// `--token` or `--token-file`, the password from `--password-file` or `SESSIONFS_PASSWORD`;
/// secret files only their owner may read) and upload tuning.
fn remote_config(args: &MountArgs) -> Result<RemoteConfig, RunError> {
    let token = match &args.token_file {
        Some(path) => Some(read_secret_file(path)?),
        None => args.token.clone(),
    };
    let mut client = RemoteConfig::new(args.endpoint.clone().unwrap_or_default(), token);
    client.user = args.user.clone();
    client.password = match &args.password_file {
        Some(path) => Some(read_secret_file(path)?),
        None => std::env::var("SESSIONFS_PASSWORD").ok(),
    };
    client.upload_parallel = args.upload_parallel;
    client.retry.deadline = args.retry_deadline;
    client.part_size = args.chunk_size.map(|size| size.as_u64());
    Ok(client)
}

/// `sessionfs remotes`: the named remotes of the config file, one a line: name, backend,
/// endpoint (or the embedded emulator). Never a secret.
pub fn remotes(config: Option<&std::path::Path>) -> Result<(), RunError> {
    let path = config.map_or_else(ConfigFile::default_path, |path| path.to_path_buf());
    let file = ConfigFile::read(&path)?;
    let remotes = file.remotes();
    if remotes.is_empty() {
        println!(
            "no remotes in {}; add a [remotes.NAME] table",
            path.display()
        );
    }
    let width = remotes.iter().map(|r| r.name.len() + 1).max().unwrap_or(0);
    for remote in remotes {
        let name = format!("{}:", remote.name);
        let endpoint = remote.endpoint.as_deref().unwrap_or("(embedded emulator)");
        println!("{name:width$}  {:10}  {endpoint}", remote.backend.name());
    }
    Ok(())
}

/// `sessionfs config check`: parses the config file and checks its secret files; the first
/// problem is the error, with its line and key.
pub fn check_config(config: Option<&std::path::Path>) -> Result<(), RunError> {
    let path = config.map_or_else(ConfigFile::default_path, |path| path.to_path_buf());
    let file = ConfigFile::read(&path)?;
    file.check()?;
    let names: Vec<String> = file.remotes().into_iter().map(|r| r.name).collect();
    println!(
        "{}: ok, {} remote(s){}",
        path.display(),
        names.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(": {}", names.join(", "))
        }
    );
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        log::error!("cannot listen for signals; stop with `sessionfs unmount`");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
