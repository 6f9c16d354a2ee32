//! The one chunked-upload driver: every API that takes a file in parts uploads through
//! [`upload_in_parts`].
//!
//! A backend implements [`PartUploader`]: how to start an upload (and the part size and
//! numbering the API uses), how to send one part, how to complete, abort and finalize. The
//! driver owns everything else, once:
//! - splitting the staged file into parts of the API's size (at least one part, so an empty
//!   file is one empty part);
//! - keeping up to [`PartPolicy::max_in_flight`] parts in flight, each streamed from the staged
//!   copy and each paying for its read buffers from the memory budget (the
//!   [`UploadMemory`] in [`UploadSource::memory`], when the core gave one);
//! - retrying a failed part on its own, with the backend's backoff, while the others go on;
//! - aborting the upload when a part or the complete step fails for good, so the server is
//!   left with nothing half-done, and logging (not returning) a failed abort;
//! - the complete step, then the finalize step (Fluxer posts its message there);
//! - for parts sent to presigned URLs, starting over once with a new session when storage
//!   refuses a part (403, an expired URL: a retried part or a slow upload can outlive it).
//!
//! Invariants: no more than `max_in_flight` parts are ever in flight; parts are handed to
//! [`PartUploader::complete`] in part order, whatever order they finished in; a part is sent
//! again only after its previous attempt ended.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::budget::{MemoryHold, UploadMemory};
use super::http::RetryConfig;
use super::{ErrorKind, ObjectMeta, RemoteError, RemoteResult, UploadSource};

/// Memory one part in flight holds: the read-ahead of its streamed body plus the chunk being
/// sent.
pub const PART_BUFFER_BYTES: u64 = sessionfs_io::direct::BODY_BUFFER_BYTES;

/// How the driver may send an API's parts; fixed per backend (and its options).
#[derive(Clone, Debug)]
pub struct PartPolicy {
    /// Most parts in flight at once (1 sends them strictly in order).
    pub max_in_flight: usize,
    /// The first part must finish before any other starts (Appmixer's first chunk creates the
    /// file and returns its id).
    pub first_part_alone: bool,
    /// How each part is retried.
    pub retry: RetryConfig,
    /// Parts go to presigned URLs, which storage refuses with 403 once they expire: a part
    /// refused so ends the upload (aborted), which then starts over once with a new session.
    pub presigned_parts: bool,
}

/// How the staged file is cut, as the API decided when the upload started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLayout {
    /// Bytes per part (the last may be shorter).
    pub part_size: u64,
    /// Number of the first part: 0 or 1, as the API counts.
    pub first_number: u64,
}

/// One part of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The API's number for it (`first_number` + its index).
    pub number: u64,
    /// Its bytes in the staged file.
    pub range: Range<u64>,
    /// How many parts the upload has.
    pub count: u64,
}

/// The primitives of one API's chunked upload. The driver calls them; none of them loops.
#[async_trait]
pub trait PartUploader: Send + Sync {
    /// What the server's upload session is known by (an upload id, a presigned URL...).
    type Session: Send + Sync;
    /// What a sent part returns, to be handed to `complete` (an etag, a File answer...).
    type Sent: Send;
    /// What a completed upload returns, to be handed to `finalize`.
    type Completed: Send;

    /// How parts may be sent.
    fn policy(&self) -> PartPolicy;

