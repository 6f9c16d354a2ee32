//! `POST /files`: one multipart request carrying a whole file or one chunk of it.
//!
//! Order of checks: the chunk headers (400, `validation.source = "headers"`); with
//! `uploader-file-id`, that the caller owns the file (404) and that the total matches (400);
//! the multipart body (400 `Invalid multipart payload format`); the `file` part (400,
//! `source = "payload"`); its length against `max_upload_bytes` (413) and
//! `uploader-chunk-size` (400). Only then, under the file's assembly lock, is the chunk
//! committed, the digest advanced over every chunk that now continues the run `1..k`, and the
//! record saved. The answer is the File object as it stands after this chunk.
//!
//! Header values are read as UTF-8 (*choice*: a client sends a non-ASCII `uploader-file-name`
//! as its UTF-8 bytes). At most [`MAX_CHUNKS`] chunks per file.

use std::io;

use axum::Extension;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use md5::Digest;

use super::auth::Caller;
use super::files::{Assembly, FileRecord, Files, namespace};
use super::query::Projection;
use super::{AppmixerState, Loaded, reply};
use crate::body::{self, ReceiveError};
use crate::store::{BlobWriter, Store};

/// The most chunks one file may have (*choice*: 100 000 chunks of 8 MiB is 780 GiB).
const MAX_CHUNKS: u32 = 100_000;
/// The content type of a part that names none.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The `uploader-*` headers of one request.
#[derive(Debug, PartialEq, Eq)]
struct ChunkHeaders {
    file_id: Option<String>,
    file_name: Option<String>,
    number: u32,
    total: u32,
    size: Option<u64>,
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Box<Response>> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => std::str::from_utf8(value.as_bytes())
            .map(|text| Some(text.trim()))
            .map_err(|_| invalid_header(name, "must be UTF-8 text")),
    }
}

fn invalid_header(name: &str, why: &str) -> Box<Response> {
    Box::new(reply::invalid(
        "headers",
        name,
        &format!("\"{name}\" {why}"),
    ))
}

/// A positive integer header, `None` when absent.
fn positive(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Box<Response>> {
    match header_text(headers, name)? {
        None => Ok(None),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            Ok(_) => Err(invalid_header(name, "must be greater than or equal to 1")),
            Err(_) => Err(invalid_header(name, "must be a positive integer")),
        },
    }
}

impl ChunkHeaders {
    /// Reads and checks the headers; absent chunk headers mean chunk 1 of 1.
    fn decode(headers: &HeaderMap) -> Result<ChunkHeaders, Box<Response>> {
        let total = positive(headers, "uploader-chunks-total")?.unwrap_or(1);
        if total > u64::from(MAX_CHUNKS) {
            return Err(invalid_header(
                "uploader-chunks-total",
                &format!("must be less than or equal to {MAX_CHUNKS}"),
            ));
        }
        let number = match positive(headers, "uploader-chunk-number")? {
            Some(n) => n,
            None if total == 1 => 1,
            None => return Err(invalid_header("uploader-chunk-number", "is required")),
        };
        if number > total {
            return Err(invalid_header(
                "uploader-chunk-number",
                &format!("must be less than or equal to {total}"),
            ));
        }
        let size = match header_text(headers, "uploader-chunk-size")? {
            None => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| invalid_header("uploader-chunk-size", "must be a number"))?,
            ),
        };
        let text = |name| -> Result<Option<String>, Box<Response>> {
            Ok(header_text(headers, name)?
                .filter(|t| !t.is_empty())
                .map(str::to_owned))
        };
        Ok(ChunkHeaders {
            file_id: text("uploader-file-id")?,
            file_name: text("uploader-file-name")?,
            number: number as u32,
            total: total as u32,
            size,
        })
    }
}

fn bad_multipart() -> Response {
    reply::boom(StatusCode::BAD_REQUEST, "Invalid multipart payload format")
}

fn wrong_size(declared: u64, why: &str) -> Response {
    reply::invalid(
        "headers",
        "uploader-chunk-size",
        &format!("\"uploader-chunk-size\" is {declared} but the part {why}"),
    )
}

fn too_large(limit: u64) -> Response {
    reply::boom(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Payload content length greater than maximum allowed: {limit}"),
    )
}

/// `POST /files`.
pub(super) async fn upload(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let _in_flight = st.inner.chunks.enter();
    let chunk = match ChunkHeaders::decode(&headers) {
        Ok(chunk) => chunk,
        Err(res) => return *res,
    };
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(res) => return res,
    };
    if let Some(id) = &chunk.file_id
        && let Err(res) = check_continues(&loaded.files, id, &caller, &chunk).await
    {
        return res;
    }
    let Ok(multipart) = multipart else {
        return bad_multipart();
    };
    let file_id = chunk
        .file_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let received = match receive(&st, &chunk, &file_id, multipart).await {
        Ok(received) => received,
        Err(res) => return res,
    };
    if let Some(declared) = chunk.size.filter(|&d| d != received.writer.written()) {
        return wrong_size(
            declared,
            &format!("holds {} bytes", received.writer.written()),
        );
    }
    commit_chunk(&st, loaded, &caller, &chunk, file_id, received).await
}

