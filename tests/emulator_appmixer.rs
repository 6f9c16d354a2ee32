//! Contract tests for the Appmixer emulator: every route, status and Boom body of
//! `docs/api/appmixer.md` and seed 002 (and the emulator's documented choices), driven through
//! the router with `oneshot`, plus one real-TCP round trip through `spawn`.

mod support;

use support::{Reply, md5_hex, send};

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::emulator::appmixer::{self, AppmixerState, ChunkStats, Login};
use sessionfs::emulator::store::Store;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const BOUNDARY: &str = "XyZappmixerBoundary";

fn password(email: &str) -> String {
    format!("{email}-secret")
}

fn logins() -> Vec<Login> {
    [ALICE, BOB]
        .iter()
        .map(|email| Login {
            email: email.to_string(),
            password: password(email),
        })
        .collect()
}

/// Deterministic content of `len` bytes, different for each `seed`.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        self.json()
    }

    /// Asserts a Boom body with `status`, its reason phrase and `message`; returns it.
    fn boom(&self, status: StatusCode, message: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body["statusCode"], status.as_u16(), "{body}");
        assert_eq!(body["error"], status.canonical_reason().unwrap(), "{body}");
        assert_eq!(body["message"], message, "{body}");
        body
    }

    /// Asserts a 400 with `validation: {source, keys: [key]}`.
    fn invalid(&self, source: &str, key: &str) {
        assert_eq!(
            self.status,
            StatusCode::BAD_REQUEST,
            "body: {}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["statusCode"], 400, "{body}");
        assert_eq!(body["error"], "Bad Request", "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(
            body["validation"],
            json!({"source": source, "keys": [key]}),
            "{body}"
        );
    }

    fn unauthorized(&self, message: &str) {
        self.boom(StatusCode::UNAUTHORIZED, message);
        let challenge = self.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
}

/// One multipart part: form name, filename, content type, bytes.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, content_type, content) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(filename) = filename {
            body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The headers of chunk `number` of `total` of `data`, for file `id` or a new file `name`.
fn chunk_headers(
    id: Option<&str>,
    name: &str,
    number: u32,
    total: u32,
    data: &[u8],
) -> Vec<(String, String)> {
    let mut headers = vec![
        ("uploader-file-name".into(), name.into()),
        ("uploader-chunk-number".into(), number.to_string()),
        ("uploader-chunks-total".into(), total.to_string()),
        ("uploader-chunk-size".into(), data.len().to_string()),
    ];
    if let Some(id) = id {
        headers.push(("uploader-file-id".into(), id.into()));
    }
    headers
}

struct Emu {
    app: Router,
    dir: tempfile::TempDir,
}

impl Emu {
    fn new() -> Emu {
        Emu::with(|config| config)
    }

    /// An emulator for Alice and Bob on a fresh directory, its config adjusted.
    fn with(tweak: impl FnOnce(EmulatorConfig) -> EmulatorConfig) -> Emu {
        let dir = tempfile::tempdir().unwrap();
        let config = tweak(config_for(dir.path()));
        Emu {
            app: Backend::Appmixer.emulator_router(&config).unwrap(),
            dir,
        }
    }

    /// A new router on the same data directory, as after a restart.
    fn restart(&mut self) {
        self.app = Backend::Appmixer
            .emulator_router(&config_for(self.dir.path()))
            .unwrap();
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.app, req).await
    }

    async fn sign_in(&self, body: Value) -> Reply {
        let req = Request::post("/user/auth")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    async fn token(&self, email: &str) -> String {
        let signed_in = self
            .sign_in(json!({"email": email, "password": password(email)}))
            .await
            .ok();
        signed_in["token"].as_str().unwrap().to_owned()
    }

    async fn call(&self, method: Method, path: &str, token: &str) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token).await
    }

    /// `POST /files` with `headers` and `body` as a multipart form.
    async fn post_files(&self, token: &str, headers: &[(String, String)], body: Body) -> Reply {
        self.send(post_files(token, headers, body)).await
    }

    /// Posts one chunk of `data` as part `file` with the given headers.
    async fn post_chunk(&self, token: &str, headers: &[(String, String)], data: &[u8]) -> Reply {
        let body = multipart(&[("file", Some("part.bin"), Some("text/plain"), data)]);
        self.post_files(token, headers, Body::from(body)).await
    }

    /// Posts `data` as chunk `number` of `total` of file `id` or of a new file `name`.
    async fn chunk(
        &self,
        token: &str,
        id: Option<&str>,
        name: &str,
        number: u32,
        total: u32,
        data: &[u8],
    ) -> Reply {
        let headers = chunk_headers(id, name, number, total, data);
        self.post_chunk(token, &headers, data).await
    }

    /// Uploads `data` as a whole file in one request; returns its File object.
    async fn upload(&self, token: &str, name: &str, data: &[u8]) -> Value {
        self.chunk(token, None, name, 1, 1, data).await.ok()
    }

    /// Uploads `data` in chunks of `chunk` bytes, in order; returns the last answer.
    async fn upload_chunks(&self, token: &str, name: &str, data: &[u8], chunk: usize) -> Value {
        let pieces: Vec<&[u8]> = data.chunks(chunk).collect();
        let total = pieces.len() as u32;
        let mut id: Option<String> = None;
        let mut last = Value::Null;
        for (i, piece) in pieces.iter().enumerate() {
            let headers = chunk_headers(id.as_deref(), name, i as u32 + 1, total, piece);
            last = self.post_chunk(token, &headers, piece).await.ok();
            id = last["fileId"].as_str().map(str::to_owned);
        }
        last
    }

    async fn list(&self, token: &str, query: &str) -> Vec<Value> {
        let list = self.get(&format!("/files{query}"), token).await.ok();
        list.as_array().expect("a bare array").clone()
    }

    async fn names(&self, token: &str, query: &str) -> Vec<String> {
        self.list(token, query)
            .await
            .iter()
            .map(|f| f["filename"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The signing secret, read from the store as another process would.
    async fn secret(&self) -> String {
        Store::open(self.dir.path())
            .unwrap()
            .get_record::<String>("appmixer_secret", "signing")
            .await
            .unwrap()
            .expect("the secret exists once a token was issued")
    }
}

fn config_for(dir: &std::path::Path) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(dir);
    config.users = logins();
    config
}

fn post_files(token: &str, headers: &[(String, String)], body: Body) -> Request<Body> {
    let mut builder = Request::post("/files")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(body).unwrap()
}

/// The claims of `token`, without checking its signature.
fn claims(token: &str) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(b""), &validation)
        .unwrap()
        .claims
}

