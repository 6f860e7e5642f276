//! Expected-output tests of the SQL surface, in the spirit of sqllogictest:
//! each `.slt` file ingests events through the real ingest path into a fresh
//! store and checks query results (or errors) against the text in the file
//! (format: `rakam_test_support::expected`). `tests/slt/` runs on every
//! backend; `tests/slt_datafusion/` (embedded) and `tests/slt_postgres/`
//! hold what differs with the SQL dialect (type names, error texts).
//! `RAKAM_SLT_COMPLETE=1 cargo test --workspace --test slt_runner` rewrites
//! the expected blocks from the actual output.
//!
//! ```text
//! query        SQL, then `----`, then one row per line, values joined by
//!              " | " (NULL for null), or `error: <text the error contains>`
//! ```

use std::path::Path;

use rakam_query::rows_as_json;
use rakam_test_support::expected::{check_dir, Records};
use rakam_test_support::{available, Backend, TestStore};
use serde_json::{Map, Value};

struct Sql(TestStore);

fn render(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Records for Sql {
    async fn ingest(&self, collection: &str, events: Vec<Map<String, Value>>) {
        self.0.ingest(collection, events).await;
    }

    async fn run(&self, kind: &str, sql: &str) -> Result<String, String> {
        assert_eq!(kind, "query", "unknown record type {kind:?}");
        let result = self
            .0
            .engine
            .execute(&self.0.snapshot().await, sql, None)
            .await
            .map_err(|e| e.to_string())?;
        let rows = rows_as_json(&result.batches).map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|row| row.iter().map(render).collect::<Vec<_>>().join(" | "))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

async fn run_dir(name: &str, backend: Backend) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    check_dir(&dir, "slt", || async move {
        Sql(TestStore::on(backend, "slt")
            .await
            .expect("the backend was available a moment ago"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_expected_outputs() {
    run_dir("slt", Backend::Embedded).await;
    run_dir("slt_datafusion", Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_expected_outputs_on_postgres() {
    if !available(Backend::Postgres, "the SQL expected outputs on PostgreSQL") {
        return;
    }
    run_dir("slt", Backend::Postgres).await;
    run_dir("slt_postgres", Backend::Postgres).await;
}
