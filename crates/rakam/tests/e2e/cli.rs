use std::process::Command;

use crate::server::{binary, TestServer};

#[test]
fn config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rakam.toml");
    std::fs::write(&file, "[query]\nmax_limit = 500\ndefault_limit = 100\n").expect("write");
    let output = Command::new(binary())
        .args([
            "--config",
            file.to_str().expect("path"),
            "config",
            "--listen",
            "0.0.0.0:1234",
        ])
        .env("RAKAM_QUERY__DEFAULT_LIMIT", "7")
        .output()
        .expect("run rakam config");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: toml::Table =
        toml::from_str(&String::from_utf8_lossy(&output.stdout)).expect("toml");
    assert_eq!(printed["server"]["listen"].as_str(), Some("0.0.0.0:1234"));
    assert_eq!(printed["query"]["max_limit"].as_integer(), Some(500));
    assert_eq!(printed["query"]["default_limit"].as_integer(), Some(7));
    assert_eq!(printed["storage"]["backend"].as_str(), Some("embedded"));
    assert_eq!(
        printed["storage"]["embedded"]["durability"].as_str(),
        Some("fsync")
    );

    let bad = Command::new(binary())
        .args(["config"])
        .env("RAKAM_STORAGE__EMBEDDED__DURABILITY", "sometimes")
        .output()
        .expect("run rakam config");
    assert!(!bad.status.success());
}

#[test]
fn project_create_works_offline_and_through_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let offline = Command::new(binary())
        .args([
            "project",
            "create",
            "offline",
            "--data-dir",
            data_dir.to_str().expect("path"),
        ])
        .output()
        .expect("run");
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    let keys: serde_json::Value = serde_json::from_slice(&offline.stdout).expect("keys json");
    assert_eq!(keys["master_key"].as_str().map(str::len), Some(48));

    let server = TestServer::start();
    let online = Command::new(binary())
        .args([
            "project",
            "create",
            "online",
            "--data-dir",
            server.data_dir().to_str().expect("path"),
            "--listen",
            &format!("127.0.0.1:{}", server.port),
        ])
        .output()
        .expect("run");
    assert!(
        online.status.success(),
        "{}",
        String::from_utf8_lossy(&online.stderr)
    );
    let keys: serde_json::Value = serde_json::from_slice(&online.stdout).expect("keys json");
    let read_key = keys["read_key"].as_str().expect("read key");
    let collections = server.post(
        "/project/collection",
        &[("read_key", read_key)],
        &serde_json::json!({}),
    );
    assert_eq!(collections.status, 200, "{}", collections.body);
}
