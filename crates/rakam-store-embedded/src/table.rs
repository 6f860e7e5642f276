//! One collection of one project: its committed files and its unflushed
//! tail. The tail holds Arrow batches tagged with their WAL sequence; a
//! query sees the files plus the durable part of the tail, taken under one
//! lock so that a concurrent flush never shows a row twice or not at all.

use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use rakam_store_api::{CollectionStats, StoreError};

use crate::batch_util::unmapped_rows;
use crate::manifest::{DataFile, Manifest};
use crate::parquet_io::{read_data_file, write_data_file};

struct TailEntry {
    sequence: u64,
    batch: RecordBatch,
    received: Instant,
    /// The batch's memory, measured once when it arrives.
    bytes: usize,
}

struct TableState {
    manifest: Manifest,
    tail: Vec<TailEntry>,
    /// The memory of every tail entry, kept as entries come and go: the
    /// tail budget reads it on every maintenance tick.
    tail_bytes: usize,
}

impl TableState {
    fn retain_tail(&mut self, keep: impl Fn(&TailEntry) -> bool) {
        self.tail.retain(|entry| keep(entry));
        self.tail_bytes = self.tail.iter().map(|entry| entry.bytes).sum();
    }
}

pub(crate) struct CollectionTable {
    pub(crate) dir: PathBuf,
    state: Mutex<TableState>,
    /// Serialises flushes and compactions of this table.
    pub(crate) maintenance: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CollectionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionTable")
            .field("dir", &self.dir)
            .finish()
    }
}

/// What a query reads: the committed files and the visible tail.
pub(crate) struct TableSnapshot {
    pub files: Vec<(PathBuf, u64)>,
    pub tail: Vec<RecordBatch>,
}

pub(crate) struct TailSummary {
    pub durable_rows: usize,
    /// Memory the tail's batches hold (durable or not yet).
    pub tail_bytes: usize,
    pub oldest: Option<Instant>,
    pub first_sequence: Option<u64>,
}

impl CollectionTable {
    pub(crate) fn open(dir: PathBuf) -> Result<Self, StoreError> {
        let manifest = Manifest::load(&dir)?;
        Ok(Self {
            dir,
            state: Mutex::new(TableState {
                manifest,
                tail: Vec::new(),
                tail_bytes: 0,
            }),
            maintenance: tokio::sync::Mutex::new(()),
        })
    }

    /// Memory the tail's batches hold (durable or not yet).
    pub(crate) fn tail_bytes(&self) -> usize {
        self.state.lock().tail_bytes
    }

    pub(crate) fn flushed_sequence(&self) -> u64 {
        self.state.lock().manifest.flushed_sequence
    }

    /// Sequences must arrive in increasing order (the store's append lock).
    pub(crate) fn push(&self, sequence: u64, batch: RecordBatch) {
        let mut state = self.state.lock();
        debug_assert!(state
            .tail
            .last()
            .is_none_or(|last| last.sequence <= sequence));
        let bytes = batch.get_array_memory_size();
        state.tail_bytes += bytes;
        state.tail.push(TailEntry {
            sequence,
            batch,
            received: Instant::now(),
            bytes,
        });
    }

    /// Drops the rows of a record whose WAL write failed.
    pub(crate) fn discard(&self, sequence: u64) {
        self.state
            .lock()
            .retain_tail(|entry| entry.sequence != sequence);
    }

    pub(crate) fn snapshot(&self, durable_sequence: u64) -> TableSnapshot {
        let state = self.state.lock();
        TableSnapshot {
            files: state.manifest.file_paths(&self.dir),
            tail: state
                .tail
                .iter()
                .filter(|entry| entry.sequence <= durable_sequence)
                .map(|entry| entry.batch.clone())
                .collect(),
        }
    }

    pub(crate) fn tail_summary(&self, durable_sequence: u64) -> TailSummary {
        let state = self.state.lock();
        let durable = state
            .tail
            .iter()
            .filter(|entry| entry.sequence <= durable_sequence);
        TailSummary {
            durable_rows: durable.clone().map(|entry| entry.batch.num_rows()).sum(),
            tail_bytes: state.tail_bytes,
            oldest: state.tail.first().map(|entry| entry.received),
            first_sequence: state.tail.first().map(|entry| entry.sequence),
        }
    }

