//! The one HTTP client every backend uses.
//!
//! It owns what all APIs share: connection pooling, timeouts, retries of temporary failures
//! (connection errors, 408, 429, 5xx) with exponential backoff, equal jitter and the server's
//! `Retry-After`, the mapping of HTTP status to [`ErrorKind`], and redaction (log lines carry the
//! path, never a query string or a token). A backend supplies how to read its own error
//! envelope ([`EnvelopeParser`]) and how its calls are authorized, sent and refined
//! ([`RequestPolicy`], in the private part `policy` with the call wrapper).

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;

use super::observe::RequestStats;
use super::{ErrorKind, RemoteError, RemoteResult};

mod policy;

pub use policy::{Plain, RequestPolicy};

/// Extracts the human message from an API's error body, if it has the API's envelope.
pub type EnvelopeParser = fn(&[u8]) -> Option<String>;

#[derive(serde::Deserialize)]
struct ErrorEnvelope {
    error: ErrorEnvelopeBody,
}

#[derive(serde::Deserialize)]
struct ErrorEnvelopeBody {
    message: String,
}

/// Reads the `{"error":{"message":...}}` envelope that Mix and Lightfield share (their other
/// keys differ and are not needed for the log line).
pub fn error_envelope_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|envelope| envelope.error.message)
}

/// How hard to retry temporary failures.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Longest time one operation keeps retrying (`--retry-deadline`): no retry starts that
    /// would end after it, so a call fails within about this long of its first attempt.
    pub deadline: Duration,
    /// Backoff before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Longest single backoff (and longest `Retry-After` we honour).
    pub max_delay: Duration,
    /// Retries made under this policy and its clones, so a soak or a status report can say
    /// how many temporary failures were ridden out.
    pub retries: RetryCount,
    /// Where every attempt, failure and retry under this policy and its clones is counted for
    /// the status report: the mount's own handle (`run::mount` sets it), so mounts in one
    /// process count apart. The default is a fresh handle nobody else reads.
    pub requests: RequestStats,
}

/// A count of retries shared by every clone of one [`RetryConfig`].
#[derive(Clone, Debug, Default)]
pub struct RetryCount(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl RetryCount {
    /// Retries counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add_one(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long a call keeps retrying by default: long enough to ride out a server restart.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(60);

impl RetryConfig {
    /// Runs `attempt` until it succeeds, fails permanently, or the attempts run out, waiting
    /// between attempts with exponential backoff and equal jitter (a random wait between half
    /// the step and the whole step, so no retry comes at once), or as long as the server's
    /// `Retry-After` asked (capped by `max_delay`).
    pub async fn run<T, F, Fut>(&self, attempt: F) -> RemoteResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = RemoteResult<T>>,
    {
        // Tokio's clock, so tests with paused time see the deadline pass.
        let started = tokio::time::Instant::now();
        let mut tries = 0;
        let counts = &self.requests;
        loop {
            tries += 1;
            counts.attempt();
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(mut err) if err.temporary && tries < self.max_attempts => {
                    let delay = self.backoff(tries, err.retry_after);
                    let retry = started.elapsed() + delay <= self.deadline;
                    counts.failed(err.kind, retry);
                    if !retry {
                        err.message.push_str(&format!(
                            "; gave up after retrying for {:.0?} (--retry-deadline)",
                            started.elapsed()
                        ));
                        return Err(err);
                    }
                    log::info!(
                        "{}; retry {tries}/{} in {delay:?}",
                        err.message,
                        self.max_attempts - 1
                    );
                    self.retries.add_one();
                    tokio::time::sleep(delay).await;
                }
                Err(err) => {
                    counts.failed(err.kind, false);
                    return Err(err);
                }
            }
        }
    }

    fn backoff(&self, tries: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1 << (tries - 1).min(16))
            .min(self.max_delay);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        ceiling.mul_f64(jitter)
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            // The deadline is what bounds a retrying call; this only stops a storm of instant
            // failures.
            max_attempts: 100,
            deadline: DEFAULT_RETRY_DEADLINE,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            retries: RetryCount::default(),
            requests: RequestStats::default(),
        }
    }
}