fn forge(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Polls `condition` until it holds, failing with `what` after ten seconds.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---- sign-in ----

#[tokio::test]
async fn sign_in_answers_the_user_and_a_30_day_hs256_jwt() {
    let emu = Emu::new();
    for key in ["email", "username"] {
        let body = emu
            .sign_in(json!({ key: ALICE, "password": password(ALICE) }))
            .await
            .ok();
        let user = &body["user"];
        let id = user["id"].as_str().unwrap();
        assert_eq!(id.len(), 24, "an ObjectId-shaped id: {id}");
        assert_eq!(
            user,
            &json!({"id": id, "username": ALICE, "isActive": false, "email": ALICE,
                    "plan": "free", "vendor": null})
        );
        let token = body["token"].as_str().unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(token).unwrap().alg,
            Algorithm::HS256
        );
        let claims = claims(token);
        assert_eq!(claims["id"], id);
        assert_eq!(claims["scope"], json!(["user"]));
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, 30 * 24 * 3600);

        let me = emu.get("/user", token).await.ok();
        assert_eq!(
            me,
            json!({"id": id, "username": ALICE, "isActive": false, "email": ALICE,
                    "scope": ["user"], "plan": "free"})
        );
    }
    let other_case = emu
        .sign_in(json!({"email": "ALICE@example.com", "password": password(ALICE)}))
        .await
        .ok();
    assert_eq!(other_case["user"]["email"], ALICE);
}

#[tokio::test]
async fn sign_in_refuses_wrong_credentials_and_bad_bodies() {
    let emu = Emu::new();
    emu.sign_in(json!({"email": ALICE, "password": "wrong"}))
        .await
        .unauthorized("Invalid username or password.");
    emu.sign_in(json!({"email": "nobody@example.com", "password": "x"}))
        .await
        .unauthorized("Invalid username or password.");
    emu.sign_in(json!({"email": ALICE}))
        .await
        .invalid("payload", "password");
    emu.sign_in(json!({"password": "x"}))
        .await
        .invalid("payload", "username");
    let req = Request::post("/user/auth")
        .body(Body::from("{not json"))
        .unwrap();
    emu.send(req).await.boom(
        StatusCode::BAD_REQUEST,
        "Invalid request payload JSON format",
    );
}

#[tokio::test]
async fn without_users_one_account_is_generated() {
    let dir = tempfile::tempdir().unwrap();
    let app = Backend::Appmixer
        .emulator_router(&EmulatorConfig::new(dir.path()))
        .unwrap();
    let req = Request::post("/user/auth")
        .body(Body::from(
            json!({"email": "sessionfs@example.com", "password": "guess"}).to_string(),
        ))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::UNAUTHORIZED);

    let mut config = EmulatorConfig::new(dir.path());
    let mut client = sessionfs::remote::RemoteConfig::new("", None);
    Backend::Appmixer.embed(&mut config, &mut client);
    let login = config.users[0].clone();
    assert_eq!(login.password.len(), 32);
    let app = Backend::Appmixer.emulator_router(&config).unwrap();
    let req = Request::post("/user/auth")
        .body(Body::from(
            json!({"email": login.email, "password": login.password}).to_string(),
        ))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
}

// ---- the bearer check ----

