//! The mount point's system calls: checking it before a mount, the FUSE mount options,
//! mounting, and unmounting (plain, or detached when files are still open).

use std::ffi::CString;
use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, MountOption};

use super::{RunError, mountinfo};
use crate::fs::SessionFs;
use crate::fs::fuse::FuseAdapter;

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

/// The filesystem type every sessionfs mount has in /proc/mounts, whatever its backend: what
/// `mount -t` names, so mount(8) runs our helper for a remount too.
pub const FS_TYPE: &str = "fuse.sessionfs";

/// The kernel flags a generic mount(8) option sets and clears, for the words that are the
/// VFS's and not sessionfs's (`noatime`, `nosuid`, ...); `None` for any other word.
pub fn vfs_flag(word: &str) -> Option<(libc::c_ulong, libc::c_ulong)> {
    use libc::{
        MS_DIRSYNC, MS_LAZYTIME, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID,
        MS_NOSYMFOLLOW, MS_RDONLY, MS_RELATIME, MS_STRICTATIME, MS_SYNCHRONOUS,
    };
    Some(match word {
        "ro" => (MS_RDONLY, 0),
        "rw" => (0, MS_RDONLY),
        "nosuid" => (MS_NOSUID, 0),
        "suid" => (0, MS_NOSUID),
        "nodev" => (MS_NODEV, 0),
        "dev" => (0, MS_NODEV),
        "noexec" => (MS_NOEXEC, 0),
        "exec" => (0, MS_NOEXEC),
        "sync" => (MS_SYNCHRONOUS, 0),
        "async" => (0, MS_SYNCHRONOUS),
        "dirsync" => (MS_DIRSYNC, 0),
        "noatime" => (MS_NOATIME, MS_RELATIME | MS_STRICTATIME),
        "atime" => (0, MS_NOATIME),
        "relatime" => (MS_RELATIME, MS_NOATIME | MS_STRICTATIME),
        "norelatime" => (0, MS_RELATIME),
        "strictatime" => (MS_STRICTATIME, MS_NOATIME | MS_RELATIME),
        "nodiratime" => (MS_NODIRATIME, 0),
        "diratime" => (0, MS_NODIRATIME),
        "lazytime" => (MS_LAZYTIME, 0),
        "nolazytime" => (0, MS_LAZYTIME),
        "nosymfollow" => (MS_NOSYMFOLLOW, 0),
        "symfollow" => (0, MS_NOSYMFOLLOW),
        _ => return None,
    })
}

/// What a sessionfs mount is mounted with: the source /proc/mounts shows, the kernel's
/// `MS_*` flags, and the FUSE options of the data string besides `fd=`, `rootmode=`,
/// `user_id=` and `group_id=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// The mount's source (`findmnt -S`, `df`, `umount SOURCE`).
    pub source: String,
    /// `MS_*` flags of mount(2).
    pub flags: libc::c_ulong,
    /// FUSE options for the data string (`default_permissions`, `allow_other`, and any word
    /// of `-o` that is neither a VFS flag nor `fsname=`, for the kernel to judge).
    pub data: Vec<String>,
    /// Who may use the mount besides its owner.
    pub allow_other: bool,
}

impl MountOptions {
    /// The options of a mount named `source` (unless `-o fsname=` names it), read-only and
    /// open to other users as asked, with the words of `-o` (`extra`): VFS words become flags
    /// over the defaults `nosuid,nodev` (`suid`, `dev` lift them), the rest goes to FUSE.
    pub fn new(read_only: bool, allow_other: bool, extra: &[String], source: &str) -> Self {
        let mut options = Self {
            source: source.to_string(),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: vec!["default_permissions".to_string()],
            allow_other,
        };
        for word in extra.iter().map(|word| word.trim()) {
            if let Some(name) = word.strip_prefix("fsname=") {
                options.source = name.to_string();
            } else if let Some((set, clear)) = vfs_flag(word) {
                options.flags = (options.flags & !clear) | set;
            } else if word == "allow_other" {
                options.allow_other = true;
            } else if !word.is_empty() && !options.data.iter().any(|known| known == word) {
                options.data.push(word.to_string());
            }
        }
        if read_only {
            options.flags |= libc::MS_RDONLY;
        }
        if options.allow_other {
            options.data.push("allow_other".to_string());
        }
        options
    }

