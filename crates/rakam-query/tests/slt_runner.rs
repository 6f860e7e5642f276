//! Expected-output tests of the SQL surface, in the spirit of sqllogictest:
//! each `tests/slt/*.slt` file ingests events through the real ingest path
//! into a fresh embedded store and checks query results (or errors) against
//! the text in the file. `RAKAM_SLT_COMPLETE=1 cargo test -p rakam-query
//! --test slt_runner` rewrites the expected blocks from the actual output.
//!
//! Records, separated by blank lines:
//!
//! ```text
//! ingest <collection>          one JSON properties object per line
//! query                        SQL, then `----`, then one row per line,
//!                              values joined by " | " (NULL for null)
//! error                        SQL, then `----`, then a text the error contains
//! ```

use std::path::Path;
use std::sync::Arc;

use rakam_ingest::{EventInput, IngestLimits, Ingester};
use rakam_query::{rows_as_json, QueryEngine, QueryLimits};
use rakam_store_api::{Catalog, EventStore, ProjectInfo};
use rakam_store_embedded::{open, EmbeddedOptions};
use serde_json::Value;

struct Harness {
    _dir: tempfile::TempDir,
    project: ProjectInfo,
    ingester: Ingester,
    engine: QueryEngine,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (catalog, store) = open(EmbeddedOptions::new(dir.path()))
            .await
            .expect("open store");
        let catalog: Arc<dyn Catalog> = catalog;
        let store: Arc<dyn EventStore> = store;
        catalog.create_project("slt").await.expect("project");
        let project = catalog
            .project("slt")
            .await
            .expect("lookup")
            .expect("exists");
        Self {
            _dir: dir,
            project,
            ingester: Ingester::new(catalog.clone(), store.clone(), IngestLimits::default()),
            engine: QueryEngine::new(catalog, store, QueryLimits::default()),
        }
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

async fn run_file(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).expect("read slt file");
    let harness = Harness::new().await;
    let mut output = String::new();
    for record in text.split("\n\n").map(str::trim).filter(|r| !r.is_empty()) {
        let mut lines = record.lines();
        let mut header = lines.next().unwrap_or("");
        let mut comments = String::new();
        while header.starts_with('#') {
            comments.push_str(header);
            comments.push('\n');
            header = lines.next().unwrap_or("");
        }
        output.push_str(&comments);
        let body: Vec<&str> = lines.collect();
        if let Some(collection) = header.strip_prefix("ingest ") {
            let inputs = body
                .iter()
                .map(|line| match serde_json::from_str::<Value>(line) {
                    Ok(Value::Object(properties)) => Ok(EventInput {
                        collection: collection.to_string(),
                        properties,
                        upload_time: None,
                    }),
                    _ => panic!("{}: not a JSON object: {line}", path.display()),
                })
                .collect();
            harness
                .ingester
                .ingest(&harness.project, inputs, true)
                .await
                .unwrap_or_else(|e| panic!("{}: ingest failed: {e}", path.display()));
            output.push_str(record.trim_start_matches(&comments[..]));
            output.push_str("\n\n");
            continue;
        }
        let split = body.iter().position(|l| *l == "----").unwrap_or(body.len());
        let sql = body[..split].join("\n");
        let actual = match (
            header,
            harness.engine.execute(&harness.project, &sql, None).await,
        ) {
            ("query", Ok(result)) => rows_as_json(&result.batches)
                .expect("rows")
                .iter()
                .map(|row| row.iter().map(render).collect::<Vec<_>>().join(" | "))
                .collect::<Vec<_>>()
                .join("\n"),
            ("query", Err(error)) => panic!("{}: query failed: {sql}\n{error}", path.display()),
            ("error", Ok(_)) => panic!("{}: expected an error: {sql}", path.display()),
            ("error", Err(error)) => {
                let expected = body
                    .get(split + 1..)
                    .map(|l| l.join("\n"))
                    .unwrap_or_default();
                let message = error.to_string();
                if std::env::var_os("RAKAM_SLT_COMPLETE").is_none() {
                    assert!(
                        message.contains(expected.trim()),
                        "{}: error of {sql}\nexpected to contain: {expected}\nactual: {message}",
                        path.display()
                    );
                }
                if expected.trim().is_empty() {
                    message
                } else {
                    expected
                }
            }
            (other, _) => panic!("{}: unknown record type {other:?}", path.display()),
        };
        output.push_str(&format!("{header}\n{sql}\n----\n{actual}\n\n"));
    }
    (text, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_expected_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("slt dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let (expected, actual) = run_file(&file).await;
        if std::env::var_os("RAKAM_SLT_COMPLETE").is_some() {
            std::fs::write(&file, actual.trim_end().to_string() + "\n").expect("rewrite");
            continue;
        }
        assert_eq!(
            expected.trim_end(),
            actual.trim_end(),
            "{} differs (rerun with RAKAM_SLT_COMPLETE=1 to accept)",
            file.display()
        );
    }
}
