//! Fluxer's wire shapes (the fields this client reads), its `{"code", "message"}` error
//! envelope, snowflake times, and the message content that carries a file's path.
//!
//! The content of a message this client posts is one line, `sessionfs: <path>`, readable by
//! people in the channel: `<path>` is the stored name the core chose with the core's `／` shown
//! as `/` (a literal `／` in a local name is escaped by the core with `‛`, and stays so), so the
//! name comes back exactly, whatever the server does to the attachment's own filename.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::names::{ESCAPE, SLASH};
use crate::{ErrorKind, RemoteError};

/// Fluxer's epoch (2015-01-01T00:00:00Z) in unix milliseconds.
const FLUXER_EPOCH_MS: u64 = 1_420_070_400_000;
/// The content line that names a file's path.
pub(super) const CONTENT_PREFIX: &str = "sessionfs: ";

#[derive(Deserialize)]
pub(super) struct Guild {
    pub id: String,
    pub name: String,
}

#[derive(Deserialize)]
pub(super) struct User {
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Channel {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub recipients: Vec<User>,
}

/// Channel types that hold messages with files: guild text, DM, group DM.
pub(super) const GUILD_TEXT: u8 = 0;
pub(super) const DM: u8 = 1;
pub(super) const GROUP_DM: u8 = 3;

/// A message, with the attachments whose fields this client can read; the others are left
/// out (one unreadable attachment, posted by another client, must not hide a channel's files)
/// and said in [`Message::unreadable`].
#[derive(Clone, Deserialize)]
#[serde(from = "RawMessage")]
pub(super) struct Message {
    pub id: String,
    pub content: String,
    pub timestamp: Option<String>,
    pub attachments: Vec<Attachment>,
    /// What the poster sent as `nonce`, echoed back (a string or a number).
    pub nonce: Option<serde_json::Value>,
    /// Why each attachment left out could not be read.
    pub unreadable: Vec<String>,
}

/// A message as sent, its attachments not read yet.
#[derive(Deserialize)]
struct RawMessage {
    id: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    attachments: serde_json::Value,
    #[serde(default)]
    nonce: Option<serde_json::Value>,
}

impl From<RawMessage> for Message {
    fn from(raw: RawMessage) -> Self {
        let mut unreadable = Vec::new();
        let attachments = match raw.attachments {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(list) => list
                .into_iter()
                .filter_map(|value| {
                    serde_json::from_value(value)
                        .map_err(|err| unreadable.push(err.to_string()))
                        .ok()
                })
                .collect(),
            other => {
                unreadable.push(format!("attachments is not a list but {other}"));
                Vec::new()
            }
        };
        Message {
            id: raw.id,
            content: raw.content,
            timestamp: raw.timestamp,
            attachments,
            nonce: raw.nonce,
            unreadable,
        }
    }
}

/// An attachment: `id`, `filename` and `size` must be what the API says; an optional field of
/// the wrong type reads as absent.
#[derive(Clone, Deserialize)]
pub(super) struct Attachment {
    pub id: String,
    pub filename: String,
    pub size: u64,
    #[serde(default, deserialize_with = "lenient")]
    pub content_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub expires_at: Option<String>,
}

/// An optional field: its value when it has the type asked for, else `None`.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[derive(Deserialize)]
pub(super) struct WellKnown {
    #[serde(default)]
    pub features: Features,
}

#[derive(Default, Deserialize)]
pub(super) struct Features {
    #[serde(default)]
    pub presigned_attachment_uploads: bool,
}

/// `CreateChunkedUploadResponse` (its `upload_filename` comes again from the complete step).
#[derive(Deserialize)]
pub(super) struct ChunkedCreated {
    pub upload_id: String,
    pub chunk_size: u64,
    pub chunk_count: u64,
}

/// `UploadChunkResponse`.
#[derive(Deserialize)]
pub(super) struct ChunkSent {
    pub etag: String,
}

/// `CompleteChunkedUploadResponse`.
#[derive(Deserialize)]
pub(super) struct ChunkedCompleted {
    pub upload_filename: String,
}

/// The answer of `POST /channels/{id}/attachments`.
#[derive(Deserialize)]
pub(super) struct PresignedPlan {
    pub attachments: Vec<PlannedUpload>,
}

/// One planned presigned upload: `singlepart` (one `upload_url`) or `multipart` (`parts`).
#[derive(Deserialize)]
pub(super) struct PlannedUpload {
    pub upload_mode: String,
    pub upload_filename: String,
    pub content_type: String,
    #[serde(default)]
    pub upload_url: Option<String>,
    #[serde(default)]
    pub upload_id: Option<String>,
    #[serde(default)]
    pub part_size: Option<u64>,
    #[serde(default)]
    pub parts: Vec<PlannedPart>,
}

#[derive(Deserialize)]
pub(super) struct PlannedPart {
    pub part_number: u64,
    pub upload_url: String,
}

#[derive(Deserialize)]
struct Envelope {
    code: String,
    #[serde(default)]
    message: String,
}

/// Reads `{"code", "message"}` as `message (CODE)`, so the log line and [`code_of`] have both;
/// control characters become spaces, so a newline from the server never starts a log line.
pub(super) fn error_envelope(body: &[u8]) -> Option<String> {
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let text = format!("{} ({})", envelope.message, envelope.code);
    Some(text.replace(char::is_control, " "))
}

/// The Fluxer error code an error's message ends with, if the server sent one.
pub(super) fn code_of(err: &RemoteError) -> Option<&str> {
    let inner = err.message.strip_suffix(')')?;
    let code = &inner[inner.rfind('(')? + 1..];
    let is_code = !code.is_empty()
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    is_code.then_some(code)
}

/// Gives a refused call the kind its Fluxer code means and a hint on what to do.
pub(super) fn refine(mut err: RemoteError) -> RemoteError {
    match code_of(&err) {
        Some("FILE_SIZE_TOO_LARGE") => {
            err.kind = ErrorKind::TooLarge;
            err.temporary = false;
            err.message
                .push_str("; the file is over this server's attachment limit");
        }
        Some("UNKNOWN_CHANNEL" | "UNKNOWN_MESSAGE") => err.kind = ErrorKind::NotFound,
        _ if err.kind == ErrorKind::PermissionDenied => err
            .message
            .push_str("; pass a valid fluxer session token with --token or SESSIONFS_TOKEN"),
        _ => {}
    }
    err
}

/// When a snowflake was made.
pub(super) fn snowflake_time(id: &str) -> SystemTime {
    let ms = id.parse::<u64>().map_or(0, |n| (n >> 22) + FLUXER_EPOCH_MS);
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// An ISO-8601 time, if it is one.
pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(SystemTime::from)
}

/// The content of the message that carries the file stored as `name`.
pub(super) fn content_for(name: &str) -> String {
    format!("{CONTENT_PREFIX}{}", map_slashes(name, SLASH, '/'))
}

/// The stored name a message's content gives its file, if it has a `sessionfs:` line.
pub(super) fn name_in(content: &str) -> Option<String> {
    let path = content
        .lines()
        .find_map(|line| line.strip_prefix(CONTENT_PREFIX))?;
    (!path.is_empty()).then(|| map_slashes(path, '/', SLASH))
}

/// Replaces every unescaped `from` with `to`; an escape and the character after it are kept.
fn map_slashes(text: &str, from: char, to: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == ESCAPE {
            out.push(c);
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(if c == from { to } else { c });
        }
    }
    out
}

