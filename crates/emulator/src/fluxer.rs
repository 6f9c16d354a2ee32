//! The Fluxer emulator: the `/v1` routes of `docs/api/fluxer.md` that a file client needs
//! (user, guild, channels, messages with attachments, chunked and presigned uploads), the media
//! URLs attachments are downloaded from, and the presigned storage URLs, all served by the
//! emulator itself.
//!
//! Storage is the shared [`Store`]: the seeded world (users, guild, channels) is one record,
//! messages one record each (`fluxer_messages`), upload sessions one record each
//! (`fluxer_chunked`, `fluxer_presigned`); file bodies are blobs in the `fluxer_objects`
//! namespace keyed by their upload name, and chunks or parts in a namespace per session. Every
//! record is also kept in memory, loaded once, so a listing of thousands of messages reads no
//! file. Submodules: `auth` (the `Authorization` forms), `snowflake` (ids), `guilds` (the seeded
//! world and its routes), `messages`, `chunked`, `presigned`, `attachments` (object bodies:
//! receiving, joining parts, the ranged download), `ratelimit`, `names` (filename rules, content
//! types), `reply` (the `{code, message}` envelope).
//!
//! Invariants and choices (those the docs leave open are marked *choice*, see also
//! `SEMANTICS.md`, "Fluxer emulator"):
//! - Auth is checked first (401), then the global and the route's rate limit (429), then the
//!   route. Every `/v1` answer past auth carries `X-RateLimit-*` headers.
//! - *choice*: every identity (the session user, the guest, the bot) sees the one guild and the
//!   one DM channel, and may delete any message (the seeded user owns the guild).
//! - An uploaded object (a completed chunked or presigned upload) is consumed by the first
//!   message that references it; a second reference is `NO_FILE_FOR_ATTACHMENT_METADATA`, as
//!   the real server moves the object into the attachment bucket.
//! - Upload sessions past their TTL are gone (404), judged on every access, so no timer runs;
//!   their stored chunks are deleted when they are next touched or at the next start.
//! - *choice*: the global limit is counted but never revokes the token.
//! - `GET /_emulator/stats` (not in the real API, no auth) reports [`FluxerStats`].

/// The loaded state of a [`FluxerState`], or an answer of 500 from the handler that asked.
macro_rules! loaded_or_500 {
    ($st:expr, $doing:expr) => {
        match $st.loaded().await {
            Ok(loaded) => loaded,
            Err(err) => return reply::internal_error($doing, &err),
        }
    };
}

mod attachments;
mod auth;
mod chunked;
mod guilds;
mod messages;
mod names;
mod presigned;
mod ratelimit;
mod reply;
mod snowflake;

use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell};

use super::EmulatorConfig;
use super::store::Store;

/// The chunk size the real server always reports (8 MiB).
pub const CHUNK_SIZE_BYTES: u64 = 8 * 1024 * 1024;
/// The largest attachment of a non-premium user (`ATTACHMENT_MAX_SIZE_NON_PREMIUM`, 25 MiB).
pub const USER_MAX_ATTACHMENT_BYTES: u64 = 25 * 1024 * 1024;
/// The largest attachment of a bot on the presigned routes (50 MiB).
pub const BOT_MAX_ATTACHMENT_BYTES: u64 = 50 * 1024 * 1024;
/// How long an upload session lives (the KV TTL of a chunked session).
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// The channels seeded in the guild when `--channels` is not given.
pub const DEFAULT_CHANNELS: [&str; 2] = ["general", "files"];
/// Most attachments one message may carry (`MAX_ATTACHMENTS_PER_MESSAGE`).
const MAX_ATTACHMENTS_PER_MESSAGE: usize = 10;
/// The blob namespace holding every uploaded object and attachment body, keyed by upload name.
const OBJECTS_NS: &str = "fluxer_objects";
/// The store table holding the signing secret of presigned URLs.
const SECRET_TABLE: &str = "fluxer_secret";

