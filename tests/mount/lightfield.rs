//! The Lightfield backend through a real mount: a flat root of COMPLETED files, paged
//! listings, duplicate names, no delete, the 512 MiB limit and the API key.

use std::os::unix::fs::FileExt;
use std::process::Command;

use futures::StreamExt;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;

use crate::harness::{TestMount, errno, pseudo_random, q, sh, sh_output};

const KEY: &str = "sk_lf_mount_tests";
const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");
/// Uploads in flight when a test seeds many files through the API.
const SEED_CONCURRENCY: usize = 8;

/// A mount of a Lightfield emulator that accepts only [`KEY`], connected with `client_key`.
fn mount_with_key(client_key: &str) -> TestMount {
    TestMount::backend(
        Backend::Lightfield,
        |dir| {
            let mut config = EmulatorConfig::new(dir);
            config.token = Some(KEY.to_owned());
            config
        },
        Some(client_key),
        |_| {},
    )
}

fn mount() -> TestMount {
    mount_with_key(KEY)
}

/// Another client speaking the Lightfield API to the mount's emulator.
struct Api<'a> {
    mount: &'a TestMount,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    fn new(mount: &'a TestMount) -> Self {
        Self {
            mount,
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.mount.endpoint()))
            .bearer_auth(KEY)
            .header("Lightfield-Version", "2026-03-01")
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    /// Creates, uploads and completes `name` with `data`; returns its id.
    async fn upload(&self, name: &str, data: &[u8]) -> String {
        let created = self
            .json(
                reqwest::Method::POST,
                "/v1/files",
                Some(json!({"filename": name, "mimeType": "text/plain", "sizeBytes": data.len()})),
            )
            .await;
        let response = self
            .http
            .put(created["uploadUrl"].as_str().unwrap())
            .header("content-type", "text/plain")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let id = created["id"].as_str().unwrap().to_owned();
        let md5: String = Md5::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.json(
            reqwest::Method::POST,
            &format!("/v1/files/{id}/complete"),
            Some(json!({ "md5": md5 })),
        )
        .await;
        id
    }

    fn upload_one(&self, name: &str, data: &[u8]) -> String {
        self.mount.runtime.block_on(self.upload(name, data))
    }

    /// Uploads `count` small files named `prefix<i>.txt`, a few at a time.
    fn upload_many(&self, prefix: &str, count: usize) {
        self.mount.runtime.block_on(async {
            futures::stream::iter(0..count)
                .map(|i| async move {
                    self.upload(&format!("{prefix}{i}.txt"), format!("{i}\n").as_bytes())
                        .await
                })
                .buffer_unordered(SEED_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
        });
    }

    /// Every file (all statuses) as the API lists it, newest first.
    fn files(&self) -> Vec<Value> {
        self.mount.runtime.block_on(async {
            let mut all = Vec::new();
            loop {
                let path = format!("/v1/files?limit=25&offset={}", all.len());
                let page = self.json(reqwest::Method::GET, &path, None).await;
                let rows = page["data"].as_array().unwrap().clone();
                let done = rows.len() < 25;
                all.extend(rows);
                if done {
                    return all;
                }
            }
        })
    }

    /// The bytes of file `id`, through a download URL.
    fn download(&self, id: &str) -> Vec<u8> {
        self.mount.runtime.block_on(async {
            let url = self
                .json(reqwest::Method::GET, &format!("/v1/files/{id}/url"), None)
                .await;
            let response = self
                .http
                .get(url["url"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            response.bytes().await.unwrap().to_vec()
        })
    }
}

/// The short id a duplicate name carries: the last 8 characters of the id.
fn tail(id: &str) -> &str {
    &id[id.len() - 8..]
}

fn ls(mount: &TestMount) -> Vec<String> {
    let mut names: Vec<String> = sh(&format!("ls -A {}", q(mount.path())))
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn cp_of_a_multi_mib_file_in_and_out_is_byte_identical() {
    let mount = mount();
    let api = Api::new(&mount);
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source.bin");
    let data = pseudo_random(9 << 20, 11);
    std::fs::write(&source, &data).unwrap();

    sh(&format!("cp {} {}", q(&source), q(&mount.join("big.bin"))));
    assert_eq!(
        std::fs::metadata(mount.join("big.bin")).unwrap().len(),
        9 << 20
    );
    let back = local.path().join("back.bin");
    sh(&format!("cp {} {}", q(&mount.join("big.bin")), q(&back)));
    sh(&format!("cmp {} {}", q(&source), q(&back)));

    let files = api.files();
    assert_eq!(
        files.len(),
        1,
        "one session, completed, nothing left PENDING"
    );
    assert_eq!(files[0]["status"], "COMPLETED");
    assert_eq!(files[0]["filename"], "big.bin");
    assert_eq!(files[0]["mimeType"], "application/octet-stream");
    let id = files[0]["id"].as_str().unwrap();
    assert!(api.download(id) == data, "the server holds the same bytes");
}

#[test]
fn listings_page_past_25_and_past_1000_files() {
    let mount = mount();
    let api = Api::new(&mount);
    api.upload_many("a", 30);
    assert_eq!(sh(&format!("ls {} | wc -l", q(mount.path()))).trim(), "30");
    api.upload_many("b", 1_000);
    assert_eq!(
        sh(&format!("ls {} | wc -l", q(mount.path()))).trim(),
        "1030"
    );
    assert_eq!(
        std::fs::read_to_string(mount.join("b999.txt")).unwrap(),
        "999\n"
    );
}

#[test]
fn only_completed_files_are_shown() {
    let mount = mount();
    let api = Api::new(&mount);
    api.upload_one("done.txt", b"done");
    mount.runtime.block_on(api.json(
        reqwest::Method::POST,
        "/v1/files",
        Some(json!({"filename": "pending.txt", "mimeType": "text/plain", "sizeBytes": 3})),
    ));
    assert_eq!(ls(&mount), ["done.txt"]);
}

#[test]
fn duplicate_names_keep_the_newest_plain_and_are_stable() {
    let mount = mount();
    let api = Api::new(&mount);
    let old = api.upload_one("r.txt", b"old");
    let new = api.upload_one("r.txt", b"newer");
    let expected = vec!["r.txt".to_owned(), format!("r~{}.txt", tail(&old))];
    assert_eq!(ls(&mount), expected);
    assert_eq!(ls(&mount), expected, "the same names on the next listing");
    assert_eq!(std::fs::read(mount.join("r.txt")).unwrap(), b"newer");
    assert_eq!(std::fs::read(mount.join(&expected[1])).unwrap(), b"old");
    assert_ne!(old, new);
}

#[test]
fn rm_is_refused_and_the_file_stays() {
    let mount = mount();
    std::fs::write(mount.join("keep.txt"), b"stays").unwrap();
    assert_eq!(
        errno(std::fs::remove_file(mount.join("keep.txt"))),
        libc::EPERM
    );
    let rm = sh_output(&format!("rm {}", q(&mount.join("keep.txt"))));
    assert!(!rm.status.success());
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("Operation not permitted"),
        "{rm:?}"
    );
    assert_eq!(ls(&mount), ["keep.txt"]);
    assert_eq!(std::fs::read(mount.join("keep.txt")).unwrap(), b"stays");
    assert_eq!(Api::new(&mount).files().len(), 1);
}

#[test]
fn writing_over_a_file_uploads_a_new_version() {
    let mount = mount();
    let api = Api::new(&mount);
    std::fs::write(mount.join("f.txt"), b"first version").unwrap();
    let first = api.files()[0]["id"].as_str().unwrap().to_owned();
    std::fs::write(mount.join("f.txt"), b"second").unwrap();
    assert_eq!(
        ls(&mount),
        ["f.txt".to_owned(), format!("f~{}.txt", tail(&first))]
    );
    assert_eq!(std::fs::read(mount.join("f.txt")).unwrap(), b"second");
    assert_eq!(
        std::fs::read(mount.join(&format!("f~{}.txt", tail(&first)))).unwrap(),
        b"first version"
    );
    let files = api.files();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f["status"] == "COMPLETED"));
}

