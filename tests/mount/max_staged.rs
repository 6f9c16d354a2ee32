//! `--max-staged`: the staging directory never holds more than the cap. A write past it waits
//! for another file's upload to free room, and fails with ENOSPC when nothing can.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::harness::{TestMount, pseudo_random, q, sh, sh_output, wait_until, write_and_hold};

const CAP: u64 = 4 << 20;
const PART: usize = 3 << 20;

#[test]
fn writes_past_max_staged_wait_for_uploads_then_fail_with_enospc() {
    let mount = TestMount::with(|config| config.max_staged = Some(CAP));
    let dir = mount.session_dir("capped");
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("part");
    let data = pseudo_random(PART, 5);
    std::fs::write(&source, &data).unwrap();

    // One file after another: each one's staged copy goes once it is uploaded.
    for name in ["one", "two"] {
        sh(&format!("cp {} {}", q(&source), q(&dir.join(name))));
    }

    // A file held open keeps its bytes staged: a second writer waits until it is closed.
    let held = dir.join("held");
    let mut holder = write_and_hold(&[&held, &source]);
    let mut waiting = Command::new("cp")
        .arg(&source)
        .arg(dir.join("waits"))
        .spawn()
        .unwrap();
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "3 MiB more do not fit while 3 MiB are held"
    );
    writeln!(holder.stdin.as_mut().unwrap()).unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(
        waiting.wait().unwrap().success(),
        "room came once the held file went up"
    );
    for name in ["one", "two", "held", "waits"] {
        assert!(
            std::fs::read(dir.join(name)).unwrap() == data,
            "{name} intact"
        );
    }

    // A file larger than the cap alone: nothing can free room, ENOSPC at once.
    let big = local.path().join("big");
    std::fs::write(&big, pseudo_random(2 * PART, 6)).unwrap();
    let out = sh_output(&format!("cp {} {}", q(&big), q(&dir.join("big"))));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    // The mount goes on, and nothing stays staged.
    sh(&format!("cp {} {}", q(&source), q(&dir.join("after"))));
    // The kernel releases a closed file after close returns.
    wait_until(
        Duration::from_secs(10),
        "every staged copy to be released",
        || mount.fs.staged_bytes() == 0,
    );
}
