//! Core tests on the in-memory remote: what the filesystem asks of the remote, counted.

mod shapes;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::tree::{Ino, ROOT_INO};
use super::{Caller, FsConfig, SessionFs};
use sessionfs_remote::faulty::{FaultyRemote, When};
use sessionfs_remote::memory::MemoryRemote;
use sessionfs_remote::{ErrorKind, ObjectMeta, Remote};

struct Fixture {
    memory: Arc<MemoryRemote>,
    faulty: Arc<FaultyRemote>,
    fs: Arc<SessionFs>,
    session_id: String,
    session: Ino,
    staging: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    fixture_over(MemoryRemote::new()).await
}

async fn fixture_over(memory: MemoryRemote) -> Fixture {
    fixture_with(memory, |_| {}).await
}

async fn fixture_with(memory: MemoryRemote, tweak: impl FnOnce(&mut FsConfig)) -> Fixture {
    let memory = Arc::new(memory);
    let session_id = memory.create_container("s").await.unwrap().id;
    let faulty = Arc::new(FaultyRemote::new(memory.clone()));
    let staging = tempfile::tempdir().unwrap();
    let mut config = FsConfig::new(staging.path());
    config.metadata_ttl = Duration::from_secs(60);
    tweak(&mut config);
    let remote: Arc<dyn Remote> = faulty.clone();
    let fs = Arc::new(SessionFs::new(remote, config).unwrap());
    fs.start_delayed_uploads(&tokio::runtime::Handle::current());
    let session = fs.lookup(ROOT_INO, "s").await.unwrap().attr.ino;
    Fixture {
        memory,
        faulty,
        fs,
        session_id,
        session,
        staging,
    }
}

#[tokio::test]
async fn one_listing_answers_every_lookup_and_miss_in_a_directory() {
    let f = fixture().await;
    for i in 0..50 {
        f.memory.put(&f.session_id, &format!("f{i}"), b"x");
    }
    for i in 0..50 {
        let entry = f.fs.lookup(f.session, &format!("f{i}")).await.unwrap();
        assert_eq!(entry.attr.size, 1);
    }
    assert_eq!(
        f.fs.lookup(f.session, "missing").await.unwrap_err().errno,
        libc::ENOENT
    );
    assert_eq!(f.memory.calls("list"), 1);
    assert_eq!(f.memory.calls("read"), 0);
}

#[tokio::test]
async fn repeated_flushes_upload_once_and_close_uploads_nothing_more() {
    let f = fixture().await;
    let (entry, opened) =
        f.fs.create(f.session, "new.txt", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    let ino = entry.attr.ino;
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    f.fs.flush(ino, opened.fh).await.unwrap();
    f.fs.flush(ino, opened.fh).await.unwrap();
    f.fs.release(ino, opened.fh).await.unwrap();
    assert_eq!(f.memory.calls("upload"), 1);
    assert_eq!(f.memory.get(&f.session_id, "new.txt").unwrap(), "hello");
}

#[tokio::test]
async fn a_failed_upload_keeps_the_bytes_and_the_next_flush_retries() {
    let f = fixture().await;
    f.faulty
        .fail("upload", When::Nth(1), ErrorKind::Unavailable);
    let (entry, opened) =
        f.fs.create(f.session, "keep.txt", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    let ino = entry.attr.ino;
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"precious"))
        .await
        .unwrap();
    let err = f.fs.flush(ino, opened.fh).await.unwrap_err();
    assert_eq!(err.errno, libc::EIO);
    assert!(f.memory.get(&f.session_id, "keep.txt").is_none());
    f.fs.flush(ino, opened.fh).await.unwrap();
    f.fs.release(ino, opened.fh).await.unwrap();
    assert_eq!(f.memory.get(&f.session_id, "keep.txt").unwrap(), "precious");
}

