//! Caching on the read path: fixed-size blocks in one LRU under one global memory budget, an
//! optional disk tier, and the per-handle prefetch window.
//!
//! Design:
//! - Remote objects are read in blocks of [`CacheConfig::block_size`] bytes. A block is keyed by
//!   [`BlockKey`] = (container, object id, version, index), so when another client changes an
//!   object its new version gets new keys and old and new bytes can never be mixed; old blocks
//!   simply age out of the LRU.
//! - [`memory::MemoryBudget`] is the one budget for every buffer (`--memory-limit`). Cached
//!   blocks and blocks being fetched hold [`memory::Reservation`]s; fetching evicts the least
//!   recently used blocks to make room, and a reader whose blocks cannot fit waits for memory
//!   instead of growing past the limit. Prefetching never waits: without room it is skipped.
//! - [`blocks::BlockCache`] fetches missing blocks with ranged GETs through a [`Fetch`]; runs of
//!   consecutive missing blocks go out as one request of up to
//!   [`CacheConfig::max_request_bytes`], several requests in flight (bounded by
//!   [`CacheConfig::max_requests`]). A block being fetched is registered once, so concurrent
//!   readers of one file share the request.
//! - [`prefetch::Prefetcher`] (one per handle) turns a sequential stream into a window that
//!   doubles up to a cap; random reads fetch only the blocks asked for.
//! - Uploads reserve their parts' buffers from the same budget through the client layer's
//!   [`sessionfs_remote::budget::UploadMemory`], which [`BlockCache`] implements (evicting cached
//!   blocks to make room, never waiting; see `upload_memory`).
//! - [`disk::DiskCache`] keeps a copy of fetched blocks on local disk under a size cap when
//!   `--cache-size` is given; a block evicted from memory is read back from there.
//!
//! This module never speaks HTTP: it calls a [`Fetch`], which the filesystem core builds from
//! its `Remote`.

pub mod blocks;
pub mod disk;
pub mod memory;
pub mod prefetch;
mod upload_memory;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use sessionfs_remote::RemoteResult;

pub use blocks::{BlockCache, CacheStats};
pub use memory::{MemoryBudget, Reservation};
pub use prefetch::Prefetcher;

/// Default block size: large enough that a sequential stream needs few requests, small enough
/// that a random 4 KiB read costs one quick GET.
pub const DEFAULT_BLOCK_SIZE_BYTES: u64 = 1 << 20;
/// Default `--memory-limit`.
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 512 << 20;
/// Largest single ranged GET a prefetch issues: with a window of 64 MiB (a quarter of a
/// 256 MiB budget) this keeps 12 to 16 requests in flight, each connection's share of a link
/// that caps every connection (8 MiB requests kept only 4 to 8 busy).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 4 << 20;
/// Ranged GETs in flight at once, for the whole mount.
pub const DEFAULT_MAX_REQUESTS: usize = 16;
/// Largest prefetch window of one handle.
pub const DEFAULT_MAX_WINDOW_BYTES: u64 = 128 << 20;
/// What a random read fetches when no block around it is cached or on its way: over a link
/// with a round trip per request, a 4 KiB read then costs the round trip and 64 KiB instead
/// of a whole block (at 50 MiB/s a 1 MiB block adds 20 ms to each random read).
pub const DEFAULT_RANDOM_READ_BYTES: u64 = 64 << 10;
/// Fewest blocks the memory limit must hold, so a read spanning two blocks always fits next to
/// blocks in flight.
pub const MIN_BUDGET_BLOCKS: u64 = 4;

/// Settings of the read cache.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Bytes per block.
    pub block_size: u64,
    /// The global memory budget (`--memory-limit`), shared with prefetch and write buffers.
    pub memory_limit: u64,
    /// Largest ranged GET.
    pub max_request_bytes: u64,
    /// Ranged GETs in flight at once.
    pub max_requests: usize,
    /// Largest prefetch window of one handle (also capped by a quarter of the budget).
    pub max_window: u64,
    /// The unit a random read fetches; 0, or a unit no smaller than a block, makes random
    /// reads fetch whole blocks.
    pub random_read_bytes: u64,
    /// The disk tier: its directory and size cap; `None` keeps blocks in memory only.
    pub disk: Option<(PathBuf, u64)>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE_BYTES,
            memory_limit: DEFAULT_MEMORY_LIMIT_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_window: DEFAULT_MAX_WINDOW_BYTES,
            random_read_bytes: DEFAULT_RANDOM_READ_BYTES,
            disk: None,
        }
    }
}

impl CacheConfig {
    /// The prefetch window cap: the configured one, but never more than a quarter of the
    /// budget, so one stream cannot evict everything else.
    pub fn window_cap(&self) -> u64 {
        self.max_window
            .min(self.memory_limit / 4)
            .max(self.block_size)
    }
}

/// Which object (and which version of it) cached bytes belong to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// The container, on APIs that have them.
    pub container: Option<String>,
    /// The object's id.
    pub id: String,
    /// The object's version; a new version never shares blocks with an old one.
    pub version: String,
}

/// One block of one object version: a whole block, or the smaller unit a random read fetches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The object version.
    pub object: Arc<ObjectKey>,
    /// Unit number: bytes `index * unit ..`.
    pub index: u64,
    /// Bytes per unit: the block size, or [`CacheConfig::random_read_bytes`].
    pub unit: u64,
}

/// Reads byte ranges of one object from wherever it lives (the filesystem core wraps
/// `Remote::read`). The answer may be shorter than asked only at the end of the object.
pub trait Fetch: Send + Sync + 'static {
    /// Fetches `range`.
    fn fetch(&self, range: Range<u64>) -> BoxFuture<'static, RemoteResult<Bytes>>;
}

/// An object to read through the cache: its key, its size, and how to fetch its bytes.
#[derive(Clone)]
pub struct Source {
    /// Object and version.
    pub key: Arc<ObjectKey>,
    /// Size in bytes of this version.
    pub size: u64,
    /// How to fetch missing bytes.
    pub fetch: Arc<dyn Fetch>,
    /// Largest single request for this object (a server without Range gets larger ones).
    pub max_request_bytes: u64,
}
