//! Contract tests for the Fluxer emulator: every route, status and error code of
//! `docs/api/fluxer.md` that the emulator serves (and its documented choices), driven through
//! `Backend::Fluxer.emulator_router(..)` with `oneshot`.

mod support;

use support::{Reply, send};

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::emulator::fluxer::{FluxerStats, UploadFlows};
use tower::ServiceExt;

const HOST: &str = "flx.test:9000";
const TOKEN: &str = "flx_user_token";
const GUEST: &str = "flx_guest_token";
const BOT: &str = "flx_bot_token";
const FLUXER_EPOCH_MS: u64 = 1_420_070_400_000;
const MIB: usize = 1024 * 1024;

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "{}",
            self.text()
        );
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        self.json()
    }

    fn ok(&self) -> Value {
        self.expect(StatusCode::OK)
    }

    /// Asserts the `{"code", "message"}` envelope with `code`; returns the body.
    fn error(&self, status: StatusCode, code: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(body["code"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        body
    }

    /// Asserts 400 `INVALID_FORM_BODY` whose first field error has `code`.
    fn invalid_form(&self, code: &str) {
        let body = self.error(StatusCode::BAD_REQUEST, "INVALID_FORM_BODY");
        assert_eq!(body["errors"][0]["code"], code, "{body}");
        assert!(body["errors"][0]["path"].is_string(), "{body}");
    }
}

struct Emu {
    app: Router,
    config: EmulatorConfig,
    _dir: tempfile::TempDir,
}

/// A test config: known tokens, rate limits off unless a test turns them on.
fn config(dir: &std::path::Path) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(dir);
    config.token = Some(TOKEN.to_owned());
    config.fluxer.bot_token = Some(BOT.to_owned());
    config.fluxer.guest_token = Some(GUEST.to_owned());
    config.fluxer.rate_limits = false;
    config
}

impl Emu {
    fn new() -> Emu {
        Emu::with(|_| {})
    }

    fn with(change: impl FnOnce(&mut EmulatorConfig)) -> Emu {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        change(&mut config);
        Emu {
            app: Backend::Fluxer.emulator_router(&config).unwrap(),
            config,
            _dir: dir,
        }
    }

    /// The same data directory and config served by a new router, as after a restart.
    fn restart(self) -> Emu {
        Emu {
            app: Backend::Fluxer.emulator_router(&self.config).unwrap(),
            ..self
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.app, req).await
    }

    /// A call with `Authorization: auth` (none when `None`); `body` is sent as JSON.
    async fn call(
        &self,
        auth: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        self.send(builder.body(body).unwrap()).await
    }

    /// A call with the user's session token.
    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(Some(TOKEN), method, path, body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.api(Method::GET, path, None).await
    }

    /// The ids of the guild's text channels, in order.
    async fn channels(&self) -> Vec<String> {
        let guilds = self.get("/v1/users/@me/guilds").await.ok();
        let guild = guilds[0]["id"].as_str().unwrap().to_owned();
        let channels = self.get(&format!("/v1/guilds/{guild}/channels")).await.ok();
        channels
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn general(&self) -> String {
        self.channels().await.remove(0)
    }

    async fn create_chunked(&self, auth: &str, channel: &str, name: &str, size: usize) -> Reply {
        self.call(
            Some(auth),
            Method::POST,
            &format!("/v1/channels/{channel}/chunked-uploads"),
            Some(json!({ "filename": name, "file_size": size })),
        )
        .await
    }

    async fn put_chunk(
        &self,
        auth: &str,
        channel: &str,
        upload: &str,
        index: &str,
        data: &[u8],
    ) -> Reply {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!(
                "/v1/channels/{channel}/chunked-uploads/{upload}/chunks/{index}"
            ))
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(data.to_vec()))
            .unwrap();
        self.send(req).await
    }

    async fn complete_chunked(
        &self,
        auth: &str,
        channel: &str,
        upload: &str,
        etags: Value,
    ) -> Reply {
        self.call(
            Some(auth),
            Method::POST,
            &format!("/v1/channels/{channel}/chunked-uploads/{upload}/complete"),
            Some(json!({ "etags": etags })),
        )
        .await
    }

    /// Creates, uploads (last chunk first) and completes a chunked upload; returns
    /// `upload_filename`.
    async fn chunked_upload(&self, channel: &str, name: &str, data: &[u8]) -> String {
        let created = self
            .create_chunked(TOKEN, channel, name, data.len())
            .await
            .expect(StatusCode::CREATED);
        let upload = created["upload_id"].as_str().unwrap();
        let size = created["chunk_size"].as_u64().unwrap() as usize;
        let mut etags = Vec::new();
        for (index, chunk) in data.chunks(size).enumerate().rev() {
            let etag = self
                .put_chunk(TOKEN, channel, upload, &index.to_string(), chunk)
                .await
                .ok()["etag"]
                .clone();
            etags.push(json!({ "chunk_index": index, "etag": etag }));
        }
        let done = self
            .complete_chunked(TOKEN, channel, upload, json!(etags))
            .await
            .ok();
        assert_eq!(done["file_size"], data.len());
        done["upload_filename"].as_str().unwrap().to_owned()
    }

    /// `POST /channels/{channel}/messages` as multipart: `payload_json` and `files[n]` parts.
    async fn post_multipart(
        &self,
        auth: &str,
        channel: &str,
        payload: &Value,
        files: &[(&str, &[u8])],
    ) -> Reply {
        let boundary = "sessionfs-test-boundary";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\
                 Content-Type: application/json\r\n\r\n{payload}\r\n"
            )
            .as_bytes(),
        );
        for (n, (name, data)) in files.iter().enumerate() {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"files[{n}]\"; \
                     filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/channels/{channel}/messages"))
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, auth)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    async fn post_text(&self, channel: &str, content: &str) -> Value {
        self.api(
            Method::POST,
            &format!("/v1/channels/{channel}/messages"),
            Some(json!({ "content": content })),
        )
        .await
        .ok()
    }

    /// A GET of a URL the emulator handed out (no token), with an optional Range.
    async fn fetch(&self, url: &str, range: Option<&str>) -> Reply {
        let mut builder = Request::builder()
            .uri(path_of(url))
            .header(header::HOST, HOST);
        if let Some(range) = range {
            builder = builder.header(header::RANGE, range);
        }
        self.send(builder.body(Body::empty()).unwrap()).await
    }

    /// A PUT to a presigned URL the emulator handed out, with its `Content-Length` as a client
    /// on the wire sends it.
    async fn put_url(&self, url: &str, headers: &[(&str, String)], data: Vec<u8>) -> Reply {
        let mut builder = Request::builder()
            .method(Method::PUT)
            .uri(path_of(url))
            .header(header::HOST, HOST)
            .header(header::CONTENT_LENGTH, data.len());
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        self.send(builder.body(Body::from(data)).unwrap()).await
    }

    async fn stats(&self) -> FluxerStats {
        let body = self
            .call(None, Method::GET, "/_emulator/stats", None)
            .await
            .ok();
        FluxerStats {
            chunks_in_flight: body["chunks_in_flight"].as_u64().unwrap() as usize,
            max_chunks_in_flight: body["max_chunks_in_flight"].as_u64().unwrap() as usize,
            global_limit_violations: body["global_limit_violations"].as_u64().unwrap(),
            rate_limited_responses: body["rate_limited_responses"].as_u64().unwrap(),
            messages: body["messages"].as_u64().unwrap() as usize,
        }
    }
}