    /// The same options for fuser's own mount (fusermount, when mount(2) is not ours to call).
    fn fuser_config(&self) -> fuser::Config {
        let mut config = fuser::Config::default();
        let words = [
            (libc::MS_RDONLY, MountOption::RO),
            (libc::MS_NOEXEC, MountOption::NoExec),
            (libc::MS_NOATIME, MountOption::NoAtime),
            (libc::MS_SYNCHRONOUS, MountOption::Sync),
            (libc::MS_DIRSYNC, MountOption::DirSync),
        ];
        let custom = [
            (libc::MS_RELATIME, "relatime"),
            (libc::MS_STRICTATIME, "strictatime"),
            (libc::MS_NODIRATIME, "nodiratime"),
            (libc::MS_LAZYTIME, "lazytime"),
        ];
        config.mount_options = vec![
            MountOption::FSName(self.source.clone()),
            MountOption::Subtype("sessionfs".to_string()),
            MountOption::DefaultPermissions,
            match self.flags & libc::MS_NOSUID {
                0 => MountOption::Suid,
                _ => MountOption::NoSuid,
            },
            match self.flags & libc::MS_NODEV {
                0 => MountOption::Dev,
                _ => MountOption::NoDev,
            },
        ];
        for (flag, option) in words {
            if self.flags & flag != 0 {
                config.mount_options.push(option);
            }
        }
        for (flag, word) in custom {
            if self.flags & flag != 0 {
                config
                    .mount_options
                    .push(MountOption::CUSTOM(word.to_string()));
            }
        }
        config.mount_options.extend(
            self.data
                .iter()
                .filter(|word| !matches!(word.as_str(), "default_permissions" | "allow_other"))
                .map(|word| MountOption::CUSTOM(word.clone())),
        );
        if self.allow_other {
            config.acl = fuser::SessionACL::All;
        }
        config.n_threads = Some(FUSE_THREADS);
        config
    }
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

/// Mounts `fs` at `mountpoint` through fuser (mount(2), else fusermount) and serves it from
/// background threads, with the kernel's readahead widened to whole 1 MiB reads. `init` has
/// run when this returns. The session unmounts the mount point's path when it is dropped or
/// `umount_and_join`ed: for the tests' in-process mounts, which unmount only mounts still
/// A mount of ours being served: what is needed to tell it from a mount made later on the same
/// path, so that the end of this one never unmounts the next (`umount MNT` followed at once by
/// a new mount there, as `systemctl restart` and fstab remounts do, used to lose the new mount
/// to the old process's unmount by path 1.5 s later, 3 times of 3).
pub struct Mounted {
    session: BackgroundSession,
    mountpoint: PathBuf,
    /// `major:minor` of our mount in mountinfo, read right after mounting.
    device: Option<String>,
    /// A second descriptor of our FUSE connection: poll(2) answers POLLERR once the kernel
    /// ended it (the mount is gone).
    connection: OwnedFd,
    /// fuser's fusermount path mounted it: the session then holds fuser's unmount by path,
    /// which runs when it is dropped.
    by_fuser: bool,
}

impl Mounted {
    /// Whether the session ended: the kernel ended the connection (an unmount from outside).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Whether the mount on top at the mount point is ours and still connected. Our device
    /// number is freed only after our connection ended, so a mount there with our number
    /// while we are still connected is ours.
    fn is_ours(&self) -> bool {
        let same = match (&self.device, mountinfo::mount_at(&self.mountpoint)) {
            (Some(ours), Some(there)) => there.device == *ours,
            // Our number was not readable after the mount: only the connection can tell.
            (None, Some(_)) => true,
            (_, None) => false,
        };
        same && connected(&self.connection)
    }

    /// After an unmount from outside: waits for the session's threads. Nothing is unmounted:
    /// the path may hold a new mount already.
    pub fn finish_unmounted(self) {
        if self.by_fuser && !self.is_ours() {
            // Dropping fuser's session would unmount the mount point's path (its check that the
            // mount is gone reads an ended connection as mounted), which may be someone else's
            // mount by now. Its threads have ended; what it holds is freed when we exit.
            std::mem::forget(self.session);
            return;
        }
        if self.session.join().is_err() {
            log::warn!("the FUSE session's thread panicked");
        }
    }

