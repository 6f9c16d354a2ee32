//! The Fluxer client: guilds and channels as directories, message attachments as files.
//!
//! Contract: `docs/api/fluxer.md` and the OpenAPI files in `docs/specs/`. Layout: every
//! text channel the user sees is a [`Container`] whose group is its guild (DM channels are in
//! the group `@me`), so the mount shows `guild/channel/file`. Inside a channel, a file is the one
//! attachment of a message whose content names its exact path (`api::content_for`), so names the
//! server normalises and subdirectories round-trip; attachments posted by other clients are
//! listed under their filename. Object ids and versions are attachment ids (an upload is always a
//! new attachment; names are not unique and the core disambiguates them).
//!
//! Parts, by what each owns: `api` (wire shapes, the error envelope, the content line),
//! `pacing` (staying below the rate limits), `listing` (the channel walk and the index of known
//! attachments), `uploads` (the presigned and chunked flows through the shared driver, and the
//! message that finishes either).
//!
//! Choices:
//! - Every `/v1` call goes out under the `Paced` request policy: the pacer first, then one
//!   attempt, whose answer's rate-limit headers the pacer learns from; [`HttpClient::call`]
//!   retries around it for calls the driver does not retry itself.
//! - Writing over a file posts the new message first and then deletes the message (or only the
//!   attachment, when its message carries others) that this client last saw under the same
//!   name, the newest if several; the old bytes stay readable until the new message exists.
//! - The token goes only into the `Authorization` header, marked sensitive; attachment and
//!   storage URLs take none and are never logged with their query.

mod api;
mod listing;
mod pacing;
mod uploads;

use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::http::{HttpClient, RequestPolicy};
use super::url_cache::{self, UrlCache};
use super::{
    Capabilities, Container, ContainerGroup, ContainerRef, ErrorKind, NameRules, ObjectMeta,
    Remote, RemoteConfig, RemoteError, RemoteResult, UploadSource,
};
use listing::Index;
use pacing::Pacer;

/// Chunks or parts in flight per file unless `--upload-parallel` says otherwise: a presigned
/// plan has about 20 parts, so all of them go at once (each holds 5 MiB of buffers from the
/// memory budget while it runs, and waits when there is none). Over the wan profile a 256 MiB
/// `cp` took 2.5 s at 4 and 1.75 s at 20, against 5.2 s for one curl upload (medians of 5).
/// The pacer keeps chunked uploads, which count against the API's rate limit, below it.
const DEFAULT_PARALLEL: usize = 20;
/// Longest stored name: the content line must stay within 2000 characters.
const MAX_NAME_BYTES: usize = 1800;
/// Largest attachment any Fluxer account may send (500 MiB, the premium limit; the chunked
/// flow's 128 chunks of 8 MiB allow 1 GiB). An account's own limit (25 MiB without premium,
/// bots 50 MiB) is smaller and only the server knows it: a file between the two is refused
/// at close with `FILE_SIZE_TOO_LARGE` (EFBIG), and its log line names the limit.
pub const MAX_OBJECT_BYTES: u64 = 500 << 20;
/// Attachment URLs remembered at once.
const URL_CACHE_ENTRIES: usize = 4096;
/// How long an attachment URL without an `expires_at` is trusted.
const URL_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The group of direct-message channels.
const DM_GROUP: &str = "@me";

/// A Fluxer server.
pub struct FluxerRemote {
    http: HttpClient,
    /// The `Authorization` value, marked sensitive.
    auth: HeaderValue,
    capabilities: Capabilities,
    pacer: Pacer,
    /// Chunks or parts in flight per file.
    parallel: usize,
    /// Which upload flow the server offers, once known.
    flow: Mutex<Option<uploads::Flow>>,
    /// Attachments seen per channel.
    index: Index,
    /// Attachment URL by attachment id.
    urls: UrlCache,
}

/// A request body, rebuilt for each attempt.
enum Payload<'a> {
    None,
    Json(&'a serde_json::Value),
    /// `multipart/form-data` with `payload_json`, and an empty inline `files[0]` when named.
    Form(&'a serde_json::Value, Option<&'a str>),
}

