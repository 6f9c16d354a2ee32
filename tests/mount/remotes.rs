//! Named remotes of the config file through the real binary: `sessionfs remotes`, `config
//! check`, two remotes mounted at once, secret files (refused when others may read them,
//! never in argv or the log), `--log-file`, and `df` numbers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use crate::harness::{q, sessionfs_command, sh, start_until, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");
const TOKEN: &str = "sk_lf_remotes_test_secret_4242";

/// `sessionfs ARGS` with `HOME` set to `home` and no XDG overrides, so the config is read from
/// `home/.config/sessionfs/config.toml`.
fn sessionfs(home: &Path, args: &[&str]) -> Command {
    sessionfs_command(home, args)
}

fn run(home: &Path, args: &[&str]) -> Output {
    sessionfs(home, args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts `sessionfs ARGS` and waits for the stdout line holding `ready`. With `--log-file`
/// it logs every request (`RUST_LOG=debug`), so the log would show a leaked token.
fn start(home: &Path, args: &[&str], ready: &str) -> (Child, String) {
    let level = if args.contains(&"--log-file") {
        "debug"
    } else {
        "info"
    };
    let mut command = sessionfs(home, args);
    command.env("RUST_LOG", level);
    start_until(command, ready)
}

fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

fn write_config(home: &Path, text: &str) -> PathBuf {
    let dir = home.join(".config/sessionfs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn secret_file(home: &Path, mode: u32) -> PathBuf {
    let path = home.join("lightfield.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A Lightfield emulator that accepts only [`TOKEN`]; returns it and its endpoint.
fn lightfield_server(home: &Path, data: &Path) -> (Child, String) {
    let (server, banner) = start(
        home,
        &[
            "serve",
            "--backend",
            "lightfield",
            "--token",
            TOKEN,
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ],
        "serving",
    );
    let endpoint = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("endpoint in banner")
        .to_string();
    (server, endpoint)
}

fn two_remotes(home: &Path, endpoint: &str, token: &Path) -> PathBuf {
    write_config(
        home,
        &format!(
            "memory-limit = \"64MiB\"\n\n[remotes.notes]\nbackend = \"mix\"\n\n\
             [remotes.lf]\nbackend = \"lightfield\"\nendpoint = \"{endpoint}\"\n\
             token_file = {:?}\nmetadata-ttl = \"0s\"\n",
            token.display().to_string()
        ),
    )
}

#[test]
fn two_named_remotes_mount_at_once_and_the_token_stays_out_of_argv_and_logs() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut server, endpoint) = lightfield_server(home.path(), data.path());
    let token = secret_file(home.path(), 0o600);
    two_remotes(home.path(), &endpoint, &token);

    let listed = run(home.path(), &["remotes"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let lines: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["lf:", "lightfield", endpoint.as_str()],
        "{listed}"
    );
    assert_eq!(
        lines[1],
        ["notes:", "mix", "(embedded", "emulator)"],
        "{listed}"
    );
    assert!(!listed.contains(TOKEN), "{listed}");
    let check = run(home.path(), &["config", "check"]);
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok, 2 remote(s): lf, notes"));

    let notes_mnt = tempfile::tempdir().unwrap();
    let lf_mnt = tempfile::tempdir().unwrap();
    let lf_log = home.path().join("lf.log");
    let (mut notes, banner) = start(
        home.path(),
        &["mount", "notes:", notes_mnt.path().to_str().unwrap()],
        "unmount with",
    );
    assert!(
        banner.contains(".local/share/sessionfs/remotes/notes"),
        "an embedded remote keeps its own data: {banner}"
    );
    let (mut lf, banner) = start(
        home.path(),
        &[
            "mount",
            "lf:",
            lf_mnt.path().to_str().unwrap(),
            "--log-file",
            lf_log.to_str().unwrap(),
        ],
        "unmount with",
    );
    assert!(banner.contains(&endpoint), "{banner}");

    sh(&format!(
        "mkdir {0}/s && echo note > {0}/s/n.txt && echo lf > {1}/l.txt",
        q(notes_mnt.path()),
        q(lf_mnt.path())
    ));
    assert_eq!(
        std::fs::read_to_string(notes_mnt.path().join("s/n.txt")).unwrap(),
        "note\n"
    );
    assert_eq!(
        std::fs::read_to_string(lf_mnt.path().join("l.txt")).unwrap(),
        "lf\n"
    );

    let cmdline = std::fs::read(format!("/proc/{}/cmdline", lf.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("lf:"), "{cmdline}");
    assert!(
        !cmdline.contains(TOKEN),
        "the token is not in argv: {cmdline}"
    );
    terminate(&mut lf);
    terminate(&mut notes);
    let log = std::fs::read_to_string(&lf_log).unwrap();
    assert!(
        log.contains("unmounted"),
        "--log-file holds the mount's log: {log}"
    );
    assert!(log.contains("DEBUG"), "requests are logged: {log}");
    assert!(!log.contains(TOKEN), "the token is not logged");
    terminate(&mut server);
}

#[test]
fn a_secret_file_others_may_read_is_refused_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let token = secret_file(home.path(), 0o644);
    two_remotes(home.path(), "http://127.0.0.1:9", &token);
    let fix = format!("chmod 600 {}", token.display());

    let check = run(home.path(), &["config", "check"]);
    assert!(!check.status.success());
    let err = stderr(&check);
    assert!(err.contains("line 9, key `remotes.lf.token_file`"), "{err}");
    assert!(err.contains(&fix), "{err}");

    let mnt = tempfile::tempdir().unwrap();
    let mount = run(home.path(), &["mount", "lf:", mnt.path().to_str().unwrap()]);
    assert!(!mount.status.success());
    let err = stderr(&mount);
    assert!(err.contains(&fix), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    assert!(std::fs::read_dir(mnt.path()).unwrap().next().is_none());
}

#[test]
fn config_errors_name_the_line_and_the_key() {
    let home = tempfile::tempdir().unwrap();
    write_config(
        home.path(),
        "[remotes.ok]\nbackend = \"mix\"\n\n[remotes.bad]\nbackend = \"fluxer\"\nmetadata-tll = \"5s\"\n",
    );
    let check = run(home.path(), &["config", "check"]);
    assert!(!check.status.success());
    let err = stderr(&check);
    assert!(
        err.contains("line 6, key `remotes.bad.metadata-tll`"),
        "{err}"
    );
    assert!(err.contains("unknown field"), "{err}");

    let other = home.path().join("other.toml");
    std::fs::write(&other, "[remotes.x]\nfile-mode = \"9\"\n").unwrap();
    let check = run(
        home.path(),
        &["config", "check", "--config", other.to_str().unwrap()],
    );
    let err = stderr(&check);
    assert!(err.contains("line 2, key `remotes.x.file-mode`"), "{err}");

    std::fs::write(&other, "[remotes.x]\n").unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mnt_arg = mnt.path().to_str().unwrap();
    let config = ["--config", other.to_str().unwrap()];
    let mount = run(
        home.path(),
        &[&["mount", "y:", mnt_arg][..], &config].concat(),
    );
    assert!(stderr(&mount).contains("no remote \"y\""), "{mount:?}");
    let mount = run(
        home.path(),
        &[&["mount", "x:sub", mnt_arg][..], &config].concat(),
    );
    let err = stderr(&mount);
    assert!(
        err.contains("no container \"sub\"") && err.contains("nothing was mounted"),
        "{mount:?}"
    );
}

#[test]
fn daemon_logs_to_the_log_file_and_df_counts_stored_bytes() {
    let home = tempfile::tempdir().unwrap();
    write_config(home.path(), "[remotes.notes]\nmetadata-ttl = \"0s\"\n");
    let mnt = tempfile::tempdir().unwrap();
    let log = home.path().join("daemon.log");
    let output = run(
        home.path(),
        &[
            "mount",
            "--daemon",
            "--log-file",
            log.to_str().unwrap(),
            "notes:",
            mnt.path().to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let banner = String::from_utf8_lossy(&output.stdout);
    assert!(
        banner.contains(&format!("log {}", log.display())),
        "{banner}"
    );

    // 3 MiB in two files: df shows about that much used, and far under 100 %.
    sh(&format!(
        "mkdir {0}/s && head -c 2097152 /dev/zero > {0}/s/a && head -c 1048576 /dev/zero > {0}/s/b",
        q(mnt.path())
    ));
    let df = sh(&format!("df -B1 --output=used,pcent {}", q(mnt.path())));
    let fields: Vec<&str> = df.lines().nth(1).unwrap().split_whitespace().collect();
    let used: u64 = fields[0].parse().unwrap();
    let percent: u32 = fields[1].trim_end_matches('%').parse().unwrap();
    assert!((3 << 20..4 << 20).contains(&used), "{df}");
    assert!(percent < 100, "{df}");

    let unmount = run(home.path(), &["unmount", mnt.path().to_str().unwrap()]);
    assert!(unmount.status.success(), "{unmount:?}");
    wait_until(Duration::from_secs(10), "the log of the unmount", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("unmounted"))
    });
}

#[test]
fn completions_and_man_pages_are_generated_from_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    let bash = run(home.path(), &["completions", "bash"]);
    assert!(bash.status.success(), "{bash:?}");
    let script = home.path().join("sessionfs.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    sh(&format!("bash -n {}", q(&script)));
    assert!(String::from_utf8_lossy(&bash.stdout).contains("remotes"));

    let dir = home.path().join("man1");
    let man = run(home.path(), &["man", "--dir", dir.to_str().unwrap()]);
    assert!(man.status.success(), "{man:?}");
    let page = std::fs::read_to_string(dir.join("sessionfs-mount.1")).unwrap();
    assert!(page.contains(".TH sessionfs-mount"), "{page}");
    assert!(page.contains("token\\-file"), "{page}");
    assert!(dir.join("sessionfs.1").exists());
}

#[test]
fn as_mount_sessionfs_it_takes_mount_8_arguments_and_mounts_in_the_background() {
    let home = tempfile::tempdir().unwrap();
    write_config(home.path(), "[remotes.notes]\nbackend = \"mix\"\n");
    let helper = home.path().join("mount.sessionfs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let output = Command::new(&helper)
        .arg("notes:")
        .arg(mnt.path())
        .args([
            "-o",
            "rw,_netdev,nofail,x-systemd.automount,memory_limit=64MiB,dir_mode=700",
        ])
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    sh(&format!(
        "mkdir {0}/s && echo fstab > {0}/s/f",
        q(mnt.path())
    ));
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("s/f")).unwrap(),
        "fstab\n"
    );
    let mode = sh(&format!("stat -c %a {}", q(mnt.path())));
    assert_eq!(mode.trim(), "700", "dir_mode= reached the mount");
    let unmount = run(home.path(), &["unmount", mnt.path().to_str().unwrap()]);
    assert!(unmount.status.success(), "{unmount:?}");

    let refused = Command::new(&helper)
        .args(["notes:", "/nonexistent", "-o", "colour=blue"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("unknown option \"colour=blue\""),
        "{refused:?}"
    );
}
