//! Presigned attachment uploads, the current API: `POST /channels/{channel_id}/attachments`
//! plans each file as one signed PUT (`singlepart`, up to 10 MiB) or as signed part PUTs
//! (`multipart`), and `POST /channels/{channel_id}/attachments/complete` joins the parts. The
//! signed URLs point at `/_storage/presigned/…` on the emulator itself, standing in for S3, so
//! they take no token and answer S3-style XML errors.
//!
//! Signing (`crate::presign`): `?expires=<unix ms>&signature=<hex>`, the md5 of the emulator's
//! secret, the upload name, the part number (0 for singlepart), the content type, the size and
//! the expiry; URLs live `upload_ttl`. A singlepart PUT must send exactly the planned
//! `Content-Type` and `Content-Length` (both signed: 403 `SignatureDoesNotMatch`; no length: 411)
//! and writes the object at once; a second PUT replaces it until a message takes it (then 403).
//! A part PUT may be at most `part_size` bytes and counts as a chunk in flight while received.
//!
//! *choices*: `part_size` is the larger of 10 MiB and a twentieth of the file rounded up to a
//! MiB; complete joins the parts received, in part order, as S3 does when the server lists them
//! (so a missing part makes a shorter object), and a plan with no parts, an unknown or finished
//! upload, or someone else's is 400 `NO_UPLOADED_PARTS_TO_FINALIZE`. The `filename` echoed in a
//! plan is the one sent; the message normalises the name it stores.

use std::collections::{BTreeMap, HashMap};
use std::io;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::attachments;
use super::auth::{Identity, Login};
use super::names;
use super::reply::{self, FieldError, Refused};
use super::{
    FluxerState, InFlight, Loaded, MAX_ATTACHMENTS_PER_MESSAGE, OBJECTS_NS, base_url, ms, now_ms,
};
use crate::body::{self, ReceiveError};
use crate::store::Store;
use crate::{presign, s3_error};

/// The store table holding one record per planned upload.
const UPLOADS_TABLE: &str = "fluxer_presigned";
/// Largest file planned as one PUT.
const SINGLEPART_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Smallest part of a multipart plan.
const MIN_PART_BYTES: u64 = 10 * 1024 * 1024;
/// About how many parts a multipart plan has.
const TARGET_PARTS: u64 = 20;
const MIB: u64 = 1024 * 1024;

/// One planned upload as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PresignedUpload {
    upload_filename: String,
    /// `Some` for a multipart plan.
    upload_id: Option<String>,
    owner: u64,
    file_size: u64,
    content_type: String,
    part_size: u64,
    part_count: u32,
    expires_ms: i64,
    /// Etag of every part received, by part number.
    parts: BTreeMap<u32, String>,
}

/// Every live plan by upload name.
#[derive(Debug, Default)]
pub(super) struct Uploads {
    by_name: HashMap<String, PresignedUpload>,
}

fn parts_ns(upload_filename: &str) -> String {
    format!("fluxer_parts:{upload_filename}")
}

impl Uploads {
    /// Reads the stored plans, deleting those that expired while the emulator was down.
    pub(super) async fn load(store: &Store, now: i64) -> io::Result<Uploads> {
        let mut by_name = HashMap::new();
        for (name, upload) in store.list_records::<PresignedUpload>(UPLOADS_TABLE).await? {
            if now >= upload.expires_ms {
                forget(store, &name).await?;
            } else {
                by_name.insert(name, upload);
            }
        }
        Ok(Uploads { by_name })
    }

    /// The live plan `name`; an expired one is deleted.
    async fn live(
        &mut self,
        store: &Store,
        name: &str,
    ) -> io::Result<Option<&mut PresignedUpload>> {
        if self
            .by_name
            .get(name)
            .is_some_and(|u| now_ms() >= u.expires_ms)
        {
            self.by_name.remove(name);
            forget(store, name).await?;
        }
        Ok(self.by_name.get_mut(name))
    }
}

async fn forget(store: &Store, name: &str) -> io::Result<()> {
    store.delete_record(UPLOADS_TABLE, name).await?;
    store.delete_namespace(&parts_ns(name)).await
}

/// What a URL for `part` of `upload` (0 for singlepart) is signed with.
fn signature(secret: &str, upload: &PresignedUpload, part: u32) -> String {
    presign::signature(
        secret,
        &[
            &upload.upload_filename,
            &part,
            &upload.content_type,
            &upload.file_size,
            &upload.expires_ms,
        ],
    )
}

fn url(base: &str, secret: &str, upload: &PresignedUpload, part: u32) -> String {
    let signed = presign::query(upload.expires_ms, &signature(secret, upload, part));
    match &upload.upload_id {
        None => format!(
            "{base}/_storage/presigned/{}?{signed}",
            upload.upload_filename
        ),
        Some(id) => format!(
            "{base}/_storage/presigned/{}/parts/{part}?upload_id={id}&{signed}",
            upload.upload_filename
        ),
    }
}

