//! One Arrow builder per column type, shared by the general path (values
//! already coerced to a [`Scalar`]) and the typed decoder (values appended
//! as they are parsed, without a `Scalar` in between).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, ListArray,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::Field;
use rakam_model::{FieldType, Scalar};

use crate::IngestError;

pub(crate) enum ColumnBuilder {
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
    pub(crate) fn new(field_type: &FieldType, capacity: usize) -> Self {
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
    pub(crate) fn append(&mut self, value: Option<Scalar>) {
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

    /// `count` nulls: rows that have no value for this column.
    pub(crate) fn append_nulls(&mut self, count: usize) {
        match self {
            Self::String(b) => b.append_nulls(count),
            Self::Long(b) => b.append_nulls(count),
            Self::Double(b) => b.append_nulls(count),
            Self::Boolean(b) => b.append_nulls(count),
            Self::Date(b) => b.append_nulls(count),
            Self::Timestamp(b) => b.append_nulls(count),
            Self::List { .. } => (0..count).for_each(|_| self.append(None)),
        }
    }

    pub(crate) fn finish(self) -> Result<ArrayRef, IngestError> {
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