impl FluxerRemote {
    /// A client for the Fluxer API at `config.endpoint` (with or without its `/v1`); fails
    /// without a token.
    pub fn new(config: &RemoteConfig) -> RemoteResult<Self> {
        let token = config
            .token
            .clone()
            .filter(|token| !token.trim().is_empty())
            .ok_or_else(|| {
                RemoteError::new(
                    ErrorKind::PermissionDenied,
                    "fluxer needs a session token: pass --token or set SESSIONFS_TOKEN",
                )
            })?;
        let mut auth = HeaderValue::from_str(token.trim()).map_err(|_| {
            RemoteError::new(
                ErrorKind::PermissionDenied,
                "the fluxer token holds characters a header cannot carry",
            )
        })?;
        auth.set_sensitive(true);
        let base = config.endpoint.trim_end_matches('/');
        let endpoint = if base.ends_with("/v1") {
            base.to_owned()
        } else {
            format!("{base}/v1")
        };
        Ok(Self {
            http: HttpClient::new(&endpoint, api::error_envelope)?.with_retry(config.retry.clone()),
            auth,
            capabilities: Capabilities {
                containers: true,
                delete: true,
                range_reads: true,
                overwrite_by_name: false,
                max_object_bytes: MAX_OBJECT_BYTES,
                min_object_bytes: 0,
                name_rules: NameRules {
                    max_name_bytes: Some(MAX_NAME_BYTES),
                    ..NameRules::default()
                },
                upload_md5: false,
                streaming_upload: false,
            },
            pacer: Pacer::new(),
            parallel: config.upload_parallel.unwrap_or(DEFAULT_PARALLEL).max(1),
            flow: Mutex::new(None),
            index: Index::default(),
            urls: UrlCache::new(URL_CACHE_ENTRIES),
        })
    }