/// The part size of a multipart plan for `size` bytes.
fn part_size(size: u64) -> u64 {
    size.div_ceil(TARGET_PARTS)
        .div_ceil(MIB)
        .saturating_mul(MIB)
        .max(MIN_PART_BYTES)
}

/// One item of a plan request, validated.
struct PlanItem {
    id: i64,
    filename: String,
    file_size: u64,
    content_type: String,
}

fn decode_plan(body: &[u8]) -> Result<Vec<PlanItem>, Refused> {
    let invalid = |path: String, message: &str| -> Refused {
        reply::invalid_form(vec![FieldError::new(path, "INVALID_FORM_BODY", message)]).into()
    };
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(reply::invalid_field("body", "INVALID_JSON", "Invalid JSON body").into());
    };
    let items = map
        .get("attachments")
        .and_then(Value::as_array)
        .filter(|a| (1..=MAX_ATTACHMENTS_PER_MESSAGE).contains(&a.len()))
        .ok_or_else(|| invalid("attachments".into(), "Between 1 and 10 attachments"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let id = item
                .get("id")
                .and_then(Value::as_i64)
                .filter(|n| (0..=i32::MAX as i64).contains(n));
            let filename = item.get("filename").and_then(Value::as_str);
            let file_size = item.get("file_size").and_then(Value::as_u64);
            let content_type = item.get("content_type").and_then(Value::as_str);
            match (id, filename, file_size, content_type) {
                (Some(id), Some(filename), Some(file_size), Some(content_type)) => {
                    if let Some(problem) = names::length_problem(filename) {
                        return Err(invalid(format!("attachments.{i}.filename"), problem));
                    }
                    Ok(PlanItem {
                        id,
                        filename: filename.to_owned(),
                        file_size,
                        content_type: content_type.to_owned(),
                    })
                }
                _ => Err(invalid(
                    format!("attachments.{i}"),
                    "id, filename, file_size and content_type are required",
                )),
            }
        })
        .collect()
}

fn flow_and_channel(st: &FluxerState, loaded: &Loaded, channel_id: &str) -> Result<(), Refused> {
    if !st.inner.config.uploads.presigned {
        return Err(reply::feature_disabled().into());
    }
    loaded.world.channel(channel_id).map(drop)
}

/// `POST /channels/{channel_id}/attachments` → 200 `{"attachments": [item]}`.
pub(super) async fn plan(
    State(st): State<FluxerState>,
    Extension(who): Extension<Identity>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let loaded = loaded_or_500!(st, "planning uploads");
    if let Err(res) = flow_and_channel(&st, loaded, &channel_id) {
        return res.into_response();
    }
    let items = match decode_plan(&body) {
        Ok(items) => items,
        Err(res) => return res.into_response(),
    };
    let limit = st.max_attachment_bytes(who.login == Login::Bot);
    if items.iter().any(|item| item.file_size > limit) {
        return reply::file_too_large(limit);
    }
    let base = base_url(&headers);
    let expires_ms = now_ms().saturating_add(ms(st.inner.config.upload_ttl));
    let store = &st.inner.store;
    let mut uploads = loaded.presigned.lock().await;
    let mut answer = Vec::new();
    for item in items {
        let multipart = item.file_size > SINGLEPART_MAX_BYTES;
        let part_size = if multipart {
            part_size(item.file_size)
        } else {
            item.file_size
        };
        let upload = PresignedUpload {
            upload_filename: uuid::Uuid::new_v4().to_string(),
            upload_id: multipart.then(|| uuid::Uuid::new_v4().simple().to_string()),
            owner: who.user_id,
            file_size: item.file_size,
            content_type: item.content_type.clone(),
            part_size,
            part_count: if multipart {
                item.file_size.div_ceil(part_size) as u32
            } else {
                1
            },
            expires_ms,
            parts: BTreeMap::new(),
        };
        let mut json = json!({
            "id": item.id,
            "filename": item.filename,
            "upload_filename": upload.upload_filename,
            "file_size": item.file_size,
            "content_type": item.content_type,
        });
        if multipart {
            let parts: Vec<Value> = (1..=upload.part_count)
                .map(|n| json!({ "part_number": n, "upload_url": url(&base, &loaded.secret, &upload, n) }))
                .collect();
            json["upload_mode"] = json!("multipart");
            json["upload_id"] = json!(upload.upload_id);
            json["part_size"] = json!(part_size);
            json["parts"] = json!(parts);
        } else {
            json["upload_mode"] = json!("singlepart");
            json["upload_url"] = json!(url(&base, &loaded.secret, &upload, 0));
        }
        if let Err(err) = store
            .put_record(UPLOADS_TABLE, &upload.upload_filename, &upload)
            .await
        {
            return reply::internal_error("planning uploads", &err);
        }
        uploads
            .by_name
            .insert(upload.upload_filename.clone(), upload);
        answer.push(json);
    }
    reply::json(StatusCode::OK, &json!({ "attachments": answer }))
}

