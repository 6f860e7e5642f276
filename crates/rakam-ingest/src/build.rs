//! Prepared events to one Arrow batch in the collection's schema. A value
//! that does not fit its column goes to `_unmapped` with its field name.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use rakam_model::{coerce, CollectionSchema, FieldType, Fit, Scalar};

use serde_json::Map;

use crate::column_builder::ColumnBuilder;
use crate::prepare::PreparedEvent;
use crate::IngestError;

/// Events built at once; the batches of a request are still appended
/// together, as one durable unit.
pub(crate) const EVENTS_PER_BUILD: usize = 100_000;

pub(crate) struct BuiltBatch {
    pub batch: RecordBatch,
    pub unmapped_rows: usize,
}

pub(crate) fn build_batch(
    schema: &CollectionSchema,
    events: Vec<PreparedEvent>,
    server_time_ms: i64,
) -> Result<BuiltBatch, IngestError> {
    let rows = events.len();
    let all_columns: HashMap<&str, usize, foldhash::fast::RandomState> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(position, column)| (column.name.as_str(), position))
        .collect();
    // Only the columns these events use: a collection with a thousand
    // columns does not make every small batch a thousand columns wide
    // (readers fill absent columns with nulls).
    let mut used = vec![false; schema.columns.len()];
    for event in &events {
        for field in &event.fields {
            if let Some(&position) = all_columns.get(field.name.as_str()) {
                used[position] = true;
            }
        }
    }
    let batch_schema = CollectionSchema {
        columns: schema
            .columns
            .iter()
            .zip(&used)
            .filter(|(_, used)| **used)
            .map(|(column, _)| column.clone())
            .collect(),
    };
    let schema = &batch_schema;
    let index: HashMap<&str, usize, foldhash::fast::RandomState> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(position, column)| (column.name.as_str(), position))
        .collect();
    let mut builders: Vec<ColumnBuilder> = schema
        .columns
        .iter()
        .map(|column| ColumnBuilder::new(&column.field_type, rows))
        .collect();
    let mut time = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut server_time = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut unmapped_column = StringBuilder::new();
    let mut unmapped_rows = 0;
    let mut slots: Vec<Option<Scalar>> = vec![None; builders.len()];
    for event in events {
        time.append_value(event.time_ms);
        server_time.append_value(server_time_ms);
        let mut unmapped: Map<String, serde_json::Value> = event.unmapped;
        for field in event.fields {
            let Some(&position) = index.get(field.name.as_str()) else {
                let (name, value) = field.into_original_name();
                unmapped.insert(name, value);
                continue;
            };
            let column_type = &schema.columns[position].field_type;
            let original_name = field.original_name.unwrap_or(field.name);
            let value = match (column_type, field.value) {
                // The common case moves the string instead of copying it.
                (FieldType::String, serde_json::Value::String(text)) => {
                    slots[position] = Some(Scalar::String(text));
                    continue;
                }
                (_, value) => value,
            };
            match coerce(&value, column_type) {
                Fit::Value(scalar) => slots[position] = Some(scalar),
                Fit::Widen(_) | Fit::NoFit => {
                    unmapped.insert(original_name, value);
                }
            }
        }
        for (builder, slot) in builders.iter_mut().zip(slots.iter_mut()) {
            builder.append(slot.take());
        }
        if unmapped.is_empty() {
            unmapped_column.append_null();
        } else {
            unmapped_rows += 1;
            unmapped_column.append_value(serde_json::Value::Object(unmapped).to_string());
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(builders.len() + 3);
    columns.push(Arc::new(time.finish()));
    columns.push(Arc::new(server_time.finish()));
    for builder in builders {
        columns.push(builder.finish()?);
    }
    columns.push(Arc::new(unmapped_column.finish()));
    let batch = RecordBatch::try_new(schema.arrow_schema(), columns)
        .map_err(|e| IngestError::InvalidValue(format!("building the batch: {e}")))?;
    Ok(BuiltBatch {
        batch,
        unmapped_rows,
    })
}
