//! POSIX metadata that lasts: modes, owners, times, links and empty directories survive a
//! remount (the metadata store), files belong to whoever created them, and ctime moves.

use std::path::{Path, PathBuf};

use sessionfs::backend::Backend;

use crate::harness::{TestMount, q, sh, sh_output, wait_until};

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Runs a command as the unprivileged `nobody`.
const NOBODY: &str = "setpriv --reuid 65534 --regid 65534 --clear-groups";

/// `stat` of the named entries in `dir`: name, mode, owner, group, atime, mtime, ctime, type.
fn stat(dir: &Path, names: &str) -> String {
    sh(&format!(
        "cd {} && stat -c '%n %a %u %g %X %Y %Z %F' -- {names}",
        q(dir)
    ))
}

/// A Mix mount other users may enter (`--allow-other`) and a session directory `s` in it that
/// everyone may write.
fn shared_session() -> (TestMount, PathBuf) {
    let mut mount = TestMount::new();
    mount.remount_with(true);
    let base = mount.session_dir("s");
    sh(&format!("chmod 777 {}", q(&base)));
    (mount, base)
}

/// Asserts that a command failed with EPERM.
fn assert_eperm(output: &std::process::Output, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what}");
    assert!(
        stderr.contains("Operation not permitted"),
        "{what}: {stderr}"
    );
}

/// chmod, chown, utime, a symlink and an empty directory in `base`, compared with `stat`
/// after an unmount and a mount again.
fn attributes_survive_a_remount(mount: &mut TestMount, base: &Path) {
    let b = q(base);
    sh(&format!(
        "cd {b} && printf 'secret' > f && chmod 600 f && chown 1234:5678 f \
         && printf 'old' > g && touch -d '2020-01-02 03:04:05' g \
         && ln -s f link && chown -h 42:43 link \
         && mkdir empty && chmod 700 empty && chown 7:8 empty"
    ));
    let names = "f g link empty";
    let before = stat(base, names);
    assert!(before.contains("f 600 1234 5678"), "{before}");
    mount.remount();
    let after = stat(base, names);
    assert_eq!(after, before, "attributes after a remount");
    assert_eq!(std::fs::read(base.join("f")).unwrap(), b"secret");
    assert_eq!(
        std::fs::read_link(base.join("link")).unwrap(),
        Path::new("f")
    );
}

#[test]
fn modes_owners_times_links_and_empty_dirs_survive_a_remount_on_mix() {
    let mut mount = TestMount::new();
    let base = mount.session_dir("s");
    sh(&format!("chmod 750 {}", q(&base)));
    attributes_survive_a_remount(&mut mount, &base);
    // The session's times moved with the entries made in it, and were saved.
    let session_before = stat(mount.path(), "s");
    assert!(session_before.starts_with("s 750 "), "{session_before}");
    mount.remount();
    assert_eq!(
        stat(mount.path(), "s"),
        session_before,
        "the session directory"
    );
}

#[test]
fn modes_owners_times_links_and_empty_dirs_survive_a_remount_on_appmixer() {
    let mut mount = TestMount::embedded(Backend::Appmixer, |_| {}, |_| {});
    let base = mount.path().to_path_buf();
    attributes_survive_a_remount(&mut mount, &base);
}

#[test]
fn a_file_changed_on_the_server_drops_its_stored_attributes() {
    let mut mount = TestMount::new();
    let base = mount.session_dir("s");
    sh(&format!(
        "cd {} && echo mine > f && chmod 600 f && chown 1234 f",
        q(&base)
    ));
    let session = mount.api_session_id("s");
    mount.api_upload(&session, "f", b"theirs, and longer\n");
    wait_until(WAIT, "the server's attributes on f", || {
        stat(&base, "f").starts_with("f 644 0 ")
    });
    mount.remount();
    let after = stat(&base, "f");
    assert!(after.starts_with("f 644 0 "), "{after}");
    assert_eq!(
        std::fs::read(base.join("f")).unwrap(),
        b"theirs, and longer\n"
    );
}

