//! The read path through a real mount: ranged reads at block boundaries and at the end of the
//! file, concurrent readers, eviction under a tiny memory budget, and objects changed behind
//! the mount's back. Assertions are on bytes and on request counts, never on time.

use std::fs::File;
use std::os::unix::fs::FileExt;

use sessionfs::cache::MIN_BUDGET_BLOCKS;

use crate::harness::{TestMount, pseudo_random, sh};

/// Small blocks, so a few MiB cross many block boundaries.
const BLOCK: u64 = 64 << 10;

fn small_blocks() -> TestMount {
    TestMount::with(|config| {
        config.cache.block_size = BLOCK;
        config.cache.max_request_bytes = 4 * BLOCK;
    })
}

/// A session with one file `name` holding `data`, uploaded through the API.
fn remote_file(mount: &TestMount, name: &str, data: &[u8]) -> std::path::PathBuf {
    let id = mount.api_create_session("reads");
    mount.api_upload(&id, name, data);
    mount.join("reads").join(name)
}

#[test]
fn reads_at_block_boundaries_and_at_the_end() {
    let mount = small_blocks();
    let len = 3 * BLOCK as usize + 1000;
    let data = pseudo_random(len, 11);
    let path = remote_file(&mount, "edges.bin", &data);
    // O_DIRECT keeps the kernel's page cache and readahead out of the way, so each pread
    // reaches the block cache at exactly this offset.
    let file = open_direct(&path);
    for (offset, size) in [
        (0, 4096),
        (BLOCK - 4096, 8192),
        (BLOCK, BLOCK as usize),
        (2 * BLOCK - 4096, BLOCK as usize + 8192),
        (len as u64 - 1000, 4096),
        (3 * BLOCK, 8192),
    ] {
        let mut buf = vec![0u8; size];
        let got = file.read_at(&mut buf, offset).unwrap();
        let end = (offset as usize + size).min(len);
        assert_eq!(got, end - offset as usize, "length at {offset}");
        assert_eq!(
            &buf[..got],
            &data[offset as usize..end],
            "bytes at {offset}"
        );
    }
    let mut buf = vec![0u8; 4096];
    assert_eq!(file.read_at(&mut buf, len as u64).unwrap(), 0, "at the end");
    assert_eq!(std::fs::read(&path).unwrap(), data, "whole file");
}

#[test]
fn concurrent_readers_of_one_file_fetch_each_block_once() {
    let mount = small_blocks();
    let len = 40 * BLOCK as usize + 123;
    let data = pseudo_random(len, 12);
    let path = remote_file(&mount, "shared.bin", &data);
    std::thread::scope(|scope| {
        for chunk in [4096usize, 65536, 100_000, 1 << 20] {
            let path = &path;
            let data = &data;
            scope.spawn(move || {
                let file = File::open(path).unwrap();
                let mut offset = 0;
                let mut buf = vec![0u8; chunk];
                while offset < len {
                    let got = file.read_at(&mut buf, offset as u64).unwrap();
                    assert!(got > 0, "early end at {offset}");
                    assert_eq!(&buf[..got], &data[offset..offset + got]);
                    offset += got;
                }
            });
        }
    });
    let stats = mount.fs.block_cache().stats();
    assert_eq!(stats.fetched_bytes, len as u64, "every block fetched once");
}

#[test]
fn a_tiny_budget_evicts_and_still_reads_every_byte() {
    let mount = TestMount::with(|config| {
        config.cache.block_size = BLOCK;
        config.cache.max_request_bytes = BLOCK;
        config.cache.memory_limit = MIN_BUDGET_BLOCKS * BLOCK;
    });
    let len = 64 * BLOCK as usize;
    let data = pseudo_random(len, 13);
    let path = remote_file(&mount, "big.bin", &data);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let cache = mount.fs.block_cache();
    assert!(cache.budget().used() <= cache.budget().limit());
    assert!(cache.cached_blocks() <= MIN_BUDGET_BLOCKS as usize);
    assert!(cache.stats().fetched_bytes >= len as u64);
}

/// Reads 4 KiB at each of `offsets` (none at 0, so each is random) of a `len`-byte file with
/// O_DIRECT, and checks the bytes and that each read fetched one request of `unit` bytes.
fn random_reads_fetch(mount: &TestMount, len: usize, offsets: &[u64], unit: u64) {
    let data = pseudo_random(len, 14);
    let path = remote_file(mount, "random.bin", &data);
    let file = open_direct(&path);
    for &offset in offsets {
        let mut buf = vec![0u8; 4096];
        assert_eq!(file.read_at(&mut buf, offset).unwrap(), 4096);
        assert_eq!(&buf[..], &data[offset as usize..offset as usize + 4096]);
    }
    let stats = mount.fs.block_cache().stats();
    assert_eq!(stats.requests, offsets.len() as u64);
    assert_eq!(stats.fetched_bytes, offsets.len() as u64 * unit);
}

#[test]
fn a_random_read_fetches_only_its_block() {
    // Blocks no larger than the random-read unit: a random read fetches its block.
    let offsets = [20 * BLOCK + 4096, 3 * BLOCK, 27 * BLOCK + 8192, 11 * BLOCK];
    random_reads_fetch(&small_blocks(), 32 * BLOCK as usize, &offsets, BLOCK);
}