#[tokio::test]
async fn rename_reuploads_under_the_new_name_and_deletes_the_old() {
    let f = fixture().await;
    f.memory.put(&f.session_id, "old", b"content");
    f.fs.lookup(f.session, "old").await.unwrap();
    f.fs.rename(f.session, "old", f.session, "new", false)
        .await
        .unwrap();
    assert!(f.memory.get(&f.session_id, "old").is_none());
    assert_eq!(f.memory.get(&f.session_id, "new").unwrap(), "content");
    assert_eq!(f.memory.calls("upload"), 1);
    assert_eq!(f.memory.calls("delete"), 1);
}

#[tokio::test]
async fn scratch_files_are_never_uploaded() {
    let f = fixture().await;
    let (entry, opened) =
        f.fs.create(f.session, ".notes.swp", 0o600, false, Caller::ROOT)
            .await
            .unwrap();
    f.fs.write(entry.attr.ino, opened.fh, 0, Bytes::from_static(b"swap"))
        .await
        .unwrap();
    f.fs.flush(entry.attr.ino, opened.fh).await.unwrap();
    f.fs.release(entry.attr.ino, opened.fh).await.unwrap();
    assert_eq!(f.memory.calls("upload"), 0);
    let opened =
        f.fs.open(entry.attr.ino, false, false, false)
            .await
            .unwrap();
    let bytes = f.fs.read(entry.attr.ino, opened.fh, 0, 100).await.unwrap();
    assert_eq!(bytes, "swap", "the local copy still serves reads");
    f.fs.unlink(f.session, ".notes.swp").await.unwrap();
    assert_eq!(f.memory.calls("delete"), 0);
}

#[tokio::test]
async fn a_dead_server_still_answers_from_the_last_listing() {
    let f = fixture().await;
    f.memory.put(&f.session_id, "seen", b"abc");
    let staging = tempfile::tempdir().unwrap();
    let mut config = FsConfig::new(staging.path());
    // With a zero TTL every lookup lists again, so each one meets the dead server.
    config.metadata_ttl = Duration::ZERO;
    let remote: Arc<dyn Remote> = f.faulty.clone();
    let fs = Arc::new(SessionFs::new(remote, config).unwrap());
    fs.start_delayed_uploads(&tokio::runtime::Handle::current());
    let session = fs.lookup(ROOT_INO, "s").await.unwrap().attr.ino;
    fs.lookup(session, "seen").await.unwrap();

    for operation in ["list", "list_containers", "read"] {
        f.faulty
            .fail(operation, When::Always, ErrorKind::Unavailable);
    }
    let ino = fs.lookup(session, "seen").await.unwrap().attr.ino;
    assert_eq!(fs.getattr(ino).await.unwrap().size, 3);
    let opened = fs.open(ino, false, false, false).await.unwrap();
    assert_eq!(
        fs.read(ino, opened.fh, 0, 3).await.unwrap_err().errno,
        libc::EIO
    );

    let staging = tempfile::tempdir().unwrap();
    let remote: Arc<dyn Remote> = f.faulty.clone();
    let never_listed = SessionFs::new(remote, FsConfig::new(staging.path())).unwrap();
    let err = never_listed.lookup(ROOT_INO, "s").await.unwrap_err();
    assert_eq!(err.errno, libc::EIO, "without any listing the error shows");
}