/// Which upload flows the emulator offers (`--uploads chunked,presigned`); both by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadFlows {
    /// The `chunked-uploads` routes (upstream for a few days in February 2026).
    pub chunked: bool,
    /// The presigned `attachments` routes (the current API).
    pub presigned: bool,
}

impl Default for UploadFlows {
    fn default() -> Self {
        Self {
            chunked: true,
            presigned: true,
        }
    }
}

impl FromStr for UploadFlows {
    type Err = String;

    /// A comma-separated list of `chunked` and `presigned`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut flows = UploadFlows {
            chunked: false,
            presigned: false,
        };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "chunked" => flows.chunked = true,
                "presigned" => flows.presigned = true,
                other => {
                    return Err(format!(
                        "unknown upload flow {other:?}: use chunked, presigned or both"
                    ));
                }
            }
        }
        if !flows.chunked && !flows.presigned {
            return Err("name at least one upload flow: chunked, presigned".to_owned());
        }
        Ok(flows)
    }
}

/// What only the Fluxer emulator reads from an [`EmulatorConfig`]; the session token is the
/// shared `token`.
#[derive(Clone, Debug)]
pub struct FluxerConfig {
    /// The bot token (`Authorization: Bot <token>`) of a seeded bot user; `None` = no bot.
    pub bot_token: Option<String>,
    /// The session token of a second seeded user, "guest", so tests can act as another person
    /// (uploads they do not own, messages by someone else); `None` = no guest login.
    pub guest_token: Option<String>,
    /// Which upload flows are offered.
    pub uploads: UploadFlows,
    /// Largest attachment in bytes; `None` = Fluxer's defaults (25 MiB, bots 50 MiB presigned).
    pub max_attachment_bytes: Option<u64>,
    /// Names of the guild's text channels, seeded when the data directory is new.
    pub channels: Vec<String>,
    /// Lifetime of chunked sessions and presigned URLs.
    pub upload_ttl: Duration,
    /// Enforce the rate limits (`--no-rate-limits` turns them off for benchmarks).
    pub rate_limits: bool,
    /// Chunk size the chunked create reports; the real server's 8 MiB unless a test shrinks it.
    pub chunk_size_bytes: u64,
}

impl Default for FluxerConfig {
    fn default() -> Self {
        Self {
            bot_token: None,
            guest_token: None,
            uploads: UploadFlows::default(),
            max_attachment_bytes: None,
            channels: DEFAULT_CHANNELS.iter().map(|s| s.to_string()).collect(),
            upload_ttl: DEFAULT_UPLOAD_TTL,
            rate_limits: true,
            chunk_size_bytes: CHUNK_SIZE_BYTES,
        }
    }
}

/// Counters tests assert on, served at `GET /_emulator/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FluxerStats {
    /// Chunk PUTs whose bodies are being received right now.
    pub chunks_in_flight: usize,
    /// The most chunk PUTs ever received at once.
    pub max_chunks_in_flight: usize,
    /// Requests refused by the global limit (on the real service each revokes the token).
    pub global_limit_violations: u64,
    /// Every 429 answered, global or per route.
    pub rate_limited_responses: u64,
    /// Messages stored now, over all channels.
    pub messages: usize,
}

/// The live counters behind [`FluxerStats`].
#[derive(Debug, Default)]
struct Counters {
    chunks_in_flight: AtomicUsize,
    max_chunks_in_flight: AtomicUsize,
    global_limit_violations: AtomicU64,
    rate_limited_responses: AtomicU64,
}

