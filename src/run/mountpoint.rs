//! The mount point's system calls: checking it before a mount, the FUSE mount options,
//! mounting, and unmounting (plain, or detached when files are still open).

use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, MountOption};

use super::RunError;
use crate::backend::Backend;
use crate::fs::SessionFs;
use crate::fs::fuse::FuseAdapter;
use crate::remote::Remote;

/// FUSE worker threads: enough that a cached `getattr` never waits behind a slow request.
const FUSE_THREADS: usize = 4;

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

/// Raises this process's soft limit of open descriptors to its hard limit: the mount holds up
/// to 512 for staging files (256 open at once, two each), plus connections, the metadata
/// store and the FUSE device, which a 1024 soft limit leaves little room for.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed, which outlives them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            log::debug!(
                "cannot raise the open-file limit from {}: {}",
                limit.rlim_cur,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Mounts `fs` at `mountpoint` and serves it from background threads, with the kernel's
/// readahead widened to whole 1 MiB reads. `init` has run when this returns, so the mount is
/// ready to use.
pub fn mount_session<R: Remote + ?Sized>(
    fs: Arc<SessionFs<R>>,
    runtime: tokio::runtime::Handle,
    mountpoint: &Path,
    config: &fuser::Config,
) -> std::io::Result<BackgroundSession> {
    let adapter = FuseAdapter::new(fs, runtime);
    let session = fuser::Session::new(adapter, mountpoint, config)?.spawn()?;
    super::readahead::widen(mountpoint);
    Ok(session)
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
