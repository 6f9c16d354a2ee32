//! The core against a reference model on every API shape, below FUSE: random sequences of
//! writes, appends, truncates, renames, unlinks and remounts run through [`SessionFs`] over a
//! [`MemoryRemote`] of each shape (containers or flat, overwrite by name or id-keyed, with or
//! without delete), with and without write-back. After every step the mount must show the
//! model's names and bytes; after each remount and at the end the server must hold them too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::fs::namespace::SetAttr;
use crate::fs::tree::{Ino, ROOT_INO};
use crate::fs::{Caller, FsConfig, SessionFs};
use sessionfs_remote::Remote;
use sessionfs_remote::memory::{ApiShape, MemoryRemote};

/// The names the operations pick from: few, so they collide often.
const NAMES: [&str; 3] = ["a", "b", "c.txt"];

/// One step of a run.
#[derive(Clone, Debug)]
enum Op {
    /// Create or truncate, write `data` from offset 0, close.
    Write(usize, Vec<u8>),
    /// Open an existing file, write `data` at its end, close.
    Append(usize, Vec<u8>),
    /// Truncate an existing file to a length between 1 and its length plus 8.
    Truncate(usize, u8),
    /// rename(2) of an existing file, over whatever the target holds.
    Rename(usize, usize),
    /// unlink(2) of an existing file.
    Unlink(usize),
    /// Unmount (uploading everything pending) and mount again with a fresh staging directory.
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let data = prop::collection::vec(any::<u8>(), 1..48);
    prop_oneof![
        4 => (name.clone(), data.clone()).prop_map(|(n, d)| Op::Write(n, d)),
        2 => (name.clone(), data).prop_map(|(n, d)| Op::Append(n, d)),
        1 => (name.clone(), any::<u8>()).prop_map(|(n, l)| Op::Truncate(n, l)),
        2 => (name.clone(), name.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => name.prop_map(Op::Unlink),
        1 => Just(Op::Remount),
    ]
}

/// A mount of the shared remote: the core, the directory the run works in, its staging.
struct Mounted {
    fs: Arc<SessionFs>,
    dir: Ino,
    _staging: tempfile::TempDir,
}

/// One run: the remote, the current mount and the model of what the directory holds.
struct Run {
    shape: ApiShape,
    memory: Arc<MemoryRemote>,
    /// The container the run works in (`""` on flat shapes).
    container: String,
    write_back: bool,
    mounted: Mounted,
    model: BTreeMap<&'static str, Vec<u8>>,
}

impl Run {
    async fn start(shape: ApiShape, write_back: bool) -> Self {
        let memory = Arc::new(MemoryRemote::shaped(shape));
        let container = match memory.capabilities().containers {
            true => memory.create_container("s").await.unwrap().id,
            false => String::new(),
        };
        let mounted = Self::mount(&memory, write_back).await;
        Self {
            shape,
            memory,
            container,
            write_back,
            mounted,
            model: BTreeMap::new(),
        }
    }

    async fn mount(memory: &Arc<MemoryRemote>, write_back: bool) -> Mounted {
        let staging = tempfile::tempdir().unwrap();
        let mut config = FsConfig::new(staging.path());
        config.metadata_ttl = Duration::from_secs(60);
        if write_back {
            config.write_back = Some(Duration::from_secs(3600));
        }
        let remote: Arc<dyn Remote> = memory.clone();
        let fs = Arc::new(SessionFs::new(remote, config).unwrap());
        fs.start_delayed_uploads(&tokio::runtime::Handle::current());
        let dir = match memory.capabilities().containers {
            true => fs.lookup(ROOT_INO, "s").await.unwrap().attr.ino,
            false => ROOT_INO,
        };
        Mounted {
            fs,
            dir,
            _staging: staging,
        }
    }

    fn fs(&self) -> &SessionFs {
        &self.mounted.fs
    }

    /// The inode of `name` in the run's directory, if the mount has it.
    async fn ino(&self, name: &str) -> Option<Ino> {
        self.fs()
            .lookup(self.mounted.dir, name)
            .await
            .ok()
            .map(|entry| entry.attr.ino)
    }

    /// Opens `ino` for writing, writes `data` at `offset`, closes.
    async fn write_at(&self, ino: Ino, truncate: bool, offset: u64, data: &[u8]) {
        let opened = self.fs().open(ino, true, truncate, false).await.unwrap();
        self.close_after_write(ino, opened.fh, offset, data).await;
    }

