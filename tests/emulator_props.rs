//! Property tests of the four emulator routers as servers people can hit: random methods,
//! paths (documented routes with real or junk ids, and junk), headers and bodies, sent with
//! `oneshot` to a router over data a client stored first. Every answer must be one of the API's
//! statuses with that API's error body, no request may panic, and a request that fails must
//! leave the stored data (every record and blob on disk) as it was.
//!
//! `PROPTEST_CASES` sets the cases per router (64 by default); `scripts/emulator_props.sh` runs
//! the long version.

use std::collections::BTreeMap;
use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::remote::{RemoteConfig, UploadSource};
use tower::ServiceExt;

/// Cases per router in `cargo test`.
const DEFAULT_CASES: u32 = 64;

/// What a client stored before the random requests, and how to speak to the router.
struct Target {
    backend: Backend,
    app: Router,
    /// Ids worth putting into paths: the container, the stored object, junk.
    ids: Vec<String>,
    /// `Authorization` values: none, junk, the valid one.
    auth: Vec<Option<String>>,
    data: tempfile::TempDir,
}

/// Stores one file through the backend's own client on a served emulator, then builds the
/// router over the same data.
fn target(backend: Backend, runtime: &tokio::runtime::Runtime) -> Target {
    let data = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(data.path());
    let mut client = RemoteConfig::new("", None);
    backend.embed(&mut config, &mut client);
    let (container, object) = runtime.block_on(async {
        let server = backend.spawn_emulator(config.clone()).await.unwrap();
        client.endpoint = server.endpoint();
        let remote = backend.connect(&client).unwrap();
        let container = match remote.capabilities().containers {
            false => None,
            true => match remote.list_containers().await.unwrap().into_iter().next() {
                Some(first) => Some(first.id),
                None => Some(remote.create_container("props").await.unwrap().id),
            },
        };
        let staged = data.path().join("staged.txt");
        std::fs::write(&staged, b"stored before the random requests\n").unwrap();
        let source = UploadSource::new(&staged, 34);
        let object = remote
            .upload(container.as_deref(), "kept.txt", &source)
            .await
            .unwrap();
        std::fs::remove_file(&staged).unwrap();
        server.shutdown().await;
        (container, object.id)
    });
    let app = backend.emulator_router(&config).unwrap();
    let valid = match backend {
        Backend::Mix => None,
        Backend::Lightfield => client.token.map(|t| format!("Bearer {t}")),
        Backend::Fluxer => client.token.clone(),
        Backend::Appmixer => Some(format!("Bearer {}", appmixer_token(&app, runtime, &client))),
    };
    let mut ids = vec![
        object,
        "0".into(),
        "..".into(),
        "%00".into(),
        "x".repeat(300),
    ];
    ids.extend(container);
    Target {
        backend,
        app,
        ids,
        auth: vec![None, Some("Bearer junk".into()), valid],
        data,
    }
}

/// Signs in to the Appmixer router and returns the JWT.
fn appmixer_token(
    app: &Router,
    runtime: &tokio::runtime::Runtime,
    client: &RemoteConfig,
) -> String {
    let body = serde_json::json!({
        "username": client.user.as_deref().unwrap(),
        "password": client.password.as_deref().unwrap(),
    });
    let request = Request::post("/user/auth")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = runtime.block_on(app.clone().oneshot(request)).unwrap();
    let bytes = runtime
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    answer["token"].as_str().unwrap().to_owned()
}

