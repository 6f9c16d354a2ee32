//! The `sessionfs` binary as a user runs it: the README's mount command, `serve` plus
//! `mount --endpoint`, clean exit on SIGTERM, and clear failures before anything is mounted.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::harness::{q, sessionfs_command, sh, sh_output, start_until, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let path = path.canonicalize().unwrap_or(path.to_path_buf());
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(path.to_str().unwrap()))
}

/// Starts `sessionfs` with `args` and waits for the line that says it is mounted (or serving).
fn start(args: &[&str], home: &Path, ready: &str) -> (Child, String) {
    start_until(sessionfs_command(home, args), ready)
}

/// A process that opens `file` (truncating it), writes `line` and keeps it open without ever
/// closing a descriptor of it (a shell's `exec 3>` would close one: its `dup2` then `close`
/// makes the kernel flush, which commits the empty file). Returns once the bytes are visible
/// through the mount.
fn hold_open_after_writing(file: &Path, line: &str) -> Child {
    let program = "import sys, time\n\
                   f = open(sys.argv[1], 'w')\n\
                   f.write(sys.argv[2] + '\\n')\n\
                   f.flush()\n\
                   time.sleep(30)\n";
    let writer = Command::new("python3")
        .args(["-c", program])
        .arg(file)
        .arg(line)
        .spawn()
        .unwrap();
    let len = line.len() as u64 + 1;
    wait_until(Duration::from_secs(10), "the write", || {
        std::fs::metadata(file).is_ok_and(|m| m.len() == len)
    });
    writer
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap()
}

#[test]
fn readme_mount_command_works_and_sigterm_unmounts_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mnt_arg = mnt.path().to_str().unwrap();
    let (mut child, banner) = start(&["mount", mnt_arg], home.path(), "unmount with");
    assert!(banner.contains("mix at http://127.0.0.1:"), "{banner}");
    assert!(
        banner.contains(".local/share/sessionfs/mix"),
        "names the data dir: {banner}"
    );
    assert!(is_mounted(mnt.path()));

    sh(&format!(
        "mkdir {0}/work && echo persisted > {0}/work/note.txt",
        q(mnt.path())
    ));
    let status = terminate(&mut child);
    assert!(status.success(), "exit status {status:?}");
    assert!(!is_mounted(mnt.path()), "unmounted on SIGTERM");
    assert!(std::fs::read_dir(mnt.path()).unwrap().next().is_none());

    // The embedded emulator's data survives: mount again and read it back.
    let (mut child, _) = start(&["mount", mnt_arg], home.path(), "unmount with");
    let text = std::fs::read_to_string(mnt.path().join("work/note.txt")).unwrap();
    assert_eq!(text, "persisted\n");
    // An external umount also ends the process cleanly.
    sh(&format!("umount {}", q(mnt.path())));
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigterm_uploads_a_file_that_is_still_open() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mnt_arg = mnt.path().to_str().unwrap();
    let (mut child, _) = start(&["mount", mnt_arg], home.path(), "unmount with");
    sh(&format!("mkdir {}/s", q(mnt.path())));
    // A writer that keeps its file open: nothing has been uploaded at close time yet.
    let file = mnt.path().join("s/open.txt");
    let mut writer = hold_open_after_writing(&file, "still-open");
    let status = terminate(&mut child);
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(status.success(), "exit status {status:?}");
    let _ = sh_output(&format!("umount {} 2>/dev/null", q(mnt.path())));

    let (mut child, _) = start(&["mount", mnt_arg], home.path(), "unmount with");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "still-open\n");
    terminate(&mut child);
}

#[test]
fn serve_and_mount_with_endpoint_work_like_a_real_server() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (mut server, banner) = start(
        &[
            "serve",
            "--backend",
            "mix",
            "--data",
            data.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        home.path(),
        "serving",
    );
    let endpoint = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("endpoint in banner")
        .to_string();
    let (mut mount, banner) = start(
        &[
            "mount",
            mnt.path().to_str().unwrap(),
            "--backend",
            "mix",
            "--endpoint",
            &endpoint,
        ],
        home.path(),
        "unmount with",
    );
    assert!(banner.contains(&endpoint), "{banner}");
    sh(&format!(
        "mkdir {0}/s && printf abc > {0}/s/f && cmp <(printf abc) {0}/s/f",
        q(mnt.path())
    ));
    let sessions = sh(&format!("curl -sf {endpoint}/api/sessions"));
    assert!(sessions.contains("\"title\":\"s\""), "{sessions}");
    assert!(terminate(&mut mount).success());
    assert!(terminate(&mut server).success());
}

