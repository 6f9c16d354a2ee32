//! Everyday tools on the mount: editors, rsync, git, tar, cp -a, mmap, xattrs.

use crate::harness::{TestMount, pseudo_random, q, sh, sh_output};

#[test]
fn vim_in_ex_mode_edits_and_saves_without_leaving_swap_files() {
    let mount = TestMount::new();
    let dir = mount.session_dir("vim");
    let id = mount.api_session_id("vim");
    let file = dir.join("notes.txt");
    std::fs::write(&file, "line one\nline two\n").unwrap();
    // -u NONE -i NONE: no vimrc or viminfo; swap and backup stay at their defaults.
    sh(&format!(
        "cd {} && vim -u NONE -i NONE -N -e -s -c '%s/two/2/' -c 'wq' notes.txt",
        q(&dir)
    ));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "line one\nline 2\n"
    );
    assert_eq!(
        mount.api_get(&id, "notes.txt").unwrap(),
        b"line one\nline 2\n"
    );
    assert_eq!(
        mount.api_file_names(&id),
        ["notes.txt"],
        "no swap or backup uploaded"
    );
}

#[test]
fn write_temp_fsync_rename_save_replaces_the_file() {
    let mount = TestMount::new();
    let dir = mount.session_dir("save");
    let id = mount.api_session_id("save");
    std::fs::write(dir.join("doc.txt"), b"old").unwrap();
    let script = format!(
        "import os\n\
         tmp = os.path.join({dir:?}, '.doc.txt.tmp1234')\n\
         fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)\n\
         os.write(fd, b'new content')\n\
         os.fsync(fd)\n\
         os.close(fd)\n\
         os.rename(tmp, os.path.join({dir:?}, 'doc.txt'))\n",
        dir = dir.display().to_string()
    );
    sh(&format!("python3 -c {}", shell_quote(&script)));
    assert_eq!(std::fs::read(dir.join("doc.txt")).unwrap(), b"new content");
    assert_eq!(mount.api_file_names(&id), ["doc.txt"]);
    assert_eq!(mount.api_get(&id, "doc.txt").unwrap(), b"new content");
}

#[test]
fn rsync_a_tree_in_and_back_out_keeps_content_and_mtimes() {
    let mount = TestMount::cached();
    let dir = mount.session_dir("rsync");
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha").unwrap();
    std::fs::write(tree.join("sub/b.bin"), pseudo_random(300_000, 9)).unwrap();
    std::fs::write(tree.join("sub/deeper/c d.txt"), b"spaced").unwrap();
    std::fs::write(tree.join("empty"), b"").unwrap();
    sh(&format!(
        "touch -d '2021-06-01 12:00:00 UTC' {}",
        q(&tree.join("a.txt"))
    ));

    sh(&format!("rsync -a {}/ {}/", q(&tree), q(&dir.join("tree"))));
    let back = local.path().join("back");
    sh(&format!("rsync -a {}/ {}/", q(&dir.join("tree")), q(&back)));
    let diff = sh_output(&format!("diff -r {} {}", q(&tree), q(&back)));
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let mtime = sh(&format!("stat -c %Y {}", q(&back.join("a.txt"))));
    assert_eq!(mtime.trim(), "1622548800");
    // A second run finds nothing to transfer.
    let again = sh(&format!(
        "rsync -ai {}/ {}/",
        q(&tree),
        q(&dir.join("tree"))
    ));
    assert!(again.lines().all(|l| !l.starts_with(">f")), "{again}");
}

#[test]
fn git_clone_commit_and_status_work() {
    let mount = TestMount::cached();
    let dir = mount.session_dir("git");
    let local = tempfile::tempdir().unwrap();
    let origin = local.path().join("origin");
    sh(&format!(
        "git init -q {0} && cd {0} && git config user.email t@e && git config user.name t && \
         printf 'hello\\n' > README && mkdir src && printf 'fn main() {{}}\\n' > src/main.rs && \
         git add . && git commit -qm first",
        q(&origin)
    ));
    let clone = dir.join("clone");
    sh(&format!("git clone -q {} {}", q(&origin), q(&clone)));
    let status = sh(&format!("cd {} && git status --porcelain", q(&clone)));
    assert!(status.is_empty(), "fresh clone is clean: {status}");
    sh(&format!(
        "cd {} && git config user.email t@e && git config user.name t && \
         printf 'more\\n' >> README && git commit -qam second",
        q(&clone)
    ));
    let status = sh(&format!(
        "cd {} && git status --porcelain && git log --oneline | wc -l",
        q(&clone)
    ));
    assert_eq!(status.trim(), "2");
    let fsck = sh_output(&format!("cd {} && git fsck --no-progress", q(&clone)));
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
}

