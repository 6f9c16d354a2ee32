//! Crash tests per backend, one function for all four: the `sessionfs` binary mounts a
//! separately served emulator (slowed by `--latency`, so uploads take seconds) and is killed
//! with SIGKILL while (b) a stored file is open and half-rewritten and (a, c) a large file,
//! closed, is being uploaded (on Appmixer and Lightfield once the server holds its partial
//! upload: chunks of a file, a PENDING session). The next mount must upload the large file
//! intact, leave the server's copy of the half-rewritten file as it was committed, put the
//! half-written bytes into the recovery folder, and leave no unfinished upload on the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sessionfs::backend::Backend;

use crate::harness::{
    pseudo_random, python_until_written, q, sessionfs_command, sh, start_until,
    start_with_endpoint, wait_until,
};

/// Bytes of the file whose upload is killed: many 1 MiB Appmixer chunks, several Fluxer parts.
const LARGE_BYTES: usize = 24 << 20;
/// Delay the emulator adds before every request, so the kill lands mid-upload.
const LATENCY: &str = "500ms";
const PASSWORD: &str = "crash-test-password";
const USER: &str = "crash@example.com";
const TOKEN_LIGHTFIELD: &str = "sk_lf_crash_test";
const TOKEN_FLUXER: &str = "fluxer-crash-test-token";

/// The credentials `serve` and `mount` need for `backend`.
fn credentials(backend: Backend) -> (Vec<String>, Vec<String>) {
    let pair = |serve: &[&str], mount: &[&str]| {
        let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect();
        (owned(serve), owned(mount))
    };
    let login = format!("{USER}:{PASSWORD}");
    match backend {
        Backend::Mix => pair(&[], &[]),
        Backend::Lightfield => pair(
            &["--token", TOKEN_LIGHTFIELD],
            &["--token", TOKEN_LIGHTFIELD],
        ),
        Backend::Appmixer => pair(
            &["--user", &login],
            &["--user", USER, "--chunk-size", "1MiB"],
        ),
        Backend::Fluxer => pair(
            &["--token", TOKEN_FLUXER],
            &["--token", TOKEN_FLUXER, "--upload-parallel", "1"],
        ),
    }
}

/// A served emulator and what talks to it from outside.
struct Server {
    backend: Backend,
    child: Child,
    endpoint: String,
}

