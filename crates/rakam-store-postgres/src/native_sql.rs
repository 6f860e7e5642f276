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
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
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

    /// `_all` is built lazily, by the first statement that may read it.
    async fn ensure_all_view(&self, project: &ProjectId, sql: &str) -> Result<()> {
        if !sql.contains("_all") {
            return Ok(());
        }
        let mut client = self.shared.admin().await?;
        crate::ddl::ensure_all_view(
            &mut client,
            project.as_str(),
            self.shared.options.ddl_lock_timeout,
        )
        .await
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

/// Rows per batch handed out while a statement's rows stream in.
const ROWS_PER_BATCH: u64 = 8_192;

fn check_parameters(statement: &tokio_postgres::Statement) -> Result<()> {
    check_columns(statement.columns())?;
    if statement.params().is_empty() {
        return Ok(());
    }
    Err(StoreError::Sql {
        message: "the query has parameters ($1, …), which /query/execute cannot bind".into(),
        position: None,
    })
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
        self.retrying_lost_all_view(project, sql, || {
            self.execute_once(project, sql, max_rows, timeout)
        })
        .await
    }

    async fn describe(&self, project: &ProjectId, sql: &str) -> Result<SchemaRef> {
        self.retrying_lost_all_view(project, sql, || self.describe_once(project, sql))
            .await
    }
}

/// Schema changes racing one statement for `_all`, at most.
const ALL_VIEW_ATTEMPTS: u32 = 3;

/// A schema change dropped `_all` between building it and preparing the
/// statement (once prepared, the statement's lock keeps it).
fn lost_all_view(error: &StoreError) -> bool {
    matches!(error, StoreError::Sql { message, .. } if message == "relation \"_all\" does not exist")
}

impl PgNativeSql {
    /// Runs `once` after `_all` is built (when `sql` reads it), and again
    /// when a schema change dropped `_all` before the statement took it.
    async fn retrying_lost_all_view<T, F, Fut>(
        &self,
        project: &ProjectId,
        sql: &str,
        once: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            self.ensure_all_view(project, sql).await?;
            match once().await {
                Err(error) if attempt < ALL_VIEW_ATTEMPTS && lost_all_view(&error) => {
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    async fn execute_once(
        &self,
        project: &ProjectId,
        sql: &str,
        max_rows: u64,
        timeout: Duration,
    ) -> Result<NativeOutput> {
        let mut client = self.shared.reader(project.as_str()).await?;
        let cancel = client.cancel_token();
        let sql = sql.to_string();
        let (schema_sender, schema) = tokio::sync::oneshot::channel();
        // Rows are fetched a chunk at a time through a portal by a task that
        // owns the connection and its transaction; the stream reads its
        // batches. Dropping the stream stops the task, which rolls the
        // transaction back and returns the connection.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        tokio::spawn(async move {
            let prepared = begin_and_prepare(&mut client, &sql, timeout).await;
            let (transaction, statement) = match prepared.and_then(|(t, s)| {
                check_parameters(&s)?;
                Ok((t, s))
            }) {
                Ok(prepared) => prepared,
                Err(error) => {
                    let _ = schema_sender.send(Err(error));
                    return;
                }
            };
            let columns = statement.columns();
            if schema_sender.send(schema_of(columns)).is_err() {
                return;
            }
            // A portal's row limit of 0 means "all rows": a limit of 0 is
            // answered without running the statement.
            if max_rows == 0 {
                return;
            }
            let portal = match transaction.bind(&statement, &[]).await {
                Ok(portal) => portal,
                Err(error) => {
                    let _ = sender.send(Err(statement_error(&error, timeout))).await;
                    return;
                }
            };
            let mut left = max_rows;
            while left > 0 {
                let chunk = left.min(ROWS_PER_BATCH);
                let fetched = transaction
                    .query_portal(&portal, i32::try_from(chunk).unwrap_or(i32::MAX))
                    .await
                    .map_err(|e| statement_error(&e, timeout))
                    .and_then(|rows| {
                        let batch = rows_to_batch(columns, &rows)?;
                        Ok((rows.len() as u64, batch))
                    });
                let (count, batch) = match fetched {
                    Ok(fetched) => fetched,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                if count > 0 && sender.send(Ok(batch)).await.is_err() {
                    return;
                }
                if count < chunk {
                    break;
                }
                left -= count;
            }
            // Read only: nothing to commit; rolling back ends it at once.
            let _ = transaction.rollback().await;
        });
        // statement_timeout stops the server; this stops a client waiting on
        // a server that no longer answers.
        let schema = match tokio::time::timeout(timeout + Duration::from_secs(2), schema).await {
            Ok(Ok(schema)) => schema?,
            Ok(Err(_)) => {
                return Err(StoreError::Data("the query task ended early".into()));
            }
            Err(_) => {
                let _ = cancel.cancel_query(NoTls).await;
                return Err(StoreError::QueryTimeout {
                    seconds: timeout.as_secs(),
                });
            }
        };
        let batches = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        })
        .boxed();
        Ok(NativeOutput { schema, batches })
    }

    async fn describe_once(&self, project: &ProjectId, sql: &str) -> Result<SchemaRef> {
        let mut client = self.shared.reader(project.as_str()).await?;
        let timeout = self.shared.options.statement_timeout;
        let (transaction, statement) = begin_and_prepare(&mut client, sql, timeout).await?;
        let schema = schema_of(statement.columns())?;
        let _ = transaction.rollback().await;
        Ok(schema)
    }
}
