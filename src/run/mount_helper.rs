//! `mount.sessionfs`: the binary under that name (a symlink in /sbin) is what mount(8) runs
//! for `mount -t sessionfs SPEC DIR -o OPTIONS` and for an /etc/fstab line of type
//! `sessionfs`. It translates mount(8)'s arguments into `sessionfs mount --daemon ...` and
//! runs that, so the mount stays in the background and mount(8) returns once it is ready.

use std::ffi::OsString;

use super::RunError;

/// The names under which the binary acts as the mount helper.
pub const HELPER_NAMES: [&str; 2] = ["mount.sessionfs", "mount.fuse.sessionfs"];

/// Options mount(8), systemd or fstab use for themselves; they mean nothing to the mount.
fn passed_over(option: &str) -> bool {
    matches!(
        option,
        "_netdev" | "nofail" | "auto" | "noauto" | "defaults" | "rw" | "user" | "users" | "nouser"
    ) || option.starts_with("x-systemd.")
        || option.starts_with("x-")
        || option.starts_with("comment=")
}

/// Translates `mount.sessionfs SPEC DIR [-sfnv] [-o OPTS] [-t TYPE]` into the arguments of
/// `sessionfs`: `mount --daemon [NAME:[SUBDIR]] DIR --option value ...`. SPEC is `NAME:` for a
/// named remote (`NAME:SUBDIR` for one container of it), anything else (`sessionfs`, `none`)
/// for a mount given only by options.
pub fn translate(args: &[OsString]) -> Result<Vec<OsString>, RunError> {
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
    let mut out: Vec<OsString> = vec!["mount".into(), "--daemon".into()];
    if spec.to_string_lossy().contains(':') {
        out.push(spec.clone());
    }
    out.push(dir.clone());
    for option in options.iter().filter(|o| !o.is_empty() && !passed_over(o)) {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option.as_str(), None),
        };
        let flag = match (key, value) {
            ("ro", None) => "read-only",
            ("allow_other", None) => "allow-other",
            (
                "backend" | "endpoint" | "token_file" | "config" | "uid" | "gid" | "file_mode"
                | "dir_mode" | "cache_dir" | "memory_limit" | "log_file",
                Some(_),
            ) => key,
            _ => {
                return Err(format!(
                    "mount.sessionfs: unknown option {option:?}; known: backend=, endpoint=, \
                     token_file=, config=, allow_other, ro, uid=, gid=, file_mode=, dir_mode=, \
                     cache_dir=, memory_limit=, log_file="
                ));
            }
        };
        out.push(format!("--{}", flag.replace('_', "-")).into());
        if let Some(value) = value {
            out.push(value.into());
        }
    }
    Ok(out)
}

/// Runs `sessionfs` (this binary) with the translated arguments and exits with its status.
/// mount(8) clears `HOME`; the mount gets the user's home from the password database, so the
/// config file, cache and data are found where `sessionfs mount` finds them.
pub fn run(args: &[OsString]) -> Result<(), RunError> {
    let translated = translate(args)?;
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
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        translate(&args).map(|out| {
            out.into_iter()
                .map(|arg| arg.into_string().unwrap())
                .collect()
        })
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
             --token-file /etc/t --memory-limit 64MiB"
        );
        let out = translated(&["none", "/mnt/x", "-n", "-o", "backend=mix"]).unwrap();
        assert_eq!(out.join(" "), "mount --daemon /mnt/x --backend mix");
        let out = translated(&["work:guild/general", "/mnt/g"]).unwrap();
        assert_eq!(out.join(" "), "mount --daemon work:guild/general /mnt/g");
        assert!(translated(&["a:", "/m", "-o", "colour=blue"]).is_err());
        assert!(translated(&["/m"]).is_err());
    }
}
