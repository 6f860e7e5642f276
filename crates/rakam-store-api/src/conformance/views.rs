//! Materialized views' storage and the server-time barrier their
//! refreshes read up to (ADR 0013).

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use rakam_model::FieldType;

use super::{append, batch_of, column, project, query, StoreFactory};
use crate::{Backend, ProjectId, StoreError, ViewDefinition, ViewState, ViewWrite, ViewWriteMode};

/// Appends before a barrier are visible once it returns; an append whose
/// `_server_time` is at or before it is stored after it.
pub async fn server_time_barrier_orders_appends(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let info = project(&backend.catalog, "barrier").await;
    let outcome = backend
        .catalog
        .evolve(&info.id, "click", &[column("n", FieldType::Long)])
        .await
        .expect("evolve");
    let early = batch_of(
        &outcome.schema,
        &[100],
        vec![("n", Arc::new(Int64Array::from(vec![1])))],
    );
    append(&backend, &info, vec![("click".into(), early)]).await;
    let barrier = backend
        .sink
        .server_time_barrier(&info.id, 0)
        .await
        .expect("barrier");
    assert!(barrier >= 100);
    let counted = |sql: String| {
        let (backend, info) = (backend.clone(), info.clone());
        async move { query(&backend, &info, &sql).await }
    };
    let through =
        format!("SELECT count(*) AS n FROM click WHERE CAST(_server_time AS BIGINT) <= {barrier}");
    assert!(counted(through.clone()).await.contains("| 1 |"));
    // Received (by its own clock) before the barrier, stored after it.
    let late = batch_of(
        &outcome.schema,
        &[200],
        vec![("n", Arc::new(Int64Array::from(vec![2])))],
    );
    append(&backend, &info, vec![("click".into(), late)]).await;
    assert!(
        counted(through).await.contains("| 1 |"),
        "the late row counts as after the barrier"
    );
    let after =
        format!("SELECT count(*) AS n FROM click WHERE CAST(_server_time AS BIGINT) > {barrier}");
    assert!(counted(after).await.contains("| 1 |"));
    // The floor raises it; it never goes back.
    let floor = barrier + 3_600_000;
    let raised = backend
        .sink
        .server_time_barrier(&info.id, floor)
        .await
        .expect("barrier");
    assert!(raised >= floor);
    let again = backend
        .sink
        .server_time_barrier(&info.id, 0)
        .await
        .expect("barrier");
    assert!(again >= raised);
}

fn definition(name: &str) -> ViewDefinition {
    ViewDefinition {
        table_name: name.into(),
        name: format!("{name} (display)"),
        query: "SELECT 1".into(),
        update_interval_secs: 60,
        incremental: true,
        real_time: false,
        options: serde_json::json!({"k": "v"}),
    }
}