#[test]
fn a_write_past_512_mib_is_efbig() {
    let mount = mount();
    let file = std::fs::File::create(mount.join("huge.bin")).unwrap();
    file.write_at(b"ok", 0).unwrap();
    assert_eq!(errno(file.write_at(b"x", 512 << 20)), libc::EFBIG);
    drop(file);
    assert_eq!(std::fs::read(mount.join("huge.bin")).unwrap(), b"ok");
}

#[test]
fn a_wrong_key_gives_eacces_with_a_clear_message() {
    let mount = mount_with_key("sk_lf_wrong");
    let listing = sh_output(&format!("ls {}", q(mount.path())));
    assert!(!listing.status.success());
    assert!(
        String::from_utf8_lossy(&listing.stderr).contains("Permission denied"),
        "{listing:?}"
    );
    assert_eq!(
        errno(std::fs::write(mount.join("x.txt"), b"x")),
        libc::EACCES
    );
}

#[test]
fn mount_refuses_a_wrong_key_before_mounting() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(data.path());
    config.token = Some(KEY.to_owned());
    let server = runtime
        .block_on(Backend::Lightfield.spawn_emulator(config))
        .unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let run = |token: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(["mount", "--backend", "lightfield", "--endpoint"])
            .arg(server.endpoint())
            .arg(mnt.path())
            .env_remove("SESSIONFS_TOKEN")
            .env("RUST_LOG", "debug");
        if let Some(token) = token {
            command.env("SESSIONFS_TOKEN", token);
        }
        command.output().unwrap()
    };
    for (token, needle) in [(Some("sk_lf_wrong"), "API key"), (None, "--token")] {
        let output = run(token);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{stderr}");
        assert!(
            !stderr.contains("sk_lf_wrong"),
            "the key is never printed: {stderr}"
        );
    }
    assert!(sh(&format!("ls -A {}", q(mnt.path()))).is_empty());
}

#[test]
fn empty_files_stay_local_until_they_have_content() {
    let mount = mount();
    sh(&format!("touch {}", q(&mount.join("later.txt"))));
    assert_eq!(std::fs::metadata(mount.join("later.txt")).unwrap().len(), 0);
    assert!(Api::new(&mount).files().is_empty(), "nothing stored yet");
    // `echo > file` flushes while the file is still empty, then writes and closes.
    sh(&format!("echo content > {}", q(&mount.join("later.txt"))));
    let files = Api::new(&mount).files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["filename"], "later.txt");
    assert_eq!(
        std::fs::read(mount.join("later.txt")).unwrap(),
        b"content\n"
    );
}

#[test]
fn renaming_a_stored_file_is_refused_before_anything_is_copied() {
    let mount = mount();
    std::fs::write(mount.join("a.txt"), b"stored").unwrap();
    let renamed = std::fs::rename(mount.join("a.txt"), mount.join("b.txt"));
    assert_eq!(errno(renamed), libc::EPERM);
    assert_eq!(ls(&mount), ["a.txt"]);
    assert_eq!(Api::new(&mount).files().len(), 1, "no copy was uploaded");
}