#[tokio::test]
async fn every_files_route_needs_a_valid_unexpired_token() {
    let emu = Emu::with(|mut config| {
        config.token_ttl = Duration::from_secs(1);
        config
    });
    let token = emu.token(ALICE).await;
    let claims_now = claims(&token);
    assert_eq!(
        claims_now["exp"].as_u64().unwrap() - claims_now["iat"].as_u64().unwrap(),
        1,
        "--token-ttl sets the lifetime"
    );
    let secret = emu.secret().await;
    let mut expired = claims_now.clone();
    expired["iat"] = json!(1_000);
    expired["exp"] = json!(2_000);
    let cases = [
        (None, "Missing authentication"),
        (
            Some("Basic YWxpY2U6eA==".to_owned()),
            "Missing authentication",
        ),
        (Some("Bearer ".to_owned()), "Missing authentication"),
        (Some("Bearer not-a-jwt".to_owned()), "Invalid token format"),
        (Some("Bearer a.b.c".to_owned()), "Invalid token format"),
        (
            Some(format!("Bearer {}", forge("another secret", &claims_now))),
            "Invalid token",
        ),
        (
            Some(format!(
                "Bearer {}",
                forge(
                    &secret,
                    &json!({"id": "0123456789abcdef01234567",
                                       "scope": ["user"], "iat": 1, "exp": 4_000_000_000u64})
                )
            )),
            "Invalid token",
        ),
        (
            Some(format!("Bearer {}", forge(&secret, &expired))),
            "Token expired",
        ),
    ];
    let routes = [
        (Method::GET, "/user"),
        (Method::GET, "/files"),
        (Method::POST, "/files"),
        (Method::DELETE, "/files"),
        (Method::GET, "/files/count"),
        (
            Method::GET,
            "/files/metadata/f179c163-2ad8-4f9d-bce5-95200691b7f9",
        ),
        (Method::GET, "/files/f179c163-2ad8-4f9d-bce5-95200691b7f9"),
        (
            Method::DELETE,
            "/files/f179c163-2ad8-4f9d-bce5-95200691b7f9",
        ),
    ];
    for (authorization, message) in &cases {
        for (method, path) in &routes {
            let mut req = Request::builder().method(method.clone()).uri(*path);
            if let Some(value) = authorization {
                req = req.header(header::AUTHORIZATION, value.as_str());
            }
            let reply = emu.send(req.body(Body::empty()).unwrap()).await;
            reply.unauthorized(message);
        }
    }
    // A well-signed token with a future exp works.
    let mut fresh = claims_now;
    fresh["exp"] = json!(4_000_000_000u64);
    assert_eq!(
        emu.get("/files", &forge(&secret, &fresh)).await.ok(),
        json!([])
    );
}

#[tokio::test]
async fn a_token_outlives_a_restart() {
    let mut emu = Emu::new();
    let token = emu.token(ALICE).await;
    emu.upload(&token, "kept.txt", b"kept").await;
    emu.restart();
    assert_eq!(emu.names(&token, "").await, ["kept.txt"]);
}

// ---- uploads ----

/// The keys of the top-level object in `text`, in the order they appear.
fn key_order(text: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(text).unwrap();
    let mut keys: Vec<(usize, String)> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k.clone()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

#[tokio::test]
async fn a_single_request_upload_answers_the_docs_file_object() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    let user_id = claims(&token)["id"].as_str().unwrap().to_owned();
    let data = b"%PNG pretend".to_vec();
    let body = multipart(&[("file", Some("ignored.bin"), Some("image/png"), &data)]);
    let headers = chunk_headers(None, "chart1.png", 1, 1, &data);
    let reply = emu.post_files(&token, &headers, Body::from(body)).await;
    let file = reply.ok();
    assert_eq!(
        key_order(&reply.text()),
        [
            "length",
            "chunkSize",
            "uploadDate",
            "filename",
            "md5",
            "metadata",
            "contentType",
            "fileId"
        ]
    );
    let id = file["fileId"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    let date = file["uploadDate"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(date).is_ok()
            && date.len() == 24
            && date.ends_with('Z'),
        "{date}"
    );
    assert_eq!(
        file,
        json!({"length": data.len(), "chunkSize": 261120, "uploadDate": date,
               "filename": "chart1.png", "md5": md5_hex(&data),
               "metadata": {"userId": user_id}, "contentType": "image/png", "fileId": id})
    );
    assert_eq!(
        emu.get(&format!("/files/metadata/{id}"), &token).await.ok(),
        file
    );
    assert_eq!(emu.list(&token, "").await, [file]);
}

#[tokio::test]
async fn without_chunk_headers_a_request_is_a_whole_file_named_by_its_part() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    let body = multipart(&[
        ("note", None, None, b"a field before the file".as_slice()),
        ("file", Some("report.pdf"), None, b"whole"),
    ]);
    let file = emu.post_files(&token, &[], Body::from(body)).await.ok();
    assert_eq!(file["filename"], "report.pdf");
    assert_eq!(file["contentType"], "application/octet-stream");
    assert_eq!(file["length"], 5);

    let empty = emu.upload(&token, "empty.txt", b"").await;
    assert_eq!(empty["length"], 0);
    assert_eq!(empty["md5"], md5_hex(b""));
    let id = empty["fileId"].as_str().unwrap();
    let download = emu.get(&format!("/files/{id}"), &token).await;
    assert_eq!(download.status, StatusCode::OK);
    assert!(download.body.is_empty());
}

#[tokio::test]
async fn names_are_not_unique() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    let first = emu.upload(&token, "same.txt", b"one").await;
    let second = emu.upload(&token, "same.txt", b"two").await;
    assert_ne!(first["fileId"], second["fileId"]);
    assert_eq!(emu.names(&token, "").await, ["same.txt", "same.txt"]);
}

