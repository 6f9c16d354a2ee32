//! `sessionfs status`, `sessionfs unmount` and systemd readiness through the real binary: a
//! slow chunked upload shows as pending with growing bytes, a refused upload as failed with
//! its reason (in that mount's report only), the password never shows, every mount of the
//! user is listed and dead sockets are dropped, `unmount --timeout` keeps what it could not
//! upload (exit 3), and READY=1 reaches a `NOTIFY_SOCKET` only once the mount answers,
//! STOPPING=1 at the unmount.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{q, sessionfs_command, sh_output, start_until, wait_until};

const PASSWORD: &str = "status-test-password-9731";
const USER: &str = "status@example.com";

/// `sessionfs status ARGS` as the user of `home`: its stdout, after checking it succeeded.
fn status(home: &Path, args: &[&str]) -> String {
    let mut argv = vec!["status"];
    argv.extend_from_slice(args);
    let output = sessionfs_command(home, &argv).output().unwrap();
    assert!(output.status.success(), "status {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn status_json(home: &Path, mnt: &Path) -> Value {
    serde_json::from_str(&status(home, &[mnt.to_str().unwrap(), "--json"])).unwrap()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap()
}

/// An Appmixer emulator with one account, each request delayed by `latency`; returns it and
/// its endpoint.
fn appmixer_server(home: &Path, data: &Path, latency: &str) -> (Child, String) {
    let login = format!("{USER}:{PASSWORD}");
    let (server, banner) = start_until(
        sessionfs_command(
            home,
            &[
                "serve",
                "--backend",
                "appmixer",
                "--user",
                &login,
                "--latency",
                latency,
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
            ],
        ),
        "serving",
    );
    (server, endpoint_of(&banner))
}

fn endpoint_of(banner: &str) -> String {
    banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap()
        .to_string()
}

/// Mounts the Appmixer emulator at `endpoint` with 1 MiB chunks sent one at a time (so a slow
/// server shows the bytes growing chunk by chunk), the password from a file.
fn mount_appmixer(home: &Path, mnt: &Path, endpoint: &str) -> Child {
    let password_file = home.join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = sessionfs_command(
        home,
        &[
            "mount",
            mnt.to_str().unwrap(),
            "--backend",
            "appmixer",
            "--endpoint",
            endpoint,
            "--user",
            USER,
            "--password-file",
            password_file.to_str().unwrap(),
            "--chunk-size",
            "1MiB",
            "--upload-parallel",
            "1",
        ],
    );
    command.env("RUST_LOG", "debug");
    start_until(command, "unmount with").0
}

/// An Appmixer emulator that delays each request, mounted through the binary; the mount and
/// the server are stopped when this is dropped (a failed test leaves neither behind).
struct SlowMount {
    home: tempfile::TempDir,
    mnt: tempfile::TempDir,
    _data: tempfile::TempDir,
    endpoint: String,
    server: Child,
    mount: Child,
}

fn slow_mount(latency: &str) -> SlowMount {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (server, endpoint) = appmixer_server(home.path(), data.path(), latency);
    let mount = mount_appmixer(home.path(), mnt.path(), &endpoint);
    SlowMount {
        home,
        mnt,
        _data: data,
        endpoint,
        server,
        mount,
    }
}

impl Drop for SlowMount {
    fn drop(&mut self) {
        if self.mount.try_wait().is_ok_and(|status| status.is_none()) {
            terminate(&mut self.mount);
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn pending_of<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    report["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|file| file["path"] == path)
}

#[test]
fn status_shows_a_slow_upload_pending_with_growing_bytes_and_never_the_password() {
    let mut slow = slow_mount("200ms");
    let (home, mnt, endpoint) = (&slow.home, &slow.mnt, slow.endpoint.clone());

    let source = home.path().join("big.bin");
    std::fs::write(&source, crate::harness::pseudo_random(8 << 20, 15)).unwrap();
    let mut copy = Command::new("cp")
        .arg(&source)
        .arg(mnt.path().join("big.bin"))
        .spawn()
        .unwrap();
    // Each 1 MiB chunk waits 200 ms at the server: the bytes sent grow while cp waits in close.
    let mut seen = Vec::new();
    let started = Instant::now();
    while copy.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
        let report = status_json(home.path(), mnt.path());
        // While cp still writes, the file waits with what is staged so far; at close it uploads.
        if let Some(file) = pending_of(&report, "big.bin").filter(|file| file["uploading"] == true)
        {
            assert_eq!(file["bytes_total"], 8 << 20);
            let done = file["bytes_done"].as_u64().unwrap();
            if seen.last() != Some(&done) {
                seen.push(done);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(copy.wait().unwrap().success());
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]) && seen.len() >= 2,
        "bytes sent while pending, in the order seen: {seen:?}"
    );

    let report = status_json(home.path(), mnt.path());
    assert!(pending_of(&report, "big.bin").is_none(), "{report}");
    assert_eq!(report["backend"], "appmixer");
    assert_eq!(report["endpoint"], endpoint.as_str());
    assert_eq!(
        report["mountpoint"],
        mnt.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert!(
        report["requests"]["requests"].as_u64().unwrap() >= 8,
        "{report}"
    );
    let text = status(home.path(), &[]);
    assert!(text.contains("appmixer at http://127.0.0.1:"), "{text}");
    assert!(text.contains("pending uploads: 0"), "{text}");
    for shown in [text, report.to_string()] {
        assert!(!shown.contains(PASSWORD), "the password shows: {shown}");
    }

    assert!(terminate(&mut slow.mount).success());
}

#[test]
fn status_shows_a_refused_upload_with_the_reason_and_lists_every_mount() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut server, banner) = start_until(
        sessionfs_command(
            home.path(),
            &[
                "serve",
                "--max-upload-size",
                "1MiB",
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.path().to_str().unwrap(),
            ],
        ),
        "serving",
    );
    let endpoint = endpoint_of(&banner);
    let mounts: Vec<(tempfile::TempDir, Child)> = (0..2)
        .map(|_| {
            let mnt = tempfile::tempdir().unwrap();
            let child = start_until(
                sessionfs_command(
                    home.path(),
                    &[
                        "mount",
                        mnt.path().to_str().unwrap(),
                        "--endpoint",
                        &endpoint,
                    ],
                ),
                "unmount with",
            )
            .0;
            (mnt, child)
        })
        .collect();
    let mnt = mounts[0].0.path();
    // A socket nobody listens on, as a killed mount leaves behind.
    let sockets = home.path().join("run");
    let stale = sockets.join("999999999.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());

    let copy = sh_output(&format!(
        "mkdir {0}/s && head -c 2000000 /dev/zero > {0}/s/big.bin",
        q(mnt)
    ));
    let stderr = String::from_utf8_lossy(&copy.stderr);
    assert!(
        stderr.contains("File too large"),
        "EFBIG at close: {stderr}"
    );
    let report = status_json(home.path(), mnt);
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["path"], "s/big.bin");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("413") || reason.contains("too large"),
        "{reason}"
    );
    let text = status(home.path(), &[mnt.to_str().unwrap()]);
    assert!(text.contains("failed uploads: 1"), "{text}");
    assert!(text.contains("s/big.bin"), "{text}");
    // The other mount of the same server reports its own uploads and requests, not these.
    let other = status_json(home.path(), mounts[1].0.path());
    assert_eq!(other["failed"], Value::Array(Vec::new()), "{other}");
    assert_eq!(other["pending"], Value::Array(Vec::new()), "{other}");
    assert!(
        other["requests"]["requests"].as_u64().unwrap()
            < report["requests"]["requests"].as_u64().unwrap(),
        "{other}\n{report}"
    );

    let all: Value = serde_json::from_str(&status(home.path(), &["--json"])).unwrap();
    let mut listed: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|report| report["mountpoint"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = mounts
        .iter()
        .map(|(mnt, _)| mnt.path().canonicalize().unwrap().display().to_string())
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(!stale.exists(), "the dead mount's socket is removed");

    for (_, mut child) in mounts {
        terminate(&mut child);
    }
    let none = status(home.path(), &[]);
    assert_eq!(none.trim(), "no sessionfs mounts running");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn unmount_with_a_timeout_keeps_what_it_could_not_upload_and_says_so() {
    // 8 chunks at 2 s each: far longer than the timeout.
    let mut slow = slow_mount("2s");
    let (home, mnt) = (&slow.home, &slow.mnt);
    // Written and flushed to the mount, never closed: nothing uploads it before the drain.
    let file = mnt.path().join("open.bin");
    let program = "import sys, time\n\
                   f = open(sys.argv[1], 'wb')\n\
                   f.write(b'x' * (8 << 20))\n\
                   f.flush()\n\
                   time.sleep(120)\n";
    let mut writer = Command::new("python3")
        .args(["-c", program])
        .arg(&file)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the write", || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() == 8 << 20)
    });
    let report = status_json(home.path(), mnt.path());
    let pending = pending_of(&report, "open.bin").expect("pending before the unmount");
    assert_eq!(pending["bytes_total"], 8 << 20);

    let unmount = sessionfs_command(
        home.path(),
        &["unmount", mnt.path().to_str().unwrap(), "--timeout", "1s"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&unmount.stderr);
    assert_eq!(unmount.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("1 file(s) left to upload"),
        "progress: {stderr}"
    );
    assert!(stderr.contains("1 file(s) stay pending"), "{stderr}");
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(slow.mount.wait().unwrap().success());
    let staging = std::fs::read_dir(home.path().join(".cache/sessionfs/staging"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let kept = std::fs::read_dir(&staging)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("staged-"))
        .count();
    assert_eq!(kept, 1, "the staged copy stays for the next mount");
}

#[test]
fn systemd_hears_ready_only_once_the_mount_answers_and_stopping_at_the_unmount() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let notify_path = home.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut command = sessionfs_command(home.path(), &["mount", mnt.path().to_str().unwrap()]);
    command.env("NOTIFY_SOCKET", &notify_path);
    // Not waiting for the banner: READY=1 alone says when to look.
    let mut mount = command.stdout(std::process::Stdio::null()).spawn().unwrap();
    let mut buffer = [0u8; 256];
    let n = notify.recv(&mut buffer).expect("READY=1 within a minute");
    assert_eq!(std::str::from_utf8(&buffer[..n]).unwrap().trim(), "READY=1");
    // The moment READY=1 arrives, the mount point is the FUSE file system and answers.
    let fs_type = crate::harness::sh(&format!("stat -f -c %T {}", q(mnt.path())));
    assert_eq!(fs_type.trim(), "fuseblk", "{fs_type}");
    std::fs::create_dir(mnt.path().join("ready")).unwrap();
    assert!(mnt.path().join("ready").is_dir());

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(mount.id() as i32, libc::SIGTERM) };
    let n = notify.recv(&mut buffer).expect("STOPPING=1 at the unmount");
    assert_eq!(
        std::str::from_utf8(&buffer[..n]).unwrap().trim(),
        "STOPPING=1"
    );
    assert!(mount.wait().unwrap().success());
}