#[test]
fn tar_x_and_cp_a_keep_modes_and_mtimes() {
    let mount = TestMount::cached();
    let dir = mount.session_dir("tar");
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(src.join("data.txt"), b"data").unwrap();
    sh(&format!(
        "chmod 750 {0}/bin/tool && chmod 640 {0}/data.txt && \
         touch -d '2018-03-04 05:06:07 UTC' {0}/bin/tool {0}/data.txt && \
         tar -C {0} -cf {1}/a.tar .",
        q(&src),
        q(local.path())
    ));
    sh(&format!(
        "mkdir {0}/x && tar -C {0}/x -xpf {1}/a.tar",
        q(&dir),
        q(local.path())
    ));
    let stat = sh(&format!(
        "stat -c '%a %Y %s' {0}/x/bin/tool {0}/x/data.txt",
        q(&dir)
    ));
    assert_eq!(stat, "750 1520139967 18\n640 1520139967 4\n");

    sh(&format!("cp -a {} {}/copy", q(&src), q(&dir)));
    let stat = sh(&format!(
        "stat -c '%a %Y' {0}/copy/bin/tool {0}/copy/data.txt",
        q(&dir)
    ));
    assert_eq!(stat, "750 1520139967\n640 1520139967\n");
    assert_eq!(std::fs::read(dir.join("copy/data.txt")).unwrap(), b"data");
}

#[test]
fn shared_mmap_writes_reach_the_server_after_msync() {
    let mount = TestMount::new();
    let dir = mount.session_dir("mmap");
    let id = mount.api_session_id("mmap");
    let file = dir.join("m.bin");
    std::fs::write(&file, vec![b'.'; 8192]).unwrap();
    let script = format!(
        "import mmap, os\n\
         fd = os.open({path:?}, os.O_RDWR)\n\
         m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n\
         m[100:105] = b'HELLO'\n\
         m.flush()\n\
         m.close()\n\
         os.fsync(fd)\n\
         os.close(fd)\n",
        path = file.display().to_string()
    );
    sh(&format!("python3 -c {}", shell_quote(&script)));
    let stored = mount.api_get(&id, "m.bin").unwrap();
    assert_eq!(&stored[100..105], b"HELLO");
    assert_eq!(stored.len(), 8192);
}

#[test]
fn xattrs_expose_the_remote_identity_and_refuse_writes() {
    let mount = TestMount::with(|config| config.xattrs = true);
    let dir = mount.session_dir("xattr");
    std::fs::write(dir.join("my f.txt"), b"abc").unwrap();
    let script = format!(
        "import os, errno\n\
         p = {path:?}\n\
         names = sorted(os.listxattr(p))\n\
         print(names)\n\
         print(os.getxattr(p, 'user.sessionfs.name').decode())\n\
         try:\n    os.setxattr(p, 'user.other', b'x')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n",
        path = dir.join("my f.txt").display().to_string()
    );
    let out = sh(&format!("python3 -c {}", shell_quote(&script)));
    assert_eq!(
        out,
        "['user.sessionfs.id', 'user.sessionfs.name']\nmy␠f.txt\nENOTSUP\n"
    );
}

