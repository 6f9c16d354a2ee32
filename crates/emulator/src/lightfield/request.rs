//! Decoding and validating API requests as the OpenAPI spec describes them: JSON bodies with
//! `additionalProperties: false`, the `FileCreateParams` limits, the `md5` pattern and the list
//! query. Every failure is the response to send.
//!
//! Choices where the spec is silent: a body that is not JSON is 415 whatever its content type;
//! an empty body counts as `{}` (the SDK sends no bytes on cancel); `limit` above 25 is clamped
//! to 25 (the schema allows it, the description says "maximum 25"); range violations are 400
//! `invalid_value`.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::{Map, Value};

use super::reply;

/// The documented size limits of a file.
pub(super) const MIN_SIZE_BYTES: u64 = 1;
/// 512 MiB.
pub(super) const MAX_SIZE_BYTES: u64 = 512 * 1024 * 1024;
/// Longest `filename`, in characters.
const MAX_FILENAME_CHARS: usize = 255;
/// Default and largest page of `GET /v1/files`.
pub(super) const MAX_PAGE: u64 = 25;
/// The `email_attachment` purpose's own limit (20 MiB).
const EMAIL_ATTACHMENT_MAX_BYTES: u64 = 20 * 1024 * 1024;

/// A refused request: the response to send, boxed because responses are large.
pub(super) type Rejected = Box<Response>;

/// What a create may declare as its purpose; only the knowledge ones change behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    MeetingTranscript,
    Knowledge,
    EmailAttachment,
}

/// A validated `POST /v1/files` body.
#[derive(Debug)]
pub(super) struct CreateRequest {
    pub(super) filename: String,
    pub(super) mime_type: String,
    pub(super) size_bytes: u64,
    pub(super) purpose: Option<Purpose>,
}

/// Parses a JSON object body with exactly the `allowed` keys possible.
fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, Rejected> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Box::new(reply::unsupported_media_type(
            "Request body must be valid JSON (Content-Type: application/json).",
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(bad_request(
            "invalid_type",
            None,
            "Request body must be a JSON object.",
        ));
    };
    if let Some(unknown) = map.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(bad_request(
            "unknown_field",
            Some(unknown),
            &format!("Unrecognized field '{unknown}' for 'files'."),
        ));
    }
    Ok(map)
}

fn bad_request(code: &str, param: Option<&str>, message: &str) -> Rejected {
    Box::new(reply::bad_request(code, param, message))
}

fn invalid_type(param: &str, expected: &str) -> Rejected {
    bad_request(
        "invalid_type",
        Some(param),
        &format!("Field '{param}' must be {expected}."),
    )
}

fn invalid_value(param: &str, message: &str) -> Rejected {
    bad_request("invalid_value", Some(param), message)
}

fn required_string(map: &Map<String, Value>, param: &str) -> Result<String, Rejected> {
    match map.get(param) {
        None => Err(bad_request(
            "parameter_missing",
            Some(param),
            &format!("Missing required field '{param}'."),
        )),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(invalid_type(param, "a string")),
    }
}

