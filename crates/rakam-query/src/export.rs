//! Export files written batch by batch, so an export of any size streams
//! through the server without being held in memory.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::encode::flat_for_csv;
use crate::QueryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

impl ExportFormat {
    /// `CSV`, `JSON`, `NDJSON` or `JSONL`, in any case.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "CSV" => Some(Self::Csv),
            "JSON" => Some(Self::Json),
            "NDJSON" | "JSONL" => Some(Self::Ndjson),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
        }
    }
}

/// Turns the batches of one result into the bytes of one file.
#[derive(Debug)]
pub struct ExportEncoder {
    format: ExportFormat,
    schema: SchemaRef,
    /// Whether anything was written (the CSV header, the JSON `[`).
    started: bool,
}

fn failed(error: impl std::fmt::Display) -> QueryError {
    QueryError::Execution(error.to_string())
}

impl ExportEncoder {
    pub fn new(format: ExportFormat, schema: SchemaRef) -> Self {
        Self {
            format,
            schema,
            started: false,
        }
    }

    /// The bytes of one batch (after the CSV header or the JSON `[`, for
    /// the first).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
        match self.format {
            ExportFormat::Csv => {
                let mut out = Vec::new();
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(!self.started)
                    .build(&mut out)
                    .write(&flat_for_csv(batch)?)
                    .map_err(failed)?;
                self.started = true;
                Ok(out)
            }
            ExportFormat::Ndjson => lines(batch),
            ExportFormat::Json => {
                if batch.num_rows() == 0 {
                    return Ok(Vec::new());
                }
                // JSON strings escape line breaks, so the only ones in the
                // lines are those between objects.
                let mut out = vec![if self.started { b',' } else { b'[' }];
                let mut objects = lines(batch)?;
                objects.pop();
                for byte in &mut objects {
                    if *byte == b'\n' {
                        *byte = b',';
                    }
                }
                out.extend_from_slice(&objects);
                self.started = true;
                Ok(out)
            }
        }
    }

    /// The bytes that end the file: the header of an empty CSV, the JSON `]`.
    pub fn finish(mut self) -> Result<Vec<u8>, QueryError> {
        match self.format {
            ExportFormat::Csv if !self.started => {
                let empty = RecordBatch::new_empty(self.schema.clone());
                self.batch(&empty)
            }
            ExportFormat::Json if !self.started => Ok(b"[]".to_vec()),
            ExportFormat::Json => Ok(b"]".to_vec()),
            ExportFormat::Csv | ExportFormat::Ndjson => Ok(Vec::new()),
        }
    }

    /// A whole result as one file.
    pub fn encode_all(
        format: ExportFormat,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Vec<u8>, QueryError> {
        let mut encoder = Self::new(format, schema);
        let mut out = Vec::new();
        for batch in batches {
            out.extend(encoder.batch(batch)?);
        }
        out.extend(encoder.finish()?);
        Ok(out)
    }
}

fn lines(batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
    let mut writer = LineDelimitedWriter::new(Vec::new());
    writer.write(batch).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(writer.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, ListBuilder, StringBuilder};

    use super::*;

    fn numbers(values: &[i64]) -> RecordBatch {
        let n: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        RecordBatch::try_from_iter([("n", n)]).expect("batch")
    }

    fn export(format: ExportFormat, batches: &[RecordBatch]) -> String {
        let schema = numbers(&[]).schema();
        let bytes = ExportEncoder::encode_all(format, schema, batches).expect("encode");
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn batches_join_into_one_file() {
        let batches = [numbers(&[1, 2]), numbers(&[]), numbers(&[3])];
        assert_eq!(export(ExportFormat::Csv, &batches), "n\n1\n2\n3\n");
        assert_eq!(
            export(ExportFormat::Json, &batches),
            r#"[{"n":1},{"n":2},{"n":3}]"#
        );
        assert_eq!(
            export(ExportFormat::Ndjson, &batches),
            "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"
        );
    }

    #[test]
    fn an_empty_result_is_still_a_file() {
        assert_eq!(export(ExportFormat::Csv, &[]), "n\n");
        assert_eq!(export(ExportFormat::Json, &[numbers(&[])]), "[]");
        assert_eq!(export(ExportFormat::Ndjson, &[]), "");
    }

    #[test]
    fn csv_writes_arrays_as_json_text() {
        let mut tags = ListBuilder::new(StringBuilder::new());
        tags.values().append_value("a");
        tags.values().append_value("b,c");
        tags.append(true);
        tags.append(false);
        let tags: ArrayRef = Arc::new(tags.finish());
        let n: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let batch = RecordBatch::try_from_iter([("n", n), ("tags", tags)]).expect("batch");
        let csv =
            ExportEncoder::encode_all(ExportFormat::Csv, batch.schema(), &[batch]).expect("csv");
        assert_eq!(
            String::from_utf8(csv).expect("utf-8"),
            "n,tags\n1,\"[\"\"a\"\",\"\"b,c\"\"]\"\n2,\n"
        );
    }

    #[test]
    fn json_strings_with_line_breaks_stay_intact() {
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            "a\nb", "c",
        ]));
        let batch = RecordBatch::try_from_iter([("s", text)]).expect("batch");
        let json =
            ExportEncoder::encode_all(ExportFormat::Json, batch.schema(), &[batch]).expect("json");
        let parsed: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
        assert_eq!(parsed, serde_json::json!([{"s": "a\nb"}, {"s": "c"}]));
    }
}
