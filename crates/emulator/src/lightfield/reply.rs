//! Lightfield-shaped responses: the `{"error": {...}}` envelope with `type`, `message` and, on
//! 400, `code` and `param`. The storage URLs answer S3-style XML errors (`crate::s3_error`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::faults::ErrorDetail;

/// `value` as a JSON response.
pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => internal_error("encoding response", &err),
    }
}

/// The error envelope. `code` and `param` are included only when given (the spec requires
/// `code` on 400 and allows `param` on 400 and 422).
fn envelope(
    status: StatusCode,
    kind: &str,
    message: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    let mut error = Map::new();
    error.insert("type".into(), kind.into());
    error.insert("message".into(), message.into());
    if let Some(code) = code {
        error.insert("code".into(), code.into());
    }
    if let Some(param) = param {
        error.insert("param".into(), param.into());
    }
    json(
        status,
        &serde_json::json!({ "error": Value::Object(error) }),
    )
}

/// 400 `bad_request` with its machine-readable `code` and, when one field is at fault, `param`.
pub(super) fn bad_request(code: &str, param: Option<&str>, message: &str) -> Response {
    envelope(
        StatusCode::BAD_REQUEST,
        "bad_request",
        message,
        Some(code),
        param,
    )
}

/// 401 `unauthorized`; the message never repeats the key that was sent.
pub(super) fn unauthorized(message: &str) -> Response {
    envelope(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
        None,
        None,
    )
}

/// 404 `not_found` for an unknown file id or path.
pub(super) fn not_found(message: &str) -> Response {
    envelope(StatusCode::NOT_FOUND, "not_found", message, None, None)
}

/// 409 `conflict`: the file is not in the status the operation needs.
pub(super) fn conflict(message: &str) -> Response {
    envelope(StatusCode::CONFLICT, "conflict", message, None, None)
}

/// 415 `unsupported_media_type`: the body is not JSON.
pub(super) fn unsupported_media_type(message: &str) -> Response {
    envelope(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        message,
        None,
        None,
    )
}

/// 422 `unprocessable_content`: valid JSON that fails a business check (md5, size).
pub(super) fn unprocessable(param: Option<&str>, message: &str) -> Response {
    envelope(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_content",
        message,
        None,
        param,
    )
}

/// 500 `internal_server_error`; the cause rides along for the emulator's error logger.
pub(super) fn internal_error(operation: &str, err: &dyn std::fmt::Display) -> Response {
    let detail = format!("internal error during {operation}: {err}");
    let mut res = envelope(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_server_error",
        "Internal server error.",
        None,
        None,
    );
    res.extensions_mut().insert(ErrorDetail(detail));
    res
}
