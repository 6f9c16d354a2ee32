//! Contract tests for the Lightfield emulator: every status, error envelope and limit of
//! `docs/api/lightfield.md` (and the emulator's documented choices), driven through the router
//! with `oneshot`, plus one real-TCP round trip through `spawn`.

mod support;

use support::{Reply, md5_hex, send};

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::emulator::lightfield::{self, LightfieldState};

const HOST: &str = "lf.test:9000";
const KEY: &str = "sk_lf_test_key";
const VERSION: &str = "2026-03-01";

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        self.json()
    }

    /// Asserts the `{"error": {...}}` envelope and returns the inner object.
    fn error(&self, status: StatusCode, kind: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        let error = body["error"].clone();
        assert_eq!(error["type"], kind, "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        error
    }

    /// Asserts a 400 with `code` (and `param` when given).
    fn bad_request(&self, code: &str, param: Option<&str>) {
        let error = self.error(StatusCode::BAD_REQUEST, "bad_request");
        assert_eq!(error["code"], code, "{error}");
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{error}");
        }
    }
}

struct Emu {
    app: Router,
    dir: tempfile::TempDir,
}

impl Emu {
    fn new() -> Emu {
        Emu::with(|config| config, |state| state)
    }

    /// An emulator on a fresh directory with its config and state adjusted.
    fn with(
        config: impl FnOnce(EmulatorConfig) -> EmulatorConfig,
        state: impl FnOnce(LightfieldState) -> LightfieldState,
    ) -> Emu {
        let dir = tempfile::tempdir().unwrap();
        let config = config(EmulatorConfig::new(dir.path()));
        let app = if config.faults.is_empty() {
            lightfield::router(state(LightfieldState::open(&config).unwrap()))
        } else {
            Backend::Lightfield.emulator_router(&config).unwrap()
        };
        Emu { app, dir }
    }

    /// The same data directory served by a new router, as after a restart.
    fn restart(&self) -> Emu {
        let config = EmulatorConfig::new(self.dir.path());
        Emu {
            app: Backend::Lightfield.emulator_router(&config).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.app, req).await
    }

    /// An API call with the right key and version; `body` is sent as JSON.
    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header("Lightfield-Version", VERSION)
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        self.send(builder.body(body).unwrap()).await
    }

    async fn create(&self, name: &str, size: u64) -> Value {
        self.api(
            Method::POST,
            "/v1/files",
            Some(json!({"filename": name, "mimeType": "text/plain", "sizeBytes": size})),
        )
        .await
        .ok()
    }

    /// PUTs `data` to a presigned URL with `headers` (name, value).
    async fn put(&self, url: &str, headers: &[(&str, &str)], data: &[u8]) -> Reply {
        let mut builder = Request::builder()
            .method(Method::PUT)
            .uri(path_of(url))
            .header(header::HOST, HOST);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Body::from(data.to_vec())).unwrap())
            .await
    }

    /// PUTs `data` with exactly the session's upload headers.
    async fn put_as_told(&self, created: &Value, data: &[u8]) -> Reply {
        let headers: Vec<(String, String)> = created["uploadHeaders"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.put(created["uploadUrl"].as_str().unwrap(), &refs, data)
            .await
    }

    async fn get_url(&self, url: &str, range: Option<&str>) -> Reply {
        let mut builder = Request::builder()
            .uri(path_of(url))
            .header(header::HOST, HOST);
        if let Some(range) = range {
            builder = builder.header(header::RANGE, range);
        }
        self.send(builder.body(Body::empty()).unwrap()).await
    }

    async fn complete(&self, id: &str, md5: Option<&str>) -> Reply {
        let body = md5.map_or(json!({}), |md5| json!({ "md5": md5 }));
        self.api(
            Method::POST,
            &format!("/v1/files/{id}/complete"),
            Some(body),
        )
        .await
    }

    /// Creates, uploads and completes a file; returns its id.
    async fn upload(&self, name: &str, data: &[u8]) -> String {
        let created = self.create(name, data.len() as u64).await;
        assert_eq!(
            self.put_as_told(&created, data).await.status,
            StatusCode::OK
        );
        let id = created["id"].as_str().unwrap().to_owned();
        let done = self.complete(&id, Some(&md5_hex(data))).await.ok();
        assert_eq!(done["status"], "COMPLETED");
        id
    }

    async fn retrieve(&self, id: &str) -> Value {
        self.api(Method::GET, &format!("/v1/files/{id}"), None)
            .await
            .ok()
    }
}

