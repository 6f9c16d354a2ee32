//! Hapi-shaped responses: JSON with `application/json; charset=utf-8`, and Boom error bodies
//! `{"statusCode", "error", "message"}` (plus `validation: {source, keys}` when a request part
//! fails validation, as Hapi's detailed validation errors carry). `error` is the status's
//! standard reason phrase, as Boom takes it from Node's `http.STATUS_CODES`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::faults::ErrorDetail;

/// `value` as Hapi serializes a handler's object.
pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(err) => internal_error("encoding a response", &err),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Boom<'a> {
    status_code: u16,
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation: Option<Validation<'a>>,
}

#[derive(Serialize)]
struct Validation<'a> {
    source: &'a str,
    keys: [&'a str; 1],
}

fn envelope(status: StatusCode, message: &str, validation: Option<Validation>) -> Response {
    json(
        status,
        &Boom {
            status_code: status.as_u16(),
            error: status.canonical_reason().unwrap_or("Unknown"),
            message,
            validation,
        },
    )
}

/// A Boom error with `message`.
pub(super) fn boom(status: StatusCode, message: &str) -> Response {
    envelope(status, message, None)
}

/// 400 for one invalid request part: `source` is `headers`, `query` or `payload`, `key` the
/// field at fault.
pub(super) fn invalid(source: &str, key: &str, message: &str) -> Response {
    let validation = Validation {
        source,
        keys: [key],
    };
    envelope(StatusCode::BAD_REQUEST, message, Some(validation))
}

/// 401 with a `WWW-Authenticate: Bearer` challenge naming what was wrong, as Boom's
/// `unauthorized(message, 'Bearer')` sends; a missing token gets the bare challenge.
pub(super) fn unauthorized(message: &str, missing: bool) -> Response {
    let mut res = boom(StatusCode::UNAUTHORIZED, message);
    let challenge = match missing {
        true => "Bearer".to_owned(),
        false => format!("Bearer error=\"{message}\""),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    res
}

/// 404 `File not found`: an unknown file and another user's file look the same.
pub(super) fn file_not_found() -> Response {
    boom(StatusCode::NOT_FOUND, "File not found")
}

/// Boom's 500, whose message hides the cause; the cause rides along for the error logger.
pub(super) fn internal_error(doing: &str, err: &dyn std::fmt::Display) -> Response {
    let mut res = boom(
        StatusCode::INTERNAL_SERVER_ERROR,
        "An internal server error occurred",
    );
    res.extensions_mut()
        .insert(ErrorDetail(format!("internal error while {doing}: {err}")));
    res
}