#[tokio::test]
async fn a_file_written_in_order_is_uploaded_while_it_is_written() {
    let f = fixture_over(MemoryRemote::new().with_streaming()).await;
    let (entry, opened) =
        f.fs.create(f.session, "seq.bin", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    let ino = entry.attr.ino;
    for i in 0..10u8 {
        f.fs.write(
            ino,
            opened.fh,
            u64::from(i) * 3,
            Bytes::copy_from_slice(&[i; 3]),
        )
        .await
        .unwrap();
    }
    f.fs.flush(ino, opened.fh).await.unwrap();
    f.fs.release(ino, opened.fh).await.unwrap();
    assert_eq!(f.memory.calls("upload_stream"), 1);
    assert_eq!(f.memory.calls("upload"), 0);
    let expected: Vec<u8> = (0..10u8).flat_map(|i| [i; 3]).collect();
    assert_eq!(f.memory.get(&f.session_id, "seq.bin").unwrap(), expected);
}

#[tokio::test]
async fn a_write_out_of_order_drops_the_stream_and_uploads_the_staged_copy() {
    let f = fixture_over(MemoryRemote::new().with_streaming()).await;
    let (entry, opened) =
        f.fs.create(f.session, "rand.bin", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    let ino = entry.attr.ino;
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"J"))
        .await
        .unwrap();
    f.fs.flush(ino, opened.fh).await.unwrap();
    f.fs.release(ino, opened.fh).await.unwrap();
    assert_eq!(f.memory.calls("upload"), 1);
    assert_eq!(
        f.memory.get(&f.session_id, "rand.bin").unwrap(),
        "Jello world"
    );
}

#[tokio::test]
async fn without_memory_for_its_queue_a_file_is_uploaded_at_close_instead_of_streamed() {
    let f = fixture_with(MemoryRemote::new().with_streaming(), |config| {
        config.cache.memory_limit = crate::write::QUEUE_BYTES / 2;
    })
    .await;
    let (entry, opened) =
        f.fs.create(f.session, "big.bin", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    let ino = entry.attr.ino;
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"streamed?"))
        .await
        .unwrap();
    f.fs.flush(ino, opened.fh).await.unwrap();
    f.fs.release(ino, opened.fh).await.unwrap();
    assert_eq!(f.memory.calls("upload_stream"), 0);
    assert_eq!(f.memory.calls("upload"), 1);
    assert_eq!(
        f.memory.get(&f.session_id, "big.bin").unwrap(),
        &b"streamed?"[..]
    );
}

#[tokio::test]
async fn two_cores_in_one_process_report_their_own_upload_failures() {
    async fn write_and_flush(f: &Fixture) -> (Ino, u64, super::error::Result<()>) {
        let (entry, opened) =
            f.fs.create(f.session, "doc.txt", 0o644, false, Caller::ROOT)
                .await
                .unwrap();
        let ino = entry.attr.ino;
        f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"text"))
            .await
            .unwrap();
        let flushed = f.fs.flush(ino, opened.fh).await;
        (ino, opened.fh, flushed)
    }

    let (first_uploads, second_uploads) = Default::default();
    let first = fixture_with(MemoryRemote::new(), |config| {
        config.uploads = first_uploads;
    })
    .await;
    let second = fixture_with(MemoryRemote::new(), |config| {
        config.uploads = second_uploads;
    })
    .await;
    first
        .faulty
        .fail("upload", When::Nth(1), ErrorKind::Unavailable);
    let (ino, fh, flushed) = write_and_flush(&first).await;
    assert!(flushed.is_err());
    let (second_ino, second_fh, flushed) = write_and_flush(&second).await;
    flushed.unwrap();
    second.fs.release(second_ino, second_fh).await.unwrap();

    let (active, failed) = first.fs.config.uploads.snapshot();
    assert!(active.is_empty(), "{active:?}");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].path, "s/doc.txt");
    assert_eq!(
        second.fs.config.uploads.snapshot(),
        (Vec::new(), Vec::new()),
        "the other core's failure is not this one's"
    );
    // The retry succeeds: the failure no longer stands.
    first.fs.flush(ino, fh).await.unwrap();
    first.fs.release(ino, fh).await.unwrap();
    assert!(first.fs.config.uploads.snapshot().1.is_empty());
}