    /// How a request in bucket `route` of `channel` goes out.
    fn paced<'a>(&'a self, route: &'static str, channel: &'a str) -> Paced<'a> {
        Paced {
            remote: self,
            route,
            channel,
        }
    }

    /// The request of an API call: `method` on `url`, with `payload`.
    fn request(&self, method: &Method, url: &str, payload: &Payload<'_>) -> RequestBuilder {
        let request = self
            .http
            .client()
            .request(method.clone(), url)
            .header("Accept", "application/json");
        match payload {
            Payload::None => request,
            Payload::Json(body) => request.json(body),
            Payload::Form(body, inline) => {
                let mut form =
                    reqwest::multipart::Form::new().text("payload_json", body.to_string());
                if let Some(filename) = inline {
                    let part =
                        reqwest::multipart::Part::bytes(Vec::new()).file_name(filename.to_string());
                    form = form.part("files[0]", part);
                }
                request.multipart(form)
            }
        }
    }

    /// An API call with the shared retries.
    async fn call(
        &self,
        what: &str,
        route: &'static str,
        channel: &str,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> RemoteResult<Response> {
        let url = self.http.url(path);
        let build = || async { Ok(self.request(&method, &url, &payload)) };
        self.http
            .call(what, &self.paced(route, channel), build)
            .await
    }

    /// An API call whose answer is JSON of type `T`.
    async fn call_json<T: DeserializeOwned>(
        &self,
        what: &str,
        route: &'static str,
        channel: &str,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> RemoteResult<T> {
        let response = self
            .call(what, route, channel, method, path, payload)
            .await?;
        self.http.json(what, response).await
    }

    /// The channel an object call names; the root holds no files.
    fn channel<'a>(&self, container: ContainerRef<'a>) -> RemoteResult<&'a str> {
        container.ok_or_else(|| {
            RemoteError::new(
                ErrorKind::InvalidInput,
                "fluxer keeps files in channels, not at the top of the mount",
            )
        })
    }

    /// The text channels of a guild as containers.
    async fn guild_channels(&self, guild: api::Guild) -> RemoteResult<Vec<Container>> {
        let what = format!("list the channels of guild {:?}", guild.name);
        let path = format!("/guilds/{}/channels", guild.id);
        let channels: Vec<api::Channel> = self
            .call_json(&what, "default", "", Method::GET, &path, Payload::None)
            .await?;
        let group = ContainerGroup {
            created: api::snowflake_time(&guild.id),
            id: guild.id,
            title: guild.name,
        };
        Ok(channels
            .into_iter()
            .filter(|c| c.kind == api::GUILD_TEXT)
            .map(|c| Container {
                created: api::snowflake_time(&c.id),
                title: c.name.unwrap_or_else(|| c.id.clone()),
                id: c.id,
                group: Some(group.clone()),
            })
            .collect())
    }

    /// A direct-message channel as a container named after the people in it.
    fn dm_container(channel: api::Channel) -> Container {
        let names: Vec<String> = channel
            .recipients
            .into_iter()
            .map(|u| u.global_name.unwrap_or(u.username))
            .collect();
        let title = match (channel.name, names.is_empty()) {
            (Some(name), _) if !name.is_empty() => name,
            (_, false) => names.join(", "),
            _ => channel.id.clone(),
        };
        Container {
            created: api::snowflake_time(&channel.id),
            title,
            group: Some(ContainerGroup {
                id: DM_GROUP.to_owned(),
                title: DM_GROUP.to_owned(),
                created: SystemTime::UNIX_EPOCH,
            }),
            id: channel.id,
        }
    }

    /// The download URL of attachment `id` in `channel`: cached, else from a fresh copy of its
    /// message (`fresh` skips the cache).
    async fn attachment_url(&self, channel: &str, id: &str, fresh: bool) -> RemoteResult<String> {
        if !fresh && let Some(url) = self.urls.get(id) {
            return Ok(url);
        }
        let known = self.index.find(self, channel, id).await?;
        let what = format!("read message {} for attachment {id}", known.message_id);
        let path = format!("/channels/{channel}/messages/{}", known.message_id);
        let message: api::Message = self
            .call_json(
                &what,
                "message_get",
                channel,
                Method::GET,
                &path,
                Payload::None,
            )
            .await?;
        let attachment = message
            .attachments
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| {
                RemoteError::new(ErrorKind::NotFound, format!("attachment {id} is gone"))
            })?;
        let url = attachment.url.clone().ok_or_else(|| {
            RemoteError::new(
                ErrorKind::NotFound,
                format!("attachment {id} has expired (it has no url)"),
            )
        })?;
        self.remember_url(&attachment);
        Ok(url)
    }

    /// Caches an attachment's URL until its `expires_at` (or [`URL_LIFETIME`]).
    fn remember_url(&self, attachment: &api::Attachment) {
        if let Some(url) = &attachment.url {
            let expires = attachment
                .expires_at
                .as_deref()
                .and_then(api::parse_time)
                .unwrap_or_else(|| SystemTime::now() + URL_LIFETIME);
            self.urls.put(&attachment.id, url.clone(), expires);
        }
    }

    /// Deletes the attachment `known` stands for: its whole message when it held only that
    /// file, else only the attachment.
    async fn delete_known(&self, channel: &str, known: &listing::Known) -> RemoteResult<()> {
        let (what, route, path) = if known.siblings <= 1 {
            (
                format!("delete message {} ({:?})", known.message_id, known.name),
                "message_delete",
                format!("/channels/{channel}/messages/{}", known.message_id),
            )
        } else {
            (
                format!(
                    "delete attachment {} ({:?})",
                    known.attachment_id, known.name
                ),
                "attachment_delete",
                format!(
                    "/channels/{channel}/messages/{}/attachments/{}",
                    known.message_id, known.attachment_id
                ),
            )
        };
        let result = self
            .call(&what, route, channel, Method::DELETE, &path, Payload::None)
            .await
            .map(drop);
        if result.is_ok()
            || result
                .as_ref()
                .is_err_and(|e| e.kind == ErrorKind::NotFound)
        {
            self.index.forget(channel, known);
            self.urls.forget(&known.attachment_id);
        }
        result
    }
}

/// Fluxer's API calls in bucket `route` of `channel`: the token in `Authorization` (marked
/// sensitive), the pacer's leave before each attempt and the answer's rate-limit headers learnt
/// whatever its status, a refusal refined by its `{code, message}` envelope ([`api::refine`]).
struct Paced<'a> {
    remote: &'a FluxerRemote,
    route: &'static str,
    channel: &'a str,
}

