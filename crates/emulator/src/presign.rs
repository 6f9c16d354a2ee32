//! Presigned storage URLs: how the emulators sign the S3-style URLs they hand out (Lightfield's
//! `uploadUrl`/`downloadUrl`, Fluxer's presigned attachment PUTs) and how the storage routes check
//! them, so both emulators refuse a bad URL with the same S3 answers in the same order.
//!
//! A signed URL ends in `?expires=<unix ms>&signature=<hex>` (after any parameters of its own).
//! The signature is the md5 of the emulator's secret (`Store::signing_secret`, kept in the store
//! so URLs survive a restart) and the fields the URL grants, joined by newlines; each emulator
//! picks the fields (the operation and id, or the plan's name, part, type, size) and the expiry
//! is always among them, so a URL cannot be stretched. The signature is a stand-in for SigV4:
//! unforgeable by the client under test, not by an attacker.
//!
//! Checking, in S3's order: either parameter missing → 403 `AccessDenied`; a signature other than
//! the one the emulator computes for that expiry → 403 `SignatureDoesNotMatch`; then an expired
//! URL → 403 `AccessDenied` `Request has expired.`.

use std::collections::HashMap;
use std::fmt::{Display, Write};

use axum::response::Response;
use md5::{Digest, Md5};

use crate::{hex, s3_error};

/// The signature of `fields` under `secret`: the hex md5 of the secret and each field, one per
/// line. The caller's fields must include the expiry.
pub(crate) fn signature(secret: &str, fields: &[&dyn Display]) -> String {
    let mut text = secret.to_owned();
    for field in fields {
        let _ = write!(text, "\n{field}");
    }
    hex(&Md5::digest(text.as_bytes()))
}

/// The parameters a signed URL ends with: `expires=<unix ms>&signature=<hex>`.
pub(crate) fn query(expires_ms: i64, signature: &str) -> String {
    format!("expires={expires_ms}&signature={signature}")
}

/// Why a storage request's query does not hold at `now_ms`, as the S3 answer to send; `None`
/// when it holds. `expected` gets the `expires` that was sent and returns the signature the URL
/// must carry, or `None` when the query cannot belong to any URL the emulator signed (another
/// expiry than the plan's, a wrong upload id): both are `SignatureDoesNotMatch`.
pub(crate) fn refusal(
    query: &HashMap<String, String>,
    now_ms: i64,
    expected: impl FnOnce(i64) -> Option<String>,
) -> Option<Response> {
    let expires = query.get("expires").and_then(|e| e.parse::<i64>().ok());
    let (Some(expires), Some(sent)) = (expires, query.get("signature")) else {
        return Some(s3_error::denied(
            "AccessDenied",
            "Query-string authentication requires the expires and signature parameters.",
        ));
    };
    if expected(expires).as_ref() != Some(sent) {
        return Some(s3_error::denied(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    if now_ms >= expires {
        return Some(s3_error::denied("AccessDenied", "Request has expired."));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The S3 code of a refusal, `OK` for none.
    async fn code(refused: Option<Response>) -> String {
        let Some(res) = refused else {
            return "OK".to_owned();
        };
        assert_eq!(res.status(), axum::http::StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let code = body.split("<Code>").nth(1).unwrap();
        let message = code.split("<Message>").nth(1).unwrap();
        format!(
            "{} {}",
            code.split('<').next().unwrap(),
            message.split('<').next().unwrap()
        )
    }

    fn params(expires: &str, signature: &str) -> HashMap<String, String> {
        HashMap::from([
            ("expires".to_owned(), expires.to_owned()),
            ("signature".to_owned(), signature.to_owned()),
        ])
    }

    #[test]
    fn signatures_bind_secret_every_field_and_their_order() {
        let base = signature("s", &[&"upload", &"fil_1", &5]);
        assert_eq!(base, signature("s", &[&"upload", &"fil_1", &5]));
        assert_ne!(base, signature("t", &[&"upload", &"fil_1", &5]));
        assert_ne!(base, signature("s", &[&"download", &"fil_1", &5]));
        assert_ne!(base, signature("s", &[&"upload", &"fil_1", &6]));
        assert_ne!(base, signature("s", &[&"fil_1", &"upload", &5]));
        // The md5 of the lines, so URLs signed before a restart or an upgrade still hold.
        assert_eq!(base, hex(&Md5::digest(b"s\nupload\nfil_1\n5")));
    }

    #[tokio::test]
    async fn refusal_accepts_a_live_url_and_refuses_in_s3s_order() {
        let sig = signature("s", &[&"x", &100]);
        let missing = "AccessDenied Query-string authentication requires the expires and \
                       signature parameters.";
        let mismatch = "SignatureDoesNotMatch The request signature we calculated does not \
                        match the signature you provided.";
        let expired = "AccessDenied Request has expired.";
        // (query, now, whether the query names a URL that was signed, the answer)
        let cases = [
            (params("100", &sig), 99, true, "OK"),
            (HashMap::new(), 99, true, missing),
            (params("soon", &sig), 99, true, missing),
            (params("100", "00"), 99, true, mismatch),
            (params("200", &sig), 99, true, mismatch),
            (params("100", &sig), 99, false, mismatch),
            // A bad signature on an expired URL is still a bad signature.
            (params("100", "00"), 100, true, mismatch),
            (params("100", &sig), 100, true, expired),
        ];
        for (query, now, signed, answer) in cases {
            let expected = |e: i64| signed.then(|| signature("s", &[&"x", &e]));
            assert_eq!(
                code(refusal(&query, now, expected)).await,
                answer,
                "{query:?} at {now}"
            );
        }
    }
}
