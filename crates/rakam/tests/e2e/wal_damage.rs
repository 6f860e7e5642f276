//! A damaged or incomplete WAL never loses acknowledged events silently:
//! the server refuses to start naming the damage, `rakam wal check` says
//! the same offline, and `--wal-recovery quarantine` starts anyway with the
//! damage moved aside and reported in `/health`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{binary, on_postgres, TestServer};

const EVENTS_PER_REQUEST: usize = 100;
const REQUESTS: usize = 150;

/// Starts `rakam serve` on `data_dir` and expects it to exit: its stderr.
fn refused_start(data_dir: &Path) -> String {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RAKAM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rakam");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "rakam exited 0 on a damaged WAL");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rakam started on a damaged WAL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr);
    stderr
}

fn wal_check(data_dir: &Path) -> (bool, String) {
    let output = Command::new(binary())
        .args(["wal", "check", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("rakam wal check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

#[test]
fn damage_in_the_wal_is_named_checked_and_quarantined_on_request() {
    if on_postgres() {
        return;
    }
    let mut server = TestServer::start_with_env(
        &[],
        &[
            ("RAKAM_STORAGE__EMBEDDED__WAL_SEGMENT_BYTES", "65536"),
            ("RAKAM_STORAGE__EMBEDDED__FLUSH_INTERVAL_SECS", "3600"),
        ],
    );
    let keys = server.create_project("walled");
    for request in 0..REQUESTS {
        let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
            .map(|i| json!({"collection": "e", "properties": {"request": request, "i": i, "pad": "x".repeat(40)}}))
            .collect();
        let response = server.batch(&keys, events);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    server.kill();
    let data_dir = server.data_dir().to_path_buf();
    let (healthy, report) = wal_check(&data_dir);
    assert!(healthy, "{report}");

    // Eight flipped bytes a tenth into the oldest segment.
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let oldest = &segments[0];
    let mut bytes = std::fs::read(oldest).expect("segment");
    let at = bytes.len() / 10;
    for byte in &mut bytes[at..at + 8] {
        *byte ^= 0xA5;
    }
    std::fs::write(oldest, &bytes).expect("damage");

    let stderr = refused_start(&data_dir);
    assert!(
        stderr.contains("damaged") || stderr.contains("corrupt"),
        "{stderr}"
    );
    assert!(stderr.contains("wal check"), "{stderr}");
    let (healthy, report) = wal_check(&data_dir);
    assert!(!healthy, "{report}");
    assert!(report.contains("DAMAGED"), "{report}");
    assert!(
        report.contains("acknowledged appends (sequences"),
        "{report}"
    );

    server.relaunch_with(&["--wal-recovery", "quarantine"]);
    let health = server.get("/health");
    assert_eq!(health.status, 200, "{}", health.body);
    let health = health.json();
    assert_eq!(health["status"], json!("degraded"), "{health}");
    assert!(
        health["notices"][0]
            .as_str()
            .is_some_and(|n| n.contains("quarantine")),
        "{health}"
    );
    // One damaged request is lost (moved aside), every other one is whole.
    let counts = server.query(&keys, "SELECT request, count(*) FROM e GROUP BY request");
    assert_eq!(counts.len(), REQUESTS - 1, "{counts:?}");
    assert!(
        counts.iter().all(|row| row[1] == json!(EVENTS_PER_REQUEST)),
        "{counts:?}"
    );
    assert_eq!(
        std::fs::read_dir(data_dir.join("wal").join("quarantine"))
            .expect("quarantine")
            .count(),
        1
    );

    // A deleted closed segment is a gap, not a silent loss.
    server.kill();
    let (healthy, report) = wal_check(&data_dir);
    assert!(healthy, "quarantined WAL: {report}");
    std::fs::remove_file(&segments[1]).expect("delete a segment");
    let stderr = refused_start(&data_dir);
    assert!(stderr.contains("missing"), "{stderr}");
    let (healthy, report) = wal_check(&data_dir);
    assert!(
        !healthy && report.contains("no segment holds sequences"),
        "{report}"
    );
}
