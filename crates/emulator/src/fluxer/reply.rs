//! Fluxer-shaped responses: JSON bodies and the `{"code", "message"}` error envelope (with
//! `errors` for `INVALID_FORM_BODY`). The presigned storage URLs answer S3-style XML errors
//! (`crate::s3_error`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::faults::ErrorDetail;

/// An answer that ends a request early, boxed so `Result`s that carry one stay small. `?`
/// turns any `Response` into one; handlers answer it with `into_response`.
#[derive(Debug)]
pub(super) struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(res: Response) -> Self {
        Refused(Box::new(res))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// `value` as a JSON response.
pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => internal_error("encoding response", &err),
    }
}

/// The error envelope `{"code": code, "message": message}`.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        &serde_json::json!({ "code": code, "message": message }),
    )
}

/// One entry of an `INVALID_FORM_BODY` answer's `errors`.
#[derive(Clone, Debug, Serialize)]
pub(super) struct FieldError {
    pub path: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub(super) fn new(
        path: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            code,
            message: message.into(),
        }
    }
}

/// 400 `INVALID_FORM_BODY` with its field errors.
pub(super) fn invalid_form(errors: Vec<FieldError>) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({
            "code": "INVALID_FORM_BODY",
            "message": "Input Validation Error",
            "errors": errors,
        }),
    )
}

/// 400 `INVALID_FORM_BODY` for one field.
pub(super) fn invalid_field(path: &str, code: &'static str, message: &str) -> Response {
    invalid_form(vec![FieldError::new(path, code, message)])
}

/// 404 `UNKNOWN_CHANNEL`.
pub(super) fn unknown_channel() -> Response {
    error(StatusCode::NOT_FOUND, "UNKNOWN_CHANNEL", "Unknown channel")
}

/// 404 `UNKNOWN_MESSAGE`.
pub(super) fn unknown_message() -> Response {
    error(StatusCode::NOT_FOUND, "UNKNOWN_MESSAGE", "Unknown message")
}

/// 400 `FILE_SIZE_TOO_LARGE` in the server's wording.
pub(super) fn file_too_large(limit: u64) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "FILE_SIZE_TOO_LARGE",
        &format!("File size is too large. Maximum file size is {limit}."),
    )
}

/// 403 `FEATURE_TEMPORARILY_DISABLED`: the upload flow is switched off (`--uploads`).
pub(super) fn feature_disabled() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "FEATURE_TEMPORARILY_DISABLED",
        "This feature is temporarily disabled.",
    )
}

/// 500 `INTERNAL_SERVER_ERROR` with the server's text; the cause rides along for the
/// emulator's error logger.
pub(super) fn internal_error(operation: &str, err: &dyn std::fmt::Display) -> Response {
    let mut res = error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_SERVER_ERROR",
        "Something went wrong. Please try again later.",
    );
    res.extensions_mut().insert(ErrorDetail(format!(
        "internal error during {operation}: {err}"
    )));
    res
}
