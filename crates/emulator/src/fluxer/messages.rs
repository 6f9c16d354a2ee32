//! Messages and their attachments: create (JSON, or multipart with `payload_json` and inline
//! `files[n]` parts), list, get, delete, delete one attachment.
//!
//! Every message is one record (`fluxer_messages`, keyed by id) and lives in memory in a
//! per-channel `BTreeMap` ordered by id, which is creation order, so a page is a range scan.
//! An attachment's body is the object it was created from (an inline part, a completed chunked
//! upload, a presigned upload), kept under its own key in the objects namespace and deleted with
//! the attachment.
//!
//! Attachment metadata (`attachments[]` in the payload), matched by `id`:
//! - with `uploaded_filename` (chunked) or `upload_filename` (presigned): the uploaded object,
//!   which must exist and not already belong to a message, else 400 `INVALID_FORM_BODY` with
//!   `NO_FILE_FOR_ATTACHMENT_METADATA`; both keys work in JSON and multipart bodies (*choice*:
//!   upstream resolves the chunked key only in multipart);
//! - otherwise the inline part `files[<id>]`; metadata without one is the same 400.
//! - *choice*: an inline part without metadata is attached under its part filename.
//!
//! Names are normalised (`names::normalize`); sizes come from the stored bytes; the content
//! type from the filename, or the presigned request's `content_type` when it gave one.
//! Listing follows `limit` (1–100, default 50) and one of `around`, or `before` and/or `after`;
//! answers are newest first; `after` alone gives the `limit` messages right after it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

use axum::Extension;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::attachments;
use super::auth::{Identity, Login};
use super::guilds::{World, parse_id};
use super::names;
use super::reply::{self, FieldError, Refused};
use super::snowflake::timestamp_ms;
use super::{FluxerState, Loaded, MAX_ATTACHMENTS_PER_MESSAGE, OBJECTS_NS, base_url, now_ms};
use crate::body::{self, ReceiveError};
use crate::iso_millis;
use crate::store::Store;

/// The store table holding one record per message.
const MESSAGES_TABLE: &str = "fluxer_messages";
/// Longest message content in characters.
const MAX_CONTENT_CHARS: usize = 2000;
/// Largest JSON body or `payload_json` field accepted.
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Default and largest page of `GET .../messages`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 100;
/// Bytes kept unescaped in attachment URLs (normalised names use only these and letters).
const URL_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

/// One stored attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct AttachmentRecord {
    pub id: u64,
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    /// Key of the body in the objects namespace.
    pub object: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub flags: u32,
}

/// One stored message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct MessageRecord {
    pub id: u64,
    pub channel_id: u64,
    pub author_id: u64,
    pub content: String,
    pub nonce: Option<String>,
    pub flags: u32,
    pub attachments: Vec<AttachmentRecord>,
}

/// Every message in memory, with the indexes the routes need.
#[derive(Debug, Default)]
pub(super) struct Messages {
    by_channel: HashMap<u64, BTreeMap<u64, MessageRecord>>,
    /// Attachment id → (channel id, message id).
    attachments: HashMap<u64, (u64, u64)>,
    /// Object keys that belong to an attachment.
    claimed: HashSet<String>,
    count: usize,
}

