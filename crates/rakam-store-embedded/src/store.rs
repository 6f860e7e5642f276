use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::{Mutex, RwLock};
use rakam_store_api::{
    Backend, Capabilities, Catalog, CatalogLimits, ProjectId, Result, StoreError,
};

use crate::catalog::FileCatalog;
use crate::fs_util::{collection_dir_name, collection_of_dir, create_dir_all_synced};
use crate::table::CollectionTable;
use crate::wal::{list_segments, replay_segment, Durability, WalWriter};
use crate::{maintenance, payload};

/// Resolves once a submitted WAL record is durable.
pub(crate) type DurableReceiver = tokio::sync::oneshot::Receiver<std::result::Result<(), String>>;

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
    pub catalog_limits: CatalogLimits,
    /// What start-up does with a damaged or incomplete WAL.
    pub wal_recovery: WalRecovery,
    /// Memory all collections' unflushed tails may hold together; above
    /// it the largest tails are flushed at once, whatever their age.
    pub max_tail_bytes: usize,
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
            catalog_limits: CatalogLimits::default(),
            wal_recovery: WalRecovery::Refuse,
            max_tail_bytes: 512 << 20,
        }
    }
}

pub(crate) type TableKey = (ProjectId, String);

pub(crate) enum TableSchema {
    Current(SchemaRef),
    /// The project was deleted.
    Gone,
}

#[derive(Debug)]
pub struct EmbeddedStore {
    pub(crate) options: EmbeddedOptions,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) tables: RwLock<HashMap<TableKey, Arc<CollectionTable>>>,
    /// The next WAL sequence; held while a record is tagged, put in the
    /// tail and queued, so that sequence order is tail order and WAL order.
    next_sequence: Mutex<Sequencer>,
    pub(crate) wal: WalWriter,
    pub(crate) views: Arc<crate::views::FileViews>,
    pub(crate) maintenance_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// WAL records after this sequence stay on disk even once they are in
    /// files, so append observers can be replayed them (`u64::MAX`: none).
    pub(crate) retained_after: std::sync::atomic::AtomicU64,
    /// Set when `retained_after` changed since it was last written to disk.
    pub(crate) retention_changed: std::sync::atomic::AtomicBool,
    /// Asks the maintenance task to finish its current step and stop.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Damage start-up quarantined, for `/health`.
    pub(crate) notices: Vec<String>,
    /// Held for the life of the store: one process per data directory.
    _lock: std::fs::File,
}

/// The embedded backend as a whole: the file catalog in the data directory,
/// the store's WAL and files as sink and table source.
pub async fn open_backend(options: EmbeddedOptions) -> Result<Backend> {
    create_dir_all_synced(&options.data_dir)?;
    let catalog = Arc::new(FileCatalog::open(
        options.data_dir.join("catalog.json"),
        options.catalog_limits,
    )?);
    let store = open(options, catalog.clone()).await?;
    Ok(store.backend("embedded", catalog))
}

/// Opens (or creates) the store in `options.data_dir` with the schemas of
/// `catalog` (any catalog: a PostgreSQL one shared by several nodes works
/// too), replaying the WAL, and starts background flushing and compaction.
pub async fn open(
    options: EmbeddedOptions,
    catalog: Arc<dyn Catalog>,
) -> Result<Arc<EmbeddedStore>> {
    let live: HashSet<ProjectId> = catalog
        .list_projects()
        .await?
        .into_iter()
        .map(|project| project.id)
        .collect();
    let data_dir = options.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || open_blocking(options, catalog, &live))
        .await
        .map_err(|e| StoreError::Data(format!("opening {}: {e}", data_dir.display())))??;
    let handle = tokio::spawn(maintenance::run(Arc::downgrade(&store)));
    *store.maintenance_task.lock() = Some(handle);
    Ok(store)
}

