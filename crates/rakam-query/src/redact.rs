//! What `EXPLAIN` and error messages may not show: the project's id and
//! the backend's private text (a data directory). Replaced, longest first,
//! so that a path reads `<data>/tables/<project>/pageview/…`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;

use crate::QueryError;

#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// (hidden text, what shows instead), longest first.
    replacements: Vec<(String, &'static str)>,
}

impl Redactor {
    pub(crate) fn new(project_id: &str, private_text: Vec<String>) -> Self {
        let mut replacements: Vec<(String, &'static str)> = private_text
            .into_iter()
            .filter(|text| !text.is_empty())
            .map(|text| (text, "<data>"))
            .collect();
        if !project_id.is_empty() {
            replacements.push((project_id.to_string(), "<project>"));
        }
        replacements.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        Self { replacements }
    }

    pub(crate) fn text(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (hidden, shown) in &self.replacements {
            if text.contains(hidden.as_str()) {
                text = text.replace(hidden.as_str(), shown);
            }
        }
        text
    }

    pub(crate) fn error(&self, error: QueryError) -> QueryError {
        match error {
            QueryError::Execution(message) => QueryError::Execution(self.text(&message)),
            QueryError::Sql {
                message,
                line,
                column,
            } => QueryError::Sql {
                message: self.text(&message),
                line,
                column,
            },
            other => other,
        }
    }

    /// Every text column of a batch (an `EXPLAIN` result), redacted.
    pub(crate) fn batch(&self, batch: RecordBatch) -> Result<RecordBatch, QueryError> {
        let columns = batch
            .columns()
            .iter()
            .map(|column| -> ArrayRef {
                let texts: Option<Vec<Option<String>>> = match column.data_type() {
                    DataType::Utf8 => Some(
                        column
                            .as_string::<i32>()
                            .iter()
                            .map(|v| v.map(|t| self.text(t)))
                            .collect(),
                    ),
                    DataType::Utf8View => Some(
                        column
                            .as_string_view()
                            .iter()
                            .map(|v| v.map(|t| self.text(t)))
                            .collect(),
                    ),
                    _ => None,
                };
                match texts {
                    Some(texts) => {
                        let array = StringArray::from(texts);
                        datafusion::arrow::compute::cast(&array, column.data_type())
                            .unwrap_or_else(|_| Arc::new(array) as ArrayRef)
                    }
                    None => column.clone(),
                }
            })
            .collect();
        RecordBatch::try_new(batch.schema(), columns)
            .map_err(|e| QueryError::Execution(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ids_are_hidden_longest_first() {
        let redactor = Redactor::new(
            "abc123",
            vec!["/var/lib/rakam".into(), "var/lib/rakam".into()],
        );
        assert_eq!(
            redactor.text("file_groups={/var/lib/rakam/tables/abc123/x.parquet, var/lib/rakam/y}"),
            "file_groups={<data>/tables/<project>/x.parquet, <data>/y}"
        );
        let batch = RecordBatch::try_from_iter([(
            "plan",
            Arc::new(StringArray::from(vec!["scan /var/lib/rakam/a"])) as ArrayRef,
        )])
        .expect("in a test");
        let redacted = redactor.batch(batch).expect("in a test");
        assert_eq!(
            redacted.column(0).as_string::<i32>().value(0),
            "scan <data>/a"
        );
        assert_eq!(redacted.column(0).len(), 1);
    }
}