#[async_trait]
impl RequestPolicy for Paced<'_> {
    type Credential = ();

    fn authorize(&self, request: RequestBuilder, _credential: &()) -> RequestBuilder {
        request.header(reqwest::header::AUTHORIZATION, self.remote.auth.clone())
    }

    async fn exchange(
        &self,
        http: &HttpClient,
        what: &str,
        request: RequestBuilder,
    ) -> RemoteResult<Response> {
        let permit = self.remote.pacer.acquire(self.route, self.channel).await;
        let response = http.transmit(what, request).await?;
        self.remote
            .pacer
            .observe(&permit, response.status(), response.headers());
        Ok(response)
    }

    fn refine(&self, _status: StatusCode, err: RemoteError) -> RemoteError {
        api::refine(err)
    }
}

#[async_trait]
impl Remote for FluxerRemote {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn describe(&self) -> String {
        format!("fluxer at {}", self.http.endpoint())
    }

    fn rate_limit(&self) -> Option<super::RateLimitState> {
        Some(self.pacer.state())
    }

    /// Every guild's text channels (grouped by guild) and the DM channels (group `@me`).
    async fn list_containers(&self) -> RemoteResult<Vec<Container>> {
        let guilds: Vec<api::Guild> = self
            .call_json(
                "list guilds",
                "default",
                "",
                Method::GET,
                "/users/@me/guilds",
                Payload::None,
            )
            .await?;
        let mut containers = Vec::new();
        for guild in guilds {
            containers.extend(self.guild_channels(guild).await?);
        }
        let dms: Vec<api::Channel> = self
            .call_json(
                "list direct messages",
                "default",
                "",
                Method::GET,
                "/users/@me/channels",
                Payload::None,
            )
            .await?;
        containers.extend(
            dms.into_iter()
                .filter(|c| matches!(c.kind, api::DM | api::GROUP_DM))
                .map(Self::dm_container),
        );
        Ok(containers)
    }

    async fn create_container(&self, title: &str) -> RemoteResult<Container> {
        Err(RemoteError::new(
            ErrorKind::Unsupported,
            format!(
                "mkdir {title:?}: fluxer guilds and channels are made in Fluxer itself, not \
                 through the mount"
            ),
        ))
    }

    async fn remove_container(&self, id: &str) -> RemoteResult<()> {
        Err(RemoteError::new(
            ErrorKind::Unsupported,
            format!(
                "rmdir of channel {id}: fluxer guilds and channels are removed in Fluxer itself, \
                 not through the mount"
            ),
        ))
    }

    async fn list(&self, container: ContainerRef<'_>) -> RemoteResult<Vec<ObjectMeta>> {
        let channel = self.channel(container)?;
        listing::list_channel(self, channel).await
    }

    async fn read(
        &self,
        container: ContainerRef<'_>,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> RemoteResult<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let channel = self.channel(container)?;
        let what = format!("read {:?} ({})", object.name, object.id);
        // An expired or refused URL: fetch the message again for a fresh one.
        let stale = |err: &RemoteError| {
            matches!(err.kind, ErrorKind::PermissionDenied | ErrorKind::NotFound)
        };
        url_cache::read_with_fresh_url(&self.http, &what, &range, stale, |fresh| {
            self.attachment_url(channel, &object.id, fresh)
        })
        .await
    }

    async fn upload(
        &self,
        container: ContainerRef<'_>,
        name: &str,
        source: &UploadSource,
    ) -> RemoteResult<ObjectMeta> {
        let channel = self.channel(container)?;
        // The core deletes the version this one replaces once it is stored.
        uploads::upload(self, channel, name, source).await
    }

    async fn delete(&self, container: ContainerRef<'_>, object: &ObjectMeta) -> RemoteResult<()> {
        let channel = self.channel(container)?;
        let known = self.index.find(self, channel, &object.id).await?;
        self.delete_known(channel, &known).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_token_is_refused_at_connect_time() {
        let config = RemoteConfig::new("http://127.0.0.1:1", None);
        let err = FluxerRemote::new(&config).err().expect("no token");
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert!(err.message.contains("--token"), "{}", err.message);
    }

    #[test]
    fn the_endpoint_gets_its_v1_once() {
        for endpoint in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/",
        ] {
            let config = RemoteConfig::new(endpoint, Some("t".into()));
            let remote = FluxerRemote::new(&config).unwrap();
            assert_eq!(remote.http.endpoint(), "http://h:1/v1", "{endpoint}");
        }
    }
}
