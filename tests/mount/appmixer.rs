//! The Appmixer backend through a real mount: chunked uploads (in order, or several chunks in
//! flight), a session token that expires mid-copy, a wrong password, two users kept apart and
//! a listing of 10 000 files.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::emulator::appmixer::Login;
use sessionfs::remote::http::RetryConfig;
use sessionfs::remote::{ErrorKind, Remote, RemoteConfig, UploadSource};

use crate::harness::{TestMount, pseudo_random, q, sh, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");
/// The client's default chunk size.
const CHUNK_BYTES: usize = 8 << 20;
/// Uploads in flight when a test seeds many files through the API.
const SEED_CONCURRENCY: usize = 16;
/// How long a test waits for a session token to expire (its TTL is one second).
const EXPIRY_DEADLINE: Duration = Duration::from_secs(10);

fn alice() -> Login {
    Login {
        email: "alice@example.com".into(),
        password: "alice-password".into(),
    }
}

/// A mount of a fresh Appmixer emulator whose client config `client` adjusts.
fn mount_with(
    emulator: impl FnOnce(&mut EmulatorConfig),
    client: impl FnOnce(&mut RemoteConfig),
) -> TestMount {
    TestMount::embedded_client(Backend::Appmixer, emulator, client, |config| {
        config.metadata_ttl = Duration::from_secs(60);
    })
}

/// A client of the mount's emulator signed in as `login` (or holding `token`).
fn client(mount: &TestMount, login: Option<&Login>, token: Option<&str>) -> Arc<dyn Remote> {
    let mut config = RemoteConfig::new(mount.endpoint(), token.map(str::to_owned));
    config.user = login.map(|l| l.email.clone());
    config.password = login.map(|l| l.password.clone());
    config.retry = RetryConfig {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryConfig::default()
    };
    Backend::Appmixer.connect(&config).unwrap()
}

/// Calls the emulator's API directly; answers status and JSON body.
fn api(
    mount: &TestMount,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    mount.runtime.block_on(async {
        let mut request =
            reqwest::Client::new().request(method, format!("{}{path}", mount.endpoint()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// A fresh token for `login`, straight from `POST /user/auth`.
fn sign_in(mount: &TestMount, login: &Login) -> String {
    let body = json!({"email": login.email, "password": login.password});
    let (status, answer) = api(mount, reqwest::Method::POST, "/user/auth", Some(body));
    assert_eq!(status, 200, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

/// Whether the server now refuses `token` as expired.
fn expired(mount: &TestMount, token: &str) -> bool {
    mount.runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{}/user", mount.endpoint()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        response.status() == 401
    })
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies `data` in as `name` and back out, comparing with `cmp`.
fn copy_in_and_out(mount: &TestMount, name: &str, data: &[u8]) {
    let local = tempfile::tempdir().unwrap();
    let (source, back) = (local.path().join("in"), local.path().join("out"));
    std::fs::write(&source, data).unwrap();
    sh(&format!("cp {} {}", q(&source), q(&mount.join(name))));
    sh(&format!("cp {} {}", q(&mount.join(name)), q(&back)));
    sh(&format!("cmp {} {}", q(&source), q(&back)));
}

/// Copies 100 MiB in and out and checks the chunks the emulator received: 13 of 8 MiB, at
/// most `in_flight` at once, and exactly that many at some point.
fn copies_100_mib_in_13_chunks(upload_parallel: Option<usize>, in_flight: u64) {
    let mount = mount_with(|_| {}, |client| client.upload_parallel = upload_parallel);
    let data = pseudo_random(100 << 20, 13);
    api(&mount, reqwest::Method::DELETE, "/_emulator/stats", None);
    copy_in_and_out(&mount, "big.bin", &data);
    let (_, stats) = api(&mount, reqwest::Method::GET, "/_emulator/stats", None);
    assert_eq!(
        stats["chunkUploads"],
        data.len().div_ceil(CHUNK_BYTES) as u64,
        "{stats}"
    );
    assert_eq!(stats["chunkUploads"], 13);
    assert_eq!(stats["chunkUploadsInFlightMax"], in_flight, "{stats}");

    let files = mount.runtime.block_on(mount.other.list(None)).unwrap();
    assert_eq!(files.len(), 1, "one complete file: {files:?}");
    assert_eq!(
        (files[0].name.as_str(), files[0].size),
        ("big.bin", 100 << 20)
    );
    assert_eq!(files[0].md5.as_deref(), Some(md5_hex(&data).as_str()));
}

#[test]
fn a_100_mib_file_goes_up_one_chunk_at_a_time_by_default() {
    copies_100_mib_in_13_chunks(None, 1);
}

#[test]
fn a_100_mib_file_goes_up_four_chunks_at_a_time_with_upload_parallel_4() {
    copies_100_mib_in_13_chunks(Some(4), 4);
}

#[test]
fn copies_go_on_after_the_session_token_expires() {
    let mount = mount_with(
        |emulator| {
            emulator.token_ttl = Duration::from_secs(1);
            emulator.users.push(alice());
        },
        |client| {
            // Small chunks: many requests, so the copy itself may outlive a token.
            client.part_size = Some(1 << 20);
            client.user = Some(alice().email);
            client.password = Some(alice().password);
        },
    );
    let login = &alice();
    let first = pseudo_random(24 << 20, 5);
    copy_in_and_out(&mount, "first.bin", &first);
    // Every token the mount holds is older than this one; once it expires, so have they.
    let probe = sign_in(&mount, login);
    wait_until(EXPIRY_DEADLINE, "the probe token to expire", || {
        expired(&mount, &probe)
    });
    let local = tempfile::tempdir().unwrap();
    let back = local.path().join("back");
    sh(&format!("cp {} {}", q(&mount.join("first.bin")), q(&back)));
    assert!(
        std::fs::read(&back).unwrap() == first,
        "read back after expiry"
    );
    let second = pseudo_random(12 << 20, 6);
    copy_in_and_out(&mount, "second.bin", &second);
    let names: Vec<String> = mount
        .runtime
        .block_on(mount.other.list(None))
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["first.bin", "second.bin"]);
}

#[test]
fn a_refused_token_is_replaced_by_signing_in_again() {
    let mount = mount_with(|emulator| emulator.users.push(alice()), |_| {});
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"id": "0", "scope": ["user"], "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not the server's secret"),
    )
    .unwrap();
    // With a password, the 401 leads to a sign-in and the call succeeds.
    let with_password = client(&mount, Some(&alice()), Some(&forged));
    mount.runtime.block_on(with_password.list(None)).unwrap();
    // Without one, the 401 is the answer, with what to do about it.
    let token_only = client(&mount, None, Some(&forged));
    let err = mount.runtime.block_on(token_only.list(None)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert!(err.message.contains("Invalid token"), "{}", err.message);
    assert!(err.message.contains("--password-file"), "{}", err.message);
    assert!(!err.message.contains(&forged), "the token is never shown");
}

#[test]
fn a_wrong_password_mounts_nothing_and_says_what_to_fix() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(data.path());
    config.users = vec![alice()];
    let server = runtime
        .block_on(Backend::Appmixer.spawn_emulator(config))
        .unwrap();

    let mut wrong = RemoteConfig::new(server.endpoint(), None);
    wrong.user = Some(alice().email);
    wrong.password = Some("wrong-password".into());
    let remote = Backend::Appmixer.connect(&wrong).unwrap();
    let err = runtime.block_on(remote.list_containers()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{}", err.message);

    let mnt = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "mount",
            "--backend",
            "appmixer",
            "--user",
            "alice@example.com",
        ])
        .arg("--endpoint")
        .arg(server.endpoint())
        .arg(mnt.path())
        .env_remove("SESSIONFS_TOKEN")
        .env("SESSIONFS_PASSWORD", "wrong-password")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "Invalid username or password",
        "--password-file",
        "nothing was mounted",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    assert!(
        !stderr.contains("wrong-password"),
        "the password is never printed: {stderr}"
    );
    assert!(sh(&format!("ls -A {}", q(mnt.path()))).is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&mnt.path().display().to_string()),
        "{mounts}"
    );
    runtime.block_on(server.shutdown());
}

#[test]
fn two_users_never_see_each_others_files() {
    let mount = mount_with(|emulator| emulator.users.push(alice()), |_| {});
    let alice_client = client(&mount, Some(&alice()), None);
    let staging = tempfile::tempdir().unwrap();
    let path = staging.path().join("secret");
    std::fs::write(&path, b"alice only").unwrap();
    let secret = mount
        .runtime
        .block_on(alice_client.upload(None, "secret.txt", &UploadSource::new(&path, 10)))
        .unwrap();

    std::fs::write(mount.join("mine.txt"), b"the mount's user").unwrap();
    assert_eq!(sh(&format!("ls -A {}", q(mount.path()))), "mine.txt\n");

    let alice_sees = mount.runtime.block_on(alice_client.list(None)).unwrap();
    assert_eq!(alice_sees.len(), 1);
    assert_eq!(alice_sees[0].id, secret.id);
    let mine = mount.runtime.block_on(mount.other.list(None)).unwrap();
    assert_eq!(mine.len(), 1);
    // Alice cannot read or delete the mount's file by its id, nor the mount hers.
    let read = mount
        .runtime
        .block_on(alice_client.read(None, &mine[0], 0..4));
    assert_eq!(read.unwrap_err().kind, ErrorKind::NotFound);
    let delete = mount.runtime.block_on(alice_client.delete(None, &mine[0]));
    assert_eq!(delete.unwrap_err().kind, ErrorKind::NotFound);
    let read = mount
        .runtime
        .block_on(mount.other.read(None, &secret, 0..4));
    assert_eq!(read.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(
        std::fs::read(mount.join("mine.txt")).unwrap(),
        b"the mount's user"
    );
}

#[test]
fn ten_thousand_files_list_with_ls_and_find() {
    const COUNT: usize = 10_000;
    let mount = mount_with(|_| {}, |_| {});
    let staging = tempfile::tempdir().unwrap();
    let sources: Vec<(String, UploadSource)> = (0..COUNT)
        .map(|i| {
            let path = staging.path().join(i.to_string());
            let body = format!("{i}\n");
            std::fs::write(&path, &body).unwrap();
            (
                format!("f{i:05}.txt"),
                UploadSource::new(path, body.len() as u64),
            )
        })
        .collect();
    mount.runtime.block_on(async {
        let uploads = futures::stream::iter(&sources)
            .map(|(name, source)| mount.other.upload(None, name, source))
            .buffer_unordered(SEED_CONCURRENCY);
        for result in uploads.collect::<Vec<_>>().await {
            result.unwrap();
        }
    });
    let long = sh(&format!("ls -l {}", q(mount.path())));
    let rows: Vec<&str> = long.lines().filter(|l| l.starts_with('-')).collect();
    assert_eq!(rows.len(), COUNT);
    assert!(
        rows.iter().any(|row| row.ends_with(" f09999.txt")),
        "the last file is listed"
    );
    let found = sh(&format!("find {} -type f | wc -l", q(mount.path())));
    assert_eq!(found.trim(), COUNT.to_string());
    assert_eq!(
        std::fs::read_to_string(mount.join("f04321.txt")).unwrap(),
        "4321\n"
    );
}
