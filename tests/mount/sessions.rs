//! Session directories: mkdir, rmdir, listing, names.

use std::time::Duration;

use crate::harness::{TestMount, errno, sh, wait_until};

#[test]
fn mkdir_creates_a_session_and_rmdir_deletes_it_when_empty() {
    let mount = TestMount::new();
    let dir = mount.session_dir("alpha");
    let id = mount.api_session_id("alpha");
    let listing = sh(&format!("ls -l {}", mount.path().display()));
    assert!(listing.contains(" alpha\n"), "{listing}");
    assert!(listing.starts_with("total"), "{listing}");

    std::fs::write(dir.join("f.txt"), b"x").unwrap();
    assert_eq!(errno(std::fs::remove_dir(&dir)), libc::ENOTEMPTY);
    assert_eq!(mount.api_file_names(&id), ["f.txt"]);

    std::fs::remove_file(dir.join("f.txt")).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    assert!(mount.api_sessions().is_empty());
    assert_eq!(errno(std::fs::metadata(&dir)), libc::ENOENT);
}

#[test]
fn mkdir_of_an_existing_name_fails_with_eexist() {
    let mount = TestMount::new();
    mount.session_dir("twice");
    assert_eq!(
        errno(std::fs::create_dir(mount.join("twice"))),
        libc::EEXIST
    );
    assert_eq!(mount.api_sessions().len(), 1);
}

#[test]
fn colliding_titles_and_slashes_give_unique_stable_names() {
    let mount = TestMount::new();
    let first = mount.api_create_session("dup");
    // createdAt has whole seconds: the second session must be made in a later one.
    let created = std::time::SystemTime::now();
    let second_of =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    wait_until(Duration::from_secs(3), "the next whole second", || {
        second_of(std::time::SystemTime::now()) > second_of(created)
    });
    let second = mount.api_create_session("dup");
    mount.api_create_session("a/b");
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(mount.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let expected = vec![
        "a／b".to_string(),
        "dup".to_string(),
        format!("dup~{}", &second[..8]),
    ];
    assert_eq!(names(), expected);
    assert_eq!(names(), expected, "names are stable across listings");

    // The oldest keeps the plain name: files written there land in the first session.
    std::fs::write(mount.join("dup").join("which.txt"), b"first").unwrap();
    assert_eq!(mount.api_file_names(&first), ["which.txt"]);

    // A directory name holding the slash substitute creates a title with a real slash.
    std::fs::create_dir(mount.join("c／d")).unwrap();
    mount.api_session_id("c/d");
}

#[test]
fn sessions_made_by_another_client_appear_and_vanish() {
    let mount = TestMount::new();
    let id = mount.api_create_session("remote-made");
    mount.api_upload(&id, "note.txt", b"hi");
    assert_eq!(
        std::fs::read(mount.join("remote-made/note.txt")).unwrap(),
        b"hi"
    );
    mount.api_delete(&id, "note.txt");
    assert_eq!(
        errno(std::fs::metadata(mount.join("remote-made/note.txt"))),
        libc::ENOENT
    );
}
