//! Small files are merged in the background without changing what queries see.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::prelude::SessionContext;
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
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("manifest")).expect("json");
    manifest["files"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = EmbeddedOptions::new(dir.path());
    options.compaction_min_files = 4;
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
    let schema = evolved.schema;
    for round in 0..6_i64 {
        let values: Vec<i64> = (round * 10..round * 10 + 10).collect();
        let times: Vec<i64> = values.iter().map(|v| 1_000 - v).collect();
        let batch = batch_of(
            &schema,
            &times,
            vec![("n", Arc::new(Int64Array::from(values)))],
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
        backend.sink.flush().await.expect("flush");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while manifest_files(dir.path(), project.id.as_str()) > 1 {
        assert!(Instant::now() < deadline, "files were not merged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let provider = backend
        .tables
        .table_provider(&project.id, "e", schema.arrow_schema())
        .await
        .expect("provider");
    let context = SessionContext::new();
    context.register_table("e", provider).expect("register");
    let values = single_row(
        &context,
        "SELECT count(*), count(DISTINCT n), sum(n) FROM e",
    )
    .await;
    assert_eq!(values, vec![60, 60, 1770]);
    // The merged file is sorted by time even though the rows arrived reversed.
    assert_eq!(
        single_row(&context, "SELECT n FROM e LIMIT 1").await,
        vec![59]
    );
}

async fn single_row(context: &SessionContext, sql: &str) -> Vec<i64> {
    let batches = context
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let batch = &batches[0];
    batch
        .columns()
        .iter()
        .map(|column| {
            let column = datafusion::arrow::compute::cast(
                column,
                &datafusion::arrow::datatypes::DataType::Int64,
            )
            .expect("cast");
            column
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .collect()
}

/// A closed WAL segment deleted by hand (what a damaged one's owner might
/// do) leaves acknowledged events out: the store refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_wal_segment_is_found_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || {
        let mut options = EmbeddedOptions::new(dir.path());
        options.wal_segment_bytes = 4096;
        options
    };
    {
        let backend = open_backend(options()).await.expect("open");
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
        for n in 0..40_i64 {
            let batch = batch_of(
                &evolved.schema,
                &[n],
                vec![("n", Arc::new(Int64Array::from(vec![n])))],
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
        // No flush: every record is only in the WAL.
    }
    let wal = dir.path().join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .expect("wal")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let reopened = open_backend(options()).await.expect("intact WAL opens");
    drop(reopened);
    std::fs::remove_file(&segments[1]).expect("delete a middle segment");
    let error = open_backend(options()).await.expect_err("refused");
    assert!(error.to_string().contains("missing"), "{error}");
    std::fs::remove_file(&segments[0]).expect("and the first");
    let error = open_backend(options()).await.expect_err("refused");
    assert!(error.to_string().contains("missing"), "{error}");
}
