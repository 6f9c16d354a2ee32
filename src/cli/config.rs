//! The config file: `$XDG_CONFIG_HOME/sessionfs/config.toml` (or `~/.config/...`, or
//! `--config FILE`). Top-level keys are defaults for every mount; a `[remotes.NAME]` table
//! names a remote (`sessionfs mount NAME: MNT`) whose keys win over the top level.
//!
//! Keys are the long option names, kebab-case as on the command line (`memory-limit`); the
//! snake-case spelling (`memory_limit`) is accepted too. Values are parsed while the file is
//! read, so every error carries toml's span and is reported as "line N, key K".
//!
//! Secrets live in files named by `token-file` and `password-file`, which must be readable
//! by their owner alone; the config file never has to hold one (an inline `token` is still
//! read, for compatibility).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::backend::Backend;

/// One set of mount settings: the top level of the file, or one `[remotes.NAME]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Which API the endpoint speaks.
    #[serde(default, deserialize_with = "backend")]
    pub backend: Option<Backend>,
    /// Base URL; without it the embedded emulator serves the remote.
    pub endpoint: Option<String>,
    /// An inline API token (prefer `token-file`).
    pub token: Option<String>,
    /// File holding the API token.
    #[serde(alias = "token_file")]
    pub token_file: Option<Spanned<PathBuf>>,
    /// Account to sign in as (Appmixer).
    pub user: Option<String>,
    /// File holding the password of `user`.
    #[serde(alias = "password_file")]
    pub password_file: Option<Spanned<PathBuf>>,
    /// Data directory of the embedded emulator.
    pub data: Option<PathBuf>,
    /// Staging and disk cache directory.
    #[serde(alias = "cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Disk tier of the block cache.
    #[serde(default, alias = "cache_size", deserialize_with = "size")]
    pub cache_size: Option<bytesize::ByteSize>,
    /// The one memory budget.
    #[serde(default, alias = "memory_limit", deserialize_with = "size")]
    pub memory_limit: Option<bytesize::ByteSize>,
    /// Listing TTL.
    #[serde(default, alias = "metadata_ttl", deserialize_with = "duration")]
    pub metadata_ttl: Option<Duration>,
    /// How long requests keep retrying.
    #[serde(default, alias = "retry_deadline", deserialize_with = "duration")]
    pub retry_deadline: Option<Duration>,
    /// Upload parts in flight per file.
    #[serde(alias = "upload_parallel")]
    pub upload_parallel: Option<usize>,
    /// Upload part size.
    #[serde(default, alias = "chunk_size", deserialize_with = "size")]
    pub chunk_size: Option<bytesize::ByteSize>,
    /// Delay before uploads start (`--write-back`).
    #[serde(default, alias = "write_back", deserialize_with = "duration")]
    pub write_back: Option<Duration>,
    /// The largest directory rename carried out by moving objects ("1GiB,10000").
    #[serde(
        default,
        alias = "max_dir_rename",
        deserialize_with = "dir_rename_limit"
    )]
    pub max_dir_rename: Option<crate::fs::DirRenameLimit>,
    /// Most bytes the staging directory may hold (`--max-staged`).
    #[serde(default, alias = "max_staged", deserialize_with = "size")]
    pub max_staged: Option<bytesize::ByteSize>,
    /// Refuse every change.
    #[serde(alias = "read_only")]
    pub read_only: Option<bool>,
    /// Answer the user.sessionfs.* attributes.
    pub xattrs: Option<bool>,
    /// Let other users see the mount.
    #[serde(alias = "allow_other")]
    pub allow_other: Option<bool>,
    /// Owner shown for files.
    pub uid: Option<u32>,
    /// Group shown for files.
    pub gid: Option<u32>,
    /// File permission bits, octal in a string ("640").
    #[serde(default, alias = "file_mode", deserialize_with = "mode")]
    pub file_mode: Option<u16>,
    /// Directory permission bits, octal in a string ("750").
    #[serde(default, alias = "dir_mode", deserialize_with = "mode")]
    pub dir_mode: Option<u16>,
    /// Name patterns kept local.
    #[serde(alias = "local_only")]
    pub local_only: Option<Vec<String>>,
    /// Extra FUSE mount options.
    pub options: Option<Vec<String>>,
    /// Where the mount logs.
    #[serde(alias = "log_file")]
    pub log_file: Option<PathBuf>,
    /// Named remotes (top level only).
    pub remotes: Option<BTreeMap<String, Spanned<Settings>>>,
}

/// A config file read and checked.
#[derive(Debug)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    text: String,
    /// Its top level, `remotes` included.
    pub settings: Settings,
}