fn path_of(url: &str) -> String {
    url.strip_prefix(&format!("http://{HOST}"))
        .unwrap_or_else(|| panic!("{url} does not point at the emulator"))
        .to_owned()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn md5_etag(data: &[u8]) -> String {
    let hex: String = Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// Polls `condition` until it holds; fails with `what` after a generous deadline.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn auth_accepts_the_three_forms_and_refuses_the_rest_with_401() {
    let emu = Emu::new();
    for auth in [
        None,
        Some(""),
        Some("wrong"),
        Some(" flx_user_token"),
        Some("flx_user_token "),
        Some("Bearer wrong"),
        Some("Bot flx_user_token"),
        Some("Bearer flx_bot_token"),
        Some("Bot  flx_bot_token"),
        Some("Admin flx_user_token"),
    ] {
        let reply = emu.call(auth, Method::GET, "/v1/users/@me", None).await;
        reply.error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let me = emu
        .call(Some(TOKEN), Method::GET, "/v1/users/@me", None)
        .await
        .ok();
    assert_eq!(me["username"], "sessionfs");
    assert_eq!(me["bot"], false);
    let bearer = emu
        .call(
            Some("Bearer flx_user_token"),
            Method::GET,
            "/v1/users/@me",
            None,
        )
        .await
        .ok();
    assert_eq!(bearer["id"], me["id"]);
    let bot = emu
        .call(
            Some("Bot flx_bot_token"),
            Method::GET,
            "/v1/users/@me",
            None,
        )
        .await
        .ok();
    assert_eq!(bot["bot"], true);
    assert_ne!(bot["id"], me["id"]);
    let guest = emu
        .call(Some(GUEST), Method::GET, "/v1/users/@me", None)
        .await
        .ok();
    assert_eq!(guest["username"], "guest");
}

#[tokio::test]
async fn the_seeded_world_has_a_user_a_guild_two_text_channels_and_a_dm() {
    let emu = Emu::new();
    let me = emu.get("/v1/users/@me").await.ok();
    for key in ["id", "username", "discriminator"] {
        assert!(me[key].is_string(), "{key} in {me}");
    }
    let id: u64 = me["id"].as_str().unwrap().parse().unwrap();
    let created_ms = (id >> 22) + FLUXER_EPOCH_MS;
    assert!(
        created_ms > 1_735_689_600_000,
        "a snowflake on the 2015 epoch: {id}"
    );

    let guilds = emu.get("/v1/users/@me/guilds").await.ok();
    assert_eq!(guilds.as_array().unwrap().len(), 1);
    let guild_id = guilds[0]["id"].as_str().unwrap();
    assert_eq!(guilds[0]["owner_id"], me["id"]);
    let guild = emu.get(&format!("/v1/guilds/{guild_id}")).await.ok();
    assert_eq!(guild["name"], guilds[0]["name"]);
    let channels = emu
        .get(&format!("/v1/guilds/{guild_id}/channels"))
        .await
        .ok();
    let names: Vec<&str> = channels
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["general", "files"]);
    for channel in channels.as_array().unwrap() {
        assert_eq!(channel["type"], 0);
        assert_eq!(channel["guild_id"], guilds[0]["id"]);
        let id = channel["id"].as_str().unwrap();
        assert_eq!(
            emu.get(&format!("/v1/channels/{id}")).await.ok()["name"],
            channel["name"]
        );
    }
    let dms = emu.get("/v1/users/@me/channels").await.ok();
    assert_eq!(dms.as_array().unwrap().len(), 1);
    assert_eq!(dms[0]["type"], 1);
    assert_eq!(dms[0]["recipients"][0]["username"], "guest");

    emu.get("/v1/channels/123")
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_CHANNEL");
    emu.get("/v1/channels/abc")
        .await
        .invalid_form("INVALID_SNOWFLAKE");
    emu.get("/v1/guilds/123")
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_GUILD");
    emu.get("/v1/nothing/here")
        .await
        .error(StatusCode::NOT_FOUND, "NOT_FOUND");

    let custom = Emu::with(|c| c.fluxer.channels = vec!["a".into(), "b".into(), "c".into()]);
    assert_eq!(custom.channels().await.len(), 3);
}

#[tokio::test]
async fn a_chunked_upload_in_any_order_becomes_an_attachment() {
    let emu = Emu::with(|c| c.fluxer.chunk_size_bytes = 5);
    let channel = emu.general().await;
    let real = Emu::new();
    let real_channel = real.general().await;
    let created = real
        .create_chunked(TOKEN, &real_channel, "big.bin", 3 * 8 * MIB + 1)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["chunk_size"], 8_388_608);
    assert_eq!(created["chunk_count"], 4);
    assert!(created["upload_id"].is_string() && created["upload_filename"].is_string());

    let data = pattern(12);
    let created = emu
        .create_chunked(TOKEN, &channel, "my file (1).txt", data.len())
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["chunk_count"], 3);
    let upload = created["upload_id"].as_str().unwrap();
    let mut etags = Vec::new();
    for index in [2usize, 0, 1] {
        let chunk = &data[index * 5..(index * 5 + 5).min(data.len())];
        let etag = emu
            .put_chunk(TOKEN, &channel, upload, &index.to_string(), chunk)
            .await
            .ok()["etag"]
            .clone();
        assert_eq!(etag, md5_etag(chunk));
        etags.push(json!({ "chunk_index": index, "etag": etag }));
    }
    let again = emu
        .put_chunk(TOKEN, &channel, upload, "1", &data[5..10])
        .await
        .ok();
    assert_eq!(again["etag"], etags[2]["etag"], "a chunk can be sent again");
    let done = emu
        .complete_chunked(TOKEN, &channel, upload, json!(etags))
        .await
        .ok();
    assert_eq!(done["upload_filename"], created["upload_filename"]);
    assert_eq!(done["file_size"], 12);
    assert_eq!(done["content_type"], "text/plain");
    emu.complete_chunked(TOKEN, &channel, upload, json!(etags))
        .await
        .error(StatusCode::NOT_FOUND, "CHUNKED_UPLOAD_NOT_FOUND");

    let payload = json!({
        "content": "uploaded",
        "attachments": [{ "id": 0, "filename": "my file (1).txt", "uploaded_filename": done["upload_filename"] }],
    });
    let message = emu
        .post_multipart(TOKEN, &channel, &payload, &[])
        .await
        .ok();
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["filename"], "my_file_1.txt");
    assert_eq!(attachment["size"], 12);
    assert_eq!(attachment["content_type"], "text/plain");
    let url = attachment["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!(
            "http://{HOST}/attachments/{channel}/{}/my_file_1.txt",
            attachment["id"].as_str().unwrap()
        )
    );
    assert_eq!(emu.fetch(url, None).await.body, data);

    emu.post_multipart(TOKEN, &channel, &payload, &[])
        .await
        .invalid_form("NO_FILE_FOR_ATTACHMENT_METADATA");
}