    /// Unmounts our mount (after the drain) and waits for the session to end; with files
    /// still open there the mount is detached instead, so the mount point is usable again.
    /// A mount point that holds another mount by now is left alone.
    pub fn unmount(self) -> Result<(), RunError> {
        if !self.is_ours() {
            log::info!(
                "{} was unmounted from outside meanwhile; leaving the path as it is",
                self.mountpoint.display()
            );
            self.finish_unmounted();
            return Ok(());
        }
        // The mount there was ours a moment ago; another can take the path only if ours is
        // unmounted by someone else and a new one mounted in the microseconds until umount2.
        if self.by_fuser {
            let Self {
                session,
                mountpoint,
                ..
            } = self;
            if session.umount_and_join().is_err() {
                lazy_unmount(&mountpoint)?;
            }
            return Ok(());
        }
        let path = c_path(&self.mountpoint)?;
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
            if self.session.join().is_err() {
                log::warn!("the FUSE session's thread panicked");
            }
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!(
                "cannot unmount {}: {err}",
                self.mountpoint.display()
            ));
        }
        // Files are still open in the mount: detach it. The session serves them until they are
        // closed or this process exits; it is not waited for.
        if self.is_ours() {
            // SAFETY: as above.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                let err = std::io::Error::last_os_error();
                return Err(format!(
                    "cannot unmount {}: {err}",
                    self.mountpoint.display()
                ));
            }
        }
        Ok(())
    }
}

/// Whether the FUSE connection of `device` is still up: the kernel answers POLLERR for one it
/// ended.
fn connected(device: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: device.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd, which outlives the call; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        if ready < 0 && std::io::Error::last_os_error().kind() == IoErrorKind::Interrupted {
            continue;
        }
        return ready == 0;
    }
}

/// Starts `fs`'s background uploads, mounts it at `mountpoint` with `options` and serves it
/// from background threads, with the kernel's readahead widened to whole 1 MiB reads. `init`
/// has run when this returns. `sessionfs mount` and the tests' in-process mounts both mount
/// through here.
///
/// As root this is our own mount(2) over a /dev/fuse descriptor, so no part of fuser ever
/// unmounts by path; without the right to mount (EPERM) fuser mounts through fusermount.
pub fn mount(
    fs: Arc<SessionFs>,
    runtime: tokio::runtime::Handle,
    mountpoint: &Path,
    options: &MountOptions,
) -> std::io::Result<Mounted> {
    fs.start_delayed_uploads(&runtime);
    let config = options.fuser_config();
    let adapter = FuseAdapter::new(fs, runtime);
    let mounted = match mount_fuse(mountpoint, options) {
        Ok(device) => {
            let number = mountinfo::mount_at(mountpoint).map(|line| line.device);
            let started = device.try_clone().and_then(|connection| {
                let acl = config.acl;
                let session = fuser::Session::from_fd(adapter, device, acl, config)?.spawn()?;
                Ok((session, connection))
            });
            let (session, connection) = started.inspect_err(|_| {
                // A mount nobody serves: detach it rather than leave a dead mount point.
                if let Ok(path) = c_path(mountpoint) {
                    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
                    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                }
            })?;
            Mounted {
                session,
                mountpoint: mountpoint.to_path_buf(),
                device: number,
                connection,
                by_fuser: false,
            }
        }
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
            log::debug!("mount(2) is not ours to call ({err}); mounting through fusermount");
            let session = fuser::Session::new(adapter, mountpoint, &config)?;
            let connection = session.as_fd().try_clone_to_owned()?;
            Mounted {
                device: mountinfo::mount_at(mountpoint).map(|line| line.device),
                session: session.spawn()?,
                mountpoint: mountpoint.to_path_buf(),
                connection,
                by_fuser: true,
            }
        }
        Err(err) => return Err(err),
    };
    super::readahead::widen(mountpoint);
    Ok(mounted)
}

/// mount(2) of a FUSE filesystem at `mountpoint` over a new /dev/fuse descriptor, which it
/// returns; the kernel's INIT waits on it.
fn mount_fuse(mountpoint: &Path, options: &MountOptions) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let device: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?
        .into();
    let root_mode = fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={uid},group_id={gid}",
        device.as_raw_fd()
    );
    for word in &options.data {
        data.push(',');
        data.push_str(word);
    }
    let invalid = |what: &str| std::io::Error::new(IoErrorKind::InvalidInput, what.to_string());
    let source = CString::new(options.source.as_str())
        .map_err(|_| invalid("the mount's source holds a NUL byte"))?;
    let target = CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(|_| invalid("mount point path holds a NUL byte"))?;
    let fs_type = CString::new(FS_TYPE).map_err(|_| invalid("type"))?;
    let c_data = CString::new(data.as_str()).map_err(|_| invalid("an option holds a NUL byte"))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let status = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            options.flags,
            c_data.as_ptr().cast(),
        )
    };
    if status != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            return Err(err);
        }
        return Err(std::io::Error::new(
            err.kind(),
            format!("mount(2) with options {data:?}: {err}"),
        ));
    }
    Ok(device)
}

