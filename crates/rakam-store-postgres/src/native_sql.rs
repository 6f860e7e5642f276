//! The query surface inside PostgreSQL. A statement runs on a connection
//! logged in as the project's own role, which may only read the views of
//! the project's schema, in a READ ONLY transaction under
//! `statement_timeout`. The session is reset before the connection is
//! reused. Isolation therefore holds even for SQL the guard in front of
//! this would have missed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use rakam_store_api::{NativeDialect, NativeOutput, NativeSql, ProjectId, Result, StoreError};
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::NoTls;

use crate::arrow_rows::{check_columns, rows_to_batch, schema_of};
use crate::connection::{begin_read_only, classify, Shared};

#[derive(Debug)]
pub(crate) struct PgNativeSql {
    shared: Arc<Shared>,
}

impl PgNativeSql {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// A statement error as the client should see it.
fn statement_error(error: &tokio_postgres::Error, timeout: Duration) -> StoreError {
    let Some(db) = error.as_db_error() else {
        return classify("running the query", error);
    };
    if db.code() == &SqlState::QUERY_CANCELED {
        return StoreError::QueryTimeout {
            seconds: timeout.as_secs(),
        };
    }
    let position = match db.position() {
        Some(ErrorPosition::Original(position)) => Some(u64::from(*position)),
        _ => None,
    };
    StoreError::Sql {
        message: db.message().to_string(),
        position,
    }
}

/// Starts a READ ONLY transaction under `statement_timeout` and prepares
/// the statement in it.
async fn begin_and_prepare<'a>(
    client: &'a mut deadpool_postgres::Object,
    sql: &str,
    timeout: Duration,
) -> Result<(
    deadpool_postgres::Transaction<'a>,
    tokio_postgres::Statement,
)> {
    let transaction = begin_read_only(client, timeout).await?;
    let statement = transaction
        .prepare(sql)
        .await
        .map_err(|e| statement_error(&e, timeout))?;
    Ok((transaction, statement))
}

#[async_trait]
impl NativeSql for PgNativeSql {
    fn dialect(&self) -> NativeDialect {
        NativeDialect::PostgreSql
    }

    async fn execute(
        &self,
        project: &ProjectId,
        sql: &str,
        max_rows: u64,
        timeout: Duration,
    ) -> Result<NativeOutput> {
        let mut client = self.shared.reader(project.as_str()).await?;
        let cancel = client.cancel_token();
        let run = async {
            let (transaction, statement) = begin_and_prepare(&mut client, sql, timeout).await?;
            check_columns(statement.columns())?;
            if !statement.params().is_empty() {
                return Err(StoreError::Sql {
                    message: "the query has parameters ($1, …), which /query/execute cannot bind"
                        .into(),
                    position: None,
                });
            }
            // A portal's row limit of 0 means "all rows": a limit of 0 is
            // answered without running the statement.
            let rows = if max_rows == 0 {
                Vec::new()
            } else {
                let portal = transaction
                    .bind(&statement, &[])
                    .await
                    .map_err(|e| statement_error(&e, timeout))?;
                let max_rows = i32::try_from(max_rows).unwrap_or(i32::MAX);
                transaction
                    .query_portal(&portal, max_rows)
                    .await
                    .map_err(|e| statement_error(&e, timeout))?
            };
            let batch = rows_to_batch(statement.columns(), &rows)?;
            // Read only: nothing to commit; rolling back ends it at once.
            let _ = transaction.rollback().await;
            Ok(NativeOutput {
                schema: batch.schema(),
                batches: vec![batch],
            })
        };
        // statement_timeout stops the server; this stops a client waiting on
        // a server that no longer answers.
        match tokio::time::timeout(timeout + Duration::from_secs(2), run).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let _ = cancel.cancel_query(NoTls).await;
                Err(StoreError::QueryTimeout {
                    seconds: timeout.as_secs(),
                })
            }
        }
    }

    async fn describe(&self, project: &ProjectId, sql: &str) -> Result<SchemaRef> {
        let mut client = self.shared.reader(project.as_str()).await?;
        let timeout = self.shared.options.statement_timeout;
        let (transaction, statement) = begin_and_prepare(&mut client, sql, timeout).await?;
        let schema = schema_of(statement.columns())?;
        let _ = transaction.rollback().await;
        Ok(schema)
    }
}