#[tokio::test]
async fn chunked_routes_refuse_what_the_server_refuses() {
    let emu = Emu::with(|c| {
        c.fluxer.chunk_size_bytes = 4;
        c.fluxer.max_attachment_bytes = Some(1000);
    });
    let channel = emu.general().await;
    emu.create_chunked(TOKEN, &channel, "x", 1001)
        .await
        .error(StatusCode::BAD_REQUEST, "FILE_SIZE_TOO_LARGE");
    emu.create_chunked(TOKEN, &channel, "x", 4 * 128 + 1)
        .await
        .error(StatusCode::BAD_REQUEST, "FILE_SIZE_TOO_LARGE");
    emu.create_chunked(TOKEN, &channel, "x", 0)
        .await
        .invalid_form("INVALID_INTEGER");
    emu.create_chunked(TOKEN, &channel, "", 4)
        .await
        .invalid_form("FILENAME_LENGTH_INVALID");
    emu.create_chunked(TOKEN, "1", "x", 4)
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_CHANNEL");

    let bot = "Bot flx_bot_token";
    emu.create_chunked(bot, &channel, "x", 4)
        .await
        .error(StatusCode::FORBIDDEN, "ACCESS_DENIED");
    let created = emu
        .create_chunked(TOKEN, &channel, "x", 8)
        .await
        .expect(StatusCode::CREATED);
    let upload = created["upload_id"].as_str().unwrap();
    emu.put_chunk(bot, &channel, upload, "0", b"abcd")
        .await
        .error(StatusCode::FORBIDDEN, "ACCESS_DENIED");
    emu.complete_chunked(
        bot,
        &channel,
        upload,
        json!([{ "chunk_index": 0, "etag": "x" }]),
    )
    .await
    .error(StatusCode::FORBIDDEN, "ACCESS_DENIED");

    emu.put_chunk(GUEST, &channel, upload, "0", b"abcd")
        .await
        .error(StatusCode::FORBIDDEN, "CHUNKED_UPLOAD_NOT_OWNED");
    emu.put_chunk(TOKEN, &channel, "no-such-upload", "0", b"abcd")
        .await
        .error(StatusCode::NOT_FOUND, "CHUNKED_UPLOAD_NOT_FOUND");
    emu.put_chunk(TOKEN, &channel, upload, "2", b"abcd")
        .await
        .error(
            StatusCode::BAD_REQUEST,
            "CHUNKED_UPLOAD_CHUNK_INDEX_OUT_OF_RANGE",
        );
    emu.put_chunk(TOKEN, &channel, upload, "-1", b"abcd")
        .await
        .invalid_form("INVALID_INTEGER");

    let first = emu
        .put_chunk(TOKEN, &channel, upload, "0", b"abcd")
        .await
        .ok()["etag"]
        .clone();
    let second = emu
        .put_chunk(TOKEN, &channel, upload, "1", b"efgh")
        .await
        .ok()["etag"]
        .clone();
    let complete = |etags: Value| emu.complete_chunked(TOKEN, &channel, upload, etags);
    complete(json!([{ "chunk_index": 0, "etag": first }]))
        .await
        .error(StatusCode::BAD_REQUEST, "CHUNKED_UPLOAD_INCOMPLETE");
    complete(json!([{ "chunk_index": 0, "etag": first }, { "chunk_index": 0, "etag": first }]))
        .await
        .error(StatusCode::BAD_REQUEST, "CHUNKED_UPLOAD_INCOMPLETE");
    complete(json!([{ "chunk_index": 0, "etag": first }, { "chunk_index": 5, "etag": second }]))
        .await
        .error(
            StatusCode::BAD_REQUEST,
            "CHUNKED_UPLOAD_CHUNK_INDEX_OUT_OF_RANGE",
        );
    complete(json!([{ "chunk_index": 0, "etag": first }, { "chunk_index": 1, "etag": "\"bad\"" }]))
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR");
    emu.complete_chunked(
        GUEST,
        &channel,
        upload,
        json!([{ "chunk_index": 0, "etag": first }]),
    )
    .await
    .error(StatusCode::FORBIDDEN, "CHUNKED_UPLOAD_NOT_OWNED");
    complete(json!([])).await.invalid_form("INVALID_ETAGS");
    let done = complete(
        json!([{ "chunk_index": 1, "etag": second }, { "chunk_index": 0, "etag": first }]),
    )
    .await
    .ok();
    assert_eq!(
        done["file_size"], 8,
        "the session survived the refused completes"
    );
}

