//! Rate limits as `RateLimitMiddleware` applies them: a global limit per client (50 requests per
//! second, GCRA over a one-second window) and a fixed-window bucket per client, route and
//! channel, with `X-RateLimit-Limit`, `-Remaining` and `-Reset` (unix seconds) on every answer
//! and, on 429, `Retry-After` (whole seconds, at least 1), `X-RateLimit-Global` and the body
//! `{"code":"RATE_LIMITED","message","global","retry_after"}` (`retry_after` in seconds).
//!
//! Buckets (limit per 10 s), from `ChannelRateLimitConfig`: chunked create 5, chunk PUT 50,
//! chunked complete 5, message create 20, message delete 20, message list 100. *choices*: one
//! message 100, attachment delete 20, presigned plan and complete 20 each, every other route
//! 100. The global check runs first and a request it refuses takes nothing from the route's
//! bucket. A client is its token. With rate limits off nothing is counted and no header is sent.
//!
//! The media, storage and `/_emulator` routes are outside (the CDN and S3 have no such limits).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use super::auth::Identity;
use super::{FluxerState, now_ms, reply};

/// Requests per second one client may make overall.
const GLOBAL_PER_SECOND: i64 = 50;
/// The window of the global limit.
const GLOBAL_WINDOW_MS: i64 = 1000;
/// The window of every route bucket.
const BUCKET_WINDOW_MS: i64 = 10_000;

/// The bucket of a route: its name and its limit per window.
fn bucket(method: &Method, route: &str) -> (&'static str, u32) {
    let tail = route
        .strip_prefix("/v1/channels/{channel_id}")
        .unwrap_or("");
    match (method.as_str(), tail) {
        ("POST", "/chunked-uploads") => ("chunked_create", 5),
        ("PUT", "/chunked-uploads/{upload_id}/chunks/{chunk_index}") => ("chunk_put", 50),
        ("POST", "/chunked-uploads/{upload_id}/complete") => ("chunked_complete", 5),
        ("POST", "/messages") => ("message_create", 20),
        ("GET", "/messages") => ("message_list", 100),
        ("GET", "/messages/{message_id}") => ("message_get", 100),
        ("DELETE", "/messages/{message_id}") => ("message_delete", 20),
        ("DELETE", "/messages/{message_id}/attachments/{attachment_id}") => {
            ("attachment_delete", 20)
        }
        ("POST", "/attachments") => ("attachment_plan", 20),
        ("POST", "/attachments/complete") => ("attachment_complete", 20),
        _ => ("default", 100),
    }
}

/// The `{channel_id}` of a `/v1/channels/...` path, so buckets are per channel.
fn channel_of(path: &str) -> &str {
    path.strip_prefix("/v1/channels/")
        .map(|rest| rest.split('/').next().unwrap_or(""))
        .unwrap_or("")
}

/// A fixed window of one bucket.
#[derive(Debug)]
struct Window {
    start_ms: i64,
    used: u32,
}

/// What a client may still do in a bucket, for the headers.
struct Quota {
    limit: u32,
    remaining: u32,
    reset_ms: i64,
}

/// Why a request was refused.
struct Limited {
    global: bool,
    quota: Quota,
    retry_after_ms: i64,
}

