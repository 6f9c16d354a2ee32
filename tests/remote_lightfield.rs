//! The Lightfield client against the Lightfield emulator: the upload flow's cancel on failure,
//! the md5 it computes itself, and what it lists and refuses.

use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;
use sessionfs::remote::{ErrorKind, RemoteConfig, UploadSource};

const KEY: &str = "sk_lf_unit";

/// Every file's status, as the API lists them.
async fn statuses(endpoint: &str) -> Vec<String> {
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!("{endpoint}/v1/files"))
        .bearer_auth(KEY)
        .header("Lightfield-Version", "2026-03-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn failed_uploads_are_cancelled_and_good_ones_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Backend::Lightfield
        .spawn_emulator(EmulatorConfig::new(dir.path()))
        .await
        .unwrap();
    let mut config = RemoteConfig::new(server.endpoint(), Some(KEY.into()));
    config.retry.max_attempts = 1;
    let remote = Backend::Lightfield.connect(&config).unwrap();
    let staged = dir.path().join("staged");
    std::fs::write(&staged, b"abc").unwrap();
    let source = |size, md5: Option<&str>| UploadSource {
        md5: md5.map(str::to_owned),
        ..UploadSource::new(&staged, size)
    };

    // The staged file is shorter than declared, so the PUT fails: cancelled.
    let err = remote
        .upload(None, "a.txt", &source(4, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);
    // The md5 does not match the bytes: complete refuses, cancelled.
    let wrong = "0".repeat(32);
    let err = remote
        .upload(None, "a.txt", &source(3, Some(&wrong)))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{}", err.message);
    assert_eq!(
        statuses(&server.endpoint()).await,
        ["CANCELLED", "CANCELLED"]
    );

    // md5 computed here when the core did not give one.
    let object = remote
        .upload(None, "a.txt", &source(3, None))
        .await
        .unwrap();
    assert_eq!(
        object.md5.as_deref(),
        Some("900150983cd24fb0d6963f7d28e17f72")
    );
    assert_eq!(object.content_type.as_deref(), Some("text/plain"));
    let listed = remote.list(None).await.unwrap();
    assert_eq!(listed.len(), 1, "only COMPLETED files are listed");
    assert_eq!(
        (listed[0].id.as_str(), listed[0].size),
        (object.id.as_str(), 3)
    );
    assert_eq!(remote.read(None, &object, 1..3).await.unwrap(), &b"bc"[..]);

    let empty = remote
        .upload(None, "e.txt", &source(0, None))
        .await
        .unwrap_err();
    assert_eq!(empty.kind, ErrorKind::InvalidInput);
    assert!(empty.message.contains("empty files"), "{}", empty.message);
    let delete = remote.delete(None, &object).await.unwrap_err();
    assert_eq!(delete.kind, ErrorKind::Unsupported);
    assert_eq!(delete.message, "lightfield has no delete");
    server.shutdown().await;
}