impl Messages {
    /// Reads every stored message.
    pub(super) async fn load(store: &Store) -> io::Result<Messages> {
        let mut messages = Messages::default();
        for (_, record) in store.list_records::<MessageRecord>(MESSAGES_TABLE).await? {
            messages.index(record);
        }
        Ok(messages)
    }

    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// The largest message or attachment id stored (0 when empty).
    pub(super) fn max_id(&self) -> u64 {
        let messages = self
            .by_channel
            .values()
            .filter_map(|m| m.keys().next_back());
        messages
            .chain(self.attachments.keys())
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// The attachment `id` of a message in `channel`.
    pub(super) fn attachment(&self, channel: u64, id: u64) -> Option<&AttachmentRecord> {
        let (in_channel, message) = *self.attachments.get(&id)?;
        (in_channel == channel).then_some(())?;
        self.get(channel, message)?
            .attachments
            .iter()
            .find(|a| a.id == id)
    }

    /// Whether the object `key` is free to become an attachment.
    pub(super) fn is_claimed(&self, key: &str) -> bool {
        self.claimed.contains(key)
    }

    fn get(&self, channel: u64, id: u64) -> Option<&MessageRecord> {
        self.by_channel.get(&channel)?.get(&id)
    }

    fn index(&mut self, record: MessageRecord) {
        for attachment in &record.attachments {
            self.attachments
                .insert(attachment.id, (record.channel_id, record.id));
            self.claimed.insert(attachment.object.clone());
        }
        let previous = self
            .by_channel
            .entry(record.channel_id)
            .or_default()
            .insert(record.id, record);
        if previous.is_none() {
            self.count += 1;
        }
    }

    fn unindex(&mut self, channel: u64, id: u64) -> Option<MessageRecord> {
        let record = self.by_channel.get_mut(&channel)?.remove(&id)?;
        self.count -= 1;
        for attachment in &record.attachments {
            self.attachments.remove(&attachment.id);
            self.claimed.remove(&attachment.object);
        }
        Some(record)
    }

    /// Stores `record` (new or changed), then indexes it.
    async fn save(&mut self, store: &Store, record: MessageRecord) -> io::Result<()> {
        store
            .put_record(MESSAGES_TABLE, &record.id.to_string(), &record)
            .await?;
        self.unindex(record.channel_id, record.id);
        self.index(record);
        Ok(())
    }

    /// One page of `channel`, newest first.
    fn page(&self, channel: u64, query: &PageQuery) -> Vec<&MessageRecord> {
        let Some(all) = self.by_channel.get(&channel) else {
            return Vec::new();
        };
        let limit = query.limit;
        if let Some(around) = query.around {
            let newer = limit / 2;
            let mut page: Vec<&MessageRecord> = all
                .range(around + 1..)
                .take(newer)
                .map(|(_, m)| m)
                .collect();
            page.reverse();
            let older = limit - page.len();
            page.extend(all.range(..=around).rev().take(older).map(|(_, m)| m));
            return page;
        }
        let low = query.after.map_or(0, |a| a.saturating_add(1));
        let high = query.before.unwrap_or(u64::MAX);
        if low >= high {
            return Vec::new();
        }
        let range = all.range(low..high);
        if query.after.is_some() && query.before.is_none() {
            let mut page: Vec<&MessageRecord> = range.take(limit).map(|(_, m)| m).collect();
            page.reverse();
            page
        } else {
            range.rev().take(limit).map(|(_, m)| m).collect()
        }
    }
}

/// The paging parameters of `GET .../messages`.
struct PageQuery {
    limit: usize,
    before: Option<u64>,
    after: Option<u64>,
    around: Option<u64>,
}

impl PageQuery {
    fn decode(query: &HashMap<String, String>) -> Result<PageQuery, Refused> {
        let limit = match query.get("limit").map(|s| s.trim()) {
            None | Some("") => DEFAULT_PAGE,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(reply::invalid_field(
                        "limit",
                        "INVALID_INTEGER",
                        "Invalid integer: must be between 1 and 100",
                    )
                    .into());
                }
            },
        };
        let id = |param: &str| match query.get(param) {
            None => Ok(None),
            Some(text) => parse_id(param, text).map(Some),
        };
        Ok(PageQuery {
            limit,
            before: id("before")?,
            after: id("after")?,
            around: id("around")?,
        })
    }
}

/// `MessageResponseSchema` of `record`.
fn message_json(record: &MessageRecord, world: &World, base: &str) -> Value {
    let attachments: Vec<Value> = record
        .attachments
        .iter()
        .map(|a| {
            let url = format!(
                "{base}/attachments/{}/{}/{}",
                record.channel_id,
                a.id,
                utf8_percent_encode(&a.filename, URL_NAME)
            );
            json!({
                "id": a.id.to_string(),
                "filename": a.filename,
                "title": a.title,
                "description": a.description,
                "content_type": a.content_type,
                "content_hash": null,
                "size": a.size,
                "url": url,
                "proxy_url": url,
                "width": null,
                "height": null,
                "placeholder": null,
                "flags": a.flags,
                "nsfw": null,
                "duration": null,
                "waveform": null,
                "expires_at": null,
                "expired": false,
            })
        })
        .collect();
    json!({
        "id": record.id.to_string(),
        "channel_id": record.channel_id.to_string(),
        "author": world.user_by_id(record.author_id).partial(),
        "webhook_id": null,
        "type": 0,
        "flags": record.flags,
        "content": record.content,
        "timestamp": iso_millis(timestamp_ms(record.id)),
        "edited_timestamp": null,
        "pinned": false,
        "mention_everyone": false,
        "tts": false,
        "mentions": [],
        "mention_roles": [],
        "embeds": [],
        "attachments": attachments,
        "stickers": [],
        "reactions": [],
        "message_reference": null,
        "nonce": record.nonce,
    })
}

