use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use parking_lot::{Mutex, RwLock};
use rakam_store_api::{Catalog, CollectionStats, EventStore, ProjectInfo, Result, StoreError};

use crate::batch_util::conform;
use crate::catalog::FileCatalog;
use crate::fs_util::create_dir_all_synced;
use crate::provider::CollectionProvider;
use crate::table::CollectionTable;
use crate::wal::{list_segments, replay_segment, Durability, WalWriter};
use crate::{maintenance, payload};

/// Settings of the embedded store; see `docs/config.md` for the defaults.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Flush a collection's tail once it holds this many rows...
    pub flush_rows: usize,
    /// ...or once its oldest row is this old.
    pub flush_interval: Duration,
    pub wal_segment_bytes: u64,
    /// Files below this size are merged in the background...
    pub compaction_small_file_bytes: u64,
    /// ...once a collection has at least this many of them.
    pub compaction_min_files: usize,
    pub max_columns_per_collection: usize,
}

impl EmbeddedOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            flush_rows: 1_000_000,
            flush_interval: Duration::from_secs(10),
            wal_segment_bytes: 128 << 20,
            compaction_small_file_bytes: 32 << 20,
            compaction_min_files: 8,
            max_columns_per_collection: 1000,
        }
    }
}

pub(crate) type TableKey = (String, String);

#[derive(Debug)]
pub struct EmbeddedStore {
    pub(crate) options: EmbeddedOptions,
    pub(crate) catalog: Arc<FileCatalog>,
    pub(crate) tables: RwLock<HashMap<TableKey, Arc<CollectionTable>>>,
    /// The next WAL sequence; held while a record is tagged, put in the
    /// tail and queued, so that sequence order is tail order and WAL order.
    next_sequence: Mutex<u64>,
    pub(crate) wal: WalWriter,
    maintenance_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Asks the maintenance task to finish its current step and stop.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Held for the life of the store: one process per data directory.
    _lock: std::fs::File,
}

/// Opens (or creates) the store in `options.data_dir`, replaying the WAL,
/// and starts background flushing and compaction.
pub async fn open(options: EmbeddedOptions) -> Result<(Arc<FileCatalog>, Arc<EmbeddedStore>)> {
    let data_dir = options.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || open_blocking(options))
        .await
        .map_err(|e| StoreError::Data(format!("opening {}: {e}", data_dir.display())))??;
    let (catalog, store) = opened;
    let handle = tokio::spawn(maintenance::run(Arc::downgrade(&store)));
    *store.maintenance_task.lock() = Some(handle);
    Ok((catalog, store))
}

fn open_blocking(options: EmbeddedOptions) -> Result<(Arc<FileCatalog>, Arc<EmbeddedStore>)> {
    create_dir_all_synced(&options.data_dir)?;
    let lock = lock_data_dir(&options.data_dir)?;
    let wal_dir = options.data_dir.join("wal");
    create_dir_all_synced(&wal_dir)?;
    create_dir_all_synced(&options.data_dir.join("tables"))?;
    let catalog = Arc::new(FileCatalog::open(
        options.data_dir.join("catalog.json"),
        options.max_columns_per_collection,
    )?);
    let projects = catalog.project_ids();
    remove_deleted_projects(&options.data_dir.join("tables"), &projects);

    let mut tables: HashMap<TableKey, Arc<CollectionTable>> = HashMap::new();
    let mut highest_sequence = 0_u64;
    for project_id in projects.keys() {
        let project_dir = options.data_dir.join("tables").join(project_id);
        let Ok(entries) = std::fs::read_dir(&project_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let collection = entry.file_name().to_string_lossy().to_string();
            let table = CollectionTable::open(entry.path())?;
            table.remove_orphans()?;
            highest_sequence = highest_sequence.max(table.flushed_sequence());
            tables.insert((project_id.clone(), collection), Arc::new(table));
        }
    }

    let mut replayed_records = 0_u64;
    let segments = list_segments(&wal_dir)?;
    let segment_count = segments.len();
    for (index, (first_sequence, segment)) in segments.into_iter().enumerate() {
        // Even an empty segment reserves its first sequence: the next
        // segment must sort after it.
        highest_sequence = highest_sequence.max(first_sequence.saturating_sub(1));
        let is_last = index + 1 == segment_count;
        let last = replay_segment(&segment, is_last, |sequence, bytes| {
            let record = payload::decode(bytes)?;
            if !projects.contains_key(&record.project_id) {
                return Ok(());
            }
            for (collection, batch) in record.batches {
                let key = (record.project_id.clone(), collection.clone());
                let table = match tables.get(&key) {
                    Some(table) => table.clone(),
                    None => {
                        let dir = table_dir(&options.data_dir, &record.project_id, &collection);
                        create_dir_all_synced(&dir)?;
                        let table = Arc::new(CollectionTable::open(dir)?);
                        tables.insert(key, table.clone());
                        table
                    }
                };
                if sequence > table.flushed_sequence() {
                    table.push(sequence, batch);
                }
            }
            replayed_records += 1;
            Ok(())
        })?;
        if let Some(last) = last {
            highest_sequence = highest_sequence.max(last);
        }
    }
    tracing::info!(
        replayed_records,
        tables = tables.len(),
        next_sequence = highest_sequence + 1,
        "embedded store opened"
    );

    let wal = WalWriter::start(
        wal_dir,
        highest_sequence + 1,
        options.durability,
        options.wal_segment_bytes,
    )?;
    let store = Arc::new(EmbeddedStore {
        options,
        catalog: catalog.clone(),
        tables: RwLock::new(tables),
        next_sequence: Mutex::new(highest_sequence + 1),
        wal,
        maintenance_task: Mutex::new(None),
        stopping: std::sync::atomic::AtomicBool::new(false),
        _lock: lock,
    });
    Ok((catalog, store))
}

