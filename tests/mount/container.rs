//! `NAME:SUBDIR`: one container of a named remote mounted alone, its contents at the root, on
//! Mix (a session) and Fluxer (a guild's channel); what is written there lands in that
//! container, and a path that names no container fails before anything is mounted.

use std::path::Path;
use std::process::Output;

use crate::harness::{q, sessionfs_command, sh};

fn run(home: &Path, args: &[&str]) -> Output {
    sessionfs_command(home, args).output().unwrap()
}

/// `sessionfs mount --daemon SPEC MNT`, which returns once the mount answers.
fn mount(home: &Path, spec: &str, mnt: &Path) {
    let output = run(home, &["mount", "--daemon", spec, mnt.to_str().unwrap()]);
    assert!(output.status.success(), "mount {spec}: {output:?}");
}

fn unmount(home: &Path, mnt: &Path) {
    let output = run(home, &["unmount", mnt.to_str().unwrap()]);
    assert!(output.status.success(), "unmount: {output:?}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn home_with_remotes() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".config/sessionfs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[remotes.notes]\nbackend = \"mix\"\n\n[remotes.chat]\nbackend = \"fluxer\"\n\n\
         [remotes.flat]\nbackend = \"lightfield\"\n",
    )
    .unwrap();
    home
}

#[test]
fn a_mix_session_mounts_alone() {
    let home = home_with_remotes();
    let mnt = tempfile::tempdir().unwrap();
    mount(home.path(), "notes:", mnt.path());
    sh(&format!(
        "mkdir {0}/work {0}/home && echo a > {0}/work/a.txt && echo b > {0}/home/b.txt",
        q(mnt.path())
    ));
    unmount(home.path(), mnt.path());

    mount(home.path(), "notes:work", mnt.path());
    assert_eq!(names(mnt.path()), ["a.txt"]);
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("a.txt")).unwrap(),
        "a\n"
    );
    sh(&format!("echo c > {}/c.txt", q(mnt.path())));
    let status =
        String::from_utf8(run(home.path(), &["status", mnt.path().to_str().unwrap()]).stdout)
            .unwrap();
    assert!(status.contains("notes:work (mix)"), "{status}");
    unmount(home.path(), mnt.path());

    mount(home.path(), "notes:", mnt.path());
    assert_eq!(names(&mnt.path().join("work")), ["a.txt", "c.txt"]);
    assert_eq!(names(&mnt.path().join("home")), ["b.txt"]);
    unmount(home.path(), mnt.path());

    for (spec, why) in [
        ("notes:nowhere", "no container \"nowhere\""),
        ("flat:x", "no directories at the top"),
    ] {
        let refused = run(home.path(), &["mount", spec, mnt.path().to_str().unwrap()]);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(why), "{spec}: {stderr}");
    }
    assert!(names(mnt.path()).is_empty(), "nothing was mounted");
}

#[test]
fn a_fluxer_channel_mounts_alone() {
    let home = home_with_remotes();
    let mnt = tempfile::tempdir().unwrap();
    mount(home.path(), "chat:", mnt.path());
    // The seeded guild holds the channels `general` and `files`.
    let guild = names(mnt.path())
        .into_iter()
        .find(|guild| mnt.path().join(guild).join("general").is_dir())
        .expect("a guild with a general channel");
    sh(&format!(
        "echo hi > {}",
        q(&mnt.path().join(&guild).join("files/hi.txt"))
    ));
    unmount(home.path(), mnt.path());

    mount(home.path(), &format!("chat:{guild}/general"), mnt.path());
    assert!(
        names(mnt.path()).is_empty(),
        "the general channel holds nothing yet"
    );
    sh(&format!("echo posted > {}/note.txt", q(mnt.path())));
    // Fluxer's rate limits: the pacer has learnt the buckets it used from the answers.
    let status = run(
        home.path(),
        &["status", "--json", mnt.path().to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        report["rate_limit"]["buckets"].as_u64().unwrap() >= 1,
        "{report}"
    );
    unmount(home.path(), mnt.path());

    mount(home.path(), "chat:", mnt.path());
    let channel = mnt.path().join(&guild).join("general");
    assert_eq!(names(&channel), ["note.txt"]);
    assert_eq!(
        std::fs::read_to_string(channel.join("note.txt")).unwrap(),
        "posted\n"
    );
    assert_eq!(names(&mnt.path().join(&guild).join("files")), ["hi.txt"]);
    unmount(home.path(), mnt.path());
}
