//! Receiving a request body into a blob under a size limit, the one loop every upload route of
//! every emulator runs: a raw PUT body (Lightfield's and Fluxer's storage URLs, Fluxer's chunks)
//! or one multipart field (Mix's `file`, Fluxer's `files[n]`).
//!
//! The body streams: nothing here holds more than one network chunk in memory, and the md5 is
//! computed on the way (what S3-style ETags and Lightfield's `complete` need), so no route reads
//! a body twice. The blob stays uncommitted: the caller commits it once its own checks still
//! hold, and a body refused or broken off leaves nothing behind (the writer discards the blob on
//! drop). The limit is checked before a chunk is written, so a refused upload never stores more
//! than the limit; what a refusal answers (Mix's 413 `File too large (max 32MB)`, Fluxer's
//! `FILE_SIZE_TOO_LARGE` or S3 `EntityTooLarge`, Lightfield's length mismatch) is each API's own
//! and stays with its caller.

use std::io;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};

use crate::hex;
use crate::store::{BlobWriter, Store};

/// Why a body could not be received.
#[derive(Debug)]
pub(crate) enum ReceiveError<E> {
    /// It grew past the limit the caller gave, to `reached` bytes with the chunk that crossed
    /// it (for callers with several limits, who answer by the one crossed); nothing past the
    /// limit was written.
    TooLarge {
        /// The length the body reached with the refused chunk.
        reached: u64,
    },
    /// The body's stream failed (the client broke off, a malformed multipart field), with the
    /// stream's own error for callers that answer with it.
    Body(E),
    /// The store failed.
    Io(io::Error),
}

/// A body written to an uncommitted blob: commit it once the caller's checks still hold.
pub(crate) struct Received {
    pub writer: BlobWriter,
    /// Lower-case hex md5 of the bytes.
    pub md5: String,
}

impl Received {
    /// The bytes received.
    pub(crate) fn size(&self) -> u64 {
        self.writer.written()
    }

    /// The S3-style ETag of the bytes: the quoted md5.
    pub(crate) fn etag(&self) -> String {
        format!("\"{}\"", self.md5)
    }
}

/// Streams `body` into a new blob `key` of `ns`, refusing more than `limit` bytes (`None`: no
/// limit).
pub(crate) async fn receive<E>(
    store: &Store,
    ns: &str,
    key: &str,
    body: impl Stream<Item = Result<Bytes, E>>,
    limit: Option<u64>,
) -> Result<Received, ReceiveError<E>> {
    let mut writer = store.create_blob(ns, key).await.map_err(ReceiveError::Io)?;
    let mut md5 = Md5::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(ReceiveError::Body)?;
        let reached = writer.written() + chunk.len() as u64;
        if limit.is_some_and(|limit| reached > limit) {
            return Err(ReceiveError::TooLarge { reached });
        }
        md5.update(&chunk);
        writer.write(&chunk).await.map_err(ReceiveError::Io)?;
    }
    let md5 = hex(&md5.finalize());
    Ok(Received { writer, md5 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, &'static str>> {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))))
    }

    #[tokio::test]
    async fn receives_up_to_the_limit_and_refuses_a_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let got = receive(&store, "ns", "a", chunks(&["abc", "def"]), Some(6))
            .await
            .unwrap();
        assert_eq!(got.size(), 6);
        assert_eq!(got.etag(), "\"e80b5017098950fc58aad83c8c14978e\"");
        got.writer.commit().await.unwrap();

        let refused = receive(&store, "ns", "b", chunks(&["abc", "defg"]), Some(6)).await;
        assert!(matches!(refused, Err(ReceiveError::TooLarge { .. })));
        assert!(store.open_blob("ns", "b").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_broken_body_keeps_its_error_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let body = chunks(&["abc"]).chain(futures::stream::iter([Err("cut")]));
        let broken = receive(&store, "ns", "a", body, None).await;
        assert!(matches!(broken, Err(ReceiveError::Body("cut"))));
        assert!(store.open_blob("ns", "a").await.unwrap().is_none());
    }
}