    pub(crate) fn stats(&self, durable_sequence: u64) -> CollectionStats {
        let state = self.state.lock();
        let mut stats = CollectionStats {
            rows: state.manifest.rows(),
            unmapped_rows: state.manifest.unmapped_rows(),
        };
        for entry in state.tail.iter().filter(|e| e.sequence <= durable_sequence) {
            stats.rows += entry.batch.num_rows() as u64;
            stats.unmapped_rows += unmapped_rows(&entry.batch);
        }
        stats
    }

    /// Writes the durable tail to a new Parquet file and commits it. Must be
    /// called with `maintenance` held. Blocking: run it off the async threads.
    pub(crate) fn flush_blocking(
        &self,
        durable_sequence: u64,
        schema: &SchemaRef,
    ) -> Result<usize, StoreError> {
        let (batches, last_sequence) = {
            let state = self.state.lock();
            let taken: Vec<&TailEntry> = state
                .tail
                .iter()
                .filter(|entry| entry.sequence <= durable_sequence)
                .collect();
            let Some(last) = taken.last() else {
                return Ok(0);
            };
            let batches: Vec<RecordBatch> = taken.iter().map(|entry| entry.batch.clone()).collect();
            (batches, last.sequence)
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let new_file = if rows > 0 {
            let name = format!("part-{}.parquet", uuid::Uuid::new_v4().simple());
            Some(write_data_file(&self.dir, &name, schema, &batches)?)
        } else {
            None
        };
        let mut state = self.state.lock();
        if state.manifest.flushed_sequence >= last_sequence {
            // Another flush committed these rows meanwhile; keep one copy.
            if let Some(file) = new_file {
                let _ = std::fs::remove_file(self.dir.join(&file.name));
            }
            return Ok(0);
        }
        let mut manifest = state.manifest.clone();
        manifest.version += 1;
        manifest.flushed_sequence = last_sequence;
        manifest.files.extend(new_file);
        manifest.commit(&self.dir)?;
        state.manifest = manifest;
        state.retain_tail(|entry| entry.sequence > last_sequence);
        Ok(rows)
    }

    /// Files small enough to be worth merging.
    pub(crate) fn compaction_candidates(&self, small_file_bytes: u64) -> Vec<DataFile> {
        self.state
            .lock()
            .manifest
            .files
            .iter()
            .filter(|file| file.bytes < small_file_bytes)
            .cloned()
            .collect()
    }

    /// Merges `inputs` into one time-sorted file and commits the swap.
    /// Returns the replaced files, to delete once no query can read them.
    /// Must be called with `maintenance` held.
    pub(crate) fn compact_blocking(
        &self,
        inputs: &[DataFile],
        schema: &SchemaRef,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let mut batches = Vec::new();
        for input in inputs {
            batches.extend(read_data_file(&self.dir.join(&input.name), schema)?);
        }
        let name = format!("part-{}.parquet", uuid::Uuid::new_v4().simple());
        let merged = write_data_file(&self.dir, &name, schema, &batches)?;
        let mut state = self.state.lock();
        let mut manifest = state.manifest.clone();
        manifest.version += 1;
        manifest
            .files
            .retain(|file| !inputs.iter().any(|input| input.name == file.name));
        manifest.files.push(merged);
        manifest.commit(&self.dir)?;
        state.manifest = manifest;
        Ok(inputs
            .iter()
            .map(|input| self.dir.join(&input.name))
            .collect())
    }

    /// Removes files a crash left behind: temporaries and files that no
    /// manifest lists.
    pub(crate) fn remove_orphans(&self) -> Result<(), StoreError> {
        let live: Vec<String> = self
            .state
            .lock()
            .manifest
            .files
            .iter()
            .map(|file| file.name.clone())
            .collect();
        remove_files_not_in(&self.dir, &live)
    }
}

fn remove_files_not_in(dir: &Path, live: &[String]) -> Result<(), StoreError> {
    let entries =
        std::fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let is_data = name.ends_with(".parquet") || name.ends_with(".tmp");
        if is_data && !live.contains(&name) {
            tracing::info!(file = %entry.path().display(), "removing a file no manifest lists");
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
