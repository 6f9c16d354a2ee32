//! The mount scenario suite: one list of everyday scenarios, run against every backend's
//! emulator through a real mount.
//!
//! A scenario is a function of a [`Case`]; the [`scenarios!`] table at the end expands each
//! one into a test per backend, so a new backend joins with one line. What an API cannot do
//! (no delete, so no `rm` and no rename) is asked of its `Capabilities`, never of its name.
//! "Another client" is a second instance of the backend's own client (`TestMount::other`),
//! which writes and reads through the API as another user of the service would.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::remote::{ObjectMeta, UploadSource};

use crate::harness::{TestMount, errno, pseudo_random, q, sh, wait_until};

/// How long a change by another client may take to show through a mount whose listings stay
/// fresh for [`SHORT_TTL`].
const SEEN_DEADLINE: Duration = Duration::from_secs(10);
/// The metadata TTL of the scenario that waits for another client's change.
const SHORT_TTL: Duration = Duration::from_millis(300);
/// Files another client adds for the listing scenario: more than one page on every API
/// (Lightfield pages 25, Appmixer as the client asks, Fluxer 100).
const MANY_FILES: usize = 120;
/// Uploads in flight while another client seeds files.
const SEED_CONCURRENCY: usize = 8;

/// One backend as the suite mounts it.
pub struct Case {
    backend: Backend,
    /// Adjusts its emulator (a backend whose rate limits would make seeding slow turns them
    /// off here).
    emulator: fn(&mut EmulatorConfig),
}

impl Case {
    /// `backend`'s emulator as the embedded mount runs it.
    pub const fn of(backend: Backend) -> Self {
        Self::with_emulator(backend, |_| {})
    }

    /// `backend`'s emulator adjusted by `emulator`.
    pub const fn with_emulator(backend: Backend, emulator: fn(&mut EmulatorConfig)) -> Self {
        Self { backend, emulator }
    }

    /// A mount with listings that never go stale on their own (nothing else changes the
    /// server in most scenarios).
    fn mount(&self) -> Mounted {
        self.mount_with_ttl(Duration::from_secs(60))
    }

    fn mount_with_ttl(&self, ttl: Duration) -> Mounted {
        let mount = TestMount::embedded(self.backend, self.emulator, |config| {
            config.metadata_ttl = ttl;
        });
        Mounted::new(mount)
    }
}

/// A mount and the directory the scenario works in: a container made through the mount on
/// APIs with containers (the first one the server has where containers cannot be made through
/// the mount), else the flat root.
pub struct Mounted {
    pub mount: TestMount,
    pub dir: PathBuf,
    /// The container `dir` is, as the API knows it.
    pub container: Option<String>,
}

impl Mounted {
    /// Finds or makes the directory to work in on `mount` (the soak shares it).
    pub fn new(mount: TestMount) -> Self {
        if !mount.other.capabilities().containers {
            let dir = mount.path().to_path_buf();
            return Self {
                mount,
                dir,
                container: None,
            };
        }
        let dir = mount.join("scenario");
        let made = std::fs::create_dir(&dir);
        let containers = mount
            .runtime
            .block_on(mount.other.list_containers())
            .unwrap();
        let (dir, container) = match made {
            Ok(()) => (
                dir,
                containers
                    .into_iter()
                    .find(|c| c.title == "scenario")
                    .expect("the directory made through the mount is a container"),
            ),
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                let first = containers
                    .into_iter()
                    .next()
                    .expect("a container to work in");
                let parent = match &first.group {
                    Some(group) => mount.join(&group.title),
                    None => mount.path().to_path_buf(),
                };
                (parent.join(&first.title), first)
            }
            Err(err) => panic!("mkdir {}: {err}", dir.display()),
        };
        Self {
            mount,
            dir,
            container: Some(container.id),
        }
    }

    /// `name` in the working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn can_delete(&self) -> bool {
        self.mount.other.capabilities().delete
    }

    /// What another client lists in the scenario's directory.
    pub fn other_list(&self) -> Vec<ObjectMeta> {
        let other = &self.mount.other;
        self.mount
            .runtime
            .block_on(other.list(self.container.as_deref()))
            .unwrap()
    }

    /// Another client stores `data` as `name` (a name no API rewrites).
    fn other_put(&self, name: &str, data: &[u8]) {
        self.other_put_all(&[(name.to_string(), data.to_vec())]);
    }

    /// Another client stores every `(name, data)`, a few at a time.
    fn other_put_all(&self, files: &[(String, Vec<u8>)]) {
        let staging = tempfile::tempdir().unwrap();
        let sources: Vec<(String, UploadSource)> = files
            .iter()
            .enumerate()
            .map(|(i, (name, data))| {
                let path = staging.path().join(i.to_string());
                std::fs::write(&path, data).unwrap();
                (name.clone(), UploadSource::new(path, data.len() as u64))
            })
            .collect();
        let other = &self.mount.other;
        let container = self.container.as_deref();
        self.mount.runtime.block_on(async {
            let uploads = futures::stream::iter(&sources)
                .map(|(name, source)| other.upload(container, name, source))
                .buffer_unordered(SEED_CONCURRENCY);
            for result in uploads.collect::<Vec<_>>().await {
                result.unwrap();
            }
        });
    }

    /// The bytes another client reads for the object named `name`, if there is one.
    pub fn other_get(&self, name: &str) -> Option<Vec<u8>> {
        let object = self.other_list().into_iter().find(|o| o.name == name)?;
        let other = &self.mount.other;
        let data = self
            .mount
            .runtime
            .block_on(other.read(self.container.as_deref(), &object, 0..object.size))
            .unwrap();
        Some(data.to_vec())
    }
}

