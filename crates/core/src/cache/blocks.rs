//! The block cache: one LRU of fixed-size blocks for the whole mount, and the fetching of
//! missing blocks.
//!
//! A read asks [`BlockCache::read`] for a byte range (plus, for a sequential stream, a range to
//! prefetch). Missing blocks are registered as *in flight* before their request goes out, so a
//! second reader of the same block waits for that request instead of sending its own. Runs of
//! consecutive missing blocks are fetched by one request each (up to the source's request size),
//! each on its own task, with at most [`CacheConfig::max_requests`] requests in flight. A read
//! its handle judged random ([`BlockCache::read_random`]) fetches units of
//! [`CacheConfig::random_read_bytes`] instead, unless a whole block around it is already known;
//! those units are cached under keys of their own size, so they never mix with blocks.
//!
//! Memory: every cached or in-flight block holds a [`Reservation`] of the global budget. To make
//! room, the least recently used cached blocks are evicted; blocks in flight cannot be evicted,
//! so a demand read waits until a request completes. Prefetching takes memory only if it is
//! available after eviction and never waits.
//!
//! Invariants: a key is in at most one of `blocks` and `inflight`; an in-flight entry is removed
//! when its request ends, however it ends (the task's guard removes it even on panic or
//! cancellation, and waiters then retry); the state lock is never held across an await.

use sessionfs_io::lock::Locked;
use std::collections::HashMap;
use std::ops::{Range, RangeInclusive};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use lru::LruCache;
use tokio::sync::{Notify, Semaphore, watch};

use super::disk::DiskCache;
use super::memory::{MemoryBudget, Reservation};
use super::{BlockKey, CacheConfig, MIN_BUDGET_BLOCKS, Source};
use sessionfs_remote::{ErrorKind, RemoteError, RemoteResult};

/// The result of one block's fetch as waiters see it; `None` while the request runs.
type Slot = Option<Result<Bytes, SharedError>>;

/// A fetch failure that every waiter of the request receives.
#[derive(Clone, Debug)]
struct SharedError {
    kind: ErrorKind,
    message: String,
}

impl From<SharedError> for RemoteError {
    fn from(err: SharedError) -> Self {
        RemoteError::new(err.kind, err.message)
    }
}

/// A cached block and the memory it holds.
struct Cached {
    data: Bytes,
    _reservation: Reservation,
}

struct State {
    /// Cached blocks, least recently used first; bounded by the budget, not by a count.
    blocks: LruCache<BlockKey, Cached>,
    /// Blocks whose request is running.
    inflight: HashMap<BlockKey, watch::Receiver<Slot>>,
}

/// Counters for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests sent to the remote.
    pub requests: u64,
    /// Bytes received from the remote.
    pub fetched_bytes: u64,
    /// Blocks read back from the disk tier.
    pub disk_hits: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The mount's block cache. Share it as `Arc<BlockCache>`.
pub struct BlockCache {
    config: CacheConfig,
    budget: MemoryBudget,
    disk: Option<Arc<DiskCache>>,
    /// Permits for requests in flight.
    requests: Arc<Semaphore>,
    /// Cached and in-flight blocks. Never held across an await; taken before the budget's lock.
    state: Mutex<State>,
    /// Woken when blocks enter the cache: they can be evicted for a reader waiting for memory.
    cached: Notify,
    stats_requests: AtomicU64,
    stats_fetched: AtomicU64,
    stats_disk_hits: AtomicU64,
}

/// Removes the in-flight entries of a request that ended without publishing them.
struct InflightGuard<'a> {
    cache: &'a BlockCache,
    keys: Vec<BlockKey>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.cache.state();
        for key in &self.keys {
            state.inflight.remove(key);
        }
    }
}

/// One request to start: consecutive unit indices, and whether the disk tier has them.
struct Run {
    blocks: Range<u64>,
    /// Bytes per unit: the block size, or the random-read unit.
    unit: u64,
    from_disk: bool,
    senders: Vec<watch::Sender<Slot>>,
}

