use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::field_type::timestamp_type;
use crate::FieldType;

/// Event time, from the event or the server; epoch milliseconds, UTC.
pub const TIME_COLUMN: &str = "_time";
/// When the server received the event.
pub const SERVER_TIME_COLUMN: &str = "_server_time";
/// JSON object of the values that fitted no column, keyed by field name.
pub const UNMAPPED_COLUMN: &str = "_unmapped";
/// The collection name, a column of `_all` only.
pub const COLLECTION_COLUMN: &str = "_collection";

/// Names a client may not send as properties.
pub const RESERVED_FIELD_NAMES: &[&str] = &[
    SERVER_TIME_COLUMN,
    UNMAPPED_COLUMN,
    COLLECTION_COLUMN,
    "_shard_time",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
}

/// The columns of one collection, in the order they were added. The system
/// columns (`_time`, `_server_time`, `_unmapped`) are implicit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CollectionSchema {
    pub columns: Vec<Column>,
}

impl CollectionSchema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|column| column.name == name)
    }

    pub fn column_type(&self, name: &str) -> Option<&FieldType> {
        self.column(name).map(|column| &column.field_type)
    }

    /// Whether [`Self::evolve`] would change anything.
    pub fn needs_evolution(&self, requested: &[Column]) -> bool {
        requested
            .iter()
            .any(|column| match self.column_type(&column.name) {
                None => true,
                Some(existing) => existing.widened_with(&column.field_type).is_some(),
            })
    }

    /// The evolution rule every catalog applies: add what is missing within
    /// the column limit, widen what widens losslessly, leave everything else
    /// (those values go to `_unmapped`). Returns the names refused by the
    /// limit.
    pub fn evolve(&mut self, requested: &[Column], column_limit: usize) -> Vec<String> {
        let mut refused = Vec::new();
        for column in requested {
            let column_count = self.columns.len();
            match self.columns.iter_mut().find(|c| c.name == column.name) {
                Some(existing) => {
                    if let Some(widened) = existing.field_type.widened_with(&column.field_type) {
                        existing.field_type = widened;
                    }
                }
                None if column_count < column_limit => self.columns.push(column.clone()),
                None => refused.push(column.name.clone()),
            }
        }
        refused
    }

    /// The Arrow schema every batch and file of the collection is read as.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = Vec::with_capacity(self.columns.len() + 3);
        fields.push(Field::new(TIME_COLUMN, timestamp_type(), false));
        fields.push(Field::new(SERVER_TIME_COLUMN, timestamp_type(), false));
        for column in &self.columns {
            fields.push(Field::new(
                &column.name,
                column.field_type.arrow_type(),
                true,
            ));
        }
        fields.push(Field::new(UNMAPPED_COLUMN, DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, field_type: FieldType) -> Column {
        Column {
            name: name.into(),
            field_type,
        }
    }

    #[test]
    fn evolution_adds_widens_and_respects_the_limit() {
        let mut schema = CollectionSchema::default();
        let refused = schema.evolve(
            &[column("a", FieldType::Long), column("b", FieldType::String)],
            2,
        );
        assert!(refused.is_empty());
        assert!(!schema.needs_evolution(&[column("a", FieldType::Long)]));
        assert!(schema.needs_evolution(&[column("a", FieldType::Double)]));
        let refused = schema.evolve(
            &[
                column("a", FieldType::Double),
                column("b", FieldType::Long),
                column("c", FieldType::Long),
            ],
            2,
        );
        assert_eq!(refused, ["c"]);
        assert_eq!(schema.column_type("a"), Some(&FieldType::Double));
        assert_eq!(schema.column_type("b"), Some(&FieldType::String));
        let arrow = schema.arrow_schema();
        let names: Vec<_> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["_time", "_server_time", "a", "b", "_unmapped"]);
    }
}