/// A named remote as `sessionfs remotes` shows it: never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSummary {
    /// The NAME of `[remotes.NAME]`.
    pub name: String,
    /// Its backend (the top level's, else mix).
    pub backend: Backend,
    /// Its endpoint, or `None` for the embedded emulator.
    pub endpoint: Option<String>,
}

impl ConfigFile {
    /// The file `--config` names, else the one under `$XDG_CONFIG_HOME` (or `~/.config`).
    pub fn default_path() -> PathBuf {
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("sessionfs/config.toml")
    }

    /// Reads and parses `path`; errors name the file, the line and the key.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read config {}: {err}", path.display()))?;
        Self::parse(path, text)
    }

    /// Parses `text`, read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, String> {
        let settings: Settings = toml::from_str(&text).map_err(|err| {
            let at = err
                .span()
                .map(|span| locate(&text, span.start))
                .unwrap_or_default();
            format!(
                "config {}{at}: {}",
                path.display(),
                err.message().trim_end()
            )
        })?;
        let file = Self {
            path: path.to_path_buf(),
            text,
            settings,
        };
        for (name, remote) in file.settings.remotes.iter().flatten() {
            if remote.get_ref().remotes.is_some() {
                return Err(file.error_at(remote.span().start, "a remote cannot hold remotes"));
            }
            if name.is_empty() || name.contains([':', '/']) {
                return Err(file.error_at(
                    remote.span().start,
                    &format!("remote name {name:?} may not be empty or hold ':' or '/'"),
                ));
            }
        }
        Ok(file)
    }

    /// Checks what parsing cannot: that secret files exist and only their owner may read
    /// them. The first problem, with its line and key.
    pub fn check(&self) -> Result<(), String> {
        let all = std::iter::once(&self.settings).chain(
            self.settings
                .remotes
                .iter()
                .flatten()
                .map(|(_, remote)| remote.get_ref()),
        );
        for settings in all {
            for file in [&settings.token_file, &settings.password_file]
                .into_iter()
                .flatten()
            {
                check_secret_file(file.get_ref())
                    .map_err(|err| self.error_at(file.span().start, &err))?;
            }
        }
        Ok(())
    }

    /// The named remotes, in name order.
    pub fn remotes(&self) -> Vec<RemoteSummary> {
        self.settings
            .remotes
            .iter()
            .flatten()
            .map(|(name, remote)| {
                let merged = self
                    .remote(name)
                    .unwrap_or_else(|_| remote.get_ref().clone());
                RemoteSummary {
                    name: name.clone(),
                    backend: merged.backend.unwrap_or(Backend::Mix),
                    endpoint: merged.endpoint,
                }
            })
            .collect()
    }

    /// The settings of a mount of remote `name`: its table over the top level. Without a
    /// name, the top level alone.
    pub fn remote(&self, name: &str) -> Result<Settings, String> {
        let remote = self
            .settings
            .remotes
            .as_ref()
            .and_then(|remotes| remotes.get(name))
            .ok_or_else(|| {
                let known: Vec<String> = self.remotes_names();
                format!(
                    "no remote {name:?} in {} (it has: {}); `sessionfs remotes` lists them",
                    self.path.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            })?;
        Ok(remote.get_ref().clone().over(&self.settings))
    }

    fn remotes_names(&self) -> Vec<String> {
        self.settings
            .remotes
            .iter()
            .flatten()
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn error_at(&self, offset: usize, message: &str) -> String {
        format!(
            "config {}{}: {message}",
            self.path.display(),
            locate(&self.text, offset)
        )
    }
}

impl Settings {
    /// These settings, with what they leave unset taken from `base` (never its remotes).
    fn over(self, base: &Settings) -> Settings {
        macro_rules! fill {
            ($($field:ident),*) => {
                Settings { $($field: self.$field.or_else(|| base.$field.clone()),)* remotes: None }
            };
        }
        fill!(
            backend,
            endpoint,
            token,
            token_file,
            user,
            password_file,
            data,
            cache_dir,
            cache_size,
            memory_limit,
            metadata_ttl,
            retry_deadline,
            upload_parallel,
            chunk_size,
            write_back,
            max_dir_rename,
            max_staged,
            read_only,
            xattrs,
            allow_other,
            uid,
            gid,
            file_mode,
            dir_mode,
            local_only,
            options,
            log_file
        )
    }
}

/// Reads a token or password file: refused when group or others may read it, and the
/// trailing newline dropped. Errors name the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    check_secret_file(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

fn check_secret_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|err| format!("cannot read the secret file {}: {err}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} holds a secret but group or others may read it (mode {mode:03o}); make it \
             yours alone with `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// " line N, key K" for the byte `offset` of `text`: the line it is on, and the key of that
/// line qualified by the table it is in (`remotes.work.token-file`).
fn locate(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let table = text[..offset]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(['[', ']']).trim().to_string());
    let key = match line.split_once('=') {
        Some((key, _)) if !line.trim_start().starts_with('[') => {
            let key = key.trim().trim_matches('"');
            match table {
                Some(table) => format!("{table}.{key}"),
                None => key.to_string(),
            }
        }
        _ => line.trim().trim_matches(['[', ']']).to_string(),
    };
    format!(" line {line_no}, key `{key}`")
}

fn parsed<'de, D, T>(d: D, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn backend<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Backend>, D::Error> {
    parsed(d, |text| {
        Backend::from_str(text, true).map_err(|_| {
            format!("unknown backend {text:?}; one of mix, lightfield, appmixer, fluxer")
        })
    })
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bytesize::ByteSize>, D::Error> {
    parsed(d, |text| {
        text.parse()
            .map_err(|err| format!("{text:?} is not a size such as 512MiB: {err}"))
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parsed(d, |text| {
        humantime::parse_duration(text)
            .map_err(|err| format!("{text:?} is not a duration such as 5s: {err}"))
    })
}

fn dir_rename_limit<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::fs::DirRenameLimit>, D::Error> {
    parsed(d, |text| text.parse())
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    parsed(d, super::parse_mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(Path::new("c.toml"), text.to_string())
    }

    #[test]
    fn remotes_inherit_the_top_level_and_take_both_spellings() {
        let file = parse(
            "memory-limit = \"64MiB\"\nbackend = \"fluxer\"\n\n[remotes.work]\nendpoint = \
             \"http://h:1\"\ntoken_file = \"/t\"\n\n[remotes.play]\nbackend = \"mix\"\n\
             metadata-ttl = \"5s\"\nmax_dir_rename = \"64MiB,50\"\nmax_staged = \"2GiB\"\n",
        )
        .unwrap();
        let work = file.remote("work").unwrap();
        assert_eq!(work.backend, Some(Backend::Fluxer));
        assert_eq!(work.memory_limit.unwrap().as_u64(), 64 << 20);
        assert_eq!(work.token_file.unwrap().into_inner(), PathBuf::from("/t"));
        let play = file.remote("play").unwrap();
        assert_eq!(play.backend, Some(Backend::Mix));
        assert_eq!(play.metadata_ttl, Some(Duration::from_secs(5)));
        let limit = play.max_dir_rename.unwrap();
        assert_eq!((limit.bytes, limit.objects), (64 << 20, 50));
        assert_eq!(play.max_staged.unwrap().as_u64(), 2 << 30);
        assert_eq!(work.max_staged, None);
        assert_eq!(
            file.remotes()
                .iter()
                .map(|r| (r.name.as_str(), r.backend))
                .collect::<Vec<_>>(),
            [("play", Backend::Mix), ("work", Backend::Fluxer)]
        );
        let err = file.remote("nope").unwrap_err();
        assert!(err.contains("play, work"), "{err}");
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let cases = [
            (
                "[remotes.a]\nbackend = \"ftp\"\n",
                "line 2, key `remotes.a.backend`",
                "ftp",
            ),
            (
                "[remotes.a]\n\ncolour = \"blue\"\n",
                "line 3, key `remotes.a.colour`",
                "colour",
            ),
            (
                "memory-limit = \"lots\"\n",
                "line 1, key `memory-limit`",
                "lots",
            ),
            ("file-mode = \"999\"\n", "line 1, key `file-mode`", "octal"),
            (
                "max-dir-rename = \"1GiB\"\n",
                "line 1, key `max-dir-rename`",
                "1GiB,10000",
            ),
            (
                "max-staged = \"plenty\"\n",
                "line 1, key `max-staged`",
                "plenty",
            ),
            (
                "[remotes.a]\n[remotes.a.remotes.b]\n",
                "line 1",
                "cannot hold remotes",
            ),
        ];
        for (text, at, what) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(at), "{at:?} in {err}");
            assert!(err.contains(what), "{what:?} in {err}");
        }
    }

    #[test]
    fn a_secret_file_others_may_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "sk_lf_secret\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&token).unwrap_err();
        assert!(
            err.contains(&format!("chmod 600 {}", token.display())),
            "{err}"
        );
        assert!(!err.contains("sk_lf_secret"), "{err}");
        let text = format!(
            "[remotes.a]\n\ntoken-file = {:?}\n",
            token.display().to_string()
        );
        let err = parse(&text).unwrap().check().unwrap_err();
        assert!(err.contains("line 3, key `remotes.a.token-file`"), "{err}");

        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&token).unwrap(), "sk_lf_secret");
        parse(&text).unwrap().check().unwrap();
    }
}
