//! A filter expression applied to the batches of an append, outside any
//! query: the live stream's per-collection `filter`. The expression is
//! checked like an analysis filter (one expression, bounded nesting) and
//! compiled against each batch schema it meets (schemas only grow, so a
//! filter valid once stays valid); it reads the batch's columns and nothing
//! else: there is no table to name.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::bounded_strings::bounded_string_functions;
use crate::QueryError;

/// Strings a filter may build (`repeat`, `lpad`, ...) per call.
const MAX_FILTER_STRING_BYTES: u64 = 1 << 20;

pub struct BatchFilter {
    text: String,
    context: SessionContext,
    compiled: Option<(SchemaRef, Arc<dyn PhysicalExpr>)>,
}

impl std::fmt::Debug for BatchFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchFilter")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

impl BatchFilter {
    /// Checks that `text` is one SQL expression.
    pub fn new(text: &str) -> Result<Self, QueryError> {
        let dialect = GenericDialect {};
        crate::check_nesting(text, &dialect)?;
        let mut parser = Parser::new(&dialect)
            .try_with_sql(text)
            .map_err(|e| QueryError::from_parser(&e))?;
        parser
            .parse_expr()
            .map_err(|e| QueryError::from_parser(&e))?;
        let next = parser.peek_token();
        if next.token != Token::EOF {
            return Err(QueryError::Sql {
                message: format!("unexpected {} after the filter expression", next.token),
                line: Some(next.span.start.line),
                column: Some(next.span.start.column),
            });
        }
        let context = SessionContext::new();
        for udf in bounded_string_functions(MAX_FILTER_STRING_BYTES) {
            context.register_udf(udf);
        }
        Ok(Self {
            text: text.to_string(),
            context,
            compiled: None,
        })
    }

    /// Compiles the filter for `schema` (an error names what does not fit,
    /// such as a column the schema lacks or a non-boolean expression).
    pub fn check(&mut self, schema: &SchemaRef) -> Result<(), QueryError> {
        self.compiled_for(schema).map(|_| ())
    }

    /// The rows of `batch` the filter keeps (NULL counts as false).
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
        let expr = self.compiled_for(&batch.schema())?;
        let mask = expr
            .evaluate(batch)
            .and_then(|value| value.into_array(batch.num_rows()))
            .map_err(QueryError::from_datafusion)?;
        let Some(mask) = mask.as_boolean_opt() else {
            return Err(filter_not_boolean(mask.data_type()));
        };
        filter_record_batch(batch, mask).map_err(|e| QueryError::Execution(e.to_string()))
    }

    fn compiled_for(&mut self, schema: &SchemaRef) -> Result<Arc<dyn PhysicalExpr>, QueryError> {
        if let Some((known, expr)) = &self.compiled {
            if Arc::ptr_eq(known, schema) || known == schema {
                return Ok(expr.clone());
            }
        }
        let df_schema =
            DFSchema::try_from(schema.as_ref().clone()).map_err(QueryError::from_datafusion)?;
        let expr = self
            .context
            .parse_sql_expr(&self.text, &df_schema)
            .map_err(QueryError::from_datafusion)?;
        let physical = self
            .context
            .create_physical_expr(expr, &df_schema)
            .map_err(QueryError::from_datafusion)?;
        let kind = physical
            .data_type(schema.as_ref())
            .map_err(QueryError::from_datafusion)?;
        if kind != DataType::Boolean {
            return Err(filter_not_boolean(&kind));
        }
        self.compiled = Some((schema.clone(), physical.clone()));
        Ok(physical)
    }
}

fn filter_not_boolean(kind: &DataType) -> QueryError {
    QueryError::Sql {
        message: format!("the filter must be a condition (BOOLEAN), not {kind}"),
        line: None,
        column: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("country", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("tr"), Some("de"), None])),
                Arc::new(Int64Array::from(vec![Some(5), Some(50), Some(7)])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn keeps_the_rows_the_condition_holds_for() {
        let mut filter = BatchFilter::new("country = 'tr' OR amount > 10").expect("filter");
        assert_eq!(filter.apply(&batch()).expect("apply").num_rows(), 2);
        let mut filter = BatchFilter::new("Country IS NULL").expect("filter");
        assert_eq!(filter.apply(&batch()).expect("apply").num_rows(), 1);
    }

    #[test]
    fn refuses_what_is_not_one_condition_over_the_columns() {
        assert!(BatchFilter::new("amount > 1; DROP TABLE x").is_err());
        assert!(BatchFilter::new("").is_err());
        let schema = batch().schema();
        for text in [
            "missing = 1",
            "amount + 1",
            "amount IN (SELECT 1)",
            "length(repeat('x', 100000000)) > 0",
        ] {
            let mut filter = BatchFilter::new(text).expect("parses");
            let checked = filter.check(&schema).and_then(|_| filter.apply(&batch()));
            assert!(checked.is_err(), "{text} was accepted");
        }
    }
}
