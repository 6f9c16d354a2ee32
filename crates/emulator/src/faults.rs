//! Network simulation and fault injection around any emulator's router, plus the one place
//! where emulator errors are logged.
//!
//! [`layer`] wraps a router, outermost first:
//! 1. the error logger: every response with a 4xx/5xx status is logged once at `warn`, with the
//!    cause a handler attached as an [`ErrorDetail`];
//! 2. the simulator (only when something is configured): waits `latency` before each request,
//!    then maybe injects one fault drawn from [`FaultSpec`], then caps the request body and the
//!    response body at `bandwidth_bytes_per_sec` each.
//!
//! Invariants: faults are drawn from one `SmallRng` seeded with `fault_seed`, so a run with the
//! same seed and the same request order injects the same faults; at most one fault hits a
//! request. The bandwidth cap is per request body and per response body, which on HTTP/1.1 is per
//! connection and direction at a time.

use sessionfs_io::lock::Locked;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::EmulatorConfig;

/// How long the `slow` fault stalls a request.
const SLOW_STALL: Duration = Duration::from_secs(2);
/// The smallest slice the bandwidth cap sends at once, so tiny rates still make progress.
const MIN_THROTTLE_SLICE_BYTES: u64 = 1024;

/// One kind of injected failure, as spelled in `--faults`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    /// `500`: answer 500 with a JSON error body instead of running the handler.
    InternalError,
    /// `503`: answer 503 with a JSON error body instead of running the handler.
    Unavailable,
    /// `429`: answer 429 with `Retry-After: 1` instead of running the handler.
    TooManyRequests,
    /// `reset`: run the handler, then drop the connection halfway through the body.
    Reset,
    /// `truncate`: run the handler, then end the body early while keeping its Content-Length.
    Truncate,
    /// `slow`: stall two seconds before running the handler.
    Slow,
}

impl FaultKind {
    /// The kind as spelled in `--faults`.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(kind, _)| *kind == self)
            .map(|(_, name)| *name)
            .expect("every kind is in ALL")
    }

    const ALL: [(FaultKind, &'static str); 6] = [
        (FaultKind::InternalError, "500"),
        (FaultKind::Unavailable, "503"),
        (FaultKind::TooManyRequests, "429"),
        (FaultKind::Reset, "reset"),
        (FaultKind::Truncate, "truncate"),
        (FaultKind::Slow, "slow"),
    ];
}

/// Which faults to inject and how often (`--faults 500=0.05,429=0.05`). The default injects
/// nothing. Probabilities are per request and add up to at most 1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    faults: Vec<(FaultKind, f64)>,
}

/// Why a `--faults` value was rejected; the message names the offending item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpecError(String);

impl fmt::Display for FaultSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid fault spec: {}", self.0)
    }
}

impl std::error::Error for FaultSpecError {}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    /// Parses `KIND=PROBABILITY,...`, KIND one of `500 503 429 reset truncate slow`, each
    /// probability in 0..=1, each kind at most once, total at most 1. Empty means no faults.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut faults: Vec<(FaultKind, f64)> = Vec::new();
        for item in spec
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let fail = |why: &str| Err(FaultSpecError(format!("{item:?}: {why}")));
            let Some((name, probability)) = item.split_once('=') else {
                return fail("expected KIND=PROBABILITY");
            };
            let Some(&(kind, _)) = FaultKind::ALL.iter().find(|(_, n)| *n == name.trim()) else {
                return fail("unknown kind; expected one of 500, 503, 429, reset, truncate, slow");
            };
            let probability: f64 = match probability.trim().parse() {
                Ok(p) if (0.0..=1.0).contains(&p) => p,
                _ => return fail("probability must be a number from 0 to 1"),
            };
            if faults.iter().any(|(k, _)| *k == kind) {
                return fail("kind given twice");
            }
            faults.push((kind, probability));
        }
        let total: f64 = faults.iter().map(|(_, p)| p).sum();
        if total > 1.0 + 1e-9 {
            return Err(FaultSpecError(format!(
                "probabilities add up to {total}, more than 1"
            )));
        }
        Ok(FaultSpec { faults })
    }
}

