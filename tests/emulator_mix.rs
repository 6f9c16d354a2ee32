//! Contract tests for the Mix emulator: every status code, envelope and header that
//! `docs/api/mix.md` documents, driven through `Backend::Mix.emulator_router(..)` with `oneshot`, plus
//! one real-TCP round trip through `spawn`.

mod support;

use support::{Reply, send};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::emulator::{EmulatorConfig, FaultSpec};
use tower::ServiceExt;

const HOST: &str = "emu.test:8088";
const BOUNDARY: &str = "----sessionfs-test-boundary";

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        assert!(
            self.body.ends_with(b"\n"),
            "Go's json.Encoder ends with a newline"
        );
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Asserts the Mix error envelope and returns its message.
    fn error(&self, status: StatusCode, kind: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body["error"]["code"], status.as_u16());
        assert_eq!(body["error"]["type"], kind);
        assert_eq!(body.as_object().unwrap().len(), 1);
        body["error"]["message"].as_str().unwrap().to_owned()
    }
}

struct Emu {
    app: Router,
    /// The data directory when the emulator owns it.
    _dir: Option<tempfile::TempDir>,
}

impl Emu {
    fn new() -> Emu {
        Emu::with(|_| {})
    }

    /// An emulator on a fresh directory, its config adjusted by `tweak`.
    fn with(tweak: impl FnOnce(&mut EmulatorConfig)) -> Emu {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmulatorConfig::new(dir.path());
        tweak(&mut config);
        Emu {
            _dir: Some(dir),
            ..Emu::open(&config)
        }
    }

