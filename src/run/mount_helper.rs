//! `mount.sessionfs`: the binary under that name (a symlink in /sbin) is what mount(8) runs
//! for `mount -t sessionfs SPEC DIR -o OPTIONS` and for an /etc/fstab line of type
//! `sessionfs`. It translates mount(8)'s arguments into `sessionfs mount --daemon ...` and
//! runs that, so the mount stays in the background and mount(8) returns once it is ready.

use std::ffi::OsString;

use super::RunError;
use super::mountpoint::{remount, vfs_flag};

/// The names under which the binary acts as the mount helper.
pub const HELPER_NAMES: [&str; 2] = ["mount.sessionfs", "mount.fuse.sessionfs"];

/// Options mount(8), systemd or fstab use for themselves; they mean nothing to the mount.
fn passed_over(option: &str) -> bool {
    matches!(
        option,
        "_netdev" | "nofail" | "auto" | "noauto" | "defaults" | "user" | "users" | "nouser"
    ) || option.starts_with("x-systemd.")
        || option.starts_with("x-")
        || option.starts_with("comment=")
}

/// The sessionfs options of `-o` that take a value, each the `sessionfs mount` option of the
/// same name.
const VALUE_OPTIONS: [&str; 11] = [
    "backend",
    "endpoint",
    "token_file",
    "config",
    "uid",
    "gid",
    "file_mode",
    "dir_mode",
    "cache_dir",
    "memory_limit",
    "log_file",
];

/// What mount(8) asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A new mount: the arguments of `sessionfs`.
    Mount(Vec<OsString>),
    /// `-o remount`: the mount at `dir` takes the VFS words; `kept` are the sessionfs options
    /// given with it, which cannot change while mounted.
    Remount {
        dir: OsString,
        words: Vec<String>,
        kept: Vec<String>,
    },
}

/// Translates `mount.sessionfs SPEC DIR [-sfnv] [-o OPTS] [-t TYPE]` into the arguments of
/// `sessionfs`: `mount --daemon [NAME:[SUBDIR]] DIR --option value ... [-o VFS,WORDS]`. SPEC
/// is `NAME:` for a named remote (`NAME:SUBDIR` for one container of it), anything else
/// (`sessionfs`, `none`) for a mount given only by options. The generic VFS words (`noatime`,
/// `nosuid`, ...) and `fsname=` go to `-o`, which turns them into the kernel's flags and the
/// mount's source; with `remount` the request is a [`Request::Remount`].
pub fn translate(args: &[OsString]) -> Result<Request, RunError> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.to_str() {
            Some("-o") => {
                let value = iter.next().ok_or("-o needs a value")?;
                options.extend(value.to_string_lossy().split(',').map(str::to_string));
            }
            Some("-t") => {
                iter.next();
            }
            // sloppy, fake, no mtab, verbose: nothing to do differently.
            Some("-s" | "-f" | "-n" | "-v") => {}
            Some(flag) if flag.starts_with('-') => {
                return Err(format!("mount.sessionfs: unknown flag {flag}"));
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [spec, dir] = positional.as_slice() else {
        return Err("usage: mount.sessionfs NAME: MOUNTPOINT [-o OPTIONS]".to_string());
    };
    let options: Vec<&str> = options
        .iter()
        .map(String::as_str)
        .filter(|o| !o.is_empty() && !passed_over(o))
        .collect();
    if options.contains(&"remount") {
        // mount(8) adds the options mountinfo shows for the mount, the kernel's FUSE ones
        // among them; they are what the mount has already.
        let fuse_own = |o: &&str| {
            matches!(*o, "remount" | "default_permissions" | "allow_other")
                || [
                    "user_id=",
                    "group_id=",
                    "rootmode=",
                    "max_read=",
                    "blksize=",
                ]
                .iter()
                .any(|key| o.starts_with(key))
        };
        let (words, kept) = options
            .into_iter()
            .filter(|o| !fuse_own(o))
            .map(str::to_string)
            .partition(|o| vfs_flag(o).is_some());
        return Ok(Request::Remount {
            dir: dir.clone(),
            words,
            kept,
        });
    }
    let mut out: Vec<OsString> = vec!["mount".into(), "--daemon".into()];
    if spec.to_string_lossy().contains(':') {
        out.push(spec.clone());
    }
    out.push(dir.clone());
    let mut vfs = Vec::new();
    for option in options {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option, None),
        };
        let flag = match (key, value) {
            ("ro", None) => "read-only",
            ("allow_other", None) => "allow-other",
            ("fsname", Some(_)) => {
                vfs.push(option);
                continue;
            }
            (word, None) if vfs_flag(word).is_some() => {
                vfs.push(option);
                continue;
            }
            (key, Some(_)) if VALUE_OPTIONS.contains(&key) => key,
            _ => {
                return Err(format!(
                    "mount.sessionfs: unknown option {option:?}; known: {}=, allow_other, \
                     fsname=, and the generic ro, rw, noatime, relatime, strictatime, \
                     nodiratime, nosuid, nodev, noexec, suid, dev, exec, sync, async, dirsync, \
                     lazytime",
                    VALUE_OPTIONS.join("=, ")
                ));
            }
        };
        out.push(format!("--{}", flag.replace('_', "-")).into());
        if let Some(value) = value {
            out.push(value.into());
        }
    }
    if !vfs.is_empty() {
        out.push("-o".into());
        out.push(vfs.join(",").into());
    }
    Ok(Request::Mount(out))
}

