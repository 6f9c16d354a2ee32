//! Huge sparse files (issue #21): holes stay holes in the staging directory, a write or
//! truncate past the backend's largest file is EFBIG at once, and an upload the server refuses
//! as too large fails once and stays staged without being retried.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::fs::FsConfig;
use sessionfs::remote::mix::MAX_OBJECT_BYTES;

use crate::harness::{TestMount, errno, pseudo_random};

/// The sparse file's length: large enough that a copy writing its zeros would show, small
/// enough that uploading it (zeros included) stays about a second over loopback.
const SIZE: u64 = 64 << 20;
/// A staged copy of [`SIZE`] bytes with a few KiB of data may take this much disk at most.
const SPARSE_MAX_ON_DISK: u64 = 256 << 10;

/// A mount whose config `tweak` adjusts, and where its staging directory is.
fn mount_with(
    emulator: impl FnOnce(&mut EmulatorConfig),
    tweak: impl FnOnce(&mut FsConfig),
) -> (TestMount, PathBuf) {
    let staging = Arc::new(Mutex::new(PathBuf::new()));
    let seen = staging.clone();
    let mount = TestMount::backend(
        Backend::Mix,
        |dir| {
            let mut config = EmulatorConfig::new(dir);
            emulator(&mut config);
            config
        },
        None,
        |config| {
            tweak(config);
            *seen.lock().unwrap() = config.staging_dir.clone();
        },
    );
    let dir = staging.lock().unwrap().clone();
    (mount, dir)
}

/// The staging files (`staged-*`) in `dir`: length and bytes on disk of each.
fn staged_files(dir: &Path) -> Vec<(u64, u64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("staged-") {
            let meta = entry.metadata().unwrap();
            files.push((meta.len(), meta.blocks() * 512));
        }
    }
    files
}

fn read_at(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEE; len];
    file.read_exact_at(&mut buf, offset).unwrap();
    buf
}

#[test]
fn a_sparse_file_stays_sparse_in_staging_and_reads_back_whole() {
    // With --write-back a closed file waits staged, so writing it again snapshots it.
    let (mut mount, staging) = mount_with(
        |_| {},
        |config| config.write_back = Some(Duration::from_secs(3600)),
    );
    let path = mount.session_dir("sparse").join("disk.img");
    let tail = pseudo_random(4096, 21);
    let head = pseudo_random(4096, 22);
    let second = pseudo_random(4096, 23);

    // 4 KiB at SIZE - 8 KiB, fsynced (an upload of SIZE - 4 KiB, zeros included).
    let file = File::create(&path).unwrap();
    file.write_all_at(&tail, SIZE - 8192).unwrap();
    file.sync_all().unwrap();
    let staged = staged_files(&staging);
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert_eq!(staged[0].0, SIZE - 4096);
    assert!(
        staged[0].1 <= SPARSE_MAX_ON_DISK,
        "the staged copy takes {} bytes on disk",
        staged[0].1
    );
    drop(file);

    // Opened again for writing: the staged copy is downloaded, its zero blocks left as holes.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let staged = staged_files(&staging);
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(
        staged[0].1 <= SPARSE_MAX_ON_DISK,
        "the downloaded copy takes {} bytes on disk",
        staged[0].1
    );
    file.write_all_at(&head, 0).unwrap();
    drop(file); // committed, its upload waits an hour

    // Written again before that upload: the committed bytes are snapshotted, holes kept.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&second, 4096).unwrap();
    let staged = staged_files(&staging);
    assert_eq!(
        staged.len(),
        2,
        "the live copy and the snapshot: {staged:?}"
    );
    for (len, on_disk) in &staged {
        assert_eq!(*len, SIZE - 4096);
        assert!(
            *on_disk <= SPARSE_MAX_ON_DISK,
            "a staged copy takes {on_disk} bytes on disk"
        );
    }
    drop(file);

    // The unmount uploads it; a new mount reads it from the server.
    mount.remount();
    let file = File::open(&path).unwrap();
    assert_eq!(file.metadata().unwrap().len(), SIZE - 4096);
    assert_eq!(read_at(&file, 0, 4096), head);
    assert_eq!(read_at(&file, 4096, 4096), second);
    assert_eq!(read_at(&file, 8192, 4096), vec![0; 4096]);
    assert_eq!(read_at(&file, SIZE / 2, 4096), vec![0; 4096]);
    assert_eq!(read_at(&file, SIZE - 12288, 4096), vec![0; 4096]);
    assert_eq!(read_at(&file, SIZE - 8192, 4096), tail);
}