    /// An emulator on `config.data_dir`, which the caller keeps.
    fn open(config: &EmulatorConfig) -> Emu {
        Emu {
            app: Backend::Mix.emulator_router(config).unwrap(),
            _dir: None,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        send(&self.app, req).await
    }

    async fn call(&self, method: Method, uri: &str) -> Reply {
        self.send(request(method, uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post_json(&self, uri: &str, body: &str) -> Reply {
        let req = request(Method::POST, uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.send(req).await
    }

    async fn create_session(&self) -> String {
        let reply = self
            .post_json(
                "/api/sessions",
                r#"{"title":"fuse test","browserMode":"local-browser-service"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    async fn upload(&self, id: &str, filename: &str, content: &[u8]) -> Reply {
        let body = multipart(&[("file", Some(filename), content)]);
        self.upload_raw(
            id,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            body,
        )
        .await
    }

    async fn upload_raw(&self, id: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let req = request(Method::POST, &format!("/api/sessions/{id}/files/upload"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }
}

fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST)
}

fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(filename) = filename {
            body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn assert_handler_cors(headers: &HeaderMap) {
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(
        headers["access-control-allow-methods"],
        "GET, POST, PUT, DELETE, OPTIONS"
    );
    assert_eq!(
        headers["access-control-allow-headers"],
        "Content-Type, Authorization"
    );
    assert_eq!(headers["access-control-max-age"], "86400");
}

fn assert_plain(reply: &Reply, status: StatusCode, text: &str) {
    assert_eq!(reply.status, status);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    assert_eq!(reply.text(), format!("{text}\n"));
}

// ---- sessions ----

#[tokio::test]
async fn create_session_answers_201_with_session_data() {
    let emu = Emu::new();
    let reply = emu
        .post_json("/api/sessions", r#"{"title":"fuse test","browserMode":"local-browser-service","promptMode":"default","sessionType":"main"}"#)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_handler_cors(&reply.headers);
    let body = reply.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "id",
        "title",
        "sessionType",
        "browserMode",
        "userMessageCount",
        "assistantMessageCount",
        "toolCallCount",
        "promptTokens",
        "completionTokens",
        "cost",
        "createdAt",
    ];
    want.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys, want,
        "only required keys; empty optionals are omitted"
    );
    let id = body["id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(
        id,
        uuid.hyphenated().to_string(),
        "lowercase canonical form"
    );
    assert_eq!(body["title"], "fuse test");
    assert_eq!(body["sessionType"], "main");
    assert_eq!(body["browserMode"], "local-browser-service");
    assert_eq!(body["cost"], json!(0));
    assert!(
        reply.text().contains(r#""cost":0,"#),
        "Go writes a float zero as 0"
    );
    let created = body["createdAt"].as_str().unwrap();
    assert_eq!(created.len(), "2026-01-01T00:00:00Z".len());
    assert!(created.ends_with('Z'));
    let parsed = chrono::DateTime::parse_from_rfc3339(created).unwrap();
    assert!((chrono::Utc::now().timestamp() - parsed.timestamp()).abs() < 3600);
}

#[tokio::test]
async fn create_session_keeps_optional_fields_it_was_given() {
    let emu = Emu::new();
    let reply = emu
        .post_json(
            "/api/sessions",
            r#"{"title":"cdp","browserMode":"remote-cdp-websocket","cdpUrl":"wss://x/y",
                "callbacks":[{"toolName":"*","type":"bash_script","bashCommand":"true"}]}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let body = reply.json();
    assert_eq!(body["cdpUrl"], "wss://x/y");
    assert_eq!(
        body["callbacks"],
        json!([{"toolName":"*","type":"bash_script","bashCommand":"true"}])
    );
}

#[tokio::test]
async fn create_session_validates_like_the_handler() {
    let emu = Emu::new();
    let cases = [
        (
            r#"{"title":"t","browserMode":"local-browser-service","color":"red"}"#,
            "Validation error for field 'body': json: unknown field \"color\"",
        ),
        (
            r#"{"title":"","browserMode":"local-browser-service"}"#,
            "Validation error for field 'title': title is required",
        ),
        (
            r#"{"browserMode":"local-browser-service"}"#,
            "Validation error for field 'title': title is required",
        ),
        ("", "Validation error for field 'body': EOF"),
        (
            r#"{"title":"t","promptMode":"shout","browserMode":"local-browser-service"}"#,
            "Validation error for field 'promptMode': promptMode must be 'default', 'append', or 'replace'",
        ),
        (
            r#"{"title":"t","sessionType":"subagent","browserMode":"local-browser-service"}"#,
            "Validation error for field 'sessionType': API can only create main sessions. Subagent sessions are created automatically.",
        ),
        (
            r#"{"title":"t","subagentType":"general-purpose","browserMode":"local-browser-service"}"#,
            "Validation error for field 'subagentType': subagentType cannot be set for API-created sessions. Subagent sessions are created programmatically by the task delegation system.",
        ),
    ];
    for (body, message) in cases {
        let reply = emu.post_json("/api/sessions", body).await;
        assert_eq!(
            reply.error(StatusCode::BAD_REQUEST, "validation_error"),
            message,
            "{body}"
        );
    }

    let big = "x".repeat(51 * 1024);
    let body = json!({"title":"t","promptMode":"append","customSystemPrompt":big,"browserMode":"local-browser-service"});
    let reply = emu.post_json("/api/sessions", &body.to_string()).await;
    assert_eq!(
        reply.error(StatusCode::BAD_REQUEST, "validation_error"),
        "Validation error for field 'customSystemPrompt': Custom prompt size (51KB) exceeds append mode limit of 50KB"
    );

    for body in [
        r#"{"title":"t"}"#,
        r#"{"title":"t","browserMode":"chrome"}"#,
    ] {
        let reply = emu.post_json("/api/sessions", body).await;
        let message = reply.error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
        assert!(
            message.starts_with("Internal error during creating session: "),
            "{message}"
        );
    }
    let listed = emu.call(Method::GET, "/api/sessions").await.json();
    assert_eq!(listed, json!([]), "no rejected request created a session");
}

#[tokio::test]
async fn list_get_and_delete_sessions() {
    let emu = Emu::new();
    let empty = emu
        .call(Method::GET, "/api/sessions?includeSubagents=false")
        .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.text(), "[]\n");

    let first = emu.create_session().await;
    let second = emu.create_session().await;
    let listed = emu
        .call(Method::GET, "/api/sessions?includeSubagents=true")
        .await
        .json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second.as_str(), first.as_str()], "newest first");

    let got = emu
        .call(Method::GET, &format!("/api/sessions/{first}"))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), listed[1]);

    let missing = emu.call(Method::GET, "/api/sessions/not-a-uuid").await;
    assert_eq!(
        missing.error(StatusCode::NOT_FOUND, "not_found"),
        "Session with ID 'not-a-uuid' not found"
    );

    let deleted = emu
        .call(Method::DELETE, &format!("/api/sessions/{first}"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    assert_handler_cors(&deleted.headers);
    let again = emu
        .call(Method::DELETE, &format!("/api/sessions/{first}"))
        .await;
    assert_eq!(
        again.error(StatusCode::NOT_FOUND, "not_found"),
        format!("Session with ID '{first}' not found")
    );
    let listed = emu.call(Method::GET, "/api/sessions").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn deleting_a_session_deletes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::open(&EmulatorConfig::new(dir.path()));
    let id = emu.create_session().await;
    assert_eq!(
        emu.upload(&id, "a.txt", b"hello").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
        1
    );

    assert_eq!(
        emu.call(Method::DELETE, &format!("/api/sessions/{id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
        0
    );
    let files = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await;
    files.error(StatusCode::NOT_FOUND, "not_found");
}

// ---- files ----

#[tokio::test]
async fn files_routes_check_the_session_id_first() {
    let emu = Emu::new();
    let unknown = uuid::Uuid::new_v4();
    for (method, path) in [
        (Method::GET, "files"),
        (Method::GET, "files/a.txt"),
        (Method::DELETE, "files/a.txt"),
    ] {
        let bad = emu
            .call(method.clone(), &format!("/api/sessions/nope/{path}"))
            .await;
        assert_eq!(
            bad.error(StatusCode::BAD_REQUEST, "validation_error"),
            "Validation error for field 'id': invalid session ID format"
        );
        let missing = emu
            .call(method, &format!("/api/sessions/{unknown}/{path}"))
            .await;
        assert_eq!(
            missing.error(StatusCode::NOT_FOUND, "not_found"),
            format!("Session with ID '{unknown}' not found")
        );
    }
    let bad = emu.upload("nope", "a.txt", b"x").await;
    bad.error(StatusCode::BAD_REQUEST, "validation_error");
    let missing = emu.upload(&unknown.to_string(), "a.txt", b"x").await;
    missing.error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn upload_answers_201_file_info_and_lists_it() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    let empty = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.text(), "[]\n");

    let reply = emu
        .upload(&id, "../docs/my file.tar.gz", b"0123456789")
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_handler_cors(&reply.headers);
    let info = reply.json();
    assert_eq!(info["name"], "my_file_tar.gz");
    assert_eq!(
        info["originalName"], "my file.tar.gz",
        "the name after filepath.Base"
    );
    assert_eq!(info["size"], 10);
    assert_eq!(info["isDir"], false);
    assert_eq!(
        info["url"],
        format!("http://{HOST}/api/sessions/{id}/files/my_file_tar.gz")
    );
    let modified = info["modified"].as_i64().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - modified).abs() < 3600,
        "real mtime: {modified}"
    );

    let plain = emu.upload(&id, "notes.txt", b"abc").await.json();
    assert!(
        plain.get("originalName").is_none(),
        "no originalName when unchanged"
    );

    let listed = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await
        .json();
    let mut without_original = info.clone();
    without_original
        .as_object_mut()
        .unwrap()
        .remove("originalName");
    assert_eq!(
        listed,
        json!([without_original, plain]),
        "sorted by name, all five keys"
    );
}

#[tokio::test]
async fn zero_modified_mode_reports_0_like_the_newest_server() {
    use sessionfs::emulator::mix::{MixState, router as mix_router};
    let dir = tempfile::tempdir().unwrap();
    let state = MixState::open(&EmulatorConfig::new(dir.path())).unwrap();
    let emu = Emu {
        app: mix_router(state.with_zero_modified(true)),
        _dir: None,
    };
    let id = emu.create_session().await;
    assert_eq!(emu.upload(&id, "a.txt", b"x").await.json()["modified"], 0);
    let listed = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await
        .json();
    assert_eq!(listed[0]["modified"], 0);
}

#[tokio::test]
async fn file_urls_follow_forwarded_proto() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    let req = request(Method::POST, &format!("/api/sessions/{id}/files/upload"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("x-forwarded-proto", "https")
        .body(Body::from(multipart(&[("file", Some("a.txt"), b"x")])))
        .unwrap();
    let info = emu.send(req).await.json();
    assert_eq!(
        info["url"],
        format!("https://{HOST}/api/sessions/{id}/files/a.txt")
    );
}

#[tokio::test]
async fn upload_rejects_bad_forms() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    let form_error = "Validation error for field 'form': failed to parse multipart form";
    let file_error = "Validation error for field 'file': file upload required";

    let not_multipart = emu.upload_raw(&id, "text/plain", b"hello".to_vec()).await;
    assert_eq!(
        not_multipart.error(StatusCode::BAD_REQUEST, "validation_error"),
        form_error
    );
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let garbled = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nno end"
    );
    let garbled = emu
        .upload_raw(&id, &content_type, garbled.into_bytes())
        .await;
    assert_eq!(
        garbled.error(StatusCode::BAD_REQUEST, "validation_error"),
        form_error
    );

    let other_part = emu
        .upload_raw(
            &id,
            &content_type,
            multipart(&[("other", Some("a.txt"), b"x")]),
        )
        .await;
    assert_eq!(
        other_part.error(StatusCode::BAD_REQUEST, "validation_error"),
        file_error
    );
    let no_filename = emu
        .upload_raw(&id, &content_type, multipart(&[("file", None, b"x")]))
        .await;
    assert_eq!(
        no_filename.error(StatusCode::BAD_REQUEST, "validation_error"),
        file_error
    );
    let empty_form = emu.upload_raw(&id, &content_type, multipart(&[])).await;
    assert_eq!(
        empty_form.error(StatusCode::BAD_REQUEST, "validation_error"),
        file_error
    );

    let listed = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await;
    assert_eq!(listed.text(), "[]\n", "nothing was stored");
}

#[tokio::test]
async fn upload_over_the_configured_limit_is_413() {
    let emu = Emu::with(|config| config.max_upload_bytes = Some(8));
    let id = emu.create_session().await;
    let reply = emu.upload(&id, "big.bin", b"123456789").await;
    assert_eq!(
        reply.error(StatusCode::PAYLOAD_TOO_LARGE, "bad_request"),
        "File too large (max 8 bytes)"
    );
    let listed = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await;
    assert_eq!(listed.text(), "[]\n");
    assert_eq!(
        emu.upload(&id, "fits.bin", b"12345678").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn same_name_overwrites() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    emu.upload(&id, "a.txt", b"first version").await;
    let second = emu.upload(&id, "a.txt", b"second").await.json();
    assert_eq!(second["size"], 6);
    let listed = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let got = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files/a.txt"))
        .await;
    assert_eq!(&got.body[..], b"second");
}

#[tokio::test]
async fn get_serves_the_bytes_like_serve_content() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    emu.upload(&id, "hello.txt", b"hello, world").await;
    emu.upload(&id, "blob", &[0u8, 1, 2, 3]).await;

    let got = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files/hello.txt"))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], b"hello, world");
    let h = &got.headers;
    assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(h[header::CONTENT_LENGTH], "12");
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(
        h[header::CACHE_CONTROL],
        "no-cache, no-store, must-revalidate"
    );
    assert_eq!(h[header::PRAGMA], "no-cache");
    assert_eq!(h[header::EXPIRES], "0");
    assert!(h.get(header::ETAG).is_none());
    assert!(h.get(header::CONTENT_RANGE).is_none());
    let last_modified =
        httpdate::parse_http_date(h[header::LAST_MODIFIED].to_str().unwrap()).unwrap();

    let binary = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files/blob"))
        .await;
    assert_eq!(
        binary.headers[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert_eq!(&binary.body[..], &[0, 1, 2, 3]);

    let since = httpdate::fmt_http_date(last_modified);
    let req = request(Method::GET, &format!("/api/sessions/{id}/files/hello.txt"))
        .header(header::IF_MODIFIED_SINCE, since)
        .body(Body::empty())
        .unwrap();
    let not_modified = emu.send(req).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
}

#[tokio::test]
async fn ranges_answer_206_or_416() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    emu.upload(&id, "digits.txt", b"0123456789").await;
    let get_range = |range: &'static str| {
        request(Method::GET, &format!("/api/sessions/{id}/files/digits.txt"))
            .header(header::RANGE, range)
            .body(Body::empty())
            .unwrap()
    };

    let part = emu.send(get_range("bytes=2-5")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&part.body[..], b"2345");
    assert_eq!(part.headers[header::CONTENT_RANGE], "bytes 2-5/10");
    assert_eq!(part.headers[header::CONTENT_LENGTH], "4");
    assert_eq!(
        part.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );

    let tail = emu.send(get_range("bytes=-3")).await;
    assert_eq!(
        (tail.status, &tail.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"789"[..])
    );
    assert_eq!(tail.headers[header::CONTENT_RANGE], "bytes 7-9/10");
    let open = emu.send(get_range("bytes=8-")).await;
    assert_eq!(&open.body[..], b"89");

    let beyond = emu.send(get_range("bytes=10-20")).await;
    assert_plain(
        &beyond,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "invalid range: failed to overlap",
    );
    assert_eq!(beyond.headers[header::CONTENT_RANGE], "bytes */10");
    let malformed = emu.send(get_range("bytes=5-2")).await;
    assert_plain(
        &malformed,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "invalid range",
    );
    assert!(malformed.headers.get(header::CONTENT_RANGE).is_none());
}

#[tokio::test]
async fn file_names_are_one_opaque_segment() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    emu.upload(&id, "a b.txt", b"spaced").await;
    let got = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files/a_b.txt"))
        .await;
    assert_eq!(&got.body[..], b"spaced");

    for escaped in ["..%2F..%2Fetc%2Fpasswd", "sub%2Fa_b.txt", "a%20b.txt"] {
        let name = percent_encoding::percent_decode_str(escaped)
            .decode_utf8()
            .unwrap();
        let reply = emu
            .call(Method::GET, &format!("/api/sessions/{id}/files/{escaped}"))
            .await;
        assert_eq!(
            reply.error(StatusCode::NOT_FOUND, "not_found"),
            format!("File with ID '{name}' not found")
        );
    }
    let nested = emu
        .call(
            Method::GET,
            &format!("/api/sessions/{id}/files/sub/a_b.txt"),
        )
        .await;
    assert_plain(&nested, StatusCode::NOT_FOUND, "404 page not found");

    emu.upload(&id, "upload", b"named upload").await;
    let named = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files/upload"))
        .await;
    assert_eq!(&named.body[..], b"named upload");
    let deleted = emu
        .call(Method::DELETE, &format!("/api/sessions/{id}/files/upload"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn delete_file_then_404() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    emu.upload(&id, "a.txt", b"x").await;
    let deleted = emu
        .call(Method::DELETE, &format!("/api/sessions/{id}/files/a.txt"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    let again = emu
        .call(Method::DELETE, &format!("/api/sessions/{id}/files/a.txt"))
        .await;
    assert_eq!(
        again.error(StatusCode::NOT_FOUND, "not_found"),
        "File with ID 'a.txt' not found"
    );
    let get = emu
        .call(Method::GET, &format!("/api/sessions/{id}/files/a.txt"))
        .await;
    assert_eq!(
        get.error(StatusCode::NOT_FOUND, "not_found"),
        "File with ID 'a.txt' not found"
    );
}

// ---- router-level behaviour ----

#[tokio::test]
async fn methods_paths_and_cors_like_go() {
    let emu = Emu::new();
    let id = emu.create_session().await;
    emu.upload(&id, "a.txt", b"x").await;

    for path in [
        format!("/api/sessions/{id}/files/a.txt"),
        format!("/api/sessions/{id}/files"),
        "/api/sessions".to_owned(),
    ] {
        let head = emu.call(Method::HEAD, &path).await;
        assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert!(head.body.is_empty(), "HEAD has no body");
    }

    let post = emu
        .call(Method::POST, &format!("/api/sessions/{id}/files/a.txt"))
        .await;
    assert_plain(&post, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    assert_eq!(post.headers[header::ALLOW], "DELETE, GET, HEAD");
    assert_eq!(
        post.headers["access-control-allow-methods"],
        "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    );
    let put = emu.call(Method::PUT, "/api/sessions").await;
    assert_eq!(put.headers[header::ALLOW], "GET, HEAD, POST");

    let unknown = emu.call(Method::GET, "/api/nothing").await;
    assert_plain(&unknown, StatusCode::NOT_FOUND, "404 page not found");

    let options = emu.call(Method::OPTIONS, "/anything/at/all").await;
    assert_eq!(options.status, StatusCode::OK);
    assert!(options.body.is_empty());
    assert_eq!(options.headers["access-control-allow-origin"], "*");
    assert_eq!(
        options.headers["access-control-allow-methods"],
        "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    );
    assert_eq!(
        options.headers["access-control-allow-headers"],
        "Content-Type, Authorization, X-Requested-With"
    );
    assert_eq!(options.headers["access-control-max-age"], "86400");
}

#[tokio::test]
async fn sessions_and_files_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig::new(dir.path());
    let first = Emu::open(&config);
    let id = first.create_session().await;
    first.upload(&id, "kept.txt", b"still here").await;
    let session = first
        .call(Method::GET, &format!("/api/sessions/{id}"))
        .await
        .json();
    let files = first
        .call(Method::GET, &format!("/api/sessions/{id}/files"))
        .await
        .json();
    drop(first);

    let second = Emu::open(&config);
    assert_eq!(
        second
            .call(Method::GET, &format!("/api/sessions/{id}"))
            .await
            .json(),
        session
    );
    assert_eq!(
        second
            .call(Method::GET, &format!("/api/sessions/{id}/files"))
            .await
            .json(),
        files
    );
    let got = second
        .call(Method::GET, &format!("/api/sessions/{id}/files/kept.txt"))
        .await;
    assert_eq!(&got.body[..], b"still here");
}

// ---- faults ----

#[test]
fn fault_specs_parse_or_explain() {
    assert_eq!("".parse::<FaultSpec>().unwrap(), FaultSpec::default());
    assert!("500=0.05,429=0.05,reset=0.01".parse::<FaultSpec>().is_ok());
    let err = "teapot=0.5".parse::<FaultSpec>().unwrap_err().to_string();
    assert!(
        err.contains("teapot") && err.contains("unknown kind"),
        "{err}"
    );
    let err = "500=2".parse::<FaultSpec>().unwrap_err().to_string();
    assert!(err.contains("from 0 to 1"), "{err}");
}

#[tokio::test]
async fn certain_faults_always_fire() {
    let emu = Emu::with(|config| config.faults = "500=1.0".parse().unwrap());
    for _ in 0..3 {
        let reply = emu.call(Method::GET, "/api/sessions").await;
        assert_eq!(
            reply.error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            "injected fault"
        );
    }
    let emu = Emu::with(|config| config.faults = "429=1.0".parse().unwrap());
    let reply = emu.call(Method::GET, "/api/sessions").await;
    reply.error(StatusCode::TOO_MANY_REQUESTS, "internal_error");
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn truncate_and_reset_cut_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let clean = Emu::open(&EmulatorConfig::new(dir.path()));
    let id = clean.create_session().await;
    clean.upload(&id, "ten.txt", b"0123456789").await;
    let uri = format!("/api/sessions/{id}/files/ten.txt");

    let mut config = EmulatorConfig::new(dir.path());
    config.faults = "truncate=1.0".parse().unwrap();
    let truncating = Backend::Mix.emulator_router(&config).unwrap();
    let res = truncating
        .oneshot(request(Method::GET, &uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[header::CONTENT_LENGTH],
        "10",
        "the promise stays"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"01234");

    config.faults = "reset=1.0".parse().unwrap();
    let resetting = Backend::Mix.emulator_router(&config).unwrap();
    let res = resetting
        .oneshot(request(Method::GET, &uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(
        res.into_body().collect().await.is_err(),
        "the body ends in an error"
    );
}

// ---- real TCP ----

/// Deterministic test content: byte `i` of the stream.
fn pattern_chunk(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_64_mib_up_and_down_over_tcp() {
    const SIZE: usize = 64 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let emulator = Backend::Mix
        .spawn_emulator(EmulatorConfig::new(dir.path()))
        .await
        .unwrap();
    assert!(emulator.addr.ip().is_loopback());
    let base = emulator.endpoint();
    let client = reqwest::Client::new();

    let session: Value = client
        .post(format!("{base}/api/sessions"))
        .json(&json!({"title": "tcp", "browserMode": "local-browser-service"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap();

    let chunks = futures::stream::iter(
        (0..SIZE / CHUNK).map(|i| Ok::<_, std::io::Error>(pattern_chunk(i * CHUNK, CHUNK))),
    );
    let part = reqwest::multipart::Part::stream_with_length(
        reqwest::Body::wrap_stream(chunks),
        SIZE as u64,
    )
    .file_name("big.bin");
    let uploaded = client
        .post(format!("{base}/api/sessions/{id}/files/upload"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), reqwest::StatusCode::CREATED);
    let info: Value = uploaded.json().await.unwrap();
    assert_eq!(info["size"], SIZE);
    assert_eq!(
        info["url"],
        format!("{base}/api/sessions/{id}/files/big.bin")
    );

    let mut download = client
        .get(info["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), reqwest::StatusCode::OK);
    assert_eq!(download.content_length(), Some(SIZE as u64));
    let mut offset = 0;
    while let Some(chunk) = download.chunk().await.unwrap() {
        assert!(
            chunk[..] == pattern_chunk(offset, chunk.len())[..],
            "bytes differ near offset {offset}"
        );
        offset += chunk.len();
    }
    assert_eq!(offset, SIZE);

    emulator.shutdown().await;
    assert!(
        client
            .get(format!("{base}/api/sessions"))
            .send()
            .await
            .is_err(),
        "stopped"
    );
}
