//! The Fluxer-shaped hostile server: one guild whose text channels each answer one kind of bad
//! thing. Every answer carries rate-limit headers no clock can hold (`inf`, `1e400`, `NaN`,
//! negative); `names` holds attachments with names no local file can have; `fields` messages
//! whose attachments have fields of the wrong type or missing; `expiring` an attachment whose
//! download URL expires long before its `expires_at` (403, then a fresh URL from the message);
//! `repeat` cursor pages that come round again; `storm` global 429s whose `Retry-After` is
//! `1e400` (and whose reset is one of the values above); `env-*` refusals whose `{code, message}` envelope is HTML, of
//! the wrong types, without a code, or with a newline in its message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{
    BinaryMount, CONTENT, Expiry, bad_name_rows, check_names, check_no_injected_lines,
    check_substitutes_logged_once, expired, fails_with, fails_with_eio, html, names_in,
    query_number, ranged, runtime, serve, works,
};
use crate::harness::pseudo_random;

/// Size of the attachment whose download URLs expire early: several ranged GETs long.
const EXPIRING_BYTES: usize = 9 << 20;

/// The text a refusal's message carries after a newline.
const INJECTED: &str = "INJECTED-LINE";

/// `X-RateLimit-Remaining` and `X-RateLimit-Reset` pairs, one per answer in turn.
const LIMITS: [(&str, &str); 9] = [
    ("inf", "inf"),
    ("NaN", "1e400"),
    ("-5", "-1e400"),
    ("1e400", "NaN"),
    ("0", "inf"),
    ("0", "1e400"),
    ("0", "NaN"),
    ("0", "-5"),
    ("-0", "-inf"),
];

/// The guild's text channels: id and name.
const CHANNELS: [(&str, &str); 9] = [
    ("11", "names"),
    ("12", "fields"),
    ("13", "expiring"),
    ("14", "repeat"),
    ("15", "storm"),
    ("16", "env-html"),
    ("17", "env-types"),
    ("18", "env-nocode"),
    ("19", "env-inject"),
];

#[derive(Clone)]
struct Server {
    endpoint: String,
    expiring: Arc<Vec<u8>>,
    expiry: Expiry,
    /// Whether the download URLs a listing of `expiring` hands out have expired by the time
    /// they are used (set by the test); those of a message fetched alone stay valid.
    listed_urls_expire: Arc<AtomicBool>,
    /// Answers so far (picks the rate-limit headers).
    answers: Arc<AtomicUsize>,
    /// Calls to `storm` still to be answered with a global 429 (set by the test).
    storm: Arc<AtomicUsize>,
    /// Pages `repeat` has answered.
    repeated: Arc<AtomicUsize>,
}

fn message(id: u64, attachments: Value) -> Value {
    json!({
        "id": id.to_string(), "channel_id": "0", "type": 0, "flags": 0, "content": "",
        "timestamp": "2026-01-01T00:00:00.000Z", "pinned": false, "mention_everyone": false,
        "author": { "id": "7", "username": "someone" }, "attachments": attachments,
    })
}

