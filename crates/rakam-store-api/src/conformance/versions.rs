//! Conformance tests of the parts' contract: versioned snapshots, appends
//! built for an older version, and log positions with replay.

use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use rakam_model::FieldType;

use super::{append, batch_of, column, project, query, StoreFactory};
use crate::{Append, LogPosition, StoreError};

pub async fn snapshots_follow_versions(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "versions").await;
    let empty = catalog.snapshot(&info.id).await.expect("snapshot");
    assert!(empty.collections.is_empty());
    assert_eq!(empty.project, info);
    let added = catalog
        .evolve(&info.id, "page", &[column("url", FieldType::String)])
        .await
        .expect("evolve");
    assert!(added.version > empty.version);
    let unchanged = catalog
        .evolve(&info.id, "page", &[column("url", FieldType::String)])
        .await
        .expect("evolve again");
    assert_eq!(
        unchanged.version, added.version,
        "no change, no new version"
    );
    let snapshot = catalog.snapshot(&info.id).await.expect("snapshot");
    assert_eq!(snapshot.version, added.version);
    assert_eq!(
        snapshot.schema("page").map(|s| s.columns.len()),
        Some(1),
        "{snapshot:?}"
    );
    let other = project(&catalog, "bystander").await;
    let before = catalog.snapshot(&other.id).await.expect("snapshot");
    catalog
        .evolve(&info.id, "page", &[column("title", FieldType::String)])
        .await
        .expect("evolve");
    let after = catalog.snapshot(&other.id).await.expect("snapshot");
    assert_eq!(before.version, after.version, "projects version apart");
    catalog.delete_project(&info.id).await.expect("delete");
    assert!(matches!(
        catalog.snapshot(&info.id).await,
        Err(StoreError::ProjectNotFound(_))
    ));
}

/// A node whose snapshot is a version behind still appends safely: the
/// batch is read as the current schema (a widened column casts).
pub async fn appends_built_for_an_older_version(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "stale").await;
    let old = catalog
        .evolve(&info.id, "m", &[column("v", FieldType::Long)])
        .await
        .expect("evolve");
    let batch = batch_of(
        &old.schema,
        &[1, 2],
        vec![("v", Arc::new(Int64Array::from(vec![3, 4])))],
    );
    let new = catalog
        .evolve(
            &info.id,
            "m",
            &[column("v", FieldType::Double), column("w", FieldType::Long)],
        )
        .await
        .expect("widen");
    assert!(new.version > old.version);
    backend
        .sink
        .append(Append {
            project: info.id.clone(),
            schema_version: old.version,
            batches: vec![("m".into(), batch)],
        })
        .await
        .expect("append built for the older version");
    let result = query(&backend, &info, "SELECT sum(v) AS s, count(w) AS w FROM m").await;
    assert!(result.contains("| 7.0 | 0 |"), "{result}");
}

/// Sinks with a replayable log hand out growing positions and replay what
/// follows one, across a flush and a restart while it is retained.
pub async fn log_positions_replay(factory: &dyn StoreFactory) {
    let backend = factory.open().await;
    let catalog = backend.catalog.clone();
    let info = project(&catalog, "replay").await;
    let outcome = catalog
        .evolve(&info.id, "e", &[column("n", FieldType::Long)])
        .await
        .expect("evolve");
    let mut positions = Vec::new();
    for n in 0..3_i64 {
        let batch = batch_of(
            &outcome.schema,
            &[n],
            vec![("n", Arc::new(Int64Array::from(vec![n])))],
        );
        positions.push(append(&backend, &info, vec![("e".into(), batch)]).await);
    }
    if !backend.capabilities.replayable_log {
        assert!(positions.iter().all(Option::is_none));
        assert!(backend
            .sink
            .replay(LogPosition(0))
            .await
            .expect("replay")
            .is_none());
        return;
    }
    let positions: Vec<LogPosition> = positions
        .into_iter()
        .map(|p| p.expect("position"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    backend.sink.retain_log_after(positions[0]);
    let replayed_ns = |appends: Vec<crate::LoggedAppend>| -> Vec<(LogPosition, usize)> {
        appends
            .into_iter()
            .filter(|a| a.append.project == info.id)
            .map(|a| {
                (
                    a.position,
                    a.append.batches.iter().map(|(_, b)| b.num_rows()).sum(),
                )
            })
            .collect()
    };
    let expected = vec![(positions[1], 1), (positions[2], 1)];
    let replayed = backend.sink.replay(positions[0]).await.expect("replay");
    assert_eq!(replayed_ns(replayed.expect("replayable")), expected);
    backend.sink.flush().await.expect("flush");
    backend.sink.shutdown().await.expect("shutdown");
    drop(backend);
    let reopened = factory.open().await;
    let replayed = reopened.sink.replay(positions[0]).await.expect("replay");
    assert_eq!(replayed_ns(replayed.expect("replayable")), expected);
    let batch = batch_of(
        &outcome.schema,
        &[9],
        vec![("n", Arc::new(Int64Array::from(vec![9])))],
    );
    let next = append(&reopened, &info, vec![("e".into(), batch)]).await;
    assert!(next.is_some_and(|p| p > positions[2]), "{next:?}");
}
