//! Turns in order of position: readers of one key go one at a time, lowest offset first.
//!
//! A server that ignores `Range` sends every object from byte 0, so the Mix backend keeps one
//! download open and lets the block reads of an object continue it in turn. The cache starts
//! those reads in parallel and they reach the backend in any order; a plain lock let a read
//! far ahead go first, the download skipped past the bytes the others wanted, and they had to
//! download the object again from byte 0. Here a read waits while a read of the same object
//! at a lower offset is waiting, so the download moves forward through the reads in order.
//!
//! Parallel reads do not all arrive at once, so the lowest waiting read is not always the next
//! one. The holder of a turn says where the download stands when it is done
//! ([`Turn::continue_at`]); a read at exactly that offset goes at once, any other waits up to
//! [`GRACE`] for that read to arrive.

use sessionfs_io::lock::Locked;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a read that would leave a gap waits for the read that continues the download.
pub const GRACE: Duration = Duration::from_millis(3);

/// Waiting readers of one key and whether one of them holds the turn.
#[derive(Debug, Default)]
struct Queue {
    /// `(offset, ticket)` of every waiting reader; the ticket tells equal offsets apart.
    waiting: BTreeSet<(u64, u64)>,
    busy: bool,
    /// Where the last turn left the download; reads there go first.
    next: Option<u64>,
}

#[derive(Debug, Default)]
struct Line {
    queue: Mutex<Queue>,
    changed: Notify,
}

/// Keys whose queue (and where their download stands) is remembered.
const LINES: usize = 64;

/// Per-key queues of readers, served one at a time in order of offset.
#[derive(Debug)]
pub struct OrderedTurns {
    /// The most recently read keys; a key pushed out while a reader holds its line simply
    /// gets a new one.
    lines: Mutex<lru::LruCache<String, Arc<Line>>>,
    tickets: AtomicU64,
}

impl Default for OrderedTurns {
    fn default() -> Self {
        Self {
            lines: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(LINES).expect("not zero"),
            )),
            tickets: AtomicU64::new(0),
        }
    }
}

/// Holds the turn of one key; the next reader goes when it drops.
#[derive(Debug)]
pub struct Turn {
    line: Arc<Line>,
    next: Option<u64>,
}

impl OrderedTurns {
    /// Waits for the turn of `key` for a read at `offset`: until no reader of `key` holds it,
    /// none waits at a lower offset, and either the read continues where the last one left
    /// the download or [`GRACE`] has passed.
    pub async fn take(&self, key: &str, offset: u64) -> Turn {
        let line = {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            lines
                .get_or_insert(key.to_string(), Default::default)
                .clone()
        };
        let me = (offset, self.tickets.fetch_add(1, Ordering::Relaxed));
        line.queue.locked().waiting.insert(me);
        // A reader dropped while it waits leaves the queue, so it never blocks the others.
        let waiting = Waiting { line, me };
        let patience = Instant::now() + GRACE;
        loop {
            // Registered before looking, so a turn given back meanwhile still wakes us.
            let changed = waiting.line.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let patient = Instant::now() < patience;
            {
                let mut queue = waiting.line.queue.locked();
                let expected = queue.next.is_none_or(|next| next == offset);
                if !queue.busy && queue.waiting.first() == Some(&me) && (expected || !patient) {
                    queue.waiting.remove(&me);
                    queue.busy = true;
                    break;
                }
            }
            if patient {
                tokio::select! {
                    () = &mut changed => {}
                    () = tokio::time::sleep_until(patience) => {}
                }
            } else {
                changed.await;
            }
        }
        Turn {
            line: waiting.line.clone(),
            next: None,
        }
    }
}

/// A reader's place in the queue while it waits.
struct Waiting {
    line: Arc<Line>,
    me: (u64, u64),
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let left = self.line.queue.locked().waiting.remove(&self.me);
        if left {
            self.line.changed.notify_waiters();
        }
    }
}

impl Turn {
    /// The download now stands at `offset`: the read there is the one to go next.
    pub fn continue_at(&mut self, offset: u64) {
        self.next = Some(offset);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut queue = self.line.queue.locked();
        queue.busy = false;
        queue.next = self.next;
        drop(queue);
        self.line.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Yields until `condition` holds; fails after a bounded number of tries instead of
    /// hanging the test.
    async fn yield_until(what: &str, condition: impl Fn() -> bool) {
        for _ in 0..1_000_000 {
            if condition() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("gave up waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_readers_go_in_order_of_offset() {
        let turns = Arc::new(OrderedTurns::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut first = turns.take("k", 0).await;
        first.continue_at(10);
        let mut tasks = Vec::new();
        for offset in [30, 10, 20, 10] {
            let (turns, order) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = turns.take("k", offset).await;
                order.locked().push(offset);
            }));
        }
        // Everyone is queued behind the first reader before it lets go.
        let line = turns.lines.locked().get("k").unwrap().clone();
        yield_until("four queued readers", || {
            line.queue.locked().waiting.len() == 4
        })
        .await;
        let other_key = turns.take("other", 99).await;
        drop(other_key);
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.locked(), vec![10, 10, 20, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_would_leave_a_gap_waits_for_the_one_that_continues() {
        let turns = Arc::new(OrderedTurns::default());
        let mut first = turns.take("k", 0).await;
        first.continue_at(10);
        drop(first);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (t, o) = (turns.clone(), order.clone());
        let ahead = tokio::spawn(async move {
            let mut turn = t.take("k", 30).await;
            o.locked().push(30);
            turn.continue_at(40);
        });
        tokio::time::sleep(GRACE / 3).await;
        {
            let mut turn = turns.take("k", 10).await;
            order.locked().push(10);
            turn.continue_at(20);
        }
        ahead.await.unwrap();
        assert_eq!(*order.locked(), vec![10, 30]);
        // Nobody continues at 40: a read elsewhere waits out the grace period, then goes.
        let acquired = Arc::new(AtomicBool::new(false));
        let (t, a) = (turns.clone(), acquired.clone());
        let far = tokio::spawn(async move {
            drop(t.take("k", 100).await);
            a.store(true, Ordering::SeqCst);
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !acquired.load(Ordering::SeqCst),
            "it waits while the continuation may still come"
        );
        far.await.unwrap();
        assert!(acquired.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_dropped_while_it_waits_leaves_the_queue() {
        let turns = Arc::new(OrderedTurns::default());
        let held = turns.take("k", 0).await;
        let t = turns.clone();
        let low = tokio::spawn(async move { drop(t.take("k", 5).await) });
        let line = turns.lines.locked().get("k").unwrap().clone();
        yield_until("a queued reader", || {
            !line.queue.locked().waiting.is_empty()
        })
        .await;
        low.abort();
        assert!(low.await.unwrap_err().is_cancelled());
        assert!(line.queue.locked().waiting.is_empty());
        drop(held);
        drop(turns.take("k", 50).await);
    }
}