/// A pooled HTTP client bound to one endpoint.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    endpoint: String,
    retry: RetryConfig,
    parse_envelope: EnvelopeParser,
    /// Whether an answer that is not UTF-8 was logged (once per client).
    logged_not_utf8: Arc<AtomicBool>,
}

/// Longest error body we read to find a message.
const ERROR_BODY_LIMIT_BYTES: usize = 16 * 1024;

impl HttpClient {
    /// A client for `endpoint` (scheme, host and port, no trailing slash needed).
    pub fn new(endpoint: &str, parse_envelope: EnvelopeParser) -> RemoteResult<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .user_agent(concat!("sessionfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| RemoteError::protocol(format!("cannot build http client: {err}")))?;
        Ok(Self {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            retry: RetryConfig::default(),
            parse_envelope,
            logged_not_utf8: Arc::default(),
        })
    }

    /// Replaces the retry policy (tests use fewer attempts).
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// The endpoint, for log lines.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// The underlying client, for building requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the attempts run out. Used by
    /// [`Self::call`] and by callers whose attempt also reads the body.
    pub async fn retrying<T, F, Fut>(&self, attempt: F) -> RemoteResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = RemoteResult<T>>,
    {
        self.retry.run(attempt).await
    }

    /// The retry policy, for drivers that retry their own steps (one upload part at a time).
    pub fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    /// Sends `request` once and returns the answer whatever its status; no answer at all is a
    /// [`Self::transport_error`].
    pub async fn transmit(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> RemoteResult<Response> {
        request
            .send()
            .await
            .map_err(|err| self.transport_error(what, &err))
    }

    /// Sends `request` once and returns the response if its status is a success. For steps
    /// that a driver retries itself (upload parts), so they are not retried twice.
    pub async fn send_once(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> RemoteResult<Response> {
        let response = self.transmit(what, request).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.status_error(what, response).await)
        }
    }

    /// Reads a successful response's body as JSON of type `T`; a body that is not is a
    /// protocol error naming `what` and the endpoint. Bytes that are not UTF-8 (a name another
    /// client stored in some other encoding) become U+FFFD, so one such name does not make a
    /// whole listing unreadable; the first such answer is logged.
    pub async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Response,
    ) -> RemoteResult<T> {
        let body = response
            .bytes()
            .await
            .map_err(|err| self.transport_error(what, &err))?;
        let malformed = |err: serde_json::Error| {
            RemoteError::protocol(format!(
                "{what}: {} sent malformed JSON ({err})",
                self.endpoint
            ))
        };
        match serde_json::from_slice(&body) {
            Err(err) if std::str::from_utf8(&body).is_err() => {
                let parsed = serde_json::from_str(&String::from_utf8_lossy(&body));
                if parsed.is_ok() && !self.logged_not_utf8.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "{what}: {} sent text that is not UTF-8; those bytes show as U+FFFD, \
                         and a name holding them may not be found under the name shown: \
                         rename it on the server to a UTF-8 name",
                        self.endpoint
                    );
                }
                parsed.map_err(|_| malformed(err))
            }
            parsed => parsed.map_err(malformed),
        }
    }

    /// Reads bytes `range` with the shared retries, one ranged GET per attempt from `get`:
    /// 206 is the range itself, 200 a server that ignored Range (the range is cut out of the
    /// body), 416 a range past the end (no bytes); any other status becomes the error that
    /// `refused` makes of it (the API's own envelope and hints).
    pub async fn read_range<G, GF, E, EF>(
        &self,
        what: &str,
        range: &Range<u64>,
        get: G,
        refused: E,
    ) -> RemoteResult<Bytes>
    where
        G: Fn() -> GF,
        GF: Future<Output = RemoteResult<Response>>,
        E: Fn(Response) -> EF,
        EF: Future<Output = RemoteError>,
    {
        let wanted = (range.end - range.start) as usize;
        self.retrying(|| async {
            let response = get().await?;
            super::answers::check_content_range(what, &response, range)?;
            let skip = match response.status() {
                StatusCode::PARTIAL_CONTENT => 0,
                StatusCode::OK => range.start,
                StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Bytes::new()),
                _ => return Err(refused(response).await),
            };
            collect_range(response, skip, wanted)
                .await
                .map_err(|err| self.transport_error(what, &err))
        })
        .await
    }

    /// Reads bytes `range` of `url` (a presigned or public URL: no API headers) with
    /// [`Self::read_range`].
    pub async fn read_url_range(
        &self,
        what: &str,
        url: &str,
        range: &Range<u64>,
    ) -> RemoteResult<Bytes> {
        self.read_range(
            what,
            range,
            || self.get_range(what, url, range),
            |response| self.status_error(what, response),
        )
        .await
    }

    /// Sends one GET of bytes `range` of `url` (one attempt; callers retry around it and
    /// handle a server that ignores `Range`).
    pub async fn get_range(
        &self,
        what: &str,
        url: &str,
        range: &Range<u64>,
    ) -> RemoteResult<Response> {
        let bytes = format!("bytes={}-{}", range.start, range.end - 1);
        self.transmit(what, self.client.get(url).header("Range", bytes))
            .await
    }

    /// Classifies a failure to get any response (refused, reset, timed out).
    pub fn transport_error(&self, what: &str, err: &reqwest::Error) -> RemoteError {
        let cause = if err.is_timeout() {
            "timed out".to_string()
        } else if err.is_connect() {
            "connection refused or unreachable".to_string()
        } else {
            // reqwest's Display includes the URL; keep only the cause chain.
            let mut source = std::error::Error::source(err);
            let mut text = String::from("connection failed");
            while let Some(inner) = source {
                text = inner.to_string();
                source = inner.source();
            }
            text
        };
        RemoteError::temporary(
            ErrorKind::Unavailable,
            format!(
                "{what}: cannot reach {} ({cause}); check that the server is running and the \
                 endpoint is right",
                self.endpoint
            ),
        )
    }

    /// Turns an unsuccessful response into an error, reading a bounded part of its body for
    /// the API's message and honouring `Retry-After`.
    pub async fn status_error(&self, what: &str, response: Response) -> RemoteError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_bounded(response, ERROR_BODY_LIMIT_BYTES).await;
        let detail = (self.parse_envelope)(&body).unwrap_or_else(|| {
            String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(200)
                .collect()
        });
        let (kind, temporary) = classify(status);
        RemoteError {
            kind,
            temporary,
            message: format!("{what}: server answered {status}: {detail}"),
            retry_after,
        }
    }
}

