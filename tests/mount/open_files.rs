//! 10 000 files open at once on one mount: one process creates them and keeps every
//! descriptor open, and the mount's own descriptors stay bounded (it keeps at most
//! `MAX_OPEN_STAGING_FILES` staging files open and reopens the others when touched), while
//! every file still reads back what was written to it.

use std::path::Path;
use std::time::Instant;

use sessionfs::write::staging::MAX_OPEN_STAGING_FILES;

use crate::harness::{Mounted, Reaped, python_until_written, q, sessionfs_command, sh};

/// Files held open at once.
const FILES: usize = 10_000;
/// Descriptors the mount may open besides its staging files (sockets, the store, the
/// journal, the FUSE device, those of requests in flight).
const OTHER_FDS: usize = 200;

/// Creates `argv[2]` files in `argv[1]`, then (all open, so most staging files must be
/// reopened) writes its number into each, says `written` and waits (on stdin) to be killed.
const HOLDER: &str = "import os, resource, sys\n\
                      n = int(sys.argv[2])\n\
                      soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
                      want = n + 256\n\
                      resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))\n\
                      fds = []\n\
                      for i in range(n):\n\
                      \x20   path = os.path.join(sys.argv[1], f'f{i:05}')\n\
                      \x20   fds.append(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))\n\
                      for i, fd in enumerate(fds):\n\
                      \x20   os.write(fd, str(i).encode())\n\
                      print('written', flush=True)\n\
                      sys.stdin.readline()\n";

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn ten_thousand_open_files_keep_the_mounts_descriptors_bounded() {
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let args = [
        "mount",
        mnt.path().to_str().unwrap(),
        "--metadata-ttl",
        "60s",
        "--write-back",
        "1h",
    ];
    let (mounted, _) = Mounted::start(sessionfs_command(home.path(), &args), mnt.path());
    let pid = mounted.child.id();
    // In a subdirectory of the session: creates at the top of a session cost ten times more
    // (about 3 ms each against 0.3 ms), which would make this test slow.
    let dir = mnt.path().join("many/held");
    std::fs::create_dir_all(&dir).unwrap();
    let before = open_fds(pid);

    let started = Instant::now();
    let count = FILES.to_string();
    let _holder = Reaped(python_until_written(HOLDER, &[&dir, Path::new(&count)]));
    let opened_in = started.elapsed();
    let during = open_fds(pid);
    eprintln!(
        "{FILES} files created and held open in {opened_in:?}: the mount holds {during} \
         descriptors ({before} before)"
    );
    assert!(
        during <= before + 2 * MAX_OPEN_STAGING_FILES + OTHER_FDS,
        "{during} descriptors with {FILES} files open ({before} before)"
    );

    // Every file reads back its own bytes, those whose staging file was closed too.
    let listed = sh(&format!("ls {} | wc -l", q(&dir)));
    assert_eq!(listed.trim(), count, "every file is listed");
    for i in [0, 1, FILES / 2, FILES - 1] {
        let path = dir.join(format!("f{i:05}"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), i.to_string());
    }
    assert!(open_fds(pid) <= before + 2 * MAX_OPEN_STAGING_FILES + OTHER_FDS);

    // Uploading 10 000 files is not this test's business: the mount is killed (and its mount
    // point detached) before the holder exits.
    drop(mounted);
}
