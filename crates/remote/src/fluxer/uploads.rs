//! Uploads: a file becomes the one attachment of a new message.
//!
//! Two flows, both through the shared chunked driver ([`multipart::upload_in_parts`]), each a
//! [`PartUploader`]:
//! - presigned (the current API, preferred where the server offers it, as
//!   `GET /.well-known/fluxer` `features.presigned_attachment_uploads` says): plan
//!   (`POST /channels/{id}/attachments`), PUT the one `upload_url` (singlepart) or every part's
//!   URL (multipart), complete a multipart plan, then the message with `upload_filename`;
//! - chunked (February 2026): create (`chunk_size`, `chunk_count`; chunk indexes count from 0),
//!   PUT every raw chunk, complete with every etag in order, then the message with
//!   `uploaded_filename`.
//!
//! A server that refuses the presigned plan with `FEATURE_TEMPORARILY_DISABLED` or has no such
//! route (404 `NOT_FOUND`) is asked through the chunked flow from then on. An empty file goes
//! inline in the message (`files[0]`), as the chunked flow takes no empty files.
//!
//! Neither flow has a cancel route: an upload that fails before its message is simply never
//! referenced and the server drops it when its session or URLs expire, so a failed upload
//! leaves no message behind.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{self, ChunkSent, ChunkedCompleted, ChunkedCreated, PlannedUpload, PresignedPlan};
use super::listing::{self, Known};
use super::{FluxerRemote, Payload};
use crate::multipart::{self, Part, PartLayout, PartPolicy, PartUploader};
use crate::{ObjectMeta, RemoteError, RemoteResult, UploadSource};

/// Which upload flow the server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Presigned,
    Chunked,
}

/// Uploads `source` as `name` into `channel`; returns the stored object and what this client
/// last saw under the same name (for the caller to delete now that the new message exists).
pub(super) async fn upload(
    remote: &FluxerRemote,
    channel: &str,
    name: &str,
    source: &UploadSource,
) -> RemoteResult<ObjectMeta> {
    let object = if source.size == 0 {
        let filename = api::attachment_filename(name);
        let attachment = json!({ "id": 0, "filename": filename });
        post_message(remote, channel, name, attachment, Some(&filename)).await?
    } else {
        let uploads = Uploads { remote, channel };
        match flow(remote).await {
            Flow::Presigned => match multipart::upload_in_parts(&Presigned(&uploads), name, source)
                .await
            {
                Err(err) if matches!(api::code_of(&err), Some(code) if flow_missing(code)) => {
                    log::info!(
                        "{}; uploading through the chunked flow instead",
                        err.message
                    );
                    *remote.flow.lock().unwrap_or_else(|p| p.into_inner()) = Some(Flow::Chunked);
                    multipart::upload_in_parts(&Chunked(&uploads), name, source).await?
                }
                other => other?,
            },
            Flow::Chunked => multipart::upload_in_parts(&Chunked(&uploads), name, source).await?,
        }
    };
    Ok(object)
}

/// Whether a refused plan means the server has no presigned flow.
fn flow_missing(code: &str) -> bool {
    matches!(code, "FEATURE_TEMPORARILY_DISABLED" | "NOT_FOUND")
}

/// The flow to use: asked of `/.well-known/fluxer` once; presigned when it cannot say.
async fn flow(remote: &FluxerRemote) -> Flow {
    if let Some(flow) = *remote.flow.lock().unwrap_or_else(|p| p.into_inner()) {
        return flow;
    }
    let known: RemoteResult<api::WellKnown> = remote
        .call_json(
            "read the server's features",
            "well_known",
            "",
            Method::GET,
            "/.well-known/fluxer",
            Payload::None,
        )
        .await;
    let flow = match known {
        Ok(known) if !known.features.presigned_attachment_uploads => Flow::Chunked,
        Ok(_) => Flow::Presigned,
        Err(err) => {
            log::info!("{}; trying presigned uploads", err.message);
            return Flow::Presigned;
        }
    };
    *remote.flow.lock().unwrap_or_else(|p| p.into_inner()) = Some(flow);
    flow
}

