//! File records and the routes that read or delete them: `GET /files`, `GET /files/count`,
//! `GET /files/metadata/:id`, `GET /files/:id`, `DELETE /files/:id`, `DELETE /files`.
//!
//! A file's bytes are its chunk blobs in number order (namespace [`namespace`], keys `"1"`,
//! `"2"`, ...): completing a file copies nothing, and a download streams the chunks one after
//! the other. A download opens every chunk under the file's assembly lock, so it serves one
//! consistent version even if a chunk is replaced while it streams.
//!
//! Download (*choices*): `Content-Type` is the file's, `Content-Length` its length,
//! `Content-Disposition: attachment` with the name, `Accept-Ranges: bytes` and Range as in
//! `range`, unless the emulator is configured to ignore Range (then always 200 without
//! `Accept-Ranges`). Deleting answers `{}`, as the docs' empty response object.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use md5::Md5;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::query::{self, Field, FileQuery, Projection};
use super::range::{self, Ranged};
use super::{AppmixerState, Loaded, reply};
use crate::iso_millis;
use crate::store::{Blob, Store};

/// The store table holding one record per file.
const FILES_TABLE: &str = "appmixer_files";
/// The GridFS chunk size every File object reports (unrelated to upload chunks).
const GRIDFS_CHUNK_SIZE: u64 = 261_120;

/// The blob namespace holding the chunks of file `file_id`.
pub(super) fn namespace(file_id: &str) -> String {
    format!("appmixer/{file_id}")
}

/// One file as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct FileRecord {
    pub(super) file_id: String,
    pub(super) user_id: String,
    pub(super) filename: String,
    pub(super) content_type: String,
    /// When the file was created, unix milliseconds.
    pub(super) upload_date_ms: i64,
    /// Creation order, to break ties between files created in the same millisecond.
    pub(super) seq: u64,
    /// `uploader-chunks-total` of the first request.
    pub(super) chunks_total: u32,
    /// Length of every chunk stored, by number.
    pub(super) chunks: BTreeMap<u32, u64>,
    /// md5 of chunks `1..k` for the longest such run stored: the whole file's once complete.
    pub(super) md5: String,
}

impl FileRecord {
    /// Bytes stored so far (the file's length once complete).
    pub(super) fn length(&self) -> u64 {
        self.chunks.values().sum()
    }

    /// Whether chunks `1..=total` are all stored.
    pub(super) fn is_complete(&self) -> bool {
        self.chunks.len() == self.chunks_total as usize
    }

    /// The File object, showing the keys `projection` keeps.
    pub(super) fn json(&self, projection: Projection) -> FileJson<'_> {
        let show = |field| projection.shows(field);
        FileJson {
            length: show(Field::Length).then(|| self.length()),
            chunk_size: show(Field::ChunkSize).then_some(GRIDFS_CHUNK_SIZE),
            upload_date: show(Field::UploadDate).then(|| iso_millis(self.upload_date_ms)),
            filename: show(Field::Filename).then_some(self.filename.as_str()),
            md5: show(Field::Md5).then_some(self.md5.as_str()),
            metadata: show(Field::Metadata).then_some(Metadata {
                user_id: &self.user_id,
            }),
            content_type: show(Field::ContentType).then_some(self.content_type.as_str()),
            file_id: show(Field::FileId).then_some(self.file_id.as_str()),
        }
    }
}

/// The docs' File object, keys in their order; a projection leaves keys out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    #[serde(rename = "userId")]
    user_id: &'a str,
}

/// The md5 of chunks `1..=digested` of one file, kept between its chunk uploads so each byte
/// is digested once. Not stored: after a restart it starts again from chunk 1.
pub(super) struct Assembly {
    /// How many leading chunks `md5` has digested.
    pub(super) digested: u32,
    /// The digest state after those chunks.
    pub(super) md5: Md5,
}

impl Assembly {
    fn new() -> Assembly {
        Assembly {
            digested: 0,
            md5: Md5::default(),
        }
    }

    /// Forgets what was digested (a digested chunk was replaced).
    pub(super) fn reset(&mut self) {
        *self = Assembly::new();
    }
}

/// Every file, in memory, plus each file's assembly lock.
pub(super) struct Files {
    /// Every record by id. Lock order: after a file's assembly lock; held across the record
    /// write, so memory and store change together.
    records: tokio::sync::Mutex<HashMap<String, FileRecord>>,
    /// The assembly lock of each file touched in this process: held while a chunk is committed
    /// and digested, while a download opens the chunks, and while the file is deleted.
    assemblies: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Assembly>>>>,
    /// The next creation sequence number.
    next_seq: AtomicU64,
}

