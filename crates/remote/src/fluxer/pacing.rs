//! Pacing below Fluxer's rate limits, so normal use never meets a 429 (and never the global
//! limit, which on the real service revokes a session token).
//!
//! Two rules, checked before every API request:
//! - global: at most [`GLOBAL_PER_SECOND`] requests per second after a burst of [`BURST`]
//!   (the server allows 50 per second);
//! - per bucket (a route and channel, as the server counts them): the last answer's
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset`, less what has been sent since; at zero,
//!   wait for the reset. A bucket whose state is unknown (first use, or after its reset) lets
//!   one request through and holds the others until its answer tells the new state. A 429
//!   carries the same headers, so the retry waits for the reset here; a global 429 holds
//!   every request until its reset.
//!
//! Invariants: the state lock is never held across an await; a [`Permit`] is counted in its
//! bucket until it is dropped, answered or not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::sync::Notify;

/// Requests per second this client allows itself overall (the server's limit is 50).
pub(super) const GLOBAL_PER_SECOND: u32 = 40;
/// Requests that may go at once after a quiet spell.
pub(super) const BURST: u32 = 10;
/// Slack added to a bucket's reset time (the header is in whole seconds, rounded up).
const RESET_MARGIN: Duration = Duration::from_millis(50);
/// Longest wait for a probing request's answer before looking again.
const PROBE_WAIT: Duration = Duration::from_millis(200);
/// The longest wait a server's header can impose: a reset or `retry-after` further off is read
/// as this, and the next answer says again (`inf`, `1e400` and `NaN` are read as no header).
const MAX_SERVER_WAIT: Duration = Duration::from_secs(300);

/// A bucket: the server's route name and the channel it counts per.
type Key = (&'static str, String);

/// What is known of one bucket.
#[derive(Clone, Copy, Debug, Default)]
enum Quota {
    /// Nothing yet: one request goes and its answer tells.
    #[default]
    Unknown,
    /// The server sends no limit for it (rate limits off).
    Unlimited,
    /// This many requests may still go before `reset`.
    Known { remaining: u32, reset: Instant },
}

#[derive(Debug, Default)]
struct Bucket {
    quota: Quota,
    /// Requests sent and not yet answered.
    in_flight: u32,
}

#[derive(Debug)]
struct State {
    /// The global limit's theoretical arrival time (GCRA).
    tat: Instant,
    /// Set by a global 429: nothing goes before this.
    held_until: Option<Instant>,
    buckets: HashMap<Key, Bucket>,
}

/// Why a request must wait.
enum Wait {
    Until(Instant),
    /// The bucket's state is being learnt by a request in flight.
    Probe,
}

/// The pacer of one client.
#[derive(Debug)]
pub(super) struct Pacer {
    state: Mutex<State>,
    answered: Notify,
}

/// Leave to send one request in `key`'s bucket; counted there until dropped.
pub(super) struct Permit<'a> {
    pacer: &'a Pacer,
    key: Key,
}

impl Pacer {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                tat: Instant::now(),
                held_until: None,
                buckets: HashMap::new(),
            }),
            answered: Notify::new(),
        }
    }

    /// The buckets known and spent, and a global hold, as `sessionfs status` shows them.
    pub(super) fn state(&self) -> crate::RateLimitState {
        let state = self.lock();
        let now = Instant::now();
        let mut shown = crate::RateLimitState {
            global_hold_ms: state
                .held_until
                .filter(|until| *until > now)
                .map(|until| (until - now).as_millis() as u64),
            ..Default::default()
        };
        for bucket in state.buckets.values() {
            if let Quota::Known { remaining, reset } = bucket.quota {
                shown.buckets += 1;
                if remaining <= bucket.in_flight && reset > now {
                    shown.exhausted += 1;
                }
            }
        }
        shown
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a request may go in bucket `route` of `channel`.
    pub(super) async fn acquire(&self, route: &'static str, channel: &str) -> Permit<'_> {
        let key = (route, channel.to_owned());
        loop {
            // Made before the check, so an answer arriving in between still wakes us.
            let answered = self.answered.notified();
            let wait = self.lock().take(&key, Instant::now());
            match wait {
                Ok(()) => return Permit { pacer: self, key },
                Err(Wait::Until(when)) => tokio::time::sleep_until(when.into()).await,
                Err(Wait::Probe) => {
                    let _ = tokio::time::timeout(PROBE_WAIT, answered).await;
                }
            }
        }
    }

    /// Learns the bucket's state from an answer to a request sent with `permit`.
    pub(super) fn observe(&self, permit: &Permit<'_>, status: StatusCode, headers: &HeaderMap) {
        // `inf`, `1e400` and `NaN` parse as f64 but say nothing: such a header is no header.
        let number = |name: &str| -> Option<f64> {
            let value: f64 = headers.get(name)?.to_str().ok()?.parse().ok()?;
            value.is_finite().then_some(value)
        };
        let now = Instant::now();
        let reset = number("x-ratelimit-reset").map(|unix| instant_of_unix(unix, now));
        let retry_after = number("retry-after").map(|s| now + server_wait(s));
        let global = headers
            .get("x-ratelimit-global")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let mut state = self.lock();
        if status == StatusCode::TOO_MANY_REQUESTS && global {
            let until = reset
                .or(retry_after)
                .unwrap_or(now + Duration::from_secs(1));
            state.held_until = Some(state.held_until.map_or(until, |t| t.max(until)));
        } else if let Some(bucket) = state.buckets.get_mut(&permit.key) {
            let remaining = number("x-ratelimit-remaining").map(|r| r as u32);
            bucket.quota = match (remaining, reset.or(retry_after)) {
                (Some(remaining), Some(reset)) => {
                    // Requests still in flight may not be counted in this answer yet.
                    let others = bucket.in_flight.saturating_sub(1);
                    let remaining = remaining.saturating_sub(others);
                    let remaining = match bucket.quota {
                        Quota::Known {
                            remaining: before,
                            reset: same,
                        } if same == reset => before.min(remaining),
                        _ => remaining,
                    };
                    Quota::Known { remaining, reset }
                }
                (None, Some(reset)) if status == StatusCode::TOO_MANY_REQUESTS => Quota::Known {
                    remaining: 0,
                    reset,
                },
                _ if status.is_success() => Quota::Unlimited,
                _ => bucket.quota,
            };
        }
        drop(state);
        self.answered.notify_waiters();
    }
}

impl State {
    /// Takes a place for one request in `key`'s bucket and in the global limit, or says how
    /// long to wait.
    fn take(&mut self, key: &Key, now: Instant) -> Result<(), Wait> {
        let State {
            tat,
            held_until,
            buckets,
        } = self;
        if let Some(until) = *held_until {
            if until > now {
                return Err(Wait::Until(until));
            }
            *held_until = None;
        }
        let bucket = buckets.entry(key.clone()).or_default();
        if let Quota::Known { reset, .. } = bucket.quota
            && now >= reset
        {
            bucket.quota = Quota::Unknown;
        }
        match bucket.quota {
            Quota::Known {
                remaining: 0,
                reset,
            } => return Err(Wait::Until(reset)),
            Quota::Unknown if bucket.in_flight > 0 => return Err(Wait::Probe),
            _ => {}
        }
        let interval = Duration::from_secs(1) / GLOBAL_PER_SECOND;
        let tolerance = interval * (BURST - 1);
        let next = (*tat).max(now);
        if next > now + tolerance {
            return Err(Wait::Until(next - tolerance));
        }
        *tat = next + interval;
        if let Quota::Known { remaining, .. } = &mut bucket.quota {
            *remaining -= 1;
        }
        bucket.in_flight += 1;
        Ok(())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.pacer.lock();
        if let Some(bucket) = state.buckets.get_mut(&self.key) {
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
        }
        drop(state);
        self.pacer.answered.notify_waiters();
    }
}

/// The instant of a unix time in seconds, plus [`RESET_MARGIN`], at most [`MAX_SERVER_WAIT`]
/// ahead.
fn instant_of_unix(unix_seconds: f64, now: Instant) -> Instant {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    now + server_wait(unix_seconds - since_epoch.as_secs_f64()) + RESET_MARGIN
}

/// A wait of `seconds` from a server's header, within `0..=MAX_SERVER_WAIT` whatever the header
/// held (negative, NaN, `inf`, `1e400`).
fn server_wait(seconds: f64) -> Duration {
    match seconds {
        s if s.is_nan() || s <= 0.0 => Duration::ZERO,
        s if s >= MAX_SERVER_WAIT.as_secs_f64() => MAX_SERVER_WAIT,
        s => Duration::from_secs_f64(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(remaining: u32, reset_in: u64) -> HeaderMap {
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + reset_in;
        let mut map = HeaderMap::new();
        map.insert("x-ratelimit-limit", HeaderValue::from(20));
        map.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        map.insert("x-ratelimit-reset", HeaderValue::from(reset));
        map
    }

    #[test]
    fn an_unknown_bucket_lets_one_request_probe() {
        let mut state = Pacer::new().state.into_inner().unwrap();
        let key = ("message_create", "1".to_owned());
        let now = Instant::now();
        assert!(state.take(&key, now).is_ok());
        assert!(matches!(state.take(&key, now), Err(Wait::Probe)));
        assert!(
            state.take(&("message_create", "2".into()), now).is_ok(),
            "buckets are per channel"
        );
    }

    #[tokio::test]
    async fn a_spent_bucket_waits_for_its_reset() {
        let pacer = Pacer::new();
        let permit = pacer.acquire("message_create", "1").await;
        pacer.observe(&permit, StatusCode::OK, &headers(1, 30));
        drop(permit);
        assert_eq!(pacer.state().exhausted, 0, "one request left");
        let permit = pacer.acquire("message_create", "1").await;
        drop(permit);
        let shown = pacer.state();
        assert_eq!(
            (shown.buckets, shown.exhausted),
            (1, 1),
            "as status shows it"
        );
        assert_eq!(shown.global_hold_ms, None);
        let now = Instant::now();
        let wait = pacer.lock().take(&("message_create", "1".into()), now);
        match wait {
            Err(Wait::Until(when)) => assert!(when > now + Duration::from_secs(20)),
            _ => panic!("the bucket is spent until its reset"),
        }
    }

    #[test]
    fn the_global_limit_allows_a_burst_then_paces() {
        let mut state = Pacer::new().state.into_inner().unwrap();
        let now = Instant::now();
        for i in 0..BURST {
            let key = ("default", i.to_string());
            assert!(state.take(&key, now).is_ok(), "{i}");
            state.buckets.get_mut(&key).unwrap().quota = Quota::Unlimited;
        }
        let refused = state.take(&("default", "x".into()), now);
        assert!(matches!(refused, Err(Wait::Until(t)) if t > now));
    }

    #[tokio::test]
    async fn headers_out_of_range_neither_panic_nor_hold_for_ever() {
        for value in [
            "inf",
            "-inf",
            "NaN",
            "1e400",
            "-1e400",
            "1e300",
            "-5",
            "18446744073709551616",
        ] {
            // A pacer each: a global hold would make the next acquire wait it out.
            let pacer = Pacer::new();
            let permit = pacer.acquire("default", value).await;
            let mut map = HeaderMap::new();
            map.insert("x-ratelimit-remaining", HeaderValue::from(0));
            map.insert("x-ratelimit-reset", HeaderValue::from_str(value).unwrap());
            map.insert("retry-after", HeaderValue::from_str(value).unwrap());
            map.insert("x-ratelimit-global", HeaderValue::from_static("true"));
            pacer.observe(&permit, StatusCode::TOO_MANY_REQUESTS, &map);
            drop(permit);
            let held = pacer.lock().held_until.expect("a global 429 holds");
            // A number no clock holds is no time: the hold of a 429 that gives none.
            let longest = match value.parse::<f64>() {
                Ok(number) if number.is_finite() => MAX_SERVER_WAIT + RESET_MARGIN,
                _ => Duration::from_secs(1),
            };
            assert!(held <= Instant::now() + longest, "{value}");
        }
    }

    #[tokio::test]
    async fn a_reset_no_clock_holds_is_no_reset() {
        for value in ["inf", "1e400", "NaN", "-inf"] {
            let pacer = Pacer::new();
            let permit = pacer.acquire("message_list", "1").await;
            let mut map = headers(0, 0);
            map.insert("x-ratelimit-reset", HeaderValue::from_str(value).unwrap());
            pacer.observe(&permit, StatusCode::OK, &map);
            drop(permit);
            assert_eq!(pacer.state().exhausted, 0, "{value}: no reset, so no wait");
        }
    }

    #[tokio::test]
    async fn a_global_429_holds_every_bucket() {
        let pacer = Pacer::new();
        let permit = pacer.acquire("default", "").await;
        let mut map = headers(0, 1);
        map.insert("x-ratelimit-global", HeaderValue::from_static("true"));
        pacer.observe(&permit, StatusCode::TOO_MANY_REQUESTS, &map);
        drop(permit);
        let now = Instant::now();
        let wait = pacer.lock().take(&("message_list", "9".into()), now);
        assert!(matches!(wait, Err(Wait::Until(t)) if t > now));
    }
}
