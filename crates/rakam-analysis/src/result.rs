//! Analysis answers in Rakam's `QueryResult` shape.

use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use rakam_query::{descriptive_name, rows_as_json};
use serde_json::{json, Map, Value};

use crate::error::Result;

/// A result table: named, typed columns (Rakam type names) and JSON rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[(&str, &str)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// `{metadata, result, properties}` plus any extra top-level keys.
    pub fn into_json(self, elapsed: Duration, extra: Map<String, Value>) -> Value {
        let metadata: Vec<Value> = self
            .columns
            .iter()
            .map(|(name, kind)| {
                json!({"name": name, "type": kind, "descriptiveName": descriptive_name(name)})
            })
            .collect();
        let mut out = Map::new();
        out.insert("metadata".into(), Value::Array(metadata));
        out.insert(
            "result".into(),
            Value::Array(self.rows.into_iter().map(Value::Array).collect()),
        );
        out.insert(
            "properties".into(),
            json!({"executionTimeInMillis": elapsed.as_millis() as u64}),
        );
        out.extend(extra);
        Value::Object(out)
    }
}

pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>> {
    Ok(rows_as_json(batches)?)
}

pub fn as_i64(value: &Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_f64().map(|f| f as i64))
        .unwrap_or(0)
}

pub fn as_label(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "(not set)".into(),
        other => other.to_string(),
    }
}
