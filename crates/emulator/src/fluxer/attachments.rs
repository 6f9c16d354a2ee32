//! Object bodies: joining chunks or parts into one object, and the media route attachments are
//! downloaded from. Request bodies are received by `crate::body`.
//!
//! Bodies stream: nothing here holds more than one network chunk in memory.
//!
//! Download: `GET /attachments/{channel_id}/{attachment_id}/{filename}` needs no token (a
//! plain CDN GET, as in the February server); the filename must be the attachment's. One byte
//! range → 206 with `Content-Range`; a range past the end → 416; several ranges, a malformed
//! one, or `serve_ranges = false` → the whole body with 200.

use std::io;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use crate::ranged;
use axum::response::Response;
use futures::StreamExt;

use super::guilds::parse_id;
use super::{FluxerState, OBJECTS_NS, reply};
use crate::store::Store;

/// Writes the blobs `parts` (in order, each `(namespace, key)`) as one object `key` and
/// returns its size. A missing part is an error, so no partial object appears.
pub(super) async fn join(store: &Store, parts: &[(String, String)], key: &str) -> io::Result<u64> {
    let mut writer = store.create_blob(OBJECTS_NS, key).await?;
    for (ns, part) in parts {
        let blob = store.open_blob(ns, part).await?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("part {part} is missing"))
        })?;
        let size = blob.info.size;
        let mut stream = std::pin::pin!(blob.into_stream(0..size));
        while let Some(chunk) = stream.next().await {
            writer.write(&chunk?).await?;
        }
    }
    Ok(writer.commit().await?.size)
}

/// The size of the uploaded object `key`, if it exists.
pub(super) async fn object_size(store: &Store, key: &str) -> io::Result<Option<u64>> {
    Ok(store.open_blob(OBJECTS_NS, key).await?.map(|b| b.info.size))
}

/// `GET /attachments/{channel_id}/{attachment_id}/{filename}`.
pub(super) async fn download(
    State(st): State<FluxerState>,
    Path((channel_id, attachment_id, filename)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let not_found = || reply::error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found.");
    let (Ok(channel_id), Ok(attachment_id)) = (
        parse_id("channel_id", &channel_id),
        parse_id("attachment_id", &attachment_id),
    ) else {
        return not_found();
    };
    let loaded = loaded_or_500!(st, "downloading");
    let found = loaded
        .messages
        .lock()
        .await
        .attachment(channel_id, attachment_id)
        .filter(|a| a.filename == filename)
        .cloned();
    let Some(attachment) = found else {
        return not_found();
    };
    let blob = match st
        .inner
        .store
        .open_blob(OBJECTS_NS, &attachment.object)
        .await
    {
        Ok(Some(blob)) => blob,
        Ok(None) => return not_found(),
        Err(err) => return reply::internal_error("downloading", &err),
    };
    ranged::blob_response(
        blob,
        &headers,
        st.inner.serve_ranges,
        &attachment.content_type,
        || {
            reply::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_NOT_SATISFIABLE",
                "The requested range is not satisfiable.",
            )
        },
    )
}
