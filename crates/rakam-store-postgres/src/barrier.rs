//! The server-time barrier of view refreshes on PostgreSQL (ADR 0013):
//! every append transaction holds a share lock on its project's row in
//! `rakam_meta.server_time_barriers` until it commits; raising the barrier
//! updates the row, so it waits for the appends in flight, and appends
//! after it read the new value.

use deadpool_postgres::GenericClient;
use rakam_store_api::Result;

use crate::connection::{pg_error, Shared};

/// The barrier row every append of the project holds a share lock on, so a
/// barrier waits for the appends in flight (see `EventSink::server_time_barrier`).
pub(crate) async fn hold_barrier_share(
    client: &impl GenericClient,
    project_id: &str,
) -> Result<i64> {
    loop {
        let row = client
            .query_opt(
                "SELECT barrier_ms FROM rakam_meta.server_time_barriers WHERE project_id = $1 FOR SHARE",
                &[&project_id],
            )
            .await
            .map_err(pg_error("reading the server-time barrier"))?;
        if let Some(row) = row {
            return Ok(row.get(0));
        }
        // The row is made once per project; a barrier that made it at the
        // same moment is fine: the insert then waits or does nothing.
        client
            .execute(
                "INSERT INTO rakam_meta.server_time_barriers (project_id, barrier_ms)
                 VALUES ($1, 0) ON CONFLICT DO NOTHING",
                &[&project_id],
            )
            .await
            .map_err(pg_error("creating the server-time barrier"))?;
    }
}

/// Raises the project's barrier; waits for every append holding a share
/// lock on it to commit, and makes later ones wait until this commits.
pub(crate) async fn raise_barrier(shared: &Shared, project_id: &str, at_least: i64) -> Result<i64> {
    let client = shared.admin().await?;
    let row = client
        .query_one(
            "INSERT INTO rakam_meta.server_time_barriers AS b (project_id, barrier_ms)
             VALUES ($1, $2)
             ON CONFLICT (project_id) DO UPDATE SET barrier_ms = greatest(b.barrier_ms, EXCLUDED.barrier_ms)
             RETURNING barrier_ms",
            &[&project_id, &at_least],
        )
        .await
        .map_err(pg_error("raising the server-time barrier"))?;
    Ok(row.get(0))
}
