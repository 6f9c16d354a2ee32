//! What the emulator contract tests share: a request sent through a router with `oneshot`,
//! its answer read whole, and the checks every API's tests make of an answer. Each API's test
//! file adds its own error-envelope checks to [`Reply`] in an `impl` block of its own.
//!
//! Each `tests/emulator_*.rs` is a crate of its own that uses part of this module, so the
//! parts one of them leaves unused are allowed.
#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use tower::ServiceExt;

/// An emulator's answer, read whole.
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name`; fails the test when it is missing.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    /// Asserts an S3-style XML error (`<Code>code</Code>`) from storage URLs.
    pub fn storage_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.text().contains(&format!("<Code>{code}</Code>")),
            "{}",
            self.text()
        );
    }
}

/// Sends `req` through `app` and reads the answer whole.
pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// The md5 of `data` as 32 lowercase hex digits.
pub fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