fn open_blocking(
    options: EmbeddedOptions,
    catalog: Arc<dyn Catalog>,
    projects: &HashSet<ProjectId>,
) -> Result<Arc<EmbeddedStore>> {
    create_dir_all_synced(&options.data_dir)?;
    let lock = lock_data_dir(&options.data_dir)?;
    let wal_dir = options.data_dir.join("wal");
    create_dir_all_synced(&wal_dir)?;
    create_dir_all_synced(&options.data_dir.join("tables"))?;
    remove_deleted_projects(&options.data_dir.join("tables"), projects);

    let mut tables: HashMap<TableKey, Arc<CollectionTable>> = HashMap::new();
    let mut highest_sequence = 0_u64;
    for project_id in projects {
        let project_dir = options.data_dir.join("tables").join(project_id.as_str());
        let Ok(entries) = std::fs::read_dir(&project_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(collection) = collection_of_dir(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let table = CollectionTable::open(entry.path())?;
            table.remove_orphans()?;
            highest_sequence = highest_sequence.max(table.flushed_sequence());
            tables.insert((project_id.clone(), collection), Arc::new(table));
        }
    }

    let mut replayed_records = 0_u64;
    let notices = match options.wal_recovery {
        WalRecovery::Refuse => Vec::new(),
        WalRecovery::Quarantine => recover_damaged_wal(&wal_dir)?,
    };
    let refuse_gaps = options.wal_recovery == WalRecovery::Refuse;
    let segments = list_segments(&wal_dir)?;
    if refuse_gaps {
        check_no_missing_segments(&wal_dir, &segments)?;
    }
    if segments.is_empty() && tables.is_empty() {
        // A new store: from now on every deleted segment is accounted for.
        crate::maintenance::write_deleted_through(&wal_dir, 0)?;
    }
    let segment_count = segments.len();
    // The sequence the next segment must start at, at the latest.
    let mut expected_next: Option<u64> = None;
    for (index, (first_sequence, segment)) in segments.into_iter().enumerate() {
        if let Some(expected) = expected_next.filter(|_| refuse_gaps) {
            if first_sequence > expected {
                return Err(StoreError::Data(format!(
                    "the WAL has no records {expected} to {} (a segment before {} is missing): \
                     they were acknowledged, so rakam will not start; restore the missing segment \
                     (`rakam wal check` lists every problem; storage.embedded.wal_recovery = \"quarantine\" \
                     starts without it)",
                    first_sequence - 1,
                    segment.display()
                )));
            }
        }
        // Even an empty segment reserves its first sequence: the next
        // segment must sort after it.
        highest_sequence = highest_sequence.max(first_sequence.saturating_sub(1));
        let is_last = index + 1 == segment_count;
        let last = replay_segment(&segment, is_last, |sequence, bytes| {
            let record = payload::decode(bytes)?;
            if !projects.contains(&record.project_id) {
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
        expected_next = Some(last.map_or(first_sequence, |last| last + 1));
    }
    tracing::info!(
        replayed_records,
        tables = tables.len(),
        next_sequence = highest_sequence + 1,
        "embedded store opened"
    );

    // Kept on disk, so that a process without the observers (the CLI, a
    // restart before they are set up) still keeps what they need.
    let retained_after = crate::maintenance::read_retention(&wal_dir)?;
    if retained_after != u64::MAX {
        tracing::info!(
            retained_after,
            "the WAL keeps records after this sequence for append observers"
        );
    }
    let wal = WalWriter::start(
        wal_dir,
        highest_sequence + 1,
        options.durability,
        options.wal_segment_bytes,
    )?;
    let views = Arc::new(crate::views::FileViews::open(
        options.data_dir.join("views"),
    )?);
    let store = Arc::new(EmbeddedStore {
        options,
        catalog,
        tables: RwLock::new(tables),
        next_sequence: Mutex::new(Sequencer {
            next: highest_sequence + 1,
            barrier_ms: i64::MIN,
        }),
        wal,
        views,
        maintenance_task: Mutex::new(None),
        retained_after: std::sync::atomic::AtomicU64::new(retained_after),
        retention_changed: std::sync::atomic::AtomicBool::new(false),
        stopping: std::sync::atomic::AtomicBool::new(false),
        notices,
        _lock: lock,
    });
    Ok(store)
}

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
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::InUse(data_dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(error)) => {
            Err(StoreError::io(format!("locking {}", path.display()))(error))
        }
    }
}

fn table_dir(data_dir: &std::path::Path, project_id: &ProjectId, collection: &str) -> PathBuf {
    data_dir
        .join("tables")
        .join(project_id.as_str())
        .join(collection_dir_name(collection))
}

/// A project deleted just before a crash may still have files.
fn remove_deleted_projects(tables_dir: &std::path::Path, live: &HashSet<ProjectId>) {
    let Ok(entries) = std::fs::read_dir(tables_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().to_string();
        if !live.contains(&ProjectId::new(id.clone())) {
            tracing::info!(project_id = %id, "removing the files of a deleted project");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl EmbeddedStore {
    /// This store's parts, with `catalog` (the one it was opened with).
    pub fn backend(self: &Arc<Self>, name: &'static str, catalog: Arc<dyn Catalog>) -> Backend {
        Backend {
            name,
            catalog,
            sink: self.clone(),
            tables: self.clone(),
            native_sql: None,
            views: self.views.clone(),
            capabilities: Capabilities {
                replayable_log: true,
                shared_catalog: false,
            },
        }
    }

    pub(crate) fn table(
        &self,
        project: &ProjectId,
        collection: &str,
    ) -> Result<Arc<CollectionTable>> {
        let key = (project.clone(), collection.to_string());
        if let Some(table) = self.tables.read().get(&key) {
            return Ok(table.clone());
        }
        let mut tables = self.tables.write();
        if let Some(table) = tables.get(&key) {
            return Ok(table.clone());
        }
        let dir = table_dir(&self.options.data_dir, project, collection);
        create_dir_all_synced(&dir)?;
        let table = Arc::new(CollectionTable::open(dir)?);
        tables.insert(key, table.clone());
        Ok(table)
    }

    pub(crate) fn existing_table(
        &self,
        project_id: &ProjectId,
        collection: &str,
    ) -> Option<Arc<CollectionTable>> {
        self.tables
            .read()
            .get(&(project_id.clone(), collection.to_string()))
            .cloned()
    }

    /// The catalog's current schema for a table, which every batch in it
    /// fits: `Gone` once the project is deleted. A catalog that cannot answer
    /// (a shared one, unreachable for a moment) is an error, never a reason
    /// to drop rows.
    pub(crate) async fn current_schema(&self, key: &TableKey) -> Result<TableSchema> {
        let snapshot = match self.catalog.snapshot(&key.0).await {
            Ok(snapshot) => snapshot,
            Err(StoreError::ProjectNotFound(_)) => return Ok(TableSchema::Gone),
            Err(error) => return Err(error),
        };
        match snapshot.schema(&key.1) {
            Some(schema) => Ok(TableSchema::Current(schema.arrow_schema())),
            None => Err(StoreError::Data(format!(
                "the catalog has no schema for collection {:?}, which holds rows",
                key.1
            ))),
        }
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
        let schema = match self.current_schema(key).await? {
            TableSchema::Current(schema) => schema,
            TableSchema::Gone => {
                // The project is deleted; its rows go with it.
                self.tables.write().remove(key);
                return Ok(0);
            }
        };
        let flushing = table.clone();
        tokio::task::spawn_blocking(move || flushing.flush_blocking(durable, &schema))
            .await
            .map_err(|e| StoreError::Data(format!("flush task failed: {e}")))?
    }
}

impl EmbeddedStore {
    /// Tags the batches with the next sequence, puts them in their tails and
    /// queues their record to the WAL, under one lock: sequence order is tail
    /// order and WAL order. An append received at or before the last
    /// server-time barrier is handed back to be restamped after it.
    pub(crate) fn submit(
        &self,
        touched: &[Arc<CollectionTable>],
        batches: Vec<(String, RecordBatch)>,
        encoded: Vec<u8>,
        earliest_server_time: Option<i64>,
    ) -> Result<Submitted> {
        let mut sequencer = self.next_sequence.lock();
        if let Some(earliest) = earliest_server_time {
            if earliest <= sequencer.barrier_ms {
                return Ok(Submitted::Restamp(batches, sequencer.barrier_ms + 1));
            }
        }
        let sequence = sequencer.next;
        for (table, (_, batch)) in touched.iter().zip(batches) {
            table.push(sequence, batch);
        }
        match self.wal.submit(sequence, encoded) {
            Ok(durable) => {
                sequencer.next += 1;
                Ok(Submitted::Queued(sequence, durable))
            }
            Err(error) => {
                for table in touched {
                    table.discard(sequence);
                }
                Err(error)
            }
        }
    }

    /// Raises the server-time barrier to at least `floor_ms` and now, and
    /// returns it with the last sequence handed out before it.
    pub(crate) fn raise_barrier(&self, floor_ms: i64) -> (i64, u64) {
        let mut sequencer = self.next_sequence.lock();
        let point = rakam_common::time::now_millis()
            .max(floor_ms)
            .max(sequencer.barrier_ms);
        sequencer.barrier_ms = point;
        (point, sequencer.next - 1)
    }
}

/// The WAL order of appends, and the server-time barrier of view refreshes.
#[derive(Debug)]
pub(crate) struct Sequencer {
    next: u64,
    barrier_ms: i64,
}

pub(crate) enum Submitted {
    Queued(u64, DurableReceiver),
    /// Received at or before the barrier: restamp `_server_time` to this
    /// and submit again.
    Restamp(Vec<(String, RecordBatch)>, i64),
}

/// Segments are only ever deleted oldest first, once every record in them is
/// in Parquet files, and the highest sequence deleted is on disk before the
/// deletion (`maintenance.rs`): an oldest segment that starts later than that
/// means a segment was deleted by something else.
/// What start-up does when the WAL is damaged or a segment is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalRecovery {
    /// Refuse to start, naming the damage (the default: nothing
    /// acknowledged is dropped without an operator deciding so).
    Refuse,
    /// Move damaged bytes to `wal/quarantine/`, keep every intact record,
    /// start, and say so in the log and in `/health`.
    Quarantine,
}

/// Quarantines every damaged range and accepts missing segments; what was
/// done, as notices.
fn recover_damaged_wal(wal_dir: &std::path::Path) -> Result<Vec<String>> {
    let report = crate::wal_check::check_wal(wal_dir)?;
    let mut notices = crate::wal_check::quarantine_damage(wal_dir)?;
    for problem in &report.problems {
        if let crate::wal_check::WalProblem::Missing { .. } = problem {
            notices.push(format!("started without them: {problem}"));
        }
    }
    for notice in &notices {
        tracing::error!(%notice, "the WAL was damaged; started anyway as configured (storage.embedded.wal_recovery)");
    }
    Ok(notices)
}

fn check_no_missing_segments(wal_dir: &std::path::Path, segments: &[(u64, PathBuf)]) -> Result<()> {
    let Some(deleted_through) = crate::maintenance::read_deleted_through(wal_dir)? else {
        return Ok(());
    };
    match segments.first() {
        Some((first, path)) if *first > deleted_through + 1 => Err(StoreError::Data(format!(
            "the WAL has no records {} to {} (a segment before {} is missing): \
             they were acknowledged, so rakam will not start; restore the missing segment",
            deleted_through + 1,
            first - 1,
            path.display()
        ))),
        _ => Ok(()),
    }
}