fn rows(values: &[(&str, i64)]) -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("total", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(
                values.iter().map(|(k, _)| Some(*k)).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                values.iter().map(|(_, v)| Some(*v)).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch");
    (schema, batch)
}

fn write_of(
    mode: ViewWriteMode,
    generation: u64,
    covered: i64,
    values: &[(&str, i64)],
) -> ViewWrite {
    let (schema, batch) = rows(values);
    ViewWrite {
        mode,
        expected_generation: generation,
        schema,
        batches: futures::stream::iter(vec![Ok(batch)]).boxed(),
        state: ViewState {
            generation: generation + 1,
            last_update_ms: Some(covered + 1),
            covered_through_ms: Some(covered),
            rows: 0,
        },
    }
}

async fn read_view(backend: &Backend, project: &ProjectId, name: &str) -> Option<String> {
    let (provider, _) = backend
        .views
        .table_provider(project, name)
        .await
        .expect("provider")?;
    let context = SessionContext::new();
    context.register_table("v", provider).expect("register");
    let batches = context
        .sql("SELECT key, total FROM v ORDER BY key, total")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("read");
    Some(pretty_format_batches(&batches).expect("format").to_string())
}

/// A view's rows and state commit together, refreshes of a stale
/// generation are refused, and all of it survives a restart.
pub async fn views_keep_rows_and_state(factory: &dyn StoreFactory) {
    let (project_id, other_id) = {
        let backend = factory.open().await;
        let info = project(&backend.catalog, "viewed").await;
        let other = project(&backend.catalog, "unviewed").await;
        let views = &backend.views;
        views
            .create(&info.id, definition("totals"))
            .await
            .expect("create");
        assert!(matches!(
            views.create(&info.id, definition("totals")).await,
            Err(StoreError::ViewExists(_))
        ));
        let fresh = views
            .get(&info.id, "totals")
            .await
            .expect("get")
            .expect("view");
        assert_eq!(fresh.state, ViewState::default());
        assert!(fresh.schema.is_none());
        assert!(read_view(&backend, &info.id, "totals").await.is_none());

        let state = views
            .write(
                &info.id,
                "totals",
                write_of(ViewWriteMode::Replace, 0, 10, &[("a", 1), ("b", 2)]),
            )
            .await
            .expect("first build");
        assert_eq!((state.generation, state.rows), (1, 2));
        let state = views
            .write(
                &info.id,
                "totals",
                write_of(ViewWriteMode::Append, 1, 20, &[("c", 3)]),
            )
            .await
            .expect("incremental");
        assert_eq!(
            (state.generation, state.rows, state.covered_through_ms),
            (2, 3, Some(20))
        );
        assert!(matches!(
            views
                .write(
                    &info.id,
                    "totals",
                    write_of(ViewWriteMode::Append, 1, 30, &[("x", 9)])
                )
                .await,
            Err(StoreError::ViewChanged(_))
        ));
        let other_columns = ViewWrite {
            schema: Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, true)])),
            batches: futures::stream::empty().boxed(),
            ..write_of(ViewWriteMode::Append, 2, 30, &[])
        };
        assert!(matches!(
            views.write(&info.id, "totals", other_columns).await,
            Err(StoreError::ViewColumnsChanged(_))
        ));
        // A refresh whose query fails half-way commits nothing.
        let (_, half) = rows(&[("q", 9)]);
        let failing = ViewWrite {
            batches: futures::stream::iter(vec![
                Ok(half),
                Err(StoreError::Data("the query failed".into())),
            ])
            .boxed(),
            ..write_of(ViewWriteMode::Append, 2, 30, &[])
        };
        assert!(views.write(&info.id, "totals", failing).await.is_err());
        let kept = views
            .get(&info.id, "totals")
            .await
            .expect("get")
            .expect("view");
        assert_eq!((kept.state.generation, kept.state.rows), (2, 3));
        // An append of no rows (an idle refresh) moves the state on.
        let idle = views
            .write(
                &info.id,
                "totals",
                write_of(ViewWriteMode::Append, 2, 25, &[]),
            )
            .await
            .expect("an empty append");
        assert_eq!(
            (idle.generation, idle.rows, idle.covered_through_ms),
            (3, 3, Some(25))
        );
        let mut changed = definition("totals");
        changed.real_time = true;
        views.change(&info.id, changed).await.expect("change");
        assert!(views.list(&other.id).await.expect("list").is_empty());
        views
            .create(&info.id, definition("doomed"))
            .await
            .expect("create");
        backend.sink.shutdown().await.expect("shutdown");
        (info.id, other.id)
    };
    let backend = factory.open().await;
    let views = &backend.views;
    let listed = views.list(&project_id).await.expect("list");
    let names: Vec<&str> = listed
        .iter()
        .map(|v| v.definition.table_name.as_str())
        .collect();
    assert_eq!(names, ["doomed", "totals"]);
    let totals = &listed[1];
    assert!(totals.definition.real_time);
    assert_eq!(totals.definition.options, serde_json::json!({"k": "v"}));
    assert_eq!(
        (
            totals.state.generation,
            totals.state.rows,
            totals.state.covered_through_ms
        ),
        (3, 3, Some(25))
    );
    let read = read_view(&backend, &project_id, "totals")
        .await
        .expect("rows");
    for row in ["| a   | 1     |", "| b   | 2     |", "| c   | 3     |"] {
        assert!(read.contains(row), "{read}");
    }
    assert!(views
        .list_all()
        .await
        .expect("all")
        .iter()
        .all(|(id, _)| *id != other_id));
    // A full refresh replaces the rows.
    views
        .write(
            &project_id,
            "totals",
            write_of(ViewWriteMode::Replace, 3, 40, &[("z", 26)]),
        )
        .await
        .expect("replace");
    let read = read_view(&backend, &project_id, "totals")
        .await
        .expect("rows");
    assert!(
        read.contains("| z   | 26    |") && !read.contains("| a "),
        "{read}"
    );
    assert!(views.delete(&project_id, "totals").await.expect("delete"));
    assert!(!views
        .delete(&project_id, "totals")
        .await
        .expect("delete again"));
    assert!(views
        .get(&project_id, "totals")
        .await
        .expect("get")
        .is_none());
    assert!(read_view(&backend, &project_id, "totals").await.is_none());
    assert!(matches!(
        views
            .write(
                &project_id,
                "totals",
                write_of(ViewWriteMode::Replace, 4, 50, &[])
            )
            .await,
        Err(StoreError::ViewNotFound(_))
    ));
}
