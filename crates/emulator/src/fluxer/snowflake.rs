//! Snowflake ids on Fluxer's epoch (2015-01-01T00:00:00Z): milliseconds since the epoch in the
//! top 42 bits, then 22 bits of sequence, written as decimal strings on the wire.
//!
//! Invariant: ids handed out by one [`Snowflakes`] strictly increase, also across restarts
//! (the generator starts above the largest stored id), so sorting by id is sorting by creation.

use std::sync::Mutex;

/// Fluxer's epoch in unix milliseconds.
pub(super) const FLUXER_EPOCH_MS: i64 = 1_420_070_400_000;
/// Bits below the timestamp.
const TIMESTAMP_SHIFT: u32 = 22;

/// Hands out increasing snowflakes.
#[derive(Debug, Default)]
pub(super) struct Snowflakes {
    /// The last id handed out or seen in the store; held only to compute the next one.
    last: Mutex<u64>,
}

impl Snowflakes {
    /// A fresh id for something created at `now_ms`.
    pub(super) fn next(&self, now_ms: i64) -> u64 {
        let stamp = (now_ms - FLUXER_EPOCH_MS).max(0) as u64;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (stamp << TIMESTAMP_SHIFT).max(*last + 1);
        *last
    }

    /// Makes every later id larger than `id`.
    pub(super) fn observe(&self, id: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(id);
    }
}

/// The unix milliseconds a snowflake was created at.
pub(super) fn timestamp_ms(id: u64) -> i64 {
    (id >> TIMESTAMP_SHIFT) as i64 + FLUXER_EPOCH_MS
}

/// A snowflake from its decimal string; `None` for anything else.
pub(super) fn parse(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_carry_their_time() {
        let ids = Snowflakes::default();
        let now = 1_771_372_800_000; // 2026-02-18
        let a = ids.next(now);
        let b = ids.next(now);
        assert!(b > a);
        assert_eq!(timestamp_ms(a), now);
        ids.observe(b + 1000);
        assert!(ids.next(now) > b + 1000);
        assert_eq!(parse(&a.to_string()), Some(a));
        assert_eq!(parse("12a"), None);
        assert_eq!(parse(""), None);
    }
}
