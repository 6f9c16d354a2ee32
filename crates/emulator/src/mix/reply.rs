//! Responses shaped like the Go server writes them: JSON through `json.Encoder` (HTML-escaped,
//! trailing newline, `Content-Type: application/json` exactly), the `{"error": {...}}` envelope
//! with Mix's message formats, and `http.Error` plain text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::faults::ErrorDetail;

/// Serializes `value` as Go's `json.Encoder` does by default.
pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let text = match serde_json::to_string(value) {
        Ok(text) => text,
        Err(err) => return internal_error("encoding response", &err),
    };
    let mut body = go_html_escape(&text);
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Go's `json.Encoder` escapes `<`, `>`, `&`, U+2028 and U+2029 even inside strings. Outside
/// strings JSON never contains them, so replacing them in the whole text is exact.
fn go_html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: RestError<'a>,
}

#[derive(Serialize)]
struct RestError<'a> {
    code: u16,
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

/// The Mix error envelope; `kind` is one of the spec's `type` values.
pub(super) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let envelope = Envelope {
        error: RestError {
            code: status.as_u16(),
            message,
            kind,
        },
    };
    json(status, &envelope)
}

/// `sendValidationError`: 400 `Validation error for field '<field>': <message>`.
pub(super) fn validation_error(field: &str, message: &str) -> Response {
    let message = format!("Validation error for field '{field}': {message}");
    error(StatusCode::BAD_REQUEST, "validation_error", &message)
}

/// `sendNotFoundError`: 404 `<Resource> with ID '<id>' not found`.
pub(super) fn not_found(resource: &str, id: &str) -> Response {
    let message = format!("{resource} with ID '{id}' not found");
    error(StatusCode::NOT_FOUND, "not_found", &message)
}

/// `sendInternalError`: 500 `Internal error during <operation>: <error>`; the cause also rides
/// along for the error logger.
pub(super) fn internal_error(operation: &str, err: &dyn std::fmt::Display) -> Response {
    let message = format!("Internal error during {operation}: {err}");
    let mut res = error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        &message,
    );
    res.extensions_mut().insert(ErrorDetail(message));
    res
}

/// Go's `http.Error`: plain text, `nosniff`, message plus newline.
pub(super) fn plain(status: StatusCode, message: &str) -> Response {
    let mut res = (status, format!("{message}\n")).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        assert_eq!(
            go_html_escape(r#"{"m":"<a&b>\u2028"}"#.replace("\\u2028", "\u{2028}").as_str()),
            r#"{"m":"\u003ca\u0026b\u003e\u2028"}"#
        );
    }
}
