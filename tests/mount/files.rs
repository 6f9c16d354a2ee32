//! Files inside sessions: copy in and out, overwrite, remove, rename, names, metadata.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::{TestMount, errno, pseudo_random, q, sh};

#[test]
fn cp_of_100_mib_in_and_out_is_byte_identical() {
    let mount = TestMount::new();
    let dir = mount.session_dir("big");
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source.bin");
    let data = pseudo_random(100 << 20, 7);
    std::fs::write(&source, &data).unwrap();

    sh(&format!("cp {} {}", q(&source), q(&dir.join("big.bin"))));
    let meta = std::fs::metadata(dir.join("big.bin")).unwrap();
    assert_eq!(meta.len(), 100 << 20);
    let age = SystemTime::now()
        .duration_since(meta.modified().unwrap())
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(300),
        "mtime is the upload time, got {age:?} ago"
    );

    let back = local.path().join("back.bin");
    sh(&format!("cp {} {}", q(&dir.join("big.bin")), q(&back)));
    sh(&format!("cmp {} {}", q(&source), q(&back)));
    let id = mount.api_session_id("big");
    assert!(
        mount.api_get(&id, "big.bin").unwrap() == data,
        "server holds the same bytes"
    );
}

#[test]
fn writing_over_a_file_replaces_its_content() {
    let mount = TestMount::new();
    let dir = mount.session_dir("over");
    let id = mount.api_session_id("over");
    std::fs::write(dir.join("f.txt"), b"first version, long").unwrap();
    std::fs::write(dir.join("f.txt"), b"second").unwrap();
    assert_eq!(std::fs::read(dir.join("f.txt")).unwrap(), b"second");
    assert_eq!(std::fs::metadata(dir.join("f.txt")).unwrap().len(), 6);
    assert_eq!(mount.api_get(&id, "f.txt").unwrap(), b"second");
    assert_eq!(mount.api_file_names(&id), ["f.txt"]);
}

#[test]
fn rm_deletes_the_remote_file() {
    let mount = TestMount::new();
    let dir = mount.session_dir("rm");
    let id = mount.api_session_id("rm");
    std::fs::write(dir.join("gone.txt"), b"bye").unwrap();
    sh(&format!("rm {}", q(&dir.join("gone.txt"))));
    assert!(mount.api_get(&id, "gone.txt").is_none());
    assert_eq!(errno(std::fs::metadata(dir.join("gone.txt"))), libc::ENOENT);
    assert!(sh(&format!("ls -A {}", q(&dir))).is_empty());
}

#[test]
fn mv_within_and_across_sessions_moves_the_bytes() {
    let mount = TestMount::new();
    let one = mount.session_dir("one");
    let two = mount.session_dir("two");
    let (id1, id2) = (mount.api_session_id("one"), mount.api_session_id("two"));
    let data = pseudo_random(3 << 20, 3);
    std::fs::write(one.join("a.bin"), &data).unwrap();

    sh(&format!(
        "mv {} {}",
        q(&one.join("a.bin")),
        q(&one.join("b.bin"))
    ));
    assert_eq!(mount.api_file_names(&id1), ["b.bin"]);
    assert!(mount.api_get(&id1, "b.bin").unwrap() == data);

    sh(&format!(
        "mv {} {}",
        q(&one.join("b.bin")),
        q(&two.join("c.bin"))
    ));
    assert!(mount.api_file_names(&id1).is_empty());
    assert_eq!(mount.api_file_names(&id2), ["c.bin"]);
    assert!(std::fs::read(two.join("c.bin")).unwrap() == data);

    // Over an existing file: the target is replaced, never missing.
    std::fs::write(two.join("d.bin"), b"old").unwrap();
    sh(&format!(
        "mv -f {} {}",
        q(&two.join("c.bin")),
        q(&two.join("d.bin"))
    ));
    assert_eq!(mount.api_file_names(&id2), ["d.bin"]);
    assert!(mount.api_get(&id2, "d.bin").unwrap() == data);
}

#[test]
fn names_the_server_would_rewrite_round_trip_exactly() {
    let mount = TestMount::new();
    let dir = mount.session_dir("names");
    let id = mount.api_session_id("names");
    let names = [
        "my file.tar.gz",
        "ünïcödé 文件.md",
        "a__b___c",
        ".hidden.conf.bak",
        "tab\tand\nnewline",
        "quote\"back\\slash",
        "plain.txt",
    ];
    for (i, name) in names.iter().enumerate() {
        std::fs::write(dir.join(name), format!("content {i}")).unwrap();
    }
    let mut listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            format!("content {i}")
        );
    }
    // Stored names are ones the server keeps as they are: no `originalName` rewriting happened,
    // so the server holds exactly one object per file and the plain name stays plain.
    let stored = mount.api_file_names(&id);
    assert_eq!(stored.len(), names.len());
    assert!(stored.contains(&"plain.txt".to_string()));
    assert!(stored.iter().all(|n| !n.contains(' ')), "{stored:?}");
}

