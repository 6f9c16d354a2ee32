//! Real mounts for tests: an emulator on loopback, sessionfs mounted through /dev/fuse on a
//! temporary directory, and an API client that plays "another client".

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionfs::backend::Backend;
use sessionfs::emulator::{EmulatorConfig, RunningEmulator};
use sessionfs::fs::{FsConfig, SessionFs};
use sessionfs::remote::http::RetryConfig;
use sessionfs::remote::{Remote, RemoteConfig};
use sessionfs::run;
use tempfile::TempDir;

/// A mounted sessionfs over an emulator (Mix unless built with [`TestMount::backend`]). Unmounts and stops the emulator on drop.
pub struct TestMount {
    pub runtime: tokio::runtime::Runtime,
    pub emulator: Option<RunningEmulator>,
    pub fs: Arc<SessionFs>,
    /// Another client of the same service: a second instance of the backend's client, with
    /// its own connections and no share in the mount's caches.
    pub other: Arc<dyn Remote>,
    /// How to start the emulator again after [`TestMount::stop_server`].
    restart: (Backend, EmulatorConfig),
    session: Option<run::Mounted>,
    mountpoint: TempDir,
    _data: TempDir,
    _staging: TempDir,
    endpoint: String,
    http: reqwest::Client,
    // What a remount needs to mount the same remote again over the same staging directory and
    // metadata store.
    backend: Backend,
    remote_config: RemoteConfig,
    config: FsConfig,
    allow_other: bool,
}

impl TestMount {
    /// A mount with metadata TTL zero, so every change by another client shows at once.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A mount whose listings stay fresh for a minute, as in daily use: for tests where no other
    /// client changes anything (every path lookup would otherwise list the session again).
    pub fn cached() -> Self {
        Self::with(|config| config.metadata_ttl = Duration::from_secs(60))
    }

