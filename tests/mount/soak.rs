//! The fault soak, one test per backend through one function: a seeded set of files of random
//! sizes (0 B to 64 MiB) is copied in through a mount whose emulator injects every fault kind
//! (`500`, `503`, `429` with Retry-After, `reset`, `truncate`, `slow`), checked by md5 through
//! another client of the API, then copied out again through a fresh mount (remounted, so no
//! cached byte helps) and checked again. It prints what it moved and what it met, and fails on
//! one lost or corrupt file or a fault kind never injected.
//!
//! `SESSIONFS_SOAK_FILES` (default [`DEFAULT_FILES`]) and `SESSIONFS_SOAK_SEED` change the
//! run; `scripts/soak.sh` runs the long version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sessionfs::backend::Backend;
use sessionfs::emulator::FaultCounts;
use sessionfs::remote::http::{RetryConfig, RetryCount};

use crate::harness::{TestMount, pseudo_random, q, sh_output};
use crate::scenarios::Mounted;

/// Files in the default `cargo test` run (a few dozen keeps each backend well under a minute).
const DEFAULT_FILES: usize = 24;
/// The largest file; one file of exactly this size is always in the set.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Every fault kind, often enough that each hits a few dozen files' requests.
const FAULTS: &str = "500=0.03,503=0.03,429=0.02,reset=0.02,truncate=0.02,slow=0.01";
/// Seed of the file sizes and of the emulator's faults unless `SESSIONFS_SOAK_SEED` says.
const DEFAULT_SEED: u64 = 13;
/// Extra read rounds (a remount and every file read again) while a fault kind is still at
/// zero; the faults are random, so a short run may miss one.
const MAX_EXTRA_ROUNDS: usize = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `count` file sizes drawn from `rng`: a quarter tiny (empty included), a quarter small,
/// most of the rest up to 4 MiB, one in sixteen up to the maximum, plus one of exactly the maximum; none below the
/// API's smallest object (Lightfield stores no empty file).
fn sizes(rng: &mut SmallRng, count: usize, min: u64) -> Vec<u64> {
    (0..count)
        .map(|i| match (i, rng.gen_range(0..16)) {
            (1, _) => MAX_FILE_BYTES,
            (_, 0..=3) => rng.gen_range(0..16),
            (_, 4..=7) => rng.gen_range(16..64 << 10),
            (_, 8..=14) => rng.gen_range(64 << 10..4 << 20),
            _ => rng.gen_range(4 << 20..=MAX_FILE_BYTES),
        })
        .map(|size| size.max(min))
        .collect()
}

/// What one pass over the files found.
#[derive(Default)]
struct Tally {
    lost: Vec<String>,
    corrupt: Vec<String>,
}

impl Tally {
    /// Compares what a pass got for `name` with the sent md5.
    fn check(&mut self, name: &str, got: Option<String>, sent: &str) {
        match got {
            None => self.lost.push(name.to_string()),
            Some(md5) if md5 != sent => self.corrupt.push(name.to_string()),
            Some(_) => {}
        }
    }
}

/// Copies every file out of the mount and checks it against its md5.
fn read_back(mounted: &Mounted, files: &[(String, String)], out: &std::path::Path) -> Tally {
    let mut tally = Tally::default();
    for (name, sent) in files {
        let back = out.join(name);
        let copied = sh_output(&format!("cp {} {}", q(&mounted.path(name)), q(&back)));
        let got = copied
            .status
            .success()
            .then(|| std::fs::read(&back).map(|bytes| md5_hex(&bytes)).ok())
            .flatten();
        if got.is_none() {
            eprintln!(
                "soak: copy out of {name} failed: {}",
                String::from_utf8_lossy(&copied.stderr)
            );
        }
        tally.check(name, got, sent);
        let _ = std::fs::remove_file(&back);
    }
    tally
}

