//! The embedded store as a backend's sink (WAL appends with positions, and
//! their replay) and table source (tail + Parquet files).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use rakam_store_api::{
    earliest_server_time, restamp_server_time, Append, CollectionStats, EventSink, LogPosition,
    LoggedAppend, ProjectId, Result, StoreError, TableSource,
};

use crate::batch_util::conform;
use crate::provider::CollectionProvider;
use crate::store::{EmbeddedStore, Submitted};
use crate::wal::{list_segments, scan_records};
use crate::{maintenance, payload};

/// How long a server-time barrier waits for earlier appends' fsync.
const BARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait]
impl EventSink for EmbeddedStore {
    /// One WAL record per call, whatever its size: a crash leaves all of the
    /// append or none of it.
    async fn append(&self, append: Append) -> Result<Option<LogPosition>> {
        let Append {
            project, batches, ..
        } = append;
        if batches.is_empty() {
            return Ok(None);
        }
        self.wait_for_tail_room().await?;
        let mut touched = Vec::with_capacity(batches.len());
        for (collection, _) in &batches {
            touched.push(self.table(&project, collection)?);
        }
        let mut batches = batches;
        let (sequence, durable) = loop {
            let encoded = payload::encode(&project, &batches)?;
            // A WAL record's length is 32 bits.
            let limit = crate::wal::MAX_RECORD_BYTES;
            if encoded.len() > limit {
                return Err(StoreError::AppendTooLarge {
                    bytes: encoded.len(),
                    limit,
                });
            }
            let earliest = earliest_server_time(batches.iter().map(|(_, batch)| batch));
            match self.submit(&touched, batches, encoded, earliest)? {
                Submitted::Queued(sequence, durable) => break (sequence, durable),
                Submitted::Restamp(returned, at_ms) => {
                    batches = returned
                        .iter()
                        .map(|(name, batch)| Ok((name.clone(), restamp_server_time(batch, at_ms)?)))
                        .collect::<Result<_>>()?;
                }
            }
        };
        let outcome = durable.await.map_err(|_| StoreError::ShuttingDown)?;
        if let Err(message) = outcome {
            for table in &touched {
                table.discard(sequence);
            }
            return Err(StoreError::Data(message));
        }
        Ok(Some(LogPosition(sequence)))
    }

    async fn server_time_barrier(&self, _project: &ProjectId, floor_ms: i64) -> Result<i64> {
        let (point, last_sequence) = self.raise_barrier(floor_ms);
        // Appends sequenced before the barrier are visible once durable.
        let deadline = std::time::Instant::now() + BARRIER_WAIT;
        while self.wal.durable_sequence() < last_sequence {
            if let Some(failure) = self.failure() {
                return Err(StoreError::Data(failure));
            }
            if std::time::Instant::now() > deadline {
                return Err(StoreError::Unavailable(
                    "the WAL did not make earlier appends durable in time".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(point)
    }

    async fn replay(&self, after: LogPosition) -> Result<Option<Vec<LoggedAppend>>> {
        let wal_dir = self.options.data_dir.join("wal");
        let durable = self.wal.durable_sequence();
        let appends = tokio::task::spawn_blocking(move || -> Result<Vec<LoggedAppend>> {
            let mut appends = Vec::new();
            let segments = list_segments(&wal_dir)?;
            for (index, (_, path)) in segments.iter().enumerate() {
                // A segment holds sequences below the next one's first.
                if let Some((next_first, _)) = segments.get(index + 1) {
                    if *next_first <= after.0 + 1 {
                        continue;
                    }
                }
                scan_records(path, |sequence, bytes| {
                    if sequence <= after.0 || sequence > durable {
                        return Ok(());
                    }
                    let record = payload::decode(bytes)?;
                    appends.push(LoggedAppend {
                        position: LogPosition(sequence),
                        append: Append {
                            project: record.project_id,
                            // The record does not keep it; replay readers
                            // take the batches' own schemas.
                            schema_version: 0,
                            batches: record.batches,
                        },
                    });
                    Ok(())
                })?;
            }
            Ok(appends)
        })
        .await
        .map_err(|e| StoreError::Data(format!("wal replay task failed: {e}")))??;
        Ok(Some(appends))
    }

    fn failure(&self) -> Option<String> {
        self.wal.failure()
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    fn retain_log_after(&self, position: LogPosition) {
        let previous = self.retained_after.swap(position.0, Ordering::AcqRel);
        if previous != position.0 {
            self.retention_changed.store(true, Ordering::Release);
        }
    }

    async fn delete_project(&self, project: &ProjectId) -> Result<()> {
        self.tables
            .write()
            .retain(|(project_id, _), _| project_id != project);
        let dir = self.options.data_dir.join("tables").join(project.as_str());
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StoreError::io(format!("removing {}", dir.display()))(error)),
        }
    }

    async fn flush(&self) -> Result<()> {
        let tables: Vec<_> = self
            .tables
            .read()
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        for (key, table) in tables {
            self.flush_table(&key, table).await?;
        }
        maintenance::remove_flushed_wal_segments(self)?;
        Ok(())
    }

    async fn shutdown(&self) -> Result<()> {
        self.stopping.store(true, Ordering::Release);
        let task = self.maintenance_task.lock().take();
        if let Some(task) = task {
            // Let a running flush or compaction finish rather than abandon it.
            let _ = task.await;
        }
        let flushed = self.flush().await;
        self.wal.stop();
        flushed
    }
}

#[async_trait]
impl TableSource for EmbeddedStore {
    async fn table_provider(
        &self,
        project: &ProjectId,
        collection: &str,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let (files, tail) = match self.existing_table(project, collection) {
            Some(table) => {
                let snapshot = table.snapshot(self.wal.durable_sequence());
                (snapshot.files, snapshot.tail)
            }
            None => (Vec::new(), Vec::new()),
        };
        let tail = tail
            .iter()
            .map(|batch| conform(batch, &schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(CollectionProvider::new(schema, files, tail)))
    }

    async fn stats(&self, project: &ProjectId, collection: &str) -> Result<CollectionStats> {
        Ok(self
            .existing_table(project, collection)
            .map(|table| table.stats(self.wal.durable_sequence()))
            .unwrap_or_default())
    }

    fn private_text(&self) -> Vec<String> {
        // The tables directory, not the data directory alone: a relative
        // `--data-dir data` must not hide every "data" in a plan.
        let given = self.options.data_dir.join("tables");
        let absolute = std::fs::canonicalize(&given).unwrap_or_else(|_| given.clone());
        let absolute = absolute.display().to_string();
        // Plans show file paths without the leading '/'.
        let unrooted = absolute.trim_start_matches('/').to_string();
        vec![absolute, unrooted, given.display().to_string()]
    }
}