#[test]
fn a_random_read_fetches_only_the_small_unit_around_it() {
    // Default 1 MiB blocks: a random 4 KiB read waits for 64 KiB, not a whole block.
    let unit = sessionfs::cache::DEFAULT_RANDOM_READ_BYTES;
    let offsets = [
        (5 << 20) + 4096,
        (1 << 20) + unit - 4096,
        (7 << 20) + 8192,
        3 << 20,
    ];
    random_reads_fetch(&TestMount::new(), 8 << 20, &offsets, unit);
}

#[test]
fn a_change_behind_the_mount_shows_the_new_bytes_never_a_mix() {
    // The harness's metadata TTL is zero: every lookup lists again, as after the TTL.
    let mount = small_blocks();
    let old = pseudo_random(10 * BLOCK as usize, 15);
    let path = remote_file(&mount, "changing.bin", &old);
    assert_eq!(std::fs::read(&path).unwrap(), old);
    let id = mount.api_session_id("reads");
    // A different size, so the Mix version (size and whole-second mtime) surely changes.
    let new = pseudo_random(7 * BLOCK as usize + 5, 16);
    mount.api_upload(&id, "changing.bin", &new);
    assert_eq!(std::fs::read(&path).unwrap(), new);
    assert_eq!(
        sh(&format!("wc -c < '{}'", path.display())).trim(),
        new.len().to_string()
    );
}

#[test]
fn an_open_handle_never_mixes_two_versions() {
    let mount = small_blocks();
    let old = pseudo_random(10 * BLOCK as usize, 17);
    let path = remote_file(&mount, "pinned.bin", &old);
    let file = open_direct(&path);
    let mut head = vec![0u8; BLOCK as usize];
    file.read_at(&mut head, 0).unwrap();
    assert_eq!(head, old[..BLOCK as usize]);
    let id = mount.api_session_id("reads");
    mount.api_upload(&id, "pinned.bin", &pseudo_random(9 * BLOCK as usize, 18));
    // The new listing is seen by this stat; the open handle keeps reading its version.
    std::fs::metadata(&path).unwrap();
    let mut again = vec![0u8; BLOCK as usize];
    file.read_at(&mut again, 0).unwrap();
    assert_eq!(
        again,
        old[..BLOCK as usize],
        "cached block of the pinned version"
    );
    let mut tail = vec![0u8; 4096];
    match file.read_at(&mut tail, 8 * BLOCK) {
        Ok(n) => assert_eq!(&tail[..n], &old[8 * BLOCK as usize..8 * BLOCK as usize + n]),
        Err(err) => assert_eq!(err.raw_os_error(), Some(libc::ESTALE)),
    }
}

#[test]
fn a_file_replaced_before_the_mount_lists_it_gives_estale_not_new_bytes() {
    let mount = small_blocks();
    let old = pseudo_random(10 * BLOCK as usize, 19);
    let path = remote_file(&mount, "swapped.bin", &old);
    let file = open_direct(&path);
    // A read away from the start fetches only its own block: nothing else is cached.
    let mut block = vec![0u8; BLOCK as usize];
    file.read_at(&mut block, 5 * BLOCK).unwrap();
    assert_eq!(block, old[5 * BLOCK as usize..6 * BLOCK as usize]);
    let id = mount.api_session_id("reads");
    mount.api_upload(&id, "swapped.bin", &pseudo_random(9 * BLOCK as usize, 20));
    // The server has the new file; this handle must not read its bytes as the old version.
    let err = file.read_at(&mut block, 8 * BLOCK).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE));
}

/// Opens `path` for reading with `O_DIRECT`: the kernel's page cache and readahead stay out of
/// the way, so each read reaches the mount's block cache at exactly its offset.
fn open_direct(path: &std::path::Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

#[test]
fn a_server_that_ignores_range_still_serves_every_byte() {
    // The newest Mix server answers 200 with the whole body to ranged GETs of uploaded files.
    let mount = TestMount::backend(
        sessionfs::backend::Backend::Mix,
        |dir| {
            let mut config = sessionfs::emulator::EmulatorConfig::new(dir);
            config.serve_ranges = false;
            config
        },
        None,
        |_| {},
    );
    let data = pseudo_random(24 << 20, 31);
    let path = remote_file(&mount, "whole.bin", &data);
    let local = tempfile::tempdir().unwrap();
    sh(&format!(
        "cp '{}' '{}/copy'",
        path.display(),
        local.path().display()
    ));
    assert!(std::fs::read(local.path().join("copy")).unwrap() == data);
    // A read in the middle, after the sequential one, starts a new download and still fits.
    let file = File::open(&path).unwrap();
    let mut buf = vec![0; 4096];
    file.read_exact_at(&mut buf, 13 << 20).unwrap();
    assert!(buf[..] == data[13 << 20..(13 << 20) + 4096]);
}

#[test]
fn the_kernel_reads_ahead_in_whole_1_mib_requests() {
    let mount = TestMount::new();
    let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(mount.path()).unwrap());
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let kib = std::fs::read_to_string(&knob).unwrap();
    assert_eq!(kib.trim(), "1024", "{knob}");
}