    /// Starts an upload of `source` as `name`: checks what the API refuses up front (size
    /// limits), creates the server's session if the API has one, and says how to cut the file.
    async fn start(
        &self,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<(Self::Session, PartLayout)>;

    /// The server's id of the upload in progress, once it has one (the partial file, the
    /// session), for the journal; `None` where nothing on the server needs removing.
    fn server_upload(&self, session: &Self::Session) -> Option<String> {
        let _ = session;
        None
    }

    /// Sends `part` once (the driver retries a temporary failure). Its body comes from
    /// `source.part_body`.
    async fn put_part(
        &self,
        session: &Self::Session,
        part: &Part,
        source: &UploadSource,
    ) -> RemoteResult<Self::Sent>;

    /// Completes the upload from every part's answer, in part order.
    async fn complete(
        &self,
        session: &Self::Session,
        parts: Vec<Self::Sent>,
    ) -> RemoteResult<Self::Completed>;

    /// Gives up the upload so the server keeps nothing of it (cancel, delete the partial
    /// file). Called after a part or the complete step failed for good.
    async fn abort(&self, session: &Self::Session) -> RemoteResult<()>;

    /// Turns the completed upload into the stored object (Fluxer posts the message that
    /// carries it; most APIs just describe what `complete` returned).
    async fn finalize(
        &self,
        session: Self::Session,
        completed: Self::Completed,
    ) -> RemoteResult<ObjectMeta>;
}

/// The parts of a `size`-byte file cut as `layout` says: at least one, so an empty file is one
/// empty part.
pub fn parts_of(size: u64, layout: PartLayout) -> Vec<Part> {
    let part_size = layout.part_size.max(1);
    let count = size.div_ceil(part_size).max(1);
    (0..count)
        .map(|index| Part {
            number: layout.first_number + index,
            range: index * part_size..((index + 1) * part_size).min(size),
            count,
        })
        .collect()
}

/// Uploads `source` as `name` through `uploader`'s primitives: start, parts (several in flight,
/// each retried alone), complete, finalize; abort when a part or the complete step fails.
pub async fn upload_in_parts<U: PartUploader + ?Sized>(
    uploader: &U,
    name: &str,
    source: &UploadSource,
) -> RemoteResult<ObjectMeta> {
    let policy = uploader.policy();
    match upload_once(uploader, name, source, &policy).await {
        Err(Failed::Part(err))
            if policy.presigned_parts && err.kind == ErrorKind::PermissionDenied =>
        {
            log::info!(
                "{}; its upload URL may have expired: uploading {name:?} again with a new one",
                err.message
            );
            upload_once(uploader, name, source, &policy)
                .await
                .map_err(Failed::into_error)
        }
        other => other.map_err(Failed::into_error),
    }
}

/// Why one upload attempt failed: in a part, or anywhere else.
enum Failed {
    Part(RemoteError),
    Other(RemoteError),
}

impl Failed {
    fn into_error(self) -> RemoteError {
        match self {
            Failed::Part(err) | Failed::Other(err) => err,
        }
    }
}

/// One upload attempt: start, parts, complete, finalize; aborted when a part or the complete
/// step fails.
async fn upload_once<U: PartUploader + ?Sized>(
    uploader: &U,
    name: &str,
    source: &UploadSource,
    policy: &PartPolicy,
) -> Result<ObjectMeta, Failed> {
    let (session, layout) = uploader.start(name, source).await.map_err(Failed::Other)?;
    report_started(uploader, &session, source);
    let parts = parts_of(source.size, layout);
    let completed = match send_parts(uploader, &session, policy, &parts, source).await {
        Ok(sent) => uploader
            .complete(&session, sent)
            .await
            .map_err(Failed::Other),
        Err(err) => Err(Failed::Part(err)),
    };
    match completed {
        Ok(completed) => uploader
            .finalize(session, completed)
            .await
            .map_err(Failed::Other),
        Err(err) => {
            if let Err(abort) = uploader.abort(&session).await {
                log::warn!(
                    "{}; the server may keep an unfinished upload of {name:?} until it expires",
                    abort.message
                );
            }
            Err(err)
        }
    }
}

/// Tells the source's hook the server's upload id, once there is one.
fn report_started<U: PartUploader + ?Sized>(
    uploader: &U,
    session: &U::Session,
    source: &UploadSource,
) {
    if let Some(id) = uploader.server_upload(session) {
        source.started(&id);
    }
}

/// Sends every part with at most `policy.max_in_flight` in flight and returns their answers in
/// part order; the first part that fails for good ends it (the others in flight are dropped,
/// which cancels their requests).
async fn send_parts<U: PartUploader + ?Sized>(
    uploader: &U,
    session: &U::Session,
    policy: &PartPolicy,
    parts: &[Part],
    source: &UploadSource,
) -> RemoteResult<Vec<U::Sent>> {
    let mut sent: Vec<Option<U::Sent>> =
        std::iter::repeat_with(|| None).take(parts.len()).collect();
    let mut next = 0;
    if policy.first_part_alone {
        let memory = reserve(source.memory.as_ref(), true).flatten();
        sent[0] = Some(send_part(uploader, session, policy, &parts[0], source, memory).await?);
        // The first part may be what creates the server's upload.
        report_started(uploader, session, source);
        next = 1;
    }
    let max_in_flight = policy.max_in_flight.max(1);
    let mut in_flight = FuturesUnordered::new();
    loop {
        while next < parts.len() && in_flight.len() < max_in_flight {
            // Beyond the first part in flight, a part goes only with memory for its buffers.
            let Some(memory) = reserve(source.memory.as_ref(), in_flight.is_empty()) else {
                break;
            };
            let index = next;
            next += 1;
            in_flight.push(async move {
                let answer =
                    send_part(uploader, session, policy, &parts[index], source, memory).await;
                (index, answer)
            });
        }
        match in_flight.next().await {
            Some((index, answer)) => sent[index] = Some(answer?),
            None if next >= parts.len() => break,
            None => continue,
        }
    }
    Ok(sent
        .into_iter()
        .map(|answer| answer.expect("every part was sent"))
        .collect())
}

/// A part's share of the memory budget: `None` when the budget has no room and the part may
/// wait; `Some(None)` when there is no budget, or this is the only part in flight (`must`), so
/// an upload always makes progress.
fn reserve(
    memory: Option<&Arc<dyn UploadMemory>>,
    must: bool,
) -> Option<Option<Box<dyn MemoryHold>>> {
    let Some(memory) = memory else {
        return Some(None);
    };
    match memory.try_reserve(PART_BUFFER_BYTES) {
        Some(reservation) => Some(Some(reservation)),
        None if must => Some(None),
        None => None,
    }
}

/// Sends one part, retrying it alone; `_memory` pays for its buffers until it is done.
async fn send_part<U: PartUploader + ?Sized>(
    uploader: &U,
    session: &U::Session,
    policy: &PartPolicy,
    part: &Part,
    source: &UploadSource,
    _memory: Option<Box<dyn MemoryHold>>,
) -> RemoteResult<U::Sent> {
    policy
        .retry
        .run(|| uploader.put_part(session, part, source))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::testing::TestMemory;
    use crate::memory::MemoryRemote;
    use crate::{ErrorKind, Remote};

    /// A staged file of `len` patterned bytes.
    fn staged(len: usize) -> (tempfile::TempDir, UploadSource, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let source = UploadSource::new(&path, len as u64);
        (dir, source, data)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_in_flight_never_exceed_the_limit_and_bytes_arrive_in_order() {
        let remote = MemoryRemote::new().with_parts(1000, 1, 3);
        let (_dir, source, data) = staged(10_500);
        remote.upload(Some("c"), "f", &source).await.unwrap();
        assert_eq!(
            remote.get("c", "f").unwrap(),
            data,
            "assembled in part order"
        );
        let log = remote.part_log();
        assert_eq!(log.max_in_flight, 3, "the limit is reached and kept");
        assert_eq!(log.attempts.len(), 11, "each part once");
        assert_eq!(log.aborts, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_beyond_the_first_wait_for_room_in_the_memory_budget() {
        let remote = MemoryRemote::new().with_parts(1000, 1, 4);
        let (_dir, mut source, data) = staged(6000);
        let budget = TestMemory::new(2 * PART_BUFFER_BYTES);
        source.memory = Some(Arc::new(budget.clone()));
        remote.upload(Some("c"), "f", &source).await.unwrap();
        assert_eq!(remote.get("c", "f").unwrap(), data);
        assert_eq!(
            remote.part_log().max_in_flight,
            2,
            "room for two parts' buffers"
        );
        assert_eq!(budget.peak(), 2 * PART_BUFFER_BYTES, "each part paid");
        assert_eq!(budget.used(), 0, "every reservation went back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_only_part_in_flight_goes_without_room_in_the_memory_budget() {
        let remote = MemoryRemote::new().with_parts(1000, 1, 4);
        let (_dir, mut source, data) = staged(3000);
        let budget = TestMemory::new(PART_BUFFER_BYTES - 1);
        source.memory = Some(Arc::new(budget.clone()));
        remote.upload(Some("c"), "f", &source).await.unwrap();
        assert_eq!(remote.get("c", "f").unwrap(), data);
        assert_eq!(remote.part_log().max_in_flight, 1, "one part at a time");
        assert_eq!(budget.peak(), 0, "nothing reserved past the limit");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_part_is_retried_alone() {
        let remote = MemoryRemote::new().with_parts(1000, 0, 2);
        remote.fail_part(2, 2, true);
        let (_dir, source, data) = staged(4000);
        remote.upload(Some("c"), "f", &source).await.unwrap();
        assert_eq!(remote.get("c", "f").unwrap(), data);
        let mut attempts = remote.part_log().attempts;
        attempts.sort();
        assert_eq!(
            attempts,
            [0, 1, 2, 2, 2, 3],
            "part 2 three times, the others once"
        );
        assert_eq!(remote.part_log().aborts, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_failure_aborts_the_upload_and_stores_nothing() {
        let remote = MemoryRemote::new().with_parts(1000, 1, 2);
        remote.fail_part(3, 1, false);
        let (_dir, source, _) = staged(5000);
        let err = remote.upload(Some("c"), "f", &source).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{}", err.message);
        let log = remote.part_log();
        assert_eq!(log.aborts, 1);
        assert_eq!(
            log.attempts.iter().filter(|n| **n == 3).count(),
            1,
            "a permanent failure is not retried"
        );
        assert!(remote.get("c", "f").is_none());

        // Temporary failures that outlast the retries abort too.
        remote.fail_part(1, 10, true);
        let err = remote.upload(Some("c"), "f", &source).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert_eq!(remote.part_log().aborts, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_refused_as_by_an_expired_url_starts_the_upload_over_once() {
        let remote = MemoryRemote::new().with_parts(1000, 1, 2);
        remote.deny_part(2, 1);
        let (_dir, source, data) = staged(3000);
        remote.upload(Some("c"), "f", &source).await.unwrap();
        assert_eq!(remote.get("c", "f").unwrap(), data);
        let log = remote.part_log();
        assert_eq!(log.aborts, 1, "the refused session is aborted");
        assert_eq!(
            log.attempts.iter().filter(|n| **n == 2).count(),
            2,
            "part 2 refused once (not retried in that session), then sent in the new one"
        );

        // Refused again in the new session: the upload fails, nothing is stored.
        remote.deny_part(1, 2);
        let err = remote.upload(Some("c"), "g", &source).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied, "{}", err.message);
        assert_eq!(remote.part_log().aborts, 3);
        assert!(remote.get("c", "g").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_file_is_one_empty_part() {
        let remote = MemoryRemote::new().with_parts(1000, 1, 4);
        let (_dir, source, _) = staged(0);
        remote.upload(Some("c"), "e", &source).await.unwrap();
        assert_eq!(remote.get("c", "e").unwrap().len(), 0);
        assert_eq!(remote.part_log().attempts, [1]);
    }

    #[test]
    fn parts_cover_the_file_once_in_order() {
        let layout = PartLayout {
            part_size: 4,
            first_number: 1,
        };
        let parts = parts_of(10, layout);
        let ranges: Vec<_> = parts.iter().map(|p| p.range.clone()).collect();
        assert_eq!(ranges, [0..4, 4..8, 8..10]);
        assert_eq!(
            parts.iter().map(|p| p.number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(parts.iter().all(|p| p.count == 3));
        let empty = parts_of(
            0,
            PartLayout {
                first_number: 0,
                ..layout
            },
        );
        assert_eq!(empty.len(), 1, "an empty file is one empty part");
        assert_eq!((empty[0].number, empty[0].range.clone()), (0, 0..0));
        assert_eq!(parts_of(8, layout).len(), 2, "an exact multiple");
    }
}
