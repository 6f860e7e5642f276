//! Prepared events to one Arrow batch in the collection's schema. A value
//! that does not fit its column goes to `_unmapped` with its field name.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, ListArray,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::Field;
use datafusion::arrow::record_batch::RecordBatch;
use rakam_model::{coerce, CollectionSchema, FieldType, Fit, Scalar};
use serde_json::Map;

use crate::prepare::PreparedEvent;
use crate::IngestError;

enum ColumnBuilder {
    String(StringBuilder),
    Long(Int64Builder),
    Double(Float64Builder),
    Boolean(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMillisecondBuilder),
    List {
        item_type: FieldType,
        offsets: Vec<i32>,
        validity: Vec<bool>,
        items: Box<ColumnBuilder>,
    },
}

impl ColumnBuilder {
    fn new(field_type: &FieldType, capacity: usize) -> Self {
        match field_type {
            FieldType::String => Self::String(StringBuilder::with_capacity(capacity, capacity * 8)),
            FieldType::Long => Self::Long(Int64Builder::with_capacity(capacity)),
            FieldType::Double => Self::Double(Float64Builder::with_capacity(capacity)),
            FieldType::Boolean => Self::Boolean(BooleanBuilder::with_capacity(capacity)),
            FieldType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            FieldType::Timestamp => Self::Timestamp(
                TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            FieldType::Array(item_type) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Self::List {
                    item_type: (**item_type).clone(),
                    offsets,
                    validity: Vec::with_capacity(capacity),
                    items: Box::new(Self::new(item_type, capacity)),
                }
            }
        }
    }

    /// `coerce` returns the scalar kind of the column's type; anything else
    /// would be a bug, and is stored as null rather than panicking.
    fn append(&mut self, value: Option<Scalar>) {
        match (self, value) {
            (Self::String(b), Some(Scalar::String(v))) => b.append_value(v),
            (Self::String(b), _) => b.append_null(),
            (Self::Long(b), Some(Scalar::Long(v))) => b.append_value(v),
            (Self::Long(b), _) => b.append_null(),
            (Self::Double(b), Some(Scalar::Double(v))) => b.append_value(v),
            (Self::Double(b), _) => b.append_null(),
            (Self::Boolean(b), Some(Scalar::Boolean(v))) => b.append_value(v),
            (Self::Boolean(b), _) => b.append_null(),
            (Self::Date(b), Some(Scalar::Date(v))) => b.append_value(v),
            (Self::Date(b), _) => b.append_null(),
            (Self::Timestamp(b), Some(Scalar::Timestamp(v))) => b.append_value(v),
            (Self::Timestamp(b), _) => b.append_null(),
            (
                Self::List {
                    offsets,
                    validity,
                    items,
                    ..
                },
                value,
            ) => {
                let last = offsets.last().copied().unwrap_or(0);
                match value {
                    Some(Scalar::List(values)) => {
                        let count = values.len() as i32;
                        for item in values {
                            items.append(match item {
                                Scalar::Null => None,
                                other => Some(other),
                            });
                        }
                        offsets.push(last + count);
                        validity.push(true);
                    }
                    _ => {
                        offsets.push(last);
                        validity.push(false);
                    }
                }
            }
        }
    }

    fn finish(self) -> Result<ArrayRef, IngestError> {
        Ok(match self {
            Self::String(mut b) => Arc::new(b.finish()),
            Self::Long(mut b) => Arc::new(b.finish()),
            Self::Double(mut b) => Arc::new(b.finish()),
            Self::Boolean(mut b) => Arc::new(b.finish()),
            Self::Date(mut b) => Arc::new(b.finish()),
            Self::Timestamp(mut b) => Arc::new(b.finish()),
            Self::List {
                item_type,
                offsets,
                validity,
                items,
            } => {
                let field = Arc::new(Field::new("item", item_type.arrow_type(), true));
                let nulls = NullBuffer::from(validity);
                let list = ListArray::try_new(
                    field,
                    OffsetBuffer::new(offsets.into()),
                    items.finish()?,
                    Some(nulls),
                )
                .map_err(|e| IngestError::InvalidValue(e.to_string()))?;
                Arc::new(list)
            }
        })
    }
}

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
