//! The official `lightfield` Python SDK (from PyPI) against the Lightfield emulator, unchanged:
//! `scripts/sdk_lightfield.py` runs the whole file flow and the SDK's error classes.
//!
//! The SDK is installed once into a venv under Cargo's target directory. If it cannot be
//! installed (no `python3 -m venv`, PyPI unreachable) the test fails and says why; set
//! `SESSIONFS_SKIP_SDK_TESTS=1` to skip it on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sessionfs::backend::Backend;
use sessionfs::emulator::{EmulatorConfig, spawn};

/// The SDK version the contract notes were written against.
const SDK_REQUIREMENT: &str = "lightfield==0.20.0a2";
const KEY: &str = "sk_lf_sdk_test";

fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("lightfield-sdk-venv")
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot start: {err}"));
    assert!(
        output.status.success(),
        "{what} failed ({}).\nstdout:\n{}\nstderr:\n{}\n\
         (set SESSIONFS_SKIP_SDK_TESTS=1 to skip the SDK test on a machine without PyPI access)",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The venv's python with the SDK installed, creating the venv on first use.
fn sdk_python() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", "import lightfield, httpx"])
            .output()
            .is_ok_and(|out| out.status.success());
    if !installed {
        run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "python3 -m venv (install python3-venv)",
        );
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--pre",
                SDK_REQUIREMENT,
            ]),
            &format!("pip install {SDK_REQUIREMENT} from PyPI"),
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_against_the_emulator() {
    if std::env::var("SESSIONFS_SKIP_SDK_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SESSIONFS_SKIP_SDK_TESTS=1: skipping the lightfield SDK test");
        return;
    }
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(data.path());
    config.token = Some(KEY.to_owned());
    let server = spawn(Backend::Lightfield, config).await.unwrap();
    let endpoint = server.endpoint();
    let output = tokio::task::spawn_blocking(move || {
        run(
            Command::new(python)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/sdk_lightfield.py"
                ))
                .args([&endpoint, KEY])
                .env_remove("LIGHTFIELD_BASE_URL")
                .env_remove("LIGHTFIELD_API_KEY"),
            "scripts/sdk_lightfield.py",
        )
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("all checks passed"));
    server.shutdown().await;
}
