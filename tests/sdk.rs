//! Python clients from PyPI against our emulators, unchanged: the official `lightfield` SDK
//! (`scripts/sdk_lightfield.py`: the whole file flow and the SDK's error classes) and the
//! third-party `fluxer.py` client (`scripts/sdk_fluxer.py`: guilds, channels, a message with
//! a file, paging, download, delete, a bot sign-in).
//!
//! Each package is installed once into its own venv under Cargo's target directory. If it
//! cannot be installed (no `python3 -m venv`, PyPI unreachable) the test fails and says why;
//! set `SESSIONFS_SKIP_SDK_TESTS=1` to skip these tests on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sessionfs::backend::Backend;
use sessionfs::emulator::EmulatorConfig;

/// The Lightfield SDK version the contract notes were written against.
const LIGHTFIELD_SDK: &str = "lightfield==0.20.0a2";
/// The fluxer.py version the emulator was checked with.
const FLUXER_CLIENT: &str = "fluxer.py==0.4.2";
const KEY: &str = "sk_lf_sdk_test";

fn venv_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-sdk-venv"))
}

fn skipped(what: &str) -> bool {
    let skip = std::env::var("SESSIONFS_SKIP_SDK_TESTS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SESSIONFS_SKIP_SDK_TESTS=1: skipping the {what} test");
    }
    skip
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

/// The python of venv `name` with `requirement` installed (checked by importing `modules`),
/// creating the venv on first use.
fn sdk_python(name: &str, requirement: &str, modules: &str) -> PathBuf {
    let venv = venv_dir(name);
    let python = venv.join("bin/python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", &format!("import {modules}")])
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
                requirement,
            ]),
            &format!("pip install {requirement} from PyPI"),
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_against_the_emulator() {
    if skipped("lightfield SDK") {
        return;
    }
    let python = tokio::task::spawn_blocking(|| {
        sdk_python("lightfield", LIGHTFIELD_SDK, "lightfield, httpx")
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(data.path());
    config.token = Some(KEY.to_owned());
    let server = Backend::Lightfield.spawn_emulator(config).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fluxer_py_client_works_against_the_emulator() {
    if skipped("fluxer.py") {
        return;
    }
    let python = tokio::task::spawn_blocking(|| sdk_python("fluxer", FLUXER_CLIENT, "fluxer"))
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(data.path());
    config.token = Some("flx_sdk_user".to_owned());
    config.fluxer.bot_token = Some("flx_sdk_bot".to_owned());
    let server = Backend::Fluxer.spawn_emulator(config).await.unwrap();
    let api_url = format!("{}/v1", server.endpoint());
    let output = tokio::task::spawn_blocking(move || {
        run(
            Command::new(python)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/sdk_fluxer.py"
                ))
                .args([&api_url, "flx_sdk_user", "flx_sdk_bot"]),
            "scripts/sdk_fluxer.py",
        )
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("all checks passed"));
    server.shutdown().await;
}
