//! Backpressure: more collection traffic than `limits.max_inflight_bytes`
//! allows is refused with 503 and `Retry-After`, never queued without
//! bound, and every acknowledged event is stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::TestServer;

#[test]
fn overload_is_refused_with_retry_after_and_nothing_acknowledged_is_lost() {
    let server = TestServer::start_with_env(
        &[],
        &[
            ("RAKAM_LIMITS__MAX_BULK_BYTES", "1048576"),
            ("RAKAM_LIMITS__MAX_REQUEST_BYTES", "1048576"),
            ("RAKAM_LIMITS__MAX_INFLIGHT_BYTES", "2097152"),
        ],
    );
    let keys = server.create_project("busy");
    const EVENTS_PER_REQUEST: u64 = 8_000;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(4);
    let senders: Vec<_> = (0..12_u64)
        .map(|sender| {
            let url = server.url("/event/bulk?collection=load");
            let key = keys.write.clone();
            let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut round = 0_u64;
                while Instant::now() < deadline {
                    let first = (sender * 1_000_000 + round) * EVENTS_PER_REQUEST;
                    let body: String = (first..first + EVENTS_PER_REQUEST)
                        .map(|id| format!("{{\"id\":{id},\"pad\":\"{}\"}}\n", "x".repeat(80)))
                        .collect();
                    let outcome = ureq::post(&url)
                        .set("write_key", &key)
                        .set("content-type", "application/x-ndjson")
                        .timeout(Duration::from_secs(60))
                        .send_string(&body);
                    match outcome {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.fetch_add(EVENTS_PER_REQUEST, Ordering::Relaxed);
                        }
                        Err(ureq::Error::Status(503, response)) => {
                            assert_eq!(response.header("retry-after"), Some("1"));
                            let body: serde_json::Value =
                                response.into_json().expect("a JSON error");
                            assert_eq!(body["retryable"], serde_json::json!(true));
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => panic!("unexpected status {}", response.status()),
                        Err(error) => panic!("request failed: {error}"),
                    }
                    round += 1;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("sender");
    }
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    assert!(acknowledged > 0, "nothing got through");
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "12 senders of 0.9 MB never went over a 2 MiB budget"
    );
    assert_eq!(
        server.count(&keys, "SELECT count(*) FROM load") as u64,
        acknowledged,
        "stored events differ from acknowledged ones"
    );
    assert_eq!(
        server.count(&keys, "SELECT count(DISTINCT id) FROM load") as u64,
        acknowledged
    );
    // Once the load is gone, the budget is free again.
    assert_eq!(
        server
            .collect(&keys, "after", serde_json::json!({"n": 1}))
            .status,
        200
    );
}