/// Runs what mount(8) asked for: a remount here, a mount as `sessionfs` (this binary) with
/// the translated arguments, exiting with its status. Like mount(8)'s other helpers it prints
/// nothing on success (the background mount's "mounted on ..." line is not passed on);
/// errors go to standard error. mount(8) clears `HOME`; the mount gets the user's home from
/// the password database, so the config file, cache and data are found where `sessionfs
/// mount` finds them.
pub fn run(args: &[OsString]) -> Result<(), RunError> {
    let translated = match translate(args)? {
        Request::Mount(translated) => translated,
        Request::Remount { dir, words, kept } => {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            remount(std::path::Path::new(&dir), &words)
                .map_err(|err| format!("mount.sessionfs: {err}"))?;
            if !kept.is_empty() {
                eprintln!(
                    "mount.sessionfs: remounted {}; {} cannot change while mounted and stay as \
                     they were",
                    dir.to_string_lossy(),
                    kept.join(",")
                );
            }
            std::process::exit(0);
        }
    };
    let exe =
        std::env::current_exe().map_err(|err| format!("cannot find sessionfs itself: {err}"))?;
    let mut command = std::process::Command::new(exe);
    if std::env::var_os("HOME").is_none()
        && let Some(home) = home_of_user()
    {
        command.env("HOME", home);
    }
    let status = command
        .args(translated)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|err| format!("cannot run sessionfs: {err}"))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// The home directory of the real user, from the password database.
fn home_of_user() -> Option<OsString> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: getpwuid returns a pointer into static storage or null; it is read at once, and
    // this process runs no other thread that could call getpw* meanwhile.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*entry).pw_dir);
        Some(std::ffi::OsStr::from_bytes(dir.to_bytes()).to_os_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(args: &[&str]) -> Result<Vec<String>, RunError> {
        match request(args)? {
            Request::Mount(out) => Ok(out
                .into_iter()
                .map(|arg| arg.into_string().unwrap())
                .collect()),
            other => panic!("not a mount: {other:?}"),
        }
    }

    fn request(args: &[&str]) -> Result<Request, RunError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        translate(&args)
    }

    #[test]
    fn mount_options_become_flags_and_systemd_ones_are_passed_over() {
        let out = translated(&[
            "work:",
            "/mnt/w",
            "-o",
            "rw,_netdev,nofail,x-systemd.automount,ro,allow_other,uid=1000,file_mode=640,\
             token_file=/etc/t,memory_limit=64MiB",
        ])
        .unwrap();
        assert_eq!(
            out.join(" "),
            "mount --daemon work: /mnt/w --read-only --allow-other --uid 1000 --file-mode 640 \
             --token-file /etc/t --memory-limit 64MiB -o rw"
        );
        let out = translated(&["none", "/mnt/x", "-n", "-o", "backend=mix"]).unwrap();
        assert_eq!(out.join(" "), "mount --daemon /mnt/x --backend mix");
        let out = translated(&["work:guild/general", "/mnt/g"]).unwrap();
        assert_eq!(out.join(" "), "mount --daemon work:guild/general /mnt/g");
        assert!(translated(&["a:", "/m", "-o", "colour=blue"]).is_err());
        assert!(translated(&["/m"]).is_err());
    }

    #[test]
    fn vfs_words_and_fsname_go_to_the_kernel_options() {
        let out = translated(&[
            "work:",
            "/mnt/w",
            "-o",
            "noatime,nosuid,nodev,noexec,rw,relatime,strictatime,nodiratime,diratime,suid,dev,\
             exec,sync,async,dirsync,atime,lazytime,fsname=my remote,defaults,memory_limit=1GiB",
        ])
        .unwrap();
        assert_eq!(
            out.join(" "),
            "mount --daemon work: /mnt/w --memory-limit 1GiB -o noatime,nosuid,nodev,noexec,rw,\
             relatime,strictatime,nodiratime,diratime,suid,dev,exec,sync,async,dirsync,atime,\
             lazytime,fsname=my remote"
        );
        let err = translated(&["work:", "/mnt/w", "-o", "noatime=1"]).unwrap_err();
        assert!(err.contains("unknown option \"noatime=1\""), "{err}");
    }

    #[test]
    fn remount_takes_the_vfs_words_and_names_what_cannot_change() {
        assert_eq!(
            request(&[
                "work:",
                "/mnt/w",
                "-o",
                "remount,ro,noexec,_netdev,memory_limit=1GiB,user_id=0,default_permissions"
            ])
            .unwrap(),
            Request::Remount {
                dir: "/mnt/w".into(),
                words: vec!["ro".to_string(), "noexec".to_string()],
                kept: vec!["memory_limit=1GiB".to_string()],
            }
        );
    }
}