/// The soak on `backend`'s emulator.
fn soak(backend: Backend) {
    let count: usize = env_or("SESSIONFS_SOAK_FILES", DEFAULT_FILES);
    let seed: u64 = env_or("SESSIONFS_SOAK_SEED", DEFAULT_SEED);
    let retries = RetryCount::default();
    let counts = Arc::new(FaultCounts::default());
    let mount = TestMount::embedded_client(
        backend,
        // Fluxer's default attachment limit (25 MiB) is below the largest file.
        |emulator| emulator.fluxer.max_attachment_bytes = Some(MAX_FILE_BYTES),
        |client| {
            client.retry = RetryConfig {
                max_attempts: 1000,
                deadline: Duration::from_secs(60),
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(1),
                retries: retries.clone(),
                ..RetryConfig::default()
            }
        },
        |config| config.metadata_ttl = Duration::from_secs(60),
    );
    // The working directory is made before the faults start: a failed create is not retried.
    let mut mounted = Mounted::new(mount);
    mounted.mount.restart_server_with(|emulator| {
        emulator.faults = FAULTS.parse().unwrap();
        emulator.fault_seed = seed;
        emulator.fault_counts = counts.clone();
    });
    let started = Instant::now();

    let min = mounted.mount.other.capabilities().min_object_bytes;
    let mut rng = SmallRng::seed_from_u64(seed);
    let local = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut tally_in = Tally::default();
    for (i, size) in sizes(&mut rng, count, min).into_iter().enumerate() {
        let name = format!("soak{i:03}.bin");
        let source = local.path().join(&name);
        let data = pseudo_random(size as usize, seed.wrapping_mul(1000) + i as u64);
        std::fs::write(&source, &data).unwrap();
        let copied = sh_output(&format!("cp {} {}", q(&source), q(&mounted.path(&name))));
        if !copied.status.success() {
            eprintln!(
                "soak: copy in of {name} failed: {}",
                String::from_utf8_lossy(&copied.stderr)
            );
            tally_in.lost.push(name.clone());
        }
        files.push((name, md5_hex(&data), size));
        std::fs::remove_file(&source).unwrap();
    }
    let bytes: u64 = files.iter().map(|(_, _, size)| size).sum();
    let files: Vec<(String, String)> = files
        .into_iter()
        .map(|(name, md5, _)| (name, md5))
        .collect();

    // On the server, through another client of the API.
    let mut on_server = Tally::default();
    for (name, sent) in &files {
        let got = mounted.other_get(name).map(|bytes| md5_hex(&bytes));
        on_server.check(name, got, sent);
    }

    // Back through a new mount: nothing cached, every byte read from the server again.
    let out = tempfile::tempdir().unwrap();
    mounted.mount.remount();
    let mut back = read_back(&mounted, &files, out.path());
    let mut rounds = 0;
    while counts.by_kind().iter().any(|(_, n)| *n == 0) && rounds < MAX_EXTRA_ROUNDS {
        rounds += 1;
        mounted.mount.remount();
        let again = read_back(&mounted, &files, out.path());
        back.lost.extend(again.lost);
        back.corrupt.extend(again.corrupt);
    }

    let faults: Vec<String> = counts
        .by_kind()
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect();
    let lost = tally_in.lost.len() + on_server.lost.len() + back.lost.len();
    let corrupt = on_server.corrupt.len() + back.corrupt.len();
    println!(
        "soak {backend:?}: {} files, {bytes} bytes, faults {}, retries {}, lost {lost}, \
         corrupt {corrupt}, extra read rounds {rounds}, {:.1?}",
        files.len(),
        faults.join(" "),
        retries.get(),
        started.elapsed(),
    );
    assert!(
        lost == 0 && corrupt == 0,
        "lost in: {:?}, on the server: {:?}, back: {:?}; corrupt on the server: {:?}, back: {:?}",
        tally_in.lost,
        on_server.lost,
        back.lost,
        on_server.corrupt,
        back.corrupt
    );
    for (kind, n) in counts.by_kind() {
        assert!(n > 0, "no {kind} fault was injected");
    }
}

#[test]
fn soak_mix() {
    soak(Backend::Mix);
}

#[test]
fn soak_lightfield() {
    soak(Backend::Lightfield);
}

#[test]
fn soak_appmixer() {
    soak(Backend::Appmixer);
}

#[test]
fn soak_fluxer() {
    soak(Backend::Fluxer);
}