/// The message of the error returned when another process holds the
/// data directory.
pub const DATA_DIR_IN_USE: &str = "is in use by another rakam process";

fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File> {
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Data(format!(
            "data directory {} {DATA_DIR_IN_USE}",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(StoreError::io(format!("locking {}", path.display()))(error))
        }
    }
}

fn table_dir(data_dir: &std::path::Path, project_id: &str, collection: &str) -> PathBuf {
    data_dir.join("tables").join(project_id).join(collection)
}

/// A project deleted just before a crash may still have files.
fn remove_deleted_projects(tables_dir: &std::path::Path, live: &HashMap<String, ProjectInfo>) {
    let Ok(entries) = std::fs::read_dir(tables_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().to_string();
        if !live.contains_key(&id) {
            tracing::info!(project_id = %id, "removing the files of a deleted project");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl EmbeddedStore {
    fn table(&self, project: &ProjectInfo, collection: &str) -> Result<Arc<CollectionTable>> {
        let key = (project.id.clone(), collection.to_string());
        if let Some(table) = self.tables.read().get(&key) {
            return Ok(table.clone());
        }
        let mut tables = self.tables.write();
        if let Some(table) = tables.get(&key) {
            return Ok(table.clone());
        }
        let dir = table_dir(&self.options.data_dir, &project.id, collection);
        create_dir_all_synced(&dir)?;
        let table = Arc::new(CollectionTable::open(dir)?);
        tables.insert(key, table.clone());
        Ok(table)
    }

    pub(crate) fn existing_table(
        &self,
        project_id: &str,
        collection: &str,
    ) -> Option<Arc<CollectionTable>> {
        self.tables
            .read()
            .get(&(project_id.to_string(), collection.to_string()))
            .cloned()
    }

    /// The catalog's current schema for a table, which every batch in it fits.
    pub(crate) async fn current_schema(&self, key: &TableKey) -> Option<SchemaRef> {
        let project = self.catalog.project_ids().get(&key.0)?.name.clone();
        let schema = self.catalog.schema(&project, &key.1).await.ok()??;
        Some(schema.arrow_schema())
    }

    /// Flushes one table's durable tail. Used by `flush` and the background task.
    pub(crate) async fn flush_table(
        &self,
        key: &TableKey,
        table: Arc<CollectionTable>,
    ) -> Result<usize> {
        let _maintenance = table.maintenance.lock().await;
        // Durable first, schema second: the catalog committed every column a
        // durable record uses before that record was written.
        let durable = self.wal.durable_sequence();
        let Some(schema) = self.current_schema(key).await else {
            // The project or collection is gone; its rows go with it.
            self.tables.write().remove(key);
            return Ok(0);
        };
        let flushing = table.clone();
        tokio::task::spawn_blocking(move || flushing.flush_blocking(durable, &schema))
            .await
            .map_err(|e| StoreError::Data(format!("flush task failed: {e}")))?
    }
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn append(
        &self,
        project: &ProjectInfo,
        batches: Vec<(String, RecordBatch)>,
    ) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let encoded = payload::encode(&project.id, &batches)?;
        let mut touched = Vec::with_capacity(batches.len());
        for (collection, _) in &batches {
            touched.push(self.table(project, collection)?);
        }
        let (sequence, durable) = {
            let mut next = self.next_sequence.lock();
            let sequence = *next;
            for (table, (_, batch)) in touched.iter().zip(batches) {
                table.push(sequence, batch);
            }
            let durable = match self.wal.submit(sequence, encoded) {
                Ok(durable) => durable,
                Err(error) => {
                    for table in &touched {
                        table.discard(sequence);
                    }
                    return Err(error);
                }
            };
            *next += 1;
            (sequence, durable)
        };
        let outcome = durable.await.map_err(|_| StoreError::ShuttingDown)?;
        if let Err(message) = outcome {
            for table in &touched {
                table.discard(sequence);
            }
            return Err(StoreError::Data(message));
        }
        Ok(())
    }

    async fn table_provider(
        &self,
        project: &ProjectInfo,
        collection: &str,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let (files, tail) = match self.existing_table(&project.id, collection) {
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

    async fn stats(&self, project: &ProjectInfo, collection: &str) -> Result<CollectionStats> {
        Ok(self
            .existing_table(&project.id, collection)
            .map(|table| table.stats(self.wal.durable_sequence()))
            .unwrap_or_default())
    }

    async fn delete_project(&self, project: &ProjectInfo) -> Result<()> {
        self.tables
            .write()
            .retain(|(project_id, _), _| *project_id != project.id);
        let dir = self.options.data_dir.join("tables").join(&project.id);
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
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
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