    /// A Mix mount whose core config is adjusted by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut FsConfig)) -> Self {
        Self::backend(Backend::Mix, |dir| EmulatorConfig::new(dir), None, tweak)
    }

    /// A mount of `backend`'s emulator (configured by `emulator_config` from the data dir),
    /// with `token` and the core config adjusted by `tweak`.
    pub fn backend(
        backend: Backend,
        emulator_config: impl FnOnce(&Path) -> EmulatorConfig,
        token: Option<&str>,
        tweak: impl FnOnce(&mut FsConfig),
    ) -> Self {
        let client = RemoteConfig::new("", token.map(str::to_string));
        Self::build(
            backend,
            |dir, _| emulator_config(dir),
            client,
            |_| {},
            tweak,
        )
    }

    /// A mount of `backend`'s emulator with fresh credentials shared by both, as the embedded
    /// mount makes them (`Backend::embed`); `emulator` adjusts the emulator's config.
    pub fn embedded(
        backend: Backend,
        emulator: impl FnOnce(&mut EmulatorConfig),
        tweak: impl FnOnce(&mut FsConfig),
    ) -> Self {
        Self::embedded_client(backend, emulator, |_| {}, tweak)
    }

    /// [`TestMount::embedded`] whose client config (upload parts in flight, part size) is
    /// adjusted by `client` after the credentials are shared; `other` gets the same config.
    pub fn embedded_client(
        backend: Backend,
        emulator: impl FnOnce(&mut EmulatorConfig),
        client: impl FnOnce(&mut RemoteConfig),
        tweak: impl FnOnce(&mut FsConfig),
    ) -> Self {
        let configure = |dir: &Path, remote: &mut RemoteConfig| {
            let mut config = EmulatorConfig::new(dir);
            backend.embed(&mut config, remote);
            emulator(&mut config);
            config
        };
        Self::build(
            backend,
            configure,
            RemoteConfig::new("", None),
            client,
            tweak,
        )
    }

    /// Mounts `backend`'s emulator, whose config `configure` makes from the data directory
    /// (and may put matching credentials into the client's config); `client` adjusts the
    /// client's config last (over the tests' short retries).
    fn build(
        backend: Backend,
        configure: impl FnOnce(&Path, &mut RemoteConfig) -> EmulatorConfig,
        mut remote_config: RemoteConfig,
        client: impl FnOnce(&mut RemoteConfig),
        tweak: impl FnOnce(&mut FsConfig),
    ) -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let data = TempDir::new().unwrap();
        let emulator_config = configure(data.path(), &mut remote_config);
        // An emulator that injects faults needs the retries a real client has.
        let attempts = if emulator_config.faults.is_empty() {
            2
        } else {
            10
        };
        let staging = TempDir::new().unwrap();
        let mountpoint = TempDir::new().unwrap();
        let emulator = runtime
            .block_on(backend.spawn_emulator(emulator_config.clone()))
            .unwrap();
        let endpoint = emulator.endpoint();
        // A restart serves the same data on the same port.
        let restart = EmulatorConfig {
            listen: emulator.addr,
            ..emulator_config
        };
        // Few, short retries: tests that stop the server want the error, not a long wait.
        let retry = RetryConfig {
            max_attempts: attempts,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryConfig::default()
        };
        remote_config.endpoint = endpoint.clone();
        remote_config.retry = retry;
        client(&mut remote_config);
        let remote = backend.connect(&remote_config).unwrap();
        let other = backend.connect(&remote_config).unwrap();
        let mut config = FsConfig::new(staging.path());
        config.metadata_ttl = Duration::ZERO;
        config.meta_store = Some(staging.path().join("metadata.redb"));
        tweak(&mut config);
        let fs = Arc::new(SessionFs::new(remote, config.clone()).unwrap());
        let session = mount(&fs, &runtime, mountpoint.path(), false);
        Self {
            runtime,
            emulator: Some(emulator),
            restart: (backend, restart),
            fs,
            other,
            session: Some(session),
            mountpoint,
            _data: data,
            _staging: staging,
            endpoint,
            http: reqwest::Client::new(),
            backend,
            remote_config,
            config,
            allow_other: false,
        }
    }

    /// Unmounts (after uploading what is pending) and mounts the same remote again on the same
    /// mount point, over the same staging directory and metadata store, with a new core.
    pub fn remount(&mut self) {
        let allow_other = self.allow_other;
        self.remount_with(allow_other);
    }

    /// [`TestMount::remount`], letting other users into the mount when `allow_other`.
    pub fn remount_with(&mut self, allow_other: bool) {
        self.finish();
        // The old core closes its store once the last task holding it is done.
        wait_until(
            Duration::from_secs(10),
            "the old core to be dropped",
            || Arc::strong_count(&self.fs) == 1,
        );
        let remote = self.backend.connect(&self.remote_config).unwrap();
        let placeholder = Arc::new(
            SessionFs::new(
                self.other.clone(),
                FsConfig::new(self._staging.path().join("placeholder")),
            )
            .unwrap(),
        );
        drop(std::mem::replace(&mut self.fs, placeholder));
        self.fs = Arc::new(SessionFs::new(remote, self.config.clone()).unwrap());
        self.allow_other = allow_other;
        self.session = Some(mount(
            &self.fs,
            &self.runtime,
            self.mountpoint.path(),
            allow_other,
        ));
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// The emulator's base URL, for tests that speak its API themselves.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Requests the mount's client has sent so far (retries included), for tests that check
    /// that an answer came without asking the server.
    pub fn requests_sent(&self) -> u64 {
        self.remote_config.retry.requests.snapshot().requests
    }

    /// `path()/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Creates a session directory through the mount and returns its path.
    pub fn session_dir(&self, name: &str) -> PathBuf {
        let dir = self.join(name);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    /// Stops the emulator, so the next remote call fails as with a dead server.
    pub fn stop_server(&mut self) {
        if let Some(server) = self.emulator.take() {
            self.runtime.block_on(server.shutdown());
        }
    }

    /// Starts the emulator again on the same port over the same data, as a server that comes
    /// back after an outage.
    pub fn restart_server(&mut self) {
        let (backend, config) = self.restart.clone();
        let server = self
            .runtime
            .block_on(backend.spawn_emulator(config))
            .unwrap();
        self.emulator = Some(server);
    }

    /// Stops the emulator and starts it again on the same port over the same data, its config
    /// changed by `change` (faults that start after a test's setup).
    pub fn restart_server_with(&mut self, change: impl FnOnce(&mut EmulatorConfig)) {
        self.stop_server();
        change(&mut self.restart.1);
        self.restart_server();
    }

    fn finish(&mut self) {
        if let Some(session) = self.session.take() {
            unmount(self.runtime.handle(), &self.fs, session);
        }
    }

    /// A second mount of the same remote on another mount point, with its own staging
    /// directory and core (as a second machine would have), listings fresh for `ttl`.
    pub fn second_mount(&self, ttl: Duration) -> SecondMount {
        let staging = TempDir::new().unwrap();
        let mountpoint = TempDir::new().unwrap();
        let remote = self.backend.connect(&self.remote_config).unwrap();
        let mut config = FsConfig::new(staging.path());
        config.metadata_ttl = ttl;
        let fs = Arc::new(SessionFs::new(remote, config).unwrap());
        let session = mount(&fs, &self.runtime, mountpoint.path(), false);
        SecondMount {
            handle: self.runtime.handle().clone(),
            fs,
            session: Some(session),
            mountpoint,
            _staging: staging,
        }
    }

    // --- another client, straight through the API ---

    fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.endpoint))
    }

    /// The sessions as the API lists them.
    pub fn api_sessions(&self) -> Vec<Value> {
        self.runtime.block_on(async {
            let response = self
                .api(reqwest::Method::GET, "/api/sessions")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Vec<Value>>().await.unwrap()
        })
    }

    /// The id of the session titled `title` (exactly one must exist).
    pub fn api_session_id(&self, title: &str) -> String {
        let matching: Vec<String> = self
            .api_sessions()
            .into_iter()
            .filter(|s| s["title"] == title)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(matching.len(), 1, "sessions titled {title:?}: {matching:?}");
        matching[0].clone()
    }

    /// Creates a session through the API.
    pub fn api_create_session(&self, title: &str) -> String {
        self.runtime.block_on(async {
            let response = self
                .api(reqwest::Method::POST, "/api/sessions")
                .json(&serde_json::json!({"title": title, "browserMode": "local-browser-service"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            let body: Value = response.json().await.unwrap();
            body["id"].as_str().unwrap().to_string()
        })
    }

    /// File names in a session as the API lists them.
    pub fn api_file_names(&self, session: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let response = self
                .api(
                    reqwest::Method::GET,
                    &format!("/api/sessions/{session}/files"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let files: Vec<Value> = response.json().await.unwrap();
            let mut names: Vec<String> = files
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        })
    }

    /// The bytes of a stored file, or `None` on 404.
    pub fn api_get(&self, session: &str, stored_name: &str) -> Option<Vec<u8>> {
        self.runtime.block_on(async {
            let response = self
                .api(reqwest::Method::GET, &file_path(session, stored_name))
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                200 => Some(response.bytes().await.unwrap().to_vec()),
                404 => None,
                other => panic!("GET {stored_name}: {other}"),
            }
        })
    }

    /// Uploads a file through the API.
    pub fn api_upload(&self, session: &str, name: &str, data: &[u8]) {
        self.runtime.block_on(async {
            let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name(name.to_string());
            let form = reqwest::multipart::Form::new().part("file", part);
            let response = self
                .api(
                    reqwest::Method::POST,
                    &format!("/api/sessions/{session}/files/upload"),
                )
                .multipart(form)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        })
    }

    /// Deletes a file through the API.
    pub fn api_delete(&self, session: &str, stored_name: &str) {
        self.runtime.block_on(async {
            let response = self
                .api(reqwest::Method::DELETE, &file_path(session, stored_name))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 204);
        })
    }
}

