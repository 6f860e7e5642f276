use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::server::TestServer;

#[test]
fn data_survives_graceful_and_hard_restarts() {
    let mut server = TestServer::start();
    let keys = server.create_project("durable");
    for n in 0..10 {
        assert_eq!(server.collect(&keys, "e", json!({"n": n})).status, 200);
    }
    server.restart_gracefully();
    assert_eq!(server.count(&keys, "SELECT count(*) FROM e"), 10);
    for n in 10..15 {
        assert_eq!(server.collect(&keys, "e", json!({"n": n})).status, 200);
    }
    // No flush happened for these: they come back from the write-ahead log.
    server.crash_and_restart();
    assert_eq!(server.count(&keys, "SELECT count(*) FROM e"), 15);
    assert_eq!(server.count(&keys, "SELECT count(DISTINCT n) FROM e"), 15);
    assert_eq!(
        server.count(&keys, "SELECT sum(n) FROM e"),
        (0..15).sum::<i64>()
    );
}

/// Writers send batches with unique ids while the server is killed with
/// SIGKILL at an arbitrary moment; after a restart every acknowledged id is
/// present exactly once.
#[test]
fn kill_9_during_ingest_loses_and_doubles_nothing() {
    let mut server = TestServer::start_with(&[]);
    let keys = server.create_project("crashy");
    for round in 0..3_u64 {
        let acknowledged = Arc::new(Mutex::new(Vec::<u64>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3_u64)
            .map(|writer| {
                let url = server.url("/event/batch");
                let key = keys.write.clone();
                let acknowledged = acknowledged.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut batch_number = 0_u64;
                    while !stop.load(Ordering::Relaxed) && batch_number < 10_000 {
                        let first = (round * 1_000_000) + writer * 100_000 + batch_number * 50;
                        let ids: Vec<u64> = (first..first + 50).collect();
                        let events: Vec<_> = ids
                            .iter()
                            .map(|id| json!({"collection": "order", "properties": {"id": id, "note": "x".repeat(100)}}))
                            .collect();
                        let body = json!({"api": {"api_key": key}, "events": events});
                        match ureq::post(&url).timeout(Duration::from_secs(10)).send_json(body) {
                            Ok(response) if response.status() == 200 => {
                                acknowledged.lock().expect("lock").extend(ids);
                            }
                            _ => break,
                        }
                        batch_number += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + round * 350));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().expect("writer");
        }
        server.crash_and_restart();
        let acknowledged: HashSet<u64> =
            acknowledged.lock().expect("lock").iter().copied().collect();
        assert!(
            !acknowledged.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );
        let sql = format!(
            "SELECT id FROM \"order\" WHERE id >= {} AND id < {}",
            round * 1_000_000,
            (round + 1) * 1_000_000
        );
        let rows = server.query_with_limit(&keys, &sql, 1_000_000);
        let stored: Vec<u64> = rows
            .iter()
            .map(|row| row[0].as_u64().expect("id"))
            .collect();
        let unique: HashSet<u64> = stored.iter().copied().collect();
        assert_eq!(
            unique.len(),
            stored.len(),
            "round {round}: some events are stored twice"
        );
        let missing: Vec<_> = acknowledged.difference(&unique).take(5).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged events lost, e.g. {missing:?}"
        );
    }
}

/// A bulk request is one durable unit whatever its size: killed at any
/// moment while it runs, it leaves all of its events after the restart, or
/// none of them.
#[test]
fn a_bulk_request_killed_midway_is_all_or_nothing() {
    const EVENTS: usize = 250_000;
    let mut server = TestServer::start();
    let keys = server.create_project("bulky");
    let body: String = (0..EVENTS)
        .map(|n| {
            format!(
                "{{\"n\":{n},\"user\":\"u{}\",\"page\":\"/p/{}\"}}\n",
                n % 977,
                n % 31
            )
        })
        .collect();
    let send = |server: &TestServer, collection: &str| {
        let url = server.url(&format!("/event/bulk?collection={collection}"));
        let (key, body) = (keys.write.clone(), body.clone());
        std::thread::spawn(move || {
            ureq::post(&url)
                .set("write_key", &key)
                .set("content-type", "application/x-ndjson")
                .timeout(Duration::from_secs(300))
                .send_string(&body)
                .map(|response| response.status())
                .unwrap_or(0)
        })
    };
    // One whole request first, to know how long one takes here.
    let started = std::time::Instant::now();
    assert_eq!(send(&server, "whole").join().expect("sender"), 200);
    let full = started.elapsed();
    assert_eq!(
        server.count(&keys, "SELECT count(*) FROM whole"),
        EVENTS as i64
    );
    for (round, fraction) in [0.2, 0.5, 0.8, 0.95].into_iter().enumerate() {
        let collection = format!("cut{round}");
        let sender = send(&server, &collection);
        std::thread::sleep(full.mul_f64(fraction));
        server.crash_and_restart();
        let status = sender.join().expect("sender");
        let stored = server
            .query(
                &keys,
                &format!("SELECT count(*) FROM _all WHERE _collection = '{collection}'"),
            )
            .first()
            .and_then(|row| row[0].as_i64())
            .unwrap_or(0);
        assert!(
            stored == 0 || stored == EVENTS as i64,
            "round {round}: {stored} of {EVENTS} events survived a kill at {fraction} of the request"
        );
        if status == 200 {
            assert_eq!(
                stored, EVENTS as i64,
                "round {round}: acknowledged but lost"
            );
        }
    }
}