/// A later chunk of `id`: the caller owns the file (404) and names the same total (400).
async fn check_continues(
    files: &Files,
    id: &str,
    caller: &Caller,
    chunk: &ChunkHeaders,
) -> Result<(), Response> {
    match files.owned(id, &caller.user_id).await {
        None => Err(reply::file_not_found()),
        Some(record) if record.chunks_total != chunk.total => Err(*invalid_header(
            "uploader-chunks-total",
            &format!(
                "must be {} as for the file's first chunk",
                record.chunks_total
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The `file` part of a request, streamed to a blob not yet committed.
struct Received {
    writer: BlobWriter,
    name: Option<String>,
    content_type: Option<String>,
}

/// Streams the first `file` part to a temporary blob; reads the rest of the form so that a
/// body cut anywhere stores nothing.
async fn receive(
    st: &AppmixerState,
    chunk: &ChunkHeaders,
    file_id: &str,
    mut multipart: Multipart,
) -> Result<Received, Response> {
    let mut received = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return Err(bad_multipart()),
        };
        if received.is_some() || field.name() != Some("file") {
            continue;
        }
        let part_name = field
            .file_name()
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let name = chunk.file_name.clone().or(part_name);
        if chunk.file_id.is_none() && name.is_none() {
            return Err(*invalid_header("uploader-file-name", "is required"));
        }
        let content_type = field.content_type().map(str::to_owned);
        let key = chunk.number.to_string();
        let most = st.inner.max_upload_bytes;
        // Both limits at once; a chunk that crosses both answers the 413, as it is checked first.
        let limit = [most, chunk.size].into_iter().flatten().min();
        let body = field.map(|bytes| bytes.map_err(drop));
        let writer =
            match body::receive(&st.inner.store, &namespace(file_id), &key, body, limit).await {
                Ok(received) => received.writer,
                Err(ReceiveError::TooLarge { reached }) => {
                    let declared = chunk
                        .size
                        .filter(|_| most.is_none_or(|most| reached <= most));
                    return Err(match declared {
                        Some(declared) => wrong_size(declared, "is longer"),
                        None => too_large(most.unwrap_or(reached)),
                    });
                }
                Err(ReceiveError::Body(())) => return Err(bad_multipart()),
                Err(ReceiveError::Io(err)) => return Err(reply::internal_error("uploading", &err)),
            };
        received = Some(Received {
            writer,
            name,
            content_type,
        });
    }
    received.ok_or_else(|| reply::invalid("payload", "file", "\"file\" is required"))
}

/// Under the file's assembly lock: commits the chunk, advances the digest, saves the record
/// and answers with the File object as it now stands.
async fn commit_chunk(
    st: &AppmixerState,
    loaded: &Loaded,
    caller: &Caller,
    chunk: &ChunkHeaders,
    file_id: String,
    received: Received,
) -> Response {
    let assembly = loaded.files.assembly(&file_id);
    let mut assembly = assembly.lock().await;
    let mut record = if chunk.file_id.is_some() {
        // Deleted while this chunk streamed: the chunk goes with it.
        match loaded.files.owned(&file_id, &caller.user_id).await {
            Some(record) => record,
            None => return reply::file_not_found(),
        }
    } else {
        FileRecord {
            file_id: file_id.clone(),
            user_id: caller.user_id.clone(),
            filename: received.name.unwrap_or_default(),
            content_type: (received.content_type)
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            upload_date_ms: chrono::Utc::now().timestamp_millis(),
            seq: loaded.files.next_seq(),
            chunks_total: chunk.total,
            chunks: Default::default(),
            md5: String::new(),
        }
    };
    let stored = match received.writer.commit().await {
        Ok(info) => info.size,
        Err(err) => return reply::internal_error("storing a chunk", &err),
    };
    record.chunks.insert(chunk.number, stored);
    if chunk.number <= assembly.digested {
        assembly.reset();
    }
    if let Err(err) = advance(&st.inner.store, &mut assembly, &mut record).await {
        assembly.reset();
        return reply::internal_error("digesting chunks", &err);
    }
    if let Err(err) = loaded.files.save(&st.inner.store, record.clone()).await {
        return reply::internal_error("saving a file record", &err);
    }
    reply::json(StatusCode::OK, &record.json(Projection::ALL))
}

/// Digests every stored chunk that continues the run `1..digested` and sets the record's md5.
async fn advance(
    store: &Store,
    assembly: &mut Assembly,
    record: &mut FileRecord,
) -> io::Result<()> {
    let ns = namespace(&record.file_id);
    while let Some(&length) = record.chunks.get(&(assembly.digested + 1)) {
        let number = assembly.digested + 1;
        let Some(blob) = store.open_blob(&ns, &number.to_string()).await? else {
            return Err(io::Error::other(format!("chunk {number} is missing")));
        };
        let mut bytes = blob.into_stream(0..length);
        while let Some(piece) = bytes.next().await {
            assembly.md5.update(&piece?);
        }
        assembly.digested = number;
    }
    let digest = assembly.md5.clone().finalize();
    record.md5 = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn no_chunk_headers_is_one_whole_file() {
        let chunk = ChunkHeaders::decode(&headers(&[])).unwrap();
        assert_eq!((chunk.number, chunk.total, chunk.size), (1, 1, None));
    }

    #[test]
    fn chunk_headers_are_checked() {
        let ok = ChunkHeaders::decode(&headers(&[
            ("uploader-chunk-number", "2"),
            ("uploader-chunks-total", "3"),
            ("uploader-chunk-size", "0"),
            ("uploader-file-id", "abc"),
        ]))
        .unwrap();
        assert_eq!((ok.number, ok.total, ok.size), (2, 3, Some(0)));
        assert_eq!(ok.file_id.as_deref(), Some("abc"));
        for bad in [
            &[("uploader-chunk-number", "x")][..],
            &[("uploader-chunk-number", "0")],
            &[("uploader-chunk-number", "2")],
            &[("uploader-chunks-total", "3")],
            &[("uploader-chunks-total", "-1")],
            &[("uploader-chunks-total", "100001")],
            &[("uploader-chunk-size", "1.5")],
        ] {
            assert!(ChunkHeaders::decode(&headers(bad)).is_err(), "{bad:?}");
        }
    }
}
