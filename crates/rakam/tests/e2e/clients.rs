//! Rakam's own client library, unchanged from PyPI (`rakam-client` 0.5),
//! against the real server: project, collect, batch, bulk and its commit,
//! query, funnel, retention and the event explorer
//! (`tests/clients/rakam_client_05.py`). `.ci/run` installs the client into
//! `/var/cache/rakam-venv`; elsewhere the test is skipped with a loud
//! message unless `RAKAM_REQUIRE_SERVICES=1`.

use std::path::PathBuf;
use std::process::Command;

use crate::server::TestServer;

const DEFAULT_PYTHON: &str = "/var/cache/rakam-venv/bin/python";

/// A Python that can import `rakam_client`: `RAKAM_PYTHON`, or the venv
/// `.ci/run` makes.
fn python_with_client() -> Option<String> {
    let python = std::env::var("RAKAM_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.to_string());
    let usable = Command::new(&python)
        .args(["-c", "import rakam_client"])
        .output()
        .is_ok_and(|output| output.status.success());
    if usable {
        return Some(python);
    }
    let message = format!(
        "rakam-client 0.5 is not importable by {python}; install it with \
         `python3 -m venv /var/cache/rakam-venv && /var/cache/rakam-venv/bin/pip install rakam-client==0.5` \
         (or set RAKAM_PYTHON)"
    );
    if std::env::var("RAKAM_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("RAKAM_REQUIRE_SERVICES=1 but {message}");
    }
    eprintln!("\n!!! SKIPPED: {message}\n");
    None
}

#[test]
fn rakam_client_0_5_works_unchanged() {
    let Some(python) = python_with_client() else {
        return;
    };
    let server = TestServer::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients")
        .join("rakam_client_05.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(server.url(""))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the client script");
    assert!(
        output.status.success(),
        "rakam-client 0.5 failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
