//! Arrow batches to PostgreSQL's binary `COPY` format, column by column
//! from the Arrow arrays (no per-value boxing), straight into the bytes
//! sent to the server.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Fields, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType,
};
use rakam_store_api::{Result, StoreError};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MILLIS: i64 = 946_684_800_000;
const PG_EPOCH_DAYS: i32 = 10_957;

pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

fn element_oid(data_type: &DataType) -> Result<u32> {
    Ok(match data_type {
        DataType::Int64 => 20,
        DataType::Float64 => 701,
        DataType::Boolean => 16,
        DataType::Utf8 => 25,
        DataType::Binary => 17,
        DataType::Date32 => 1082,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1184,
        other => return Err(unsupported(other)),
    })
}

fn unsupported(data_type: &DataType) -> StoreError {
    StoreError::Data(format!(
        "the PostgreSQL store cannot write Arrow type {data_type}"
    ))
}

/// Writes one value of a scalar column (not null) with its length prefix.
fn write_scalar(out: &mut BytesMut, array: &ArrayRef, row: usize) -> Result<()> {
    match array.data_type() {
        DataType::Int64 => {
            out.put_i32(8);
            out.put_i64(array.as_primitive::<Int64Type>().value(row));
        }
        DataType::Float64 => {
            out.put_i32(8);
            out.put_f64(array.as_primitive::<Float64Type>().value(row));
        }
        DataType::Boolean => {
            out.put_i32(1);
            out.put_u8(u8::from(array.as_boolean().value(row)));
        }
        DataType::Utf8 => {
            let text = array.as_string::<i32>().value(row);
            out.put_i32(length(text.len())?);
            out.put_slice(text.as_bytes());
        }
        DataType::Binary => {
            let bytes = array.as_binary::<i32>().value(row);
            out.put_i32(length(bytes.len())?);
            out.put_slice(bytes);
        }
        DataType::Date32 => {
            out.put_i32(4);
            out.put_i32(array.as_primitive::<Date32Type>().value(row) - PG_EPOCH_DAYS);
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            out.put_i32(8);
            out.put_i64(timestamp_micros(
                array.as_primitive::<TimestampMillisecondType>().value(row),
            ));
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            write_list(out, list, row)?;
        }
        other => return Err(unsupported(other)),
    }
    Ok(())
}

fn timestamp_micros(millis: i64) -> i64 {
    millis.saturating_sub(PG_EPOCH_MILLIS).saturating_mul(1000)
}

fn length(len: usize) -> Result<i32> {
    i32::try_from(len).map_err(|_| StoreError::Data("a value is larger than 2 GiB".into()))
}

/// One-dimensional array: header, then each element with its length.
fn write_list(out: &mut BytesMut, list: &ListArray, row: usize) -> Result<()> {
    let values = list.value(row);
    let oid = element_oid(values.data_type())?;
    let mut body = BytesMut::new();
    if values.is_empty() {
        body.put_i32(0);
        body.put_i32(0);
        body.put_u32(oid);
    } else {
        body.put_i32(1);
        body.put_i32(i32::from(values.null_count() > 0));
        body.put_u32(oid);
        body.put_i32(length(values.len())?);
        body.put_i32(1);
        for index in 0..values.len() {
            if values.is_null(index) {
                body.put_i32(-1);
            } else {
                write_scalar(&mut body, &values, index)?;
            }
        }
    }
    out.put_i32(length(body.len())?);
    out.put_slice(&body);
    Ok(())
}

/// Checks up front that every column is of a type the encoder writes and
/// every text is storable, so a batch fails before any byte is sent rather
/// than half-way.
pub(crate) fn check_batch(fields: &Fields, columns: &[ArrayRef]) -> Result<()> {
    for (field, column) in fields.iter().zip(columns) {
        let texts = match column.data_type() {
            DataType::List(item) => {
                element_oid(item.data_type())?;
                (item.data_type() == &DataType::Utf8)
                    .then(|| column.as_list::<i32>().values().clone())
            }
            DataType::Utf8 => Some(column.clone()),
            other => {
                element_oid(other)?;
                None
            }
        };
        // PostgreSQL's text cannot hold NUL; refusing the request names the
        // field, where the server would only fail the whole COPY.
        if let Some(texts) = texts {
            let texts = texts.as_string::<i32>();
            if texts.value_data().contains(&0) {
                return Err(StoreError::Unstorable(format!(
                    "field {:?} holds the character U+0000, which PostgreSQL cannot store in text",
                    field.name()
                )));
            }
        }
    }
    Ok(())
}

/// Appends rows `start..end` of the columns as COPY tuples.
pub(crate) fn encode_rows(
    out: &mut BytesMut,
    columns: &[ArrayRef],
    start: usize,
    end: usize,
) -> Result<()> {
    let field_count = i16::try_from(columns.len())
        .map_err(|_| StoreError::Data("too many columns for one COPY".into()))?;
    for row in start..end {
        out.put_i16(field_count);
        for column in columns {
            if column.is_null(row) {
                out.put_i32(-1);
            } else {
                write_scalar(out, column, row)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};

    #[test]
    fn rows_encode_as_copy_tuples() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec![Some("ab"), Some("")])),
            Arc::new(TimestampMillisecondArray::from(vec![
                PG_EPOCH_MILLIS,
                PG_EPOCH_MILLIS + 1,
            ])),
        ];
        let fields: Fields = ["n", "s", "t"]
            .iter()
            .zip(&columns)
            .map(|(name, c)| {
                datafusion::arrow::datatypes::Field::new(*name, c.data_type().clone(), true)
            })
            .collect();
        check_batch(&fields, &columns).expect("supported");
        let nul: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["a\0b"]))];
        let nul_field: Fields = vec![datafusion::arrow::datatypes::Field::new(
            "s",
            DataType::Utf8,
            true,
        )]
        .into();
        assert!(matches!(
            check_batch(&nul_field, &nul),
            Err(StoreError::Unstorable(message)) if message.contains("\"s\"")
        ));
        let mut out = BytesMut::new();
        encode_rows(&mut out, &columns, 0, 2).expect("encode");
        let expected: Vec<u8> = [
            &[0, 3][..],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 2, b'a', b'b'],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0, 3],
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 0],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 3, 0xe8],
        ]
        .concat();
        assert_eq!(&out[..], &expected[..]);
    }
}