#[tokio::test]
async fn chunks_in_any_order_are_assembled_by_number() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    let pieces = [pattern(1, 1000), pattern(2, 700), pattern(3, 10)];
    let whole = pieces.concat();

    let third = emu
        .chunk(&token, None, "big.bin", 3, 3, &pieces[2])
        .await
        .ok();
    let id = third["fileId"].as_str().unwrap().to_owned();
    assert_eq!(third["length"], 10, "the bytes stored so far");
    assert_eq!(third["md5"], md5_hex(b""), "no run of chunks from 1 yet");
    assert!(
        emu.list(&token, "").await.is_empty(),
        "incomplete: not listed"
    );
    assert_eq!(
        emu.get("/files/count", &token).await.ok(),
        json!({"count": 0})
    );
    emu.get(&format!("/files/{id}"), &token)
        .await
        .boom(StatusCode::NOT_FOUND, "File not found");
    assert_eq!(
        emu.get(&format!("/files/metadata/{id}"), &token).await.ok()["length"],
        10
    );

    let first = emu
        .chunk(&token, Some(&id), "x", 1, 3, &pieces[0])
        .await
        .ok();
    assert_eq!(first["fileId"], id.as_str());
    assert_eq!(
        first["filename"], "big.bin",
        "the name of the first request stays"
    );
    assert_eq!(first["length"], 1010);
    assert_eq!(first["md5"], md5_hex(&pieces[0]));

    let done = emu
        .chunk(&token, Some(&id), "big.bin", 2, 3, &pieces[1])
        .await
        .ok();
    assert_eq!(done["length"], whole.len());
    assert_eq!(done["md5"], md5_hex(&whole));
    assert_eq!(emu.list(&token, "").await, [done]);
    let download = emu.get(&format!("/files/{id}"), &token).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(&download.body[..], &whole[..]);
}

#[tokio::test]
async fn a_duplicate_chunk_number_replaces_that_chunk() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    let first = emu.chunk(&token, None, "d.bin", 1, 2, b"AAAA").await.ok();
    let id = first["fileId"].as_str().unwrap().to_owned();
    let again = emu
        .chunk(&token, Some(&id), "d.bin", 1, 2, b"BB")
        .await
        .ok();
    assert_eq!(again["length"], 2);
    assert_eq!(again["md5"], md5_hex(b"BB"));
    let done = emu
        .chunk(&token, Some(&id), "d.bin", 2, 2, b"cc")
        .await
        .ok();
    assert_eq!(done["md5"], md5_hex(b"BBcc"));

    // After completion too, as when a client retries its last chunk.
    let replaced = emu
        .chunk(&token, Some(&id), "d.bin", 1, 2, b"zzz")
        .await
        .ok();
    assert_eq!(replaced["md5"], md5_hex(b"zzzcc"));
    assert_eq!(replaced["length"], 5);
    let download = emu.get(&format!("/files/{id}"), &token).await;
    assert_eq!(&download.body[..], b"zzzcc");
    assert_eq!(emu.list(&token, "").await.len(), 1);
}

#[tokio::test]
async fn bad_chunk_headers_and_forms_are_400_and_store_nothing() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    let with = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut headers = vec![("uploader-file-name".to_owned(), "x.bin".to_owned())];
        headers.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        headers
    };
    for (pairs, key) in [
        (
            &[("uploader-chunk-number", "one")][..],
            "uploader-chunk-number",
        ),
        (&[("uploader-chunk-number", "0")], "uploader-chunk-number"),
        (
            &[
                ("uploader-chunk-number", "3"),
                ("uploader-chunks-total", "2"),
            ],
            "uploader-chunk-number",
        ),
        (&[("uploader-chunks-total", "2")], "uploader-chunk-number"),
        (&[("uploader-chunks-total", "x")], "uploader-chunks-total"),
        (&[("uploader-chunk-size", "big")], "uploader-chunk-size"),
        (&[("uploader-chunk-size", "3")], "uploader-chunk-size"),
        (&[("uploader-chunk-size", "5")], "uploader-chunk-size"),
    ] {
        emu.post_chunk(&token, &with(pairs), b"four")
            .await
            .invalid("headers", key);
    }
    // No name anywhere.
    let nameless = multipart(&[("file", None, None, b"data")]);
    emu.post_files(&token, &[], Body::from(nameless))
        .await
        .invalid("headers", "uploader-file-name");
    // No `file` part.
    let other = multipart(&[("upload", Some("a.txt"), None, b"data")]);
    emu.post_files(&token, &with(&[]), Body::from(other))
        .await
        .invalid("payload", "file");
    // Not multipart at all.
    let req = Request::post("/files")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from("raw"))
        .unwrap();
    emu.send(req)
        .await
        .boom(StatusCode::BAD_REQUEST, "Invalid multipart payload format");
    // A form that never ends.
    let mut cut = multipart(&[("file", Some("a.txt"), None, b"data")]);
    cut.truncate(cut.len() - 10);
    emu.post_files(&token, &with(&[]), Body::from(cut))
        .await
        .boom(StatusCode::BAD_REQUEST, "Invalid multipart payload format");

    // The total must stay that of the file's first chunk.
    let first = emu.chunk(&token, None, "t.bin", 1, 2, b"ab").await.ok();
    let id = first["fileId"].as_str().unwrap();
    emu.chunk(&token, Some(id), "t.bin", 2, 3, b"cd")
        .await
        .invalid("headers", "uploader-chunks-total");
    emu.post_chunk(
        &token,
        &[
            ("uploader-file-id".to_owned(), id.to_owned()),
            ("uploader-chunk-number".to_owned(), "2".to_owned()),
            ("uploader-chunks-total".to_owned(), "2".to_owned()),
            ("uploader-chunk-size".to_owned(), "9".to_owned()),
        ],
        b"cd",
    )
    .await
    .invalid("headers", "uploader-chunk-size");
    let meta = emu.get(&format!("/files/metadata/{id}"), &token).await.ok();
    assert_eq!(meta["length"], 2, "no refused chunk was stored");
    assert!(emu.list(&token, "").await.is_empty());
}

