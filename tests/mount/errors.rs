//! Bad input and a dead server: precise errnos, nothing lost.

use crate::harness::{TestMount, errno, q, sh_output};

#[test]
fn unknown_names_are_enoent_and_long_names_enametoolong() {
    let mount = TestMount::new();
    let dir = mount.session_dir("errs");
    assert_eq!(errno(std::fs::metadata(dir.join("missing"))), libc::ENOENT);
    assert_eq!(
        errno(std::fs::metadata(mount.join("no-such-session"))),
        libc::ENOENT
    );
    let long = "x".repeat(300);
    assert_eq!(
        errno(std::fs::write(dir.join(&long), b"x")),
        libc::ENAMETOOLONG
    );
}

#[test]
fn files_cannot_be_created_beside_sessions() {
    let mount = TestMount::new();
    assert_eq!(
        errno(std::fs::write(mount.join("loose.txt"), b"x")),
        libc::EPERM
    );
    assert!(mount.api_sessions().is_empty());
}

#[test]
fn a_dead_server_gives_eio_and_keeps_written_data_staged() {
    let mut mount = TestMount::new();
    let dir = mount.session_dir("dead");
    let id = mount.api_session_id("dead");
    mount.api_upload(&id, "before.txt", b"stored by another client");
    assert_eq!(std::fs::metadata(dir.join("before.txt")).unwrap().len(), 24);
    mount.stop_server();

    // Metadata keeps answering from the last listing; content cannot be fetched.
    assert_eq!(errno(std::fs::read(dir.join("before.txt"))), libc::EIO);
    // A copy fails at close with EIO (cp reports it); the staged bytes remain for a retry.
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("after.txt"), b"pending").unwrap();
    let copy = sh_output(&format!(
        "cp {} {}",
        q(&local.path().join("after.txt")),
        q(&dir)
    ));
    assert!(!copy.status.success());
    let stderr = String::from_utf8_lossy(&copy.stderr);
    assert!(stderr.contains("Input/output error"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("after.txt")).unwrap(), b"pending");
}