/// Counts one chunk PUT as in flight for as long as it lives (an interrupted body included).
struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    fn start(counters: &'a Counters) -> Self {
        let now = counters.chunks_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters
            .max_chunks_in_flight
            .fetch_max(now, Ordering::SeqCst);
        InFlight(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.chunks_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything the Fluxer handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FluxerState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: FluxerConfig,
    /// The session token of the seeded user.
    session_token: String,
    serve_ranges: bool,
    limiter: ratelimit::RateLimiter,
    counters: Counters,
    /// Loaded from the store on first use (the router is built outside any runtime).
    loaded: OnceCell<Loaded>,
}

/// State loaded lazily from the store.
#[derive(Debug)]
struct Loaded {
    /// Keys the signatures of presigned URLs; kept in the store so URLs survive a restart.
    secret: String,
    world: guilds::World,
    ids: snowflake::Snowflakes,
    /// Lock order: `messages` before `chunked` or `presigned` is never needed; each is taken
    /// alone and held across the record write that persists a change.
    messages: Mutex<messages::Messages>,
    chunked: Mutex<chunked::Sessions>,
    presigned: Mutex<presigned::Uploads>,
}

impl FluxerState {
    /// Opens the store in `config.data_dir`; everything written before is kept. The session
    /// token is `config.token`, or a random one for this process when it is `None` (see
    /// [`FluxerState::session_token`]).
    pub fn open(config: &EmulatorConfig) -> io::Result<FluxerState> {
        let fluxer = config.fluxer.clone();
        Ok(FluxerState {
            inner: Arc::new(Inner {
                store: Store::open(&config.data_dir)?,
                session_token: config.token.clone().unwrap_or_else(|| {
                    let token = generate_token();
                    // Printed for the person who started the emulator, never logged.
                    println!(
                        "fluxer emulator: no --token given; the session token (send it as \
                         `Authorization: <token>`) is {token}"
                    );
                    token
                }),
                serve_ranges: config.serve_ranges,
                limiter: ratelimit::RateLimiter::new(fluxer.rate_limits),
                counters: Counters::default(),
                config: fluxer,
                loaded: OnceCell::new(),
            }),
        })
    }

    /// The session token the seeded user logs in with.
    pub fn session_token(&self) -> &str {
        &self.inner.session_token
    }

    /// The counters tests assert on; the same numbers as `GET /_emulator/stats`.
    pub async fn stats(&self) -> FluxerStats {
        let c = &self.inner.counters;
        let messages = match self.loaded().await {
            Ok(loaded) => loaded.messages.lock().await.count(),
            Err(_) => 0,
        };
        FluxerStats {
            chunks_in_flight: c.chunks_in_flight.load(Ordering::SeqCst),
            max_chunks_in_flight: c.max_chunks_in_flight.load(Ordering::SeqCst),
            global_limit_violations: c.global_limit_violations.load(Ordering::SeqCst),
            rate_limited_responses: c.rate_limited_responses.load(Ordering::SeqCst),
            messages,
        }
    }

    async fn loaded(&self) -> io::Result<&Loaded> {
        self.inner
            .loaded
            .get_or_try_init(|| async {
                let store = &self.inner.store;
                let secret = store.signing_secret(SECRET_TABLE).await?;
                let ids = snowflake::Snowflakes::default();
                let world = guilds::World::load_or_seed(store, &self.inner.config, &ids).await?;
                let messages = messages::Messages::load(store).await?;
                ids.observe(messages.max_id());
                let now = now_ms();
                let chunked = chunked::Sessions::load(store, now).await?;
                let presigned = presigned::Uploads::load(store, now).await?;
                Ok(Loaded {
                    secret,
                    world,
                    ids,
                    messages: Mutex::new(messages),
                    chunked: Mutex::new(chunked),
                    presigned: Mutex::new(presigned),
                })
            })
            .await
    }

    /// The largest attachment `who` may upload.
    fn max_attachment_bytes(&self, bot: bool) -> u64 {
        match self.inner.config.max_attachment_bytes {
            Some(limit) => limit,
            None if bot => BOT_MAX_ATTACHMENT_BYTES,
            None => USER_MAX_ATTACHMENT_BYTES,
        }
    }
}

/// A fresh random token, for `serve` without `--token` and the embedded emulator.
pub fn generate_token() -> String {
    format!("flx_{}", uuid::Uuid::new_v4().simple())
}

/// The Fluxer routes: `/v1` behind auth and the rate limits; the media, storage and
/// `/_emulator` routes beside it, which take no token.
pub fn router(state: FluxerState) -> Router {
    let flows = state.inner.config.uploads;
    let mut api = Router::new()
        .route("/v1/users/@me", get(guilds::me))
        .route("/v1/users/@me/guilds", get(guilds::my_guilds))
        .route("/v1/users/@me/channels", get(guilds::my_channels))
        .route("/v1/guilds/{guild_id}", get(guilds::guild))
        .route(
            "/v1/guilds/{guild_id}/channels",
            get(guilds::guild_channels),
        )
        .route("/v1/channels/{channel_id}", get(guilds::channel))
        .route(
            "/v1/channels/{channel_id}/messages",
            get(messages::list)
                .post(messages::create)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{message_id}",
            get(messages::get_one).delete(messages::delete_one),
        )
        .route(
            "/v1/channels/{channel_id}/messages/{message_id}/attachments/{attachment_id}",
            delete(messages::delete_attachment),
        )
        .route(
            "/v1/channels/{channel_id}/attachments",
            post(presigned::plan),
        )
        .route(
            "/v1/channels/{channel_id}/attachments/complete",
            post(presigned::complete),
        );
    if flows.chunked {
        api = api
            .route(
                "/v1/channels/{channel_id}/chunked-uploads",
                post(chunked::create),
            )
            .route(
                "/v1/channels/{channel_id}/chunked-uploads/{upload_id}/chunks/{chunk_index}",
                put(chunked::upload_chunk).layer(DefaultBodyLimit::disable()),
            )
            .route(
                "/v1/channels/{channel_id}/chunked-uploads/{upload_id}/complete",
                post(chunked::complete),
            );
    }
    // Layers run outermost last-added: auth, then the rate limits, then the route.
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::enforce,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let open = Router::new()
        .route("/v1/.well-known/fluxer", get(well_known))
        .route(
            "/attachments/{channel_id}/{attachment_id}/{filename}",
            get(attachments::download),
        )
        .route(
            "/_storage/presigned/{upload_filename}",
            put(presigned::put_single).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/_storage/presigned/{upload_filename}/parts/{part_number}",
            put(presigned::put_part).layer(DefaultBodyLimit::disable()),
        )
        .route("/_emulator/stats", get(stats));
    let not_found = || async { reply::error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found.") };
    // A known path with another method gets the same enveloped 404 (axum's own 405 has no body).
    api.merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state)
}

/// `{scheme}://{Host}` of the request: the API, media and storage bases all point back here.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

async fn stats(State(st): State<FluxerState>) -> Response {
    reply::json(StatusCode::OK, &st.stats().await)
}

/// `GET /v1/.well-known/fluxer`: where the API and the media live, and which upload flow is on
/// (`features.presigned_attachment_uploads`); a client reads it before choosing a flow.
async fn well_known(State(st): State<FluxerState>, headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let api = format!("{base}/v1");
    let config = &st.inner.config;
    reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "api_code_version": 1,
            "endpoints": {
                "api": api, "api_client": api, "api_public": api,
                "gateway": format!("ws://{}/gateway", base.trim_start_matches("http://")),
                "media": base, "static_cdn": base, "marketing": base, "admin": base,
                "invite": base, "gift": base, "webapp": base,
            },
            "features": {
                "voice_enabled": false,
                "stripe_enabled": false,
                "self_hosted": true,
                "presigned_attachment_uploads": config.uploads.presigned,
            },
            "limits": {
                "max_attachment_file_size": st.max_attachment_bytes(false),
                "max_attachments_per_message": MAX_ATTACHMENTS_PER_MESSAGE,
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_flows_parse() {
        assert_eq!(
            "chunked,presigned".parse::<UploadFlows>().unwrap(),
            UploadFlows::default()
        );
        let chunked: UploadFlows = "chunked".parse().unwrap();
        assert!(chunked.chunked && !chunked.presigned);
        assert!("".parse::<UploadFlows>().is_err());
        assert!("s3".parse::<UploadFlows>().is_err());
    }
}
