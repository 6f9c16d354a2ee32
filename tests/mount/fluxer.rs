//! The Fluxer backend through a real mount: guilds and channels as directories, large files in
//! parallel chunks or presigned parts, the server's size limit, the rate limits, attachments
//! posted by someone else, the token, and names the server normalises.

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::emulator::fluxer::UploadFlows;

use crate::harness::{TestMount, errno, pseudo_random, q, sh, sh_output, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");
const TOKEN: &str = "flx_mount_tests";
const GUEST: &str = "flx_guest_of_the_mount_tests";
const MIB: usize = 1024 * 1024;
/// The guild and channel the tests work in (the emulator's seed).
const GUILD: &str = "sessionfs";
const CHANNEL: &str = "general";
/// How long a change by another client may take to show through a short-TTL mount.
const SEEN_DEADLINE: Duration = Duration::from_secs(10);

/// A mount of a Fluxer emulator whose session token is [`TOKEN`] (the guest's is [`GUEST`]),
/// connected with `client_token`; `emulator` and `tweak` adjust the two configs.
fn mount_with(
    client_token: &str,
    emulator: impl FnOnce(&mut EmulatorConfig),
    tweak: impl FnOnce(&mut sessionfs::fs::FsConfig),
) -> TestMount {
    TestMount::backend(
        Backend::Fluxer,
        |dir| {
            let mut config = EmulatorConfig::new(dir);
            config.token = Some(TOKEN.to_owned());
            config.fluxer.guest_token = Some(GUEST.to_owned());
            emulator(&mut config);
            config
        },
        Some(client_token),
        tweak,
    )
}

/// A mount whose listings stay fresh for a minute (nothing else changes the server).
fn mount(emulator: impl FnOnce(&mut EmulatorConfig)) -> TestMount {
    mount_with(TOKEN, emulator, |c| {
        c.metadata_ttl = Duration::from_secs(60)
    })
}

fn channel_dir(mount: &TestMount) -> PathBuf {
    mount.join(GUILD).join(CHANNEL)
}

/// `GET /_emulator/stats`.
fn stats(mount: &TestMount) -> Value {
    api(mount, reqwest::Method::GET, "/_emulator/stats", None, None)
}

/// One call to the emulator (as `token`, when given); the answer must be a success.
fn api(
    mount: &TestMount,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    form: Option<reqwest::multipart::Form>,
) -> Value {
    let url = format!("{}{path}", mount.endpoint());
    mount.runtime.block_on(async {
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        if let Some(form) = form {
            request = request.multipart(form);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    })
}

/// The id of the seeded channel [`CHANNEL`].
fn channel_id(mount: &TestMount) -> String {
    let guilds = api(
        mount,
        reqwest::Method::GET,
        "/v1/users/@me/guilds",
        Some(TOKEN),
        None,
    );
    let guild = guilds[0]["id"].as_str().unwrap().to_owned();
    let channels = api(
        mount,
        reqwest::Method::GET,
        &format!("/v1/guilds/{guild}/channels"),
        Some(TOKEN),
        None,
    );
    let channel = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CHANNEL)
        .unwrap();
    channel["id"].as_str().unwrap().to_owned()
}

/// The messages of [`CHANNEL`], newest first.
fn messages(mount: &TestMount) -> Vec<Value> {
    let path = format!("/v1/channels/{}/messages?limit=100", channel_id(mount));
    let listed = api(mount, reqwest::Method::GET, &path, Some(TOKEN), None);
    listed.as_array().unwrap().clone()
}

/// Copies `data` into the channel as `name` and back out, comparing with `cmp`.
fn copy_in_and_out(mount: &TestMount, name: &str, data: &[u8]) {
    let local = tempfile::tempdir().unwrap();
    let (source, back) = (local.path().join("in"), local.path().join("out"));
    std::fs::write(&source, data).unwrap();
    let inside = channel_dir(mount).join(name);
    sh(&format!("cp {} {}", q(&source), q(&inside)));
    sh(&format!("cp {} {}", q(&inside), q(&back)));
    sh(&format!("cmp {} {}", q(&source), q(&back)));
}

/// 100 MiB in and out through `flows`, in `parts` parts or chunks sent in parallel (the
/// default `--upload-parallel` of 20 lets all of them go; the pacer spaces chunked ones), as
/// the emulator counts them. The limit itself is tested on the in-memory remote (`multipart`).
fn hundred_mib_through(flows: UploadFlows, parts: u64) {
    let mount = mount(|c| {
        c.fluxer.uploads = flows;
        c.fluxer.max_attachment_bytes = Some(200 * MIB as u64);
    });
    let data = pseudo_random(100 * MIB, 11);
    copy_in_and_out(&mount, "big.bin", &data);
    let stats = stats(&mount);
    let most = stats["max_chunks_in_flight"].as_u64().unwrap();
    assert!((2..=parts).contains(&most), "{stats}");
    assert_eq!(stats["chunks_in_flight"], 0, "{stats}");
    assert_eq!(stats["messages"], 1, "{stats}");
    assert_eq!(stats["rate_limited_responses"], 0, "{stats}");
    let message = &messages(&mount)[0];
    assert_eq!(message["attachments"][0]["size"], 100 * MIB);
}

#[test]
fn a_100_mib_file_goes_in_and_out_in_ten_presigned_parts_in_parallel() {
    hundred_mib_through(UploadFlows::default(), 10);
}

#[test]
fn a_100_mib_file_goes_in_and_out_through_presigned_parts_only() {
    hundred_mib_through(
        UploadFlows {
            chunked: false,
            presigned: true,
        },
        10,
    );
}

#[test]
fn a_100_mib_file_goes_in_and_out_in_13_chunks_through_the_chunked_flow_only() {
    hundred_mib_through(
        UploadFlows {
            chunked: true,
            presigned: false,
        },
        13,
    );
}

/// Writes `len` bytes to `path` and returns the errno of the close (0 when it succeeds).
fn write_and_close(path: &Path, len: usize) -> i32 {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&pseudo_random(len, 3)).unwrap();
    let fd = file.into_raw_fd();
    // SAFETY: `fd` is ours, open, and closed exactly once here.
    match unsafe { libc::close(fd) } {
        0 => 0,
        _ => std::io::Error::last_os_error().raw_os_error().unwrap(),
    }
}

