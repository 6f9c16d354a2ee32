//! What the client layer counts for `sessionfs status`: requests, retries and errors by kind
//! ([`RequestStats`]).
//!
//! A handle, one per mount: `run::mount` makes it and hands the same one to the client
//! ([`crate::remote::http::RetryConfig::requests`]) and the status report. It lives here,
//! below `status`, because the layer that produces the numbers should not depend on the one
//! that shows them, and it is injected rather than process-wide so two mounts (or two clients
//! in one test process) never count into each other's report.
//!
//! Invariants: a clone shares its original's counts (an `Arc` inside), while `Default` makes a
//! fresh, unshared instance, so a client built without one counts only for itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ErrorKind;

/// Requests, errors and retries of one client (one mount), by kind; cheap to clone, and a
/// clone counts into the same numbers. [`crate::remote::http::RetryConfig::run`] counts every
/// attempt through it.
#[derive(Clone, Debug, Default)]
pub struct RequestStats(Arc<RequestCounters>);

#[derive(Debug, Default)]
struct RequestCounters {
    attempts: AtomicU64,
    retries: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// What [`RequestStats`] counted so far, as the status report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    /// Attempts sent (a retry is one more).
    pub requests: u64,
    /// Attempts that failed, by kind of failure (`Unavailable`, `RateLimited`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Failed attempts that were tried again.
    pub retries: u64,
}

impl RequestStats {
    /// One attempt is being sent.
    pub fn attempt(&self) {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt failed with `kind`; `retried` when it is tried again.
    pub fn failed(&self, kind: ErrorKind, retried: bool) {
        *self
            .0
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(format!("{kind:?}"))
            .or_default() += 1;
        if retried {
            self.0.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            requests: self.0.attempts.load(Ordering::Relaxed),
            errors: self
                .0
                .errors
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            retries: self.0.retries.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_retries_apart() {
        let counts = RequestStats::default();
        counts.attempt();
        counts.attempt();
        counts.attempt();
        counts.failed(ErrorKind::Unavailable, true);
        counts.failed(ErrorKind::Unavailable, true);
        counts.failed(ErrorKind::TooLarge, false);
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.requests, 3);
        assert_eq!(snapshot.retries, 2);
        assert_eq!(snapshot.errors["Unavailable"], 2);
        assert_eq!(snapshot.errors["TooLarge"], 1);
    }

    #[test]
    fn request_stats_clones_share_counts_and_defaults_do_not() {
        let mine = RequestStats::default();
        let shared = mine.clone();
        let other = RequestStats::default();
        shared.attempt();
        shared.failed(ErrorKind::Unavailable, true);
        assert_eq!(mine.snapshot().requests, 1);
        assert_eq!(mine.snapshot().retries, 1);
        assert_eq!(other.snapshot(), RequestCounts::default());
    }
}
