//! The conformance suite every backend runs unchanged (feature `testsuite`).
//!
//! A backend's test module invokes [`event_store_conformance_tests!`] with an
//! expression that builds a fresh [`StoreFactory`], or `None` when the
//! backend's service is absent (the backend prints why; CI makes absence a
//! failure). Each test opens the backend, and may open it again to check
//! what survives a restart.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use rakam_model::{CollectionSchema, Column, FieldType, UNMAPPED_COLUMN};

use crate::{Append, Backend, Catalog, KeyKind, LogPosition, ProjectInfo, StoreError};

mod versions;
mod views;
pub use versions::{
    appends_built_for_an_older_version, log_positions_replay, snapshots_follow_versions,
};
pub use views::{server_time_barrier_orders_appends, views_keep_rows_and_state};

/// Opens a backend at one location. Opening again after `shutdown` must see
/// everything the previous instance acknowledged.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    async fn open(&self) -> Backend;
}

#[macro_export]
macro_rules! event_store_conformance_tests {
    ($factory:expr) => {
        mod event_store_conformance {
            use super::*;
            $crate::event_store_conformance_tests!(@each $factory;
                projects_and_keys, evolution_adds_and_widens, concurrent_evolution_agrees,
                appended_rows_are_readable, widened_columns_read_old_rows, rows_survive_restart,
                projects_are_isolated, deleted_projects_lose_their_data, unmapped_rows_are_counted,
                many_small_appends, snapshots_follow_versions, appends_built_for_an_older_version,
                log_positions_replay, server_time_barrier_orders_appends,
                views_keep_rows_and_state);
        }
    };
    (@each $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(factory) = $factory else { return };
                $crate::conformance::$name(&factory).await;
            }
        )*
    };
}

pub(crate) fn column(name: &str, field_type: FieldType) -> Column {
    Column {
        name: name.into(),
        field_type,
    }
}

/// A batch in the schema's Arrow form with `_time` = the given values and
/// the named columns set; every other column null.
pub fn batch_of(
    schema: &CollectionSchema,
    times: &[i64],
    columns: Vec<(&str, ArrayRef)>,
) -> RecordBatch {
    let arrow_schema = schema.arrow_schema();
    let rows = times.len();
    let arrays: Vec<ArrayRef> = arrow_schema
        .fields()
        .iter()
        .map(|field| {
            if field.name() == "_time" || field.name() == "_server_time" {
                let values = TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC");
                return Arc::new(values) as ArrayRef;
            }
            columns
                .iter()
                .find(|(name, _)| *name == field.name())
                .map(|(_, array)| array.clone())
                .unwrap_or_else(|| {
                    datafusion::arrow::array::new_null_array(field.data_type(), rows)
                })
        })
        .collect();
    RecordBatch::try_new(arrow_schema, arrays).expect("batch matches its schema")
}

pub(crate) async fn project(catalog: &Arc<dyn Catalog>, name: &str) -> ProjectInfo {
    let (info, _keys) = catalog.create_project(name).await.expect("create project");
    assert_eq!(
        catalog.project(name).await.expect("lookup"),
        Some(info.clone())
    );
    info
}

/// Appends one request's batches, built for the project's current version.
pub async fn append(
    backend: &Backend,
    project: &ProjectInfo,
    batches: Vec<(String, RecordBatch)>,
) -> Option<LogPosition> {
    let snapshot = backend
        .catalog
        .snapshot(&project.id)
        .await
        .expect("snapshot");
    backend
        .sink
        .append(Append {
            project: project.id.clone(),
            schema_version: snapshot.version,
            batches,
        })
        .await
        .expect("append")
}

/// Runs SQL over the given collections of a project and pretty-prints it.
pub async fn query(backend: &Backend, project: &ProjectInfo, sql: &str) -> String {
    let context = SessionContext::new();
    let snapshot = backend
        .catalog
        .snapshot(&project.id)
        .await
        .expect("snapshot");
    for (collection, schema) in &snapshot.collections {
        let provider = backend
            .tables
            .table_provider(&project.id, collection, schema.arrow_schema())
            .await
            .expect("provider");
        context
            .register_table(collection.as_str(), provider)
            .expect("register");
    }
    let batches = context
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("execute");
    pretty_format_batches(&batches).expect("format").to_string()
}

