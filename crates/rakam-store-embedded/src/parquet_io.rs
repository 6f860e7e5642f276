//! Parquet files of the embedded store: zstd, statistics on, rows in `_time`
//! order so that time filters prune row groups.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use rakam_store_api::StoreError;

use crate::batch_util::{conform, sorted_by_time, time_range, unmapped_rows};
use crate::fs_util::sync_parent_dir;
use crate::manifest::DataFile;

const ROW_GROUP_ROWS: usize = 128 * 1024;
const MAX_CONCAT_BYTES: usize = 1 << 30;

fn writer_properties() -> Result<WriterProperties, StoreError> {
    let level = ZstdLevel::try_new(3).map_err(|e| StoreError::Data(e.to_string()))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// Writes the rows sorted by time into a new file (temporary name, fsync,
/// rename), and describes it for the manifest.
pub(crate) fn write_data_file(
    dir: &Path,
    name: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<DataFile, StoreError> {
    let conformed = batches
        .iter()
        .map(|batch| conform(batch, schema))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes: usize = conformed
        .iter()
        .map(RecordBatch::get_array_memory_size)
        .sum();
    // Concatenating past 2 GiB would overflow 32-bit string offsets; large
    // inputs are written batch by batch, each sorted, instead.
    let pieces = if bytes < MAX_CONCAT_BYTES {
        vec![sorted_by_time(&conformed, schema)?]
    } else {
        conformed
            .iter()
            .map(|batch| sorted_by_time(std::slice::from_ref(batch), schema))
            .collect::<Result<Vec<_>, _>>()?
    };
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let context = || format!("writing {}", path.display());
    let file = File::create(&temporary).map_err(StoreError::io(context()))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties()?))
        .map_err(|e| StoreError::Data(e.to_string()))?;
    for piece in &pieces {
        writer
            .write(piece)
            .map_err(|e| StoreError::Data(e.to_string()))?;
    }
    let file = writer
        .into_inner()
        .map_err(|e| StoreError::Data(e.to_string()))?;
    file.sync_all().map_err(StoreError::io(context()))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(StoreError::io(context()))?;
    sync_parent_dir(&path)?;
    let file_bytes = std::fs::metadata(&path)
        .map_err(StoreError::io(context()))?
        .len();
    let ranges: Vec<(i64, i64)> = pieces
        .iter()
        .filter(|p| p.num_rows() > 0)
        .map(time_range)
        .collect();
    Ok(DataFile {
        name: name.to_string(),
        bytes: file_bytes,
        rows: pieces.iter().map(|p| p.num_rows() as u64).sum(),
        unmapped_rows: pieces.iter().map(unmapped_rows).sum(),
        min_time_ms: ranges.iter().map(|r| r.0).min().unwrap_or(0),
        max_time_ms: ranges.iter().map(|r| r.1).max().unwrap_or(0),
    })
}

/// Every row of a file, read as `schema`.
pub(crate) fn read_data_file(
    path: &Path,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, StoreError> {
    let file = File::open(path).map_err(StoreError::io(format!("reading {}", path.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.with_batch_size(64 * 1024).build())
        .map_err(|e| StoreError::Data(format!("{}: {e}", path.display())))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(conform(&batch?, schema)?);
    }
    Ok(batches)
}