/// The attachment filename for the file stored as `name`: its last path component (the server
/// normalises it; people see it, the content line keeps the exact path).
pub(super) fn attachment_filename(name: &str) -> String {
    let path = map_slashes(name, SLASH, '/');
    path.split('/')
        .rfind(|part| !part.is_empty())
        .map(|part| part.trim_end_matches('\u{21AA}').to_owned())
        .filter(|part| !part.is_empty())
        .unwrap_or_else(|| "file".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_line_gives_the_exact_name_back() {
        for name in [
            "report (final).txt",
            "sub／dir／a (1) ü.txt",
            "literal ‛／ slash",
            "dir／",
            "link↪",
            "..",
        ] {
            let content = content_for(name);
            assert!(content.starts_with("sessionfs: "), "{content}");
            assert_eq!(name_in(&content).as_deref(), Some(name), "{content}");
        }
        assert_eq!(content_for("sub／r.txt"), "sessionfs: sub/r.txt");
        assert_eq!(name_in("hello\nsessionfs: a/b").as_deref(), Some("a／b"));
        assert_eq!(name_in("just a message"), None);
    }

    #[test]
    fn attachment_filenames_are_the_last_component() {
        assert_eq!(attachment_filename("sub／dir／r (1).txt"), "r (1).txt");
        assert_eq!(attachment_filename("dir／"), "dir");
        assert_eq!(attachment_filename("link↪"), "link");
        assert_eq!(attachment_filename("／"), "file");
    }

    #[test]
    fn codes_come_from_the_envelope() {
        let body = br#"{"code":"FILE_SIZE_TOO_LARGE","message":"File size is too large."}"#;
        let message = error_envelope(body).unwrap();
        let err = RemoteError::new(ErrorKind::InvalidInput, format!("upload: {message}"));
        assert_eq!(code_of(&err), Some("FILE_SIZE_TOO_LARGE"));
        assert_eq!(refine(err).kind, ErrorKind::TooLarge);
        let plain = RemoteError::new(ErrorKind::InvalidInput, "bad (request)");
        assert_eq!(code_of(&plain), None);
        let forged = br#"{"code":"MISSING_ACCESS","message":"no\nWARN forged"}"#;
        assert_eq!(
            error_envelope(forged).as_deref(),
            Some("no WARN forged (MISSING_ACCESS)")
        );
        for not_an_envelope in [
            &br#"{"code":10003,"message":["Unknown"]}"#[..],
            br#"{"message":"Missing Access"}"#,
            b"<html>",
        ] {
            assert_eq!(error_envelope(not_an_envelope), None);
        }
    }

    #[test]
    fn attachments_that_cannot_be_read_are_left_out_and_said() {
        let message: Message = serde_json::from_str(
            r#"{"id":"9","attachments":[
                {"id":"1","filename":"ok.txt","size":3,"url":5,"expires_at":"soon",
                 "content_type":7},
                {"id":"2","filename":"text.txt","size":"3"},
                {"id":"3","filename":"negative.txt","size":-1},
                {"id":4,"filename":"number.txt","size":3},
                {"id":"5","filename":null,"size":3}]}"#,
        )
        .unwrap();
        let ids: Vec<&str> = message.attachments.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["1"]);
        let ok = &message.attachments[0];
        assert_eq!(
            (ok.url.as_deref(), ok.content_type.as_deref()),
            (None, None)
        );
        assert_eq!(ok.expires_at.as_deref(), Some("soon"));
        assert_eq!(message.unreadable.len(), 4, "{:?}", message.unreadable);
        let odd: Message = serde_json::from_str(r#"{"id":"9","attachments":{"0":"x"}}"#).unwrap();
        assert!(odd.attachments.is_empty());
        assert_eq!(odd.unreadable.len(), 1);
        let none: Message = serde_json::from_str(r#"{"id":"9"}"#).unwrap();
        assert!(none.attachments.is_empty() && none.unreadable.is_empty());
    }

    #[test]
    fn snowflakes_carry_their_time() {
        // 2015-01-01 plus one second.
        let id = (1000u64 << 22).to_string();
        assert_eq!(
            snowflake_time(&id),
            SystemTime::UNIX_EPOCH + Duration::from_millis(FLUXER_EPOCH_MS + 1000)
        );
    }
}