#[derive(Debug, Default)]
struct Counts {
    /// (client, bucket, channel) → its window.
    buckets: HashMap<(String, &'static str, String), Window>,
    /// Client → GCRA theoretical arrival time (unix ms).
    global_tat_ms: HashMap<String, i64>,
}

/// The emulator's counters of recent requests.
#[derive(Debug)]
pub(super) struct RateLimiter {
    enabled: bool,
    /// Held only for one check, never across an await.
    counts: Mutex<Counts>,
}

impl RateLimiter {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn check(
        &self,
        client: &str,
        bucket: (&'static str, u32),
        channel: &str,
        now: i64,
    ) -> Result<Quota, Limited> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let interval = GLOBAL_WINDOW_MS / GLOBAL_PER_SECOND;
        let tat = counts
            .global_tat_ms
            .get(client)
            .copied()
            .unwrap_or(now)
            .max(now);
        let late_by = tat - now - (GLOBAL_WINDOW_MS - interval);
        if late_by > 0 {
            return Err(Limited {
                global: true,
                quota: Quota {
                    limit: GLOBAL_PER_SECOND as u32,
                    remaining: 0,
                    reset_ms: now + late_by,
                },
                retry_after_ms: late_by,
            });
        }
        let (name, limit) = bucket;
        let key = (client.to_owned(), name, channel.to_owned());
        let window = counts.buckets.entry(key).or_insert(Window {
            start_ms: now,
            used: 0,
        });
        if now >= window.start_ms + BUCKET_WINDOW_MS {
            *window = Window {
                start_ms: now,
                used: 0,
            };
        }
        let reset_ms = window.start_ms + BUCKET_WINDOW_MS;
        if window.used >= limit {
            return Err(Limited {
                global: false,
                quota: Quota {
                    limit,
                    remaining: 0,
                    reset_ms,
                },
                retry_after_ms: reset_ms - now,
            });
        }
        window.used += 1;
        let quota = Quota {
            limit,
            remaining: limit - window.used,
            reset_ms,
        };
        counts
            .global_tat_ms
            .insert(client.to_owned(), tat + interval);
        Ok(quota)
    }
}

fn set_quota(headers: &mut HeaderMap, quota: &Quota) {
    let reset_s = (quota.reset_ms + 999) / 1000;
    headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset_s));
}

/// Refuses a request over the global or its route's limit with 429; otherwise runs it and adds
/// the bucket's headers to the answer.
pub(super) async fn enforce(
    State(st): State<FluxerState>,
    matched: MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    let limiter = &st.inner.limiter;
    let Some(who) = req.extensions().get::<Identity>().cloned() else {
        return next.run(req).await;
    };
    if !limiter.enabled {
        return next.run(req).await;
    }
    let bucket = bucket(req.method(), matched.as_str());
    let channel = channel_of(req.uri().path()).to_owned();
    match limiter.check(&who.client, bucket, &channel, now_ms()) {
        Ok(quota) => {
            let mut res = next.run(req).await;
            set_quota(res.headers_mut(), &quota);
            res
        }
        Err(limited) => {
            let counters = &st.inner.counters;
            counters
                .rate_limited_responses
                .fetch_add(1, Ordering::SeqCst);
            if limited.global {
                counters
                    .global_limit_violations
                    .fetch_add(1, Ordering::SeqCst);
            }
            let retry_after = limited.retry_after_ms.max(1) as f64 / 1000.0;
            let mut res = reply::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({
                    "code": "RATE_LIMITED",
                    "message": "You are being rate limited.",
                    "global": limited.global,
                    "retry_after": retry_after,
                }),
            );
            let headers = res.headers_mut();
            set_quota(headers, &limited.quota);
            let whole = (limited.retry_after_ms.max(1) + 999) / 1000;
            headers.insert("retry-after", HeaderValue::from(whole));
            headers.insert(
                "x-ratelimit-global",
                HeaderValue::from_static(if limited.global { "true" } else { "false" }),
            );
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_after_their_window() {
        let limiter = RateLimiter::new(true);
        let create = bucket(&Method::POST, "/v1/channels/{channel_id}/messages");
        assert_eq!(create, ("message_create", 20));
        let t = 1_000_000;
        for i in 0..20 {
            let quota = limiter.check("tok", create, "1", t + i * 60).ok().unwrap();
            assert_eq!(quota.remaining, 19 - i as u32);
        }
        let refused = limiter.check("tok", create, "1", t + 1300).err().unwrap();
        assert!(!refused.global);
        assert_eq!(refused.retry_after_ms, BUCKET_WINDOW_MS - 1300);
        assert!(
            limiter.check("tok", create, "2", t + 1300).is_ok(),
            "per channel"
        );
        assert!(
            limiter
                .check("tok", create, "1", t + BUCKET_WINDOW_MS)
                .is_ok()
        );
    }

    #[test]
    fn the_global_limit_allows_a_burst_of_fifty_then_one_per_interval() {
        let limiter = RateLimiter::new(true);
        let other = bucket(&Method::GET, "/v1/users/@me");
        let t = 5_000_000;
        for i in 0..50 {
            assert!(
                limiter.check("tok", other, &i.to_string(), t).is_ok(),
                "{i}"
            );
        }
        let refused = limiter.check("tok", other, "x", t).err().unwrap();
        assert!(refused.global);
        assert!(limiter.check("tok", other, "x", t + 20).is_ok());
        assert!(limiter.check("other", other, "x", t).is_ok(), "per client");
    }
}
