//! Chunked uploads (`/channels/{channel_id}/chunked-uploads…`, seed 004): create a session, PUT
//! raw chunks in any order, complete with every etag.
//!
//! A session is one record (`fluxer_chunked`, keyed by upload id) and lives in memory; its
//! chunks are blobs in a namespace of their own, keyed by index. Rules, as
//! `ChunkedUploadService` has them: the routes are for user sessions only (bots 403
//! `ACCESS_DENIED`); a session lives `upload_ttl` (404 `CHUNKED_UPLOAD_NOT_FOUND` after, as for
//! an unknown id); another user's session is 403 `CHUNKED_UPLOAD_NOT_OWNED`; an index outside
//! `[0, chunk_count)` is 400 `CHUNKED_UPLOAD_CHUNK_INDEX_OUT_OF_RANGE`; a chunk's length is not
//! checked and a second PUT of an index replaces it; the path's channel is not checked against
//! the session on chunk and complete. Complete needs exactly one etag per chunk (400
//! `CHUNKED_UPLOAD_INCOMPLETE`), joins the chunks in index order into the object
//! `upload_filename`, deletes the session and answers the size declared at create.
//! *choice* (fluxer.md's guess): an etag that does not match the stored chunk fails inside S3
//! upstream, so it is 500 here too, and the session stays.
//!
//! A chunk body streams to disk and becomes visible only once whole: an interrupted PUT stores
//! nothing of that chunk. While its body is received the chunk counts as in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::attachments;
use super::auth::Identity;
use super::names;
use super::reply::{self, FieldError, Refused};
use super::{FluxerState, InFlight, ms, now_ms};
use crate::body::{self, ReceiveError};
use crate::store::Store;

/// The store table holding one record per open session.
const SESSIONS_TABLE: &str = "fluxer_chunked";
/// Most chunks one upload may have.
const MAX_CHUNKS: u64 = 128;

/// One open session as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ChunkedSession {
    upload_id: String,
    upload_filename: String,
    owner: u64,
    file_size: u64,
    chunk_count: u64,
    content_type: String,
    expires_ms: i64,
    /// Etag of every chunk received, by index.
    etags: BTreeMap<u64, String>,
}

/// Every open session by upload id.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    by_id: HashMap<String, ChunkedSession>,
}

fn chunks_ns(upload_id: &str) -> String {
    format!("fluxer_chunks:{upload_id}")
}

impl Sessions {
    /// Reads the stored sessions, deleting those that expired while the emulator was down.
    pub(super) async fn load(store: &Store, now: i64) -> io::Result<Sessions> {
        let mut by_id = HashMap::new();
        for (id, session) in store.list_records::<ChunkedSession>(SESSIONS_TABLE).await? {
            if now >= session.expires_ms {
                forget(store, &id).await?;
            } else {
                by_id.insert(id, session);
            }
        }
        Ok(Sessions { by_id })
    }

    /// The live session `id` for `who`: 404 when unknown or expired (an expired one is
    /// deleted), 403 when someone else's.
    async fn owned(
        &mut self,
        store: &Store,
        id: &str,
        who: &Identity,
    ) -> Result<&mut ChunkedSession, Refused> {
        let expired = self.by_id.get(id).map(|s| now_ms() >= s.expires_ms);
        match expired {
            None => return Err(not_found().into()),
            Some(true) => {
                self.by_id.remove(id);
                forget(store, id)
                    .await
                    .map_err(|err| reply::internal_error("expiring an upload", &err))?;
                return Err(not_found().into());
            }
            Some(false) => {}
        }
        let session = self.by_id.get_mut(id).ok_or_else(not_found)?;
        if session.owner != who.user_id {
            return Err(reply::error(
                StatusCode::FORBIDDEN,
                "CHUNKED_UPLOAD_NOT_OWNED",
                "You don't own this upload session.",
            )
            .into());
        }
        Ok(session)
    }
}

/// Deletes a session's record and chunks.
async fn forget(store: &Store, id: &str) -> io::Result<()> {
    store.delete_record(SESSIONS_TABLE, id).await?;
    store.delete_namespace(&chunks_ns(id)).await
}

fn not_found() -> Response {
    reply::error(
        StatusCode::NOT_FOUND,
        "CHUNKED_UPLOAD_NOT_FOUND",
        "Upload session wasn't found or has expired.",
    )
}

fn out_of_range() -> Response {
    reply::error(
        StatusCode::BAD_REQUEST,
        "CHUNKED_UPLOAD_CHUNK_INDEX_OUT_OF_RANGE",
        "Chunk index is out of range for this upload.",
    )
}