/// `mount -o remount,WORDS MNT`: changes what can change on a live sessionfs mount, the
/// per-mount flags (`ro`/`rw`, `nosuid`, `nodev`, `noexec`, the atime words); the words not
/// given keep their value. `sync`, `dirsync` and `lazytime` are the filesystem's own and are
/// refused, as is `rw` for a mount made read-only (`ro` at mount time).
pub fn remount(mountpoint: &Path, words: &[&str]) -> Result<(), RunError> {
    if let Some(word) = words
        .iter()
        .find(|word| **word != "remount" && vfs_flag(word).is_none())
    {
        return Err(format!(
            "remount changes only the mount's flags (ro, rw, noexec, nosuid, nodev, the atime \
             ones), not {word:?}; unmount {} and mount it again to change it",
            mountpoint.display()
        ));
    }
    if let Some(word) = words.iter().find(|word| {
        matches!(
            **word,
            "sync" | "async" | "dirsync" | "lazytime" | "nolazytime"
        )
    }) {
        return Err(format!(
            "remount cannot change {word} on a live sessionfs mount; unmount {} and mount \
             it again with it",
            mountpoint.display()
        ));
    }
    let mountpoint =
        fs::canonicalize(mountpoint).map_err(|err| format!("{}: {err}", mountpoint.display()))?;
    let shown = mountpoint.display();
    let line = mountinfo::mount_at(&mountpoint).ok_or_else(|| format!("{shown} is not mounted"))?;
    if line.fs_type != FS_TYPE {
        return Err(format!(
            "{shown} is not a sessionfs mount (its type is {})",
            line.fs_type
        ));
    }
    let mut flags = 0;
    for word in line.options.split(',').chain(words.iter().copied()) {
        if let Some((set, clear)) = vfs_flag(word) {
            flags = (flags & !clear) | set;
        }
    }
    if flags & libc::MS_RDONLY == 0 && line.super_read_only() {
        return Err(format!(
            "{shown} was mounted read-only (ro), which a remount cannot undo; unmount it and \
             mount it again without ro"
        ));
    }
    let path = c_path(&mountpoint)?;
    let flags = flags | libc::MS_REMOUNT | libc::MS_BIND;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call; a remount reads
    // no source, type or data.
    let status = unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if status != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("cannot remount {shown}: {err}"));
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString, RunError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| "mount point path holds a NUL byte".to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(',').map(str::to_string).collect()
    }

    #[test]
    fn vfs_words_become_flags_over_the_defaults_and_the_rest_goes_to_fuse() {
        let options = MountOptions::new(false, false, &[], "work:");
        assert_eq!(options.flags, libc::MS_NOSUID | libc::MS_NODEV);
        assert_eq!(options.data, ["default_permissions"]);
        assert_eq!(options.source, "work:");

        let options = MountOptions::new(
            false,
            false,
            &words("noatime,noexec,suid,sync,dirsync,nodiratime,fsname=host,max_read=65536"),
            "work:",
        );
        assert_eq!(
            options.flags,
            libc::MS_NODEV
                | libc::MS_NOATIME
                | libc::MS_NOEXEC
                | libc::MS_SYNCHRONOUS
                | libc::MS_DIRSYNC
                | libc::MS_NODIRATIME
        );
        assert_eq!(options.source, "host");
        assert_eq!(options.data, ["default_permissions", "max_read=65536"]);

        // Later words win; --read-only wins over rw; allow_other reaches the data and the ACL.
        let options = MountOptions::new(
            true,
            false,
            &words("noatime,relatime,dev,rw,allow_other"),
            "s",
        );
        assert_eq!(
            options.flags,
            libc::MS_NOSUID | libc::MS_RELATIME | libc::MS_RDONLY
        );
        assert!(options.allow_other);
        assert_eq!(options.data, ["default_permissions", "allow_other"]);
        assert_eq!(options.fuser_config().acl, fuser::SessionACL::All);
    }

    #[test]
    fn remount_refuses_what_a_live_mount_cannot_change_and_other_filesystems() {
        let err = remount(Path::new("/"), &["remount", "memory_limit=1GiB"]).unwrap_err();
        assert!(err.contains("not \"memory_limit=1GiB\""), "{err}");
        let err = remount(Path::new("/"), &["remount", "ro", "sync"]).unwrap_err();
        assert!(err.contains("cannot change sync"), "{err}");
        let err = remount(Path::new("/"), &["remount", "ro"]).unwrap_err();
        assert!(err.contains("/ is not a sessionfs mount"), "{err}");
    }
}
