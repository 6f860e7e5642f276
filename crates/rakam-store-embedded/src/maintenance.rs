//! Background work of the embedded store: flush tails by size or age,
//! merge small files, drop WAL segments whose records are all in files,
//! and delete replaced files once no query can still be reading them.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::{Duration, Instant};

use rakam_store_api::{Result, StoreError};

use crate::store::EmbeddedStore;
use crate::wal::list_segments;

const TICK: Duration = Duration::from_millis(250);
/// Queries hold a list of files; a replaced file lives this long after the
/// swap so that a running query can finish reading it.
/// Longer than any statement timeout that makes sense (the default is 300 s).
const REPLACED_FILE_GRACE: Duration = Duration::from_secs(900);

pub(crate) async fn run(store: Weak<EmbeddedStore>) {
    let mut replaced: Vec<(Instant, PathBuf)> = Vec::new();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(store) = store.upgrade() else {
            return;
        };
        if store.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Err(error) = tick(&store, &mut replaced).await {
            tracing::error!(%error, "background maintenance failed; will retry");
        }
        let now = Instant::now();
        replaced.retain(|(since, path)| {
            if now.duration_since(*since) < REPLACED_FILE_GRACE {
                return true;
            }
            let _ = std::fs::remove_file(path);
            false
        });
    }
}

async fn tick(store: &EmbeddedStore, replaced: &mut Vec<(Instant, PathBuf)>) -> Result<()> {
    let tables: Vec<_> = store
        .tables
        .read()
        .iter()
        .map(|(key, table)| (key.clone(), table.clone()))
        .collect();
    if let Err(error) = flush_over_budget(store, &tables).await {
        tracing::error!(%error, "flushing tails over storage.embedded.max_tail_bytes failed");
    }
    for (key, table) in tables {
        // One failing table must not stop the others, nor WAL cleanup.
        if let Err(error) = maintain_table(store, &key, table, replaced).await {
            tracing::error!(%error, project_id = %key.0, collection = %key.1, "table maintenance failed");
        }
    }
    remove_flushed_wal_segments(store)
}