fn incomplete() -> Response {
    reply::error(
        StatusCode::BAD_REQUEST,
        "CHUNKED_UPLOAD_INCOMPLETE",
        "Not all chunks have been uploaded.",
    )
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refused> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(reply::invalid_field("body", "INVALID_JSON", "Invalid JSON body").into()),
    }
}

/// A `{upload_id}` path segment: 1..=128 characters.
fn check_upload_id(id: &str) -> Result<(), Refused> {
    if (1..=128).contains(&id.len()) {
        Ok(())
    } else {
        Err(reply::invalid_field(
            "upload_id",
            "STRING_LENGTH_INVALID",
            "Upload id length must be between 1 and 128 characters",
        )
        .into())
    }
}

/// `POST /channels/{channel_id}/chunked-uploads` → 201.
pub(super) async fn create(
    State(st): State<FluxerState>,
    Extension(who): Extension<Identity>,
    Path(channel_id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(res) = who.require_user() {
        return res.into_response();
    }
    let loaded = loaded_or_500!(st, "creating an upload");
    if let Err(res) = loaded.world.channel(&channel_id) {
        return res.into_response();
    }
    let map = match json_object(&body) {
        Ok(map) => map,
        Err(res) => return res.into_response(),
    };
    let mut errors = Vec::new();
    let filename = match map.get("filename").and_then(Value::as_str) {
        Some(name) => match names::length_problem(name) {
            None => Some(names::normalize(name)),
            Some(problem) => {
                errors.push(FieldError::new(
                    "filename",
                    "FILENAME_LENGTH_INVALID",
                    problem,
                ));
                None
            }
        },
        None => {
            errors.push(FieldError::new(
                "filename",
                "REQUIRED",
                "Filename is required",
            ));
            None
        }
    };
    let file_size = map
        .get("file_size")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0);
    if file_size.is_none() {
        errors.push(FieldError::new(
            "file_size",
            "INVALID_INTEGER",
            "File size must be a positive integer",
        ));
    }
    let (Some(filename), Some(file_size)) = (filename, file_size) else {
        return reply::invalid_form(errors);
    };
    let limit = st.max_attachment_bytes(false);
    let chunk_size = st.inner.config.chunk_size_bytes;
    let chunk_count = file_size.div_ceil(chunk_size);
    if file_size > limit || chunk_count > MAX_CHUNKS {
        return reply::file_too_large(limit);
    }
    let session = ChunkedSession {
        upload_id: uuid::Uuid::new_v4().to_string(),
        upload_filename: uuid::Uuid::new_v4().to_string(),
        owner: who.user_id,
        file_size,
        chunk_count,
        content_type: names::content_type(&filename).to_owned(),
        expires_ms: now_ms().saturating_add(ms(st.inner.config.upload_ttl)),
        etags: BTreeMap::new(),
    };
    let mut sessions = loaded.chunked.lock().await;
    let store = &st.inner.store;
    if let Err(err) = store
        .put_record(SESSIONS_TABLE, &session.upload_id, &session)
        .await
    {
        return reply::internal_error("creating an upload", &err);
    }
    let answer = json!({
        "upload_id": session.upload_id,
        "upload_filename": session.upload_filename,
        "chunk_size": chunk_size,
        "chunk_count": chunk_count,
    });
    sessions.by_id.insert(session.upload_id.clone(), session);
    reply::json(StatusCode::CREATED, &answer)
}