/// Maps an HTTP status to the kind of failure and whether a retry may help.
pub fn classify(status: StatusCode) -> (ErrorKind, bool) {
    match status.as_u16() {
        400 | 422 => (ErrorKind::InvalidInput, false),
        401 | 403 => (ErrorKind::PermissionDenied, false),
        404 | 410 => (ErrorKind::NotFound, false),
        405 | 501 => (ErrorKind::Unsupported, false),
        408 => (ErrorKind::Unavailable, true),
        409 | 412 => (ErrorKind::Conflict, false),
        413 => (ErrorKind::TooLarge, false),
        429 => (ErrorKind::RateLimited, true),
        507 => (ErrorKind::NoSpace, false),
        500..=599 => (ErrorKind::Unavailable, true),
        _ => (ErrorKind::Protocol, false),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A response body read piece by piece, keeping what the last read did not use, so a later
/// read continues exactly where the previous one stopped.
#[derive(Debug)]
pub struct BodyCursor {
    response: Response,
    leftover: Bytes,
}

impl BodyCursor {
    /// Starts reading `response`'s body.
    pub fn new(response: Response) -> Self {
        Self {
            response,
            leftover: Bytes::new(),
        }
    }

    /// Skips `skip` bytes, then returns the next `wanted` bytes (fewer only at the end).
    pub async fn read(&mut self, mut skip: u64, wanted: usize) -> Result<Bytes, reqwest::Error> {
        let mut out = BytesMut::with_capacity(wanted.min(64 << 20));
        while out.len() < wanted {
            let mut chunk = if self.leftover.is_empty() {
                match self.response.chunk().await? {
                    Some(chunk) => chunk,
                    None => break,
                }
            } else {
                std::mem::take(&mut self.leftover)
            };
            if skip > 0 {
                let dropped = (skip as usize).min(chunk.len());
                let _ = chunk.split_to(dropped);
                skip -= dropped as u64;
            }
            let take = chunk.len().min(wanted - out.len());
            out.extend_from_slice(&chunk.split_to(take));
            self.leftover = chunk;
        }
        Ok(out.freeze())
    }
}

/// Reads `wanted` bytes after skipping `skip` bytes of the body.
pub async fn collect_range(
    response: Response,
    skip: u64,
    wanted: usize,
) -> Result<Bytes, reqwest::Error> {
    BodyCursor::new(response).read(skip, wanted).await
}

async fn read_bounded(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(
            classify(StatusCode::NOT_FOUND),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            (ErrorKind::RateLimited, true)
        );
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            (ErrorKind::Unavailable, true)
        );
        assert_eq!(
            classify(StatusCode::PAYLOAD_TOO_LARGE),
            (ErrorKind::TooLarge, false)
        );
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            classify(StatusCode::INSUFFICIENT_STORAGE),
            (ErrorKind::NoSpace, false)
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let past = httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH);
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline_with_a_message_saying_so() {
        let retry = RetryConfig {
            deadline: Duration::from_secs(1),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            ..RetryConfig::default()
        };
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let err = retry
            .run(|| async {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err::<(), _>(RemoteError::temporary(ErrorKind::Unavailable, "down"))
            })
            .await
            .unwrap_err();
        let attempts = attempts.into_inner();
        assert!((3..10).contains(&attempts), "{attempts} attempts");
        assert!(
            err.message.contains("gave up after retrying"),
            "{}",
            err.message
        );
        assert_eq!(err.kind, ErrorKind::Unavailable);
    }

    #[tokio::test(start_paused = true)]
    async fn two_policies_with_their_own_stats_count_apart() {
        // As two mounts in one process: each client's clones share one handle, the other
        // mount's handle sees none of it.
        let first = RetryConfig {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryConfig::default()
        };
        let second = RetryConfig {
            requests: RequestStats::default(),
            ..first.clone()
        };
        let first_clone = first.clone();
        let failures = std::sync::atomic::AtomicU32::new(0);
        first_clone
            .run(|| async {
                match failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 => Err(RemoteError::temporary(ErrorKind::Unavailable, "down")),
                    _ => Ok(()),
                }
            })
            .await
            .unwrap();
        first.run(|| async { Ok(()) }).await.unwrap();
        second
            .run(|| async { Err::<(), _>(RemoteError::new(ErrorKind::NotFound, "gone")) })
            .await
            .unwrap_err();

        let counts = first.requests.snapshot();
        assert_eq!(counts.requests, 3);
        assert_eq!(counts.retries, 1);
        assert_eq!(counts.errors.len(), 1);
        assert_eq!(counts.errors["Unavailable"], 1);
        let counts = second.requests.snapshot();
        assert_eq!(counts.requests, 1);
        assert_eq!(counts.retries, 0);
        assert_eq!(counts.errors.len(), 1);
        assert_eq!(counts.errors["NotFound"], 1);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let retry = RetryConfig::default();
        for tries in 1..20 {
            let delay = retry.backoff(tries, None);
            assert!(delay <= retry.max_delay);
        }
        assert_eq!(
            retry.backoff(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }
}