impl FaultSpec {
    /// True when no fault can ever be injected.
    pub fn is_empty(&self) -> bool {
        self.faults.iter().all(|(_, p)| *p == 0.0)
    }

    /// Picks the fault for one request from a uniform draw in `0..1`.
    fn pick(&self, draw: f64) -> Option<FaultKind> {
        let mut upper = 0.0;
        for &(kind, probability) in &self.faults {
            upper += probability;
            if draw < upper {
                return Some(kind);
            }
        }
        None
    }
}

/// A cause attached to an error response by a handler, so the error logger can print it
/// without the handler logging too (errors are logged once).
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub String);

/// How many faults of each kind an emulator injected, so a fault test can check that faults
/// really happened. Shared through [`EmulatorConfig::fault_counts`].
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Injected faults by kind name (`"500"`, `"reset"`, ...).
    counts: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl FaultCounts {
    /// Faults of `kind` (as spelled in `--faults`) injected so far.
    pub fn of(&self, kind: &str) -> u64 {
        self.counts.locked().get(kind).copied().unwrap_or(0)
    }

    /// Faults of every kind injected so far.
    pub fn total(&self) -> u64 {
        self.counts.locked().values().sum()
    }

    /// Faults injected so far for every kind `--faults` knows, in its order (zeros included),
    /// so a report shows the kinds that never hit too.
    pub fn by_kind(&self) -> Vec<(&'static str, u64)> {
        FaultKind::ALL
            .iter()
            .map(|(_, name)| (*name, self.of(name)))
            .collect()
    }

    /// Counts one injected fault and returns how many of its kind there were.
    fn record(&self, kind: FaultKind) -> u64 {
        let mut counts = self.counts.locked();
        let count = counts.entry(kind.name()).or_default();
        *count += 1;
        *count
    }
}

/// Wraps `app` in the error logger and, when `config` asks for any, the latency, fault and
/// bandwidth simulation.
pub fn layer(app: axum::Router, config: &EmulatorConfig) -> axum::Router {
    let simulated = !config.faults.is_empty()
        || !config.latency.is_zero()
        || config.bandwidth_bytes_per_sec.is_some();
    let app = if simulated {
        let sim = Arc::new(Simulator {
            faults: config.faults.clone(),
            rng: Mutex::new(SmallRng::seed_from_u64(config.fault_seed)),
            counts: config.fault_counts.clone(),
            latency: config.latency,
            bandwidth: config.bandwidth_bytes_per_sec.filter(|rate| *rate > 0),
        });
        app.layer(middleware::from_fn_with_state(sim, simulate))
    } else {
        app
    };
    app.layer(middleware::from_fn(log_errors))
}

async fn log_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        match res.extensions().get::<ErrorDetail>() {
            Some(ErrorDetail(detail)) => log::warn!("{method} {path} -> {status}: {detail}"),
            None => log::warn!("{method} {path} -> {status}"),
        }
    }
    res
}

struct Simulator {
    faults: FaultSpec,
    /// Held only to draw one number, never across an await.
    rng: Mutex<SmallRng>,
    counts: Arc<FaultCounts>,
    latency: Duration,
    bandwidth: Option<u64>,
}

impl Simulator {
    fn draw_fault(&self) -> Option<FaultKind> {
        if self.faults.is_empty() {
            return None;
        }
        let draw: f64 = self.rng.locked().r#gen();
        self.faults.pick(draw)
    }
}

