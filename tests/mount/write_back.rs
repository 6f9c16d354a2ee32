//! `mount --write-back DELAY` as a user runs it: closes return before the upload, `umount`
//! uploads every file still waiting, and a mount killed before the delay leaves its closed
//! files to the next mount.

use std::path::Path;

use crate::harness::{Mounted, endpoint_in, q, sessionfs_command, sh};

/// Starts `sessionfs mount` on `mountpoint` with `args` (embedded Mix emulator, data under
/// `home`) and returns it and the emulator's endpoint from its banner.
fn mount(home: &Path, mountpoint: &Path, args: &[&str]) -> (Mounted, String) {
    let mut all = vec![
        "mount",
        mountpoint.to_str().unwrap(),
        "--metadata-ttl",
        "60s",
    ];
    all.extend_from_slice(args);
    let (mounted, banner) = Mounted::start(sessionfs_command(home, &all), mountpoint);
    (mounted, endpoint_in(&banner))
}

/// Files in session `title`, as the server lists them (the mount's own view may run ahead).
fn stored_names(endpoint: &str, title: &str) -> Vec<String> {
    let sessions: serde_json::Value =
        serde_json::from_str(&sh(&format!("curl -fs {endpoint}/api/sessions"))).unwrap();
    let id = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"] == title)
        .expect("the session made through the mount")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let files: serde_json::Value =
        serde_json::from_str(&sh(&format!("curl -fs {endpoint}/api/sessions/{id}/files"))).unwrap();
    files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

/// Writes `count` files into `dir`, each created, written and closed once.
fn write_files(dir: &Path, count: usize) {
    sh(&format!(
        "python3 -c 'import sys\nfor i in range({count}):\n    \
         open(f\"{{sys.argv[1]}}/f{{i:02}}\", \"w\").write(f\"file {{i}}\\n\" * (i + 1))' {}",
        q(dir)
    ));
}

fn check_files(dir: &Path, count: usize) {
    for i in 0..count {
        let text = std::fs::read_to_string(dir.join(format!("f{i:02}"))).unwrap();
        assert_eq!(text, format!("file {i}\n").repeat(i + 1), "f{i:02}");
    }
}

/// Nothing is left pending in the staging directory under `home`.
fn nothing_pending(home: &Path) {
    let staging = home.join(".cache/sessionfs/staging");
    let left = sh(&format!(
        "find {} -type f \\( -name 'staged-*' -o -name '*.json' \\) | wc -l",
        q(&staging)
    ));
    assert_eq!(left.trim(), "0", "nothing stays pending");
}

#[test]
fn closes_return_before_the_upload_and_umount_uploads_every_waiting_file() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (mounted, endpoint) = mount(home.path(), mnt.path(), &["--write-back", "1h"]);
    let dir = mnt.path().join("wb");
    std::fs::create_dir(&dir).unwrap();
    write_files(&dir, 30);
    // A git clone renames its lock files over others while they wait: all local until then.
    let repo = tempfile::tempdir().unwrap();
    sh(&format!(
        "cd {0} && git init -q && for i in $(seq 20); do echo line $i > f$i.txt; done && \
         git add -A && git -c user.email=t@e -c user.name=t commit -qm files",
        q(repo.path())
    ));
    sh(&format!(
        "git clone -q {} {}",
        q(repo.path()),
        q(&dir.join("clone"))
    ));
    check_files(&dir, 30);
    // Directories are made on the server at once (an empty marker object each); files wait.
    let files: Vec<String> = stored_names(&endpoint, "wb")
        .into_iter()
        .filter(|name| !name.ends_with('\u{ff0f}'))
        .collect();
    assert_eq!(
        files,
        Vec::<String>::new(),
        "an hour's delay: no file is uploaded yet"
    );

    mounted.unmount();
    nothing_pending(home.path());

    // A new mount without write-back reads everything back from the server.
    let (mounted, _) = mount(home.path(), mnt.path(), &[]);
    check_files(&dir, 30);
    sh(&format!(
        "diff -r -x .git {} {}",
        q(repo.path()),
        q(&dir.join("clone"))
    ));
    sh(&format!(
        "cd {} && git status --porcelain",
        q(&dir.join("clone"))
    ));
    mounted.unmount();
}

#[test]
fn a_mount_killed_before_the_delay_leaves_its_closed_files_to_the_next_mount() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (mounted, _) = mount(home.path(), mnt.path(), &["--write-back", "1h"]);
    let dir = mnt.path().join("crash");
    std::fs::create_dir(&dir).unwrap();
    write_files(&dir, 10);
    mounted.kill();

    // The next mount (which also clears the dead mount point) uploads them from the journal.
    let (mounted, endpoint) = mount(home.path(), mnt.path(), &[]);
    let mut names = stored_names(&endpoint, "crash");
    names.sort();
    assert_eq!(
        names.len(),
        10,
        "every closed file is on the server: {names:?}"
    );
    check_files(&dir, 10);
    nothing_pending(home.path());
    mounted.unmount();
}
