//! The mount lifecycle: check the mount point, start the embedded emulator when there is no
//! endpoint, mount, wait for a signal or an external unmount, drain uploads, unmount.

use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, MountOption};

use crate::backend::Backend;
use crate::cli::{self, MountArgs, ServeArgs};
use crate::emulator::{self, EmulatorConfig};
use crate::fs::fuse::FuseAdapter;
use crate::fs::scratch::ScratchPatterns;
use crate::fs::{FsConfig, SessionFs};
use crate::remote::{Remote, RemoteConfig};
use crate::write::StagingArea;
use crate::write::journal::{self, Journal};

/// FUSE worker threads: enough that a cached `getattr` never waits behind a slow request.
const FUSE_THREADS: usize = 4;

/// A failure that ends the command with a message and a non-zero exit.
pub type RunError = String;

/// Checks that `mountpoint` can be mounted on: an existing, empty directory. A stale sessionfs
/// mount left by a crash ("Transport endpoint is not connected") is detached first.
pub fn prepare_mountpoint(mountpoint: &Path) -> Result<PathBuf, RunError> {
    let stale = |err: &std::io::Error| err.raw_os_error() == Some(libc::ENOTCONN);
    let dead_mount = match fs::metadata(mountpoint) {
        Err(err) => stale(&err),
        Ok(_) => fs::read_dir(mountpoint).is_err_and(|err| stale(&err)),
    };
    if dead_mount {
        log::info!(
            "{} is a stale mount left by a crashed process; detaching it",
            mountpoint.display()
        );
        lazy_unmount(mountpoint)?;
    }
    match fs::metadata(mountpoint) {
        Err(err) if err.kind() == IoErrorKind::NotFound => {
            return Err(format!(
                "mount point {} does not exist; create it with `mkdir -p {}`",
                mountpoint.display(),
                mountpoint.display()
            ));
        }
        Err(err) => {
            return Err(format!(
                "cannot use mount point {}: {err}",
                mountpoint.display()
            ));
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(format!(
                "mount point {} is not a directory",
                mountpoint.display()
            ));
        }
        Ok(_) => {}
    }
    let mut entries = fs::read_dir(mountpoint)
        .map_err(|err| format!("cannot read mount point {}: {err}", mountpoint.display()))?;
    if entries.next().is_some() {
        return Err(format!(
            "mount point {} is not empty; mount on an empty directory",
            mountpoint.display()
        ));
    }
    if let Err(err) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Err(format!(
            "cannot open /dev/fuse ({err}); load the fuse module (`modprobe fuse`) and check \
             that you may use it"
        ));
    }
    fs::canonicalize(mountpoint).map_err(|err| format!("{}: {err}", mountpoint.display()))
}

/// Mount options for a sessionfs mount.
pub fn mount_config(
    backend: Backend,
    read_only: bool,
    allow_other: bool,
    extra: &[String],
) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("sessionfs".to_string()),
        MountOption::Subtype(backend.name().to_string()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if read_only {
        config.mount_options.push(MountOption::RO);
    }
    config
        .mount_options
        .extend(extra.iter().map(|opt| MountOption::CUSTOM(opt.clone())));
    if allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(FUSE_THREADS);
    config
}

/// Mounts `fs` at `mountpoint` and serves it from background threads. `init` has run when this
/// returns, so the mount is ready to use.
pub fn mount_session<R: Remote + ?Sized>(
    fs: Arc<SessionFs<R>>,
    runtime: tokio::runtime::Handle,
    mountpoint: &Path,
    config: &fuser::Config,
) -> std::io::Result<BackgroundSession> {
    let adapter = FuseAdapter::new(fs, runtime);
    fuser::Session::new(adapter, mountpoint, config)?.spawn()
}

/// Detaches whatever is mounted at `mountpoint`, even while files are open in it.
pub fn lazy_unmount(mountpoint: &Path) -> Result<(), RunError> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(|_| "mount point path holds a NUL byte".to_string())?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let status = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    if status == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // Not root: the setuid helper may unmount for us.
    for helper in ["fusermount3", "fusermount"] {
        if std::process::Command::new(helper)
            .args(["-u", "-z"])
            .arg(mountpoint)
            .status()
            .is_ok_and(|status| status.success())
        {
            return Ok(());
        }
    }
    Err(format!("cannot unmount {}: {err}", mountpoint.display()))
}