#[tokio::test]
async fn a_part_over_the_configured_limit_is_413() {
    let emu = Emu::with(|mut config| {
        config.max_upload_bytes = Some(4);
        config
    });
    let token = emu.token(ALICE).await;
    emu.chunk(&token, None, "big", 1, 1, b"12345").await.boom(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Payload content length greater than maximum allowed: 4",
    );
    emu.upload(&token, "fits", b"1234").await;
}

#[tokio::test]
async fn an_unknown_or_foreign_file_is_404() {
    let emu = Emu::new();
    let alice = emu.token(ALICE).await;
    let bob = emu.token(BOB).await;
    let file = emu.upload(&alice, "private.txt", b"alice's").await;
    let id = file["fileId"].as_str().unwrap();
    let unknown = uuid::Uuid::new_v4().to_string();

    for who in [&bob, &alice] {
        let target = if who == &bob { id } else { unknown.as_str() };
        emu.chunk(who, Some(target), "x", 1, 1, b"x")
            .await
            .boom(StatusCode::NOT_FOUND, "File not found");
        for (method, path) in [
            (Method::GET, format!("/files/metadata/{target}")),
            (Method::GET, format!("/files/{target}")),
            (Method::DELETE, format!("/files/{target}")),
        ] {
            emu.call(method, &path, who)
                .await
                .boom(StatusCode::NOT_FOUND, "File not found");
        }
    }
    assert!(emu.list(&bob, "").await.is_empty());
    assert_eq!(
        emu.get("/files/count", &bob).await.ok(),
        json!({"count": 0})
    );
    emu.call(Method::DELETE, "/files", &bob).await.ok();
    assert_eq!(emu.names(&alice, "").await, ["private.txt"]);
    assert_eq!(
        &emu.get(&format!("/files/{id}"), &alice).await.body[..],
        b"alice's"
    );
}

/// The sending end of a held request body: each item is sent as is, an `Err` cuts the body.
type BodyFeed = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A multipart body whose `file` part starts with `head` and goes on with what the returned
/// feed sends, so a test controls when (and whether) the request ends.
fn held_body(head: &[u8]) -> (BodyFeed, Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let mut start = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
    )
    .into_bytes();
    start.extend_from_slice(head);
    let rest = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let stream = futures::stream::once(async move { Ok(Bytes::from(start)) }).chain(rest);
    (tx, Body::from_stream(stream))
}

/// The end of a form started by [`held_body`].
fn form_end() -> Bytes {
    Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"))
}

#[tokio::test]
async fn chunk_uploads_in_flight_are_counted_and_an_interrupted_one_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppmixerState::open(&config_for(dir.path())).unwrap();
    let app = appmixer::router(state.clone());
    let emu = Emu {
        app: app.clone(),
        dir,
    };
    let token = emu.token(ALICE).await;
    let first = emu.chunk(&token, None, "par.bin", 1, 3, b"11").await.ok();
    let id = first["fileId"].as_str().unwrap().to_owned();
    assert_eq!(state.chunk_stats().in_flight_max, 1);

    let (tx2, body2) = held_body(b"2");
    let (tx3, body3) = held_body(b"3");
    let second = tokio::spawn(send_owned(
        app.clone(),
        post_files(
            &token,
            &chunk_headers(Some(&id), "par.bin", 2, 3, b"22"),
            body2,
        ),
    ));
    let third = tokio::spawn(send_owned(
        app.clone(),
        post_files(
            &token,
            &chunk_headers(Some(&id), "par.bin", 3, 3, b"33"),
            body3,
        ),
    ));
    wait_until("two chunk uploads in flight", || {
        state.chunk_stats().in_flight == 2
    })
    .await;
    let stats = emu.get("/_emulator/stats", "").await.ok();
    assert_eq!(
        stats,
        json!({"chunkUploadsInFlight": 2, "chunkUploadsInFlightMax": 2, "chunkUploads": 3,
               "incompleteFiles": 1})
    );

    // Chunk 3 is cut mid-body: nothing of it is stored.
    tx3.send(Err(std::io::Error::other("connection reset")))
        .await
        .unwrap();
    drop(tx3);
    assert_eq!(third.await.unwrap().status, StatusCode::BAD_REQUEST);
    tx2.send(Ok(Bytes::from_static(b"2"))).await.unwrap();
    tx2.send(Ok(form_end())).await.unwrap();
    drop(tx2);
    let after_second = second.await.unwrap().ok();
    assert_eq!(after_second["length"], 4, "chunks 1 and 2 only");
    assert!(emu.list(&token, "").await.is_empty());

    assert_eq!(
        state.chunk_stats(),
        ChunkStats {
            in_flight: 0,
            in_flight_max: 2,
            uploads: 3
        }
    );
    let reset = emu.call(Method::DELETE, "/_emulator/stats", "").await.ok();
    assert_eq!(
        reset,
        json!({"chunkUploadsInFlight": 0, "chunkUploadsInFlightMax": 0, "chunkUploads": 0,
               "incompleteFiles": 1}),
        "the file whose third chunk was cut stays incomplete"
    );

    // A new file whose only request is cut is not created at all.
    let (tx, body) = held_body(b"partial");
    let cut = tokio::spawn(send_owned(
        app.clone(),
        post_files(
            &token,
            &chunk_headers(None, "gone.bin", 1, 1, b"partial!"),
            body,
        ),
    ));
    tx.send(Err(std::io::Error::other("cut"))).await.unwrap();
    drop(tx);
    assert_eq!(cut.await.unwrap().status, StatusCode::BAD_REQUEST);
    let store_files = std::fs::read_dir(emu.dir.path().join("records/appmixer_files"))
        .unwrap()
        .count();
    assert_eq!(store_files, 1, "only the first file has a record");
}