#[tokio::test]
async fn an_expired_session_is_not_found() {
    let emu = Emu::with(|c| c.fluxer.upload_ttl = Duration::ZERO);
    let channel = emu.general().await;
    let created = emu
        .create_chunked(TOKEN, &channel, "x", 4)
        .await
        .expect(StatusCode::CREATED);
    let upload = created["upload_id"].as_str().unwrap();
    emu.put_chunk(TOKEN, &channel, upload, "0", b"abcd")
        .await
        .error(StatusCode::NOT_FOUND, "CHUNKED_UPLOAD_NOT_FOUND");
    emu.complete_chunked(
        TOKEN,
        &channel,
        upload,
        json!([{ "chunk_index": 0, "etag": "x" }]),
    )
    .await
    .error(StatusCode::NOT_FOUND, "CHUNKED_UPLOAD_NOT_FOUND");
}

/// A request body fed by the test, so it can hold a PUT open or break it off.
fn fed_body() -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    Body,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, Body::from_stream(stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_in_flight_are_counted_and_an_interrupted_chunk_stores_nothing() {
    let emu = Emu::with(|c| c.fluxer.chunk_size_bytes = 4);
    let channel = emu.general().await;
    let created = emu
        .create_chunked(TOKEN, &channel, "x", 12)
        .await
        .expect(StatusCode::CREATED);
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    let mut feeds = Vec::new();
    let mut tasks = Vec::new();
    for index in 0..3 {
        let (tx, body) = fed_body();
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!(
                "/v1/channels/{channel}/chunked-uploads/{upload}/chunks/{index}"
            ))
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, TOKEN)
            .body(body)
            .unwrap();
        let app = emu.app.clone();
        tasks.push(tokio::spawn(async move {
            app.oneshot(req).await.unwrap().status()
        }));
        tx.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
        feeds.push(tx);
    }
    wait_until("three chunks in flight", || async {
        emu.stats().await.chunks_in_flight == 3
    })
    .await;
    let broken = feeds.pop().unwrap();
    broken
        .send(Err(std::io::Error::other("connection reset")))
        .await
        .unwrap();
    for tx in &feeds {
        tx.send(Ok(Bytes::from_static(b"cd"))).await.unwrap();
    }
    drop(feeds);
    let statuses: Vec<StatusCode> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::OK, StatusCode::BAD_REQUEST]
    );
    let stats = emu.stats().await;
    assert_eq!(stats.chunks_in_flight, 0);
    assert_eq!(stats.max_chunks_in_flight, 3);
    let etags = json!([
        { "chunk_index": 0, "etag": md5_etag(b"abcd") },
        { "chunk_index": 1, "etag": md5_etag(b"abcd") },
        { "chunk_index": 2, "etag": md5_etag(b"ab") },
    ]);
    emu.complete_chunked(TOKEN, &channel, &upload, etags)
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR");
}