/// Posts the message that carries one attachment (`attachment` is its metadata) of the file
/// stored as `name`, and records it in the index.
async fn post_message(
    remote: &FluxerRemote,
    channel: &str,
    name: &str,
    attachment: Value,
    inline: Option<&str>,
) -> RemoteResult<ObjectMeta> {
    let what = format!("post the message carrying {name:?}");
    // A post whose answer was lost may have happened: its retry is then refused (the upload
    // is consumed) or posts twice. The nonce finds the message the lost answer was about.
    let nonce = rand::random::<u64>().to_string();
    let payload = json!({
        "content": api::content_for(name),
        "attachments": [attachment],
        "nonce": nonce,
    });
    let path = format!("/channels/{channel}/messages");
    let posted: RemoteResult<api::Message> = remote
        .call_json(
            &what,
            "message_create",
            channel,
            Method::POST,
            &path,
            Payload::Form(&payload, inline),
        )
        .await;
    let message = match posted {
        Ok(message) => message,
        Err(err) => match posted_earlier(remote, channel, &nonce).await {
            Some(message) => {
                log::info!(
                    "{}; an earlier attempt had posted it (message {}), which stands",
                    err.message,
                    message.id
                );
                message
            }
            None => return Err(err),
        },
    };
    let mut objects = listing::objects_of(&message);
    for attachment in &message.attachments {
        remote.remember_url(attachment);
    }
    let (mut object, known) = match objects.len() {
        1 => objects.remove(0),
        n => {
            return Err(RemoteError::protocol(format!(
                "{what}: the message came back with {n} attachments instead of 1"
            )));
        }
    };
    // The server may not echo the content; the name is the one we sent.
    object.name = name.to_owned();
    remote.index.insert(
        channel,
        vec![Known {
            name: name.to_owned(),
            ..known
        }],
    );
    Ok(object)
}

/// How many of the newest messages are searched for a post whose answer was lost.
const RECENT_MESSAGES: usize = 50;

/// The message among the channel's newest that carries `nonce`, if an attempt whose answer
/// was lost posted it.
async fn posted_earlier(remote: &FluxerRemote, channel: &str, nonce: &str) -> Option<api::Message> {
    let what = "look for a message an earlier attempt posted";
    let recent = listing::messages_page(remote, what, channel, RECENT_MESSAGES, None)
        .await
        .ok()?;
    recent
        .into_iter()
        .find(|message| message.nonce.as_ref().and_then(Value::as_str) == Some(nonce))
}

/// What both flows share: the client and the channel the file goes to.
struct Uploads<'a> {
    remote: &'a FluxerRemote,
    channel: &'a str,
}

impl Uploads<'_> {
    fn policy(&self) -> PartPolicy {
        PartPolicy {
            max_in_flight: self.remote.parallel,
            first_part_alone: false,
            presigned_parts: false,
            retry: self.remote.http.retry_config().clone(),
        }
    }

    /// Checks that the server's part count matches the driver's cut of the file.
    fn check_count(
        &self,
        what: &str,
        size: u64,
        layout: PartLayout,
        count: u64,
    ) -> RemoteResult<()> {
        let cut = multipart::parts_of(size, layout).len() as u64;
        if layout.part_size == 0 || cut != count {
            return Err(RemoteError::protocol(format!(
                "{what}: the server planned {count} parts of {} bytes for {size} bytes",
                layout.part_size
            )));
        }
        Ok(())
    }
}

/// One presigned upload under way.
struct PresignedSession {
    what: String,
    name: String,
    filename: String,
    size: u64,
    planned: PlannedUpload,
}

/// The presigned flow.
struct Presigned<'a>(&'a Uploads<'a>);

