//! `repeat`, `lpad` and `rpad` build strings far larger than their input:
//! `repeat('x', 1e8)` over ten rows is a gigabyte, allocated (and doubled
//! while it grows) before any memory pool sees it. These wrappers compute
//! what a call would build from its arguments first, and refuse a batch
//! whose result would pass the bound, with the query's memory error.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::{cast::cast, length::length};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// How a function's result size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: the text's bytes times n.
    Repeat,
    /// `lpad/rpad(text, n [, fill])`: n characters of the text or the fill.
    Pad,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
    max_bytes: u64,
}

/// The bounded `repeat`, `lpad` and `rpad`; each batch of one call may
/// build at most `max_bytes`.
pub(crate) fn bounded_string_functions(max_bytes: u64) -> Vec<ScalarUDF> {
    let wrap = |inner: Arc<ScalarUDF>, growth| {
        ScalarUDF::new_from_impl(Bounded {
            inner: (*inner).clone(),
            growth,
            max_bytes,
        })
    };
    vec![
        wrap(datafusion::functions::string::repeat(), Growth::Repeat),
        wrap(datafusion::functions::unicode::lpad(), Growth::Pad),
        wrap(datafusion::functions::unicode::rpad(), Growth::Pad),
    ]
}

/// One number per row, or one for every row.
enum PerRow {
    Same(u64),
    Each(Vec<u64>),
}

impl PerRow {
    fn get(&self, row: usize) -> u64 {
        match self {
            Self::Same(value) => *value,
            Self::Each(values) => values.get(row).copied().unwrap_or(0),
        }
    }
}

fn non_negative(values: &ArrayRef) -> Result<Vec<u64>> {
    let values = cast(values, &DataType::Int64)?;
    Ok(values
        .as_primitive::<Int64Type>()
        .iter()
        .map(|value| value.map_or(0, |v| v.max(0) as u64))
        .collect())
}

fn text_bytes(argument: &ColumnarValue) -> Result<PerRow> {
    Ok(match argument {
        ColumnarValue::Scalar(scalar) => PerRow::Same(match scalar {
            ScalarValue::Utf8(Some(text))
            | ScalarValue::LargeUtf8(Some(text))
            | ScalarValue::Utf8View(Some(text)) => text.len() as u64,
            _ => 0,
        }),
        ColumnarValue::Array(array) => PerRow::Each(non_negative(&length(array)?)?),
    })
}

fn counts(argument: &ColumnarValue) -> Result<PerRow> {
    Ok(match argument {
        ColumnarValue::Scalar(scalar) => PerRow::Same(match scalar.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(count)) => count.max(0) as u64,
            _ => 0,
        }),
        ColumnarValue::Array(array) => PerRow::Each(non_negative(array)?),
    })
}

/// The widest character a fill may add (4 bytes when the fill varies).
fn fill_width(argument: Option<&ColumnarValue>) -> u64 {
    match argument {
        None => 1,
        Some(ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(fill))
            | ScalarValue::LargeUtf8(Some(fill))
            | ScalarValue::Utf8View(Some(fill)),
        )) => fill.chars().map(|c| c.len_utf8() as u64).max().unwrap_or(1),
        Some(_) => 4,
    }
}

impl Bounded {
    fn result_bytes(&self, args: &ScalarFunctionArgs) -> Result<u64> {
        let (Some(text), Some(count)) = (args.args.first(), args.args.get(1)) else {
            return Ok(0);
        };
        let (text, count) = (text_bytes(text)?, counts(count)?);
        let width = fill_width(args.args.get(2));
        let mut total: u64 = 0;
        for row in 0..args.number_rows.max(1) {
            let row_bytes = match self.growth {
                Growth::Repeat => text.get(row).saturating_mul(count.get(row)),
                Growth::Pad => text
                    .get(row)
                    .max(count.get(row).saturating_mul(width.max(4))),
            };
            total = total.saturating_add(row_bytes);
            if total > self.max_bytes {
                break;
            }
        }
        Ok(total)
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.result_bytes(&args)?;
        if bytes > self.max_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build more than {} bytes of text in one batch (limit: a quarter of query.memory_per_query_bytes)",
                self.name(),
                self.max_bytes
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn run(sql: &str) -> Result<usize> {
        let context = SessionContext::new();
        for udf in bounded_string_functions(1_000_000) {
            context.register_udf(udf);
        }
        let batches = context.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|batch| batch.num_rows()).sum())
    }

    #[tokio::test]
    async fn small_results_pass_and_large_ones_are_refused() {
        assert_eq!(
            run("SELECT repeat('ab', 10), lpad('x', 5), rpad('x', 5, 'é')")
                .await
                .expect("small"),
            1
        );
        assert_eq!(
            run("SELECT repeat(CAST(v AS VARCHAR), 3) FROM (VALUES (1), (22)) t(v)")
                .await
                .expect("rows"),
            2
        );
        for sql in [
            "SELECT repeat('x', 100000000)",
            "SELECT repeat('xx', v) FROM (VALUES (400000), (400000)) t(v)",
            "SELECT lpad('x', 100000000)",
            "SELECT rpad(CAST(v AS VARCHAR), 300000) FROM (VALUES (1), (2)) t(v)",
        ] {
            let error = run(sql).await.expect_err(sql).to_string();
            assert!(
                error.contains("query.memory_per_query_bytes"),
                "{sql}: {error}"
            );
        }
    }
}
