//! The command line: clap types and the rules between options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::backend::Backend;
use crate::emulator::FaultSpec;

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
    Mount(MountArgs),
    /// Run the emulator of one API in the foreground.
    Serve(ServeArgs),
    /// Unmount a sessionfs mount point.
    Unmount {
        /// The mount point.
        mountpoint: PathBuf,
    },
}

/// Options of `mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// Empty directory to mount on.
    pub mountpoint: PathBuf,
    /// TOML file with defaults for backend, endpoint, token, cache-dir, cache-size,
    /// memory-limit and metadata-ttl; the command line and SESSIONFS_TOKEN win over it.
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
    /// How long a directory listing answers lookups before it is fetched again.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub metadata_ttl: Duration,
    /// Refuse every change.
    #[arg(long)]
    pub read_only: bool,
    /// Answer the user.sessionfs.* extended attributes (remote id, stored name, md5, content
    /// type). Off by default: GNU `ls -l` asks every file for two attributes, and answering them
    /// costs two round trips per file (`ls -l` of 10 000 files: 0.3-0.5 s instead of 0.04 s).
    #[arg(long)]
    pub xattrs: bool,
    /// Run in the background: return once the mount is ready (or print why it failed); the
    /// log goes to sessionfs-PID.log under --cache-dir.
    #[arg(long)]
    pub daemon: bool,
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
    /// Extra mount options (`-o ro,noexec`).
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
    /// Cap per connection, e.g. 100MiB (per second).
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

/// The options a `--config` file may set (kebab-case keys, as on the command line).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    backend: Option<String>,
    endpoint: Option<String>,
    token: Option<String>,
    cache_dir: Option<PathBuf>,
    cache_size: Option<String>,
    memory_limit: Option<String>,
    metadata_ttl: Option<String>,
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

impl MountArgs {
    /// Takes from the `--config` file every option that neither the command line nor the
    /// environment set. The one place where the rule "command line, then environment, then
    /// config file, then default" lives.
    pub fn apply_config(&mut self, given: &ArgMatches) -> Result<(), String> {
        let Some(path) = &self.config else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read config {}: {err}", path.display()))?;
        let file: ConfigFile =
            toml::from_str(&text).map_err(|err| format!("config {}: {err}", path.display()))?;
        let unset = |id: &str| {
            !matches!(
                given.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let bad = |key: &str, err: String| format!("config {}: {key}: {err}", path.display());
        if let Some(backend) = file.backend.filter(|_| unset("backend")) {
            self.backend = Backend::from_str(&backend, true).map_err(|err| bad("backend", err))?;
        }
        if let Some(endpoint) = file.endpoint.filter(|_| unset("endpoint")) {
            self.endpoint = Some(endpoint);
        }
        if let Some(token) = file.token.filter(|_| unset("token")) {
            self.token = Some(token);
        }
        if let Some(dir) = file.cache_dir.filter(|_| unset("cache_dir")) {
            self.cache_dir = Some(dir);
        }
        if let Some(size) = file.cache_size.filter(|_| unset("cache_size")) {
            self.cache_size = size.parse().map_err(|err| bad("cache-size", err))?;
        }
        if let Some(limit) = file.memory_limit.filter(|_| unset("memory_limit")) {
            self.memory_limit = limit.parse().map_err(|err| bad("memory-limit", err))?;
        }
        if let Some(ttl) = file.metadata_ttl.filter(|_| unset("metadata_ttl")) {
            self.metadata_ttl = humantime::parse_duration(&ttl)
                .map_err(|err| bad("metadata-ttl", err.to_string()))?;
        }
        Ok(())
    }
}

fn parse_mode(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal mode such as 644"))
}

/// Where an emulator keeps its data when no `--data` is given: a directory that survives
/// restarts, under `$XDG_DATA_HOME` (or `~/.local/share`).
pub fn default_data_dir(backend: Backend) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("sessionfs").join(backend.name())
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
             metadata-ttl = \"5s\"\nmemory-limit = \"64MiB\"\n",
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