#[test]
fn rsync_to_a_remount_transfers_nothing() {
    let mut mount = TestMount::new();
    let dst = mount.session_dir("s");
    let src = tempfile::tempdir().unwrap();
    let s = q(src.path());
    sh(&format!(
        "cd {s} && mkdir -p sub/deep && echo a > a && echo b > sub/b && echo c > sub/deep/c \
         && chmod 640 a && chmod 755 sub/b && chown 1000:1000 sub/deep/c \
         && touch -d '2019-05-06 07:08:09' a sub/b && ln -s a link"
    ));
    let rsync = format!("rsync -a --stats {s}/ {}/", q(&dst));
    sh(&rsync);
    mount.remount();
    let stats = sh(&rsync);
    assert!(
        stats.contains("Number of regular files transferred: 0"),
        "{stats}"
    );
    let itemized = sh(&format!("rsync -a -i {s}/ {}/", q(&dst)));
    assert!(
        itemized.lines().all(|line| line.starts_with('.')),
        "nothing differs: {itemized}"
    );
}

#[test]
fn files_created_by_another_user_are_theirs_and_only_they_may_chmod_them() {
    let (mut mount, base) = shared_session();
    let b = q(&base);
    sh(&format!(
        "cd {b} && {NOBODY} sh -c 'echo hi > f && mkdir d && ln -s f l && chmod 640 f'"
    ));
    let owned = stat(&base, "f d l");
    for line in owned.lines() {
        assert!(line.contains(" 65534 65534 "), "owned by nobody: {line}");
    }
    assert!(owned.starts_with("f 640 "), "{owned}");
    let other = sh_output(&format!(
        "setpriv --reuid 65533 --regid 65533 --clear-groups chmod 600 {b}/f"
    ));
    assert_eperm(&other, "chmod by another user");
    let chown = sh_output(&format!("cd {b} && {NOBODY} chown 65533 f"));
    assert!(!chown.status.success(), "chown by a non-root user");
    sh(&format!("cd {b} && {NOBODY} chmod 604 f"));
    mount.remount();
    let after = stat(&base, "f d l");
    assert!(after.starts_with("f 604 65534 65534 "), "{after}");
    assert!(after.contains("d 755 65534 65534 "), "{after}");
}

#[test]
fn setuid_goes_on_a_chown_by_its_owner_and_on_a_write_by_another_user() {
    let (_mount, base) = shared_session();
    let b = q(&base);
    sh(&format!(
        "cd {b} && {NOBODY} sh -c 'echo x > f && chmod 6775 f'"
    ));
    assert!(stat(&base, "f").starts_with("f 6775 "));
    // nobody gives the file to its own group (a no-op chgrp still clears the set-id bits).
    sh(&format!("cd {b} && {NOBODY} chgrp 65534 f"));
    let after = stat(&base, "f");
    assert!(after.starts_with("f 775 "), "{after}");
    sh(&format!("cd {b} && chmod 4777 f"));
    sh(&format!(
        "cd {b} && setpriv --reuid 65533 --regid 65533 --clear-groups sh -c 'echo y >> f'"
    ));
    let written = stat(&base, "f");
    assert!(written.starts_with("f 777 "), "{written}");
}

/// Runs a command as a second unprivileged user, 65533.
const OTHER: &str = "setpriv --reuid 65533 --regid 65533 --clear-groups";

#[test]
fn set_id_bits_go_as_on_linux_on_write_truncate_and_chown() {
    let (_mount, base) = shared_session();
    let b = q(&base);
    sh(&format!(
        "cd {b} && for f in w6666 w6776 t6666 t6776 p6666; do echo x > $f; done \
         && chmod 6666 w6666 t6666 p6666 && chmod 6776 w6776 t6776"
    ));
    // A write by another user clears set-user-ID, and set-group-ID where the group may execute.
    sh(&format!(
        "cd {b} && {OTHER} sh -c 'echo y >> w6666 && echo y >> w6776'"
    ));
    // So does a truncate (GNU truncate opens the file and calls ftruncate).
    sh(&format!(
        "cd {b} && {OTHER} truncate -s 1 t6666 && {OTHER} truncate -s 1 t6776"
    ));
    // And a write in place (no O_APPEND, no O_TRUNC).
    sh(&format!(
        "cd {b} && echo z | {OTHER} dd of=p6666 conv=notrunc status=none"
    ));
    let modes = sh(&format!(
        "cd {b} && stat -c '%n %a' w6666 w6776 t6666 t6776 p6666"
    ));
    assert_eq!(
        modes, "w6666 2666\nw6776 776\nt6666 2666\nt6776 776\np6666 2666\n",
        "as Linux leaves them"
    );
    // A chown by the owner (a non-root user) clears both on a file.
    sh(&format!(
        "cd {b} && {NOBODY} sh -c 'echo x > c && chmod 6755 c && chown 65534:65534 c'"
    ));
    assert_eq!(sh(&format!("stat -c '%a' {b}/c")), "755\n");
}