/// Copies `data` in as `name` and back out, comparing both copies with `cmp`.
fn copy_in_and_out(mounted: &Mounted, name: &str, data: &[u8]) {
    let local = tempfile::tempdir().unwrap();
    let (source, back) = (local.path().join("in"), local.path().join("out"));
    std::fs::write(&source, data).unwrap();
    let inside = mounted.path(name);
    sh(&format!("cp {} {}", q(&source), q(&inside)));
    sh(&format!("cp {} {}", q(&inside), q(&back)));
    sh(&format!("cmp {} {}", q(&source), q(&back)));
}

pub fn cp_in_and_out_small_empty_and_large(case: &Case) {
    let mounted = case.mount();
    copy_in_and_out(&mounted, "small.txt", b"hello, world\n");
    copy_in_and_out(&mounted, "empty.bin", b"");
    let large = pseudo_random(9 * 1024 * 1024 + 4097, 7);
    copy_in_and_out(&mounted, "large.bin", &large);
    assert_eq!(
        mounted.other_get("large.bin").as_deref(),
        Some(&large[..]),
        "another client reads what was copied in"
    );
}

pub fn writing_over_a_file_replaces_it(case: &Case) {
    let mounted = case.mount();
    let path = mounted.path("notes.txt");
    std::fs::write(&path, b"first version, longer than the second").unwrap();
    std::fs::write(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let listed: Vec<_> = mounted
        .other_list()
        .into_iter()
        .filter(|o| o.name == "notes.txt")
        .collect();
    assert!(!listed.is_empty(), "stored");
    assert_eq!(mounted.other_get("notes.txt").unwrap(), b"second");
}

pub fn rm_deletes_or_is_refused(case: &Case) {
    let mounted = case.mount();
    let path = mounted.path("gone.txt");
    std::fs::write(&path, b"bytes").unwrap();
    if mounted.can_delete() {
        std::fs::remove_file(&path).unwrap();
        assert!(!path.exists());
        assert!(mounted.other_get("gone.txt").is_none(), "deleted remotely");
    } else {
        assert_eq!(errno(std::fs::remove_file(&path)), libc::EPERM);
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes", "the file stays");
    }
}

pub fn mv_renames_or_is_refused(case: &Case) {
    let mounted = case.mount();
    let (from, to) = (mounted.path("before.txt"), mounted.path("after.txt"));
    std::fs::write(&from, b"moving bytes").unwrap();
    if mounted.can_delete() {
        sh(&format!("mv {} {}", q(&from), q(&to)));
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"moving bytes");
        assert!(mounted.other_get("before.txt").is_none());
        assert_eq!(mounted.other_get("after.txt").unwrap(), b"moving bytes");
    } else {
        assert_eq!(errno(std::fs::rename(&from, &to)), libc::EPERM);
        assert_eq!(std::fs::read(&from).unwrap(), b"moving bytes");
    }
}

pub fn a_directory_rename_moves_its_files_or_is_exdev(case: &Case) {
    let mounted = case.mount();
    let (from, to) = (mounted.path("dir"), mounted.path("moved"));
    std::fs::create_dir_all(from.join("sub")).unwrap();
    std::fs::write(from.join("a.txt"), b"a").unwrap();
    std::fs::write(from.join("sub/b.txt"), b"b").unwrap();
    if !mounted.can_delete() {
        // The stored files could never leave their old names: `mv` copies them, and the
        // copies' sources stay, as for any file on such an API.
        assert_eq!(errno(std::fs::rename(&from, &to)), libc::EXDEV);
        assert_eq!(std::fs::read(from.join("a.txt")).unwrap(), b"a");
        return;
    }
    std::fs::rename(&from, &to).unwrap();
    assert!(!from.exists());
    assert_eq!(std::fs::read(to.join("sub/b.txt")).unwrap(), b"b");
    let stored: Vec<String> = mounted
        .other_list()
        .iter()
        .map(|o| sessionfs::remote::names::decode(&o.name))
        .collect();
    assert!(stored.iter().all(|p| !p.starts_with("dir/")), "{stored:?}");
    for path in ["moved/a.txt", "moved/sub/b.txt"] {
        assert!(stored.iter().any(|p| p == path), "{path} in {stored:?}");
    }
}

