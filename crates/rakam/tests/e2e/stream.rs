//! The live event stream (`GET /stream/subscribe`, Server-Sent Events)
//! through the real binary.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::{Keys, TestServer};

/// How long a test waits for a frame before it calls the stream broken.
const FRAME_WAIT: Duration = Duration::from_secs(20);

/// The frames of one subscription, read on a thread of their own.
struct Subscriber {
    frames: mpsc::Receiver<(String, String)>,
}

impl Subscriber {
    /// Subscribes with `data`; the subscription exists when this returns
    /// (the server answers only once it is registered).
    fn open(server: &TestServer, keys: &Keys, data: &Value) -> Self {
        Self::open_reading_ahead(server, keys, data, 1024)
    }

    /// A subscriber whose reader takes at most `ahead` frames before the
    /// test asks for them (0: it stops reading the socket until asked).
    fn open_reading_ahead(server: &TestServer, keys: &Keys, data: &Value, ahead: usize) -> Self {
        let response = ureq::get(&server.url("/stream/subscribe"))
            .set("accept", "text/event-stream")
            .set("read_key", &keys.read)
            .query("data", &data.to_string())
            .call()
            .expect("subscribe");
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        let (sender, frames) = mpsc::sync_channel(ahead);
        let reader = BufReader::new(response.into_reader());
        std::thread::spawn(move || {
            let mut event = String::new();
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let frame = (std::mem::take(&mut event), data.trim().to_string());
                    if sender.send(frame).is_err() {
                        return;
                    }
                }
            }
            let _ = sender.send(("end".into(), String::new()));
        });
        Self { frames }
    }

    fn next(&self) -> (String, Value) {
        let (event, data) = self
            .frames
            .recv_timeout(FRAME_WAIT)
            .expect("a frame within the wait");
        let value = serde_json::from_str(&data).unwrap_or(Value::Null);
        (event, value)
    }
}

fn subscribe_status(server: &TestServer, key: &str, accept: &str, data: &str) -> (u16, Value) {
    let response = server.request(
        "GET",
        &format!(
            "/stream/subscribe?data={}",
            data.replace('%', "%25")
                .replace(' ', "%20")
                .replace('"', "%22")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('\'', "%27")
                .replace('=', "%3D")
        ),
        &[("accept", accept), ("read_key", key)],
        None,
    );
    let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

#[test]
fn subscribers_get_acknowledged_events_through_their_filters_and_columns() {
    let server = TestServer::start();
    let keys = server.create_project("live");
    let subscriber = Subscriber::open(
        &server,
        &keys,
        &json!({
            "collections": [{"name": "pageview", "filter": "country = 'tr' OR n > 5"}],
            "columns": ["country", "n"]
        }),
    );
    let everything = Subscriber::open(&server, &keys, &json!({}));
    assert_eq!(
        server.collect(&keys, "click", json!({"n": 100})).status,
        200
    );
    let events = vec![
        json!({"collection": "pageview", "properties": {"country": "tr", "n": 1, "url": "/a"}}),
        json!({"collection": "pageview", "properties": {"country": "de", "n": 2}}),
        json!({"collection": "pageview", "properties": {"country": "us", "n": 9}}),
    ];
    assert_eq!(server.batch(&keys, events).status, 200);

    let (event, data) = subscriber.next();
    assert_eq!(event, "data");
    assert_eq!(
        data,
        json!([
            {"project": "live", "collection": "pageview", "properties": {"country": "tr", "n": 1}},
            {"project": "live", "collection": "pageview", "properties": {"country": "us", "n": 9}},
        ])
    );
    // Without collections, every event of the project, with every column.
    let (_, first) = everything.next();
    assert_eq!(first[0]["collection"], "click");
    assert_eq!(first[0]["properties"]["n"], 100);
    assert!(first[0]["properties"]["_time"].is_string());
    let (_, second) = everything.next();
    assert_eq!(second.as_array().map(Vec::len), Some(3));
    assert_eq!(second[0]["properties"]["url"], "/a");
}

#[test]
fn a_bad_subscription_gets_a_clear_error() {
    let server = TestServer::start();
    let keys = server.create_project("live_errors");
    assert_eq!(
        server.collect(&keys, "pageview", json!({"n": 1})).status,
        200
    );
    let ok = r#"{"collections":[{"name":"pageview"}]}"#;
    let (status, body) = subscribe_status(&server, &keys.read, "application/json", ok);
    assert_eq!((status, body["error_code"].clone()), (406, json!(1013)));
    let (status, _) = subscribe_status(&server, &keys.write, "text/event-stream", ok);
    assert_eq!(status, 403);
    let (status, body) = subscribe_status(&server, &keys.read, "text/event-stream", "{nope");
    assert_eq!((status, body["error_code"].clone()), (400, json!(1001)));
    let unknown = r#"{"collections":[{"name":"pageview","filter":"missing = 1"}]}"#;
    let (status, body) = subscribe_status(&server, &keys.read, "text/event-stream", unknown);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("filter"),
        "{body}"
    );
}

#[test]
fn subscribers_per_project_are_bounded() {
    let server =
        TestServer::start_with_env(&[], &[("RAKAM_STREAM__MAX_SUBSCRIBERS_PER_PROJECT", "1")]);
    let keys = server.create_project("live_bounded");
    let _first = Subscriber::open(&server, &keys, &json!({}));
    let (status, body) = subscribe_status(&server, &keys.read, "text/event-stream", "{}");
    assert_eq!((status, body["error_code"].clone()), (429, json!(1014)));
    // Another project has subscribers of its own.
    let other = server.create_project("live_other");
    let _second = Subscriber::open(&server, &other, &json!({}));
}

/// A subscriber that stops reading fills the socket, then its queue; it is
/// cut off with a last frame saying what it missed, and every request it
/// could have slowed is acknowledged and stored.
#[test]
fn a_stuck_subscriber_is_cut_off_and_never_slows_ingest() {
    let server =
        TestServer::start_with_env(&[], &[("RAKAM_STREAM__SUBSCRIBER_BUFFER_APPENDS", "2")]);
    let keys = server.create_project("live_stuck");
    let stuck = Subscriber::open_reading_ahead(&server, &keys, &json!({}), 0);
    // Each batch is about 1 MB of JSON in the stream: far more than the
    // socket buffers hold while the subscriber's thread is not reading.
    let blob = "x".repeat(1000);
    let batches = 40;
    for b in 0..batches {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"collection": "bulk", "properties": {"b": b, "i": i, "blob": blob}}))
            .collect();
        let response = server.batch(&keys, events);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    assert_eq!(
        server.count(&keys, "SELECT count(*) FROM bulk"),
        batches * 1000
    );
    // Now read: some data frames, then the notice, then the end.
    let mut saw_error = None;
    loop {
        let (event, data) = stuck.next();
        match event.as_str() {
            "data" => continue,
            "error" => saw_error = Some(data),
            "end" => break,
            other => panic!("unexpected frame {other}"),
        }
    }
    let notice = saw_error.expect("the subscriber was told it fell behind");
    assert_eq!(notice["error_code"], 1015, "{notice}");
}