#[async_trait]
impl PartUploader for Presigned<'_> {
    type Session = PresignedSession;
    type Sent = ();
    type Completed = ();

    fn policy(&self) -> PartPolicy {
        PartPolicy {
            presigned_parts: true,
            ..self.0.policy()
        }
    }

    async fn start(
        &self,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<(PresignedSession, PartLayout)> {
        let Uploads { remote, channel } = self.0;
        let what = format!("upload {name:?}");
        let filename = api::attachment_filename(name);
        let body = json!({ "attachments": [{
            "id": 0,
            "filename": filename,
            "file_size": source.size,
            "content_type": sessionfs_io::mime::for_upload(&filename),
        }]});
        let path = format!("/channels/{channel}/attachments");
        let mut plan: PresignedPlan = remote
            .call_json(
                &what,
                "attachment_plan",
                channel,
                Method::POST,
                &path,
                Payload::Json(&body),
            )
            .await?;
        if plan.attachments.len() != 1 {
            return Err(RemoteError::protocol(format!(
                "{what}: the server planned {} uploads for one file",
                plan.attachments.len()
            )));
        }
        let planned = plan.attachments.remove(0);
        let layout = if planned.upload_mode == "multipart" {
            let layout = PartLayout {
                part_size: planned.part_size.unwrap_or(0),
                first_number: planned
                    .parts
                    .iter()
                    .map(|p| p.part_number)
                    .min()
                    .unwrap_or(1),
            };
            self.0
                .check_count(&what, source.size, layout, planned.parts.len() as u64)?;
            layout
        } else {
            if planned.upload_url.is_none() {
                return Err(RemoteError::protocol(format!(
                    "{what}: the singlepart plan has no upload_url"
                )));
            }
            PartLayout {
                part_size: source.size,
                first_number: 1,
            }
        };
        let session = PresignedSession {
            what,
            name: name.to_owned(),
            filename,
            size: source.size,
            planned,
        };
        Ok((session, layout))
    }

    async fn put_part(
        &self,
        session: &PresignedSession,
        part: &Part,
        source: &UploadSource,
    ) -> RemoteResult<()> {
        let http = &self.0.remote.http;
        let what = &session.what;
        let planned = &session.planned;
        let url = match &planned.upload_url {
            Some(url) if planned.upload_mode != "multipart" => url,
            _ => {
                &planned
                    .parts
                    .iter()
                    .find(|p| p.part_number == part.number)
                    .ok_or_else(|| {
                        RemoteError::protocol(format!(
                            "{what}: the plan has no url for part {}",
                            part.number
                        ))
                    })?
                    .upload_url
            }
        };
        let body = reqwest::Body::wrap_stream(source.part_body(what, part.range.clone())?);
        let mut request = http
            .client()
            .put(url)
            .header("Content-Length", part.range.end - part.range.start)
            .body(body);
        if planned.upload_mode != "multipart" {
            request = request.header("Content-Type", &planned.content_type);
        }
        http.send_once(what, request).await.map(drop)
    }

    async fn complete(&self, session: &PresignedSession, _parts: Vec<()>) -> RemoteResult<()> {
        let Some(upload_id) = &session.planned.upload_id else {
            return Ok(());
        };
        let Uploads { remote, channel } = self.0;
        let body = json!({ "uploads": [{
            "upload_filename": session.planned.upload_filename,
            "upload_id": upload_id,
        }]});
        let path = format!("/channels/{channel}/attachments/complete");
        remote
            .call(
                &session.what,
                "attachment_complete",
                channel,
                Method::POST,
                &path,
                Payload::Json(&body),
            )
            .await
            .map(drop)
    }

    async fn abort(&self, session: &PresignedSession) -> RemoteResult<()> {
        log::debug!(
            "{}: the unfinished presigned upload is left to expire (there is no cancel route)",
            session.what
        );
        Ok(())
    }

    async fn finalize(&self, session: PresignedSession, _done: ()) -> RemoteResult<ObjectMeta> {
        let attachment = json!({
            "id": 0,
            "filename": session.filename,
            "upload_filename": session.planned.upload_filename,
            "file_size": session.size,
            "content_type": session.planned.content_type,
        });
        post_message(
            self.0.remote,
            self.0.channel,
            &session.name,
            attachment,
            None,
        )
        .await
    }
}

/// One chunked upload under way.
struct ChunkedSession {
    what: String,
    name: String,
    filename: String,
    created: ChunkedCreated,
}

/// The chunked flow.
struct Chunked<'a>(&'a Uploads<'a>);