pub async fn projects_and_keys(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let (shop, keys) = catalog.create_project("shop").await.expect("create");
    assert_eq!(shop.name, "shop");
    assert!(matches!(
        catalog.create_project("shop").await,
        Err(StoreError::ProjectExists(_))
    ));
    assert!(catalog.create_project("bad name!").await.is_err());
    let listed: Vec<String> = catalog
        .list_projects()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(listed.contains(&"shop".to_string()));
    for (key, kind) in [
        (&keys.master_key, KeyKind::Master),
        (&keys.read_key, KeyKind::Read),
        (&keys.write_key, KeyKind::Write),
    ] {
        let (found, found_kind) = catalog
            .authenticate(key)
            .await
            .expect("auth")
            .expect("known key");
        assert_eq!(found.name, "shop");
        assert_eq!(found_kind, kind);
    }
    assert!(catalog
        .authenticate("not-a-key")
        .await
        .expect("auth")
        .is_none());
    let extra = catalog.create_api_keys(&shop.id).await.expect("more keys");
    assert_ne!(extra.read_key, keys.read_key);
    assert!(catalog
        .authenticate(&extra.read_key)
        .await
        .expect("auth")
        .is_some());
    assert!(catalog
        .authenticate(&keys.read_key)
        .await
        .expect("auth")
        .is_some());
    catalog.delete_project(&shop.id).await.expect("delete");
    assert!(catalog
        .authenticate(&keys.master_key)
        .await
        .expect("auth")
        .is_none());
    assert!(matches!(
        catalog.delete_project(&shop.id).await,
        Err(StoreError::ProjectNotFound(_))
    ));
}

pub async fn evolution_adds_and_widens(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "evolve").await;
    let first = catalog
        .evolve(
            &info.id,
            "page",
            &[
                column("price", FieldType::Long),
                column("url", FieldType::String),
            ],
        )
        .await
        .expect("evolve");
    assert_eq!(first.schema.column_type("price"), Some(&FieldType::Long));
    let widened = catalog
        .evolve(
            &info.id,
            "page",
            &[
                column("price", FieldType::Double),
                column("url", FieldType::Long),
            ],
        )
        .await
        .expect("widen");
    assert_eq!(
        widened.schema.column_type("price"),
        Some(&FieldType::Double)
    );
    // A conflicting type never retypes a column.
    assert_eq!(widened.schema.column_type("url"), Some(&FieldType::String));
    let snapshot = catalog.snapshot(&info.id).await.expect("snapshot");
    assert_eq!(snapshot.collection_names(), ["page"]);
    assert_eq!(snapshot.version, widened.version);
    assert!(widened.version > first.version);
}

