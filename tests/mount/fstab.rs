//! mount(8) itself: `mount -t sessionfs`, `mount -t fuse.sessionfs` and `mount -T FSTAB MNT`
//! with `-o` options, each checked by writing and reading a file. mount(8) finds its helper
//! only in /sbin, so the helpers are installed there as README says (a symlink to this
//! build, put in place atomically so parallel runs agree, and left for the next run).

use std::path::Path;
use std::time::Duration;

use crate::harness::{errno, q, sessionfs_command, sh, user_command, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");

/// `/sbin/mount.sessionfs` and `/sbin/mount.fuse.sessionfs` pointing at this build.
fn install_helpers() {
    for name in ["mount.sessionfs", "mount.fuse.sessionfs"] {
        let link = Path::new("/sbin").join(name);
        if std::fs::read_link(&link).is_ok_and(|target| target == Path::new(BIN)) {
            continue;
        }
        let temporary = Path::new("/sbin").join(format!(
            ".{name}.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink(BIN, &temporary).unwrap();
        std::fs::rename(&temporary, &link).unwrap();
    }
}

/// A home with a config file naming one remote, `notes:` (the embedded Mix emulator).
fn home_with_a_remote() -> (tempfile::TempDir, String) {
    home_with_remote("notes")
}

/// A home with a config file naming one remote, `name:` (the embedded Mix emulator).
fn home_with_remote(name: &str) -> (tempfile::TempDir, String) {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("sessionfs.toml");
    std::fs::write(&config, format!("[remotes.{name}]\nbackend = \"mix\"\n")).unwrap();
    let config = config.to_str().unwrap().to_string();
    (home, config)
}

/// mount(8) with `args` as the user of `home`. mount(8) clears `HOME` (the helper then takes
/// root's from the password database), so the XDG directories point into `home` instead:
/// the mount's data and cache stay in the test's directory.
fn mount8(home: &Path, args: &[&str]) -> std::process::Output {
    user_command("mount", home, args)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .output()
        .unwrap()
}

/// Writes a file through the mount at `mnt`, reads it back, and unmounts with `sessionfs
/// unmount` (which waits for the upload).
fn write_read_unmount(home: &Path, mnt: &Path, text: &str) {
    sh(&format!("mkdir -p {0}/s && echo {text} > {0}/s/f", q(mnt)));
    assert_eq!(
        std::fs::read_to_string(mnt.join("s/f")).unwrap(),
        format!("{text}\n")
    );
    let mode = sh(&format!("stat -c %a {}", q(mnt)));
    assert_eq!(mode.trim(), "700", "dir_mode= from -o reached the mount");
    let unmount = sessionfs_command(home, &["unmount", mnt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(unmount.status.success(), "{unmount:?}");
    assert!(
        home.join(".local/share/sessionfs/remotes/notes").is_dir(),
        "the embedded emulator keeps its data under the test's home"
    );
}

#[test]
fn mount_t_sessionfs_and_fuse_sessionfs_mount_a_named_remote() {
    install_helpers();
    for fs_type in ["sessionfs", "fuse.sessionfs"] {
        let (home, config) = home_with_a_remote();
        let mnt = tempfile::tempdir().unwrap();
        let options = format!("config={config},dir_mode=700,memory_limit=64MiB,_netdev,nofail");
        let output = mount8(
            home.path(),
            &[
                "-t",
                fs_type,
                "notes:",
                mnt.path().to_str().unwrap(),
                "-o",
                &options,
            ],
        );
        assert!(output.status.success(), "mount -t {fs_type}: {output:?}");
        assert!(
            output.stdout.is_empty(),
            "a mount helper prints nothing: {output:?}"
        );
        write_read_unmount(home.path(), mnt.path(), fs_type);
    }
}

#[test]
fn mount_t_fstab_mounts_the_line_for_its_mount_point() {
    install_helpers();
    let (home, config) = home_with_a_remote();
    let mnt = tempfile::tempdir().unwrap();
    let fstab = home.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a scratch fstab\nnotes:  {}  sessionfs  config={config},dir_mode=700,_netdev,nofail,x-systemd.automount  0 0\n",
            mnt.path().display()
        ),
    )
    .unwrap();
    let output = mount8(
        home.path(),
        &["-T", fstab.to_str().unwrap(), mnt.path().to_str().unwrap()],
    );
    assert!(output.status.success(), "mount -T: {output:?}");
    write_read_unmount(home.path(), mnt.path(), "from-fstab");
}

/// The mountinfo line of the mount at `mnt`, split at ` - `: (ID ... OPTIONS, TYPE SOURCE
/// SUPER).
fn mountinfo_of(mnt: &Path) -> Option<(String, String)> {
    let wanted = mnt.canonicalize().unwrap();
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (left.split(' ').nth(4) == wanted.to_str()).then(|| (left.to_string(), right.to_string()))
    })
}

/// The per-mount options of the mount at `mnt` (`rw,nosuid,...`).
fn mount_options(mnt: &Path) -> Vec<String> {
    let (left, _) = mountinfo_of(mnt).expect("mounted");
    left.split(' ')
        .nth(5)
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect()
}

#[test]
fn generic_options_reach_the_kernel_the_source_names_the_remote_and_remount_changes_flags() {
    install_helpers();
    // A remote name no other test mounts, so `umount NAME:` finds this mount alone.
    let name = format!("flags{}", std::process::id());
    let (home, config) = home_with_remote(&name);
    let mnt = tempfile::tempdir().unwrap();
    let mnt_arg = mnt.path().to_str().unwrap();
    let spec = format!("{name}:");
    let options = format!("config={config},noatime,nosuid,nodev,noexec,_netdev");
    let output = mount8(
        home.path(),
        &["-t", "fuse.sessionfs", &spec, mnt_arg, "-o", &options],
    );
    assert!(output.status.success(), "mount: {output:?}");
    assert!(
        output.stdout.is_empty(),
        "a mount helper prints nothing: {output:?}"
    );
    let flags = mount_options(mnt.path());
    for flag in ["rw", "noatime", "nosuid", "nodev", "noexec"] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
    let (_, right) = mountinfo_of(mnt.path()).unwrap();
    let mut fields = right.split(' ');
    assert_eq!(fields.next(), Some("fuse.sessionfs"));
    assert_eq!(
        fields.next(),
        Some(spec.as_str()),
        "the source is the remote"
    );
    let found = sh(&format!("findmnt -n -o TARGET -S {spec}"));
    assert_eq!(
        found.trim(),
        mnt.path().canonicalize().unwrap().to_str().unwrap()
    );

    sh(&format!("mkdir {0}/s && echo one > {0}/s/f", q(mnt.path())));
    // remount,ro makes the mount read-only; remount,rw makes it writable again.
    let output = mount8(home.path(), &["-o", "remount,ro", mnt_arg]);
    assert!(output.status.success(), "remount,ro: {output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(mount_options(mnt.path()).contains(&"ro".to_string()));
    assert!(
        mount_options(mnt.path()).contains(&"noexec".to_string()),
        "flags not named stay"
    );
    assert_eq!(
        errno(std::fs::write(mnt.path().join("s/g"), b"x")),
        libc::EROFS
    );
    let output = mount8(home.path(), &["-o", "remount,rw", mnt_arg]);
    assert!(output.status.success(), "remount,rw: {output:?}");
    std::fs::write(mnt.path().join("s/g"), b"two\n").unwrap();
    // The same through sessionfs itself.
    let output = sessionfs_command(home.path(), &["mount", "-o", "remount,exec", mnt_arg])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sessionfs mount -o remount: {output:?}"
    );
    let flags = mount_options(mnt.path());
    assert!(!flags.contains(&"noexec".to_string()), "{flags:?}");
    assert!(flags.contains(&"noatime".to_string()), "{flags:?}");
    // What the filesystem itself holds cannot change while mounted: said, and refused.
    let output = mount8(home.path(), &["-o", "remount,sync", mnt_arg]);
    assert!(!output.status.success(), "remount,sync: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot change sync"), "{stderr}");

    // umount by the source.
    sh(&format!("umount {spec}"));
    wait_until(Duration::from_secs(10), "the unmount", || {
        mountinfo_of(mnt.path()).is_none()
    });
    assert!(
        std::fs::read_dir(mnt.path()).unwrap().next().is_none(),
        "the files went to the remote, not the bare directory"
    );
    // The remote kept both files: mount it again and read them.
    let output = mount8(
        home.path(),
        &["-t", "sessionfs", &spec, mnt_arg, "-o", &options],
    );
    assert!(output.status.success(), "mount again: {output:?}");
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("s/f")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("s/g")).unwrap(),
        "two\n"
    );
    let unmount = sessionfs_command(home.path(), &["unmount", mnt_arg])
        .output()
        .unwrap();
    assert!(unmount.status.success(), "{unmount:?}");
    // The mount asked was the one on the path, not the earlier process still finishing.
    assert!(mountinfo_of(mnt.path()).is_none(), "the new mount is gone");
}
