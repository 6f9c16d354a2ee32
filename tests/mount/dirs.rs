//! Directory rename through a real mount: rename(2) moves every object below the directory on
//! the server (Mix, and the chunked Appmixer and Fluxer), over an empty directory it replaces
//! it, over a non-empty one it is ENOTEMPTY, over `--max-dir-rename` EXDEV (and `mv` copies),
//! and a mount killed half-way through finishes the rename when it mounts again (Mix and
//! Appmixer, through the binary).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sessionfs::backend::Backend;
use sessionfs::fs::DirRenameLimit;
use sessionfs::remote::ObjectMeta;

use crate::harness::{
    Reaped, TestMount, errno, q, sessionfs_command, sh, start_until, start_with_endpoint,
    wait_until,
};

/// Files in the directory that is renamed.
const FILES: usize = 300;

/// Writes `count` files `f000`.. into `dir` (content `file N`) with python, eight at a time.
fn write_files(dir: &Path, count: usize) {
    sh(&format!(
        "python3 - {} {count} <<'EOF'\n\
         import os, sys\n\
         from concurrent.futures import ThreadPoolExecutor\n\
         d, n = sys.argv[1], int(sys.argv[2])\n\
         os.makedirs(d, exist_ok=True)\n\
         def put(i):\n\
         \x20   with open(os.path.join(d, 'f%03d' % i), 'w') as f:\n\
         \x20       f.write('file %d\\n' % i)\n\
         with ThreadPoolExecutor(8) as pool:\n\
         \x20   list(pool.map(put, range(n)))\n\
         EOF",
        q(dir)
    ));
}

/// Checks that `dir` holds exactly the `count` files [`write_files`] wrote, and nothing else
/// but `extra`.
fn check_files(dir: &Path, count: usize, extra: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..count).map(|i| format!("f{i:03}")).collect();
    expected.extend(extra.iter().map(|s| s.to_string()));
    expected.sort();
    assert_eq!(names, expected, "entries of {}", dir.display());
    for i in 0..count {
        let text = std::fs::read_to_string(dir.join(format!("f{i:03}"))).unwrap();
        assert_eq!(text, format!("file {i}\n"));
    }
}

/// `os.rename(from, to)` in python, as programs that rename directories call it.
fn py_rename(from: &Path, to: &Path) -> std::process::Output {
    Command::new("python3")
        .args(["-c", "import os, sys; os.rename(sys.argv[1], sys.argv[2])"])
        .arg(from)
        .arg(to)
        .output()
        .unwrap()
}

/// The stored names another client lists in `container`, decoded to paths.
fn server_paths(mount: &TestMount, container: Option<&str>) -> Vec<String> {
    let listed: Vec<ObjectMeta> = mount.runtime.block_on(mount.other.list(container)).unwrap();
    let mut paths: Vec<String> = listed
        .iter()
        .map(|o| sessionfs::remote::names::decode(&o.name))
        .collect();
    paths.sort();
    paths
}

/// A directory of [`FILES`] files, a subdirectory and a link, renamed with `os.rename` in
/// `base` (which is `container` on the server): the mount, the server and a remount agree.
fn rename_of_many_files(mount: &mut TestMount, base: &Path, container: Option<&str>) {
    let (from, to) = (base.join("build"), base.join("renamed"));
    write_files(&from, FILES);
    sh(&format!(
        "cd {} && mkdir sub && echo deep > sub/deep && ln -s f000 link && chmod 600 f001",
        q(&from)
    ));
    let started = Instant::now();
    let renamed = py_rename(&from, &to);
    let took = started.elapsed();
    assert!(renamed.status.success(), "{renamed:?}");
    eprintln!(
        "renamed a directory of {} objects on {:?} in {took:?}",
        FILES + 3,
        mount.other.describe()
    );
    assert!(!from.exists());
    check_files(&to, FILES, &["link", "sub"]);
    assert_eq!(
        std::fs::read_to_string(to.join("sub/deep")).unwrap(),
        "deep\n"
    );
    let paths = server_paths(mount, container);
    assert!(
        paths.iter().all(|p| !p.starts_with("build/")),
        "nothing stays under the old name: {:?}",
        paths
            .iter()
            .filter(|p| p.starts_with("build/"))
            .collect::<Vec<_>>()
    );
    let moved = paths.iter().filter(|p| p.starts_with("renamed/")).count();
    assert!(moved >= FILES + 2, "{moved} objects under the new name");
    let mode = |path: &Path| sh(&format!("stat -c %a {}", q(path)));
    assert_eq!(mode(&to.join("f001")).trim(), "600");
    mount.remount();
    assert!(!from.exists(), "no old half after a remount");
    check_files(&to, FILES, &["link", "sub"]);
    assert_eq!(
        mode(&to.join("f001")).trim(),
        "600",
        "attributes follow the move"
    );
    assert_eq!(
        std::fs::read_link(to.join("link")).unwrap(),
        Path::new("f000")
    );
}