impl Files {
    /// Loads every record from the store.
    pub(super) async fn load(store: &Store) -> io::Result<Files> {
        let records: HashMap<String, FileRecord> = store
            .list_records::<FileRecord>(FILES_TABLE)
            .await?
            .into_iter()
            .collect();
        let next_seq = records.values().map(|r| r.seq + 1).max().unwrap_or(0);
        Ok(Files {
            records: tokio::sync::Mutex::new(records),
            assemblies: std::sync::Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(next_seq),
        })
    }

    /// A fresh creation sequence number.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// The assembly lock of `file_id`.
    pub(super) fn assembly(&self, file_id: &str) -> Arc<tokio::sync::Mutex<Assembly>> {
        let mut all = self.assemblies.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(file_id.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Assembly::new())))
            .clone()
    }

    /// A copy of `file_id`'s record if `user_id` owns it.
    pub(super) async fn owned(&self, file_id: &str, user_id: &str) -> Option<FileRecord> {
        let records = self.records.lock().await;
        records
            .get(file_id)
            .filter(|r| r.user_id == user_id)
            .cloned()
    }

    /// Writes `record` to the store, then to memory.
    pub(super) async fn save(&self, store: &Store, record: FileRecord) -> io::Result<()> {
        let mut records = self.records.lock().await;
        store
            .put_record(FILES_TABLE, &record.file_id, &record)
            .await?;
        records.insert(record.file_id.clone(), record);
        Ok(())
    }

    /// Deletes `file_id`'s record and chunks; the caller holds its assembly lock.
    async fn remove(&self, store: &Store, file_id: &str) -> io::Result<()> {
        {
            let mut records = self.records.lock().await;
            store.delete_record(FILES_TABLE, file_id).await?;
            records.remove(file_id);
        }
        store.delete_namespace(&namespace(file_id)).await?;
        let mut all = self.assemblies.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(file_id);
        Ok(())
    }

    /// Files whose chunks have not all arrived, over every user (for the stats extension).
    pub(super) async fn incomplete(&self) -> usize {
        let records = self.records.lock().await;
        records.values().filter(|r| !r.is_complete()).count()
    }

    /// Runs `query` over `user_id`'s complete files: the matching records, sorted and paged.
    async fn select(&self, user_id: &str, query: &FileQuery) -> Vec<FileRecord> {
        let records = self.records.lock().await;
        let mine: Vec<&FileRecord> = records
            .values()
            .filter(|r| r.user_id == user_id && r.is_complete() && query.matches(r))
            .collect();
        query.page(mine).into_iter().cloned().collect()
    }
}

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Decodes the query string of a route that accepts `allowed` and runs it over the caller's
/// complete files; the 400 or 500 to answer otherwise.
async fn selected<'a>(
    st: &'a AppmixerState,
    caller: &Caller,
    pairs: Pairs,
    allowed: &[&str],
) -> Result<(&'a Loaded, FileQuery, Vec<FileRecord>), Response> {
    let Ok(Query(pairs)) = pairs else {
        return Err(reply::boom(
            StatusCode::BAD_REQUEST,
            "Invalid request query input",
        ));
    };
    let query = query::decode(&pairs, allowed).map_err(|res| *res)?;
    let loaded = st.loaded().await?;
    let records = loaded.files.select(&caller.user_id, &query).await;
    Ok((loaded, query, records))
}

/// `GET /files`: a bare array of the caller's complete files.
pub(super) async fn list(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
    pairs: Pairs,
) -> Response {
    match selected(&st, &caller, pairs, query::LIST_PARAMS).await {
        Ok((_, query, page)) => {
            let json: Vec<FileJson> = page.iter().map(|r| r.json(query.projection)).collect();
            reply::json(StatusCode::OK, &json)
        }
        Err(res) => res,
    }
}

/// `GET /files/count`: `{"count": N}` of the caller's complete files matching `filter`.
pub(super) async fn count(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
    pairs: Pairs,
) -> Response {
    match selected(&st, &caller, pairs, query::COUNT_PARAMS).await {
        Ok((_, _, matching)) => reply::json(
            StatusCode::OK,
            &serde_json::json!({ "count": matching.len() }),
        ),
        Err(res) => res,
    }
}

/// `GET /files/metadata/:id`: the File object, also of a file still being uploaded.
pub(super) async fn metadata(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(res) => return res,
    };
    match loaded.files.owned(&id, &caller.user_id).await {
        Some(record) => reply::json(StatusCode::OK, &record.json(Projection::ALL)),
        None => reply::file_not_found(),
    }
}