/// `sessionfs unmount MOUNTPOINT`: a plain unmount, which the mount process notices; it then
/// uploads anything pending and exits.
pub fn unmount(mountpoint: &Path) -> Result<(), RunError> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(|_| "mount point path holds a NUL byte".to_string())?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        return Err(format!(
            "{} is busy: a process still has files open there (see `fuser -m {}`)",
            mountpoint.display(),
            mountpoint.display()
        ));
    }
    for helper in ["fusermount3", "fusermount"] {
        if std::process::Command::new(helper)
            .arg("-u")
            .arg(mountpoint)
            .status()
            .is_ok_and(|status| status.success())
        {
            return Ok(());
        }
    }
    Err(format!("cannot unmount {}: {err}", mountpoint.display()))
}

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
    config.fluxer.bot_token = args.bot_token;
    config.fluxer.uploads = args.uploads;
    config.fluxer.max_attachment_bytes = args.max_attachment_size.map(|b| b.as_u64());
    config.fluxer.rate_limits = !args.no_rate_limits;
    config.fluxer.channels = args.channels;
    config.fluxer.upload_ttl = args.upload_ttl;
    if args.backend == Backend::Fluxer && config.token.is_none() {
        let token = emulator::fluxer::generate_token();
        println!("fluxer session token (send it as `Authorization: <token>`): {token}");
        config.token = Some(token);
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let server = emulator::spawn(args.backend, config)
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

/// How long `--daemon` waits for the background mount to be ready.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `sessionfs mount --daemon`: starts the same command without `--daemon` in a new session,
/// its output in a log file, and returns once the mount point shows the mount (or prints the
/// log and fails if the process ends first).
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
    let log_path = cache_dir.join(format!("sessionfs-{}.log", std::process::id()));
    let log =
        fs::File::create(&log_path).map_err(|err| format!("{}: {err}", log_path.display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|err| err.to_string())?)
        .stderr(log);
    // SAFETY: setsid only detaches the child from our terminal; it touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start the mount: {err}"))?;
    let started = std::time::Instant::now();
    while started.elapsed() < DAEMON_READY_TIMEOUT {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("the mount ended ({status}):\n{}", log.trim_end()));
        }
        if fs::read_to_string(&log_path).is_ok_and(|log| log.contains("unmount with")) {
            println!(
                "mounted on {} in the background (pid {}, log {}); stop with `sessionfs \
                 unmount {}`",
                mountpoint.display(),
                child.id(),
                log_path.display(),
                mountpoint.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "the mount was not ready after {DAEMON_READY_TIMEOUT:?}; see {}",
        log_path.display()
    ))
}