#[tokio::test]
async fn presigned_singlepart_enforces_its_signed_headers() {
    let emu = Emu::new();
    let channel = emu.general().await;
    let data = pattern(1000);
    let plan = emu
        .api(
            Method::POST,
            &format!("/v1/channels/{channel}/attachments"),
            Some(json!({ "attachments": [{ "id": 0, "filename": "notes (draft).md", "file_size": 1000, "content_type": "text/markdown" }] })),
        )
        .await
        .ok();
    let item = &plan["attachments"][0];
    assert_eq!(item["upload_mode"], "singlepart");
    assert_eq!(item["id"], 0);
    assert_eq!(item["filename"], "notes (draft).md");
    assert_eq!(item["file_size"], 1000);
    assert_eq!(item["content_type"], "text/markdown");
    let url = item["upload_url"].as_str().unwrap();
    let typed = |t: &str| vec![("content-type", t.to_owned())];
    emu.put_url(url, &typed("text/plain"), data.clone())
        .await
        .storage_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch");
    emu.put_url(url, &typed("text/markdown"), data[..999].to_vec())
        .await
        .storage_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch");
    let unsigned = url.split('?').next().unwrap();
    emu.put_url(unsigned, &typed("text/markdown"), data.clone())
        .await
        .storage_error(StatusCode::FORBIDDEN, "AccessDenied");
    let forged = url.replace("signature=", "signature=0");
    emu.put_url(&forged, &typed("text/markdown"), data.clone())
        .await
        .storage_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch");
    let unsized_put = Request::builder()
        .method(Method::PUT)
        .uri(path_of(url))
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "text/markdown")
        .body(Body::from(data.clone()))
        .unwrap();
    emu.send(unsized_put)
        .await
        .storage_error(StatusCode::LENGTH_REQUIRED, "MissingContentLength");
    let put = emu
        .put_url(url, &typed("text/markdown"), data.clone())
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    assert_eq!(put.header("etag"), md5_etag(&data));

    let message = emu
        .api(
            Method::POST,
            &format!("/v1/channels/{channel}/messages"),
            Some(json!({ "content": "presigned", "attachments": [{
                "id": 0, "filename": "notes (draft).md", "upload_filename": item["upload_filename"],
                "file_size": 1000, "content_type": "text/markdown",
            }] })),
        )
        .await
        .ok();
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["filename"], "notes_draft.md");
    assert_eq!(attachment["content_type"], "text/markdown");
    let download = emu.fetch(attachment["url"].as_str().unwrap(), None).await;
    assert_eq!(download.body, data);
    emu.put_url(url, &typed("text/markdown"), data)
        .await
        .storage_error(StatusCode::FORBIDDEN, "AccessDenied");

    let expired = Emu::with(|c| c.fluxer.upload_ttl = Duration::ZERO);
    let channel = expired.general().await;
    let plan = expired
        .api(
            Method::POST,
            &format!("/v1/channels/{channel}/attachments"),
            Some(json!({ "attachments": [{ "id": 0, "filename": "a", "file_size": 1, "content_type": "text/plain" }] })),
        )
        .await
        .ok();
    let url = plan["attachments"][0]["upload_url"].as_str().unwrap();
    expired
        .put_url(url, &typed("text/plain"), b"x".to_vec())
        .await
        .storage_error(StatusCode::NOT_FOUND, "NoSuchUpload");
}

#[tokio::test]
async fn presigned_multipart_parts_join_in_order_on_complete() {
    let emu = Emu::new();
    let channel = emu.general().await;
    let data = pattern(10 * MIB + 5);
    let plan_path = format!("/v1/channels/{channel}/attachments");
    let complete_path = format!("/v1/channels/{channel}/attachments/complete");
    let plan = emu
        .api(
            Method::POST,
            &plan_path,
            Some(json!({ "attachments": [{ "id": 3, "filename": "big.bin", "file_size": data.len(), "content_type": "application/octet-stream" }] })),
        )
        .await
        .ok();
    let item = &plan["attachments"][0];
    assert_eq!(item["upload_mode"], "multipart");
    assert_eq!(item["part_size"], 10 * MIB);
    let parts = item["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["part_number"], 1);
    let name = item["upload_filename"].clone();
    let upload_id = item["upload_id"].clone();
    let complete_body = json!({ "uploads": [{ "upload_filename": name, "upload_id": upload_id }] });
    emu.api(Method::POST, &complete_path, Some(complete_body.clone()))
        .await
        .error(StatusCode::BAD_REQUEST, "NO_UPLOADED_PARTS_TO_FINALIZE");

    let part_url = |n: usize| parts[n]["upload_url"].as_str().unwrap();
    let put = emu
        .put_url(part_url(1), &[], data[10 * MIB..].to_vec())
        .await;
    assert_eq!(put.header("etag"), md5_etag(&data[10 * MIB..]));
    emu.put_url(part_url(0), &[], pattern(10 * MIB + 1))
        .await
        .storage_error(StatusCode::BAD_REQUEST, "EntityTooLarge");
    let put = emu
        .put_url(part_url(0), &[], data[..10 * MIB].to_vec())
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());

    emu.call(
        Some(GUEST),
        Method::POST,
        &complete_path,
        Some(complete_body.clone()),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "NO_UPLOADED_PARTS_TO_FINALIZE");
    let done = emu
        .api(Method::POST, &complete_path, Some(complete_body.clone()))
        .await
        .ok();
    assert_eq!(done, json!({ "uploads": [{ "upload_filename": name }] }));
    emu.api(Method::POST, &complete_path, Some(complete_body))
        .await
        .error(StatusCode::BAD_REQUEST, "NO_UPLOADED_PARTS_TO_FINALIZE");

    let message = emu
        .api(
            Method::POST,
            &format!("/v1/channels/{channel}/messages"),
            Some(json!({ "attachments": [{ "id": 3, "filename": "big.bin", "upload_filename": name, "file_size": data.len(), "content_type": "application/octet-stream" }] })),
        )
        .await
        .ok();
    assert_eq!(message["attachments"][0]["size"], data.len());
    let download = emu
        .fetch(message["attachments"][0]["url"].as_str().unwrap(), None)
        .await;
    assert!(download.body == data, "the joined object is the file");

    emu.api(
        Method::POST,
        &plan_path,
        Some(json!({ "attachments": [{ "id": 0, "filename": "huge", "file_size": 25 * MIB + 1, "content_type": "x/y" }] })),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "FILE_SIZE_TOO_LARGE");
    let bot = emu
        .call(
            Some("Bot flx_bot_token"),
            Method::POST,
            &plan_path,
            Some(json!({ "attachments": [{ "id": 0, "filename": "huge", "file_size": 25 * MIB + 1, "content_type": "x/y" }] })),
        )
        .await;
    assert_eq!(
        bot.status,
        StatusCode::OK,
        "bots may send 50 MiB: {}",
        bot.text()
    );
    emu.api(Method::POST, &plan_path, Some(json!({ "attachments": [] })))
        .await
        .invalid_form("INVALID_FORM_BODY");
}

