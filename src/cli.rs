//! The command line: clap types and the rules between options; the config file and its
//! named remotes are in [`config`].

pub mod config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::backend::Backend;
use crate::emulator::FaultSpec;
use config::ConfigFile;

/// Mount remote file APIs as a local drive.
#[derive(Debug, Parser)]
#[command(name = "sessionfs", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a remote (or, without --endpoint, an embedded emulator) at MOUNTPOINT.
    Mount(Box<MountArgs>),
    /// Run the emulator of one API in the foreground.
    Serve(Box<ServeArgs>),
    /// Unmount a sessionfs mount point after uploading what is pending, showing the files and
    /// bytes left. Exit code 0: all uploaded; 3: unmounted, but files stay pending (journaled
    /// in the staging directory, uploaded by the next mount of the remote); 1: not unmounted.
    Unmount {
        /// The mount point.
        mountpoint: PathBuf,
        /// Longest wait for the uploads, e.g. 30s; then the rest stays pending [default: no
        /// bound].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// What running mounts are doing: backend and endpoint, uptime, pending and failed
    /// uploads, the recovery folder, cache use and request counts (never a secret).
    Status {
        /// One mount point [default: every sessionfs mount of this user].
        mountpoint: Option<PathBuf>,
        /// JSON for scripts: an object for one mount point, else an array.
        #[arg(long)]
        json: bool,
    },
    /// List the named remotes of the config file: name, backend, endpoint (never a secret).
    Remotes {
        /// The config file [default: $XDG_CONFIG_HOME/sessionfs/config.toml].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (e.g. `sessionfs completions bash >
    /// /etc/bash_completion.d/sessionfs`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (sessionfs.1, sessionfs-mount.1, ...) into a directory.
    Man {
        /// Where to write them, e.g. /usr/local/share/man/man1.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Subcommands of `config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config file: every key and value, and that token and password files are
    /// readable by their owner alone; a problem is reported with its line and key.
    Check {
        /// The config file [default: $XDG_CONFIG_HOME/sessionfs/config.toml].
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Options of `mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// `NAME:` of a remote in the config file (`NAME:SUBDIR` for one container of it: a Mix
    /// session, a Fluxer `GUILD/CHANNEL`), then the empty directory to mount on; or only the
    /// directory.
    #[arg(value_name = "[NAME:[SUBDIR]] MOUNTPOINT", num_args = 1..=2, required = true)]
    pub targets: Vec<PathBuf>,
    /// The mount point, from `targets` (set by [`MountArgs::apply_config`]).
    #[arg(skip)]
    pub mountpoint: PathBuf,
    /// The named remote, from `targets` (set by [`MountArgs::apply_config`]).
    #[arg(skip)]
    pub remote: Option<String>,
    /// The one container to mount, from `NAME:SUBDIR` (set by [`MountArgs::apply_config`]).
    #[arg(skip)]
    pub container: Option<String>,
    /// TOML file with defaults and named remotes ([remotes.NAME]) holding any mount option
    /// by its long name [default: $XDG_CONFIG_HOME/sessionfs/config.toml, if it exists]; the
    /// command line and SESSIONFS_TOKEN win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which API the endpoint speaks.
    #[arg(long, value_enum, default_value = "mix")]
    pub backend: Backend,
    /// Base URL of the server; without it an emulator is started in this process.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// API token (for APIs that need one).
    #[arg(long, env = "SESSIONFS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the API token, readable by its owner alone (keeps it out of `ps`).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Account to sign in as, for APIs that sign in with a password (Appmixer).
    #[arg(long)]
    pub user: Option<String>,
    /// File holding the password of --user (or set SESSIONFS_PASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Upload parts in flight per file, for APIs that take files in parts [default: the
    /// backend's own: 1 where the server's handling of parts out of order is unknown].
    #[arg(long)]
    pub upload_parallel: Option<usize>,
    /// How long a request keeps retrying a server that is down, throttling or failing before
    /// the operation fails (close or fsync then answers EIO and the data stays staged).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_deadline: Duration,
    /// Delay uploads: close returns once the file is staged and journaled, and its upload
    /// starts this long after its last close, several at a time (fsync still waits for the
    /// upload; unmount uploads what is left; a crash leaves it to the next mount) [default:
    /// off, close waits for the upload and returns its error].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub write_back: Option<Duration>,
    /// Size of each upload part, for APIs that let the client choose it [default: the
    /// backend's own, e.g. 8MiB].
    #[arg(long)]
    pub chunk_size: Option<bytesize::ByteSize>,
    /// Data directory of the embedded emulator (used only without --endpoint).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Directory for staged writes and the disk block cache
    /// [default: $XDG_CACHE_HOME/sessionfs].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Size of the disk tier of the block cache under --cache-dir, e.g. 2GiB; 0 keeps blocks in
    /// memory only.
    #[arg(long, default_value = "0")]
    pub cache_size: bytesize::ByteSize,
    /// One memory budget for cached blocks, prefetch and write buffers, e.g. 256MiB.
    #[arg(long, default_value = "512MiB")]
    pub memory_limit: bytesize::ByteSize,
    /// Most bytes the staging directory may hold (files being written or waiting for their
    /// upload), e.g. 10GiB: a write past it waits for uploads to free room, then fails with
    /// ENOSPC. Without it, a write that would leave less than 5% of the staging disk (at most
    /// 1 GiB) free waits for other uploads, then fails with ENOSPC.
    #[arg(long)]
    pub max_staged: Option<bytesize::ByteSize>,
    /// How long a directory listing answers lookups before it is fetched again.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub metadata_ttl: Duration,
    /// The largest directory rename carried out by moving objects, as SIZE,COUNT: a rename
    /// that would move more bytes or more objects (files, links, directory markers) answers
    /// EXDEV, and `mv` copies the directory instead.
    #[arg(long, default_value = "1GiB,10000")]
    pub max_dir_rename: crate::fs::DirRenameLimit,
    /// Refuse every change.
    #[arg(long)]
    pub read_only: bool,
    /// Answer the user.sessionfs.* extended attributes (remote id, stored name, md5, content
    /// type). Off by default: GNU `ls -l` asks every file for two attributes, and answering them
    /// costs two round trips per file (`ls -l` of 10 000 files: 0.3-0.5 s instead of 0.04 s).
    #[arg(long)]
    pub xattrs: bool,
    /// Run in the background: return once the mount is ready (or print why it failed); the
    /// log goes to --log-file, else sessionfs-PID.log under --cache-dir.
    #[arg(long)]
    pub daemon: bool,
    /// Append the log to FILE instead of standard error.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Let other users see the mount (needs user_allow_other for non-root).
    #[arg(long)]
    pub allow_other: bool,
    /// Force one owner: files from the server and everything created through the mount belong
    /// to this user [default: the creating process's user; the mounting user for the rest].
    #[arg(long)]
    pub uid: Option<u32>,
    /// Force one group, as --uid does for the owner.
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal.
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub file_mode: u16,
    /// Permission bits of directories, in octal.
    #[arg(long, default_value = "755", value_parser = parse_mode)]
    pub dir_mode: u16,
    /// Comma-separated name patterns kept local and never uploaded (editor scratch files);
    /// an empty value keeps nothing local.
    #[arg(long, value_delimiter = ',')]
    pub local_only: Option<Vec<String>>,
    /// Mount options, comma-separated: the generic ones become the kernel's flags (ro, rw,
    /// noexec, exec, nosuid, suid, nodev, dev, noatime, atime, relatime, strictatime,
    /// nodiratime, diratime, nosymfollow, sync, async, dirsync, lazytime; nosuid and nodev
    /// unless suid or dev is given), `fsname=NAME` sets the source `findmnt` and `df` show
    /// [default: NAME: of a named remote, else the endpoint's host, else sessionfs], anything
    /// else goes to FUSE. `-o remount,ro MNT` changes the flags of the mount at MNT instead.
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which API to emulate.
    #[arg(long, value_enum, default_value = "mix")]
    pub backend: Backend,
    /// Directory that holds the emulator's objects.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address to listen on (loopback by default; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,
    /// Inject faults: comma-separated KIND=PROBABILITY, KIND one of 500, 503, 429, reset,
    /// truncate, slow.
    #[arg(long, default_value = "")]
    pub faults: FaultSpec,
    /// Seed for fault injection, so a run can be replayed.
    #[arg(long, default_value_t = 1)]
    pub fault_seed: u64,
    /// Delay added to every request, e.g. 20ms.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Cap per connection on uploads and on downloads, e.g. 100MiB (per second).
    #[arg(long)]
    pub bandwidth: Option<bytesize::ByteSize>,
    /// Ignore Range on downloads and always answer 200 with the whole body, as the newest Mix
    /// server does for uploaded files.
    #[arg(long)]
    pub no_range: bool,
    /// Reject uploads larger than this with 413 (the real Mix server has no limit).
    #[arg(long)]
    pub max_upload_size: Option<bytesize::ByteSize>,
    /// The one API key to accept (Lightfield; for Fluxer the user's session token); without
    /// it Lightfield accepts any `sk_lf_...` key and Fluxer generates and prints one.
    #[arg(long)]
    pub token: Option<String>,
    /// An Appmixer account EMAIL:PASSWORD (repeat for several users); without it one user with
    /// a generated password is created and printed.
    #[arg(long = "user", value_name = "EMAIL:PASSWORD")]
    pub users: Vec<crate::emulator::appmixer::Login>,
    /// How long Appmixer session tokens live, e.g. 1s in tests.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Fluxer: the token of a seeded bot user (`Authorization: Bot <token>`).
    #[arg(long)]
    pub bot_token: Option<String>,
    /// Fluxer: the upload flows offered, comma-separated: chunked, presigned.
    #[arg(long, default_value = "chunked,presigned")]
    pub uploads: crate::emulator::fluxer::UploadFlows,
    /// Fluxer: the largest attachment [default: 25MiB, bots 50MiB on the presigned routes].
    #[arg(long)]
    pub max_attachment_size: Option<bytesize::ByteSize>,
    /// Fluxer: turn the rate limits off (for benchmarks).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Fluxer: the guild's text channels, seeded when the data directory is new.
    #[arg(long, value_delimiter = ',', default_value = "general,files")]
    pub channels: Vec<String>,
    /// Fluxer: how long upload sessions and presigned URLs live.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub upload_ttl: Duration,
}

/// Parses the command line, then fills `mount` options it did not give from `--config`.
pub fn parse() -> Result<Cli, String> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).map_err(|err| err.to_string())?;
    if let (Command::Mount(args), Some(given)) =
        (&mut cli.command, matches.subcommand_matches("mount"))
    {
        args.apply_config(given)?;
    }
    Ok(cli)
}

/// The completion script of `shell` for the whole command line.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sessionfs", &mut script);
    script
}

/// Writes the man pages into `dir`: sessionfs.1 and one per subcommand (sessionfs-mount.1,
/// ...), each with its options.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

impl MountArgs {
    /// Splits the positional arguments into the remote and the mount point, then takes from
    /// the config file every option that neither the command line nor the environment set:
    /// the named remote's table first, then the file's top level. The one place where the
    /// rule "command line, then environment, then config file, then default" lives.
    pub fn apply_config(&mut self, given: &ArgMatches) -> Result<(), String> {
        let (remote, mountpoint) = match self.targets.as_slice() {
            [mountpoint] => (None, mountpoint.clone()),
            [remote, mountpoint] => {
                let (name, container) = remote_name(remote)?;
                self.container = container;
                (Some(name), mountpoint.clone())
            }
            _ => return Err("give [NAME:[SUBDIR]] MOUNTPOINT".to_string()),
        };
        self.mountpoint = mountpoint;
        let path = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(ConfigFile::default_path()).filter(|path| path.exists()),
        };
        let file = match &path {
            Some(path) => Some(ConfigFile::read(path)?),
            None => None,
        };
        let settings = match (&file, &remote) {
            (Some(file), Some(name)) => file.remote(name)?,
            (Some(file), None) => file.settings.clone(),
            (None, Some(name)) => {
                return Err(format!(
                    "no remote {name:?}: there is no config file {}",
                    ConfigFile::default_path().display()
                ));
            }
            (None, None) => return Ok(()),
        };
        let unset = |id: &str| {
            !matches!(
                given.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        macro_rules! take {
            ($($field:ident),* $(,)?) => {$(
                if let Some(value) = settings.$field.clone().filter(|_| unset(stringify!($field))) {
                    self.$field = value;
                }
            )*};
        }
        macro_rules! take_some {
            ($($field:ident),* $(,)?) => {$(
                if let Some(value) = settings.$field.clone().filter(|_| unset(stringify!($field))) {
                    self.$field = Some(value);
                }
            )*};
        }
        take!(
            backend,
            cache_size,
            memory_limit,
            metadata_ttl,
            retry_deadline,
            max_dir_rename,
            read_only,
            xattrs,
            allow_other,
            file_mode,
            dir_mode,
            options,
        );
        take_some!(
            endpoint,
            user,
            data,
            cache_dir,
            upload_parallel,
            chunk_size,
            write_back,
            max_staged,
            uid,
            gid,
            local_only,
            log_file,
        );
        if unset("token") && unset("token_file") {
            match (&settings.token_file, &settings.token) {
                (Some(file), _) => self.token_file = Some(file.get_ref().clone()),
                (None, Some(token)) => self.token = Some(token.clone()),
                (None, None) => {}
            }
        }
        if let Some(file) = settings.password_file.filter(|_| unset("password_file")) {
            self.password_file = Some(file.into_inner());
        }
        // Each named remote served by the embedded emulator keeps its own data.
        if let Some(name) = &remote
            && self.endpoint.is_none()
            && self.data.is_none()
        {
            self.data = Some(data_home().join("sessionfs/remotes").join(name));
        }
        self.remote = remote;
        Ok(())
    }
}

/// The NAME and SUBDIR of `NAME:` or `NAME:SUBDIR` (one container: a directory at the top of
/// the whole mount, or `GROUP/CONTAINER`).
fn remote_name(spec: &std::path::Path) -> Result<(String, Option<String>), String> {
    let spec = spec.to_string_lossy();
    match spec.split_once(':') {
        Some((name, subdir)) if !name.is_empty() => {
            let subdir = subdir.trim_matches('/');
            Ok((
                name.to_string(),
                Some(subdir.to_string()).filter(|s| !s.is_empty()),
            ))
        }
        _ => Err(format!(
            "{spec:?} is not a remote: give NAME: (a [remotes.NAME] of the config file) and \
             then the mount point"
        )),
    }
}

pub(crate) fn parse_mode(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal mode such as 644"))
}

/// Where an emulator keeps its data when no `--data` is given: a directory that survives
/// restarts, under `$XDG_DATA_HOME` (or `~/.local/share`).
pub fn default_data_dir(backend: Backend) -> PathBuf {
    data_home().join("sessionfs").join(backend.name())
}

fn data_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where staged writes go when no `--cache-dir` is given.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("sessionfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_config_file_fills_what_the_command_line_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessionfs.toml");
        std::fs::write(
            &path,
            "backend = \"lightfield\"\nendpoint = \"http://127.0.0.1:9\"\ntoken = \"sk_lf_file\"\n\
             metadata-ttl = \"5s\"\nmemory-limit = \"64MiB\"\nmax-staged = \"3GiB\"\n\
             write-back = \"5s\"\n",
        )
        .unwrap();
        let argv = [
            "sessionfs",
            "mount",
            "/mnt/x",
            "--config",
            path.to_str().unwrap(),
            "--metadata-ttl",
            "2s",
        ];
        let matches = Cli::command().get_matches_from(argv);
        let Command::Mount(mut args) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not mount")
        };
        args.apply_config(matches.subcommand_matches("mount").unwrap())
            .unwrap();
        assert_eq!(args.backend, Backend::Lightfield);
        assert_eq!(args.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(args.token.as_deref(), Some("sk_lf_file"));
        assert_eq!(
            args.metadata_ttl,
            Duration::from_secs(2),
            "the command line wins"
        );
        assert_eq!(args.memory_limit.as_u64(), 64 << 20);
        assert_eq!(args.max_staged.map(|size| size.as_u64()), Some(3 << 30));
        assert_eq!(args.write_back, Some(Duration::from_secs(5)));

        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let matches = Cli::command().get_matches_from(argv);
        let Command::Mount(mut args) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not mount")
        };
        let err = args
            .apply_config(matches.subcommand_matches("mount").unwrap())
            .unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert!(parse_mode("999").is_err());
    }

    #[test]
    fn mount_defaults_to_the_embedded_mix_emulator() {
        let cli = Cli::parse_from(["sessionfs", "mount", "/mnt/x"]);
        let Command::Mount(args) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(args.backend, Backend::Mix);
        assert!(args.endpoint.is_none());
        assert_eq!(args.metadata_ttl, Duration::from_secs(1));
        assert_eq!(args.cache_size.as_u64(), 0);
    }

    #[test]
    fn sizes_take_binary_units() {
        let cli = Cli::parse_from([
            "sessionfs",
            "mount",
            "/mnt/x",
            "--memory-limit",
            "256MiB",
            "--cache-size",
            "2GiB",
        ]);
        let Command::Mount(args) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(args.memory_limit.as_u64(), 256 << 20);
        assert_eq!(args.cache_size.as_u64(), 2 << 30);
    }
}