/// A second mount of a [`TestMount`]'s remote; uploads what is pending and unmounts on drop.
pub struct SecondMount {
    handle: tokio::runtime::Handle,
    fs: Arc<SessionFs>,
    session: Option<run::Mounted>,
    mountpoint: TempDir,
    _staging: TempDir,
}

impl SecondMount {
    /// The mount point.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }
}

impl Drop for SecondMount {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            unmount(&self.handle, &self.fs, session);
        }
    }
}

/// Uploads what `fs` has pending, then unmounts `session` (lazily if it is busy).
fn unmount(handle: &tokio::runtime::Handle, fs: &SessionFs, session: run::Mounted) {
    let _ = handle.block_on(fs.drain());
    if let Err(err) = session.unmount() {
        panic!("unmount at the end of a test: {err}");
    }
}

/// Mounts `fs` on `mountpoint` through /dev/fuse, as `sessionfs mount` does.
pub fn mount(
    fs: &Arc<SessionFs>,
    runtime: &tokio::runtime::Runtime,
    mountpoint: &Path,
    allow_other: bool,
) -> run::Mounted {
    let options = run::MountOptions::new(false, allow_other, &[], "sessionfs");
    run::mount_core(fs.clone(), runtime.handle().clone(), mountpoint, &options)
        .expect("mount through /dev/fuse (are we root with fuse available?)")
}