impl Server {
    fn get(&self, path: &str, auth: &[&str]) -> Value {
        let mut args = vec!["-sf".to_string()];
        for header in auth {
            args.extend(["-H".to_string(), header.to_string()]);
        }
        args.push(format!("{}{path}", self.endpoint));
        let out = Command::new("curl").args(&args).output().unwrap();
        assert!(out.status.success(), "GET {path}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Unfinished uploads the server holds, where it can tell: Appmixer's incomplete files,
    /// Lightfield's PENDING sessions. Fluxer's sessions cannot be cancelled (they expire), and
    /// Mix takes a file in one request.
    fn unfinished(&self) -> Option<u64> {
        match self.backend {
            Backend::Appmixer => self.get("/_emulator/stats", &[])["incompleteFiles"].as_u64(),
            Backend::Lightfield => {
                let bearer = format!("Authorization: Bearer {TOKEN_LIGHTFIELD}");
                let list = self.get(
                    "/v1/files?limit=100",
                    &[&bearer, "Lightfield-Version: 2026-03-01"],
                );
                let files = list["data"].as_array().unwrap();
                Some(files.iter().filter(|f| f["status"] == "PENDING").count() as u64)
            }
            Backend::Mix | Backend::Fluxer => None,
        }
    }

    /// Messages the Fluxer server stores (each upload that finished posts one).
    fn messages(&self) -> Option<u64> {
        (self.backend == Backend::Fluxer)
            .then(|| self.get("/_emulator/stats", &[])["messages"].as_u64())
            .flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(backend: Backend, home: &Path, data: &Path) -> Server {
    let (creds, _) = credentials(backend);
    let mut args = vec![
        "serve",
        "--backend",
        backend.name(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(["--data", data.to_str().unwrap(), "--latency", LATENCY]);
    args.extend(creds.iter().map(String::as_str));
    let (child, endpoint) = start_with_endpoint(sessionfs_command(home, &args), "serving");
    Server {
        backend,
        child,
        endpoint,
    }
}

fn mount(server: &Server, home: &Path, mnt: &Path) -> Child {
    let (_, creds) = credentials(server.backend);
    let mut args = vec!["mount", mnt.to_str().unwrap(), "--backend"];
    args.extend([server.backend.name(), "--endpoint", &server.endpoint]);
    args.extend(creds.iter().map(String::as_str));
    let mut command = sessionfs_command(home, &args);
    command.env("SESSIONFS_PASSWORD", PASSWORD);
    start_until(command, "unmount with").0
}

/// The directory to write in: a new session on Mix, the first channel on Fluxer, the root on
/// flat APIs.
fn work_dir(backend: Backend, mnt: &Path) -> PathBuf {
    match backend {
        Backend::Mix => {
            let dir = mnt.join("crash");
            std::fs::create_dir(&dir).unwrap();
            dir
        }
        Backend::Fluxer => {
            let guild = std::fs::read_dir(mnt)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .find(|path| !path.ends_with("@me"))
                .expect("a guild");
            guild.join("general")
        }
        Backend::Lightfield | Backend::Appmixer => mnt.to_path_buf(),
    }
}

/// A Python process (one descriptor, never closed, so nothing is committed) that opens `file`
/// for update and writes `bytes` (a file holding them is `bytes_file`) over its start, then
/// waits to be killed.
fn half_rewrite(file: &Path, bytes_file: &Path) -> Child {
    let program = "import sys, time\n\
                   f = open(sys.argv[1], 'r+b', buffering=0)\n\
                   f.write(open(sys.argv[2], 'rb').read())\n\
                   print('written', flush=True)\n\
                   time.sleep(120)\n";
    python_until_written(program, &[file, bytes_file])
}

/// A Python process that writes `source` into `target` from the last MiB to the first (so
/// nothing is streamed while written) and closes it: the whole upload runs after the close.
fn write_backwards(source: &Path, target: &Path) -> Child {
    let program = "import sys\n\
                   data = open(sys.argv[1], 'rb').read()\n\
                   f = open(sys.argv[2], 'wb', buffering=0)\n\
                   step = 1 << 20\n\
                   for start in reversed(range(0, len(data), step)):\n\
                   \x20   f.seek(start)\n\
                   \x20   f.write(data[start:start + step])\n\
                   f.close()\n";
    Command::new("python3")
        .args(["-c", program])
        .arg(source)
        .arg(target)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The journal records the mount keeps under `home` (`staging/*/journal/*.json`).
fn journal_records(home: &Path) -> Vec<Value> {
    let staging = home.join(".cache/sessionfs/staging");
    let found = sh(&format!(
        "find {} -path '*/journal/*.json' 2>/dev/null || true",
        q(&staging)
    ));
    found
        .lines()
        .filter_map(|path| std::fs::read(path).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

fn record_of<'a>(records: &'a [Value], name: &str) -> Option<&'a Value> {
    records.iter().find(|r| r["path"] == name)
}

fn kill(child: &mut Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let _ = child.wait();
}

fn crash(backend: Backend) {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let server = serve(backend, home.path(), data.path());
    let mut mounted = mount(&server, home.path(), mnt.path());
    let dir = work_dir(backend, mnt.path());
    let committed = "committed content, closed by its writer\n";
    let old = dir.join("old.txt");
    std::fs::write(&old, committed).unwrap();

    // (b) A stored file opened again and half rewritten, never closed.
    let rewrite = "HALF-WRITTEN";
    let rewrite_file = local.path().join("rewrite");
    std::fs::write(&rewrite_file, rewrite).unwrap();
    let mut rewriter = half_rewrite(&old, &rewrite_file);
    // (a, c) A large file closed and being uploaded when the mount dies.
    let large = pseudo_random(LARGE_BYTES, 77);
    let source = local.path().join("large.bin");
    std::fs::write(&source, &large).unwrap();
    let mut writer = write_backwards(&source, &dir.join("large.bin"));
    let uploading = |records: &[Value]| {
        record_of(records, "large.bin").is_some_and(|r| {
            // Where the server makes a partial upload, wait until it has one.
            r["committed"] == true
                && (server.unfinished().is_none() || r["server_upload"].is_string())
        })
    };
    wait_until(Duration::from_secs(60), "the large upload to start", || {
        uploading(&journal_records(home.path()))
    });
    kill(&mut mounted, libc::SIGKILL);
    kill(&mut rewriter, libc::SIGKILL);
    kill(&mut writer, libc::SIGKILL);

    let records = journal_records(home.path());
    assert!(
        uploading(&records),
        "the kill landed before the upload was confirmed: {records:?}"
    );
    assert_eq!(
        record_of(&records, "old.txt").map(|r| r["committed"].clone()),
        Some(Value::Bool(false)),
        "the half-rewritten file is journaled as uncommitted: {records:?}"
    );
    if let Some(unfinished) = server.unfinished() {
        assert!(unfinished > 0, "the server holds the partial upload");
    }

    // The next mount replays the journal before it mounts.
    let mut mounted = mount(&server, home.path(), mnt.path());
    let back = local.path().join("back.bin");
    sh(&format!("cp {} {}", q(&dir.join("large.bin")), q(&back)));
    assert!(
        std::fs::read(&back).unwrap() == large,
        "(a, c) the large file arrives intact"
    );
    assert_eq!(
        std::fs::read_to_string(&old).unwrap(),
        committed,
        "(b) the server keeps the committed content"
    );
    let recovery = home.path().join(".cache/sessionfs/recovery");
    let found = sh(&format!(
        "find {} -type f -name 'old.txt.recovered-*'",
        q(&recovery)
    ));
    let paths: Vec<&str> = found.lines().collect();
    assert_eq!(paths.len(), 1, "(b) one recovered copy: {found}");
    let expected = format!("{rewrite}{}", &committed[rewrite.len()..]);
    assert_eq!(std::fs::read_to_string(paths[0]).unwrap(), expected);
    assert!(journal_records(home.path()).is_empty(), "nothing pending");
    if let Some(unfinished) = server.unfinished() {
        assert_eq!(
            unfinished, 0,
            "(c) no unfinished upload stays on the server"
        );
    }
    if let Some(messages) = server.messages() {
        assert_eq!(
            messages, 2,
            "(c) one message per file, none for the killed upload"
        );
    }
    kill(&mut mounted, libc::SIGTERM);
}

#[test]
fn crash_mix() {
    crash(Backend::Mix);
}

#[test]
fn crash_lightfield() {
    crash(Backend::Lightfield);
}

#[test]
fn crash_appmixer() {
    crash(Backend::Appmixer);
}

#[test]
fn crash_fluxer() {
    crash(Backend::Fluxer);
}