/// Keeps the memory of all tails under `max_tail_bytes`: while they hold
/// more, the largest is flushed, whatever its age or row count.
async fn flush_over_budget(
    store: &EmbeddedStore,
    tables: &[(
        crate::store::TableKey,
        std::sync::Arc<crate::table::CollectionTable>,
    )],
) -> Result<()> {
    let durable = store.wal.durable_sequence();
    let mut sizes: Vec<(usize, usize)> = tables
        .iter()
        .enumerate()
        .map(|(index, (_, table))| (table.tail_summary(durable).tail_bytes, index))
        .collect();
    let mut total: usize = sizes.iter().map(|(bytes, _)| bytes).sum();
    if total <= store.options.max_tail_bytes {
        return Ok(());
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    for (bytes, index) in sizes {
        if total <= store.options.max_tail_bytes / 2 || bytes == 0 {
            break;
        }
        let (key, table) = &tables[index];
        store.flush_table(key, table.clone()).await?;
        total -= bytes;
    }
    Ok(())
}

async fn maintain_table(
    store: &EmbeddedStore,
    key: &crate::store::TableKey,
    table: std::sync::Arc<crate::table::CollectionTable>,
    replaced: &mut Vec<(Instant, PathBuf)>,
) -> Result<()> {
    let durable = store.wal.durable_sequence();
    let summary = table.tail_summary(durable);
    let old_enough = summary
        .oldest
        .is_some_and(|oldest| oldest.elapsed() >= store.options.flush_interval);
    if summary.durable_rows >= store.options.flush_rows || (summary.durable_rows > 0 && old_enough)
    {
        let rows = store.flush_table(key, table.clone()).await?;
        tracing::debug!(project_id = %key.0, collection = %key.1, rows, "flushed");
    }
    let candidates = table.compaction_candidates(store.options.compaction_small_file_bytes);
    if candidates.len() < store.options.compaction_min_files {
        return Ok(());
    }
    let mut inputs = Vec::new();
    let mut input_bytes = 0;
    for candidate in candidates {
        // A merge is decoded whole (about ten times its compressed size):
        // merging at most one small file's worth keeps it inside memory, and
        // its output is no longer small, so it is not merged again.
        if input_bytes + candidate.bytes > store.options.compaction_small_file_bytes
            && inputs.len() >= 2
        {
            break;
        }
        input_bytes += candidate.bytes;
        inputs.push(candidate);
    }
    let _maintenance = table.maintenance.lock().await;
    let schema = match store.current_schema(key).await? {
        crate::store::TableSchema::Current(schema) => schema,
        crate::store::TableSchema::Gone => return Ok(()),
    };
    let compacting = table.clone();
    let old_files =
        tokio::task::spawn_blocking(move || compacting.compact_blocking(&inputs, &schema))
            .await
            .map_err(|e| StoreError::Data(format!("compaction task failed: {e}")))??;
    tracing::debug!(collection = %key.1, merged = old_files.len(), "compacted");
    let now = Instant::now();
    replaced.extend(old_files.into_iter().map(|path| (now, path)));
    Ok(())
}

/// Deletes every closed segment whose records are all in Parquet files and
/// not retained for append observers.
pub(crate) fn remove_flushed_wal_segments(store: &EmbeddedStore) -> Result<()> {
    let durable = store.wal.durable_sequence();
    let oldest_unflushed = store
        .tables
        .read()
        .values()
        .filter_map(|table| table.tail_summary(durable).first_sequence)
        .min();
    let flushed = match oldest_unflushed {
        Some(first) => first.saturating_sub(1),
        None => durable,
    };
    // Append observers may still need to be replayed records after this;
    // the mark is on disk before anything it protects could be deleted.
    let retained = store
        .retained_after
        .load(std::sync::atomic::Ordering::Acquire);
    if store
        .retention_changed
        .swap(false, std::sync::atomic::Ordering::AcqRel)
    {
        let wal_dir = store.options.data_dir.join("wal");
        if let Err(error) = write_retention(&wal_dir, retained) {
            store
                .retention_changed
                .store(true, std::sync::atomic::Ordering::Release);
            return Err(error);
        }
    }
    let safe = flushed.min(retained);
    let current = store.wal.current_segment();
    let segments = list_segments(&store.options.data_dir.join("wal"))?;
    for pair in segments.windows(2) {
        let (first, path) = &pair[0];
        let (next_first, _) = pair[1];
        if *first >= current {
            break;
        }
        if next_first.saturating_sub(1) <= safe {
            // On disk first: at start, a missing segment below this mark was
            // deleted here; above it, by something else (a lost segment).
            write_deleted_through(&store.options.data_dir.join("wal"), next_first - 1)?;
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(StoreError::io(format!("removing {}", path.display()))(
                        error,
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The file that keeps the append observers' retention mark.
const RETENTION_FILE: &str = "observers.retain";

/// The WAL sequence after which records are kept for append observers;
/// `u64::MAX` (nothing kept) when no observer ever asked.
pub(crate) fn read_retention(wal_dir: &std::path::Path) -> Result<u64> {
    let path = wal_dir.join(RETENTION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| StoreError::Data(format!("{} is corrupt: {text:?}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(u64::MAX),
        Err(error) => Err(StoreError::io(format!("reading {}", path.display()))(error)),
    }
}

fn write_retention(wal_dir: &std::path::Path, retained_after: u64) -> Result<()> {
    crate::fs_util::write_atomically(
        &wal_dir.join(RETENTION_FILE),
        retained_after.to_string().as_bytes(),
    )
}

/// The file that records the highest WAL sequence whose segment was deleted.
const DELETED_THROUGH_FILE: &str = "deleted.through";

/// The highest sequence of the segments deleted after flushing; `None` for a
/// WAL that has not recorded it yet (older versions never did).
pub(crate) fn read_deleted_through(wal_dir: &std::path::Path) -> Result<Option<u64>> {
    let path = wal_dir.join(DELETED_THROUGH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Data(format!("{} is corrupt: {text:?}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StoreError::io(format!("reading {}", path.display()))(error)),
    }
}

pub(crate) fn write_deleted_through(wal_dir: &std::path::Path, sequence: u64) -> Result<()> {
    crate::fs_util::write_atomically(
        &wal_dir.join(DELETED_THROUGH_FILE),
        sequence.to_string().as_bytes(),
    )
}