impl Drop for TestMount {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The API path of a stored file, its name percent-encoded as one segment.
fn file_path(session: &str, stored_name: &str) -> String {
    let encoded =
        percent_encoding::utf8_percent_encode(stored_name, percent_encoding::NON_ALPHANUMERIC);
    format!("/api/sessions/{session}/files/{encoded}")
}

/// Runs a shell command line and returns its output; panics with stderr when it fails.
pub fn sh(command: &str) -> String {
    let output = sh_output(command);
    assert!(
        output.status.success(),
        "`{command}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a shell command line and returns its whole output, success or not.
pub fn sh_output(command: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(command)
        .output()
        .unwrap()
}

/// Quotes a path for the shell.
pub fn q(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for 100 MiB.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `condition` until it holds or `deadline` passes; fails with `what`.
pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() >= deadline {
            panic!("gave up waiting for {what} after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The errno of a failed std::fs call.
pub fn errno<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    result
        .expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

/// The `sessionfs` binary run with `args` as a user whose home is `home` (no XDG overrides and
/// no token from the environment leak in from the test's own); its runtime directory (where
/// mounts put their status sockets) is `home/run`, so `status` sees this test's mounts alone.
pub fn sessionfs_command(home: &Path, args: &[&str]) -> Command {
    user_command(env!("CARGO_BIN_EXE_sessionfs"), home, args)
}

/// `program` with `args` run as [`sessionfs_command`] runs the binary: mount(8), or a shell
/// running what a user would type.
pub fn user_command(program: &str, home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("HOME", home)
        .env("SESSIONFS_RUNTIME_DIR", home.join("run"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("SESSIONFS_TOKEN");
    command
}

/// [`start_until`], and the first `http://` address the banner names (the endpoint of the
/// emulator it serves or embeds).
pub fn start_with_endpoint(command: Command, ready: &str) -> (std::process::Child, String) {
    let (child, banner) = start_until(command, ready);
    (child, endpoint_in(&banner))
}

/// The first `http://` address `banner` names.
pub fn endpoint_in(banner: &str) -> String {
    banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("the banner names an endpoint")
        .trim_end_matches(',')
        .to_string()
}

/// A child process stopped (and reaped) when the test ends, also when it fails: SIGTERM, so a
/// mount unmounts itself rather than leave a dead mount point behind.
pub struct Reaped(pub std::process::Child);

impl Reaped {
    /// Sends `signal` and returns how the process ended.
    pub fn stop(&mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, signal) };
        self.0.wait().unwrap()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().is_ok_and(|status| status.is_none()) {
            self.stop(libc::SIGTERM);
        }
    }
}

/// A running `sessionfs mount` process; killed and its mount point detached if a test
/// panics before it ends.
pub struct Mounted {
    pub child: std::process::Child,
    mountpoint: PathBuf,
}

impl Mounted {
    /// Spawns `command` (a `sessionfs mount` of `mountpoint`) and waits for its banner, which
    /// it returns.
    pub fn start(command: Command, mountpoint: &Path) -> (Self, String) {
        let (child, banner) = start_until(command, "unmount with");
        let mounted = Self {
            child,
            mountpoint: mountpoint.to_path_buf(),
        };
        (mounted, banner)
    }

    /// `umount`, then the process exits by itself with success.
    pub fn unmount(mut self) {
        sh(&format!("umount {}", q(&self.mountpoint)));
        assert!(self.child.wait().unwrap().success());
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = run::lazy_unmount(&self.mountpoint);
        }
    }
}

/// Spawns `command` and waits for the output line that says it is mounted (or serving);
/// returns the child and what it printed until then. Its later output is drained.
pub fn start_until(mut command: Command, ready: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains(ready) {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "exited before {ready:?}: {banner}"
        );
        banner.push_str(&line);
    }
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (child, banner)
}

/// Runs a Python `program` with `args` (one descriptor per file, so no stray close commits
/// anything) and returns once it has printed `written`; its stdin is a pipe the test may
/// write to (a program can wait on it before closing its file).
pub fn python_until_written(program: &str, args: &[&Path]) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("python3")
        .args(["-c", program])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "written", "the writer wrote");
    child
}

/// A process that writes the content of `files[1]` into `files[0]` (truncating it) and keeps
/// it open, uncommitted, until a line arrives on its stdin; then it closes it.
pub fn write_and_hold(files: &[&Path; 2]) -> std::process::Child {
    let program = "import sys\n\
                   f = open(sys.argv[1], 'wb')\n\
                   f.write(open(sys.argv[2], 'rb').read())\n\
                   f.flush()\n\
                   print('written', flush=True)\n\
                   sys.stdin.readline()\n\
                   f.close()\n";
    python_until_written(program, files)
}