    async fn close_after_write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) {
        let fs = self.fs();
        fs.write(ino, fh, offset, Bytes::copy_from_slice(data))
            .await
            .unwrap();
        fs.flush(ino, fh).await.unwrap();
        fs.release(ino, fh).await.unwrap();
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write(n, ref data) => {
                let name = NAMES[n];
                match self.ino(name).await {
                    Some(ino) => self.write_at(ino, true, 0, data).await,
                    None => {
                        let (entry, opened) = self
                            .fs()
                            .create(self.mounted.dir, name, 0o644, true, Caller::ROOT)
                            .await
                            .unwrap();
                        self.close_after_write(entry.attr.ino, opened.fh, 0, data)
                            .await;
                    }
                }
                self.model.insert(name, data.clone());
            }
            Op::Append(n, ref data) => {
                let name = NAMES[n];
                let Some(held) = self.model.get(name) else {
                    return;
                };
                let ino = self.ino(name).await.expect("a file the model holds");
                self.write_at(ino, false, held.len() as u64, data).await;
                self.model.get_mut(name).unwrap().extend_from_slice(data);
            }
            Op::Truncate(n, len) => {
                let name = NAMES[n];
                let Some(held) = self.model.get(name) else {
                    return;
                };
                let len = 1 + usize::from(len) % (held.len() + 8);
                let ino = self.ino(name).await.expect("a file the model holds");
                let changes = SetAttr {
                    size: Some(len as u64),
                    ..SetAttr::default()
                };
                self.fs().setattr(ino, changes, Caller::ROOT).await.unwrap();
                self.model.get_mut(name).unwrap().resize(len, 0);
            }
            Op::Rename(from, to) => {
                let (from, to) = (NAMES[from], NAMES[to]);
                if from == to || !self.model.contains_key(from) {
                    return;
                }
                let dir = self.mounted.dir;
                let renamed = self.fs().rename(dir, from, dir, to, false).await;
                if self.refused_for_lack_of_delete(renamed, "rename") {
                    return;
                }
                let data = self.model.remove(from).unwrap();
                self.model.insert(to, data);
            }
            Op::Unlink(n) => {
                let name = NAMES[n];
                if !self.model.contains_key(name) {
                    return;
                }
                let unlinked = self.fs().unlink(self.mounted.dir, name).await;
                if self.refused_for_lack_of_delete(unlinked, "unlink") {
                    return;
                }
                self.model.remove(name);
            }
            Op::Remount => self.remount().await,
        }
    }

    /// Whether `result` is the EPERM a shape without delete answers for a stored file (then
    /// nothing changed); any other failure fails the run.
    fn refused_for_lack_of_delete(&self, result: crate::fs::Result<()>, what: &str) -> bool {
        match result {
            Ok(()) => false,
            Err(err) if !self.memory.capabilities().delete && err.errno == libc::EPERM => true,
            Err(err) => panic!("{:?}: {what} failed: {}", self.shape, err.message),
        }
    }

    async fn remount(&mut self) {
        self.mounted.fs.drain().await.unwrap();
        self.check_server();
        self.mounted = Self::mount(&self.memory, self.write_back).await;
    }

    /// The mount shows the model: each name with its bytes, and no other plain name (on a
    /// shape without delete, older objects of a name show as `name~id` and are let be).
    async fn check_mount(&self, step: usize) {
        let fs = self.fs();
        for (name, data) in &self.model {
            let ino = self.ino(name).await.unwrap_or_else(|| {
                panic!("{:?} step {step}: {name} is missing", self.shape);
            });
            let opened = fs.open(ino, false, false, false).await.unwrap();
            let read = fs.read(ino, opened.fh, 0, 4096).await.unwrap();
            fs.release(ino, opened.fh).await.unwrap();
            assert_eq!(&read[..], &data[..], "{:?} step {step}: {name}", self.shape);
        }
        let fh = fs.opendir(self.mounted.dir).await.unwrap();
        let listed: Vec<String> = fs
            .readdir(fh, 0)
            .unwrap()
            .into_iter()
            .map(|(_, name, _)| name)
            .filter(|name| name != "." && name != "..")
            .filter(|name| self.memory.capabilities().delete || !name.contains('~'))
            .collect();
        fs.releasedir(fh);
        let expected: Vec<&str> = self.model.keys().copied().collect();
        assert_eq!(listed, expected, "{:?} step {step}: listing", self.shape);
    }

    /// The server holds the model: the newest object of each name has its bytes, and no name
    /// outside the model has an object (on every shape: nothing was deleted that could not be).
    fn check_server(&self) {
        for (name, data) in &self.model {
            let stored = self.memory.get(&self.container, name);
            assert_eq!(
                stored.as_deref(),
                Some(&data[..]),
                "{:?}: {name} on the server",
                self.shape
            );
        }
        for name in NAMES {
            if !self.model.contains_key(name) {
                assert!(
                    self.memory.get(&self.container, name).is_none(),
                    "{:?}: {name} is gone yet still on the server",
                    self.shape
                );
            }
        }
    }
}

async fn run(shape: ApiShape, ops: &[Op], write_back: bool) {
    let mut run = Run::start(shape, write_back).await;
    for (step, op) in ops.iter().enumerate() {
        run.apply(op).await;
        run.check_mount(step).await;
    }
    run.remount().await;
    run.check_mount(ops.len()).await;
}

/// Found by the model: on Lightfield (no delete) a rename of a file not yet stored over a
/// stored one uploaded the file under the target's name, then tried to delete the displaced
/// object and answered EPERM, though the rename had happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_over_a_stored_file_on_an_api_without_delete_succeeds_like_an_overwrite() {
    let ops = [
        Op::Write(2, vec![0]),
        Op::Write(1, vec![1]),
        Op::Truncate(2, 0),
        Op::Rename(1, 2),
    ];
    run(ApiShape::Lightfield, &ops, true).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_core_keeps_the_model_on_every_api_shape(
        ops in prop::collection::vec(op(), 1..16),
        write_back in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for shape in ApiShape::ALL {
            runtime.block_on(run(shape, &ops, write_back));
        }
    }
}
