//! The block cache as the memory uploads are paid from.
//!
//! The client layer reserves the buffers of an upload's parts through
//! [`sessionfs_remote::budget::UploadMemory`] and never names the cache. The mount hands it its
//! [`BlockCache`], so upload buffers come out of the one memory budget (`--memory-limit`) like
//! cached blocks do, and the least recently used cached blocks are evicted to make room for them
//! ([`BlockCache::try_reserve`]). A grant is a plain [`Reservation`]: dropping it gives the bytes
//! back and wakes readers waiting for memory.

use super::blocks::BlockCache;
use super::memory::Reservation;
use sessionfs_remote::budget::{MemoryHold, UploadMemory};

impl UploadMemory for BlockCache {
    fn try_reserve(&self, bytes: u64) -> Option<Box<dyn MemoryHold>> {
        BlockCache::try_reserve(self, bytes).map(|held| Box::new(held) as Box<dyn MemoryHold>)
    }
}

impl MemoryHold for Reservation {
    fn bytes(&self) -> u64 {
        Reservation::bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::blocks::tests::source;
    use crate::cache::{CacheConfig, MemoryBudget};
    use sessionfs_remote::memory::MemoryRemote;
    use sessionfs_remote::multipart::PART_BUFFER_BYTES;
    use sessionfs_remote::{Remote, UploadSource};

    const BS: u64 = 1024;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_beyond_the_first_wait_for_room_in_the_block_caches_budget() {
        let remote = MemoryRemote::new().with_parts(1000, 1, 4);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        let data: Vec<u8> = (0..6000).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut source = UploadSource::new(&path, data.len() as u64);
        let config = CacheConfig::default();
        let budget = MemoryBudget::new(2 * PART_BUFFER_BYTES);
        let cache = Arc::new(BlockCache::new(config, budget.clone()).unwrap());
        source.memory = Some(cache);
        remote.upload(Some("c"), "f", &source).await.unwrap();
        assert_eq!(remote.get("c", "f").unwrap(), data);
        assert_eq!(
            remote.part_log().max_in_flight,
            2,
            "room for two parts' buffers"
        );
        assert_eq!(budget.used(), 0, "every reservation went back");
    }

    #[tokio::test]
    async fn an_upload_reservation_evicts_cached_blocks_and_goes_back_on_drop() {
        let remote = Arc::new(MemoryRemote::new());
        let object = remote.put("c", "a.bin", &[7u8; 8 * BS as usize]);
        let config = CacheConfig {
            block_size: BS,
            memory_limit: 8 * BS,
            max_request_bytes: 4 * BS,
            max_requests: 4,
            max_window: 8 * BS,
            random_read_bytes: 0,
            disk: None,
        };
        let budget = MemoryBudget::new(config.memory_limit);
        let cache = Arc::new(BlockCache::new(config, budget.clone()).unwrap());
        let source = source(&remote, object, 4 * BS);
        cache.read(&source, 0, 8 * BS, None).await.unwrap();
        assert_eq!((cache.cached_blocks(), budget.used()), (8, 8 * BS));

        let memory: &dyn UploadMemory = &*cache;
        let held = memory.try_reserve(3 * BS).expect("cached blocks make room");
        assert_eq!(held.bytes(), 3 * BS);
        assert_eq!(cache.cached_blocks(), 5, "the fewest blocks evicted");
        assert_eq!(budget.used(), 8 * BS, "never past the limit");
        drop(held);
        assert_eq!(budget.used(), 5 * BS, "the upload's bytes went back");
        assert!(
            memory.try_reserve(9 * BS).is_none(),
            "nothing past the limit"
        );
    }
}
