//! Two server processes on one database: each caches snapshots and keys,
//! and a change made through one reaches the other's cache.

use std::time::{Duration, Instant};

use rakam_model::{Column, FieldType};
use rakam_store_postgres::testing::TempDatabase;
use rakam_store_postgres::{open_backend, PgOptions};

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_the_other_nodes_cache() {
    let Some(database) = TempDatabase::create("the shared catalog test") else {
        return;
    };
    let first = open_backend(PgOptions::new(database.url.clone()))
        .await
        .expect("first node");
    let second = open_backend(PgOptions::new(database.url.clone()))
        .await
        .expect("second node");
    let (project, keys) = first
        .catalog
        .create_project("shared")
        .await
        .expect("project");
    let cached = second
        .catalog
        .snapshot(&project.id)
        .await
        .expect("snapshot");
    assert!(cached.collections.is_empty());
    assert!(second
        .catalog
        .authenticate(&keys.read_key)
        .await
        .expect("auth")
        .is_some());
    let evolved = first
        .catalog
        .evolve(
            &project.id,
            "page",
            &[Column {
                name: "url".into(),
                field_type: FieldType::String,
            }],
        )
        .await
        .expect("evolve");
    eventually("the second node seeing the new column", || async {
        let snapshot = second
            .catalog
            .snapshot(&project.id)
            .await
            .expect("snapshot");
        snapshot.version == evolved.version && snapshot.schema("page").is_some()
    })
    .await;
    first
        .catalog
        .delete_project(&project.id)
        .await
        .expect("delete");
    eventually(
        "the second node forgetting the deleted project's keys",
        || async {
            second
                .catalog
                .authenticate(&keys.read_key)
                .await
                .expect("auth")
                .is_none()
        },
    )
    .await;
    first.sink.shutdown().await.expect("shutdown");
    second.sink.shutdown().await.expect("shutdown");
}
