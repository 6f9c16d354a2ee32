//! A mount over an emulator that fails on purpose (seeded): retries absorb 500, 429, dropped
//! connections and short bodies, and no byte is lost or mixed.

use std::process::Command;
use std::time::Duration;

use sessionfs::backend::Backend;
use sessionfs::emulator::{EmulatorConfig, FaultCounts};
use sessionfs::remote::http::RetryConfig;

use crate::harness::{TestMount, pseudo_random, q, sh, wait_until};

#[test]
fn copies_survive_errors_throttling_and_dropped_connections() {
    let counts = std::sync::Arc::new(FaultCounts::default());
    let mount = TestMount::backend(
        Backend::Mix,
        |dir| {
            // A failed create is not retried (it may have happened), so the session is made
            // before the faults start.
            create_session(dir, "faulty");
            let mut config = EmulatorConfig::new(dir);
            config.faults = "500=0.1,429=0.1,reset=0.05,truncate=0.05".parse().unwrap();
            config.fault_seed = 7;
            config.fault_counts = counts.clone();
            config
        },
        None,
        |_| {},
    );
    let dir = mount.join("faulty");
    let local = tempfile::tempdir().unwrap();
    for (i, size) in [(0, 3 << 20), (1, 100_000), (2, 5 << 20)] {
        let source = local.path().join(format!("f{i}"));
        std::fs::write(&source, pseudo_random(size, i as u64 + 40)).unwrap();
        sh(&format!(
            "cp {} {}",
            q(&source),
            q(&dir.join(format!("f{i}")))
        ));
    }
    sh(&format!(
        "cp -r {} {}",
        q(&dir),
        q(&local.path().join("back"))
    ));
    for i in 0..3 {
        let sent = std::fs::read(local.path().join(format!("f{i}"))).unwrap();
        let back = std::fs::read(local.path().join(format!("back/f{i}"))).unwrap();
        assert!(sent == back, "f{i} came back different");
    }
    for kind in ["500", "429", "reset", "truncate"] {
        assert!(counts.of(kind) > 0, "no {kind} fault was injected");
    }
}

/// Creates a session in the emulator data at `dir` through a fault-free emulator.
fn create_session(dir: &std::path::Path, title: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = Backend::Mix
            .spawn_emulator(EmulatorConfig::new(dir))
            .await
            .unwrap();
        let response = reqwest::Client::new()
            .post(format!("{}/api/sessions", server.endpoint()))
            .json(&serde_json::json!({"title": title, "browserMode": "local-browser-service"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        server.shutdown().await;
    });
}

/// A Mix mount whose uploads keep retrying for `deadline`, listings fresh for a minute.
fn patient_mount(deadline: Duration) -> TestMount {
    TestMount::embedded_client(
        Backend::Mix,
        |_| {},
        |client| {
            client.retry = RetryConfig {
                max_attempts: 100_000,
                deadline,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
                ..RetryConfig::default()
            }
        },
        |config| config.metadata_ttl = Duration::from_secs(60),
    )
}

/// A `cp` of `data` into session `title` that waits in close: every byte is staged and the
/// upload retries because the server was stopped after the session was listed. Returns the
/// running `cp` and the directory that holds its source.
fn cp_waiting_for_the_server(
    mount: &mut TestMount,
    title: &str,
    data: &[u8],
) -> (std::process::Child, tempfile::TempDir) {
    let dir = mount.session_dir(title);
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("data.bin");
    std::fs::write(&source, data).unwrap();
    let target = dir.join("data.bin");
    // Listed once while the server is up, so lookups answer from the listing during the outage.
    sh(&format!("ls {}", q(&dir)));

    mount.stop_server();
    let mut cp = Command::new("cp")
        .arg(&source)
        .arg(&target)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the copy to be staged", || {
        std::fs::metadata(&target).is_ok_and(|m| m.len() == data.len() as u64)
    });
    assert!(cp.try_wait().unwrap().is_none(), "cp waits for the upload");
    (cp, local)
}

#[test]
fn a_copy_rides_out_a_server_that_goes_away_and_comes_back() {
    let mut mount = patient_mount(Duration::from_secs(60));
    let data = pseudo_random(3 << 20, 11);
    let (mut cp, _source) = cp_waiting_for_the_server(&mut mount, "outage", &data);
    // Cached entries keep answering while the server is away.
    let dir = mount.join("outage");
    assert!(sh(&format!("ls -l {}", q(&dir))).contains("data.bin"));
    mount.restart_server();
    assert!(cp.wait().unwrap().success(), "the copy completes");
    let session = mount.api_session_id("outage");
    assert!(mount.api_get(&session, "data.bin").unwrap() == data);
}

#[test]
fn ctrl_c_ends_a_cp_waiting_in_close_and_its_upload_goes_on() {
    let mut mount = patient_mount(Duration::from_secs(60));
    let data = pseudo_random(2 << 20, 12);
    let (mut cp, _source) = cp_waiting_for_the_server(&mut mount, "interrupted", &data);
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(cp.id() as i32, libc::SIGINT) }, 0);
    // The upload would wait for the server for a minute; the interrupted cp ends at once.
    wait_until(Duration::from_secs(5), "the interrupted cp to end", || {
        cp.try_wait().unwrap().is_some()
    });
    let status = cp.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGINT),
        "{status:?}"
    );

    mount.restart_server();
    let session = mount.api_session_id("interrupted");
    wait_until(Duration::from_secs(30), "the upload to finish", || {
        mount.api_get(&session, "data.bin").as_deref() == Some(&data[..])
    });
}
