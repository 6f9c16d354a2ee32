//! The Appmixer emulator: sign-in (`/user/auth`, `/user`) and the `/files` endpoints of
//! `docs/api/appmixer.md` and seed 002, answered the way a Hapi server with Boom errors does.
//!
//! Owns the paths, JSON shapes, status codes and error bodies of those endpoints. Storage is the
//! shared [`Store`]: one record per file in the `appmixer_files` table, one blob per received
//! chunk in a namespace per file (`appmixer/<fileId>`, keyed by chunk number), and the JWT
//! signing secret in `appmixer_secret`, so tokens and files survive a restart. Records are also
//! kept in memory, loaded once, so listing 10 000 files reads no record file. Submodules: `auth`
//! (accounts, tokens, the sign-in routes and the bearer check), `upload` (`POST /files`),
//! `files` (records, listing, metadata, download, delete), `query` (`limit`, `offset`, `sort`,
//! `filter`, `projection`), `range` (Hapi's Range rules), `reply` (JSON and Boom bodies).
//!
//! Invariants:
//! - Every `/files` route and `GET /user` need `Authorization: Bearer <JWT>`; a file is seen only
//!   by its owner (`metadata.userId`): another user's file is 404, exactly like an unknown one.
//! - A chunk is visible only once its request body ended cleanly: the part streams to a
//!   temporary blob that is committed after the whole form parsed, so an interrupted upload
//!   stores nothing of that chunk.
//! - Commits, digests, deletes and download snapshots of one file are serialized by that file's
//!   assembly lock, so a download never mixes two versions of a chunk and no chunk outlives a
//!   deleted file.
//! - A file is complete when chunks `1..=total` are all stored; only complete files are listed,
//!   counted, downloaded and deleted by filter.
//!
//! Choices where the docs are silent (each also in SEMANTICS.md, "Appmixer emulator"):
//! - Chunks are assembled by number, in any order; a duplicate number replaces that chunk (also
//!   after completion, so a retried last chunk succeeds). `length` is the bytes stored so far
//!   and `md5` the md5 of the longest run of chunks `1..k` stored; both are the whole file's once
//!   it is complete. `uploadDate` is when the file was created (its first request).
//! - Without chunk headers a request is a whole one-chunk file. A request with
//!   `uploader-file-id` must repeat the file's `uploader-chunks-total` (400 otherwise).
//!   `uploader-chunk-size`, when sent, must equal the part's length (400). The file name is
//!   `uploader-file-name`, else the part's filename (400 when neither); the content type is the
//!   part's `Content-Type`, else `application/octet-stream`.
//! - `max_upload_bytes` (`--max-upload-size`) caps each request's part with Hapi's 413.
//! - User ids are derived from the e-mail address (24 hex digits, like a Mongo ObjectId), so a
//!   user's files stay theirs across restarts and password changes. Without configured users
//!   one account with a generated password is made up and logged at start.
//! - An incomplete file's metadata is visible to its owner (it is what chunk answers show), but
//!   it is not listed, counted or downloadable (404) until complete.
//!
//! Emulator extension, not in the real API: `GET /_emulator/stats` answers, without auth,
//! `{"chunkUploadsInFlight": n, "chunkUploadsInFlightMax": m, "chunkUploads": t}`: the `POST
//! /files` requests being received now, the most that were ever received at once, and how many
//! were received, plus `"incompleteFiles"`: files of any user whose chunks have not all
//! arrived; `DELETE /_emulator/stats` starts a new measurement (max = now in flight,
//! total = 0). [`AppmixerState::chunk_stats`] reads the same numbers in process.

mod auth;
mod files;
mod query;
mod range;
mod reply;
mod upload;

use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::OnceCell;

use super::EmulatorConfig;
use super::store::Store;

/// Token lifetime when none is configured: the 30 days of the docs' example token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// One account the emulator accepts at `POST /user/auth`; parsed from `EMAIL:PASSWORD`.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The e-mail address, which is also the username.
    pub email: String,
    /// The password in clear (an emulator's test account).
    pub password: String,
}