/// Checks a storage URL's query against the plan it names: signature (which binds the plan's
/// expiry and upload id), then expiry.
fn refusal(
    secret: &str,
    upload: &PresignedUpload,
    part: u32,
    query: &HashMap<String, String>,
) -> Option<Response> {
    presign::refusal(query, now_ms(), |expires| {
        let same_plan =
            expires == upload.expires_ms && upload.upload_id.as_ref() == query.get("upload_id");
        same_plan.then(|| signature(secret, upload, part))
    })
}

fn no_such_upload() -> Response {
    s3_error::error(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "The specified upload does not exist.",
    )
}

fn incomplete_body() -> Response {
    s3_error::error(
        StatusCode::BAD_REQUEST,
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header.",
    )
}

fn etag_reply(etag: &str) -> Response {
    let mut res = Response::new(Body::empty());
    if let Ok(value) = HeaderValue::from_str(etag) {
        res.headers_mut().insert(header::ETAG, value);
    }
    res
}

/// The live plan `name` (404 `NoSuchUpload` when unknown or expired; an expired one is
/// deleted), a copy taken under the lock.
async fn find(st: &FluxerState, loaded: &Loaded, name: &str) -> Result<PresignedUpload, Refused> {
    let mut uploads = loaded.presigned.lock().await;
    match uploads.live(&st.inner.store, name).await {
        Ok(Some(upload)) => Ok(upload.clone()),
        Ok(None) => Err(no_such_upload().into()),
        Err(err) => Err(reply::internal_error("finding an upload", &err).into()),
    }
}

/// `PUT` of the whole file to a singlepart `upload_url`.
pub(super) async fn put_single(
    State(st): State<FluxerState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let loaded = loaded_or_500!(st, "uploading");
    let upload = match find(&st, loaded, &name).await {
        Ok(upload) if upload.upload_id.is_none() => upload,
        Ok(_) => return no_such_upload(),
        Err(res) => return res.into_response(),
    };
    if let Some(res) = refusal(&loaded.secret, &upload, 0, &query) {
        return res;
    }
    if headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v != upload.content_type.as_str())
    {
        return s3_error::denied(
            "SignatureDoesNotMatch",
            "The signed Content-Type is missing or has another value.",
        );
    }
    let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    else {
        return s3_error::error(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        );
    };
    if length != upload.file_size {
        return s3_error::denied(
            "SignatureDoesNotMatch",
            &format!(
                "The URL is signed for a body of exactly {} bytes.",
                upload.file_size
            ),
        );
    }
    let store = &st.inner.store;
    let received = body::receive(
        store,
        OBJECTS_NS,
        &name,
        body.into_data_stream(),
        Some(upload.file_size),
    )
    .await;
    let received = match received {
        Ok(received) if received.size() == upload.file_size => received,
        Ok(_) | Err(ReceiveError::TooLarge { .. } | ReceiveError::Body(_)) => {
            return incomplete_body();
        }
        Err(ReceiveError::Io(err)) => return reply::internal_error("uploading", &err),
    };
    // A message holds the messages lock while it claims objects, so this check and the commit
    // cannot interleave with one.
    let messages = loaded.messages.lock().await;
    if messages.is_claimed(&name) {
        return s3_error::denied("AccessDenied", "This upload already belongs to a message.");
    }
    let etag = received.etag();
    if let Err(err) = received.writer.commit().await {
        return reply::internal_error("uploading", &err);
    }
    drop(messages);
    etag_reply(&etag)
}

