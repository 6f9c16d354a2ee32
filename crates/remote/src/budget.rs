//! The memory an upload's buffers are paid from, as the client layer sees it.
//!
//! A chunked upload holds read buffers for every part in flight, and those bytes must come
//! out of the mount's one memory budget (`--memory-limit`), or a wide upload could grow the
//! process past it. The budget belongs to the core (its block cache, which evicts cached blocks
//! to make room), and the client layer sits below the core: so the driver asks through
//! [`UploadMemory`] and holds what it gets as a [`MemoryHold`], and never names the cache.
//!
//! Contract: an implementation grants bytes only while they fit ([`UploadMemory::try_reserve`]
//! never waits and never over-commits); every byte a hold was granted goes back when the hold
//! is dropped, exactly once. Waiting for room is the caller's business (the multipart driver
//! waits for one of its own parts to finish, and lets its only part in flight go without a
//! hold, so an upload always makes progress).

use std::fmt;

/// Where the buffers of an upload are reserved: the mount's memory budget.
pub trait UploadMemory: Send + Sync + fmt::Debug {
    /// Reserves `bytes` if they fit now (the implementation may free memory of its own to make
    /// room, as the block cache evicts blocks); `None` when they do not. Never waits.
    fn try_reserve(&self, bytes: u64) -> Option<Box<dyn MemoryHold>>;
}

/// Bytes granted by an [`UploadMemory`]: held for as long as the buffers they pay for live,
/// and given back (waking whoever waits for memory) when dropped.
pub trait MemoryHold: Send + Sync + fmt::Debug {
    /// How many bytes this hold keeps reserved.
    fn bytes(&self) -> u64;
}

#[cfg(test)]
pub(crate) mod testing {
    //! A budget of its own for the client layer's tests: a limit, the bytes held now and the
    //! most ever held at once.

    use std::sync::{Arc, Mutex};

    use sessionfs_io::lock::Locked;

    use super::{MemoryHold, UploadMemory};

    /// A fixed budget that counts what is held.
    #[derive(Clone, Debug)]
    pub(crate) struct TestMemory {
        limit: u64,
        /// (held now, most held at once).
        held: Arc<Mutex<(u64, u64)>>,
    }

    impl TestMemory {
        /// A budget of `limit` bytes.
        pub(crate) fn new(limit: u64) -> Self {
            Self {
                limit,
                held: Arc::new(Mutex::new((0, 0))),
            }
        }

        /// Bytes held right now.
        pub(crate) fn used(&self) -> u64 {
            self.held.locked().0
        }

        /// The most bytes ever held at once.
        pub(crate) fn peak(&self) -> u64 {
            self.held.locked().1
        }
    }

    impl UploadMemory for TestMemory {
        fn try_reserve(&self, bytes: u64) -> Option<Box<dyn MemoryHold>> {
            let mut held = self.held.locked();
            if held.0 + bytes > self.limit {
                return None;
            }
            held.0 += bytes;
            held.1 = held.1.max(held.0);
            Some(Box::new(TestHold {
                memory: self.clone(),
                bytes,
            }))
        }
    }

    #[derive(Debug)]
    struct TestHold {
        memory: TestMemory,
        bytes: u64,
    }

    impl MemoryHold for TestHold {
        fn bytes(&self) -> u64 {
            self.bytes
        }
    }

    impl Drop for TestHold {
        fn drop(&mut self) {
            self.memory.held.locked().0 -= self.bytes;
        }
    }

    #[test]
    fn holds_never_exceed_the_limit_and_return_on_drop() {
        let memory = TestMemory::new(100);
        let a = memory.try_reserve(60).unwrap();
        assert!(memory.try_reserve(41).is_none());
        let b = memory.try_reserve(40).unwrap();
        assert_eq!((a.bytes(), b.bytes()), (60, 40));
        assert_eq!(memory.used(), 100);
        drop(a);
        drop(b);
        assert_eq!((memory.used(), memory.peak()), (0, 100));
    }
}
