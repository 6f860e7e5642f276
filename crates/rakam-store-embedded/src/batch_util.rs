use datafusion::arrow::array::{new_null_array, Array, ArrayRef, TimestampMillisecondArray};
use datafusion::arrow::compute::{cast, concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rakam_model::{TIME_COLUMN, UNMAPPED_COLUMN};
use rakam_store_api::StoreError;

/// Reads a batch as `schema`: columns by name, widened by cast, missing ones
/// null. Older data therefore never needs rewriting when a column widens.
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StoreError> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => column.clone(),
            Some(column) => cast(column, field.data_type())?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// One batch of all rows, in `_time` order.
pub(crate) fn sorted_by_time(
    batches: &[RecordBatch],
    schema: &SchemaRef,
) -> Result<RecordBatch, StoreError> {
    let conformed = batches
        .iter()
        .map(|batch| conform(batch, schema))
        .collect::<Result<Vec<_>, _>>()?;
    let combined = concat_batches(schema, &conformed)?;
    let Some(time) = combined.column_by_name(TIME_COLUMN) else {
        return Ok(combined);
    };
    if is_sorted(time) {
        return Ok(combined);
    }
    let indices = sort_to_indices(time, None, None)?;
    Ok(take_record_batch(&combined, &indices)?)
}

fn is_sorted(time: &ArrayRef) -> bool {
    match time.as_any().downcast_ref::<TimestampMillisecondArray>() {
        Some(times) if times.null_count() == 0 => {
            times.values().windows(2).all(|pair| pair[0] <= pair[1])
        }
        _ => false,
    }
}

pub(crate) fn time_range(batch: &RecordBatch) -> (i64, i64) {
    let times = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|column| column.as_any().downcast_ref::<TimestampMillisecondArray>());
    match times {
        Some(times) if !times.is_empty() => {
            let values = times.values();
            let min = values.iter().copied().min().unwrap_or(0);
            let max = values.iter().copied().max().unwrap_or(0);
            (min, max)
        }
        _ => (0, 0),
    }
}

pub(crate) fn unmapped_rows(batch: &RecordBatch) -> u64 {
    batch
        .column_by_name(UNMAPPED_COLUMN)
        .map_or(0, |column| (column.len() - column.null_count()) as u64)
}