/// `PUT /channels/{channel_id}/chunked-uploads/{upload_id}/chunks/{chunk_index}` with the raw
/// chunk bytes → 200 `{"etag"}`.
pub(super) async fn upload_chunk(
    State(st): State<FluxerState>,
    Extension(who): Extension<Identity>,
    Path((_channel_id, upload_id, chunk_index)): Path<(String, String, String)>,
    body: Body,
) -> Response {
    if let Err(res) = who.require_user() {
        return res.into_response();
    }
    if let Err(res) = check_upload_id(&upload_id) {
        return res.into_response();
    }
    let Some(index) = chunk_index
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (0..=i32::MAX as i64).contains(n))
        .map(|n| n as u64)
    else {
        return reply::invalid_field(
            "chunk_index",
            "INVALID_INTEGER",
            "Chunk index must be a non-negative integer",
        );
    };
    let loaded = loaded_or_500!(st, "uploading a chunk");
    let store = &st.inner.store;
    {
        let mut sessions = loaded.chunked.lock().await;
        let session = match sessions.owned(store, &upload_id, &who).await {
            Ok(session) => session,
            Err(res) => return res.into_response(),
        };
        if index >= session.chunk_count {
            return out_of_range();
        }
    }

    let in_flight = InFlight::start(&st.inner.counters);
    let ns = chunks_ns(&upload_id);
    let key = index.to_string();
    let received = body::receive(store, &ns, &key, body.into_data_stream(), None).await;
    drop(in_flight);
    let received = match received {
        Ok(received) => received,
        Err(ReceiveError::Io(err)) => return reply::internal_error("storing a chunk", &err),
        Err(_) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "The request body ended early.",
            );
        }
    };

    // Commit under the lock, re-checking that the session is still open.
    let mut sessions = loaded.chunked.lock().await;
    let session = match sessions.owned(store, &upload_id, &who).await {
        Ok(session) => session,
        Err(res) => return res.into_response(),
    };
    let etag = received.etag();
    if let Err(err) = received.writer.commit().await {
        return reply::internal_error("storing a chunk", &err);
    }
    session.etags.insert(index, etag.clone());
    if let Err(err) = store
        .put_record(SESSIONS_TABLE, &upload_id, &*session)
        .await
    {
        return reply::internal_error("storing a chunk", &err);
    }
    reply::json(StatusCode::OK, &json!({ "etag": etag }))
}

/// The `etags` of a complete request as (index, etag).
fn decode_etags(body: &[u8]) -> Result<Vec<(u64, String)>, Refused> {
    let map = json_object(body)?;
    let invalid = || -> Refused {
        reply::invalid_field(
            "etags",
            "INVALID_ETAGS",
            "Etags must be a non-empty array of {chunk_index, etag}",
        )
        .into()
    };
    let items = map
        .get("etags")
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
        .ok_or_else(invalid)?;
    items
        .iter()
        .map(|item| {
            let index = item.get("chunk_index").and_then(Value::as_u64);
            let etag = item.get("etag").and_then(Value::as_str);
            match (index, etag) {
                (Some(index), Some(etag)) => Ok((index, etag.to_owned())),
                _ => Err(invalid()),
            }
        })
        .collect()
}

/// `POST /channels/{channel_id}/chunked-uploads/{upload_id}/complete` → 200.
pub(super) async fn complete(
    State(st): State<FluxerState>,
    Extension(who): Extension<Identity>,
    Path((_channel_id, upload_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(res) = who.require_user() {
        return res.into_response();
    }
    if let Err(res) = check_upload_id(&upload_id) {
        return res.into_response();
    }
    let etags = match decode_etags(&body) {
        Ok(etags) => etags,
        Err(res) => return res.into_response(),
    };
    let loaded = loaded_or_500!(st, "completing an upload");
    let store = &st.inner.store;
    // Validate, then take the session out so no chunk or second complete can race the join.
    let session = {
        let mut sessions = loaded.chunked.lock().await;
        let session = match sessions.owned(store, &upload_id, &who).await {
            Ok(session) => session,
            Err(res) => return res.into_response(),
        };
        if etags.len() as u64 != session.chunk_count {
            return incomplete();
        }
        let mut seen = HashSet::new();
        for (index, _) in &etags {
            if *index >= session.chunk_count {
                return out_of_range();
            }
            if !seen.insert(*index) {
                return incomplete();
            }
        }
        if let Some((index, _)) = etags
            .iter()
            .find(|(index, etag)| session.etags.get(index) != Some(etag))
        {
            return reply::internal_error(
                "completing an upload",
                &format!("the etag of chunk {index} does not match a stored chunk"),
            );
        }
        sessions
            .by_id
            .remove(&upload_id)
            .expect("the session was just found")
    };
    let ns = chunks_ns(&upload_id);
    let parts: Vec<(String, String)> = (0..session.chunk_count)
        .map(|i| (ns.clone(), i.to_string()))
        .collect();
    let joined = attachments::join(store, &parts, &session.upload_filename).await;
    let finished = match joined {
        Ok(_) => forget(store, &upload_id).await,
        Err(err) => Err(err),
    };
    if let Err(err) = finished {
        loaded
            .chunked
            .lock()
            .await
            .by_id
            .insert(upload_id.clone(), session);
        return reply::internal_error("completing an upload", &err);
    }
    reply::json(
        StatusCode::OK,
        &json!({
            "upload_filename": session.upload_filename,
            "file_size": session.file_size,
            "content_type": session.content_type,
        }),
    )
}