#[tokio::test]
async fn upload_flows_can_be_switched_off() {
    let chunked_only = Emu::with(|c| c.fluxer.uploads = "chunked".parse::<UploadFlows>().unwrap());
    let channel = chunked_only.general().await;
    let well_known = chunked_only
        .call(None, Method::GET, "/v1/.well-known/fluxer", None)
        .await
        .ok();
    assert_eq!(
        well_known["features"]["presigned_attachment_uploads"],
        false
    );
    assert_eq!(well_known["endpoints"]["api"], format!("http://{HOST}/v1"));
    assert_eq!(well_known["endpoints"]["media"], format!("http://{HOST}"));
    chunked_only
        .api(
            Method::POST,
            &format!("/v1/channels/{channel}/attachments"),
            Some(json!({ "attachments": [{ "id": 0, "filename": "a", "file_size": 1, "content_type": "text/plain" }] })),
        )
        .await
        .error(StatusCode::FORBIDDEN, "FEATURE_TEMPORARILY_DISABLED");

    let presigned_only =
        Emu::with(|c| c.fluxer.uploads = "presigned".parse::<UploadFlows>().unwrap());
    let channel = presigned_only.general().await;
    presigned_only
        .create_chunked(TOKEN, &channel, "x", 4)
        .await
        .error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn messages_carry_inline_and_uploaded_files_with_normalised_names() {
    let emu = Emu::new();
    let channel = emu.general().await;
    let uploaded = emu
        .chunked_upload(&channel, "whatever", b"pre-uploaded")
        .await;
    let payload = json!({
        "content": "two files",
        "nonce": "n1",
        "attachments": [
            { "id": 0, "filename": "../inline file?.txt" },
            { "id": 1, "filename": "CON", "uploaded_filename": uploaded, "title": "t" },
        ],
    });
    let message = emu
        .post_multipart(
            TOKEN,
            &channel,
            &payload,
            &[("part name.txt", b"inline bytes")],
        )
        .await
        .ok();
    for key in ["id", "channel_id", "content", "timestamp"] {
        assert!(message[key].is_string(), "{key} in {message}");
    }
    assert_eq!(message["type"], 0);
    assert_eq!(message["flags"], 0);
    assert_eq!(message["pinned"], false);
    assert_eq!(message["mention_everyone"], false);
    assert_eq!(message["nonce"], "n1");
    assert_eq!(message["author"]["username"], "sessionfs");
    let attachments = message["attachments"].as_array().unwrap();
    assert_eq!(attachments[0]["filename"], "__inline_file.txt");
    assert_eq!(attachments[0]["size"], 12);
    assert_eq!(attachments[1]["filename"], "_CON");
    assert_eq!(attachments[1]["title"], "t");
    assert_eq!(attachments[1]["size"], 12);
    for a in attachments {
        for key in ["id", "filename", "url"] {
            assert!(a[key].is_string(), "{key} in {a}");
        }
        assert!(a["size"].is_u64() && a["flags"].is_u64(), "{a}");
    }
    assert_eq!(
        emu.fetch(attachments[0]["url"].as_str().unwrap(), None)
            .await
            .body,
        &b"inline bytes"[..]
    );

    let bare = emu
        .post_multipart(TOKEN, &channel, &json!({}), &[("my file (1).txt", b"x")])
        .await
        .ok();
    assert_eq!(
        bare["attachments"][0]["filename"], "my_file_1.txt",
        "a part without metadata"
    );

    let by_bot = emu
        .call(
            Some("Bot flx_bot_token"),
            Method::POST,
            &format!("/v1/channels/{channel}/messages"),
            Some(json!({ "content": "beep" })),
        )
        .await
        .ok();
    assert_eq!(by_bot["author"]["bot"], true);

    emu.post_multipart(
        TOKEN,
        &channel,
        &json!({ "attachments": [{ "id": 0, "filename": "a", "uploaded_filename": "nope" }] }),
        &[],
    )
    .await
    .invalid_form("NO_FILE_FOR_ATTACHMENT_METADATA");
    emu.post_multipart(
        TOKEN,
        &channel,
        &json!({ "attachments": [{ "id": 5, "filename": "a" }] }),
        &[("a", b"x")],
    )
    .await
    .invalid_form("NO_FILE_FOR_ATTACHMENT_METADATA");
    let eleven: Vec<(&str, &[u8])> = (0..11).map(|_| ("f.txt", &b"x"[..])).collect();
    emu.post_multipart(TOKEN, &channel, &json!({}), &eleven)
        .await
        .invalid_form("TOO_MANY_ATTACHMENTS");
    emu.api(
        Method::POST,
        &format!("/v1/channels/{channel}/messages"),
        Some(json!({ "content": "" })),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "CANNOT_SEND_EMPTY_MESSAGE");
    emu.api(
        Method::POST,
        "/v1/channels/1/messages",
        Some(json!({ "content": "x" })),
    )
    .await
    .error(StatusCode::NOT_FOUND, "UNKNOWN_CHANNEL");
    let too_big = Emu::with(|c| c.fluxer.max_attachment_bytes = Some(3));
    let small_channel = too_big.general().await;
    too_big
        .post_multipart(TOKEN, &small_channel, &json!({}), &[("a", b"four")])
        .await
        .error(StatusCode::BAD_REQUEST, "FILE_SIZE_TOO_LARGE");
    assert_eq!(emu.stats().await.messages, 3);
}

#[tokio::test]
async fn messages_can_be_read_and_deleted_whole_or_one_attachment_at_a_time() {
    let emu = Emu::new();
    let channel = emu.general().await;
    let message = emu
        .post_multipart(
            TOKEN,
            &channel,
            &json!({ "content": "two" }),
            &[("a.txt", b"aaa"), ("b.txt", b"bbb")],
        )
        .await
        .ok();
    let id = message["id"].as_str().unwrap();
    let path = format!("/v1/channels/{channel}/messages/{id}");
    assert_eq!(emu.get(&path).await.ok(), message);
    let other = emu.channels().await.remove(1);
    emu.get(&format!("/v1/channels/{other}/messages/{id}"))
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_MESSAGE");

    let first = &message["attachments"][0];
    let first_url = first["url"].as_str().unwrap();
    let removed = emu
        .api(
            Method::DELETE,
            &format!("{path}/attachments/{}", first["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert!(removed.body.is_empty());
    let left = emu.get(&path).await.ok();
    assert_eq!(left["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(left["attachments"][0]["filename"], "b.txt");
    assert_eq!(
        emu.fetch(first_url, None).await.status,
        StatusCode::NOT_FOUND
    );
    emu.api(Method::DELETE, &format!("{path}/attachments/1"), None)
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_MESSAGE");

    let deleted = emu.api(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    emu.get(&path)
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_MESSAGE");
    emu.api(Method::DELETE, &path, None)
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_MESSAGE");
    let second_url = left["attachments"][0]["url"].as_str().unwrap();
    assert_eq!(
        emu.fetch(second_url, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(emu.stats().await.messages, 0);
}

/// The ids of one page of `GET /channels/{channel}/messages{query}`.
async fn message_ids(emu: &Emu, channel: &str, query: String) -> Vec<u64> {
    let page = emu
        .get(&format!("/v1/channels/{channel}/messages{query}"))
        .await
        .ok();
    page.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse::<u64>().unwrap())
        .collect()
}

#[tokio::test]
async fn listing_pages_newest_first_with_before_after_and_around() {
    let emu = Emu::new();
    let channel = emu.general().await;
    let mut ids = Vec::new();
    for n in 0..120 {
        let message = emu.post_text(&channel, &format!("m{n}")).await;
        ids.push(message["id"].as_str().unwrap().parse::<u64>().unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    let (emu_ref, channel_ref) = (&emu, &channel);
    let list = move |query: String| message_ids(emu_ref, channel_ref, query);
    let newest_first =
        |from: usize, to: usize| ids[from..to].iter().rev().copied().collect::<Vec<u64>>();
    assert_eq!(list(String::new()).await, newest_first(70, 120));
    assert_eq!(list("?limit=100".into()).await, newest_first(20, 120));
    assert_eq!(
        list(format!("?limit=100&before={}", ids[20])).await,
        newest_first(0, 20)
    );
    assert_eq!(
        list(format!("?limit=5&after={}", ids[10])).await,
        newest_first(11, 16)
    );
    assert_eq!(
        list(format!("?limit=5&after={}&before={}", ids[10], ids[13])).await,
        newest_first(11, 13)
    );
    assert_eq!(
        list(format!("?limit=5&around={}", ids[50])).await,
        newest_first(48, 53)
    );
    assert!(list(format!("?before={}", ids[0])).await.is_empty());

    let mut walked: Vec<u64> = Vec::new();
    let mut before = String::new();
    loop {
        let page = list(format!("?limit=100{before}")).await;
        walked.extend(page.iter().copied());
        if page.len() < 100 {
            break;
        }
        before = format!("&before={}", page.last().unwrap());
    }
    assert_eq!(walked, newest_first(0, 120));

    for bad in ["?limit=0", "?limit=101", "?limit=x"] {
        emu.get(&format!("/v1/channels/{channel}/messages{bad}"))
            .await
            .invalid_form("INVALID_INTEGER");
    }
    emu.get(&format!("/v1/channels/{channel}/messages?before=x"))
        .await
        .invalid_form("INVALID_SNOWFLAKE");
    emu.get("/v1/channels/1/messages")
        .await
        .error(StatusCode::NOT_FOUND, "UNKNOWN_CHANNEL");
}

/// Posts `data` as the one inline file of a message; returns its attachment URL.
async fn post_file(emu: &Emu, data: &[u8]) -> String {
    let channel = emu.general().await;
    let message = emu
        .post_multipart(TOKEN, &channel, &json!({}), &[("d.bin", data)])
        .await
        .ok();
    message["attachments"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn attachment_downloads_honour_one_range() {
    let data = pattern(100);
    let emu = Emu::new();
    let url = post_file(&emu, &data).await;
    let whole = emu.fetch(&url, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.header("content-length"), "100");
    assert_eq!(whole.header("accept-ranges"), "bytes");
    assert_eq!(whole.header("content-type"), "application/octet-stream");
    let part = emu.fetch(&url, Some("bytes=10-19")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-range"), "bytes 10-19/100");
    assert_eq!(part.body, data[10..20]);
    let tail = emu.fetch(&url, Some("bytes=-5")).await;
    assert_eq!(tail.body, data[95..]);
    let past = emu.fetch(&url, Some("bytes=100-")).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), "bytes */100");
    assert_eq!(
        emu.fetch(&url.replace("d.bin", "e.bin"), None).await.status,
        StatusCode::NOT_FOUND
    );

    let plain = Emu::with(|c| c.serve_ranges = false);
    let url = post_file(&plain, &data).await;
    let ignored = plain.fetch(&url, Some("bytes=10-19")).await;
    assert_eq!(ignored.status, StatusCode::OK);
    assert_eq!(ignored.body, data);
}

#[tokio::test]
async fn a_burst_of_message_creates_meets_the_bucket_429() {
    let emu = Emu::with(|c| c.fluxer.rate_limits = true);
    let channel = emu.general().await;
    let path = format!("/v1/channels/{channel}/messages");
    for n in 0..20 {
        let reply = emu
            .api(
                Method::POST,
                &path,
                Some(json!({ "content": format!("m{n}") })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-ratelimit-limit"), "20");
        assert_eq!(reply.header("x-ratelimit-remaining"), (19 - n).to_string());
        assert!(reply.header("x-ratelimit-reset").parse::<u64>().is_ok());
    }
    let refused = emu
        .api(
            Method::POST,
            &path,
            Some(json!({ "content": "one too many" })),
        )
        .await;
    let body = refused.error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(body["global"], false);
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 0.0 && retry_after <= 10.0, "{body}");
    assert!(refused.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(refused.header("x-ratelimit-global"), "false");
    assert_eq!(refused.header("x-ratelimit-remaining"), "0");
    assert_eq!(refused.header("x-ratelimit-limit"), "20");

    let other = emu.channels().await.remove(1);
    let elsewhere = emu
        .post_text(&other, "another channel has its own bucket")
        .await;
    assert!(elsewhere["id"].is_string());
    let listed = emu.get(&format!("/v1/channels/{channel}/messages")).await;
    assert_eq!(listed.header("x-ratelimit-limit"), "100");
    let stats = emu.stats().await;
    assert_eq!(stats.rate_limited_responses, 1);
    assert_eq!(stats.global_limit_violations, 0);
    assert_eq!(stats.messages, 21);
}

#[tokio::test]
async fn going_over_fifty_requests_a_second_is_a_counted_global_violation() {
    let emu = Emu::with(|c| c.fluxer.rate_limits = true);
    let paths = [
        "/v1/users/@me",
        "/v1/users/@me/guilds",
        "/v1/users/@me/channels",
    ];
    let mut refused = None;
    for n in 0..290 {
        let reply = emu.get(paths[n % paths.len()]).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("a 429 within 290 quick requests");
    let body = refused.error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(body["global"], true, "{body}");
    assert_eq!(refused.header("x-ratelimit-global"), "true");
    let stats = emu.stats().await;
    assert_eq!(stats.global_limit_violations, 1);
    assert_eq!(stats.rate_limited_responses, 1);
    let guest = emu
        .call(Some(GUEST), Method::GET, "/v1/users/@me", None)
        .await;
    assert_eq!(guest.status, StatusCode::OK, "limits are per client");

    let unlimited = Emu::new();
    let reply = unlimited.get("/v1/users/@me").await;
    assert!(reply.headers.get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn data_survives_a_restart() {
    let emu = Emu::with(|c| c.fluxer.chunk_size_bytes = 4);
    let channels = emu.channels().await;
    let channel = &channels[0];
    let message = emu
        .post_multipart(
            TOKEN,
            channel,
            &json!({ "content": "kept" }),
            &[("k.txt", b"kept bytes")],
        )
        .await
        .ok();
    let created = emu
        .create_chunked(TOKEN, channel, "later.txt", 8)
        .await
        .expect(StatusCode::CREATED);
    let upload = created["upload_id"].as_str().unwrap().to_owned();
    let first = emu
        .put_chunk(TOKEN, channel, &upload, "0", b"half")
        .await
        .ok()["etag"]
        .clone();

    let emu = emu.restart();
    assert_eq!(emu.channels().await, channels);
    let listed = emu
        .get(&format!("/v1/channels/{channel}/messages"))
        .await
        .ok();
    assert_eq!(listed[0], message);
    let url = message["attachments"][0]["url"].as_str().unwrap();
    assert_eq!(emu.fetch(url, None).await.body, &b"kept bytes"[..]);
    let second = emu
        .put_chunk(TOKEN, channel, &upload, "1", b"done")
        .await
        .ok()["etag"]
        .clone();
    let done = emu
        .complete_chunked(
            TOKEN,
            channel,
            &upload,
            json!([{ "chunk_index": 0, "etag": first }, { "chunk_index": 1, "etag": second }]),
        )
        .await
        .ok();
    assert_eq!(done["file_size"], 8);
    let newer = emu.post_text(channel, "after the restart").await;
    assert!(
        newer["id"].as_str().unwrap().parse::<u64>().unwrap()
            > message["id"].as_str().unwrap().parse::<u64>().unwrap()
    );
    assert_eq!(emu.stats().await.messages, 2);
}