impl Login {
    /// A fresh account with a random password, for an emulator started without `--user`.
    pub fn generate() -> Login {
        Login {
            email: "sessionfs@example.com".to_owned(),
            password: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

impl std::fmt::Debug for Login {
    /// Never shows the password, so a logged config leaks nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl FromStr for Login {
    type Err = String;

    /// `EMAIL:PASSWORD`, split at the first colon (a password may hold colons).
    fn from_str(text: &str) -> Result<Login, String> {
        match text.split_once(':') {
            Some((email, password)) if !email.is_empty() && !password.is_empty() => Ok(Login {
                email: email.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err("expected EMAIL:PASSWORD".to_owned()),
        }
    }
}

/// Counts of `POST /files` requests, so a test can check how many chunk uploads a client keeps
/// in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChunkStats {
    /// Chunk uploads being received now.
    #[serde(rename = "chunkUploadsInFlight")]
    pub in_flight: u64,
    /// The most that were received at once since the start or the last reset.
    #[serde(rename = "chunkUploadsInFlightMax")]
    pub in_flight_max: u64,
    /// Chunk uploads received since the start or the last reset.
    #[serde(rename = "chunkUploads")]
    pub uploads: u64,
}

/// The live counters behind [`ChunkStats`].
#[derive(Debug, Default)]
struct ChunkCounter {
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
    uploads: AtomicU64,
}

/// Counts one chunk upload as in flight until dropped.
struct InFlight<'a>(&'a ChunkCounter);

impl ChunkCounter {
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight_max.fetch_max(now, Ordering::SeqCst);
        self.uploads.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    fn read(&self) -> ChunkStats {
        ChunkStats {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            in_flight_max: self.in_flight_max.load(Ordering::SeqCst),
            uploads: self.uploads.load(Ordering::SeqCst),
        }
    }

    fn reset(&self) {
        let now = self.in_flight.load(Ordering::SeqCst);
        self.in_flight_max.store(now, Ordering::SeqCst);
        self.uploads.store(0, Ordering::SeqCst);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything the Appmixer handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppmixerState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    accounts: auth::Accounts,
    token_ttl: Duration,
    serve_ranges: bool,
    max_upload_bytes: Option<u64>,
    chunks: ChunkCounter,
    /// Loaded from the store on first use (the router is built outside any runtime).
    loaded: OnceCell<Loaded>,
}

/// State loaded lazily from the store.
struct Loaded {
    keys: auth::Keys,
    files: files::Files,
}

impl AppmixerState {
    /// Opens the store in `config.data_dir`; files and the signing secret written before are
    /// kept. Accounts are `config.users`, or one generated account (logged) when it is empty.
    pub fn open(config: &EmulatorConfig) -> io::Result<AppmixerState> {
        let mut users = config.users.clone();
        if users.is_empty() {
            let login = Login::generate();
            // Printed for the person who started the emulator, never logged.
            println!(
                "appmixer emulator: no --user given; sign in as {} with password {}",
                login.email, login.password
            );
            users.push(login);
        }
        Ok(AppmixerState {
            inner: Arc::new(Inner {
                store: Store::open(&config.data_dir)?,
                accounts: auth::Accounts::new(&users),
                token_ttl: config.token_ttl,
                serve_ranges: config.serve_ranges,
                max_upload_bytes: config.max_upload_bytes,
                chunks: ChunkCounter::default(),
                loaded: OnceCell::new(),
            }),
        })
    }

    /// Chunk uploads in flight now, the most ever in flight, and the total received.
    pub fn chunk_stats(&self) -> ChunkStats {
        self.inner.chunks.read()
    }

    /// The state loaded from the store; a store that cannot be read answers 500.
    async fn loaded(&self) -> Result<&Loaded, Response> {
        self.inner
            .loaded
            .get_or_try_init(|| async {
                let store = &self.inner.store;
                io::Result::Ok(Loaded {
                    keys: auth::Keys::load(store).await?,
                    files: files::Files::load(store).await?,
                })
            })
            .await
            .map_err(|err| reply::internal_error("loading the store", &err))
    }
}

/// The Appmixer routes: sign-in, the files API behind the bearer check, the stats extension,
/// and Hapi's 404 for everything else.
pub fn router(state: AppmixerState) -> Router {
    let protected = Router::new()
        .route("/user", get(auth::get_user))
        .route(
            "/files",
            post(upload::upload)
                .get(files::list)
                .delete(files::delete_matching)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/files/count", get(files::count))
        .route("/files/metadata/{id}", get(files::metadata))
        .route(
            "/files/{id}",
            get(files::download).delete(files::delete_one),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/user/auth", post(auth::sign_in))
        .route("/_emulator/stats", get(get_stats).delete(reset_stats))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state)
}

/// Hapi answers an unknown path, or a known path with another method, with a plain 404.
async fn not_found() -> Response {
    reply::boom(StatusCode::NOT_FOUND, "Not Found")
}

async fn get_stats(State(st): State<AppmixerState>) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let mut stats = serde_json::json!(st.chunk_stats());
    stats["incompleteFiles"] = loaded.files.incomplete().await.into();
    reply::json(StatusCode::OK, &stats)
}

async fn reset_stats(State(st): State<AppmixerState>) -> Response {
    st.inner.chunks.reset();
    get_stats(State(st)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_parse_at_the_first_colon_and_hide_the_password() {
        let login: Login = "a@b.c:pa:ss".parse().unwrap();
        assert_eq!(
            (login.email.as_str(), login.password.as_str()),
            ("a@b.c", "pa:ss")
        );
        assert!(!format!("{login:?}").contains("pa:ss"));
        assert!("a@b.c".parse::<Login>().is_err());
        assert!(":x".parse::<Login>().is_err());
        assert!("a@b.c:".parse::<Login>().is_err());
    }

    #[test]
    fn the_counter_keeps_its_maximum_until_reset() {
        let counter = ChunkCounter::default();
        let one = counter.enter();
        let two = counter.enter();
        drop(one);
        assert_eq!(
            counter.read(),
            ChunkStats {
                in_flight: 1,
                in_flight_max: 2,
                uploads: 2
            }
        );
        counter.reset();
        assert_eq!(counter.read().in_flight_max, 1);
        drop(two);
        assert_eq!(counter.read().in_flight, 0);
    }
}
