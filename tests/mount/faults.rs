//! A mount over an emulator that fails on purpose (seeded): retries absorb 500, 429, dropped
//! connections and short bodies, and no byte is lost or mixed.

use sessionfs::backend::Backend;
use sessionfs::emulator::{EmulatorConfig, FaultCounts};

use crate::harness::{TestMount, pseudo_random, q, sh};

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
        let server = sessionfs::emulator::spawn(Backend::Mix, EmulatorConfig::new(dir))
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