#[test]
fn a_set_group_id_directory_passes_its_group_and_the_bit_down() {
    let (_mount, base) = shared_session();
    let b = q(&base);
    sh(&format!(
        "cd {b} && mkdir g && chown 0:4321 g && chmod 2777 g"
    ));
    sh(&format!(
        "cd {b}/g && {NOBODY} sh -c 'mkdir sub && echo x > f && mkdir -p deep/er'"
    ));
    let made = sh(&format!(
        "cd {b}/g && stat -c '%n %a %u %g' sub f deep deep/er"
    ));
    assert_eq!(
        made,
        "sub 2755 65534 4321\nf 644 65534 4321\ndeep 2755 65534 4321\ndeep/er 2755 65534 4321\n"
    );
}

#[test]
fn ctime_moves_on_chmod_and_touch_keeps_what_it_omits() {
    let mount = TestMount::new();
    let base = mount.session_dir("s");
    let f = base.join("f");
    std::fs::write(&f, b"x").unwrap();
    let ns = |what: &str| -> i128 {
        sh(&format!(
            "python3 -c 'import os,sys; print(os.lstat(sys.argv[1]).{what})' {}",
            q(&f)
        ))
        .trim()
        .parse()
        .unwrap()
    };
    let ctime = ns("st_ctime_ns");
    sh(&format!("chmod 600 {}", q(&f)));
    let after_chmod = ns("st_ctime_ns");
    assert!(after_chmod > ctime, "ctime moves on chmod");
    let atime = ns("st_atime_ns");
    sh(&format!("touch -m -d '2020-01-01 00:00:00 UTC' {}", q(&f)));
    assert_eq!(ns("st_mtime_ns"), 1_577_836_800_000_000_000);
    assert_eq!(ns("st_atime_ns"), atime, "UTIME_OMIT keeps atime");
    assert!(ns("st_ctime_ns") > after_chmod, "ctime moves on utimes");
    let before_rename = ns("st_ctime_ns");
    let g = base.join("g");
    std::fs::rename(&f, &g).unwrap();
    let renamed: i128 = sh(&format!(
        "python3 -c 'import os,sys; print(os.lstat(sys.argv[1]).st_ctime_ns)' {}",
        q(&g)
    ))
    .trim()
    .parse()
    .unwrap();
    assert!(renamed > before_rename, "ctime moves on rename");
}

#[test]
fn file_and_link_attributes_survive_a_remount_on_lightfield() {
    let mut mount = TestMount::embedded(Backend::Lightfield, |_| {}, |_| {});
    let base = mount.path().to_path_buf();
    sh(&format!(
        "cd {} && printf 'secret' > f && chmod 600 f && chown 1234:5678 f \
         && touch -d '2020-01-02 03:04:05' f && ln -s f link && chown -h 42:43 link",
        q(&base)
    ));
    let before = stat(&base, "f link");
    mount.remount();
    assert_eq!(stat(&base, "f link"), before);
    assert_eq!(std::fs::read(base.join("f")).unwrap(), b"secret");
}

#[test]
fn a_directory_keeps_the_times_its_entries_gave_it_across_a_remount() {
    let mut mount = TestMount::new();
    let base = mount.session_dir("s");
    let b = q(&base);
    sh(&format!(
        "cd {b} && mkdir d && echo x > d/gone && touch -d '2020-01-01 00:00:00' d"
    ));
    // mtime and ctime to the nanosecond.
    let times = || sh(&format!("stat -c '%y %z' {b}/d"));
    // Each change below moves the directory's mtime and ctime; the last one must last.
    for change in ["echo y > d/new", "rm d/gone", "mv d/new d/renamed"] {
        let before = times();
        sh(&format!("cd {b} && {change}"));
        let after = times();
        assert_ne!(after, before, "{change} moves the times of d");
        mount.remount();
        assert_eq!(times(), after, "after {change} and a remount");
    }
    assert!(
        !times().starts_with("2020-"),
        "no longer the time touch set"
    );
    let session = stat(mount.path(), "s");
    mount.remount();
    assert_eq!(
        stat(mount.path(), "s"),
        session,
        "the session directory's times"
    );
}