/// `PUT` of one part to a multipart part URL.
pub(super) async fn put_part(
    State(st): State<FluxerState>,
    Path((name, part)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    // Parsed here, so a part number that is no number gets S3's XML error, not axum's text.
    let Ok(part) = part.parse::<u32>() else {
        return s3_error::error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive.",
        );
    };
    let loaded = loaded_or_500!(st, "uploading a part");
    let upload = match find(&st, loaded, &name).await {
        Ok(upload) if upload.upload_id.is_some() => upload,
        Ok(_) => return no_such_upload(),
        Err(res) => return res.into_response(),
    };
    if let Some(res) = refusal(&loaded.secret, &upload, part, &query) {
        return res;
    }
    if !(1..=upload.part_count).contains(&part) {
        return s3_error::error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Part number is out of range.",
        );
    }
    let store = &st.inner.store;
    let in_flight = InFlight::start(&st.inner.counters);
    let received = body::receive(
        store,
        &parts_ns(&name),
        &part.to_string(),
        body.into_data_stream(),
        Some(upload.part_size),
    )
    .await;
    drop(in_flight);
    let received = match received {
        Ok(received) => received,
        Err(ReceiveError::TooLarge { .. }) => {
            return s3_error::error(
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                "Your proposed upload exceeds the part size of this plan.",
            );
        }
        Err(ReceiveError::Body(_)) => return incomplete_body(),
        Err(ReceiveError::Io(err)) => return reply::internal_error("uploading a part", &err),
    };
    let mut uploads = loaded.presigned.lock().await;
    let upload = match uploads.live(store, &name).await {
        Ok(Some(upload)) => upload,
        Ok(None) => return no_such_upload(),
        Err(err) => return reply::internal_error("uploading a part", &err),
    };
    let etag = received.etag();
    if let Err(err) = received.writer.commit().await {
        return reply::internal_error("uploading a part", &err);
    }
    upload.parts.insert(part, etag.clone());
    if let Err(err) = store.put_record(UPLOADS_TABLE, &name, &*upload).await {
        return reply::internal_error("uploading a part", &err);
    }
    etag_reply(&etag)
}

fn nothing_to_finalize() -> Response {
    reply::error(
        StatusCode::BAD_REQUEST,
        "NO_UPLOADED_PARTS_TO_FINALIZE",
        "No uploaded parts were found to finalize.",
    )
}

/// `POST /channels/{channel_id}/attachments/complete` → 200 `{"uploads": [{"upload_filename"}]}`.
pub(super) async fn complete(
    State(st): State<FluxerState>,
    Extension(who): Extension<Identity>,
    Path(channel_id): Path<String>,
    body: Bytes,
) -> Response {
    let loaded = loaded_or_500!(st, "finalizing uploads");
    if let Err(res) = flow_and_channel(&st, loaded, &channel_id) {
        return res.into_response();
    }
    let requested: Option<Vec<(String, String)>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("uploads")?.as_array().cloned())
        .filter(|items| (1..=MAX_ATTACHMENTS_PER_MESSAGE).contains(&items.len()))
        .and_then(|items| {
            items
                .iter()
                .map(|item| {
                    let text = |key: &str| item.get(key)?.as_str().map(str::to_owned);
                    Some((text("upload_filename")?, text("upload_id")?))
                })
                .collect()
        });
    let Some(requested) = requested else {
        return reply::invalid_field(
            "uploads",
            "INVALID_FORM_BODY",
            "Between 1 and 10 uploads of {upload_filename, upload_id}",
        );
    };
    let store = &st.inner.store;
    // Take every plan out under the lock, so a second complete finds none of them.
    let taken = {
        let mut uploads = loaded.presigned.lock().await;
        let mut taken = Vec::new();
        for (name, upload_id) in &requested {
            let valid = match uploads.live(store, name).await {
                Ok(Some(upload)) => {
                    upload.upload_id.as_ref() == Some(upload_id)
                        && upload.owner == who.user_id
                        && !upload.parts.is_empty()
                }
                Ok(None) => false,
                Err(err) => return reply::internal_error("finalizing uploads", &err),
            };
            if !valid {
                for upload in taken {
                    uploads.by_name.insert(name_of(&upload), upload);
                }
                return nothing_to_finalize();
            }
            taken.push(
                uploads
                    .by_name
                    .remove(name)
                    .expect("the plan was just found"),
            );
        }
        taken
    };
    let mut done = Vec::new();
    for upload in taken {
        let name = name_of(&upload);
        let ns = parts_ns(&name);
        let parts: Vec<(String, String)> = upload
            .parts
            .keys()
            .map(|n| (ns.clone(), n.to_string()))
            .collect();
        let finished = match attachments::join(store, &parts, &name).await {
            Ok(_) => forget(store, &name).await,
            Err(err) => Err(err),
        };
        if let Err(err) = finished {
            loaded.presigned.lock().await.by_name.insert(name, upload);
            return reply::internal_error("finalizing uploads", &err);
        }
        done.push(json!({ "upload_filename": name }));
    }
    reply::json(StatusCode::OK, &json!({ "uploads": done }))
}

fn name_of(upload: &PresignedUpload) -> String {
    upload.upload_filename.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_at_least_ten_mib_and_about_twenty() {
        assert_eq!(part_size(11 * MIB), 10 * MIB);
        assert_eq!(part_size(100 * MIB), 10 * MIB);
        assert_eq!(part_size(500 * MIB), 25 * MIB);
        assert_eq!(part_size(500 * MIB + 1), 26 * MIB);
    }
}