#[tokio::test]
async fn after_a_crash_only_the_last_committed_content_is_uploaded() {
    let f = fixture().await;
    f.faulty
        .fail("upload", When::Always, ErrorKind::Unavailable);
    let (entry, opened) =
        f.fs.create(f.session, "doc.txt", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    let ino = entry.attr.ino;
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"committed"))
        .await
        .unwrap();
    // The close commits "committed", but the server is down, so it stays pending.
    assert_eq!(
        f.fs.flush(ino, opened.fh).await.unwrap_err().errno,
        libc::EIO
    );
    // Written again and never closed: this must not reach the server after a crash.
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"half-done"))
        .await
        .unwrap();
    // The process dies: what is pending stays on disk for the next mount.
    f.fs.keep_pending().await;

    let (done, recovery) = replay_as_the_next_mount(&f).await;
    assert_eq!((done.uploaded, done.recovered), (1, 1));
    assert_eq!(f.memory.get(&f.session_id, "doc.txt").unwrap(), "committed");
    let found = std::fs::read_dir(recovery.path().join(&f.session_id))
        .unwrap()
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        found,
        [b"half-done".to_vec()],
        "kept locally, never uploaded"
    );
}

#[tokio::test]
async fn stored_attributes_outlive_the_mount_until_the_server_changes_the_object() {
    use super::namespace::SetAttr;
    let memory = Arc::new(MemoryRemote::new());
    let session_id = memory.create_container("s").await.unwrap().id;
    let cache = tempfile::tempdir().unwrap();
    let mount = |ttl: Duration| {
        let mut config = FsConfig::new(cache.path().join("staging"));
        config.meta_store = Some(cache.path().join("meta.redb"));
        config.metadata_ttl = ttl;
        let remote: Arc<dyn Remote> = memory.clone();
        SessionFs::new(remote, config).unwrap()
    };
    let user = Caller {
        uid: 1000,
        gid: 100,
        pid: 0,
    };
    let then = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    {
        let fs = mount(Duration::from_secs(60));
        let session = fs.lookup(ROOT_INO, "s").await.unwrap().attr.ino;
        let (entry, opened) = fs.create(session, "f", 0o640, false, user).await.unwrap();
        assert_eq!(
            (entry.attr.uid, entry.attr.gid),
            (1000, 100),
            "the caller's"
        );
        let ino = entry.attr.ino;
        fs.write(ino, opened.fh, 0, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        fs.release(ino, opened.fh).await.unwrap();
        let chmod = SetAttr {
            mode: Some(0o600),
            mtime: Some(then),
            ..Default::default()
        };
        let other = Caller {
            uid: 2000,
            gid: 200,
            pid: 0,
        };
        let refused = fs.setattr(ino, chmod.clone(), other).await.unwrap_err();
        assert_eq!(refused.errno, libc::EPERM, "chmod by another user");
        fs.setattr(ino, chmod, user).await.unwrap();
        let chown = SetAttr {
            uid: Some(3000),
            ..Default::default()
        };
        let refused = fs.setattr(ino, chown, user).await.unwrap_err();
        assert_eq!(refused.errno, libc::EPERM, "chown by a non-root user");
    }
    let fs = mount(Duration::ZERO);
    let session = fs.lookup(ROOT_INO, "s").await.unwrap().attr.ino;
    let attr = fs.lookup(session, "f").await.unwrap().attr;
    assert_eq!((attr.perm, attr.uid, attr.gid), (0o600, 1000, 100));
    assert_eq!(attr.mtime, then);

    memory.put(&session_id, "f", b"changed by another client");
    let attr = fs.lookup(session, "f").await.unwrap().attr;
    assert_eq!(attr.perm, 0o644, "the server's attributes apply");
    assert_ne!(attr.uid, 1000);
    drop(fs);
    let fs = mount(Duration::ZERO);
    let session = fs.lookup(ROOT_INO, "s").await.unwrap().attr.ino;
    let attr = fs.lookup(session, "f").await.unwrap().attr;
    assert_eq!(attr.perm, 0o644, "the stale entry was dropped");
}

/// Creates `name` and writes `data` into it; returns the inode and the open handle.
async fn create_written(f: &Fixture, name: &str, data: &'static [u8]) -> (Ino, u64) {
    let (entry, opened) =
        f.fs.create(f.session, name, 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    let ino = entry.attr.ino;
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(data))
        .await
        .unwrap();
    (ino, opened.fh)
}

/// Creates `name` holding `data` and closes it (flush, then release).
async fn write_and_close(f: &Fixture, name: &str, data: &'static [u8]) -> Ino {
    let (ino, fh) = create_written(f, name, data).await;
    f.fs.flush(ino, fh).await.unwrap();
    f.fs.release(ino, fh).await.unwrap();
    ino
}

/// Waits (bounded) until `name` holds `data` on the in-memory server.
async fn wait_for_upload(f: &Fixture, name: &str, data: &[u8]) {
    for _ in 0..200 {
        if f.memory.get(&f.session_id, name).as_deref() == Some(data) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} never reached the server with the expected bytes");
}

fn with_write_back(delay: Duration) -> impl FnOnce(&mut FsConfig) {
    move |config| config.write_back = Some(delay)
}

#[tokio::test]
async fn with_write_back_a_close_returns_before_the_upload_and_a_file_closed_twice_uploads_once() {
    let f = fixture_with(
        MemoryRemote::new(),
        with_write_back(Duration::from_millis(400)),
    )
    .await;
    let ino = write_and_close(&f, "late.txt", b"first").await;
    assert!(
        f.memory.get(&f.session_id, "late.txt").is_none(),
        "not before the delay"
    );
    assert_eq!(f.fs.delayed_uploads_waiting(), 1);
    // Written again before the upload starts: one upload, of the last close.
    let opened = f.fs.open(ino, true, true, false).await.unwrap();
    f.fs.write(ino, opened.fh, 0, Bytes::from_static(b"second"))
        .await
        .unwrap();
    f.fs.flush(ino, opened.fh).await.unwrap();
    f.fs.release(ino, opened.fh).await.unwrap();
    assert_eq!(f.memory.calls("upload"), 0);
    wait_for_upload(&f, "late.txt", b"second").await;
    assert_eq!(f.memory.calls("upload"), 1);
}

#[tokio::test]
async fn with_write_back_fsync_uploads_at_once_and_returns_its_error() {
    let f = fixture_with(
        MemoryRemote::new(),
        with_write_back(Duration::from_secs(3600)),
    )
    .await;
    f.faulty
        .fail("upload", When::Nth(1), ErrorKind::Unavailable);
    let (ino, fh) = create_written(&f, "sync.txt", b"durable").await;
    assert_eq!(f.fs.fsync(ino).await.unwrap_err().errno, libc::EIO);
    f.fs.fsync(ino).await.unwrap();
    assert_eq!(f.memory.get(&f.session_id, "sync.txt").unwrap(), "durable");
    f.fs.release(ino, fh).await.unwrap();
}

#[tokio::test]
async fn with_write_back_the_drain_uploads_what_waits_and_a_crash_leaves_it_to_the_next_mount() {
    let f = fixture_with(
        MemoryRemote::new(),
        with_write_back(Duration::from_secs(3600)),
    )
    .await;
    for i in 0..12 {
        write_and_close(&f, &format!("f{i}"), b"drained").await;
    }
    assert_eq!(f.fs.drain().await.unwrap(), 12);
    for i in 0..12 {
        assert_eq!(
            f.memory.get(&f.session_id, &format!("f{i}")).unwrap(),
            "drained"
        );
    }

    write_and_close(&f, "crash.txt", b"journaled").await;
    f.fs.keep_pending().await; // the process dies before the delay
    assert!(f.memory.get(&f.session_id, "crash.txt").is_none());
    let (done, _recovery) = replay_as_the_next_mount(&f).await;
    assert_eq!((done.uploaded, done.recovered), (1, 0));
    assert_eq!(
        f.memory.get(&f.session_id, "crash.txt").unwrap(),
        "journaled"
    );
}

/// What the next mount does before it mounts, after this one died: replays the fixture's
/// journal into its remote. Returns what was done and the recovery folder it used.
async fn replay_as_the_next_mount(
    f: &Fixture,
) -> (crate::write::journal::Replayed, tempfile::TempDir) {
    let staging = f.staging.path();
    let journal = crate::write::journal::Journal::open(staging).unwrap();
    let area = crate::write::StagingArea::new(staging).unwrap();
    let recovery = tempfile::tempdir().unwrap();
    let done = crate::write::journal::replay(&journal, &area, &*f.memory, recovery.path())
        .await
        .unwrap();
    (done, recovery)
}

/// The names stored in the fixture's session, sorted.
async fn stored_names(f: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = f
        .memory
        .list(Some(&f.session_id))
        .await
        .unwrap()
        .into_iter()
        .map(|o| super::names::decode(&o.name))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_directory_rename_moves_every_object_and_a_failed_one_is_undone() {
    let f = fixture().await;
    let rules = f.memory.capabilities().name_rules;
    for name in ["a/", "a/f1", "a/f2", "a/sub/f3", "other"] {
        f.memory.put(
            &f.session_id,
            &super::names::encode(name, &rules),
            name.as_bytes(),
        );
    }
    f.fs.rename(f.session, "a", f.session, "b", false)
        .await
        .unwrap();
    assert_eq!(
        stored_names(&f).await,
        ["b/", "b/f1", "b/f2", "b/sub/f3", "other"]
    );
    let b = f.fs.lookup(f.session, "b").await.unwrap().attr.ino;
    let sub = f.fs.lookup(b, "sub").await.unwrap().attr.ino;
    let f3 = f.fs.lookup(sub, "f3").await.unwrap().attr.ino;
    let opened = f.fs.open(f3, false, false, false).await.unwrap();
    let read = f.fs.read(f3, opened.fh, 0, 100).await.unwrap();
    assert_eq!(&read[..], b"a/sub/f3", "the moved object's bytes");
    assert_eq!(
        f.fs.lookup(f.session, "a").await.unwrap_err().errno,
        libc::ENOENT
    );

    // The third copy fails: the two objects moved before it go back.
    let third = f.memory.calls("upload") + 3;
    f.faulty
        .fail("upload", When::Nth(third), ErrorKind::Unavailable);
    let err = f.fs.rename(f.session, "b", f.session, "c", false).await;
    assert_eq!(err.unwrap_err().errno, libc::EIO);
    assert_eq!(
        stored_names(&f).await,
        ["b/", "b/f1", "b/f2", "b/sub/f3", "other"]
    );
    let renames = crate::write::RenameLog::open(f.staging.path()).unwrap();
    assert!(
        renames.pending().unwrap().is_empty(),
        "nothing left to finish"
    );
}

#[tokio::test]
async fn a_rename_over_a_non_empty_directory_or_the_limit_moves_nothing() {
    let f = fixture_with(MemoryRemote::new(), |config| {
        config.max_dir_rename = super::DirRenameLimit {
            bytes: 1 << 20,
            objects: 2,
        }
    })
    .await;
    let rules = f.memory.capabilities().name_rules;
    for name in ["a/f1", "a/f2", "three/1", "three/2", "three/3", "full/x"] {
        f.memory
            .put(&f.session_id, &super::names::encode(name, &rules), b"x");
    }
    let errno = |r: super::Result<()>| r.unwrap_err().errno;
    assert_eq!(
        errno(f.fs.rename(f.session, "a", f.session, "full", false).await),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(f.fs.rename(f.session, "three", f.session, "t", false).await),
        libc::EXDEV,
        "three objects, over the limit of two"
    );
    f.fs.mkdir(f.session, "empty", 0o700, Caller::ROOT)
        .await
        .unwrap();
    f.fs.rename(f.session, "a", f.session, "empty", false)
        .await
        .unwrap();
    let names = stored_names(&f).await;
    assert!(names.contains(&"empty/f1".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("a/")), "{names:?}");
}

#[tokio::test]
async fn the_next_mount_finishes_a_rename_a_crash_interrupted() {
    let f = fixture().await;
    let rules = f.memory.capabilities().name_rules;
    let enc = |name: &str| super::names::encode(name, &rules);
    // f1 was copied but not deleted, f2 not copied yet, f3 moved: a crash half-way.
    let f1 = f.memory.put(&f.session_id, &enc("a/f1"), b"one");
    f.memory.put(&f.session_id, &enc("b/f1"), b"one");
    let f2 = f.memory.put(&f.session_id, &enc("a/f2"), b"two");
    f.memory.put(&f.session_id, &enc("b/f3"), b"three");
    let step = |from: &ObjectMeta, to: &str| crate::write::ObjectMove {
        from_id: Some(from.id.clone()),
        from_name: from.name.clone(),
        version: from.version.clone(),
        to_name: enc(to),
    };
    let gone = ObjectMeta {
        id: enc("a/f3"),
        name: enc("a/f3"),
        ..f1.clone()
    };
    let renames = crate::write::RenameLog::open(f.staging.path()).unwrap();
    renames
        .record(&crate::write::DirRename {
            id: "r".into(),
            container: Some(f.session_id.clone()),
            from: "a".into(),
            to: "b".into(),
            moves: vec![step(&f1, "b/f1"), step(&f2, "b/f2"), step(&gone, "b/f3")],
        })
        .unwrap();
    let done = super::finish_dir_renames(&*f.memory, f.staging.path(), None)
        .await
        .unwrap();
    assert_eq!(done, 1);
    assert_eq!(stored_names(&f).await, ["b/f1", "b/f2", "b/f3"]);
    assert_eq!(
        f.memory.get(&f.session_id, &enc("b/f2")).unwrap(),
        &b"two"[..]
    );
    assert!(renames.pending().unwrap().is_empty());
}

#[tokio::test]
async fn a_file_open_for_writing_moves_with_its_directory_and_uploads_under_the_new_name() {
    let f = fixture().await;
    let rules = f.memory.capabilities().name_rules;
    let dir =
        f.fs.mkdir(f.session, "a", 0o755, Caller::ROOT)
            .await
            .unwrap();
    let dir = dir.attr.ino;
    let (stored, opened) =
        f.fs.create(dir, "kept", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    f.fs.write(stored.attr.ino, opened.fh, 0, Bytes::from_static(b"kept"))
        .await
        .unwrap();
    f.fs.release(stored.attr.ino, opened.fh).await.unwrap();
    let (open, handle) =
        f.fs.create(dir, "open", 0o644, false, Caller::ROOT)
            .await
            .unwrap();
    f.fs.write(open.attr.ino, handle.fh, 0, Bytes::from_static(b"written"))
        .await
        .unwrap();
    f.fs.rename(f.session, "a", f.session, "b", false)
        .await
        .unwrap();
    let journal = crate::write::Journal::open(f.staging.path()).unwrap();
    let pending: Vec<String> = journal
        .pending()
        .unwrap()
        .into_iter()
        .map(|u| u.path)
        .collect();
    assert_eq!(
        pending,
        ["b/open"],
        "the pending upload's record names the new path"
    );
    f.fs.write(open.attr.ino, handle.fh, 7, Bytes::from_static(b" more"))
        .await
        .unwrap();
    f.fs.release(open.attr.ino, handle.fh).await.unwrap();
    assert_eq!(stored_names(&f).await, ["b/", "b/kept", "b/open"]);
    let encoded = super::names::encode("b/open", &rules);
    assert_eq!(
        f.memory.get(&f.session_id, &encoded).unwrap(),
        &b"written more"[..]
    );
}