#[test]
fn stat_touch_df_and_cp_p_work() {
    let mount = TestMount::new();
    let dir = mount.session_dir("meta");
    let id = mount.api_session_id("meta");

    sh(&format!("touch {}", q(&dir.join("empty"))));
    assert_eq!(std::fs::metadata(dir.join("empty")).unwrap().len(), 0);
    assert_eq!(mount.api_get(&id, "empty").unwrap(), b"");

    sh(&format!(
        "touch -d '2020-02-03 04:05:06 UTC' {}",
        q(&dir.join("empty"))
    ));
    let stat = sh(&format!("stat -c '%s %Y %F' {}", q(&dir.join("empty"))));
    assert_eq!(stat.trim(), "0 1580702706 regular empty file");

    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("src.txt");
    std::fs::write(&source, b"preserve me").unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
    sh(&format!(
        "touch -d '2019-01-01 00:00:00 UTC' {}",
        q(&source)
    ));
    sh(&format!(
        "cp -p {} {}",
        q(&source),
        q(&dir.join("copy.txt"))
    ));
    let meta = std::fs::metadata(dir.join("copy.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.mtime(), 1546300800);
    assert_eq!(std::fs::read(dir.join("copy.txt")).unwrap(), b"preserve me");
    assert_eq!(
        meta.modified().unwrap(),
        UNIX_EPOCH + Duration::from_secs(1546300800)
    );

    let df = sh(&format!("df -h {}", q(mount.path())));
    assert!(df.contains("sessionfs"), "{df}");
    let dir_stat = sh(&format!("stat -c '%F %a' {}", q(&dir)));
    assert_eq!(dir_stat.trim(), "directory 755");
}

#[test]
fn appending_and_reopening_keep_earlier_bytes() {
    let mount = TestMount::new();
    let dir = mount.session_dir("append");
    let id = mount.api_session_id("append");
    let file = dir.join("log.txt");
    sh(&format!("echo one > {}", q(&file)));
    sh(&format!("echo two >> {}", q(&file)));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
    assert_eq!(mount.api_get(&id, "log.txt").unwrap(), b"one\ntwo\n");
}

#[test]
fn an_open_file_whose_name_is_gone_has_no_links() {
    let mount = TestMount::new();
    let dir = mount.session_dir("links");
    std::fs::write(dir.join("unlinked"), b"a").unwrap();
    std::fs::write(dir.join("replaced"), b"b").unwrap();
    std::fs::write(dir.join("newer"), b"c").unwrap();
    let unlinked = std::fs::File::open(dir.join("unlinked")).unwrap();
    let replaced = std::fs::File::open(dir.join("replaced")).unwrap();
    assert_eq!(unlinked.metadata().unwrap().nlink(), 1);
    std::fs::remove_file(dir.join("unlinked")).unwrap();
    std::fs::rename(dir.join("newer"), dir.join("replaced")).unwrap();
    assert_eq!(unlinked.metadata().unwrap().nlink(), 0, "after unlink");
    assert_eq!(
        replaced.metadata().unwrap().nlink(),
        0,
        "after a rename over it"
    );
    assert_eq!(
        std::fs::metadata(dir.join("replaced")).unwrap().nlink(),
        1,
        "the name's new file"
    );
}

#[test]
fn renameat2_flags_other_than_noreplace_are_refused_and_change_nothing() {
    let mount = TestMount::new();
    let dir = mount.session_dir("flags");
    std::fs::write(dir.join("a"), b"a").unwrap();
    std::fs::write(dir.join("b"), b"b").unwrap();
    let path = |name: &str| std::ffi::CString::new(q(&dir.join(name)).trim_matches('\'')).unwrap();
    for (flag, what) in [
        (libc::RENAME_WHITEOUT, "RENAME_WHITEOUT"),
        (libc::RENAME_EXCHANGE, "RENAME_EXCHANGE"),
        (
            libc::RENAME_WHITEOUT | libc::RENAME_NOREPLACE,
            "WHITEOUT|NOREPLACE",
        ),
    ] {
        // The kernel itself answers an exchange with a missing name (ENOENT) and no-replace
        // onto an existing one (EEXIST) before the mount sees them.
        let targets: &[&str] = match flag {
            libc::RENAME_EXCHANGE => &["b"],
            libc::RENAME_WHITEOUT => &["b", "c"],
            _ => &["c"],
        };
        for target in targets {
            // SAFETY: two valid NUL-terminated paths that outlive the call.
            let status = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    path("a").as_ptr(),
                    libc::AT_FDCWD,
                    path(target).as_ptr(),
                    flag,
                )
            };
            assert_eq!(status, -1, "{what} to {target}");
            assert_eq!(
                errno::<()>(Err(std::io::Error::last_os_error())),
                libc::EINVAL,
                "{what}"
            );
        }
    }
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"a");
    assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"b");
    assert!(!dir.join("c").exists());
}

#[test]
fn rewinddir_sees_names_made_since_opendir() {
    let mount = TestMount::new();
    let dir = mount.session_dir("rewind");
    std::fs::write(dir.join("first"), b"1").unwrap();
    let names = |handle: *mut libc::DIR| -> Vec<String> {
        let mut names = Vec::new();
        loop {
            // SAFETY: `handle` is an open directory stream; the entry is read before the next call.
            let entry = unsafe { libc::readdir(handle) };
            if entry.is_null() {
                break names;
            }
            // SAFETY: readdir returned a valid entry whose name is NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
            names.push(name.to_string_lossy().into_owned());
        }
    };
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; the stream is closed below.
    let handle = unsafe { libc::opendir(path.as_ptr()) };
    assert!(!handle.is_null());
    let mut before = names(handle);
    before.sort();
    assert_eq!(before, [".", "..", "first"]);
    std::fs::write(dir.join("second"), b"2").unwrap();
    std::fs::remove_file(dir.join("first")).unwrap();
    // SAFETY: the stream opened above, still open.
    unsafe { libc::rewinddir(handle) };
    let mut after = names(handle);
    after.sort();
    // SAFETY: closes the stream opened above, once.
    unsafe { libc::closedir(handle) };
    assert_eq!(after, [".", "..", "second"]);
}
