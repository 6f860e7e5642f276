//! The canonical hash of a value: fixed across builds and processes (a
//! sketch written today merges with one written by another version), and
//! equal for values SQL treats as one: an integral float hashes as its
//! integer, so a column widened from BIGINT to DOUBLE keeps counting the
//! same values once. The kind of value (integer, float, text, boolean) is
//! part of the seed, so "1" and 1 stay apart.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::common::Result;
use twox_hash::XxHash64;

const SEED: u64 = 0x5241_4b41_4d48_4c4c;
const INTEGER: u64 = 1;
const FLOAT: u64 = 2;
const TEXT: u64 = 3;
const BOOL: u64 = 4;

fn hash(kind: u64, bytes: &[u8]) -> u64 {
    XxHash64::oneshot(SEED ^ kind.wrapping_mul(0x9E37_79B9_7F4A_7C15), bytes)
}

fn integer(value: i128) -> u64 {
    hash(INTEGER, &value.to_le_bytes())
}

fn float(value: f64) -> u64 {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e38 {
        return integer(value as i128);
    }
    let canonical = if value.is_nan() { f64::NAN } else { value };
    hash(FLOAT, &canonical.to_bits().to_le_bytes())
}

/// Calls `each(row, hash)` for every non-null value of `values`.
pub(super) fn each_hash(values: &ArrayRef, mut each: impl FnMut(usize, u64)) -> Result<()> {
    macro_rules! rows {
        ($array:expr, $hash:expr) => {
            for (row, value) in $array.iter().enumerate() {
                if let Some(value) = value {
                    each(row, $hash(value));
                }
            }
        };
    }
    match values.data_type() {
        DataType::Int8 => rows!(values.as_primitive::<Int8Type>(), |v| integer(i128::from(
            v
        ))),
        DataType::Int16 => rows!(values.as_primitive::<Int16Type>(), |v| integer(i128::from(
            v
        ))),
        DataType::Int32 => rows!(values.as_primitive::<Int32Type>(), |v| integer(i128::from(
            v
        ))),
        DataType::Int64 => rows!(values.as_primitive::<Int64Type>(), |v| integer(i128::from(
            v
        ))),
        DataType::UInt8 => rows!(values.as_primitive::<UInt8Type>(), |v| integer(i128::from(
            v
        ))),
        DataType::UInt16 => rows!(values.as_primitive::<UInt16Type>(), |v| integer(
            i128::from(v)
        )),
        DataType::UInt32 => rows!(values.as_primitive::<UInt32Type>(), |v| integer(
            i128::from(v)
        )),
        DataType::UInt64 => rows!(values.as_primitive::<UInt64Type>(), |v| integer(
            i128::from(v)
        )),
        DataType::Float32 => rows!(values.as_primitive::<Float32Type>(), |v| float(f64::from(
            v
        ))),
        DataType::Float64 => rows!(values.as_primitive::<Float64Type>(), float),
        DataType::Boolean => rows!(values.as_boolean(), |v: bool| hash(BOOL, &[u8::from(v)])),
        DataType::Utf8 => rows!(values.as_string::<i32>(), |v: &str| hash(
            TEXT,
            v.as_bytes()
        )),
        DataType::LargeUtf8 => {
            rows!(values.as_string::<i64>(), |v: &str| hash(
                TEXT,
                v.as_bytes()
            ))
        }
        DataType::Utf8View => rows!(values.as_string_view(), |v: &str| hash(TEXT, v.as_bytes())),
        DataType::Null => {}
        _ => {
            let text = cast(values, &DataType::Utf8)?;
            let text: &StringArray = text.as_string();
            if text.len() == values.len() {
                rows!(text, |v: &str| hash(TEXT, v.as_bytes()));
            }
        }
    }
    Ok(())
}