pub fn a_listing_of_many_pages_shows_every_file(case: &Case) {
    let mounted = case.mount();
    let files: Vec<(String, Vec<u8>)> = (0..MANY_FILES)
        .map(|i| (format!("f{i:04}.txt"), format!("file {i}\n").into_bytes()))
        .collect();
    mounted.other_put_all(&files);
    let listed = sh(&format!("ls {} | wc -l", q(&mounted.dir)));
    assert_eq!(listed.trim(), MANY_FILES.to_string());
    let last = &files[MANY_FILES - 1];
    assert_eq!(std::fs::read(mounted.path(&last.0)).unwrap(), last.1);
}

pub fn names_with_spaces_and_unicode_round_trip(case: &Case) {
    let mounted = case.mount();
    let names = [
        "a file with spaces.txt",
        "naïve café ☕.md",
        "日本語のファイル",
    ];
    for (i, name) in names.iter().enumerate() {
        std::fs::write(mounted.path(name), format!("content {i}")).unwrap();
    }
    let listed = sh(&format!("ls {}", q(&mounted.dir)));
    for (i, name) in names.iter().enumerate() {
        assert!(
            listed.lines().any(|line| line == *name),
            "{name:?} in {listed}"
        );
        let read = std::fs::read_to_string(mounted.path(name)).unwrap();
        assert_eq!(read, format!("content {i}"));
    }
}

pub fn a_change_by_another_client_appears_after_the_ttl(case: &Case) {
    let mounted = case.mount_with_ttl(SHORT_TTL);
    let path = mounted.path("from-elsewhere.txt");
    assert!(!path.exists());
    mounted.other_put("from-elsewhere.txt", b"written by another client");
    wait_until(SEEN_DEADLINE, "the other client's file", || path.exists());
    assert_eq!(std::fs::read(&path).unwrap(), b"written by another client");
}

pub fn vim_edits_and_saves(case: &Case) {
    let mounted = case.mount();
    let path = mounted.path("notes.txt");
    std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
    sh(&format!(
        "cd {} && vim -u NONE -i NONE -N -e -s -c '%s/two/2/' -c 'wq' notes.txt",
        q(&mounted.dir)
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n2\nthree\n");
    let stored = mounted.other_list();
    assert!(
        stored.iter().all(|o| !o.name.contains(".swp")),
        "no swap file reaches the server: {stored:?}"
    );
}

pub fn rsync_copies_a_tree_in_and_out(case: &Case) {
    let mounted = case.mount();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    for (name, len) in [("a.txt", 10), ("b.bin", 300_000), ("sub/c.txt", 1)] {
        std::fs::write(tree.join(name), pseudo_random(len, len as u64)).unwrap();
    }
    // Without a delete there is no rename, so rsync must write in place.
    let inplace = if mounted.can_delete() {
        ""
    } else {
        "--inplace"
    };
    let inside = mounted.path("tree");
    let back = local.path().join("back");
    sh(&format!("rsync -a {inplace} {}/ {}/", q(&tree), q(&inside)));
    sh(&format!("rsync -a {}/ {}/", q(&inside), q(&back)));
    sh(&format!("diff -r {} {}", q(&tree), q(&back)));
}

/// Expands every scenario into one test per backend: `name => Case`.
macro_rules! scenarios {
    ($($backend:ident => $case:expr),* $(,)?) => {$(
        mod $backend {
            use super::*;

            const CASE: Case = $case;

            #[test]
            fn cp_in_and_out_small_empty_and_large() {
                super::cp_in_and_out_small_empty_and_large(&CASE);
            }

            #[test]
            fn writing_over_a_file_replaces_it() {
                super::writing_over_a_file_replaces_it(&CASE);
            }

            #[test]
            fn rm_deletes_or_is_refused() {
                super::rm_deletes_or_is_refused(&CASE);
            }

            #[test]
            fn mv_renames_or_is_refused() {
                super::mv_renames_or_is_refused(&CASE);
            }

            #[test]
            fn a_directory_rename_moves_its_files_or_is_exdev() {
                super::a_directory_rename_moves_its_files_or_is_exdev(&CASE);
            }

            #[test]
            fn a_listing_of_many_pages_shows_every_file() {
                super::a_listing_of_many_pages_shows_every_file(&CASE);
            }

            #[test]
            fn names_with_spaces_and_unicode_round_trip() {
                super::names_with_spaces_and_unicode_round_trip(&CASE);
            }

            #[test]
            fn a_change_by_another_client_appears_after_the_ttl() {
                super::a_change_by_another_client_appears_after_the_ttl(&CASE);
            }

            #[test]
            fn vim_edits_and_saves() {
                super::vim_edits_and_saves(&CASE);
            }

            #[test]
            fn rsync_copies_a_tree_in_and_out() {
                super::rsync_copies_a_tree_in_and_out(&CASE);
            }
        }
    )*};
}

scenarios! {
    mix => Case::of(Backend::Mix),
    lightfield => Case::of(Backend::Lightfield),
    appmixer => Case::of(Backend::Appmixer),
    fluxer => Case::with_emulator(Backend::Fluxer, |c| c.fluxer.rate_limits = false),
}