/// `GET /channels/{channel_id}/messages`.
pub(super) async fn list(
    State(st): State<FluxerState>,
    Path(channel_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let loaded = loaded_or_500!(st, "listing messages");
    let channel = match loaded.world.channel(&channel_id) {
        Ok(channel) => channel.id,
        Err(res) => return res.into_response(),
    };
    let query = match PageQuery::decode(&query) {
        Ok(query) => query,
        Err(res) => return res.into_response(),
    };
    let base = base_url(&headers);
    let messages = loaded.messages.lock().await;
    let page: Vec<Value> = messages
        .page(channel, &query)
        .into_iter()
        .map(|m| message_json(m, &loaded.world, &base))
        .collect();
    reply::json(StatusCode::OK, &page)
}

/// The channel and message ids of a message route, both checked.
fn message_ids(loaded: &Loaded, channel_id: &str, message_id: &str) -> Result<(u64, u64), Refused> {
    let channel = loaded.world.channel(channel_id)?.id;
    Ok((channel, parse_id("message_id", message_id)?))
}

/// `GET /channels/{channel_id}/messages/{message_id}`.
pub(super) async fn get_one(
    State(st): State<FluxerState>,
    Path((channel_id, message_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let loaded = loaded_or_500!(st, "reading a message");
    let (channel, id) = match message_ids(loaded, &channel_id, &message_id) {
        Ok(ids) => ids,
        Err(res) => return res.into_response(),
    };
    match loaded.messages.lock().await.get(channel, id) {
        Some(m) => reply::json(
            StatusCode::OK,
            &message_json(m, &loaded.world, &base_url(&headers)),
        ),
        None => reply::unknown_message(),
    }
}

/// `DELETE /channels/{channel_id}/messages/{message_id}` → 204; its attachments' bodies go too.
pub(super) async fn delete_one(
    State(st): State<FluxerState>,
    Path((channel_id, message_id)): Path<(String, String)>,
) -> Response {
    let loaded = loaded_or_500!(st, "deleting a message");
    let (channel, id) = match message_ids(loaded, &channel_id, &message_id) {
        Ok(ids) => ids,
        Err(res) => return res.into_response(),
    };
    let store = &st.inner.store;
    let mut messages = loaded.messages.lock().await;
    if messages.get(channel, id).is_none() {
        return reply::unknown_message();
    }
    if let Err(err) = store.delete_record(MESSAGES_TABLE, &id.to_string()).await {
        return reply::internal_error("deleting a message", &err);
    }
    let record = messages.unindex(channel, id);
    drop(messages);
    for attachment in record.iter().flat_map(|r| &r.attachments) {
        if let Err(err) = store.delete_blob(OBJECTS_NS, &attachment.object).await {
            return reply::internal_error("deleting an attachment body", &err);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /channels/{channel_id}/messages/{message_id}/attachments/{attachment_id}` → 204.
/// *choice*: an unknown attachment of a known message is 404 `UNKNOWN_MESSAGE` (the API has no
/// `UNKNOWN_ATTACHMENT`); the message stays even when it has no content left.
pub(super) async fn delete_attachment(
    State(st): State<FluxerState>,
    Path((channel_id, message_id, attachment_id)): Path<(String, String, String)>,
) -> Response {
    let loaded = loaded_or_500!(st, "deleting an attachment");
    let (channel, id) = match message_ids(loaded, &channel_id, &message_id) {
        Ok(ids) => ids,
        Err(res) => return res.into_response(),
    };
    let attachment_id = match parse_id("attachment_id", &attachment_id) {
        Ok(id) => id,
        Err(res) => return res.into_response(),
    };
    let store = &st.inner.store;
    let mut messages = loaded.messages.lock().await;
    let Some(mut record) = messages.get(channel, id).cloned() else {
        return reply::unknown_message();
    };
    let Some(at) = record
        .attachments
        .iter()
        .position(|a| a.id == attachment_id)
    else {
        return reply::unknown_message();
    };
    let removed = record.attachments.remove(at);
    if let Err(err) = messages.save(store, record).await {
        return reply::internal_error("deleting an attachment", &err);
    }
    drop(messages);
    if let Err(err) = store.delete_blob(OBJECTS_NS, &removed.object).await {
        return reply::internal_error("deleting an attachment body", &err);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// An inline `files[n]` part, already stored under `object`.
struct InlineFile {
    index: i64,
    filename: String,
    object: String,
    size: u64,
}

/// `POST /channels/{channel_id}/messages`.
pub(super) async fn create(
    State(st): State<FluxerState>,
    Extension(who): Extension<Identity>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let loaded = loaded_or_500!(st, "creating a message");
    let channel = match loaded.world.channel(&channel_id) {
        Ok(channel) => channel.id,
        Err(res) => return res.into_response(),
    };
    let mut inline = Vec::new();
    let result = create_message(&st, loaded, &who, channel, &headers, req, &mut inline).await;
    if result.is_err() {
        for file in &inline {
            // Best effort: an object nobody references is harmless.
            let _ = st.inner.store.delete_blob(OBJECTS_NS, &file.object).await;
        }
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn create_message(
    st: &FluxerState,
    loaded: &Loaded,
    who: &Identity,
    channel: u64,
    headers: &HeaderMap,
    req: Request,
    inline: &mut Vec<InlineFile>,
) -> Result<Response, Refused> {
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let max_file = st.max_attachment_bytes(who.login == Login::Bot);
    let payload: Value = if multipart {
        read_multipart(st, req, max_file, inline).await?
    } else {
        let body = axum::body::to_bytes(req.into_body(), MAX_PAYLOAD_BYTES)
            .await
            .map_err(|_| invalid_json())?;
        serde_json::from_slice(&body).map_err(|_| invalid_json())?
    };
    let Value::Object(payload) = payload else {
        return Err(invalid_json().into());
    };
    let content = match payload.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) if text.chars().count() <= MAX_CONTENT_CHARS => text.clone(),
        Some(_) => {
            return Err(reply::invalid_field(
                "content",
                "CONTENT_LENGTH_INVALID",
                "Content must be a string of at most 2000 characters",
            )
            .into());
        }
    };
    let nonce = match payload.get("nonce") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let flags = payload.get("flags").and_then(Value::as_u64).unwrap_or(0) as u32;
    let metadata = match payload.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            return Err(reply::invalid_field(
                "attachments",
                "INVALID_TYPE",
                "Attachments must be an array",
            )
            .into());
        }
    };
    let mut planned = plan_attachments(st, &metadata, inline).await?;
    if planned.len() > MAX_ATTACHMENTS_PER_MESSAGE {
        return Err(reply::invalid_field(
            "attachments",
            "TOO_MANY_ATTACHMENTS",
            "A message can have at most 10 attachments",
        )
        .into());
    }
    if content.trim().is_empty() && planned.is_empty() {
        return Err(reply::error(
            StatusCode::BAD_REQUEST,
            "CANNOT_SEND_EMPTY_MESSAGE",
            "Cannot send an empty message",
        )
        .into());
    }
    let now = now_ms();
    let id = loaded.ids.next(now);
    for attachment in &mut planned {
        attachment.id = loaded.ids.next(now);
    }
    let record = MessageRecord {
        id,
        channel_id: channel,
        author_id: who.user_id,
        content,
        nonce,
        flags,
        attachments: planned,
    };
    let mut messages = loaded.messages.lock().await;
    if record
        .attachments
        .iter()
        .any(|a| messages.is_claimed(&a.object))
    {
        return Err(no_file("attachments").into());
    }
    messages
        .save(&st.inner.store, record.clone())
        .await
        .map_err(|err| reply::internal_error("creating a message", &err))?;
    Ok(reply::json(
        StatusCode::OK,
        &message_json(&record, &loaded.world, &base_url(headers)),
    ))
}

fn invalid_json() -> Response {
    reply::invalid_field("body", "INVALID_JSON", "Invalid JSON body")
}

fn no_file(path: &str) -> Response {
    reply::invalid_form(vec![FieldError::new(
        path,
        "NO_FILE_FOR_ATTACHMENT_METADATA",
        "No file was provided for this attachment metadata",
    )])
}

/// Streams every `files[n]` part to a new object (pushed to `inline`) and returns the parsed
/// `payload_json` (an empty object without one).
async fn read_multipart(
    st: &FluxerState,
    req: Request,
    max_file: u64,
    inline: &mut Vec<InlineFile>,
) -> Result<Value, Refused> {
    let bad_form = || reply::invalid_field("body", "INVALID_FORM", "Malformed multipart body");
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|_| bad_form())?;
    let mut payload = json!({});
    while let Some(field) = form.next_field().await.map_err(|_| bad_form())? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "payload_json" {
            let text = field.text().await.map_err(|_| bad_form())?;
            if text.len() > MAX_PAYLOAD_BYTES {
                return Err(invalid_json().into());
            }
            payload = serde_json::from_str(&text).map_err(|_| invalid_json())?;
            continue;
        }
        let Some(index) = name
            .strip_prefix("files[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let filename = field.file_name().unwrap_or("unnamed").to_owned();
        let object = uuid::Uuid::new_v4().to_string();
        let store = &st.inner.store;
        let received = body::receive(store, OBJECTS_NS, &object, field, Some(max_file))
            .await
            .map_err(|err| match err {
                ReceiveError::TooLarge { .. } => reply::file_too_large(max_file),
                ReceiveError::Body(_) => bad_form(),
                ReceiveError::Io(err) => reply::internal_error("storing a file", &err),
            })?;
        let size = received.size();
        received
            .writer
            .commit()
            .await
            .map_err(|err| reply::internal_error("storing a file", &err))?;
        inline.push(InlineFile {
            index,
            filename,
            object,
            size,
        });
    }
    Ok(payload)
}

/// The attachments a message gets from its metadata and inline parts (ids not yet assigned).
async fn plan_attachments(
    st: &FluxerState,
    metadata: &[Value],
    inline: &[InlineFile],
) -> Result<Vec<AttachmentRecord>, Refused> {
    let mut planned = Vec::new();
    let mut used = HashSet::new();
    for (i, item) in metadata.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(reply::invalid_field(
                &format!("attachments.{i}"),
                "INVALID_TYPE",
                "Attachment metadata must be an object",
            )
            .into());
        };
        let index = match item.get("id") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
        let given_name = text("filename");
        if let Some(problem) = given_name.as_deref().and_then(names::length_problem) {
            return Err(reply::invalid_field(
                &format!("attachments.{i}.filename"),
                "FILENAME_LENGTH_INVALID",
                problem,
            )
            .into());
        }
        let reference = text("uploaded_filename").or_else(|| text("upload_filename"));
        let (object, size, part_name, declared_type) = match reference {
            Some(key) => {
                let size = attachments::object_size(&st.inner.store, &key)
                    .await
                    .map_err(|err| reply::internal_error("finding an upload", &err))?;
                let free = size.filter(|_| !used.contains(&key));
                let Some(size) = free else {
                    return Err(no_file("attachments").into());
                };
                (key, size, None, text("content_type"))
            }
            None => {
                let Some(file) = index.and_then(|n| inline.iter().find(|f| f.index == n)) else {
                    return Err(no_file("attachments").into());
                };
                (
                    file.object.clone(),
                    file.size,
                    Some(file.filename.clone()),
                    None,
                )
            }
        };
        used.insert(object.clone());
        let Some(raw_name) = given_name.or(part_name) else {
            return Err(reply::invalid_field(
                &format!("attachments.{i}.filename"),
                "REQUIRED",
                "Filename is required",
            )
            .into());
        };
        let filename = names::normalize(&raw_name);
        planned.push(AttachmentRecord {
            id: 0,
            content_type: declared_type
                .unwrap_or_else(|| names::content_type(&filename).to_owned()),
            filename,
            size,
            object,
            title: text("title"),
            description: text("description"),
            flags: item.get("flags").and_then(Value::as_u64).unwrap_or(0) as u32,
        });
    }
    for file in inline.iter().filter(|f| !used.contains(&f.object)) {
        let filename = names::normalize(&file.filename);
        planned.push(AttachmentRecord {
            id: 0,
            content_type: names::content_type(&filename).to_owned(),
            filename,
            size: file.size,
            object: file.object.clone(),
            title: None,
            description: None,
            flags: 0,
        });
    }
    Ok(planned)
}