#[async_trait]
impl PartUploader for Chunked<'_> {
    type Session = ChunkedSession;
    type Sent = String;
    type Completed = ChunkedCompleted;

    fn policy(&self) -> PartPolicy {
        self.0.policy()
    }

    async fn start(
        &self,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<(ChunkedSession, PartLayout)> {
        let Uploads { remote, channel } = self.0;
        let what = format!("upload {name:?}");
        let filename = api::attachment_filename(name);
        let body = json!({ "filename": filename, "file_size": source.size });
        let path = format!("/channels/{channel}/chunked-uploads");
        let created: ChunkedCreated = remote
            .call_json(
                &what,
                "chunked_create",
                channel,
                Method::POST,
                &path,
                Payload::Json(&body),
            )
            .await?;
        let layout = PartLayout {
            part_size: created.chunk_size,
            first_number: 0,
        };
        self.0
            .check_count(&what, source.size, layout, created.chunk_count)?;
        let session = ChunkedSession {
            what,
            name: name.to_owned(),
            filename,
            created,
        };
        Ok((session, layout))
    }

    async fn put_part(
        &self,
        session: &ChunkedSession,
        part: &Part,
        source: &UploadSource,
    ) -> RemoteResult<String> {
        let Uploads { remote, channel } = self.0;
        let what = format!("{} (chunk {} of {})", session.what, part.number, part.count);
        let url = remote.http.url(&format!(
            "/channels/{channel}/chunked-uploads/{}/chunks/{}",
            session.created.upload_id, part.number
        ));
        let build = || async {
            let body = reqwest::Body::wrap_stream(source.part_body(&what, part.range.clone())?);
            Ok(remote
                .http
                .client()
                .put(&url)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", part.range.end - part.range.start)
                .body(body))
        };
        let paced = remote.paced("chunk_put", channel);
        let response = remote.http.attempt(&what, &paced, &build).await?;
        let sent: ChunkSent = remote.http.json(&what, response).await?;
        Ok(sent.etag)
    }

    async fn complete(
        &self,
        session: &ChunkedSession,
        etags: Vec<String>,
    ) -> RemoteResult<ChunkedCompleted> {
        let Uploads { remote, channel } = self.0;
        let etags: Vec<Value> = etags
            .into_iter()
            .enumerate()
            .map(|(index, etag)| json!({ "chunk_index": index, "etag": etag }))
            .collect();
        let body = json!({ "etags": etags });
        let path = format!(
            "/channels/{channel}/chunked-uploads/{}/complete",
            session.created.upload_id
        );
        remote
            .call_json(
                &session.what,
                "chunked_complete",
                channel,
                Method::POST,
                &path,
                Payload::Json(&body),
            )
            .await
    }

    async fn abort(&self, session: &ChunkedSession) -> RemoteResult<()> {
        log::debug!(
            "{}: the unfinished chunked upload {} is left to expire (there is no cancel route)",
            session.what,
            session.created.upload_id
        );
        Ok(())
    }

    async fn finalize(
        &self,
        session: ChunkedSession,
        done: ChunkedCompleted,
    ) -> RemoteResult<ObjectMeta> {
        let attachment = json!({
            "id": 0,
            "filename": session.filename,
            "uploaded_filename": done.upload_filename,
        });
        post_message(
            self.0.remote,
            self.0.channel,
            &session.name,
            attachment,
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn only_a_missing_flow_falls_back() {
        assert!(flow_missing("FEATURE_TEMPORARILY_DISABLED"));
        assert!(flow_missing("NOT_FOUND"));
        assert!(!flow_missing("FILE_SIZE_TOO_LARGE"));
        assert!(!flow_missing("UNKNOWN_CHANNEL"));
    }

    #[test]
    fn refused_codes_keep_their_kind() {
        let err = api::refine(RemoteError::new(
            ErrorKind::InvalidInput,
            "upload: server answered 400: File size is too large. Maximum file size is 26214400. \
             (FILE_SIZE_TOO_LARGE)",
        ));
        assert_eq!(err.kind, ErrorKind::TooLarge);
        assert!(err.message.contains("26214400"));
    }
}