#[test]
fn a_file_over_the_server_limit_is_efbig_at_close_and_leaves_no_message() {
    for flows in [
        UploadFlows::default(),
        UploadFlows {
            chunked: true,
            presigned: false,
        },
    ] {
        let mount = mount(|c| {
            c.fluxer.uploads = flows;
            c.fluxer.max_attachment_bytes = Some(25 * MIB as u64);
        });
        let path = channel_dir(&mount).join("too big.bin");
        assert_eq!(write_and_close(&path, 26 * MIB), libc::EFBIG, "{flows:?}");
        // The refused content is checked, not the message count: a process this test binary
        // forks in another thread may inherit the open file for a moment and close it at
        // exec, which the kernel turns into a flush, so an earlier, shorter version (empty or
        // partly written) can be committed first.
        assert!(
            !attachment_sizes(&mount).contains(&(26 * MIB as u64)),
            "{flows:?}: the refused upload was not posted"
        );
        // A file under the limit still goes.
        assert_eq!(write_and_close(&channel_dir(&mount).join("ok.bin"), MIB), 0);
        assert!(attachment_sizes(&mount).contains(&(MIB as u64)));
    }
}

/// The size of every attachment in [`CHANNEL`].
fn attachment_sizes(mount: &TestMount) -> Vec<u64> {
    messages(mount)
        .iter()
        .flat_map(|message| {
            message["attachments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|attachment| attachment["size"].as_u64().unwrap())
        .collect()
}

#[test]
fn sixty_small_files_with_rate_limits_on_meet_no_limit() {
    let mount = mount(|c| c.fluxer.rate_limits = true);
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..60 {
        std::fs::write(tree.join(format!("f{i:02}.txt")), format!("file {i}\n")).unwrap();
    }
    let inside = channel_dir(&mount).join("tree");
    sh(&format!("cp -r {} {}", q(&tree), q(&inside)));
    let listed = sh(&format!("ls {} | wc -l", q(&inside)));
    assert_eq!(listed.trim(), "60");
    sh(&format!("diff -r {} {}", q(&tree), q(&inside)));
    let stats = stats(&mount);
    assert_eq!(stats["global_limit_violations"], 0, "{stats}");
    assert_eq!(stats["rate_limited_responses"], 0, "{stats}");
    // 60 files and the directory's marker.
    assert_eq!(stats["messages"], 61, "{stats}");
}

#[test]
fn an_attachment_posted_by_another_client_shows_up_after_the_ttl() {
    let mount = mount_with(
        TOKEN,
        |_| {},
        |c| c.metadata_ttl = Duration::from_millis(300),
    );
    let dir = channel_dir(&mount);
    assert_eq!(sh(&format!("ls -A {}", q(&dir))), "");
    // The guest posts one message with two files, as a Fluxer app would.
    let form = reqwest::multipart::Form::new()
        .text("payload_json", r#"{"content":"two reports"}"#)
        .part(
            "files[0]",
            reqwest::multipart::Part::bytes(b"first report".to_vec()).file_name("report (1).txt"),
        )
        .part(
            "files[1]",
            reqwest::multipart::Part::bytes(b"second".to_vec()).file_name("notes.md"),
        );
    let path = format!("/v1/channels/{}/messages", channel_id(&mount));
    api(
        &mount,
        reqwest::Method::POST,
        &path,
        Some(GUEST),
        Some(form),
    );
    // Under their normalised filenames.
    let first = dir.join("report_1.txt");
    wait_until(SEEN_DEADLINE, "the guest's attachment", || first.exists());
    assert_eq!(std::fs::read(&first).unwrap(), b"first report");
    assert_eq!(std::fs::read(dir.join("notes.md")).unwrap(), b"second");
    // Removing one deletes only that attachment; the message keeps the other.
    std::fs::remove_file(&first).unwrap();
    let left = messages(&mount);
    assert_eq!(left.len(), 1);
    let attachments = left[0]["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["filename"], "notes.md");
    // Removing the last one deletes the message.
    std::fs::remove_file(dir.join("notes.md")).unwrap();
    assert!(messages(&mount).is_empty());
}

#[test]
fn a_wrong_token_gives_eacces_with_a_clear_message() {
    let mount = mount_with("flx_wrong", |_| {}, |_| {});
    let listing = sh_output(&format!("ls {}", q(mount.path())));
    assert!(!listing.status.success());
    assert!(
        String::from_utf8_lossy(&listing.stderr).contains("Permission denied"),
        "{listing:?}"
    );
    let err = mount
        .runtime
        .block_on(mount.other.list_containers())
        .unwrap_err();
    assert!(err.message.contains("--token"), "{}", err.message);
    assert!(!err.message.contains("flx_wrong"), "{}", err.message);
}

#[test]
fn mount_refuses_a_wrong_token_before_mounting() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(data.path());
    config.token = Some(TOKEN.to_owned());
    let server = runtime
        .block_on(Backend::Fluxer.spawn_emulator(config))
        .unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["mount", "--backend", "fluxer", "--endpoint"])
        .arg(format!("{}/v1", server.endpoint()))
        .arg(mnt.path())
        .env("SESSIONFS_TOKEN", "flx_wrong")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(
        !stderr.contains("flx_wrong"),
        "the token is never printed: {stderr}"
    );
    assert!(sh(&format!("ls -A {}", q(mnt.path()))).is_empty());
}

#[test]
fn subdirectories_and_normalised_names_round_trip() {
    // TTL zero: every lookup lists the channel again, so names come back from the server.
    let mount = mount_with(TOKEN, |_| {}, |_| {});
    let dir = channel_dir(&mount);
    let sub = dir.join("sub").join("dir");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("a (1) ü.txt"), b"nested").unwrap();
    std::fs::write(dir.join("..hidden  two spaces"), b"dots").unwrap();
    // What people in the channel see: the normalised filename and the exact path.
    let posted = messages(&mount);
    let nested = posted
        .iter()
        .find(|m| m["content"] == "sessionfs: sub/dir/a (1) ü.txt")
        .expect("a message naming the exact path");
    assert_eq!(nested["attachments"][0]["filename"], "a_1_ü.txt");
    // A second mount of the same server lists the exact names.
    let other = mount
        .runtime
        .block_on(mount.other.list(Some(&channel_id(&mount))))
        .unwrap();
    let names: Vec<&str> = other.iter().map(|o| o.name.as_str()).collect();
    assert!(names.contains(&"sub／dir／a (1) ü.txt"), "{names:?}");
    assert!(names.contains(&"..hidden  two spaces"), "{names:?}");
    assert_eq!(sh(&format!("ls {}", q(&sub))), "a (1) ü.txt\n");
    assert_eq!(std::fs::read(sub.join("a (1) ü.txt")).unwrap(), b"nested");
    assert_eq!(
        std::fs::read(dir.join("..hidden  two spaces")).unwrap(),
        b"dots"
    );
}

#[test]
fn writing_over_and_renaming_keep_one_message_per_file() {
    let mount = mount(|_| {});
    let dir = channel_dir(&mount);
    let path = dir.join("notes.txt");
    std::fs::write(&path, b"first version").unwrap();
    std::fs::write(&path, b"second").unwrap();
    let posted = messages(&mount);
    assert_eq!(posted.len(), 1, "the old message went: {posted:?}");
    assert_eq!(posted[0]["content"], "sessionfs: notes.txt");
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    sh(&format!("mv {} {}", q(&path), q(&dir.join("renamed.txt"))));
    let posted = messages(&mount);
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["content"], "sessionfs: renamed.txt");
    assert_eq!(std::fs::read(dir.join("renamed.txt")).unwrap(), b"second");
}

#[test]
fn guilds_and_channels_cannot_be_made_or_removed_through_the_mount() {
    let mount = mount(|_| {});
    assert_eq!(sh(&format!("ls {}", q(mount.path()))), "@me\nsessionfs\n");
    assert_eq!(
        sh(&format!("ls {}", q(&mount.join(GUILD)))),
        "files\ngeneral\n"
    );
    assert_eq!(sh(&format!("ls {}", q(&mount.join("@me")))), "guest\n");
    assert_eq!(
        errno(std::fs::create_dir(mount.join("new guild"))),
        libc::EPERM
    );
    assert_eq!(
        errno(std::fs::create_dir(mount.join(GUILD).join("new-channel"))),
        libc::EPERM
    );
    assert_eq!(errno(std::fs::remove_dir(channel_dir(&mount))), libc::EPERM);
    assert_eq!(
        errno(std::fs::write(mount.join(GUILD).join("x.txt"), b"x")),
        libc::EPERM
    );
    // A direct message channel takes files like any other.
    let dm = mount.join("@me").join("guest").join("hello.txt");
    std::fs::write(&dm, b"hi").unwrap();
    assert_eq!(std::fs::read(&dm).unwrap(), b"hi");
}

#[test]
fn a_channel_with_5000_attachments_lists_every_one() {
    const ATTACHMENTS: usize = 5000;
    /// Messages posted at once while seeding.
    const SEED_CONCURRENCY: usize = 8;
    let mount = mount(|c| c.fluxer.rate_limits = false);
    let url = format!(
        "{}/v1/channels/{}/messages",
        mount.endpoint(),
        channel_id(&mount)
    );
    mount.runtime.block_on(async {
        use futures::StreamExt;
        let client = reqwest::Client::new();
        let posts = futures::stream::iter(0..ATTACHMENTS)
            .map(|i| {
                let form = reqwest::multipart::Form::new()
                    .text("payload_json", r#"{"content":"seeded"}"#)
                    .part(
                        "files[0]",
                        reqwest::multipart::Part::bytes(format!("file {i}\n").into_bytes())
                            .file_name(format!("f{i:05}.txt")),
                    );
                client
                    .post(&url)
                    .header("Authorization", GUEST)
                    .multipart(form)
                    .send()
            })
            .buffer_unordered(SEED_CONCURRENCY);
        for response in posts.collect::<Vec<_>>().await {
            assert!(response.unwrap().status().is_success());
        }
    });
    let dir = channel_dir(&mount);
    let listed = sh(&format!("ls {} | wc -l", q(&dir)));
    assert_eq!(listed.trim(), ATTACHMENTS.to_string());
    let found = sh(&format!("find {} -type f | wc -l", q(&dir)));
    assert_eq!(found.trim(), ATTACHMENTS.to_string());
    assert_eq!(
        std::fs::read(dir.join("f04999.txt")).unwrap(),
        b"file 4999\n"
    );
    assert_eq!(std::fs::read(dir.join("f00000.txt")).unwrap(), b"file 0\n");
}
