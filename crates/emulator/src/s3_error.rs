//! The S3-style XML error body of the storage URLs the emulators hand out in place of S3 or GCS
//! (Lightfield's `uploadUrl`/`downloadUrl`, Fluxer's presigned attachment URLs):
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <Error><Code>SignatureDoesNotMatch</Code><Message>...</Message></Error>
//! ```
//!
//! served as `application/xml`. A client of a real presigned URL talks to the storage service,
//! not to the API, so it sees this shape and never the API's JSON envelope; one writer keeps the
//! two emulators' storage errors byte-identical. Codes are S3's (`AccessDenied`,
//! `SignatureDoesNotMatch`, `NoSuchUpload`, `NoSuchKey`, `IncompleteBody`, ...); the message is
//! escaped, the code is one of those constants and is not.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An S3-style XML error: `status`, `<Error><Code>code</Code><Message>message</Message></Error>`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>",
        escape(message)
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// 403 with `code`: what S3 answers when a URL's signature, expiry or signed headers do not hold.
pub(crate) fn denied(code: &str, message: &str) -> Response {
    error(StatusCode::FORBIDDEN, code, message)
}

/// `text` safe inside an XML element (`&`, `<`, `>`; quotes need no escape there).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_is_s3s_shape_with_the_message_escaped() {
        let res = error(StatusCode::FORBIDDEN, "AccessDenied", "a < b & c");
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/xml");
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
             <Message>a &lt; b &amp; c</Message></Error>"
        );
    }
}