async fn send_owned(app: Router, req: Request<Body>) -> Reply {
    send(&app, req).await
}

// ---- listing ----

/// Uploads the listing fixture for Alice, oldest first with distinct upload dates, and one file
/// for Bob.
async fn fixture(emu: &Emu) -> (String, Vec<Value>) {
    let alice = emu.token(ALICE).await;
    let mut files = Vec::new();
    for (name, size, content_type) in [
        ("invoice-2024.pdf", 30, "application/pdf"),
        ("notes.txt", 10, "text/plain"),
        ("Invoice-2023.pdf", 20, "application/pdf"),
        ("zeta.png", 40, "image/png"),
        ("alpha.txt", 5, "text/plain"),
    ] {
        let data = pattern(size as u8, size);
        let body = multipart(&[("file", Some(name), Some(content_type), &data)]);
        let headers = chunk_headers(None, name, 1, 1, &data);
        files.push(
            emu.post_files(&alice, &headers, Body::from(body))
                .await
                .ok(),
        );
        // uploadDate has millisecond resolution; distinct dates make `sort=uploadDate` testable.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let bob = emu.token(BOB).await;
    emu.upload(&bob, "invoice-bob.pdf", b"bob").await;
    (alice, files)
}

#[tokio::test]
async fn listing_pages_sorts_filters_and_projects() {
    let emu = Emu::new();
    let (token, files) = fixture(&emu).await;
    let created = [
        "invoice-2024.pdf",
        "notes.txt",
        "Invoice-2023.pdf",
        "zeta.png",
        "alpha.txt",
    ];
    assert_eq!(
        emu.names(&token, "").await,
        created,
        "creation order by default"
    );
    assert_eq!(emu.list(&token, "").await, files);
    assert_eq!(emu.names(&token, "?limit=2&offset=1").await, created[1..3]);
    assert_eq!(emu.names(&token, "?offset=4&limit=10").await, ["alpha.txt"]);
    assert_eq!(emu.names(&token, "?limit=0").await.len(), 5, "0 = no limit");
    assert!(emu.names(&token, "?offset=9").await.is_empty());

    assert_eq!(
        emu.names(&token, "?sort=filename:1").await,
        [
            "Invoice-2023.pdf",
            "alpha.txt",
            "invoice-2024.pdf",
            "notes.txt",
            "zeta.png"
        ]
    );
    assert_eq!(
        emu.names(&token, "?sort=length:-1&limit=2").await,
        ["zeta.png", "invoice-2024.pdf"]
    );
    assert_eq!(
        emu.names(&token, "?sort=contentType:1,length:-1").await,
        [
            "invoice-2024.pdf",
            "Invoice-2023.pdf",
            "zeta.png",
            "notes.txt",
            "alpha.txt"
        ]
    );
    assert_eq!(
        emu.names(&token, "?sort=uploadDate:-1&limit=1").await,
        ["alpha.txt"]
    );

    // The docs' example: contains "invoice", sorted by name.
    assert_eq!(
        emu.names(&token, "?limit=10&filter=filename:~invoice&sort=filename:1")
            .await,
        ["Invoice-2023.pdf", "invoice-2024.pdf"]
    );
    assert_eq!(
        emu.names(&token, "?filter=filename:notes.txt").await,
        ["notes.txt"]
    );
    assert!(
        emu.names(&token, "?filter=filename:notes").await.is_empty(),
        "exact"
    );
    assert_eq!(
        emu.names(
            &token,
            "?filter=contentType:text/plain&filter=filename:~ALPHA"
        )
        .await,
        ["alpha.txt"]
    );
    assert_eq!(emu.names(&token, "?filter=length:40").await, ["zeta.png"]);
    let id = files[1]["fileId"].as_str().unwrap();
    assert_eq!(
        emu.names(&token, &format!("?filter=fileId:{id}")).await,
        ["notes.txt"]
    );
    let md5 = files[3]["md5"].as_str().unwrap();
    assert_eq!(
        emu.names(&token, &format!("?filter=md5:{md5}")).await,
        ["zeta.png"]
    );

    let projected = emu
        .get("/files?projection=fileId,filename&limit=1", &token)
        .await;
    assert_eq!(
        key_order(&projected.text()[1..projected.text().len() - 1]),
        ["filename", "fileId"]
    );
    assert_eq!(
        projected.ok(),
        json!([{"filename": "invoice-2024.pdf", "fileId": files[0]["fileId"]}])
    );
    let without = emu.list(&token, "?projection=-md5,-metadata&limit=1").await;
    let mut expected = files[0].clone();
    expected.as_object_mut().unwrap().remove("md5");
    expected.as_object_mut().unwrap().remove("metadata");
    assert_eq!(without, [expected]);

    assert_eq!(
        emu.get("/files/count?filter=filename:~invoice", &token)
            .await
            .ok(),
        json!({"count": 2})
    );
    assert_eq!(
        emu.get("/files/count?includeComponentSourceFiles=true", &token)
            .await
            .ok(),
        json!({"count": 5})
    );
    assert_eq!(
        emu.names(&token, "?includeComponentSourceFiles=false")
            .await
            .len(),
        5
    );
}

#[tokio::test]
async fn bad_list_queries_are_400_with_the_parameter() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    for (query, key) in [
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=x", "offset"),
        ("sort=filename:up", "sort"),
        ("sort=owner:1", "sort"),
        ("filter=filename", "filter"),
        ("filter=owner:x", "filter"),
        ("filter=length:~3", "filter"),
        ("projection=filename,-md5", "projection"),
        ("projection=owner", "projection"),
        (
            "includeComponentSourceFiles=maybe",
            "includeComponentSourceFiles",
        ),
        ("limit=1&limit=2", "limit"),
        ("page=2", "page"),
    ] {
        emu.get(&format!("/files?{query}"), &token)
            .await
            .invalid("query", key);
    }
    emu.get("/files/count?limit=1", &token)
        .await
        .invalid("query", "limit");
    emu.call(Method::DELETE, "/files?sort=filename:1", &token)
        .await
        .invalid("query", "sort");
}

