//! Rows from PostgreSQL as Arrow batches, so results of every backend are
//! encoded by the same code. Types map to what DataFusion returns for the
//! same query where they differ (`numeric` sums become LONG when whole).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, ListBuilder, StringArray, StringBuilder, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rakam_store_api::{Result, StoreError};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

use crate::numeric::Numeric;

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// How a PostgreSQL column is read.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Numeric,
    Text,
    Json,
    TimestampTz,
    Timestamp,
    Date,
    Bytes,
    /// One-dimensional arrays, read as text lists unless listed here.
    List(Box<Kind>),
}

fn kind_of(ty: &Type) -> Option<Kind> {
    Some(match *ty {
        Type::BOOL => Kind::Bool,
        Type::INT2 => Kind::Int16,
        Type::INT4 => Kind::Int32,
        Type::INT8 => Kind::Int64,
        Type::FLOAT4 => Kind::Float32,
        Type::FLOAT8 => Kind::Float64,
        Type::NUMERIC => Kind::Numeric,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Kind::Text,
        Type::JSON | Type::JSONB => Kind::Json,
        Type::TIMESTAMPTZ => Kind::TimestampTz,
        Type::TIMESTAMP => Kind::Timestamp,
        Type::DATE => Kind::Date,
        Type::BYTEA => Kind::Bytes,
        Type::BOOL_ARRAY => Kind::List(Box::new(Kind::Bool)),
        Type::INT8_ARRAY => Kind::List(Box::new(Kind::Int64)),
        Type::INT4_ARRAY => Kind::List(Box::new(Kind::Int32)),
        Type::FLOAT8_ARRAY => Kind::List(Box::new(Kind::Float64)),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => Kind::List(Box::new(Kind::Text)),
        Type::DATE_ARRAY => Kind::List(Box::new(Kind::Date)),
        Type::TIMESTAMPTZ_ARRAY => Kind::List(Box::new(Kind::TimestampTz)),
        _ => return None,
    })
}

/// The names and types of a statement's columns; an error names the first
/// column of a type Rakam cannot return yet.
pub(crate) fn check_columns(columns: &[tokio_postgres::Column]) -> Result<()> {
    for column in columns {
        if kind_of(column.type_()).is_none() {
            return Err(StoreError::Sql {
                message: format!(
                    "column {:?} has PostgreSQL type {}, which Rakam does not return yet; cast it, for example {}::text",
                    column.name(),
                    column.type_(),
                    column.name()
                ),
                position: None,
            });
        }
    }
    Ok(())
}

fn column_values<'a, T: FromSql<'a>>(rows: &'a [Row], index: usize) -> Result<Vec<Option<T>>> {
    rows.iter()
        .map(|row| {
            row.try_get::<_, Option<T>>(index)
                .map_err(|e| StoreError::Data(format!("reading a result value: {e}")))
        })
        .collect()
}

fn days_since_epoch(date: NaiveDate) -> i32 {
    chrono::Datelike::num_days_from_ce(&date) - UNIX_EPOCH_DAYS_FROM_CE
}