/// `sessionfs mount`: mounts and stays in the foreground until unmounted or signalled.
pub fn mount(args: MountArgs) -> Result<(), RunError> {
    if args.daemon {
        return daemonize(&args);
    }
    let mountpoint = prepare_mountpoint(&args.mountpoint)?;
    crate::cache::memory::limit_allocator_arenas();
    let runtime = runtime()?;
    let mut client = RemoteConfig::new(
        args.endpoint.clone().unwrap_or_default(),
        args.token.clone(),
    );
    // `identity` names the remote for its staging directory: the embedded emulator's port
    // changes every run, so its data directory names it instead.
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
                .block_on(emulator::spawn(args.backend, config))
                .map_err(|err| format!("cannot start the embedded emulator: {err}"))?;
            client.endpoint = server.endpoint();
            let note = format!(", embedded emulator data in {}", data_dir.display());
            let identity = format!("embedded:{}", data_dir.display());
            (Some(server), note, identity)
        }
    };
    let remote = args.backend.connect(&client).map_err(|err| err.message)?;
    runtime
        .block_on(remote.list_containers())
        .map_err(|err| format!("{}; nothing was mounted", err.message))?;

    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(cli::default_cache_dir);
    let staging = StagingDir::claim(&cache_dir, args.backend, &identity)?;
    let staging_dir = staging.path.clone();
    if staging.replay {
        let journal = Journal::open(&staging_dir).map_err(|err| err.to_string())?;
        let area = StagingArea::new(&staging_dir).map_err(|err| err.to_string())?;
        match runtime.block_on(journal::replay(&journal, &area, &*remote)) {
            Ok((0, 0)) => {}
            Ok((uploaded, failed)) => log::info!(
                "files left by an earlier mount: {uploaded} uploaded, {failed} still pending"
            ),
            Err(err) => log::error!(
                "cannot read the journal in {}: {err}",
                staging_dir.display()
            ),
        }
    }
    let mut config = FsConfig::new(&staging_dir);
    config.metadata_ttl = args.metadata_ttl;
    config.read_only = args.read_only;
    config.xattrs = args.xattrs;
    config.file_mode = args.file_mode;
    config.dir_mode = args.dir_mode;
    config.uid = args.uid.unwrap_or(config.uid);
    config.gid = args.gid.unwrap_or(config.gid);
    config.cache.memory_limit = args.memory_limit.as_u64();
    if args.cache_size.as_u64() > 0 {
        let blocks_dir = cache_dir.join(format!("blocks-{}", std::process::id()));
        config.cache.disk = Some((blocks_dir, args.cache_size.as_u64()));
    }
    if let Some(patterns) = &args.local_only {
        config.scratch =
            ScratchPatterns::new(patterns.iter().filter(|p| !p.is_empty()).cloned().collect());
    }
    let fs = Arc::new(SessionFs::new(remote.clone(), config).map_err(|err| {
        format!(
            "cannot set up staging in {} and the block cache: {err}",
            cache_dir.display()
        )
    })?);
    let mount_options = mount_config(
        args.backend,
        args.read_only,
        args.allow_other,
        &args.options,
    );
    let session = mount_session(
        fs.clone(),
        runtime.handle().clone(),
        &mountpoint,
        &mount_options,
    )
    .map_err(|err| format!("cannot mount on {}: {err}", mountpoint.display()))?;
    println!(
        "mounted {} on {}{data_note}\nunmount with `umount {}` (or Ctrl-C here)",
        remote.describe(),
        mountpoint.display(),
        mountpoint.display()
    );

    let signalled = runtime.block_on(wait_for_signal_or_unmount(&session));
    if signalled {
        log::info!("signal received: uploading pending files, then unmounting");
        match runtime.block_on(fs.drain()) {
            Ok(n) if n > 0 => log::info!("uploaded {n} pending file(s)"),
            Ok(_) => {}
            Err(err) => log::error!(
                "{}; the staged copies stay in {}",
                err.message,
                staging_dir.display()
            ),
        }
        if session.umount_and_join().is_err() {
            // Files are still open in the mount: detach it so the mount point is usable again.
            lazy_unmount(&mountpoint)?;
        }
    } else {
        let _ = session.join();
    }
    let kept = runtime.block_on(fs.keep_pending());
    if kept > 0 {
        log::error!(
            "{kept} file(s) could not be uploaded; they stay in {} and the next mount of this \
             remote uploads them",
            staging_dir.display()
        );
    }
    if let Some(server) = emulator {
        runtime.block_on(server.shutdown());
    }
    staging.release(kept);
    log::info!("unmounted {}", mountpoint.display());
    Ok(())
}

/// The staging directory of one remote, held by at most one mount at a time so that only one
/// process replays its journal. A second mount of the same remote gets a private directory.
struct StagingDir {
    path: PathBuf,
    /// This mount owns the remote's directory and replays what an earlier mount left.
    replay: bool,
    /// Holds the advisory lock while the mount runs.
    _lock: Option<fs::File>,
}

impl StagingDir {
    fn claim(cache_dir: &Path, backend: Backend, identity: &str) -> Result<Self, RunError> {
        use md5::{Digest, Md5};
        let key = format!("{:x}", Md5::digest(identity.as_bytes()));
        let backend = backend.name();
        let shared = cache_dir
            .join("staging")
            .join(format!("{backend}-{}", &key[..16]));
        fs::create_dir_all(&shared).map_err(|err| {
            format!(
                "cannot create staging directory {}: {err}",
                shared.display()
            )
        })?;
        let lock = fs::File::create(shared.join(".lock"))
            .map_err(|err| format!("cannot lock {}: {err}", shared.display()))?;
        // SAFETY: flock on a file descriptor we own; it stays open as long as `lock` lives.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } == 0;
        if locked {
            return Ok(Self {
                path: shared,
                replay: true,
                _lock: Some(lock),
            });
        }
        let private =
            shared.with_file_name(format!("{backend}-{}-{}", &key[..16], std::process::id()));
        log::info!(
            "another mount of this remote is running; staging in {}",
            private.display()
        );
        Ok(Self {
            path: private,
            replay: false,
            _lock: None,
        })
    }

    /// Removes a private directory that holds nothing pending.
    fn release(self, kept: usize) {
        if !self.replay && kept == 0 {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Waits for SIGINT or SIGTERM (true) or for the mount to end by an external unmount (false).
async fn wait_for_signal_or_unmount(session: &BackgroundSession) -> bool {
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => return true,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if session.guard.is_finished() {
                    return false;
                }
            }
        }
    }
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