/// Validates a `POST /v1/files` body.
pub(super) fn decode_create(body: &[u8]) -> Result<CreateRequest, Rejected> {
    let map = object(body, &["filename", "mimeType", "sizeBytes", "purpose"])?;
    let filename = required_string(&map, "filename")?;
    let chars = filename.chars().count();
    if chars == 0 || chars > MAX_FILENAME_CHARS {
        return Err(invalid_value(
            "filename",
            "Field 'filename' must be 1 to 255 characters long.",
        ));
    }
    let mime_type = required_string(&map, "mimeType")?;
    let size_bytes = match map.get("sizeBytes") {
        None => {
            return Err(bad_request(
                "parameter_missing",
                Some("sizeBytes"),
                "Missing required field 'sizeBytes'.",
            ));
        }
        Some(Value::Number(number)) => match (number.as_u64(), number.as_i64()) {
            (Some(n), _) => n,
            (None, Some(_)) => 0,
            _ => return Err(invalid_type("sizeBytes", "an integer")),
        },
        Some(_) => return Err(invalid_type("sizeBytes", "an integer")),
    };
    if !(MIN_SIZE_BYTES..=MAX_SIZE_BYTES).contains(&size_bytes) {
        return Err(invalid_value(
            "sizeBytes",
            "Field 'sizeBytes' must be between 1 and 536870912 (512 MB).",
        ));
    }
    let purpose = match map.get("purpose") {
        None => None,
        Some(Value::String(p)) if p == "meeting_transcript" => Some(Purpose::MeetingTranscript),
        Some(Value::String(p)) if p == "knowledge_user" || p == "knowledge_workspace" => {
            Some(Purpose::Knowledge)
        }
        Some(Value::String(p)) if p == "email_attachment" => Some(Purpose::EmailAttachment),
        Some(_) => {
            return Err(invalid_value(
                "purpose",
                "Field 'purpose' must be one of meeting_transcript, knowledge_user, \
                 knowledge_workspace, email_attachment.",
            ));
        }
    };
    if purpose == Some(Purpose::EmailAttachment) && size_bytes > EMAIL_ATTACHMENT_MAX_BYTES {
        return Err(invalid_value(
            "sizeBytes",
            "Email attachments may be at most 20 MB.",
        ));
    }
    Ok(CreateRequest {
        filename,
        mime_type,
        size_bytes,
        purpose,
    })
}

/// Validates a `POST /v1/files/{id}/complete` body and returns its `md5`, if any.
pub(super) fn decode_complete(body: &[u8]) -> Result<Option<String>, Rejected> {
    let map = object(body, &["md5"])?;
    match map.get("md5") {
        None => Ok(None),
        Some(Value::String(md5))
            if md5.len() == 32 && md5.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(Some(md5.clone()))
        }
        Some(Value::String(_)) => Err(invalid_value(
            "md5",
            "Field 'md5' must be 32 lower-case hex characters.",
        )),
        Some(_) => Err(invalid_type("md5", "a string")),
    }
}

/// Validates a `POST /v1/files/{id}/cancel` body: nothing, or an empty object.
pub(super) fn decode_cancel(body: &[u8]) -> Result<(), Rejected> {
    object(body, &[]).map(drop)
}

/// `offset` and `limit` of `GET /v1/files`; empty values take the defaults.
pub(super) fn decode_page(query: &HashMap<String, String>) -> Result<(u64, u64), Rejected> {
    let number = |param: &str, default: u64| -> Result<u64, Rejected> {
        match query.get(param).map(String::as_str) {
            None | Some("") => Ok(default),
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n as u64),
                Ok(_) => Err(invalid_value(
                    param,
                    &format!("Query parameter '{param}' must not be negative."),
                )),
                Err(_) => Err(invalid_type(param, "an integer")),
            },
        }
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", MAX_PAGE)?;
    if limit == 0 {
        return Err(invalid_value(
            "limit",
            "Query parameter 'limit' must be at least 1.",
        ));
    }
    Ok((offset, limit.min(MAX_PAGE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_must_be_lower_case_hex() {
        assert!(decode_complete(br#"{"md5":"0123456789abcdef0123456789abcdef"}"#).is_ok());
        assert!(decode_complete(br#"{"md5":"0123456789ABCDEF0123456789ABCDEF"}"#).is_err());
        assert!(decode_complete(b"").unwrap().is_none());
    }

    #[test]
    fn page_defaults_and_clamps() {
        let query = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(decode_page(&query(&[])).unwrap(), (0, 25));
        assert_eq!(
            decode_page(&query(&[("limit", "100"), ("offset", "5")])).unwrap(),
            (5, 25)
        );
        assert!(decode_page(&query(&[("limit", "0")])).is_err());
        assert!(decode_page(&query(&[("offset", "x")])).is_err());
    }
}