#[test]
fn a_directory_of_300_files_renames_on_mix() {
    let mut mount = TestMount::cached();
    let base = mount.session_dir("s");
    let session = mount.api_session_id("s");
    rename_of_many_files(&mut mount, &base, Some(&session));
}

#[test]
fn a_directory_of_300_files_renames_on_appmixer() {
    let mut mount = TestMount::embedded(
        Backend::Appmixer,
        |_| {},
        |config| config.metadata_ttl = Duration::from_secs(60),
    );
    let base = mount.path().to_path_buf();
    rename_of_many_files(&mut mount, &base, None);
}

#[test]
fn a_directory_of_300_files_renames_on_fluxer() {
    let mut mount = TestMount::embedded(
        Backend::Fluxer,
        |c| c.fluxer.rate_limits = false,
        |config| config.metadata_ttl = Duration::from_secs(60),
    );
    let containers = mount
        .runtime
        .block_on(mount.other.list_containers())
        .unwrap();
    let channel = containers.into_iter().next().expect("a channel");
    let group = channel.group.clone().expect("channels sit in their guild");
    let base = mount.join(&group.title).join(&channel.title);
    rename_of_many_files(&mut mount, &base, Some(&channel.id));
}

#[test]
fn a_rename_replaces_an_empty_directory_and_refuses_a_full_one() {
    let mount = TestMount::new();
    let base = mount.session_dir("s");
    let b = q(&base);
    sh(&format!(
        "cd {b} && mkdir -p src/in full empty && echo a > src/a && echo b > src/in/b \
         && echo x > full/x && echo f > file"
    ));
    let (src, full, empty) = (base.join("src"), base.join("full"), base.join("empty"));
    assert_eq!(errno(std::fs::rename(&src, &full)), libc::ENOTEMPTY);
    assert_eq!(
        errno(std::fs::rename(&src, base.join("file"))),
        libc::ENOTDIR
    );
    assert_eq!(std::fs::read_to_string(src.join("in/b")).unwrap(), "b\n");
    std::fs::rename(&src, &empty).unwrap();
    assert!(!src.exists());
    assert_eq!(std::fs::read_to_string(empty.join("a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(empty.join("in/b")).unwrap(), "b\n");
    let session = mount.api_session_id("s");
    let names = mount.api_file_names(&session);
    assert!(names.iter().all(|n| !n.starts_with("src")), "{names:?}");
    assert!(names.contains(&"empty／in／b".to_string()), "{names:?}");
    // The moved directory keeps the replaced one's marker: it is still a directory when empty.
    sh(&format!("rm -r {}/empty/in {}/empty/a", b, b));
    assert!(empty.is_dir());
}

#[test]
fn a_rename_over_the_limit_is_exdev_and_mv_copies_instead() {
    let mount = TestMount::with(|config| {
        config.max_dir_rename = DirRenameLimit {
            bytes: 1 << 30,
            objects: 5,
        }
    });
    let base = mount.session_dir("s");
    let (from, to) = (base.join("big"), base.join("moved"));
    write_files(&from, 10);
    let renamed = py_rename(&from, &to);
    assert!(!renamed.status.success());
    let stderr = String::from_utf8_lossy(&renamed.stderr);
    assert!(stderr.contains("Invalid cross-device link"), "{stderr}");
    check_files(&from, 10, &[]);
    sh(&format!("mv {} {}", q(&from), q(&to)));
    assert!(!from.exists());
    check_files(&to, 10, &[]);
}

/// How the crash test runs one backend through the binary.
struct Served {
    backend: Backend,
    /// The account (e-mail, password) the emulator serves and the mount and another client
    /// sign in with, for APIs that sign in with a password.
    login: Option<(&'static str, &'static str)>,
}

/// `sessionfs serve` of `served`'s backend, whose every answer waits `latency`; returns it and
/// its endpoint.
fn serve(served: &Served, home: &Path, data: &Path, latency: &str) -> (Reaped, String) {
    let mut args = vec![
        "serve",
        "--backend",
        served.backend.name(),
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--latency",
        latency,
    ];
    let account = served
        .login
        .map(|(user, password)| format!("{user}:{password}"));
    if let Some(account) = &account {
        args.extend(["--user", account.as_str()]);
    }
    let (child, endpoint) = start_with_endpoint(sessionfs_command(home, &args), "serving");
    (Reaped(child), endpoint)
}

fn mount_binary(served: &Served, home: &Path, mnt: &Path, endpoint: &str) -> Reaped {
    let mut args = vec![
        "mount",
        mnt.to_str().unwrap(),
        "--backend",
        served.backend.name(),
        "--endpoint",
        endpoint,
    ];
    if let Some((user, _)) = served.login {
        args.extend(["--user", user]);
    }
    let mut command = sessionfs_command(home, &args);
    if let Some((_, password)) = served.login {
        command.env("SESSIONFS_PASSWORD", password);
    }
    Reaped(start_until(command, "unmount with").0)
}

/// The paths stored in the first container (or the flat root), as another client lists them.
fn listed_paths(served: &Served, endpoint: &str) -> Vec<String> {
    let mut config = sessionfs::remote::RemoteConfig::new(endpoint, None);
    if let Some((user, password)) = served.login {
        config.user = Some(user.to_string());
        config.password = Some(password.to_string());
    }
    let client = served.backend.connect(&config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let containers = client.list_containers().await.unwrap();
        let container = containers.first().map(|c| c.id.as_str());
        let listed = client.list(container).await.unwrap();
        listed
            .iter()
            .map(|o| sessionfs::remote::names::decode(&o.name))
            .collect()
    })
}

/// The 300-file rename of `served`'s backend cut by SIGKILL of the mount after 20 objects
/// moved: the server then holds both halves, and the next mount shows only the new one.
fn a_rename_cut_by_sigkill_is_finished_by_the_next_mount(served: &Served) {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    // Every answer waits 30 ms, so the 900 requests of the rename take seconds.
    let (mut server, endpoint) = serve(served, home.path(), data.path(), "30ms");
    let mut mount = mount_binary(served, home.path(), mnt.path(), &endpoint);
    let base = match served.backend {
        Backend::Mix => {
            let session = mnt.path().join("s");
            std::fs::create_dir(&session).unwrap();
            session
        }
        _ => mnt.path().to_path_buf(),
    };
    let (from, to) = (base.join("old"), base.join("new"));
    write_files(&from, FILES);

    let mut renamer = Reaped(
        Command::new("python3")
            .args(["-c", "import os, sys; os.rename(sys.argv[1], sys.argv[2])"])
            .arg(&from)
            .arg(&to)
            .spawn()
            .unwrap(),
    );
    let halves = |paths: &[String]| {
        let moved = paths.iter().filter(|p| p.starts_with("new/f")).count();
        let left = paths.iter().filter(|p| p.starts_with("old/f")).count();
        (moved, left)
    };
    wait_until(Duration::from_secs(60), "20 objects moved", || {
        halves(&listed_paths(served, &endpoint)).0 >= 20
    });
    mount.stop(libc::SIGKILL);
    let _ = renamer.0.wait();
    let (moved, left) = halves(&listed_paths(served, &endpoint));
    assert!(
        moved > 0 && left > 0,
        "killed half-way: {moved} moved, {left} left"
    );

    let mut mount = mount_binary(served, home.path(), mnt.path(), &endpoint);
    assert!(!from.exists(), "no old half after the next mount");
    check_files(&to, FILES, &[]);
    let paths = listed_paths(served, &endpoint);
    assert_eq!(halves(&paths), (FILES, 0), "{paths:?}");
    let records = sh(&format!(
        "find {} -path '*renames*' -name '*.json' | wc -l",
        q(&home.path().join(".cache/sessionfs/staging"))
    ));
    assert_eq!(records.trim(), "0", "the record is gone once done");
    for child in [&mut mount, &mut server] {
        assert!(child.stop(libc::SIGTERM).success());
    }
}

#[test]
fn a_rename_cut_by_sigkill_is_finished_by_the_next_mount_on_mix() {
    a_rename_cut_by_sigkill_is_finished_by_the_next_mount(&Served {
        backend: Backend::Mix,
        login: None,
    });
}

#[test]
fn a_rename_cut_by_sigkill_is_finished_by_the_next_mount_on_appmixer() {
    a_rename_cut_by_sigkill_is_finished_by_the_next_mount(&Served {
        backend: Backend::Appmixer,
        login: Some(("dirs@example.com", "rename-me-please")),
    });
}