#[test]
fn the_owner_may_chgrp_to_a_supplementary_group_and_to_no_other() {
    let (_mount, base) = shared_session();
    let b = q(&base);
    let member = "setpriv --reuid 65534 --regid 65534 --groups 4242,4243";
    sh(&format!(
        "cd {b} && {member} sh -c 'echo x > f && chgrp 4243 f'"
    ));
    assert!(stat(&base, "f").starts_with("f 644 65534 4243 "));
    let refused = sh_output(&format!("cd {b} && {member} chgrp 4244 f"));
    assert_eperm(&refused, "chgrp to a group the owner is not in");
    let not_owner = sh_output(&format!(
        "cd {b} && setpriv --reuid 65533 --regid 65533 --groups 4242 chgrp 4242 f"
    ));
    assert!(
        !not_owner.status.success(),
        "chgrp by another member of the group"
    );
    assert!(stat(&base, "f").starts_with("f 644 65534 4243 "));
}

/// Files and directories of every mode the matrix checks, made in `dir` by root and given to
/// uid and gid 1000.
const MATRIX_SETUP: &str = "for m in 600 640 604 660 606 400 040 004 000 200 020 002; do \
     echo data > f$m && chown 1000:1000 f$m && chmod $m f$m; done; \
     for m in 755 775 777 700 750 705 711 770 707 500 000; do \
     mkdir d$m && echo inner > d$m/inner && chown -R 1000:1000 d$m && chmod $m d$m; done";

/// What a user may do in `dir`: for each file, open it to read and to write; for each
/// directory, list it, read a file in it and create one. One line per attempt: `ok` or the
/// errno's name.
const MATRIX_PROBE: &str = r#"
import errno, os, sys
os.chdir(sys.argv[1])
def attempt(what, action):
    try:
        action()
        print(what, "ok")
    except OSError as err:
        print(what, errno.errorcode[err.errno])
def opened(path, mode):
    return lambda: open(path, mode).close()
for name in sorted(os.listdir(".")):
    if name.startswith("f"):
        attempt(name + " read", opened(name, "rb"))
        attempt(name + " write", opened(name, "r+b"))
    else:
        attempt(name + " list", lambda: os.listdir(name))
        attempt(name + " read-inside", opened(name + "/inner", "rb"))
        attempt(name + " create", opened("%s/new-%d" % (name, os.getuid()), "wb"))
"#;

#[test]
fn open_read_write_list_and_create_are_allowed_and_refused_as_on_a_local_directory() {
    let mut mount = TestMount::new();
    mount.remount_with(true);
    let inside = mount.session_dir("s");
    let local = tempfile::tempdir().unwrap();
    let outside = local.path().join("s");
    std::fs::create_dir(&outside).unwrap();
    let users = [
        ("owner", "--reuid 1000 --regid 1000 --clear-groups"),
        ("group", "--reuid 1001 --regid 1001 --groups 1000"),
        ("other", "--reuid 1002 --regid 1002 --clear-groups"),
    ];
    let mut results = Vec::new();
    for dir in [&inside, &outside] {
        let d = q(dir);
        sh(&format!(
            "chmod 755 {d} {} && cd {d} && {MATRIX_SETUP}",
            q(dir.parent().unwrap())
        ));
        let mut table = String::new();
        for (who, ids) in users {
            let probe = sh(&format!(
                "setpriv {ids} /usr/bin/python3 -c {} {d}",
                q(Path::new(MATRIX_PROBE))
            ));
            for line in probe.lines() {
                table.push_str(&format!("{who} {line}\n"));
            }
        }
        results.push(table);
    }
    assert_eq!(
        results[0], results[1],
        "the mount (left) and a local directory (right)"
    );
    let table = &results[0];
    for line in [
        "owner f600 write ok",
        "group f640 write EACCES",
        "other d711 list EACCES",
    ] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
    assert!(table.contains("other d711 read-inside ok"), "{table}");
}
