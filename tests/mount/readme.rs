//! The README's quickstart, run as written: the first `sh` block under `## Quickstart`, with
//! this build's `sessionfs` first on `PATH` (what `cargo install` gives) and a fresh home; only
//! the mount point is replaced, so parallel runs do not share one.

use std::process::Command;

use crate::harness::{q, user_command};

const README: &str = include_str!("../../README.md");
const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");
const MOUNTPOINT: &str = "/tmp/sessionfs";

/// The commands of the quickstart block.
fn quickstart() -> String {
    let section = README
        .split("\n## Quickstart\n")
        .nth(1)
        .expect("README has a Quickstart section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("the Quickstart has a sh block");
    block
        .split("\n```")
        .next()
        .expect("the block ends")
        .to_string()
}

#[test]
fn the_readme_quickstart_works_as_written() {
    let script = quickstart();
    assert!(script.contains("sessionfs mount"), "{script}");
    let home = tempfile::tempdir().unwrap();
    let mnt = home.path().join("mnt");
    let script = script.replace(MOUNTPOINT, &q(&mnt));
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let output = user_command("bash", home.path(), &["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{script}\n{output:?}");
    assert!(stdout.contains("hello.txt"), "ls shows the file: {stdout}");
    assert!(stdout.lines().any(|line| line == "hello"), "cat: {stdout}");
    assert!(stdout.contains("pending uploads: 0"), "status: {stdout}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(mnt.to_str().unwrap()),
        "the last command unmounted it"
    );
    // The file reached the embedded emulator's data under the home.
    let stored = Command::new("grep")
        .args(["-rl", "hello"])
        .arg(home.path().join(".local/share/sessionfs/mix"))
        .output()
        .unwrap();
    assert!(stored.status.success(), "{stored:?}");
}