/// The routes each API documents, `{}` standing for an id.
fn routes(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Mix => &[
            "/api/sessions",
            "/api/sessions/{}",
            "/api/sessions/{}/files",
            "/api/sessions/{}/files/upload",
            "/api/sessions/{}/files/{}",
        ],
        Backend::Lightfield => &[
            "/v1/files",
            "/v1/files/{}",
            "/v1/files/{}/complete",
            "/v1/files/{}/cancel",
            "/v1/files/{}/url",
            "/_storage/upload/{}",
            "/_storage/download/{}",
        ],
        Backend::Appmixer => &[
            "/user",
            "/user/auth",
            "/files",
            "/files/count",
            "/files/{}",
            "/files/metadata/{}",
        ],
        Backend::Fluxer => &[
            "/v1/users/@me",
            "/v1/users/@me/guilds",
            "/v1/guilds/{}/channels",
            "/v1/channels/{}",
            "/v1/channels/{}/messages",
            "/v1/channels/{}/messages/{}",
            "/v1/channels/{}/messages/{}/attachments/{}",
            "/v1/channels/{}/attachments",
            "/v1/channels/{}/attachments/complete",
            "/v1/channels/{}/chunked-uploads",
            "/v1/channels/{}/chunked-uploads/{}/chunks/{}",
            "/v1/channels/{}/chunked-uploads/{}/complete",
            "/v1/.well-known/fluxer",
            "/attachments/{}/{}/{}",
            "/_storage/presigned/{}",
            "/_storage/presigned/{}/parts/{}",
        ],
    }
}

/// Statuses each API answers (its docs and the emulator's documented choices).
fn statuses(backend: Backend) -> &'static [u16] {
    match backend {
        Backend::Mix => &[200, 201, 204, 206, 400, 404, 405, 409, 413, 416, 500],
        Backend::Lightfield => &[
            200, 201, 204, 206, 400, 401, 403, 404, 405, 409, 411, 413, 416, 422, 429, 500,
        ],
        Backend::Appmixer => &[200, 201, 204, 206, 400, 401, 403, 404, 413, 416, 500],
        Backend::Fluxer => &[
            200, 201, 204, 206, 400, 401, 403, 404, 405, 411, 413, 416, 429, 500,
        ],
    }
}

/// Whether `body` is the API's error body for `status` (storage routes speak S3-style XML, Mix
/// also answers Go's plain-text `http.Error`).
fn is_error_body(
    backend: Backend,
    path: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> bool {
    if path.starts_with("/_storage/") && body.starts_with(b"<") {
        return true;
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let text = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    match (backend, json) {
        (Backend::Mix, _) if content_type.starts_with("text/plain") => !body.is_empty(),
        (Backend::Mix, Some(v)) => v["error"]["code"] == status && text(&v["error"]["message"]),
        (Backend::Lightfield, Some(v)) => text(&v["error"]["type"]) && text(&v["error"]["message"]),
        (Backend::Appmixer, Some(v)) => v["statusCode"] == status && text(&v["message"]),
        (Backend::Fluxer, Some(v)) => {
            (text(&v["code"]) || v["code"].is_number()) && text(&v["message"])
        }
        _ => false,
    }
}

/// md5 of every stored record and blob by path (the store's `tmp/` holds writes in progress).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if relative.starts_with("tmp") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(relative, format!("{:x}", Md5::digest(&bytes)));
            }
        }
    }
    out
}

/// One random request, as its parts.
#[derive(Clone, Debug)]
struct Random {
    method: Method,
    route: usize,
    ids: Vec<usize>,
    junk_path: Option<String>,
    query: String,
    auth: usize,
    content_type: Option<&'static str>,
    range: Option<String>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
}