#[test]
fn bad_mount_points_fail_clearly_and_mount_nothing() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("missing");
    let output = Command::new(BIN)
        .args(["mount", missing.to_str().unwrap()])
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");

    let full = tempfile::tempdir().unwrap();
    std::fs::write(full.path().join("x"), b"x").unwrap();
    let output = Command::new(BIN)
        .args(["mount", full.path().to_str().unwrap()])
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert!(!is_mounted(full.path()));

    let empty = tempfile::tempdir().unwrap();
    refuses_a_dead_endpoint(&[], empty.path(), home.path());
    assert!(!is_mounted(empty.path()));
}

#[test]
fn a_killed_mount_uploads_only_committed_content_and_keeps_the_rest_for_recovery() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mnt_arg = mnt.path().to_str().unwrap();
    let (mut child, _) = start(&["mount", mnt_arg], home.path(), "unmount with");
    sh(&format!(
        "mkdir {0}/s && echo saved > {0}/s/kept.txt",
        q(mnt.path())
    ));
    // Two files written and never closed: a new one, and a stored one opened again and
    // overwritten. Neither was committed, so neither may reach the server.
    let new_file = mnt.path().join("s/unsaved.txt");
    let kept = mnt.path().join("s/kept.txt");
    let mut writers = [
        hold_open_after_writing(&new_file, "not-yet-closed"),
        hold_open_after_writing(&kept, "half-written"),
    ];
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    for writer in &mut writers {
        let _ = writer.kill();
        let _ = writer.wait();
    }

    // The dead mount ("Transport endpoint is not connected") is cleaned up by the next mount,
    // which moves what was never committed into the recovery folder instead of uploading it.
    let (mut child, _) = start(&["mount", mnt_arg], home.path(), "unmount with");
    assert!(
        !new_file.exists(),
        "an uncommitted new file never reaches the server"
    );
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "saved\n",
        "the server keeps the last committed content"
    );
    assert!(terminate(&mut child).success());
    let recovery = home.path().join(".cache/sessionfs/recovery");
    for (name, content) in [
        ("unsaved.txt", "not-yet-closed\n"),
        ("kept.txt", "half-written\n"),
    ] {
        let found = sh(&format!(
            "find {} -type f -name '{name}.recovered-*'",
            q(&recovery)
        ));
        let paths: Vec<&str> = found.lines().collect();
        assert_eq!(paths.len(), 1, "{name} in the recovery folder: {found}");
        assert_eq!(std::fs::read_to_string(paths[0]).unwrap(), content);
    }
    let staging = home.path().join(".cache/sessionfs/staging");
    let leftovers = sh(&format!(
        "find {} -type f -name 'staged-*' -o -name '*.json' | wc -l",
        q(&staging)
    ));
    assert_eq!(leftovers.trim(), "0", "nothing pending stays behind");
}

#[test]
fn daemon_returns_once_the_mount_is_ready_and_unmount_stops_it() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["mount", "--daemon", mnt.path().to_str().unwrap()])
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let banner = String::from_utf8_lossy(&output.stdout);
    assert!(banner.contains("in the background"), "{banner}");
    assert!(is_mounted(mnt.path()), "ready when --daemon returns");
    sh(&format!(
        "mkdir {0}/d && echo hi > {0}/d/f && cat {0}/d/f",
        q(mnt.path())
    ));

    let unmount = Command::new(BIN)
        .args(["unmount", mnt.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(unmount.status.success(), "{unmount:?}");
    wait_until(Duration::from_secs(10), "the unmount", || {
        !is_mounted(mnt.path())
    });

    // A daemon that cannot mount says why and fails.
    refuses_a_dead_endpoint(&["--daemon"], mnt.path(), home.path());
}

/// `sessionfs mount [flags] MNT --endpoint <nothing listening>` fails and names the endpoint.
fn refuses_a_dead_endpoint(flags: &[&str], mnt: &Path, home: &Path) {
    let output = Command::new(BIN)
        .arg("mount")
        .args(flags)
        .args([mnt.to_str().unwrap(), "--endpoint", "http://127.0.0.1:9"])
        .env("HOME", home)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach http://127.0.0.1:9"),
        "{stderr}"
    );
}