fn scalar_array(kind: &Kind, rows: &[Row], index: usize) -> Result<ArrayRef> {
    Ok(match kind {
        Kind::Bool => Arc::new(BooleanArray::from(column_values::<bool>(rows, index)?)),
        Kind::Int16 => Arc::new(Int16Array::from(column_values::<i16>(rows, index)?)),
        Kind::Int32 => Arc::new(Int32Array::from(column_values::<i32>(rows, index)?)),
        Kind::Int64 => Arc::new(Int64Array::from(column_values::<i64>(rows, index)?)),
        Kind::Float32 => Arc::new(Float32Array::from(column_values::<f32>(rows, index)?)),
        Kind::Float64 => Arc::new(Float64Array::from(column_values::<f64>(rows, index)?)),
        Kind::Numeric => {
            let values = column_values::<Numeric>(rows, index)?;
            let whole = values.iter().flatten().all(|n| n.integer.is_some());
            if whole {
                Arc::new(Int64Array::from(
                    values
                        .iter()
                        .map(|n| n.and_then(|n| n.integer))
                        .collect::<Vec<_>>(),
                ))
            } else {
                Arc::new(Float64Array::from(
                    values
                        .iter()
                        .map(|n| n.map(|n| n.value))
                        .collect::<Vec<_>>(),
                ))
            }
        }
        Kind::Text => Arc::new(StringArray::from(column_values::<&str>(rows, index)?)),
        Kind::Json => {
            let values = column_values::<serde_json::Value>(rows, index)?;
            Arc::new(StringArray::from(
                values
                    .iter()
                    .map(|v| v.as_ref().map(|v| v.to_string()))
                    .collect::<Vec<_>>(),
            ))
        }
        Kind::TimestampTz => {
            let values = column_values::<DateTime<Utc>>(rows, index)?;
            Arc::new(
                TimestampMillisecondArray::from(
                    values
                        .iter()
                        .map(|v| v.map(|t| t.timestamp_millis()))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            )
        }
        Kind::Timestamp => {
            let values = column_values::<NaiveDateTime>(rows, index)?;
            Arc::new(TimestampMillisecondArray::from(
                values
                    .iter()
                    .map(|v| v.map(|t| t.and_utc().timestamp_millis()))
                    .collect::<Vec<_>>(),
            ))
        }
        Kind::Date => {
            let values = column_values::<NaiveDate>(rows, index)?;
            Arc::new(Date32Array::from(
                values
                    .iter()
                    .map(|v| v.map(days_since_epoch))
                    .collect::<Vec<_>>(),
            ))
        }
        Kind::Bytes => Arc::new(BinaryArray::from(column_values::<&[u8]>(rows, index)?)),
        Kind::List(inner) => list_array(inner, rows, index)?,
    })
}

fn list_array(inner: &Kind, rows: &[Row], index: usize) -> Result<ArrayRef> {
    // Reads `Vec<Option<$rust>>` per row and appends each item, converted
    // by `$convert`, to a list of `$builder`.
    macro_rules! list_of {
        ($rust:ty, $builder:expr, $convert:expr) => {{
            let values = column_values::<Vec<Option<$rust>>>(rows, index)?;
            let mut builder = ListBuilder::new($builder);
            for value in values {
                match value {
                    Some(items) => {
                        for item in items {
                            builder.values().append_option(item.map($convert));
                        }
                        builder.append(true);
                    }
                    None => builder.append(false),
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    use datafusion::arrow::array::{
        BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
        TimestampMillisecondBuilder,
    };
    Ok(match inner {
        Kind::Date => list_of!(NaiveDate, Date32Builder::new(), days_since_epoch),
        Kind::TimestampTz => list_of!(
            DateTime<Utc>,
            TimestampMillisecondBuilder::new().with_timezone("UTC"),
            |t: DateTime<Utc>| t.timestamp_millis()
        ),
        Kind::Bool => list_of!(bool, BooleanBuilder::new(), std::convert::identity),
        Kind::Int32 => list_of!(i32, Int32Builder::new(), std::convert::identity),
        Kind::Int64 => list_of!(i64, Int64Builder::new(), std::convert::identity),
        Kind::Float64 => list_of!(f64, Float64Builder::new(), std::convert::identity),
        _ => list_of!(String, StringBuilder::new(), std::convert::identity),
    })
}

/// The Arrow schema of a statement's columns (before any row is read;
/// `numeric` is reported as DOUBLE, its widest form).
pub(crate) fn schema_of(columns: &[tokio_postgres::Column]) -> Result<SchemaRef> {
    check_columns(columns)?;
    let fields: Vec<Field> = columns
        .iter()
        .map(|column| {
            let kind = kind_of(column.type_()).unwrap_or(Kind::Text);
            Field::new(column.name(), data_type(&kind), true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

fn data_type(kind: &Kind) -> DataType {
    match kind {
        Kind::Bool => DataType::Boolean,
        Kind::Int16 => DataType::Int16,
        Kind::Int32 => DataType::Int32,
        Kind::Int64 => DataType::Int64,
        Kind::Float32 => DataType::Float32,
        Kind::Float64 | Kind::Numeric => DataType::Float64,
        Kind::Text | Kind::Json => DataType::Utf8,
        Kind::TimestampTz => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        Kind::Date => DataType::Date32,
        Kind::Bytes => DataType::Binary,
        Kind::List(inner) => {
            let item = match inner.as_ref() {
                Kind::Bool
                | Kind::Int32
                | Kind::Int64
                | Kind::Float64
                | Kind::Date
                | Kind::TimestampTz => data_type(inner),
                _ => DataType::Utf8,
            };
            DataType::List(Arc::new(Field::new("item", item, true)))
        }
    }
}

/// Converts the rows of a statement into one batch.
pub(crate) fn rows_to_batch(
    columns: &[tokio_postgres::Column],
    rows: &[Row],
) -> Result<RecordBatch> {
    check_columns(columns)?;
    let mut arrays = Vec::with_capacity(columns.len());
    let mut fields = Vec::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        let kind = kind_of(column.type_()).unwrap_or(Kind::Text);
        let array = scalar_array(&kind, rows, index)?;
        fields.push(Field::new(column.name(), array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(schema, arrays, &options).map_err(StoreError::from)
}