fn path_of(url: &str) -> String {
    let rest = url
        .strip_prefix(&format!("http://{HOST}"))
        .unwrap_or_else(|| panic!("{url} does not point at the emulator"));
    rest.to_owned()
}

/// Every `File` key is present with the spec's JSON type.
fn assert_file_shape(file: &Value) {
    let object = file.as_object().unwrap();
    for key in ["id", "status", "filename", "mimeType", "createdAt"] {
        assert!(object[key].is_string(), "{key} in {file}");
    }
    assert!(object["sizeBytes"].is_u64(), "{file}");
    for key in ["completedAt", "expiresAt"] {
        assert!(
            object[key].is_string() || object[key].is_null(),
            "{key} in {file}"
        );
    }
    assert!(
        ["PENDING", "COMPLETED", "CANCELLED", "EXPIRED"]
            .contains(&file["status"].as_str().unwrap())
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_in_the_envelope() {
    let emu = Emu::new();
    let request = |auth: Option<&str>| {
        let mut builder = Request::builder()
            .uri("/v1/files")
            .header("Lightfield-Version", VERSION);
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        builder.body(Body::empty()).unwrap()
    };
    for auth in [
        None,
        Some("Bearer "),
        Some("Bearer pk_live_x"),
        Some("sk_lf_x"),
    ] {
        let reply = emu.send(request(auth)).await;
        reply.error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(
        emu.send(request(Some("Bearer sk_lf_anything")))
            .await
            .status,
        StatusCode::OK
    );

    let strict = Emu::with(
        |mut config| {
            config.token = Some(KEY.to_owned());
            config
        },
        |state| state,
    );
    let reply = strict.send(request(Some("Bearer sk_lf_other"))).await;
    let error = reply.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        !error.to_string().contains("sk_lf_other"),
        "never echo a key"
    );
    assert_eq!(
        strict
            .send(request(Some(&format!("Bearer {KEY}"))))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_version_header_is_required() {
    let emu = Emu::new();
    for version in [None, Some("2025-01-01")] {
        let mut builder = Request::builder()
            .uri("/v1/files")
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"));
        if let Some(version) = version {
            builder = builder.header("Lightfield-Version", version);
        }
        let reply = emu.send(builder.body(Body::empty()).unwrap()).await;
        reply.bad_request("version_header", Some("Lightfield-Version"));
    }
}

#[tokio::test]
async fn create_returns_a_pending_session_with_every_key() {
    let emu = Emu::new();
    let created = emu.create("notes.txt", 5).await;
    assert_file_shape(&created);
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["filename"], "notes.txt");
    assert_eq!(created["sizeBytes"], 5);
    assert!(created["id"].as_str().unwrap().starts_with("fil_"));
    assert!(created["completedAt"].is_null());
    assert!(created["expiresAt"].is_string());
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        created["uploadHeaders"],
        json!({"content-type": "text/plain"})
    );
    let url = created["uploadUrl"].as_str().unwrap();
    assert!(
        url.contains("expires=") && url.contains("signature="),
        "{url}"
    );
}

#[tokio::test]
async fn create_validates_its_body() {
    let emu = Emu::new();
    let post = |body: Value| emu.api(Method::POST, "/v1/files", Some(body));
    let ok = json!({"filename": "a.txt", "mimeType": "text/plain", "sizeBytes": 1});
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    post(with("bogus", json!(1)))
        .await
        .bad_request("unknown_field", Some("bogus"));
    for key in ["filename", "mimeType", "sizeBytes"] {
        post(without(key))
            .await
            .bad_request("parameter_missing", Some(key));
    }
    post(with("filename", json!("")))
        .await
        .bad_request("invalid_value", Some("filename"));
    post(with("filename", json!("x".repeat(256))))
        .await
        .bad_request("invalid_value", Some("filename"));
    post(with("filename", json!(7)))
        .await
        .bad_request("invalid_type", Some("filename"));
    for size in [json!(0), json!(-1), json!(536_870_913u64)] {
        post(with("sizeBytes", size))
            .await
            .bad_request("invalid_value", Some("sizeBytes"));
    }
    post(with("sizeBytes", json!("12")))
        .await
        .bad_request("invalid_type", Some("sizeBytes"));
    post(with("purpose", json!("fun")))
        .await
        .bad_request("invalid_value", Some("purpose"));
    post(with("sizeBytes", json!(536_870_912u64))).await.ok();
    post(with("filename", json!("é".repeat(255)))).await.ok();

    let not_json = Request::builder()
        .method(Method::POST)
        .uri("/v1/files")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header("Lightfield-Version", VERSION)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("filename=a.txt"))
        .unwrap();
    emu.send(not_json)
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    post(json!([1, 2])).await.bad_request("invalid_type", None);
}

#[tokio::test]
async fn the_whole_flow_reaches_completed_and_downloads_with_ranges() {
    let emu = Emu::new();
    let data = b"hello lightfield, ranged";
    let created = emu.create("hello.txt", data.len() as u64).await;
    let id = created["id"].as_str().unwrap();
    let put = emu.put_as_told(&created, data).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    assert_eq!(put.headers[header::ETAG], format!("\"{}\"", md5_hex(data)));
    assert_eq!(
        emu.retrieve(id).await["status"],
        "PENDING",
        "PUT alone does not complete"
    );

    let done = emu.complete(id, Some(&md5_hex(data))).await.ok();
    assert_file_shape(&done);
    assert_eq!(done["status"], "COMPLETED");
    assert!(done["completedAt"].is_string());
    assert!(done["expiresAt"].is_null());
    assert_eq!(emu.retrieve(id).await, done);

    let list = emu.api(Method::GET, "/v1/files", None).await.ok();
    assert_eq!(list["object"], "list");
    assert_eq!(list["totalCount"], 1);
    assert_eq!(list["data"][0], done);

    let url = emu
        .api(Method::GET, &format!("/v1/files/{id}/url"), None)
        .await
        .ok();
    assert_eq!(url.as_object().unwrap().len(), 2);
    assert!(url["expiresAt"].is_string());
    let url = url["url"].as_str().unwrap();
    let whole = emu.get_url(url, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, &data[..]);
    assert_eq!(whole.headers[header::CONTENT_TYPE], "text/plain");
    let part = emu.get_url(url, Some("bytes=6-15")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, &data[6..16]);
    assert_eq!(part.headers[header::CONTENT_RANGE], "bytes 6-15/24");
    emu.get_url(url, Some("bytes=24-"))
        .await
        .storage_error(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange");
    let forged = url.replace("signature=", "signature=0");
    emu.get_url(&forged, None)
        .await
        .storage_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch");

    // complete without md5 also works (the SDK sends `{}`).
    let other = emu.create("b.txt", 1).await;
    emu.put_as_told(&other, b"x").await;
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(
        emu.complete(other_id, None).await.ok()["status"],
        "COMPLETED"
    );
}

#[tokio::test]
async fn the_presigned_put_enforces_headers_size_and_signature() {
    let emu = Emu::new();
    let created = emu.create("p.txt", 4).await;
    let url = created["uploadUrl"].as_str().unwrap();
    let denied = |reply: Reply| reply.storage_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch");
    denied(emu.put(url, &[], b"abcd").await);
    denied(
        emu.put(url, &[("content-type", "text/html")], b"abcd")
            .await,
    );
    denied(
        emu.put(url, &[("content-type", "text/plain")], b"abc")
            .await,
    );
    denied(
        emu.put(url, &[("content-type", "text/plain")], b"abcde")
            .await,
    );
    let forged = url.replace("signature=", "signature=f");
    denied(
        emu.put(&forged, &[("content-type", "text/plain")], b"abcd")
            .await,
    );
    emu.put(
        url.split('?').next().unwrap(),
        &[("content-type", "text/plain")],
        b"abcd",
    )
    .await
    .storage_error(StatusCode::FORBIDDEN, "AccessDenied");
    // Extra headers are fine, and a second PUT replaces the first.
    let extra = [("content-type", "text/plain"), ("x-extra", "1")];
    assert_eq!(emu.put(url, &extra, b"abcd").await.status, StatusCode::OK);
    assert_eq!(
        emu.put_as_told(&created, b"wxyz").await.status,
        StatusCode::OK
    );
    let id = created["id"].as_str().unwrap();
    emu.complete(id, Some(&md5_hex(b"wxyz"))).await.ok();
    emu.put_as_told(&created, b"abcd")
        .await
        .storage_error(StatusCode::FORBIDDEN, "AccessDenied");
}

#[tokio::test]
async fn a_wrong_md5_or_missing_bytes_leave_the_file_pending() {
    let emu = Emu::new();
    let created = emu.create("m.txt", 3).await;
    let id = created["id"].as_str().unwrap();
    let error = emu
        .complete(id, None)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_content");
    assert!(error["param"].is_null());
    emu.put_as_told(&created, b"abc").await;
    let error = emu
        .complete(id, Some(&md5_hex(b"abd")))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_content");
    assert_eq!(error["param"], "md5");
    assert_eq!(emu.retrieve(id).await["status"], "PENDING");
    emu.complete(id, Some("ABC"))
        .await
        .bad_request("invalid_value", Some("md5"));
    emu.api(
        Method::POST,
        &format!("/v1/files/{id}/complete"),
        Some(json!({"md5": md5_hex(b"abc"), "extra": true})),
    )
    .await
    .bad_request("unknown_field", Some("extra"));
    assert_eq!(
        emu.complete(id, Some(&md5_hex(b"abc"))).await.ok()["status"],
        "COMPLETED"
    );
}

#[tokio::test]
async fn state_conflicts_are_409() {
    let emu = Emu::new();
    let id = emu.upload("done.txt", b"done").await;
    emu.complete(&id, None)
        .await
        .error(StatusCode::CONFLICT, "conflict");
    emu.api(Method::POST, &format!("/v1/files/{id}/cancel"), None)
        .await
        .error(StatusCode::CONFLICT, "conflict");

    let pending = emu.create("pending.txt", 1).await;
    let pending = pending["id"].as_str().unwrap();
    emu.api(Method::GET, &format!("/v1/files/{pending}/url"), None)
        .await
        .error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn cancel_makes_a_pending_file_cancelled_for_good() {
    let emu = Emu::new();
    let created = emu.create("c.txt", 2).await;
    let id = created["id"].as_str().unwrap();
    emu.put_as_told(&created, b"ab").await;
    // The SDK sends no bytes at all on cancel.
    let cancelled = emu
        .api(Method::POST, &format!("/v1/files/{id}/cancel"), None)
        .await
        .ok();
    assert_file_shape(&cancelled);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["expiresAt"].is_null());
    assert!(cancelled["completedAt"].is_null());
    emu.complete(id, None)
        .await
        .error(StatusCode::CONFLICT, "conflict");
    emu.api(
        Method::POST,
        &format!("/v1/files/{id}/cancel"),
        Some(json!({})),
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    emu.api(
        Method::POST,
        &format!("/v1/files/{id}/cancel"),
        Some(json!({"x": 1})),
    )
    .await
    .bad_request("unknown_field", Some("x"));
    emu.put_as_told(&created, b"ab")
        .await
        .storage_error(StatusCode::FORBIDDEN, "AccessDenied");
}

#[tokio::test]
async fn a_session_past_its_expiry_is_expired() {
    let emu = Emu::with(|c| c, |s| s.with_upload_ttl(Duration::ZERO));
    let created = emu.create("late.txt", 1).await;
    let id = created["id"].as_str().unwrap();
    let file = emu.retrieve(id).await;
    assert_eq!(file["status"], "EXPIRED");
    assert!(file["expiresAt"].is_null());
    emu.put_as_told(&created, b"x")
        .await
        .storage_error(StatusCode::FORBIDDEN, "AccessDenied");
    emu.complete(id, None)
        .await
        .error(StatusCode::CONFLICT, "conflict");
    emu.api(Method::POST, &format!("/v1/files/{id}/cancel"), None)
        .await
        .error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn download_urls_expire() {
    let emu = Emu::with(|c| c, |s| s.with_download_ttl(Duration::ZERO));
    let id = emu.upload("d.txt", b"d").await;
    let url = emu
        .api(Method::GET, &format!("/v1/files/{id}/url"), None)
        .await
        .ok();
    emu.get_url(url["url"].as_str().unwrap(), None)
        .await
        .storage_error(StatusCode::FORBIDDEN, "AccessDenied");
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let emu = Emu::new();
    for (method, path) in [
        (Method::GET, "/v1/files/fil_nope"),
        (Method::POST, "/v1/files/fil_nope/complete"),
        (Method::POST, "/v1/files/fil_nope/cancel"),
        (Method::GET, "/v1/files/fil_nope/url"),
    ] {
        emu.api(method, path, None)
            .await
            .error(StatusCode::NOT_FOUND, "not_found");
    }
    emu.api(Method::GET, "/v2/nothing", None)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn list_is_newest_first_in_pages_of_at_most_25() {
    let emu = Emu::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(emu.create(&format!("f{i}.txt"), 1).await["id"].clone());
    }
    ids.reverse();
    let page = |query: &'static str| emu.api(Method::GET, query, None);
    let first = page("/v1/files").await.ok();
    assert_eq!(first["totalCount"], 30);
    let first: Vec<Value> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].clone())
        .collect();
    assert_eq!(first, ids[..25]);
    let clamped = page("/v1/files?limit=100").await.ok();
    assert_eq!(clamped["data"].as_array().unwrap().len(), 25);
    let rest = page("/v1/files?limit=25&offset=25").await.ok();
    let rest: Vec<Value> = rest["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].clone())
        .collect();
    assert_eq!(rest, ids[25..]);
    let small = page("/v1/files?limit=2&offset=1").await.ok();
    assert_eq!(small["data"][0]["id"], ids[1]);
    assert_eq!(small["data"].as_array().unwrap().len(), 2);
    assert_eq!(page("/v1/files?offset=100").await.ok()["data"], json!([]));
    assert_eq!(
        page("/v1/files?limit=&offset=").await.ok()["data"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
    page("/v1/files?limit=0")
        .await
        .bad_request("invalid_value", Some("limit"));
    page("/v1/files?offset=-1")
        .await
        .bad_request("invalid_value", Some("offset"));
    page("/v1/files?limit=many")
        .await
        .bad_request("invalid_type", Some("limit"));
}

#[tokio::test]
async fn injected_429_carries_retry_after() {
    let emu = Emu::with(
        |mut config| {
            config.faults = "429=1".parse().unwrap();
            config
        },
        |state| state,
    );
    let reply = emu.api(Method::GET, "/v1/files", None).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn files_and_urls_survive_a_restart() {
    let emu = Emu::new();
    let id = emu.upload("keep.txt", b"kept").await;
    let url = emu
        .api(Method::GET, &format!("/v1/files/{id}/url"), None)
        .await
        .ok();
    let again = emu.restart();
    assert_eq!(again.retrieve(&id).await["status"], "COMPLETED");
    let body = again.get_url(url["url"].as_str().unwrap(), None).await;
    assert_eq!(body.body, &b"kept"[..]);
}

#[tokio::test]
async fn knowledge_uploads_are_stamped_and_conditional() {
    let emu = Emu::new();
    let created = emu
        .api(
            Method::POST,
            "/v1/files",
            Some(
                json!({"filename": "playbook.md", "mimeType": "text/markdown",
                        "sizeBytes": 2, "purpose": "knowledge_user"}),
            ),
        )
        .await
        .ok();
    let name = created["filename"].as_str().unwrap();
    assert!(
        name.starts_with("playbook_") && name.ends_with(".md"),
        "{name}"
    );
    assert_eq!(created["uploadHeaders"]["if-none-match"], "*");
    assert_eq!(
        emu.put_as_told(&created, b"ok").await.status,
        StatusCode::OK
    );
    emu.put_as_told(&created, b"ok")
        .await
        .storage_error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
}

#[tokio::test]
async fn a_real_tcp_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Backend::Lightfield
        .spawn_emulator(EmulatorConfig::new(dir.path()))
        .await
        .unwrap();
    let base = server.endpoint();
    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(KEY)
            .header("Lightfield-Version", VERSION)
    };
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let created: Value = api(reqwest::Method::POST, "/v1/files")
        .json(
            &json!({"filename": "big.bin", "mimeType": "application/octet-stream",
                      "sizeBytes": data.len()}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = created["uploadUrl"].as_str().unwrap();
    assert!(url.starts_with(&base), "{url}");
    let put = http
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let id = created["id"].as_str().unwrap();
    let done = api(reqwest::Method::POST, &format!("/v1/files/{id}/complete"))
        .json(&json!({"md5": md5_hex(&data)}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let list: Value = api(reqwest::Method::GET, "/v1/files")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], id);
    let url: Value = api(reqwest::Method::GET, &format!("/v1/files/{id}/url"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let part = http
        .get(url["url"].as_str().unwrap())
        .header("Range", "bytes=1000000-1999999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), &data[1_000_000..2_000_000]);
    server.shutdown().await;
}