impl BlockCache {
    /// A cache under `budget`. The budget must hold at least [`MIN_BUDGET_BLOCKS`] blocks.
    pub fn new(config: CacheConfig, budget: MemoryBudget) -> std::io::Result<Self> {
        if budget.limit() < MIN_BUDGET_BLOCKS * config.block_size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the memory limit of {} bytes is below {MIN_BUDGET_BLOCKS} blocks of {} bytes",
                    budget.limit(),
                    config.block_size
                ),
            ));
        }
        let disk = match &config.disk {
            Some((dir, size)) => Some(Arc::new(DiskCache::open(dir, *size)?)),
            None => None,
        };
        Ok(Self {
            requests: Arc::new(Semaphore::new(config.max_requests.max(1))),
            config,
            budget,
            disk,
            state: Mutex::new(State {
                blocks: LruCache::unbounded(),
                inflight: HashMap::new(),
            }),
            cached: Notify::new(),
            stats_requests: AtomicU64::new(0),
            stats_fetched: AtomicU64::new(0),
            stats_disk_hits: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The global memory budget this cache draws from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Counters since the cache was made.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            requests: self.stats_requests.load(Ordering::Relaxed),
            fetched_bytes: self.stats_fetched.load(Ordering::Relaxed),
            disk_hits: self.stats_disk_hits.load(Ordering::Relaxed),
        }
    }

    /// Drops every cached block of object `id` in `container`, whatever its version: after our
    /// own upload or delete, old blocks must not be served even if the server reports the same
    /// version (Mix versions are size and whole-second mtime).
    pub fn forget_object(&self, container: Option<&str>, id: &str) {
        let same =
            |key: &BlockKey| key.object.container.as_deref() == container && key.object.id == id;
        {
            let mut state = self.state();
            let stale: Vec<BlockKey> = state
                .blocks
                .iter()
                .filter(|(key, _)| same(key))
                .map(|(key, _)| key.clone())
                .collect();
            for key in stale {
                state.blocks.pop(&key);
            }
        }
        if let Some(disk) = &self.disk {
            disk.forget(same);
        }
    }

    /// Bytes in the disk tier and its size cap, if there is one.
    pub fn disk_use(&self) -> Option<(u64, u64)> {
        let disk = self.disk.as_ref()?;
        Some((
            disk.bytes(),
            self.config.disk.as_ref().map_or(0, |(_, cap)| *cap),
        ))
    }

    /// How many blocks are cached in memory.
    pub fn cached_blocks(&self) -> usize {
        self.state().blocks.len()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    fn block_key(source: &Source, index: u64, unit: u64) -> BlockKey {
        BlockKey {
            object: source.key.clone(),
            index,
            unit,
        }
    }

    /// Bytes of unit `index` of `source` (the last one may be short).
    fn block_len(source: &Source, index: u64, unit: u64) -> u64 {
        let start = index * unit;
        (start + unit).min(source.size) - start
    }

    fn blocks_of(range: &Range<u64>, unit: u64) -> RangeInclusive<u64> {
        range.start / unit..=(range.end - 1) / unit
    }

    /// Reads `len` bytes at `offset` of `source` (fewer at the end of the object), fetching
    /// missing blocks, and starts fetching the blocks of `ahead` without waiting for them.
    pub async fn read(
        self: &Arc<Self>,
        source: &Source,
        offset: u64,
        len: u64,
        ahead: Option<Range<u64>>,
    ) -> RemoteResult<Bytes> {
        let end = (offset + len).min(source.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let bs = self.config.block_size;
        // The read's own blocks go out before the prefetch.
        self.start(source, Self::blocks_of(&(offset..end), bs), true, bs)
            .await;
        if let Some(ahead) = ahead.filter(|r| r.start < r.end.min(source.size)) {
            let ahead = ahead.start..ahead.end.min(source.size);
            self.start(source, Self::blocks_of(&ahead, bs), false, bs)
                .await;
        }
        self.read_units(source, offset..end, bs).await
    }

    /// Reads like [`Self::read`] for a reader its prefetcher judged random. Unless a block
    /// around the read is cached (in memory or on disk) or on its way, only the
    /// [`CacheConfig::random_read_bytes`] units it touches are fetched: over a slow link a
    /// 4 KiB read then waits for 64 KiB, not a whole block.
    pub async fn read_random(
        self: &Arc<Self>,
        source: &Source,
        offset: u64,
        len: u64,
    ) -> RemoteResult<Bytes> {
        let end = (offset + len).min(source.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let bs = self.config.block_size;
        let small = self.config.random_read_bytes;
        let whole_blocks_known = || {
            let state = self.state();
            Self::blocks_of(&(offset..end), bs).any(|index| {
                let key = Self::block_key(source, index, bs);
                state.blocks.contains(&key)
                    || state.inflight.contains_key(&key)
                    || self.disk.as_ref().is_some_and(|disk| disk.contains(&key))
            })
        };
        let unit = if small == 0 || small >= bs || whole_blocks_known() {
            bs
        } else {
            small
        };
        self.start(source, Self::blocks_of(&(offset..end), unit), true, unit)
            .await;
        self.read_units(source, offset..end, unit).await
    }

    /// Bytes `range` (non-empty, within the object) from units of `unit` bytes, which the
    /// caller has started fetching together (a unit still missing is fetched alone).
    async fn read_units(
        self: &Arc<Self>,
        source: &Source,
        range: Range<u64>,
        unit: u64,
    ) -> RemoteResult<Bytes> {
        let wanted = Self::blocks_of(&range, unit);
        if wanted.start() == wanted.end() {
            let index = *wanted.start();
            let block = self.block(source, index, unit).await?;
            let from = (range.start - index * unit) as usize;
            let to = ((range.end - index * unit) as usize).min(block.len());
            return Ok(block.slice(from.min(to)..to));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for index in wanted {
            let block = self.block(source, index, unit).await?;
            let block_start = index * unit;
            let from = range.start.saturating_sub(block_start) as usize;
            let to = ((range.end - block_start) as usize).min(block.len());
            out.extend_from_slice(&block[from.min(to)..to]);
        }
        Ok(out.freeze())
    }

    /// Unit `index` of `source`: from memory, from a request in flight, or fetched now.
    async fn block(
        self: &Arc<Self>,
        source: &Source,
        index: u64,
        unit: u64,
    ) -> RemoteResult<Bytes> {
        let key = Self::block_key(source, index, unit);
        loop {
            let pending = {
                let mut state = self.state();
                if let Some(cached) = state.blocks.get(&key) {
                    return Ok(cached.data.clone());
                }
                state.inflight.get(&key).cloned()
            };
            match pending {
                Some(mut rx) => {
                    // A closed channel means the request was dropped: look again.
                    if let Ok(slot) = rx.wait_for(Option::is_some).await {
                        return slot
                            .clone()
                            .expect("waited for a result")
                            .map_err(Into::into);
                    }
                }
                None => self.start(source, index..=index, true, unit).await,
            }
        }
    }

    /// Starts requests for the units of `unit` bytes in `wanted` that are neither cached nor
    /// in flight. `demand` waits for memory; a prefetch gives up when there is none.
    async fn start(
        self: &Arc<Self>,
        source: &Source,
        wanted: RangeInclusive<u64>,
        demand: bool,
        unit: u64,
    ) {
        let missing: Vec<u64> = {
            let state = self.state();
            wanted
                .filter(|&i| {
                    let key = Self::block_key(source, i, unit);
                    !state.inflight.contains_key(&key) && !state.blocks.contains(&key)
                })
                .collect()
        };
        // A read larger than the whole budget (a 1 MiB kernel read over small blocks) starts
        // only what fits; `block` starts the rest as the reader reaches it.
        let limit = self.budget.limit();
        let mut bytes = 0;
        let missing: Vec<u64> = missing
            .into_iter()
            .take_while(|&i| {
                let len = Self::block_len(source, i, unit);
                let fits = bytes == 0 || bytes + len <= limit;
                if fits {
                    bytes += len;
                }
                fits
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let reservation = if demand {
            self.reserve(bytes).await
        } else {
            match self.try_reserve(bytes) {
                Some(reservation) => reservation,
                None => return,
            }
        };
        let runs = self.register(source, &missing, unit);
        self.spawn_runs(source, runs, reservation);
    }

    /// Registers the still-missing blocks among `missing` as in flight and groups them into
    /// runs: consecutive, all from disk or all from the remote, at most one request long.
    fn register(&self, source: &Source, missing: &[u64], unit: u64) -> Vec<Run> {
        let max_blocks = (source.max_request_bytes / unit).max(1);
        let mut runs: Vec<Run> = Vec::new();
        let mut state = self.state();
        for &index in missing {
            let key = Self::block_key(source, index, unit);
            if state.inflight.contains_key(&key) || state.blocks.contains(&key) {
                continue;
            }
            let from_disk = self.disk.as_ref().is_some_and(|d| d.contains(&key));
            let (tx, rx) = watch::channel(None);
            state.inflight.insert(key, rx);
            match runs.last_mut() {
                Some(run)
                    if !from_disk
                        && !run.from_disk
                        && run.blocks.end == index
                        && run.blocks.end - run.blocks.start < max_blocks =>
                {
                    run.blocks.end += 1;
                    run.senders.push(tx);
                }
                _ => runs.push(Run {
                    blocks: index..index + 1,
                    unit,
                    from_disk,
                    senders: vec![tx],
                }),
            }
        }
        runs
    }

    fn spawn_runs(self: &Arc<Self>, source: &Source, runs: Vec<Run>, mut reservation: Reservation) {
        for run in runs {
            let bytes: u64 = run
                .blocks
                .clone()
                .map(|i| Self::block_len(source, i, run.unit))
                .sum();
            let run_reservation = reservation.split(bytes);
            let cache = self.clone();
            let source = source.clone();
            tokio::spawn(async move { cache.fetch_run(&source, run, run_reservation).await });
        }
    }

    /// Drops the cached blocks `blocks` of `source` (requests in flight finish as usual): a
    /// reader has copied them into the kernel's page cache, and their memory serves better as
    /// the next blocks ahead, already resident, than as a second copy.
    pub fn release(&self, source: &Source, blocks: Range<u64>) {
        let released: Vec<Cached> = {
            let mut state = self.state();
            blocks
                .filter_map(|index| {
                    state
                        .blocks
                        .pop(&Self::block_key(source, index, self.config.block_size))
                })
                .collect()
        };
        drop(released);
    }

    /// Reserves `bytes` of the budget, evicting cached blocks as needed, without waiting (also
    /// for the write path's buffers, which share the budget).
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        loop {
            if let Some(reservation) = self.budget.try_reserve(bytes) {
                return Some(reservation);
            }
            let victim = self.state().blocks.pop_lru();
            // Dropped outside the lock: its reservation goes back to the budget.
            victim?;
        }
    }

    /// Reserves `bytes`, evicting cached blocks and then waiting for requests in flight (whose
    /// memory comes back either freed or as evictable blocks).
    async fn reserve(&self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.budget.limit());
        loop {
            let released = self.budget.released();
            let cached = self.cached.notified();
            if let Some(reservation) = self.try_reserve(bytes) {
                return reservation;
            }
            tokio::select! {
                () = released => {}
                () = cached => {}
            }
        }
    }

    /// Fetches one run, caches its blocks and tells their waiters.
    async fn fetch_run(&self, source: &Source, run: Run, mut reservation: Reservation) {
        let keys: Vec<BlockKey> = run
            .blocks
            .clone()
            .map(|i| Self::block_key(source, i, run.unit))
            .collect();
        let guard = InflightGuard {
            cache: self,
            keys: keys.clone(),
        };
        let bs = run.unit;
        let range = run.blocks.start * bs..(run.blocks.end * bs).min(source.size);
        let expected = range.end - range.start;
        let mut from_disk = None;
        if run.from_disk
            && let Some(disk) = &self.disk
        {
            from_disk = disk.load(&keys[0]).await;
        }
        let result = match from_disk {
            Some(data) => {
                self.stats_disk_hits.fetch_add(1, Ordering::Relaxed);
                Ok(data)
            }
            None => self.fetch_remote(source, range.clone()).await,
        };
        let result = result.and_then(|data| {
            if data.len() as u64 == expected {
                Ok(data)
            } else {
                Err(RemoteError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{:?} changed while being read: bytes {}..{} gave {} bytes",
                        source.key.id,
                        range.start,
                        range.end,
                        data.len()
                    ),
                ))
            }
        });
        let slots: Vec<Slot> = match result {
            Ok(data) => {
                let mut slots = Vec::with_capacity(keys.len());
                let mut state = self.state();
                for key in &keys {
                    let start = (key.index * bs - range.start) as usize;
                    let end = (start + bs as usize).min(data.len());
                    let block = data.slice(start..end);
                    let held = reservation.split(block.len() as u64);
                    state.inflight.remove(key);
                    state.blocks.put(
                        key.clone(),
                        Cached {
                            data: block.clone(),
                            _reservation: held,
                        },
                    );
                    slots.push(Some(Ok(block)));
                }
                drop(state);
                self.cached.notify_waiters();
                if !run.from_disk
                    && let Some(disk) = &self.disk
                {
                    for (key, slot) in keys.iter().zip(&slots) {
                        if let Some(Ok(block)) = slot {
                            disk.store(key.clone(), block.clone());
                        }
                    }
                }
                slots
            }
            Err(err) => {
                let shared = SharedError {
                    kind: err.kind,
                    message: err.message,
                };
                keys.iter().map(|_| Some(Err(shared.clone()))).collect()
            }
        };
        drop(guard);
        drop(reservation);
        for (tx, slot) in run.senders.into_iter().zip(slots) {
            tx.send_replace(slot);
        }
    }

    async fn fetch_remote(&self, source: &Source, range: Range<u64>) -> RemoteResult<Bytes> {
        let _permit = self
            .requests
            .acquire()
            .await
            .expect("the request semaphore is never closed");
        self.stats_requests.fetch_add(1, Ordering::Relaxed);
        let data = source.fetch.fetch(range).await?;
        self.stats_fetched
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{Fetch, ObjectKey};
    use super::*;
    use futures::future::BoxFuture;
    use sessionfs_remote::memory::MemoryRemote;
    use sessionfs_remote::{ObjectMeta, Remote};

    const BS: u64 = 1024;

    struct MemoryFetch {
        remote: Arc<MemoryRemote>,
        object: ObjectMeta,
    }

    impl Fetch for MemoryFetch {
        fn fetch(&self, range: Range<u64>) -> BoxFuture<'static, RemoteResult<Bytes>> {
            let remote = self.remote.clone();
            let object = self.object.clone();
            Box::pin(async move { remote.read(Some("c"), &object, range).await })
        }
    }

    fn config(budget_blocks: u64) -> CacheConfig {
        CacheConfig {
            block_size: BS,
            memory_limit: budget_blocks * BS,
            max_request_bytes: 4 * BS,
            max_requests: 4,
            max_window: 64 * BS,
            random_read_bytes: BS / 4,
            disk: None,
        }
    }

    fn cache(config: CacheConfig) -> Arc<BlockCache> {
        let budget = MemoryBudget::new(config.memory_limit);
        Arc::new(BlockCache::new(config, budget).unwrap())
    }

    /// A source reading `object` in container `c` of `remote` (also for the cache's other tests).
    pub(in crate::cache) fn source(
        remote: &Arc<MemoryRemote>,
        object: ObjectMeta,
        max_request_bytes: u64,
    ) -> Source {
        Source {
            key: Arc::new(ObjectKey {
                container: Some("c".into()),
                id: object.id.clone(),
                version: object.version.clone(),
            }),
            size: object.size,
            fetch: Arc::new(MemoryFetch {
                remote: remote.clone(),
                object,
            }),
            max_request_bytes,
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    /// A remote holding `a.bin` of `len` bytes, and a source for it.
    fn object(len: usize) -> (Arc<MemoryRemote>, Vec<u8>, Source) {
        let remote = Arc::new(MemoryRemote::new());
        let data = pattern(len, 7);
        let meta = remote.put("c", "a.bin", &data);
        let source = source(&remote, meta, 4 * BS);
        (remote, data, source)
    }

    #[tokio::test]
    async fn reads_at_block_boundaries_and_at_the_end() {
        let len = 3 * BS as usize + 500;
        let (remote, data, source) = object(len);
        let cache = cache(config(16));
        for (offset, size) in [
            (0, 10),
            (BS - 3, 6),
            (BS, BS),
            (2 * BS - 1, BS + 2),
            (0, len as u64),
            (len as u64 - 10, 100),
            (3 * BS, 500),
        ] {
            let got = cache.read(&source, offset, size, None).await.unwrap();
            let end = (offset + size).min(len as u64) as usize;
            assert_eq!(&got[..], &data[offset as usize..end], "{offset}+{size}");
        }
        assert!(
            cache
                .read(&source, len as u64, 10, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(remote.calls("read"), cache.stats().requests);
        assert_eq!(
            cache.stats().fetched_bytes,
            len as u64,
            "each byte fetched once"
        );
    }

    #[tokio::test]
    async fn concurrent_readers_of_one_file_share_requests() {
        let len = 8 * BS as usize;
        let (remote, data, source) = object(len);
        let cache = cache(config(16));
        let readers: Vec<_> = (0..8)
            .map(|i| {
                let cache = cache.clone();
                let source = source.clone();
                tokio::spawn(async move {
                    let offset = (i * 700) % (len as u64 - 2000);
                    (
                        offset,
                        cache.read(&source, offset, 2000, None).await.unwrap(),
                    )
                })
            })
            .collect();
        for reader in readers {
            let (offset, got) = reader.await.unwrap();
            assert_eq!(&got[..], &data[offset as usize..offset as usize + 2000]);
        }
        assert!(remote.calls("read") <= 8, "at most one request per block");
        assert!(cache.stats().fetched_bytes <= len as u64);
    }

    #[tokio::test]
    async fn random_reads_fetch_only_their_block() {
        let (remote, data, source) = object(64 * BS as usize);
        let cache = cache(config(128));
        for offset in [40 * BS + 5, 3 * BS + 100, 60 * BS, 17 * BS + 900] {
            let got = cache.read(&source, offset, 100, None).await.unwrap();
            assert_eq!(&got[..], &data[offset as usize..offset as usize + 100]);
        }
        assert_eq!(remote.calls("read"), 4);
        assert_eq!(cache.stats().fetched_bytes, 4 * BS);
    }

    #[tokio::test]
    async fn prefetch_splits_into_several_requests() {
        let (remote, data, source) = object(64 * BS as usize);
        let cache = cache(config(128));
        let got = cache
            .read(&source, 0, 100, Some(100..20 * BS))
            .await
            .unwrap();
        assert_eq!(&got[..], &data[..100]);
        // Block 0 on demand; blocks 1..20 ahead in requests of at most 4 blocks.
        for offset in (0..20 * BS).step_by(BS as usize) {
            cache.read(&source, offset, BS, None).await.unwrap();
        }
        assert_eq!(remote.calls("read"), 1 + 5);
        assert_eq!(cache.stats().fetched_bytes, 20 * BS);
    }

    #[tokio::test]
    async fn a_tiny_budget_evicts_and_never_overflows() {
        let len = 32 * BS as usize;
        let (remote, data, source) = object(len);
        let cache = cache(config(MIN_BUDGET_BLOCKS));
        for offset in (0..len as u64).step_by(300) {
            let ahead = Some(offset + 300..offset + 300 + 3 * BS);
            let got = cache.read(&source, offset, 300, ahead).await.unwrap();
            let end = (offset as usize + 300).min(len);
            assert_eq!(&got[..], &data[offset as usize..end]);
            assert!(cache.budget().used() <= cache.budget().limit());
            assert!(cache.cached_blocks() <= MIN_BUDGET_BLOCKS as usize);
        }
        let before = remote.calls("read");
        cache.read(&source, 0, 10, None).await.unwrap();
        assert_eq!(remote.calls("read"), before + 1, "block 0 was evicted");
    }

    #[tokio::test]
    async fn many_readers_under_a_tiny_budget_all_finish() {
        let len = 32 * BS as usize;
        let (_remote, data, source) = object(len);
        let cache = cache(config(MIN_BUDGET_BLOCKS));
        let readers: Vec<_> = (0..32u64)
            .map(|i| {
                let cache = cache.clone();
                let source = source.clone();
                tokio::spawn(async move { (i, cache.read(&source, i * BS, BS, None).await) })
            })
            .collect();
        for reader in readers {
            let (i, got) = reader.await.unwrap();
            let start = (i * BS) as usize;
            assert_eq!(&got.unwrap()[..], &data[start..start + BS as usize]);
        }
        assert!(cache.budget().used() <= cache.budget().limit());
    }

    #[tokio::test]
    async fn a_new_version_never_shares_blocks_with_the_old_one() {
        let remote = Arc::new(MemoryRemote::new());
        let old = remote.put("c", "a.bin", &pattern(4 * BS as usize, 1));
        let cache = cache(config(16));
        let old_source = source(&remote, old, 4 * BS);
        cache.read(&old_source, 0, 4 * BS, None).await.unwrap();
        let new_data = pattern(3 * BS as usize, 2);
        let new = remote.put("c", "a.bin", &new_data);
        let new_source = source(&remote, new, 4 * BS);
        let got = cache.read(&new_source, 0, 4 * BS, None).await.unwrap();
        assert_eq!(&got[..], &new_data[..]);
    }

    #[tokio::test]
    async fn an_object_that_changed_size_under_us_is_an_error_not_a_mix() {
        let remote = Arc::new(MemoryRemote::new());
        let old = remote.put("c", "a.bin", &pattern(4 * BS as usize, 1));
        remote.put("c", "a.bin", &pattern(2 * BS as usize, 2));
        let cache = cache(config(16));
        let stale = source(&remote, old, 4 * BS);
        let err = cache.read(&stale, 0, 4 * BS, None).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert_eq!(cache.cached_blocks(), 0);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_reported_and_retried_on_the_next_read() {
        let remote = Arc::new(MemoryRemote::new());
        let meta = remote.put("c", "a.bin", &pattern(2 * BS as usize, 1));
        remote.delete(Some("c"), &meta).await.unwrap();
        let cache = cache(config(16));
        let gone = source(&remote, meta.clone(), 4 * BS);
        let err = cache.read(&gone, 0, 10, None).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        let data = pattern(2 * BS as usize, 1);
        let again = remote.put("c", "a.bin", &data);
        let back = Source {
            key: Arc::new(ObjectKey {
                version: again.version.clone(),
                ..(*gone.key).clone()
            }),
            ..source(&remote, again, 4 * BS)
        };
        assert_eq!(
            &cache.read(&back, 0, 10, None).await.unwrap()[..],
            &data[..10]
        );
        assert_eq!(cache.budget().used(), BS, "only the block read is held");
    }

    #[tokio::test]
    async fn a_random_read_fetches_only_the_small_units_it_touches() {
        let (remote, data, source) = object(8 * BS as usize);
        let cache = cache(config(16));
        let unit = BS / 4;
        // Inside one unit, then across a unit boundary, then across a block boundary.
        for (offset, len, units) in [
            (BS + 10, 100, 1),
            (2 * BS + unit - 5, 10, 2),
            (4 * BS - 5, 10, 2),
        ] {
            let before = cache.stats();
            let got = cache.read_random(&source, offset, len).await.unwrap();
            assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
            let after = cache.stats();
            assert_eq!(after.requests - before.requests, 1, "{offset}: one request");
            assert_eq!(
                after.fetched_bytes - before.fetched_bytes,
                units * unit,
                "{offset}"
            );
        }
        let before = remote.calls("read");
        let got = cache.read_random(&source, BS + 50, 20).await.unwrap();
        assert_eq!(&got[..], &data[(BS + 50) as usize..(BS + 70) as usize]);
        assert_eq!(
            remote.calls("read"),
            before,
            "a cached unit serves it again"
        );
    }

    #[tokio::test]
    async fn a_random_read_uses_a_whole_block_already_known() {
        let (remote, data, source) = object(8 * BS as usize);
        let cache = cache(config(16));
        cache.read(&source, 3 * BS, 10, None).await.unwrap();
        let before = remote.calls("read");
        let got = cache.read_random(&source, 3 * BS + 700, 50).await.unwrap();
        assert_eq!(
            &got[..],
            &data[(3 * BS + 700) as usize..(3 * BS + 750) as usize]
        );
        assert_eq!(remote.calls("read"), before, "the cached block serves it");
        // A sequential read after random ones fetches whole blocks, whatever units exist.
        cache.read_random(&source, 5 * BS, 10).await.unwrap();
        let got = cache.read(&source, 5 * BS, BS, None).await.unwrap();
        assert_eq!(&got[..], &data[(5 * BS) as usize..(6 * BS) as usize]);
        assert!(cache.budget().used() <= cache.budget().limit());
    }

    #[tokio::test]
    async fn evicted_blocks_come_back_from_the_disk_tier() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(MIN_BUDGET_BLOCKS);
        config.disk = Some((dir.path().join("blocks"), 64 * BS));
        let (remote, data, source) = object(16 * BS as usize);
        let cache = cache(config);
        cache.read(&source, 0, 10, None).await.unwrap();
        let first = BlockKey {
            object: source.key.clone(),
            index: 0,
            unit: BS,
        };
        let disk = cache.disk.clone().unwrap();
        for _ in 0..1000 {
            if disk.contains(&first) {
                break;
            }
            tokio::task::spawn_blocking(|| ()).await.unwrap();
        }
        assert!(disk.contains(&first), "block 0 reached the disk tier");
        for index in 1..8 {
            cache.read(&source, index * BS, 10, None).await.unwrap();
        }
        let before = remote.calls("read");
        let got = cache.read(&source, 5, 10, None).await.unwrap();
        assert_eq!(&got[..], &data[5..15]);
        assert_eq!(remote.calls("read"), before, "served from disk");
        assert_eq!(cache.stats().disk_hits, 1);
    }
}