impl Server {
    fn attachment(&self, id: &str, filename: &str, size: usize) -> Value {
        let token = self.expiry.token(id == "expiring");
        let expires = chrono::Utc::now() + chrono::Duration::hours(1);
        json!({
            "id": id, "filename": filename, "size": size, "flags": 0,
            "content_type": "application/octet-stream",
            "url": format!("{}/_cdn/{id}?token={token}", self.endpoint),
            "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    /// The messages of `channel`, newest first.
    fn messages(&self, channel: &str) -> Vec<Value> {
        let small = CONTENT.len();
        let one = |id: u64, attachment: Value| message(id, json!([attachment]));
        let mut messages = match channel {
            "11" => bad_name_rows("11", |id, name| {
                one(id.parse().unwrap(), self.attachment(id, name, small))
            }),
            "12" => {
                let field = |id: u64, name: &str, key: &str, value: Value| {
                    let mut attachment = self.attachment(&format!("f{id}"), name, small);
                    match value {
                        Value::Null if key != "filename" => {
                            attachment.as_object_mut().unwrap().remove(key);
                        }
                        value => attachment[key] = value,
                    }
                    one(id, attachment)
                };
                vec![
                    field(1201, "size-text.txt", "size", json!("16")),
                    field(1202, "size-negative.txt", "size", json!(-1)),
                    field(1203, "size-missing.txt", "size", Value::Null),
                    field(1204, "id-number.txt", "id", json!(5)),
                    field(1205, "name-null.txt", "filename", Value::Null),
                    field(1206, "bad-url.txt", "url", json!(5)),
                    field(1207, "bad-expiry.txt", "expires_at", json!("tomorrow")),
                    field(1208, "bad-type.txt", "content_type", json!(7)),
                    message(1209, json!({ "0": "not a list" })),
                ]
            }
            "13" => vec![one(
                1300,
                self.attachment("expiring", "expiring.bin", self.expiring.len()),
            )],
            _ => vec![],
        };
        messages.push(one(
            channel.parse::<u64>().unwrap_or(0) * 100 + 99,
            self.attachment(&format!("ok{channel}"), "ok.txt", small),
        ));
        messages.reverse();
        messages
    }

    /// A full page of 100 messages: the first and third pages are the same, and so on.
    fn repeating_page(&self) -> Vec<Value> {
        let page = self.repeated.fetch_add(1, Ordering::SeqCst) as u64 % 2;
        let newest = 2000 - 100 * page;
        (0..100).map(|i| message(newest - i, json!([]))).collect()
    }
}

/// Every answer carries the next pair of [`LIMITS`].
async fn limits(State(server): State<Server>, mut response: Response) -> Response {
    let (remaining, reset) = LIMITS[server.answers.fetch_add(1, Ordering::SeqCst) % LIMITS.len()];
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from_static("20"));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from_static(reset));
    response
}

async fn guilds() -> Response {
    axum::Json(json!([{ "id": "1", "name": "hostile" }])).into_response()
}

async fn channels() -> Response {
    let channels: Vec<Value> = CHANNELS
        .iter()
        .map(|(id, name)| json!({ "id": id, "type": 0, "name": name, "guild_id": "1" }))
        .collect();
    axum::Json(channels).into_response()
}

/// One direct-message channel, named after people whose names no directory can have.
async fn dms() -> Response {
    let people = [
        json!({ "username": "a/b" }),
        json!({ "username": "..", "global_name": null }),
    ];
    axum::Json(json!([{ "id": "30", "type": 1, "recipients": people }])).into_response()
}

fn refusal(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn list(
    State(server): State<Server>,
    UrlPath(channel): UrlPath<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    match channel.as_str() {
        "14" => return axum::Json(server.repeating_page()).into_response(),
        "15" if server.storm.load(Ordering::SeqCst) > 0 => {
            server.storm.fetch_sub(1, Ordering::SeqCst);
            let body = json!({
                "code": "RATE_LIMITED", "message": "slow down", "global": true,
                "retry_after": "NaN",
            });
            let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, body);
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1e400"));
            headers.insert("x-ratelimit-global", HeaderValue::from_static("true"));
            return response;
        }
        "16" => return (StatusCode::BAD_REQUEST, html()).into_response(),
        "17" => {
            let body = json!({ "code": 10003, "message": ["Unknown Channel"] });
            return refusal(StatusCode::NOT_FOUND, body);
        }
        "18" => {
            return refusal(
                StatusCode::FORBIDDEN,
                json!({ "message": "Missing Access" }),
            );
        }
        "19" => {
            let message = format!("Missing Access\n{INJECTED} sessionfs: all is well");
            let body = json!({ "code": "MISSING_ACCESS", "message": message });
            return refusal(StatusCode::FORBIDDEN, body);
        }
        _ => {}
    }
    let before = query_number(&query, "before");
    let limit = query_number(&query, "limit").unwrap_or(50) as usize;
    let page: Vec<Value> = server
        .messages(&channel)
        .into_iter()
        .filter(|m| {
            let id: u64 = m["id"].as_str().unwrap().parse().unwrap();
            before.is_none_or(|before| id < before)
        })
        .take(limit)
        .collect();
    if channel == "13" && server.listed_urls_expire.load(Ordering::SeqCst) {
        server.expiry.expire_all();
    }
    axum::Json(page).into_response()
}

/// `GET /channels/{channel}/messages/{message}`: the message, with fresh download URLs.
async fn one_message(
    State(server): State<Server>,
    UrlPath((channel, id)): UrlPath<(String, String)>,
) -> Response {
    match server
        .messages(&channel)
        .into_iter()
        .find(|m| m["id"] == id)
    {
        Some(message) => axum::Json(message).into_response(),
        None => refusal(
            StatusCode::NOT_FOUND,
            json!({ "code": "UNKNOWN_MESSAGE", "message": "Unknown Message" }),
        ),
    }
}

async fn cdn(
    State(server): State<Server>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if id != "expiring" {
        return ranged(CONTENT, &headers);
    }
    if !server.expiry.allows(&query) {
        return expired();
    }
    ranged(&server.expiring, &headers)
}

fn router(server: Server) -> Router {
    Router::new()
        .route("/v1/users/@me/guilds", get(guilds))
        .route("/v1/users/@me/channels", get(dms))
        .route("/v1/guilds/{id}/channels", get(channels))
        .route("/v1/channels/{id}/messages", get(list))
        .route("/v1/channels/{id}/messages/{message}", get(one_message))
        .route("/_cdn/{id}", get(cdn))
        .layer(axum::middleware::map_response_with_state(
            server.clone(),
            limits,
        ))
        .with_state(server)
}

#[test]
fn hostile_fluxer_answers_get_clear_errors_and_never_hang() {
    let runtime = runtime();
    let expiring = Arc::new(pseudo_random(EXPIRING_BYTES, 17));
    let expiry = Expiry::default();
    let storm = Arc::new(AtomicUsize::new(0));
    let repeated_pages = Arc::new(AtomicUsize::new(0));
    let listed_urls_expire = Arc::new(AtomicBool::new(false));
    let endpoint = serve(&runtime, |endpoint| {
        router(Server {
            endpoint: endpoint.to_string(),
            expiring: expiring.clone(),
            expiry: expiry.clone(),
            answers: Arc::default(),
            storm: storm.clone(),
            listed_urls_expire: listed_urls_expire.clone(),
            repeated: repeated_pages.clone(),
        })
    });
    let mount = BinaryMount::start("fluxer", &endpoint, &["--token", "hostile-token"], &[]);
    let m = |rest: &str| mount.at(&format!("hostile/{rest}"));

    // Rate-limit headers no clock can hold on every answer: the mount lists and reads as if
    // they were absent. Names no local file can have show under substitutes.
    works(&format!("ls -a {}", mount.at("")));
    check_names(mount.dir());
    check_names(&mount.dir().join("hostile"));
    check_names(&mount.dir().join("@me"));
    for _ in 0..3 {
        works(&format!("ls -a {}", m("names")));
    }
    // A filename with a slash is a path, as the names this client posts are.
    let names = mount.dir().join("hostile/names");
    check_names(&names);
    check_names(&names.join("a"));
    let files = names_in(&names)
        .into_iter()
        .flat_map(|name| match names.join(&name).is_dir() {
            true => names_in(&names.join(&name))
                .into_iter()
                .map(|inner| format!("{name}/{inner}"))
                .collect(),
            false => vec![name],
        });
    for name in files {
        assert_eq!(
            works(&format!("cat {}", m(&format!("names/{name}")))).stdout,
            CONTENT,
            "{name:?}"
        );
    }

    // Attachments with fields of the wrong type or missing: the others in the channel are
    // listed and read; one without a usable URL is ENOENT (as an expired one).
    let fields = names_in(&mount.dir().join("hostile/fields"));
    assert_eq!(
        fields,
        ["bad-expiry.txt", "bad-type.txt", "bad-url.txt", "ok.txt"]
    );
    for name in ["ok.txt", "bad-expiry.txt", "bad-type.txt"] {
        assert_eq!(
            works(&format!("cat {}", m(&format!("fields/{name}")))).stdout,
            CONTENT
        );
    }
    fails_with(
        &format!("cat {}", m("fields/bad-url.txt")),
        "No such file or directory",
    );

    // The download URLs a listing hands out have expired when read (403): a fresh one comes
    // with the message, fetched alone.
    listed_urls_expire.store(true, Ordering::SeqCst);
    expiry.check_read_after_expiry(&m("expiring/expiring.bin"), &expiring);

    // Cursor pages that come round again: the listing stops at once with EIO, after the
    // pages that brought something new and the first that did not (not 100 000 of them).
    fails_with_eio(&format!("ls {}", m("repeat")));
    let repeated = mount.log();
    let pages = repeated_pages.load(Ordering::SeqCst);
    assert!(pages <= 4, "{pages} pages asked for");

    // Global 429s with Retry-After `1e400` and a reset no clock holds: the listing waits a
    // moment, not for ever (`works` gives up after its watchdog, long before the 300 s a
    // clamped hold would take).
    storm.store(2, Ordering::SeqCst);
    assert_eq!(works(&format!("ls {}", m("storm"))).stdout, b"ok.txt\n");
    assert_eq!(storm.load(Ordering::SeqCst), 0, "the storm was met");

    // Error envelopes that are not `{code, message}`: the errno their status means.
    fails_with(&format!("ls {}", m("env-html")), "Invalid argument");
    fails_with(
        &format!("ls {}", m("env-types")),
        "No such file or directory",
    );
    fails_with(&format!("ls {}", m("env-nocode")), "Permission denied");
    fails_with(&format!("ls {}", m("env-inject")), "Permission denied");

    // The mount is alive and answers as before.
    assert_eq!(works(&format!("cat {}", m("names/ok.txt"))).stdout, CONTENT);
    let log = mount.unmount();
    check_substitutes_logged_once(&log, &["a/b, .."]);
    check_no_injected_lines(&log, INJECTED);
    assert!(repeated.contains("did not advance"), "{repeated}");
    for id in [1201, 1202, 1203, 1204, 1205, 1209] {
        let line = format!("message {id} has an attachment");
        assert_eq!(log.matches(&line).count(), 1, "{line} logged once:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}