pub async fn concurrent_evolution_agrees(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "race").await;
    let types = [
        FieldType::String,
        FieldType::Long,
        FieldType::Boolean,
        FieldType::Date,
    ];
    let mut tasks = Vec::new();
    for index in 0..16 {
        let (catalog, id) = (catalog.clone(), info.id.clone());
        let field_type = types[index % types.len()].clone();
        tasks.push(tokio::spawn(async move {
            catalog
                .evolve(&id, "click", &[column("contested", field_type)])
                .await
                .expect("evolve")
                .schema
                .column_type("contested")
                .cloned()
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.expect("task"));
    }
    let snapshot = catalog.snapshot(&info.id).await.expect("snapshot");
    let settled = snapshot.schema("click").expect("exists");
    let winner = settled.column_type("contested").cloned();
    assert!(
        seen.iter().all(|t| *t == winner),
        "callers disagree: {seen:?}"
    );
    assert_eq!(settled.columns.len(), 1);
}

pub async fn appended_rows_are_readable(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "readable").await;
    let outcome = catalog
        .evolve(&info.id, "purchase", &[column("amount", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &outcome.schema,
        &[1_000, 2_000, 3_000],
        vec![("amount", Arc::new(Int64Array::from(vec![10, 20, 30])))],
    );
    append(&backend, &info, vec![("purchase".into(), batch)]).await;
    let result = query(
        &backend,
        &info,
        "SELECT count(*) AS n, sum(amount) AS total FROM purchase",
    )
    .await;
    assert!(result.contains("| 3 | 60    |"), "{result}");
    backend.sink.flush().await.expect("flush");
    let after_flush = query(
        &backend,
        &info,
        "SELECT count(*) AS n, sum(amount) AS total FROM purchase",
    )
    .await;
    assert_eq!(result, after_flush);
}

pub async fn widened_columns_read_old_rows(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "widen").await;
    let first = catalog
        .evolve(&info.id, "m", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let old = batch_of(
        &first.schema,
        &[1],
        vec![("v", Arc::new(Int64Array::from(vec![7])))],
    );
    append(&backend, &info, vec![("m".into(), old)]).await;
    backend.sink.flush().await.expect("flush");
    let second = catalog
        .evolve(&info.id, "m", &[column("v", FieldType::Double)])
        .await
        .expect("widen");
    let new = batch_of(
        &second.schema,
        &[2],
        vec![("v", Arc::new(Float64Array::from(vec![0.5])))],
    );
    append(&backend, &info, vec![("m".into(), new)]).await;
    let result = query(&backend, &info, "SELECT v FROM m ORDER BY _time").await;
    assert!(
        result.contains("| 7.0 |") && result.contains("| 0.5 |"),
        "{result}"
    );
}

pub async fn rows_survive_restart(factory: &dyn StoreFactory) {
    let sql = "SELECT count(*) AS n, min(name) AS first, max(name) AS last FROM signup";
    let before = {
        let backend = factory.open().await;
        let catalog = backend.catalog.clone();
        let info = project(&catalog, "durable").await;
        let outcome = catalog
            .evolve(&info.id, "signup", &[column("name", FieldType::String)])
            .await
            .expect("evolve");
        for round in 0..3_i64 {
            let batch = batch_of(
                &outcome.schema,
                &[round],
                vec![(
                    "name",
                    Arc::new(StringArray::from(vec![format!("user{round}")])),
                )],
            );
            append(&backend, &info, vec![("signup".into(), batch)]).await;
        }
        let before = query(&backend, &info, sql).await;
        backend.sink.shutdown().await.expect("shutdown");
        before
    };
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = catalog
        .project("durable")
        .await
        .expect("lookup")
        .expect("still there");
    assert_eq!(query(&backend, &info, sql).await, before);
    assert!(before.contains("| 3 | user0 | user2 |"), "{before}");
}

pub async fn projects_are_isolated(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let alpha = project(&catalog, "alpha").await;
    let beta = project(&catalog, "beta").await;
    let outcome = catalog
        .evolve(&alpha.id, "secret", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &outcome.schema,
        &[1],
        vec![("v", Arc::new(Int64Array::from(vec![1])))],
    );
    append(&backend, &alpha, vec![("secret".into(), batch)]).await;
    assert!(catalog
        .snapshot(&beta.id)
        .await
        .expect("snapshot")
        .collections
        .is_empty());
    let provider = backend
        .tables
        .table_provider(&beta.id, "secret", outcome.schema.arrow_schema())
        .await
        .expect("provider");
    let context = SessionContext::new();
    context
        .register_table("secret", provider)
        .expect("register");
    let rows = context
        .sql("SELECT count(*) FROM secret")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let text = pretty_format_batches(&rows).expect("format").to_string();
    assert!(text.contains("| 0 "), "beta sees alpha's rows: {text}");
}

pub async fn deleted_projects_lose_their_data(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let doomed = project(&catalog, "doomed").await;
    let outcome = catalog
        .evolve(&doomed.id, "e", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &outcome.schema,
        &[1],
        vec![("v", Arc::new(Int64Array::from(vec![1])))],
    );
    append(&backend, &doomed, vec![("e".into(), batch)]).await;
    backend
        .sink
        .delete_project(&doomed.id)
        .await
        .expect("delete data");
    catalog
        .delete_project(&doomed.id)
        .await
        .expect("delete project");
    let reborn = project(&catalog, "doomed").await;
    assert_ne!(reborn.id, doomed.id);
    let stats = backend.tables.stats(&reborn.id, "e").await.expect("stats");
    assert_eq!(stats.rows, 0);
}

pub async fn unmapped_rows_are_counted(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "unmapped").await;
    let outcome = catalog
        .evolve(&info.id, "e", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &outcome.schema,
        &[1, 2, 3],
        vec![(
            UNMAPPED_COLUMN,
            Arc::new(StringArray::from(vec![
                Some(r#"{"v":"x"}"#),
                None,
                Some(r#"{"v":[]}"#),
            ])),
        )],
    );
    append(&backend, &info, vec![("e".into(), batch)]).await;
    assert_eq!(
        backend
            .tables
            .stats(&info.id, "e")
            .await
            .expect("stats")
            .unmapped_rows,
        2
    );
    backend.sink.flush().await.expect("flush");
    let stats = backend.tables.stats(&info.id, "e").await.expect("stats");
    assert_eq!((stats.rows, stats.unmapped_rows), (3, 2));
}

pub async fn many_small_appends(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "small").await;
    let outcome = catalog
        .evolve(&info.id, "tick", &[column("n", FieldType::Long)])
        .await
        .expect("evolve");
    let mut tasks = Vec::new();
    for n in 0..200_i64 {
        let sink = backend.sink.clone();
        let project = info.id.clone();
        let version = outcome.version;
        let batch = batch_of(
            &outcome.schema,
            &[n],
            vec![("n", Arc::new(Int64Array::from(vec![n])))],
        );
        tasks.push(tokio::spawn(async move {
            sink.append(Append {
                project,
                schema_version: version,
                batches: vec![("tick".into(), batch)],
            })
            .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("append");
    }
    let result = query(
        &backend,
        &info,
        "SELECT count(*) AS n, count(DISTINCT n) AS d, sum(n) AS s FROM tick",
    )
    .await;
    assert!(result.contains("| 200 | 200 | 19900 |"), "{result}");
}
