//! Two mounts of one remote, as two machines would have: a change made through one shows
//! through the other once its listing is older than the metadata TTL, and two writers of one
//! name leave the content of the last close, whole.

use std::io::Write;
use std::time::Duration;

use crate::harness::{TestMount, pseudo_random, wait_until, write_and_hold};

/// The second mount's metadata TTL.
const TTL: Duration = Duration::from_millis(500);

#[test]
fn a_change_on_one_mount_shows_on_the_other_and_the_last_close_wins_whole() {
    let mount = TestMount::cached();
    let dir = mount.session_dir("shared");
    std::fs::write(dir.join("seed.txt"), b"seed").unwrap();
    let second = mount.second_mount(TTL);
    let there = second.path().join("shared");
    assert_eq!(std::fs::read(there.join("seed.txt")).unwrap(), b"seed");

    // A new file and a changed one on the first mount show on the second after its TTL.
    std::fs::write(dir.join("new.txt"), b"made on the first mount").unwrap();
    std::fs::write(dir.join("seed.txt"), b"changed on the first mount").unwrap();
    wait_until(Duration::from_secs(20), "the change to show", || {
        std::fs::read(there.join("new.txt")).is_ok_and(|b| b == b"made on the first mount")
            && std::fs::read(there.join("seed.txt"))
                .is_ok_and(|b| b == b"changed on the first mount")
    });

    // Two writers of one name, one per mount, both open at once: the second to close wins,
    // with every one of its bytes and none of the other's.
    let local = tempfile::tempdir().unwrap();
    let (first_bytes, last_bytes) = (pseudo_random(3 << 20, 1), pseudo_random(2 << 20, 2));
    let (first_source, last_source) = (local.path().join("a"), local.path().join("b"));
    std::fs::write(&first_source, &first_bytes).unwrap();
    std::fs::write(&last_source, &last_bytes).unwrap();
    let target = "both.bin";
    let mut first = write_and_hold(&[&dir.join(target), &first_source]);
    let mut last = write_and_hold(&[&there.join(target), &last_source]);
    for writer in [&mut first, &mut last] {
        writeln!(writer.stdin.as_mut().unwrap()).unwrap();
        assert!(writer.wait().unwrap().success());
    }
    let session = mount.api_session_id("shared");
    let stored = mount.api_get(&session, target).unwrap();
    assert!(
        stored == last_bytes,
        "the last close wins whole ({} bytes)",
        stored.len()
    );
    assert!(
        std::fs::read(there.join(target)).unwrap() == last_bytes,
        "the last writer's mount reads it back"
    );
    drop(second);
}
