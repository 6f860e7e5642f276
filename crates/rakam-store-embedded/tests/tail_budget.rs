//! Ingest that outruns flushing waits for it instead of growing the tails
//! without bound.

use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use rakam_model::{Column, FieldType};
use rakam_store_api::conformance::batch_of;
use rakam_store_api::Append;
use rakam_store_embedded::{open_backend, EmbeddedOptions};

fn manifest_files(dir: &std::path::Path, project_id: &str) -> usize {
    let path = dir
        .join("tables")
        .join(project_id)
        .join("e")
        .join("manifest.json");
    std::fs::read(path).map_or(0, |bytes| {
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        manifest["files"].as_array().map_or(0, Vec::len)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_while_the_tails_are_over_twice_their_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = EmbeddedOptions::new(dir.path());
    // Only the tail budget flushes: not rows, not age, and nothing merges.
    options.max_tail_bytes = 1;
    options.flush_rows = usize::MAX;
    options.flush_interval = std::time::Duration::from_secs(3600);
    options.compaction_min_files = usize::MAX;
    let backend = open_backend(options).await.expect("open");
    let (project, _) = backend.catalog.create_project("p").await.expect("project");
    let evolved = backend
        .catalog
        .evolve(
            &project.id,
            "e",
            &[Column {
                name: "n".into(),
                field_type: FieldType::Long,
            }],
        )
        .await
        .expect("evolve");
    let appends = 5;
    for round in 0..appends {
        let batch = batch_of(
            &evolved.schema,
            &[1_000 + round],
            vec![("n", Arc::new(Int64Array::from(vec![round])))],
        );
        backend
            .sink
            .append(Append {
                project: project.id.clone(),
                schema_version: evolved.version,
                batches: vec![("e".into(), batch)],
            })
            .await
            .expect("append");
    }
    // Each append after the first waited until the one before was flushed
    // on its own; without the wait the five would share one or two files.
    assert!(
        manifest_files(dir.path(), project.id.as_str()) >= appends as usize - 1,
        "appends did not wait for the tails to be flushed"
    );
}
