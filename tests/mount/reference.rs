//! Reference-model test: the same seeded random sequence of open, write at random offsets,
//! truncate, rename, unlink, fsync and close runs on the mount and on a local directory, and
//! after every step the listings and every file's bytes must agree.
//!
//! `SESSIONFS_REFTEST_OPS` sets the number of operations (default 400, short enough for CI);
//! `SESSIONFS_REFTEST_SEED` replays one seed; `SESSIONFS_REFTEST_TRACE=1` prints each step. `scripts/reftest.sh` runs a long series.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::harness::TestMount;

const NAMES: &[&str] = &["a.txt", "b c.bin", "d.e.f", "g__h", "new"];
const MAX_OPEN: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One open file on both sides.
struct Pair {
    name: String,
    mount: File,
    local: File,
}

fn outcome<T>(result: std::io::Result<T>) -> Result<T, i32> {
    result.map_err(|err| err.raw_os_error().unwrap_or(-1))
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

fn run(seed: u64, ops: usize) {
    let mount = TestMount::cached();
    let remote_dir = mount.session_dir("ref");
    let local = tempfile::tempdir().unwrap();
    let local_dir = local.path();
    let mut rng = Rng(seed | 1);
    let mut open: Vec<Pair> = Vec::new();
    for step in 0..ops {
        let op = rng.below(100);
        let description;
        if op < 20 && open.len() < MAX_OPEN {
            let name = rng.pick(NAMES);
            let mut options = OpenOptions::new();
            let mode = rng.below(4);
            match mode {
                0 => options.read(true).write(true).create(true),
                1 => options.write(true).create(true).truncate(true),
                2 => options.append(true).create(true),
                _ => options.read(true).write(true),
            };
            description = format!("open {name} mode {mode}");
            let a = outcome(options.open(remote_dir.join(name)));
            let b = outcome(options.open(local_dir.join(name)));
            match (a, b) {
                (Ok(mount), Ok(local)) => open.push(Pair {
                    name: name.into(),
                    mount,
                    local,
                }),
                (a, b) => assert_eq!(a.err(), b.err(), "step {step}: {description}"),
            }
        } else if op < 55 && !open.is_empty() {
            let pair = &open[rng.below(open.len() as u64) as usize];
            let (offset, len) = if rng.below(4) == 0 {
                // Large and block-aligned: staged with O_DIRECT, among buffered writes.
                (rng.below(48) * 4096, (32 + rng.below(96) as usize) * 4096)
            } else {
                (rng.below(200_000), 1 + rng.below(70_000) as usize)
            };
            let byte = rng.below(256) as u8;
            let data = vec![byte; len];
            description = format!("write {} at {offset} len {len}", pair.name);
            let a = outcome(pair.mount.write_all_at(&data, offset));
            let b = outcome(pair.local.write_all_at(&data, offset));
            assert_eq!(a, b, "step {step}: {description}");
        } else if op < 62 && !open.is_empty() {
            let pair = &open[rng.below(open.len() as u64) as usize];
            let len = rng.below(150_000);
            description = format!("ftruncate {} to {len}", pair.name);
            let a = outcome(pair.mount.set_len(len));
            let b = outcome(pair.local.set_len(len));
            assert_eq!(a, b, "step {step}: {description}");
        } else if op < 68 && !open.is_empty() {
            let pair = &open[rng.below(open.len() as u64) as usize];
            description = format!("fsync {}", pair.name);
            let a = outcome(pair.mount.sync_all());
            let b = outcome(pair.local.sync_all());
            assert_eq!(a, b, "step {step}: {description}");
        } else if op < 80 && !open.is_empty() {
            let pair = open.remove(rng.below(open.len() as u64) as usize);
            description = format!("close {}", pair.name);
            drop(pair);
        } else if op < 88 {
            let (from, to) = (rng.pick(NAMES), rng.pick(NAMES));
            description = format!("rename {from} -> {to}");
            let a = outcome(std::fs::rename(remote_dir.join(from), remote_dir.join(to)));
            let b = outcome(std::fs::rename(local_dir.join(from), local_dir.join(to)));
            assert_eq!(a, b, "step {step}: {description}");
        } else if op < 94 {
            let name = rng.pick(NAMES);
            let len = rng.below(100_000);
            description = format!("truncate {name} to {len}");
            let a = outcome(
                File::options()
                    .write(true)
                    .open(remote_dir.join(name))
                    .and_then(|f| f.set_len(len)),
            );
            let b = outcome(
                File::options()
                    .write(true)
                    .open(local_dir.join(name))
                    .and_then(|f| f.set_len(len)),
            );
            assert_eq!(a, b, "step {step}: {description}");
        } else {
            let name = rng.pick(NAMES);
            description = format!("unlink {name}");
            let a = outcome(std::fs::remove_file(remote_dir.join(name)));
            let b = outcome(std::fs::remove_file(local_dir.join(name)));
            assert_eq!(a, b, "step {step}: {description}");
        }
        if std::env::var_os("SESSIONFS_REFTEST_TRACE").is_some() {
            eprintln!("step {step}: {description}");
        }
        let (mounted, expected) = (snapshot(&remote_dir), snapshot(local_dir));
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&mounted),
            names(&expected),
            "seed {seed} step {step}: {description}"
        );
        for (name, bytes) in &expected {
            let got = &mounted[name];
            if got != bytes {
                let at = got.iter().zip(bytes).position(|(a, b)| a != b);
                panic!(
                    "seed {seed} step {step}: {description}: {name} differs: {} bytes, want {}, \
                     first difference at {at:?}",
                    got.len(),
                    bytes.len()
                );
            }
        }
    }
    drop(open);
    // Once everything is closed, the server holds exactly the local directory's files.
    let session = mount.api_session_id("ref");
    let expected = snapshot(local_dir);
    assert_eq!(
        mount.api_file_names(&session).len(),
        expected.len(),
        "seed {seed}"
    );
    for (name, bytes) in &expected {
        let stored_name =
            sessionfs::remote::names::encode(name, &sessionfs::remote::mix::NAME_RULES);
        let stored = mount.api_get(&session, &stored_name);
        assert!(
            stored.as_ref() == Some(bytes),
            "seed {seed}: server copy of {name} differs"
        );
    }
}

#[test]
fn random_operations_match_a_local_directory() {
    let ops = std::env::var("SESSIONFS_REFTEST_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed = std::env::var("SESSIONFS_REFTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261123);
    run(seed, ops);
}
