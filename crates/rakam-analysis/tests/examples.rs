//! Expected-output files for the documented examples of every analysis:
//! each `tests/examples/*.txt` file ingests events into a fresh store, runs
//! requests and compares the JSON answers (without timings) with the text
//! in the file (format: `rakam_test_support::expected`; a record's kind is
//! the analysis: funnel | retention | explore | statistics | flow, its input
//! the JSON request, its output pretty JSON). `RAKAM_SLT_COMPLETE=1 cargo
//! test --workspace --test examples` rewrites the expected blocks.

mod common;

use std::path::Path;

use rakam_test_support::expected::{check_dir, Records};
use rakam_test_support::{available, Backend};
use serde_json::{Map, Value};

impl Records for common::Harness {
    async fn ingest(&self, collection: &str, events: Vec<Map<String, Value>>) {
        common::Harness::ingest(self, collection, events).await;
    }

    async fn run(&self, kind: &str, input: &str) -> Result<String, String> {
        let request: Value = serde_json::from_str(input)
            .unwrap_or_else(|e| panic!("request is not JSON ({e}): {input}"));
        let answer = self.analyze(kind, request).await?;
        Ok(serde_json::to_string_pretty(&common::stable(answer)).expect("json"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_examples() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    check_dir(&dir, "txt", common::Harness::new).await;
}

/// The same files on PostgreSQL: analyses read through its table provider
/// (filters pushed into SQL), so the answers must not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_examples_on_postgres() {
    if !available(Backend::Postgres, "the analysis examples on PostgreSQL") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    check_dir(&dir, "txt", || async {
        common::Harness::on(Backend::Postgres)
            .await
            .expect("PostgreSQL was available a moment ago")
    })
    .await;
}