async fn simulate(State(sim): State<Arc<Simulator>>, req: Request, next: Next) -> Response {
    if !sim.latency.is_zero() {
        tokio::time::sleep(sim.latency).await;
    }
    // A link caps uploads as well as downloads: the handler reads the request body through
    // the same cap (the headers, Content-Length included, stay as sent).
    let req = match sim.bandwidth {
        Some(rate) => {
            let (parts, body) = req.into_parts();
            let body = Body::from_stream(throttle(body.into_data_stream().boxed(), rate));
            Request::from_parts(parts, body)
        }
        None => req,
    };
    let fault = sim.draw_fault();
    if let Some(kind) = fault {
        let count = sim.counts.record(kind);
        log::info!(
            "injected fault {} on {} {} ({count} of this kind so far)",
            kind.name(),
            req.method(),
            req.uri().path()
        );
    }
    let res = match fault {
        Some(FaultKind::InternalError) => return injected(StatusCode::INTERNAL_SERVER_ERROR),
        Some(FaultKind::Unavailable) => return injected(StatusCode::SERVICE_UNAVAILABLE),
        Some(FaultKind::TooManyRequests) => {
            let mut res = injected(StatusCode::TOO_MANY_REQUESTS);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        }
        Some(FaultKind::Slow) => {
            tokio::time::sleep(SLOW_STALL).await;
            next.run(req).await
        }
        Some(FaultKind::Reset | FaultKind::Truncate) | None => next.run(req).await,
    };
    let cut = match fault {
        Some(FaultKind::Reset) => Some(CutEnd::Reset),
        Some(FaultKind::Truncate) => Some(CutEnd::Short),
        _ => None,
    };
    if cut.is_none() && sim.bandwidth.is_none() {
        return res;
    }

    let (mut parts, body) = res.into_parts();
    let declared = (parts.headers.get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let exact_len = declared.or(axum::body::HttpBody::size_hint(&body).exact());
    if let Some(len) = exact_len {
        // Keep the promised length visible once the body becomes a stream.
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let mut stream = body.into_data_stream().boxed();
    if let Some(end) = cut {
        stream = cut_body(stream, exact_len, end).boxed();
    }
    if let Some(rate) = sim.bandwidth {
        stream = throttle(stream, rate).boxed();
    }
    Response::from_parts(parts, Body::from_stream(stream))
}

fn injected(status: StatusCode) -> Response {
    let body = serde_json::json!({
        "error": {"code": status.as_u16(), "message": "injected fault", "type": "internal_error"}
    });
    let mut text = body.to_string();
    text.push('\n');
    let mut res = (status, [(header::CONTENT_TYPE, "application/json")], text).into_response();
    res.extensions_mut()
        .insert(ErrorDetail("injected fault".to_owned()));
    res
}

type BodyStream = futures::stream::BoxStream<'static, Result<Bytes, axum::Error>>;

/// How a cut body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CutEnd {
    /// With an error, which makes the server drop the connection.
    Reset,
    /// Cleanly but short of its Content-Length, which the client sees as a truncated body.
    Short,
}

/// Passes half of a body of known length (or, when the length is unknown, its first chunk),
/// then ends it as `end` says. A short body of unknown length would look complete to the
/// client, so it ends with a reset instead.
fn cut_body(
    inner: BodyStream,
    exact_len: Option<u64>,
    end: CutEnd,
) -> impl Stream<Item = Result<Bytes, axum::Error>> {
    let (limit, end) = match exact_len {
        Some(len) => (Some(len / 2), end),
        None => (None, CutEnd::Reset),
    };
    futures::stream::unfold(
        (inner, 0u64, false),
        move |(mut inner, passed, done)| async move {
            if done {
                return None;
            }
            let finish = |state| match end {
                CutEnd::Reset => Some((Err(axum::Error::new("injected connection reset")), state)),
                CutEnd::Short => None,
            };
            let reached =
                limit.is_some_and(|limit| passed >= limit) || (limit.is_none() && passed > 0);
            if reached {
                return finish((inner, passed, true));
            }
            match inner.next().await {
                None => finish((inner, passed, true)),
                Some(Err(err)) => Some((Err(err), (inner, passed, true))),
                Some(Ok(mut chunk)) => {
                    if let Some(limit) = limit {
                        chunk.truncate((limit - passed).min(chunk.len() as u64) as usize);
                    }
                    let passed = passed + chunk.len() as u64;
                    Some((Ok(chunk), (inner, passed, false)))
                }
            }
        },
    )
}

/// Sends a body no faster than `rate` bytes per second, in slices of about 1/16 s.
fn throttle(inner: BodyStream, rate: u64) -> impl Stream<Item = Result<Bytes, axum::Error>> {
    let slice = (rate / 16).max(MIN_THROTTLE_SLICE_BYTES) as usize;
    let state = (inner, Bytes::new(), None::<Instant>, 0u64);
    futures::stream::unfold(
        state,
        move |(mut inner, mut pending, start, sent)| async move {
            // An empty chunk is skipped: passed on, a body parser could take it for the end.
            while pending.is_empty() {
                match inner.next().await? {
                    Ok(chunk) => pending = chunk,
                    Err(err) => return Some((Err(err), (inner, pending, start, sent))),
                }
            }
            let start = start.unwrap_or_else(Instant::now);
            let piece = pending.split_to(pending.len().min(slice));
            let sent = sent + piece.len() as u64;
            tokio::time::sleep_until(start + Duration::from_secs_f64(sent as f64 / rate as f64))
                .await;
            Some((Ok(piece), (inner, pending, Some(start), sent)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_specs() {
        assert_eq!("".parse::<FaultSpec>().unwrap(), FaultSpec::default());
        let spec: FaultSpec = "500=0.05, 429=0.1,reset=0,truncate=0.2,slow=0.01,503=0.5"
            .parse()
            .unwrap();
        assert_eq!(spec.faults.len(), 6);
        assert_eq!(spec.faults[1], (FaultKind::TooManyRequests, 0.1));
        assert!(!spec.is_empty());
        assert!("reset=0".parse::<FaultSpec>().unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_specs_with_a_message() {
        for (spec, needle) in [
            ("404=0.1", "unknown kind"),
            ("500", "KIND=PROBABILITY"),
            ("500=abc", "number from 0 to 1"),
            ("500=1.5", "number from 0 to 1"),
            ("500=-0.1", "number from 0 to 1"),
            ("500=0.1,500=0.2", "twice"),
            ("500=0.6,503=0.6", "more than 1"),
        ] {
            let err = spec.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn pick_follows_cumulative_probabilities() {
        let spec: FaultSpec = "500=0.25,slow=0.25".parse().unwrap();
        assert_eq!(spec.pick(0.0), Some(FaultKind::InternalError));
        assert_eq!(spec.pick(0.3), Some(FaultKind::Slow));
        assert_eq!(spec.pick(0.5), None);
    }

    async fn collect(stream: impl Stream<Item = Result<Bytes, axum::Error>>) -> (Vec<u8>, bool) {
        let items: Vec<_> = stream.collect().await;
        let failed = items.iter().any(Result::is_err);
        let bytes = items
            .into_iter()
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
            .concat();
        (bytes, failed)
    }

    fn chunks(parts: &[&'static [u8]]) -> BodyStream {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    #[tokio::test]
    async fn cut_body_halves_known_lengths() {
        let (bytes, failed) = collect(cut_body(
            chunks(&[b"abc", b"defgh"]),
            Some(8),
            CutEnd::Short,
        ))
        .await;
        assert_eq!((bytes.as_slice(), failed), (&b"abcd"[..], false));
        let (bytes, failed) = collect(cut_body(
            chunks(&[b"abc", b"defgh"]),
            Some(8),
            CutEnd::Reset,
        ))
        .await;
        assert_eq!((bytes.as_slice(), failed), (&b"abcd"[..], true));
        let (bytes, failed) =
            collect(cut_body(chunks(&[b"abc", b"defgh"]), None, CutEnd::Short)).await;
        assert_eq!((bytes.as_slice(), failed), (&b"abc"[..], true));
    }

    #[tokio::test]
    async fn throttle_keeps_every_byte_and_passes_no_empty_chunk() {
        let items: Vec<_> = throttle(chunks(&[b"abc", b"", b"defgh", b""]), 1_000_000)
            .collect()
            .await;
        assert!(
            items
                .iter()
                .all(|item| item.as_ref().is_ok_and(|b| !b.is_empty()))
        );
        let (bytes, failed) = collect(throttle(chunks(&[b"abc", b"defgh"]), 1_000_000)).await;
        assert_eq!((bytes.as_slice(), failed), (&b"abcdefgh"[..], false));
    }
}