#[test]
fn writes_and_truncates_past_the_largest_file_answer_efbig_at_once() {
    // Listings stay fresh, so any request counted below would be an upload.
    let (mount, staging) = mount_with(
        |_| {},
        |config| config.metadata_ttl = Duration::from_secs(60),
    );
    let dir = mount.session_dir("huge");

    // A write ending one byte past Mix's largest file, into a new file.
    let file = File::create(dir.join("past-the-end")).unwrap();
    let requests = mount.requests_sent();
    assert_eq!(
        errno(file.write_all_at(b"x", MAX_OBJECT_BYTES)),
        libc::EFBIG
    );
    // The case: 16 TiB - 8 KiB.
    assert_eq!(
        errno(file.write_all_at(&[1; 4096], (16 << 40) - 8192)),
        libc::EFBIG
    );
    // A truncate past it (setattr size).
    assert_eq!(errno(file.set_len(MAX_OBJECT_BYTES + 1)), libc::EFBIG);
    assert_eq!(errno(file.set_len(16 << 40)), libc::EFBIG);
    // Answered at once: the server was never asked.
    assert_eq!(
        mount.requests_sent(),
        requests,
        "no request for a refused size"
    );
    // Nothing was staged: the file is empty, here and on disk.
    assert_eq!(file.metadata().unwrap().len(), 0);
    assert!(
        staged_files(&staging).iter().all(|(len, _)| *len == 0),
        "{:?}",
        staged_files(&staging)
    );
    // Answered at once: the server was never asked.
    assert_eq!(
        mount.requests_sent(),
        requests,
        "no request for a refused size"
    );
    // What fits still works.
    file.write_all_at(b"fits", 0).unwrap();
    file.set_len(8192).unwrap();
    drop(file);
    let back = std::fs::read(dir.join("past-the-end")).unwrap();
    assert_eq!(back.len(), 8192);
    assert_eq!(&back[..4], b"fits");

    // `truncate` over an existing file says "File too large" too.
    let out = crate::harness::sh_output(&format!(
        "truncate -s 65G {}",
        crate::harness::q(&dir.join("past-the-end"))
    ));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("File too large"), "{stderr}");
    assert_eq!(
        std::fs::metadata(dir.join("past-the-end")).unwrap().len(),
        8192
    );
}

#[test]
fn an_upload_refused_as_too_large_fails_once_and_stays_staged() {
    const LIMIT: u64 = 1 << 20;
    let (mount, staging) = mount_with(|config| config.max_upload_bytes = Some(LIMIT), |_| {});
    let dir = mount.session_dir("refused");
    let data = pseudo_random(2 * LIMIT as usize, 24);
    let file = File::create(dir.join("big")).unwrap();
    file.write_all_at(&data, 0).unwrap();
    assert_eq!(errno(file.sync_all()), libc::EFBIG, "the server's 413");
    // The same bytes again: refused without another upload.
    let requests = mount.requests_sent();
    assert_eq!(errno(file.sync_all()), libc::EFBIG);
    assert_eq!(mount.requests_sent(), requests, "not sent again");
    drop(file);
    assert!(
        mount
            .api_file_names(&mount.api_session_id("refused"))
            .is_empty()
    );

    // The drain at unmount skips it (kept for the next mount), instead of failing again.
    let drained = mount.runtime.block_on(mount.fs.drain());
    assert_eq!(drained.map_err(|err| err.message).unwrap(), 0);
    assert_eq!(mount.fs.staged_bytes(), 2 * LIMIT, "still staged");
    let journal: Vec<_> = std::fs::read_dir(staging.join("journal"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(journal.len(), 1, "still journaled: {journal:?}");
    assert_eq!(mount.runtime.block_on(mount.fs.keep_pending()), 1);
    assert!(
        staged_files(&staging)
            .iter()
            .any(|(len, _)| *len == 2 * LIMIT),
        "the staged copy is kept for the next mount: {:?}",
        staged_files(&staging)
    );
}