fn random_request() -> impl Strategy<Value = Random> {
    let method = prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ]);
    let content_type = prop::option::of(prop::sample::select(vec![
        "application/json",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "text/plain",
        "application/octet-stream",
        "\u{7f}garbage",
    ]));
    let body = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,64}".prop_map(String::into_bytes),
        Just(br#"{"filename":"a.txt","sizeBytes":-1,"title":null}"#.to_vec()),
        Just(br#"{"content":"x","attachments":[{"id":0,"uploaded_filename":"../../x"}]}"#.to_vec()),
        Just(
            b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc"
                .to_vec()
        ),
        Just(br#"{"chunk_size":0,"chunk_count":100000,"filename":""}"#.to_vec()),
    ];
    let header = ("[a-zA-Z-]{1,12}", "[ -~]{0,24}");
    (
        method,
        0usize..32,
        prop::collection::vec(0usize..16, 3),
        prop::option::weighted(0.2, "(/[%a-zA-Z0-9._~@-]{0,12}){1,4}"),
        "(\\?[a-z_]{1,8}=[-0-9a-zA-Z:,%]{0,12}(&[a-z_]{1,8}=[0-9a-z]{0,6}){0,2})?",
        0usize..3,
        content_type,
        prop::option::of("bytes=[-0-9,]{0,12}|[ -~]{0,12}"),
        prop::collection::vec(header, 0..3),
        body,
    )
        .prop_map(
            |(method, route, ids, junk_path, query, auth, content_type, range, extra, body)| {
                Random {
                    method,
                    route,
                    ids,
                    junk_path,
                    query,
                    auth,
                    content_type,
                    range,
                    extra,
                    body,
                }
            },
        )
}

impl Target {
    fn path_of(&self, random: &Random) -> String {
        if let Some(junk) = &random.junk_path {
            return junk.clone();
        }
        let routes = routes(self.backend);
        let template = routes[random.route % routes.len()];
        let mut ids = random
            .ids
            .iter()
            .map(|i| self.ids[i % self.ids.len()].as_str());
        let mut path = String::new();
        for (i, piece) in template.split("{}").enumerate() {
            if i > 0 {
                path.push_str(ids.next().unwrap_or("0"));
            }
            path.push_str(piece);
        }
        path
    }

    /// Sends `random` and checks the answer; `Err` says what was wrong.
    fn check(
        &self,
        runtime: &tokio::runtime::Runtime,
        random: &Random,
    ) -> Result<(), TestCaseError> {
        let path = self.path_of(random);
        let uri = format!("{path}{}", random.query);
        let mut builder = Request::builder().method(random.method.clone()).uri(&uri);
        if let Some(auth) = &self.auth[random.auth % self.auth.len()] {
            builder = builder.header("authorization", auth);
        }
        if let Some(content_type) = random.content_type {
            builder = builder.header("content-type", content_type);
        }
        if let Some(range) = &random.range {
            builder = builder.header("range", range);
        }
        for (name, value) in &random.extra {
            builder = builder.header(name, value);
        }
        let Ok(request) = builder.body(Body::from(random.body.clone())) else {
            return Ok(()); // Not a request a client could send (a header the http crate refuses).
        };
        let before = snapshot(self.data.path());
        let response = runtime.block_on(self.app.clone().oneshot(request)).unwrap();
        let status = response.status();
        let content_type = (response.headers().get("content-type"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = runtime
            .block_on(response.into_body().collect())
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let what = format!("{} {uri} -> {status}", random.method);
        prop_assert!(
            statuses(self.backend).contains(&status.as_u16()),
            "{what}: not a status the API answers ({:?})",
            String::from_utf8_lossy(&body)
        );
        if status.is_client_error() || status.is_server_error() {
            if random.method != Method::HEAD {
                prop_assert!(
                    is_error_body(self.backend, &path, status.as_u16(), &content_type, &body),
                    "{what}: not the API's error body: {content_type} {:?}",
                    String::from_utf8_lossy(&body)
                );
            }
            prop_assert!(
                snapshot(self.data.path()) == before,
                "{what}: a failed request changed the stored data"
            );
        }
        prop_assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR,
            "{what}: {:?}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}

fn run(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = target(backend, &runtime);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&random_request(), |random| target.check(&runtime, &random));
    if let Err(err) = result {
        panic!("{backend:?}: {err}");
    }
}

#[test]
fn mix_router_answers_every_request_within_its_contract() {
    run(Backend::Mix);
}

#[test]
fn lightfield_router_answers_every_request_within_its_contract() {
    run(Backend::Lightfield);
}

#[test]
fn appmixer_router_answers_every_request_within_its_contract() {
    run(Backend::Appmixer);
}

#[test]
fn fluxer_router_answers_every_request_within_its_contract() {
    run(Backend::Fluxer);
}
