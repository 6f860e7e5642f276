//! Expected-output files for the documented examples of every analysis:
//! each `tests/examples/*.txt` file ingests events into a fresh store, runs
//! requests and compares the JSON answers (without timings) with the text
//! in the file. `RAKAM_SLT_COMPLETE=1 cargo test -p rakam-analysis --test
//! examples` rewrites the expected blocks from the actual output.
//!
//! Records, separated by blank lines (lines starting with `#` are comments):
//!
//! ```text
//! ingest <collection>      one JSON properties object per line
//! <analysis>               funnel | retention | explore | statistics | flow:
//!                          the JSON request, then `----`, then the answer
//!                          (pretty JSON) or `error: <text it contains>`
//! ```

mod common;

use std::path::Path;

use serde_json::Value;

async fn run_file(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).expect("read example file");
    let harness = common::Harness::new().await;
    let mut output = String::new();
    for record in text.split("\n\n").map(str::trim).filter(|r| !r.is_empty()) {
        let mut lines = record.lines().peekable();
        while let Some(line) = lines.next_if(|l| l.starts_with('#')) {
            output.push_str(line);
            output.push('\n');
        }
        let header = lines.next().unwrap_or("");
        let body: Vec<&str> = lines.collect();
        if let Some(collection) = header.strip_prefix("ingest ") {
            let events = body
                .iter()
                .map(|line| match serde_json::from_str::<Value>(line) {
                    Ok(Value::Object(properties)) => properties,
                    _ => panic!("{}: not a JSON object: {line}", path.display()),
                })
                .collect();
            harness.ingest(collection, events).await;
            output.push_str(&format!("{header}\n{}\n\n", body.join("\n")));
            continue;
        }
        let split = body.iter().position(|l| *l == "----").unwrap_or(body.len());
        let request_text = body[..split].join("\n");
        let request: Value = serde_json::from_str(&request_text).unwrap_or_else(|e| {
            panic!(
                "{}: request is not JSON ({e}): {request_text}",
                path.display()
            )
        });
        let expected = body
            .get(split + 1..)
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        let actual = match harness.analyze(header, request).await {
            Ok(answer) => serde_json::to_string_pretty(&common::stable(answer)).expect("json"),
            Err(message) => match expected.strip_prefix("error: ") {
                Some(wanted) if std::env::var_os("RAKAM_SLT_COMPLETE").is_none() => {
                    assert!(
                        message.contains(wanted.trim()),
                        "{}: error of {request_text}\nexpected to contain: {wanted}\nactual: {message}",
                        path.display()
                    );
                    expected.clone()
                }
                _ => format!("error: {message}"),
            },
        };
        output.push_str(&format!("{header}\n{request_text}\n----\n{actual}\n\n"));
    }
    (text, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_examples() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no example files in {}", dir.display());
    for file in files {
        let (expected, actual) = run_file(&file).await;
        if std::env::var_os("RAKAM_SLT_COMPLETE").is_some() {
            std::fs::write(&file, actual.trim_end().to_string() + "\n").expect("rewrite");
            continue;
        }
        assert_eq!(
            expected.trim_end(),
            actual.trim_end(),
            "{} differs (rerun with RAKAM_SLT_COMPLETE=1 to accept, after reading the diff)",
            file.display()
        );
    }
}
