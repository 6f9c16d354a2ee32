//! `umount MNT` followed at once by a new mount on MNT (what `systemctl restart`, fstab
//! remounts and scripts do): the old process, finishing its drain, must leave the new mount
//! alone. Before the daemon unmounted only the mount it made, the new mount was gone 1.5 s
//! later in 3 tries of 3, and later writes landed in the bare directory.

use std::path::Path;
use std::time::Duration;

use crate::harness::{Mounted, q, sessionfs_command, sh, start_with_endpoint};

/// How many restarts.
const RESTARTS: usize = 3;

/// Longer than the old process's drain and its 200 ms poll for the end of its session.
const SETTLE: Duration = Duration::from_secs(2);

fn mountinfo_line(mnt: &Path) -> Option<String> {
    let path = mnt.canonicalize().unwrap();
    let wanted = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4) == Some(wanted))
        .map(str::to_string)
}

#[test]
fn umount_then_mount_at_once_keeps_the_new_mount() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mnt_arg = mnt.path().to_str().unwrap();
    let (server, endpoint) = start_with_endpoint(
        sessionfs_command(
            home.path(),
            &[
                "serve",
                "--backend",
                "mix",
                "--data",
                data.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
        ),
        "serving",
    );
    let _server = crate::harness::Reaped(server);
    let mount = || {
        Mounted::start(
            sessionfs_command(home.path(), &["mount", mnt_arg, "--endpoint", &endpoint]),
            mnt.path(),
        )
        .0
    };
    let mut current = mount();
    sh(&format!("mkdir {}/s", q(mnt.path())));
    let mut old_processes = Vec::new();
    for round in 0..RESTARTS {
        // A plain umount, and the new mount at once; the old process ends by itself.
        sh(&format!("umount {}", q(mnt.path())));
        old_processes.push(current);
        current = mount();
        let line = mountinfo_line(mnt.path()).expect("mounted");
        std::thread::sleep(SETTLE);
        assert_eq!(
            mountinfo_line(mnt.path()).as_deref(),
            Some(line.as_str()),
            "round {round}: the new mount is still there after the old process ended"
        );
        let name = format!("after-restart-{round}");
        sh(&format!("echo {round} > {}/s/{name}", q(mnt.path())));
        let stored = sh(&format!("curl -sf {endpoint}/api/sessions"));
        let session = serde_json::from_str::<serde_json::Value>(&stored).unwrap();
        let id = session
            .as_array()
            .and_then(|all| all.iter().find(|s| s["title"] == "s"))
            .map(|s| s["id"].as_str().unwrap().to_string())
            .expect("session s on the server");
        let files = sh(&format!("curl -sf {endpoint}/api/sessions/{id}/files"));
        assert!(
            files.contains(&name),
            "round {round}: {name} reached the server: {files}"
        );
    }
    for mut old in old_processes {
        let status = old.child.wait().unwrap();
        assert!(status.success(), "an old mount process ended with {status}");
    }
    current.unmount();
    assert!(
        std::fs::read_dir(mnt.path()).unwrap().next().is_none(),
        "nothing was written into the bare directory"
    );
}