#[test]
fn hard_links_and_device_nodes_get_precise_errors() {
    let mount = TestMount::new();
    let dir = mount.session_dir("links");
    std::fs::write(dir.join("f"), b"x").unwrap();
    let link = std::fs::hard_link(dir.join("f"), dir.join("g"));
    assert_eq!(link.unwrap_err().raw_os_error(), Some(libc::EPERM));
    let fifo = sh_output(&format!("mkfifo {}", q(&dir.join("p"))));
    assert!(!fifo.status.success());
    assert!(String::from_utf8_lossy(&fifo.stderr).contains("not permitted"));
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[test]
fn symlinks_round_trip_and_emacs_locks_stay_local() {
    let mount = TestMount::new();
    let dir = mount.session_dir("links");
    let id = mount.api_session_id("links");
    std::fs::write(dir.join("target.txt"), b"pointed at").unwrap();
    std::os::unix::fs::symlink("target.txt", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("user@host.1234:1700000000", dir.join(".#target.txt")).unwrap();

    assert_eq!(
        std::fs::read_link(dir.join("link")).unwrap().to_str(),
        Some("target.txt")
    );
    assert_eq!(std::fs::read(dir.join("link")).unwrap(), b"pointed at");
    assert_eq!(
        std::fs::read_link(dir.join(".#target.txt"))
            .unwrap()
            .to_str(),
        Some("user@host.1234:1700000000")
    );
    let kind = sh(&format!("stat -c %F {}", q(&dir.join("link"))));
    assert_eq!(kind.trim(), "symbolic link");
    // Stored as a marked object whose content is the target; the emacs lock is not stored.
    assert_eq!(mount.api_file_names(&id), ["link↪", "target.txt"]);
    assert_eq!(mount.api_get(&id, "link↪").unwrap(), b"target.txt");

    // Renamed and removed like files.
    sh(&format!(
        "mv {} {}",
        q(&dir.join("link")),
        q(&dir.join("moved"))
    ));
    assert_eq!(
        std::fs::read_link(dir.join("moved")).unwrap().to_str(),
        Some("target.txt")
    );
    std::fs::remove_file(dir.join("moved")).unwrap();
    std::fs::remove_file(dir.join(".#target.txt")).unwrap();
    assert_eq!(mount.api_file_names(&id), ["target.txt"]);
}

#[test]
fn emacs_in_batch_mode_saves_and_leaves_only_the_file() {
    let mount = TestMount::new();
    let dir = mount.session_dir("emacs");
    let id = mount.api_session_id("emacs");
    std::fs::write(dir.join("notes.txt"), "first\n").unwrap();
    sh(&format!(
        "cd {} && emacs --batch notes.txt --eval \
         '(progn (setq make-backup-files t) (goto-char (point-max)) (insert \"added\\n\") (save-buffer))'",
        q(&dir)
    ));
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "first\nadded\n"
    );
    assert_eq!(mount.api_get(&id, "notes.txt").unwrap(), b"first\nadded\n");
    // The backup `notes.txt~` (emacs renames the original to it) stays local.
    assert_eq!(mount.api_file_names(&id), ["notes.txt"]);
}

#[test]
fn nano_saves_through_a_terminal_and_its_lock_file_stays_local() {
    let mount = TestMount::new();
    let dir = mount.session_dir("nano");
    let id = mount.api_session_id("nano");
    let file = dir.join("notes.txt");
    std::fs::write(&file, "line one\n").unwrap();
    let session = format!("sessionfs-nano-{}", std::process::id());
    sh(&format!(
        "tmux new-session -d -s {session} -x 100 -y 30 \"nano {}\"",
        q(&file)
    ));
    let pane = || sh_output(&format!("tmux capture-pane -p -t {session}")).stdout;
    crate::harness::wait_until(std::time::Duration::from_secs(20), "nano to start", || {
        String::from_utf8_lossy(&pane()).contains("line one")
    });
    // Type at the top, write out (^O, Enter to accept the name), exit (^X).
    sh(&format!("tmux send-keys -t {session} 'TOP ' C-o"));
    crate::harness::wait_until(
        std::time::Duration::from_secs(20),
        "the write prompt",
        || String::from_utf8_lossy(&pane()).contains("File Name to Write"),
    );
    sh(&format!("tmux send-keys -t {session} Enter"));
    crate::harness::wait_until(std::time::Duration::from_secs(20), "the save", || {
        mount.api_get(&id, "notes.txt").as_deref() == Some(b"TOP line one\n".as_slice())
    });
    sh(&format!("tmux send-keys -t {session} C-x"));
    crate::harness::wait_until(std::time::Duration::from_secs(20), "nano to exit", || {
        !sh_output(&format!("tmux has-session -t {session}"))
            .status
            .success()
    });
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "TOP line one\n");
    assert_eq!(
        mount.api_file_names(&id),
        ["notes.txt"],
        "the .notes.txt.swp lock stays local"
    );
}