// ---- download ----

#[tokio::test]
async fn download_streams_the_bytes_with_ranges() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    let data = pattern(7, 3000);
    let file = emu.upload_chunks(&token, "r é.bin", &data, 1024).await;
    let id = file["fileId"].as_str().unwrap();
    let path = format!("/files/{id}");

    let whole = emu.get(&path, &token).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(&whole.body[..], &data[..]);
    assert_eq!(whole.headers[header::CONTENT_TYPE], "text/plain");
    assert_eq!(whole.headers[header::CONTENT_LENGTH], "3000");
    assert_eq!(whole.headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(
        whole.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"r _.bin\"; filename*=UTF-8''r%20%C3%A9%2Ebin"
    );

    let ranged = |range: &'static str| {
        let req = Request::get(path.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::RANGE, range)
            .body(Body::empty())
            .unwrap();
        emu.send(req)
    };
    for (range, start, end) in [
        ("bytes=1000-2047", 1000, 2048),
        ("bytes=2990-", 2990, 3000),
        ("bytes=-5", 2995, 3000),
        ("bytes=0-0", 0, 1),
        ("bytes=100-99999", 100, 3000),
        ("bytes=0-9,10-19", 0, 20),
    ] {
        let part = ranged(range).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&part.body[..], &data[start..end], "{range}");
        assert_eq!(
            part.headers[header::CONTENT_RANGE],
            format!("bytes {start}-{}/3000", end - 1).as_str()
        );
        assert_eq!(
            part.headers[header::CONTENT_LENGTH],
            (end - start).to_string().as_str()
        );
    }
    let several = ranged("bytes=0-9,100-109").await;
    assert_eq!(several.status, StatusCode::OK);
    assert_eq!(several.body.len(), 3000);
    for range in ["bytes=3000-", "bytes=5-2", "bytes=-0", "lines=1-2"] {
        let refused = ranged(range).await;
        refused.boom(StatusCode::RANGE_NOT_SATISFIABLE, "Range Not Satisfiable");
        assert_eq!(refused.headers[header::CONTENT_RANGE], "bytes */3000");
    }
}

#[tokio::test]
async fn without_range_support_every_download_is_whole() {
    let emu = Emu::with(|mut config| {
        config.serve_ranges = false;
        config
    });
    let token = emu.token(ALICE).await;
    let file = emu.upload(&token, "n.txt", b"0123456789").await;
    let req = Request::get(format!("/files/{}", file["fileId"].as_str().unwrap()))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::RANGE, "bytes=2-3")
        .body(Body::empty())
        .unwrap();
    let reply = emu.send(req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"0123456789");
    assert!(reply.headers.get(header::ACCEPT_RANGES).is_none());
}

// ---- delete ----

