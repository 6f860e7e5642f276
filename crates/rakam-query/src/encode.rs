//! Query results as Rakam's JSON rows, and as export files.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Date32Array, StringArray};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef,
    TimeUnit, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use rakam_model::FieldType;
use serde::Serialize;
use serde_json::{Number, Value};

use crate::{QueryError, QueryOutput};

/// Rakam's `SchemaField`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SchemaFieldJson {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: String,
    #[serde(rename = "descriptiveName")]
    pub descriptive_name: String,
}

pub fn schema_fields(schema: &SchemaRef) -> Vec<SchemaFieldJson> {
    schema
        .fields()
        .iter()
        .map(|field| SchemaFieldJson {
            name: field.name().clone(),
            field_type: FieldType::name_of_arrow(field.data_type()),
            descriptive_name: descriptive_name(field.name()),
        })
        .collect()
}

/// "page_url" → "Page url", as Rakam shows column names.
pub fn descriptive_name(name: &str) -> String {
    let spaced = name.trim_start_matches('_').replace('_', " ");
    let mut characters = spaced.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => name.to_string(),
    }
}

/// Timestamps of any unit, as milliseconds: the unit the JSON rows show.
fn in_milliseconds(batch: &RecordBatch) -> Result<Vec<ArrayRef>, QueryError> {
    batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Timestamp(unit, _) if *unit != TimeUnit::Millisecond => {
                datafusion::arrow::compute::cast(
                    column,
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )
                .map_err(|e| QueryError::Execution(e.to_string()))
            }
            _ => Ok(column.clone()),
        })
        .collect()
}

/// Every row as a JSON array, in column order. Timestamps are ISO-8601 in
/// UTC with milliseconds, dates `yyyy-MM-dd`.
pub fn rows_as_json(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>, QueryError> {
    let mut rows = Vec::new();
    for batch in batches {
        let columns = in_milliseconds(batch)?;
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(columns.len());
            for column in &columns {
                values.push(value_at(column, row)?);
            }
            rows.push(values);
        }
    }
    Ok(rows)
}

/// Rows encoded between two checks of the query's memory.
const ROWS_PER_MEMORY_CHECK: usize = 1024;

/// The rows of `output` as one JSON array (as [`rows_as_json`] has them),
/// appended to `out`. The bytes count against the query's memory as they
/// are written, so an enormous result fails with a clear error instead of
/// exhausting the machine.
pub fn write_rows_json(output: &mut QueryOutput, out: &mut Vec<u8>) -> Result<(), QueryError> {
    let counted_from = out.len();
    let mut counted = 0;
    out.push(b'[');
    let mut first = true;
    for batch in &output.batches {
        let columns = in_milliseconds(batch)?;
        for row in 0..batch.num_rows() {
            out.push(if first { b'[' } else { b',' });
            if !first {
                out.push(b'[');
            }
            first = false;
            for (index, column) in columns.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &value_at(column, row)?)
                    .map_err(|e| QueryError::Execution(e.to_string()))?;
            }
            out.push(b']');
            if row % ROWS_PER_MEMORY_CHECK == 0 {
                let written = out.len() - counted_from;
                output.memory.grow(written - counted)?;
                counted = written;
            }
        }
    }
    out.push(b']');
    output.memory.grow(out.len() - counted_from - counted)
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number)
}

fn format_timestamp(millis: i64) -> Value {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(instant) => Value::String(instant.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        None => Value::from(millis),
    }
}

fn value_at(array: &ArrayRef, row: usize) -> Result<Value, QueryError> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Boolean => Value::Bool(
            array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .is_some_and(|a| a.value(row)),
        ),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(
            array
                .as_any()
                .downcast_ref::<StringArray>()
                .map(|a| a.value(row).to_string())
                .unwrap_or_default(),
        ),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Date32 => {
            let days = array
                .as_any()
                .downcast_ref::<Date32Array>()
                .map_or(0, |a| a.value(row));
            let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).and_then(|epoch| {
                epoch.checked_add_signed(chrono::Duration::days(i64::from(days)))
            });
            date.map_or(Value::from(days), |d| {
                Value::String(d.format("%Y-%m-%d").to_string())
            })
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => format_timestamp(
            array
                .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                .value(row),
        ),
        DataType::Timestamp(..) => {
            let cast = datafusion::arrow::compute::cast(
                &array.slice(row, 1),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )
            .map_err(|e| QueryError::Execution(e.to_string()))?;
            format_timestamp(
                cast.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                    .value(0),
            )
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            Value::Array(
                (0..list.len())
                    .map(|i| value_at(&list, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>().value(row);
            Value::Array(
                (0..list.len())
                    .map(|i| value_at(&list, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::Struct(fields) => {
            let structure = array.as_struct();
            let mut object = serde_json::Map::new();
            for (field, column) in fields.iter().zip(structure.columns()) {
                object.insert(field.name().clone(), value_at(column, row)?);
            }
            Value::Object(object)
        }
        _ => {
            let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
                .map_err(|e| QueryError::Execution(e.to_string()))?;
            Value::String(formatter.value(row).to_string())
        }
    })
}

fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

/// CSV has no arrays or objects: such a column is written as its JSON text
/// (`["a","b"]`), the form the JSON results use.
pub(crate) fn flat_for_csv(batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| is_nested(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !is_nested(field.data_type()) {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let mut texts = Vec::with_capacity(column.len());
        for row in 0..column.len() {
            texts.push(if column.is_null(row) {
                None
            } else {
                Some(value_at(column, row)?.to_string())
            });
        }
        fields.push(datafusion::arrow::datatypes::Field::new(
            field.name(),
            DataType::Utf8,
            true,
        ));
        columns.push(std::sync::Arc::new(StringArray::from(texts)));
    }
    let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(|e| QueryError::Execution(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptive_names_follow_rakam() {
        assert_eq!(descriptive_name("page_url"), "Page url");
        assert_eq!(descriptive_name("_time"), "Time");
    }

    #[test]
    fn timestamps_are_iso() {
        assert_eq!(
            format_timestamp(1_704_067_200_123),
            Value::String("2024-01-01T00:00:00.123Z".into())
        );
    }
}