#[test]
fn by_default_ls_l_works_and_xattr_calls_are_unsupported() {
    let mount = TestMount::new();
    let dir = mount.session_dir("plain");
    std::fs::write(dir.join("f.txt"), b"abc").unwrap();
    let listing = sh(&format!("ls -l {}", q(&dir)));
    assert!(listing.contains(" f.txt\n"), "{listing}");
    let script = format!(
        "import os, errno\n\
         try:\n    os.getxattr({path:?}, 'user.sessionfs.id')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n",
        path = dir.join("f.txt").display().to_string()
    );
    assert_eq!(
        sh(&format!("python3 -c {}", shell_quote(&script))),
        "ENOTSUP\n"
    );
}

/// A database mixing `pwrite` and a shared mapping on the same pages: one thread writes one
/// word of every page with `pwrite` while another keeps writing the next word of the same
/// pages through a `MAP_SHARED` mapping (and asks for write-back now and then). Both writers'
/// words must survive, in the page cache and on the server. The loss this guards against was
/// a race (about one run in two of 16 MiB), hence the rounds.
#[test]
fn pwrite_racing_a_shared_mapping_keeps_both_writers_words() {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    const PAGE: usize = 4096;
    const PAGES: usize = 1024;
    const ROUNDS: usize = 12;
    let mount = TestMount::new();
    let dir = mount.session_dir("race");
    let id = mount.api_session_id("race");
    let path = dir.join("db");
    std::fs::write(&path, vec![0u8; PAGE * PAGES]).unwrap();
    let word = |round: usize, page: usize, by_map: bool| -> u64 {
        ((round as u64 + 1) << 40) | ((page as u64) << 8) | if by_map { 0x4d } else { 0x57 }
    };
    // Word 2r of each page is pwrite's in round r, word 2r + 1 the mapping's.
    let offset =
        |round: usize, page: usize, by_map: bool| page * PAGE + (2 * round + by_map as usize) * 8;
    let lost = |data: &[u8], rounds: usize| -> Vec<String> {
        let mut lost = Vec::new();
        for round in 0..rounds {
            for page in 0..PAGES {
                for by_map in [false, true] {
                    let at = offset(round, page, by_map);
                    let got = u64::from_ne_bytes(data[at..at + 8].try_into().unwrap());
                    if got != word(round, page, by_map) {
                        lost.push(format!("round {round} page {page} map {by_map}: {got:#x}"));
                    }
                }
            }
        }
        lost
    };
    for round in 0..ROUNDS {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let len = PAGE * PAGES;
        // SAFETY: a fresh shared mapping of the open file's first `len` bytes, unmapped below
        // after both threads are done with it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let base = map as usize;
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for page in 0..PAGES {
                    let at = offset(round, page, false);
                    file.write_all_at(&word(round, page, false).to_ne_bytes(), at as u64)
                        .unwrap();
                }
                done.store(true, Ordering::Release);
            });
            scope.spawn(|| {
                let mut passes = 0;
                while passes < 2 || !done.load(Ordering::Acquire) {
                    for page in 0..PAGES {
                        let at = offset(round, page, true);
                        // SAFETY: `at + 8 <= len`, inside the mapping, aligned to 8.
                        unsafe {
                            std::ptr::write_volatile(
                                (base + at) as *mut u64,
                                word(round, page, true),
                            )
                        };
                    }
                    // SAFETY: the mapping is valid for `len` bytes.
                    unsafe { libc::msync(base as *mut libc::c_void, len, libc::MS_ASYNC) };
                    passes += 1;
                }
            });
        });
        // SAFETY: the mapping made above, used by no one any more.
        unsafe {
            assert_eq!(libc::msync(map, len, libc::MS_SYNC), 0);
            assert_eq!(libc::munmap(map, len), 0);
        }
        file.sync_all().unwrap();
        drop(file);
        let lost_here = lost(&std::fs::read(&path).unwrap(), round + 1);
        assert!(
            lost_here.is_empty(),
            "round {round}: {} words lost, first {:?}",
            lost_here.len(),
            &lost_here[..lost_here.len().min(5)]
        );
    }
    let stored = mount.api_get(&id, "db").unwrap();
    let lost_there = lost(&stored, ROUNDS);
    assert!(
        lost_there.is_empty(),
        "on the server: {} words lost, first {:?}",
        lost_there.len(),
        &lost_there[..lost_there.len().min(5)]
    );
}