#[tokio::test]
async fn delete_one_and_delete_by_filter() {
    let emu = Emu::new();
    let (alice, files) = fixture(&emu).await;
    let bob = emu.token(BOB).await;
    let id = files[1]["fileId"].as_str().unwrap();
    let deleted = emu
        .call(Method::DELETE, &format!("/files/{id}"), &alice)
        .await;
    assert_eq!(deleted.ok(), json!({}));
    emu.call(Method::DELETE, &format!("/files/{id}"), &alice)
        .await
        .boom(StatusCode::NOT_FOUND, "File not found");
    emu.get(&format!("/files/metadata/{id}"), &alice)
        .await
        .boom(StatusCode::NOT_FOUND, "File not found");

    let matching = emu
        .call(Method::DELETE, "/files?filter=filename:~invoice", &alice)
        .await;
    assert_eq!(matching.ok(), json!({}));
    assert_eq!(emu.names(&alice, "").await, ["zeta.png", "alpha.txt"]);
    assert_eq!(
        emu.names(&bob, "").await,
        ["invoice-bob.pdf"],
        "only the caller's"
    );

    // An upload in progress can be deleted by id; its chunks go with it.
    let part = emu.chunk(&alice, None, "p.bin", 1, 2, b"xx").await.ok();
    let partial = part["fileId"].as_str().unwrap();
    emu.call(Method::DELETE, &format!("/files/{partial}"), &alice)
        .await
        .ok();
    emu.chunk(&alice, Some(partial), "p.bin", 2, 2, b"yy")
        .await
        .boom(StatusCode::NOT_FOUND, "File not found");

    assert_eq!(
        emu.call(Method::DELETE, "/files", &alice).await.ok(),
        json!({})
    );
    assert!(emu.list(&alice, "").await.is_empty());
    assert_eq!(emu.names(&bob, "").await, ["invoice-bob.pdf"]);
}

// ---- the rest ----

#[tokio::test]
async fn unknown_routes_and_methods_are_hapi_404s() {
    let emu = Emu::new();
    let token = emu.token(ALICE).await;
    for (method, path) in [
        (Method::GET, "/nothing"),
        (Method::PUT, "/files"),
        (Method::GET, "/user/auth"),
        (Method::PATCH, "/files/abc"),
    ] {
        emu.call(method, path, &token)
            .await
            .boom(StatusCode::NOT_FOUND, "Not Found");
    }
}

#[tokio::test]
async fn files_and_uploads_in_progress_survive_a_restart() {
    let mut emu = Emu::new();
    let token = emu.token(ALICE).await;
    let whole = emu
        .upload_chunks(&token, "w.bin", &pattern(3, 5000), 2048)
        .await;
    let part = emu.chunk(&token, None, "p.bin", 1, 2, b"first-").await.ok();
    let partial = part["fileId"].as_str().unwrap().to_owned();

    emu.restart();
    assert_eq!(emu.list(&token, "").await, std::slice::from_ref(&whole));
    let id = whole["fileId"].as_str().unwrap();
    assert_eq!(
        &emu.get(&format!("/files/{id}"), &token).await.body[..],
        &pattern(3, 5000)[..]
    );
    let done = emu
        .chunk(&token, Some(&partial), "p.bin", 2, 2, b"second")
        .await
        .ok();
    assert_eq!(done["md5"], md5_hex(b"first-second"));
    assert_eq!(emu.names(&token, "").await, ["w.bin", "p.bin"]);
}

#[tokio::test]
async fn the_fault_layer_applies() {
    let emu = Emu::with(|mut config| {
        config.faults = "503=1.0".parse().unwrap();
        config
    });
    let reply = emu.get("/files", "whatever").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_tcp_round_trip_in_chunks() {
    const CHUNK: usize = 4 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let server = Backend::Appmixer
        .spawn_emulator(config_for(dir.path()))
        .await
        .unwrap();
    let base = server.endpoint();
    let http = reqwest::Client::new();
    let signed_in: Value = http
        .post(format!("{base}/user/auth"))
        .json(&json!({"username": ALICE, "password": password(ALICE)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_in["token"].as_str().unwrap().to_owned();
    let data = pattern(9, 2 * CHUNK + 12345);
    let pieces: Vec<&[u8]> = data.chunks(CHUNK).collect();
    let mut id = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        let part = reqwest::multipart::Part::bytes(piece.to_vec())
            .file_name("tcp.bin")
            .mime_str("application/octet-stream")
            .unwrap();
        let mut req = http
            .post(format!("{base}/files"))
            .bearer_auth(&token)
            .header("uploader-file-name", "tcp.bin")
            .header("uploader-chunk-number", (i + 1).to_string())
            .header("uploader-chunks-total", pieces.len().to_string())
            .header("uploader-chunk-size", piece.len().to_string())
            .multipart(reqwest::multipart::Form::new().part("file", part));
        if !id.is_empty() {
            req = req.header("uploader-file-id", &id);
        }
        let file: Value = req.send().await.unwrap().json().await.unwrap();
        id = file["fileId"].as_str().unwrap().to_owned();
    }
    let meta: Value = http
        .get(format!("{base}/files/metadata/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["length"], data.len());
    assert_eq!(meta["md5"], md5_hex(&data));
    let body = http
        .get(format!("{base}/files/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body[..] == data[..], "the download matches");
    let span = http
        .get(format!("{base}/files/{id}"))
        .bearer_auth(&token)
        .header("Range", format!("bytes={}-{}", CHUNK - 10, CHUNK + 9))
        .send()
        .await
        .unwrap();
    assert_eq!(span.status(), 206);
    assert_eq!(
        &span.bytes().await.unwrap()[..],
        &data[CHUNK - 10..CHUNK + 10]
    );
    server.shutdown().await;
}