/// `GET /files/:id`: the content of a complete file, streamed, with Range.
pub(super) async fn download(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(res) => return res,
    };
    // Checked before taking the lock, so probes of unknown ids leave no lock behind.
    if loaded.files.owned(&id, &caller.user_id).await.is_none() {
        return reply::file_not_found();
    }
    let (record, blobs) = {
        let assembly = loaded.files.assembly(&id);
        let _assembly = assembly.lock().await;
        let record = match loaded.files.owned(&id, &caller.user_id).await {
            Some(record) if record.is_complete() => record,
            _ => return reply::file_not_found(),
        };
        match open_chunks(&st.inner.store, &record).await {
            Ok(blobs) => (record, blobs),
            Err(err) => return reply::internal_error("opening chunks", &err),
        }
    };
    let size = record.length();
    let ranged = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if st.inner.serve_ranges => range::parse(spec, size),
        _ => Ranged::Whole,
    };
    let (status, span) = match ranged {
        Ranged::Whole => (StatusCode::OK, 0..size),
        Ranged::Part(span) => (StatusCode::PARTIAL_CONTENT, span),
        Ranged::Unsatisfiable => {
            let mut res = reply::boom(StatusCode::RANGE_NOT_SATISFIABLE, "Range Not Satisfiable");
            res.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return res;
        }
    };
    let mut res = Response::new(Body::from_stream(stream_span(blobs, span.clone())));
    *res.status_mut() = status;
    let out = res.headers_mut();
    out.insert(header::CONTENT_TYPE, header_value(&record.content_type));
    out.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    out.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(&record.filename)),
    );
    if st.inner.serve_ranges {
        out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {}-{}/{size}", span.start, span.end - 1);
        out.insert(header::CONTENT_RANGE, header_value(&range));
    }
    res
}

/// Opens every chunk of a complete file, checking each holds the length recorded for it.
async fn open_chunks(store: &Store, record: &FileRecord) -> io::Result<Vec<Blob>> {
    let ns = namespace(&record.file_id);
    let mut blobs = Vec::with_capacity(record.chunks.len());
    for (number, &length) in &record.chunks {
        match store.open_blob(&ns, &number.to_string()).await? {
            Some(blob) if blob.info.size == length => blobs.push(blob),
            _ => {
                return Err(io::Error::other(format!(
                    "chunk {number} of {} is missing or has another length",
                    record.file_id
                )));
            }
        }
    }
    Ok(blobs)
}

/// Streams bytes `span` of the chunks laid end to end; each chunk is read only when reached.
fn stream_span(
    blobs: Vec<Blob>,
    span: std::ops::Range<u64>,
) -> impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    let mut offset = 0;
    let mut pieces = Vec::new();
    for blob in blobs {
        let (start, end) = (offset, offset + blob.info.size);
        offset = end;
        if end > span.start && start < span.end {
            let from = span.start.max(start) - start;
            let to = span.end.min(end) - start;
            pieces.push((blob, from..to));
        }
    }
    futures::stream::iter(pieces).flat_map(|(blob, piece)| blob.into_stream(piece))
}

/// A header value from text the emulator chose or checked; unrepresentable text is dropped.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `attachment` with an ASCII `filename` fallback and the exact name as RFC 5987 `filename*`.
fn content_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let exact = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}")
}

/// `DELETE /files/:id`: any file of the caller, complete or not.
pub(super) async fn delete_one(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(res) => return res,
    };
    if loaded.files.owned(&id, &caller.user_id).await.is_none() {
        return reply::file_not_found();
    }
    let assembly = loaded.files.assembly(&id);
    let _assembly = assembly.lock().await;
    if loaded.files.owned(&id, &caller.user_id).await.is_none() {
        return reply::file_not_found();
    }
    match loaded.files.remove(&st.inner.store, &id).await {
        Ok(()) => reply::json(StatusCode::OK, &serde_json::json!({})),
        Err(err) => reply::internal_error("deleting a file", &err),
    }
}

/// `DELETE /files?filter=...`: every complete file of the caller that matches (all of them
/// without a filter).
pub(super) async fn delete_matching(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
    pairs: Pairs,
) -> Response {
    let (loaded, _, matching) = match selected(&st, &caller, pairs, query::DELETE_PARAMS).await {
        Ok(selected) => selected,
        Err(res) => return res,
    };
    for record in matching {
        let assembly = loaded.files.assembly(&record.file_id);
        let _assembly = assembly.lock().await;
        if loaded
            .files
            .owned(&record.file_id, &caller.user_id)
            .await
            .is_none()
        {
            continue;
        }
        if let Err(err) = loaded.files.remove(&st.inner.store, &record.file_id).await {
            return reply::internal_error("deleting files", &err);
        }
    }
    reply::json(StatusCode::OK, &serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_dates_have_milliseconds() {
        assert_eq!(iso_millis(1_595_618_389_755), "2020-07-24T19:19:49.755Z");
    }

    #[test]
    fn dispositions_keep_the_exact_name() {
        assert_eq!(
            content_disposition("a \"b\".txt"),
            "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22%2Etxt"
        );
        assert_eq!(
            content_disposition("é"),
            "attachment; filename=\"_\"; filename*=UTF-8''%C3%A9"
        );
    }
}
