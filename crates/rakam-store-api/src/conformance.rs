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

use crate::{Catalog, EventStore, KeyKind, ProjectInfo, StoreError};

/// Opens a backend at one location. Opening again after `shutdown` must see
/// everything the previous instance acknowledged.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    async fn open(&self) -> (Arc<dyn Catalog>, Arc<dyn EventStore>);
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
                many_small_appends);
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

fn column(name: &str, field_type: FieldType) -> Column {
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

async fn project(catalog: &Arc<dyn Catalog>, name: &str) -> ProjectInfo {
    catalog.create_project(name).await.expect("create project");
    catalog
        .project(name)
        .await
        .expect("lookup")
        .expect("project exists")
}

/// Runs SQL over the given collections of a project and pretty-prints it.
pub async fn query(
    catalog: &Arc<dyn Catalog>,
    store: &Arc<dyn EventStore>,
    project: &ProjectInfo,
    sql: &str,
) -> String {
    let context = SessionContext::new();
    for collection in catalog
        .collections(&project.name)
        .await
        .expect("collections")
    {
        let schema = catalog
            .schema(&project.name, &collection)
            .await
            .expect("schema")
            .expect("collection has a schema");
        let provider = store
            .table_provider(project, &collection, schema.arrow_schema())
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
    let (catalog, _store) = factory.open().await;
    let keys = catalog.create_project("shop").await.expect("create");
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
    let extra = catalog.create_api_keys("shop").await.expect("more keys");
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
    catalog.delete_project("shop").await.expect("delete");
    assert!(catalog
        .authenticate(&keys.master_key)
        .await
        .expect("auth")
        .is_none());
    assert!(matches!(
        catalog.delete_project("shop").await,
        Err(StoreError::ProjectNotFound(_))
    ));
}

pub async fn evolution_adds_and_widens(factory: &dyn StoreFactory) {
    let (catalog, _store) = factory.open().await;
    project(&catalog, "evolve").await;
    let first = catalog
        .evolve(
            "evolve",
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
            "evolve",
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
    assert_eq!(
        catalog.collections("evolve").await.expect("collections"),
        ["page"]
    );
}

pub async fn concurrent_evolution_agrees(factory: &dyn StoreFactory) {
    let (catalog, _store) = factory.open().await;
    project(&catalog, "race").await;
    let types = [
        FieldType::String,
        FieldType::Long,
        FieldType::Boolean,
        FieldType::Date,
    ];
    let mut tasks = Vec::new();
    for index in 0..16 {
        let catalog = catalog.clone();
        let field_type = types[index % types.len()].clone();
        tasks.push(tokio::spawn(async move {
            catalog
                .evolve("race", "click", &[column("contested", field_type)])
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
    let settled = catalog
        .schema("race", "click")
        .await
        .expect("schema")
        .expect("exists");
    let winner = settled.column_type("contested").cloned();
    assert!(
        seen.iter().all(|t| *t == winner),
        "callers disagree: {seen:?}"
    );
    assert_eq!(settled.columns.len(), 1);
}

pub async fn appended_rows_are_readable(factory: &dyn StoreFactory) {
    let (catalog, store) = factory.open().await;
    let info = project(&catalog, "readable").await;
    let outcome = catalog
        .evolve("readable", "purchase", &[column("amount", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &outcome.schema,
        &[1_000, 2_000, 3_000],
        vec![("amount", Arc::new(Int64Array::from(vec![10, 20, 30])))],
    );
    store
        .append(&info, vec![("purchase".into(), batch)])
        .await
        .expect("append");
    let result = query(
        &catalog,
        &store,
        &info,
        "SELECT count(*) AS n, sum(amount) AS total FROM purchase",
    )
    .await;
    assert!(result.contains("| 3 | 60    |"), "{result}");
    store.flush().await.expect("flush");
    let after_flush = query(
        &catalog,
        &store,
        &info,
        "SELECT count(*) AS n, sum(amount) AS total FROM purchase",
    )
    .await;
    assert_eq!(result, after_flush);
}

pub async fn widened_columns_read_old_rows(factory: &dyn StoreFactory) {
    let (catalog, store) = factory.open().await;
    let info = project(&catalog, "widen").await;
    let first = catalog
        .evolve("widen", "m", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let old = batch_of(
        &first.schema,
        &[1],
        vec![("v", Arc::new(Int64Array::from(vec![7])))],
    );
    store
        .append(&info, vec![("m".into(), old)])
        .await
        .expect("append");
    store.flush().await.expect("flush");
    let second = catalog
        .evolve("widen", "m", &[column("v", FieldType::Double)])
        .await
        .expect("widen");
    let new = batch_of(
        &second.schema,
        &[2],
        vec![("v", Arc::new(Float64Array::from(vec![0.5])))],
    );
    store
        .append(&info, vec![("m".into(), new)])
        .await
        .expect("append");
    let result = query(&catalog, &store, &info, "SELECT v FROM m ORDER BY _time").await;
    assert!(
        result.contains("| 7.0 |") && result.contains("| 0.5 |"),
        "{result}"
    );
}

pub async fn rows_survive_restart(factory: &dyn StoreFactory) {
    let sql = "SELECT count(*) AS n, min(name) AS first, max(name) AS last FROM signup";
    let before = {
        let (catalog, store) = factory.open().await;
        let info = project(&catalog, "durable").await;
        let outcome = catalog
            .evolve("durable", "signup", &[column("name", FieldType::String)])
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
            store
                .append(&info, vec![("signup".into(), batch)])
                .await
                .expect("append");
        }
        let before = query(&catalog, &store, &info, sql).await;
        store.shutdown().await.expect("shutdown");
        before
    };
    let (catalog, store) = factory.open().await;
    let info = catalog
        .project("durable")
        .await
        .expect("lookup")
        .expect("still there");
    assert_eq!(query(&catalog, &store, &info, sql).await, before);
    assert!(before.contains("| 3 | user0 | user2 |"), "{before}");
}

pub async fn projects_are_isolated(factory: &dyn StoreFactory) {
    let (catalog, store) = factory.open().await;
    let alpha = project(&catalog, "alpha").await;
    let beta = project(&catalog, "beta").await;
    let outcome = catalog
        .evolve("alpha", "secret", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &outcome.schema,
        &[1],
        vec![("v", Arc::new(Int64Array::from(vec![1])))],
    );
    store
        .append(&alpha, vec![("secret".into(), batch)])
        .await
        .expect("append");
    assert!(catalog
        .collections("beta")
        .await
        .expect("collections")
        .is_empty());
    let provider = store
        .table_provider(&beta, "secret", outcome.schema.arrow_schema())
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
    let (catalog, store) = factory.open().await;
    let doomed = project(&catalog, "doomed").await;
    let outcome = catalog
        .evolve("doomed", "e", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &outcome.schema,
        &[1],
        vec![("v", Arc::new(Int64Array::from(vec![1])))],
    );
    store
        .append(&doomed, vec![("e".into(), batch)])
        .await
        .expect("append");
    store.delete_project(&doomed).await.expect("delete data");
    catalog
        .delete_project("doomed")
        .await
        .expect("delete project");
    let reborn = project(&catalog, "doomed").await;
    assert_ne!(reborn.id, doomed.id);
    let stats = store.stats(&reborn, "e").await.expect("stats");
    assert_eq!(stats.rows, 0);
}

pub async fn unmapped_rows_are_counted(factory: &dyn StoreFactory) {
    let (catalog, store) = factory.open().await;
    let info = project(&catalog, "unmapped").await;
    let outcome = catalog
        .evolve("unmapped", "e", &[column("v", FieldType::Long)])
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
    store
        .append(&info, vec![("e".into(), batch)])
        .await
        .expect("append");
    assert_eq!(
        store.stats(&info, "e").await.expect("stats").unmapped_rows,
        2
    );
    store.flush().await.expect("flush");
    let stats = store.stats(&info, "e").await.expect("stats");
    assert_eq!((stats.rows, stats.unmapped_rows), (3, 2));
}

pub async fn many_small_appends(factory: &dyn StoreFactory) {
    let (catalog, store) = factory.open().await;
    let info = project(&catalog, "small").await;
    let outcome = catalog
        .evolve("small", "tick", &[column("n", FieldType::Long)])
        .await
        .expect("evolve");
    let mut tasks = Vec::new();
    for n in 0..200_i64 {
        let store = store.clone();
        let info = info.clone();
        let batch = batch_of(
            &outcome.schema,
            &[n],
            vec![("n", Arc::new(Int64Array::from(vec![n])))],
        );
        tasks.push(tokio::spawn(async move {
            store.append(&info, vec![("tick".into(), batch)]).await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("append");
    }
    let result = query(
        &catalog,
        &store,
        &info,
        "SELECT count(*) AS n, count(DISTINCT n) AS d, sum(n) AS s FROM tick",
    )
    .await;
    assert!(result.contains("| 200 | 200 | 19900 |"), "{result}");
}
