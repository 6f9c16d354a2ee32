//! Requests, errors and retries of this process, by kind. One mount per process, so these are
//! the mount's; [`crate::remote::http::RetryConfig::run`] counts every attempt through it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::remote::ErrorKind;

/// The counters of one process (see [`requests`]).
#[derive(Debug, Default)]
pub struct Requests {
    attempts: AtomicU64,
    retries: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// What [`Requests`] counted so far, as the status report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    /// Attempts sent (a retry is one more).
    pub requests: u64,
    /// Attempts that failed, by kind of failure (`Unavailable`, `RateLimited`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Failed attempts that were tried again.
    pub retries: u64,
}

impl Requests {
    /// One attempt is being sent.
    pub fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt failed with `kind`; `retried` when it is tried again.
    pub fn failed(&self, kind: ErrorKind, retried: bool) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(format!("{kind:?}"))
            .or_default() += 1;
        if retried {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            requests: self.attempts.load(Ordering::Relaxed),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// This process's counters.
pub fn requests() -> &'static Requests {
    static REQUESTS: std::sync::OnceLock<Requests> = std::sync::OnceLock::new();
    REQUESTS.get_or_init(Requests::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_retries_apart() {
        let counts = Requests::default();
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
}
