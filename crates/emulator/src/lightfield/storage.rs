//! The presigned storage URLs: `PUT /_storage/upload/{id}` and `GET /_storage/download/{id}`,
//! both with `?expires=<unix ms>&signature=<hex>`, where the signature is the md5 of the
//! emulator's secret, the operation, the id and the expiry (`crate::presign`). They stand in for the S3/GCS URLs the
//! real service hands out, so they take no Lightfield headers and answer S3-style XML errors.
//!
//! Upload rules: the signature and expiry must hold (403 `SignatureDoesNotMatch` /
//! `AccessDenied`), the file must be PENDING (403 `AccessDenied`), every `uploadHeaders` entry
//! must be sent with its exact value (403 `SignatureDoesNotMatch`; extra headers are fine), the
//! body must be exactly `sizeBytes` long (403 `SignatureDoesNotMatch`, as a URL signed for a
//! length), and with `if-none-match: *` an existing body is 412. The body streams to disk while
//! its md5 is computed, so `complete` needs no second pass. A PUT again replaces the body.
//!
//! Download: one byte range → 206 with `Content-Range`; no or an ignored Range → 200; a range
//! past the end → 416.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::body::{self, ReceiveError};
use crate::{presign, ranged, s3_error};
use axum::response::Response;

use super::{BLOB_NS, LightfieldState, Status, Uploaded, now_ms, reply};

/// What a presigned URL allows.
#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    Upload,
    Download,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Op::Upload => "upload",
            Op::Download => "download",
        }
    }
}

/// The URL under `base` that allows `op` on `id` until `expires` (unix ms).
pub(super) fn presign(base: &str, secret: &str, op: Op, id: &str, expires: i64) -> String {
    let path_id: String =
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!(
        "{base}/_storage/{}/{path_id}?{}",
        op.path(),
        presign::query(expires, &signature(secret, op, id, expires))
    )
}

/// What a URL for `op` on `id` until `expires` is signed with.
fn signature(secret: &str, op: Op, id: &str, expires: i64) -> String {
    presign::signature(secret, &[&op.path(), &id, &expires])
}

/// Why a storage request's signature or expiry does not hold, if it does not.
fn refusal(secret: &str, op: Op, id: &str, query: &HashMap<String, String>) -> Option<Response> {
    presign::refusal(query, now_ms(), |expires| {
        Some(signature(secret, op, id, expires))
    })
}

/// `PUT` of the raw bytes to an `uploadUrl`.
pub(super) async fn upload(
    State(st): State<LightfieldState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(err) => return reply::internal_error("uploading", &err),
    };
    if let Some(res) = refusal(&loaded.secret, Op::Upload, &id, &query) {
        return res;
    }
    let record = match loaded.files.lock().await.get(&id) {
        Some(record) if record.status_at(now_ms()) == Status::Pending => record.clone(),
        Some(_) => {
            return s3_error::denied("AccessDenied", "The upload session is no longer open.");
        }
        None => {
            return s3_error::error(StatusCode::NOT_FOUND, "NoSuchUpload", "No such upload.");
        }
    };
    for (name, value) in &record.upload_headers {
        if headers
            .get(name.as_str())
            .is_none_or(|sent| sent != value.as_str())
        {
            return s3_error::denied(
                "SignatureDoesNotMatch",
                &format!("The signed header '{name}' is missing or has another value."),
            );
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len != record.size_bytes) {
        return wrong_length(record.size_bytes);
    }
    let conditional = record.upload_headers.contains_key("if-none-match");
    if conditional && body_exists(&st, &id).await {
        return precondition_failed();
    }

    let stream = body.into_data_stream();
    let limit = Some(record.size_bytes);
    let received = match body::receive(&st.inner.store, BLOB_NS, &id, stream, limit).await {
        Ok(received) if received.size() == record.size_bytes => received,
        Ok(_) | Err(ReceiveError::TooLarge { .. }) => return wrong_length(record.size_bytes),
        Err(ReceiveError::Body(_)) => {
            return s3_error::error(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                "The request body ended early.",
            );
        }
        Err(ReceiveError::Io(err)) => return reply::internal_error("uploading", &err),
    };
    let uploaded = Uploaded {
        size: received.size(),
        md5: received.md5,
    };

    // Commit and record under the files lock, re-checking that the session is still open.
    let mut files = loaded.files.lock().await;
    let mut record = match files.get(&id) {
        Some(record) if record.status_at(now_ms()) == Status::Pending => record.clone(),
        _ => return s3_error::denied("AccessDenied", "The upload session is no longer open."),
    };
    if conditional && body_exists(&st, &id).await {
        return precondition_failed();
    }
    if let Err(err) = received.writer.commit().await {
        return reply::internal_error("uploading", &err);
    }
    let etag = format!("\"{}\"", uploaded.md5);
    record.uploaded = Some(uploaded);
    if let Err(err) = st.save(&mut files, record).await {
        return reply::internal_error("uploading", &err);
    }
    let mut res = Response::new(Body::empty());
    if let Ok(value) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, value);
    }
    res
}

/// Whether `id` already has a body, for `if-none-match: *`.
async fn body_exists(st: &LightfieldState, id: &str) -> bool {
    matches!(st.inner.store.open_blob(BLOB_NS, id).await, Ok(Some(_)))
}

fn wrong_length(size: u64) -> Response {
    s3_error::denied(
        "SignatureDoesNotMatch",
        &format!("The URL is signed for a body of exactly {size} bytes."),
    )
}

fn precondition_failed() -> Response {
    s3_error::error(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold.",
    )
}

/// `GET` of a download URL, with single-range support.
pub(super) async fn download(
    State(st): State<LightfieldState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(err) => return reply::internal_error("downloading", &err),
    };
    if let Some(res) = refusal(&loaded.secret, Op::Download, &id, &query) {
        return res;
    }
    let mime_type = match loaded.files.lock().await.get(&id) {
        Some(record) if record.status == Status::Completed => record.mime_type.clone(),
        _ => return s3_error::error(StatusCode::NOT_FOUND, "NoSuchKey", "No such key."),
    };
    let blob = match st.inner.store.open_blob(BLOB_NS, &id).await {
        Ok(Some(blob)) => blob,
        Ok(None) => {
            return s3_error::error(StatusCode::NOT_FOUND, "NoSuchKey", "No such key.");
        }
        Err(err) => return reply::internal_error("downloading", &err),
    };
    ranged::blob_response(blob, &headers, true, &mime_type, || {
        s3_error::error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The requested range is not satisfiable.",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_operation_id_and_expiry() {
        let base = signature("s", Op::Upload, "fil_1", 5);
        assert_ne!(base, signature("s", Op::Download, "fil_1", 5));
        assert_ne!(base, signature("s", Op::Upload, "fil_2", 5));
        assert_ne!(base, signature("s", Op::Upload, "fil_1", 6));
        assert_ne!(base, signature("t", Op::Upload, "fil_1", 5));
    }
}
