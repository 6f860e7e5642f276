use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ModelError;

/// The type of a column. Names follow Rakam's vocabulary (`LONG` is BIGINT)
/// so existing clients read our schemas unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldType {
    String,
    Long,
    Double,
    Boolean,
    Date,
    Timestamp,
    Array(Box<FieldType>),
}

impl FieldType {
    pub fn name(&self) -> String {
        match self {
            Self::String => "STRING".into(),
            Self::Long => "LONG".into(),
            Self::Double => "DOUBLE".into(),
            Self::Boolean => "BOOLEAN".into(),
            Self::Date => "DATE".into(),
            Self::Timestamp => "TIMESTAMP".into(),
            Self::Array(inner) => format!("ARRAY_{}", inner.name()),
        }
    }

    /// Parses a Rakam type name, case-insensitively. `INTEGER` is read as
    /// `LONG`; types we cannot store without loss (DECIMAL, TIME, BINARY,
    /// MAP_*) are refused rather than silently approximated.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        let upper = name.trim().to_ascii_uppercase();
        if let Some(inner) = upper.strip_prefix("ARRAY_") {
            let inner = Self::parse(inner)?;
            if matches!(inner, Self::Array(_)) {
                return Err(ModelError::InvalidType { name: name.into() });
            }
            return Ok(Self::Array(Box::new(inner)));
        }
        match upper.as_str() {
            "STRING" | "VARCHAR" | "TEXT" => Ok(Self::String),
            "LONG" | "INTEGER" | "BIGINT" => Ok(Self::Long),
            "DOUBLE" => Ok(Self::Double),
            "BOOLEAN" => Ok(Self::Boolean),
            "DATE" => Ok(Self::Date),
            "TIMESTAMP" => Ok(Self::Timestamp),
            _ => Err(ModelError::InvalidType { name: name.into() }),
        }
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            Self::String => DataType::Utf8,
            Self::Long => DataType::Int64,
            Self::Double => DataType::Float64,
            Self::Boolean => DataType::Boolean,
            Self::Date => DataType::Date32,
            Self::Timestamp => timestamp_type(),
            Self::Array(inner) => {
                DataType::List(Arc::new(Field::new("item", inner.arrow_type(), true)))
            }
        }
    }

    /// The column type whose [`Self::arrow_type`] is `data_type`, if any.
    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8 => Self::String,
            DataType::Int64 => Self::Long,
            DataType::Float64 => Self::Double,
            DataType::Boolean => Self::Boolean,
            DataType::Date32 => Self::Date,
            DataType::Timestamp(TimeUnit::Millisecond, _) => Self::Timestamp,
            DataType::List(item) => match Self::from_arrow(item.data_type())? {
                Self::Array(_) => return None,
                inner => Self::Array(Box::new(inner)),
            },
            _ => return None,
        })
    }

    /// The Rakam type name for an Arrow type produced by a query.
    pub fn name_of_arrow(data_type: &DataType) -> String {
        match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 => {
                "INTEGER".into()
            }
            DataType::Int64 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                "LONG".into()
            }
            DataType::Float16 | DataType::Float32 | DataType::Float64 => "DOUBLE".into(),
            DataType::Decimal128(..) | DataType::Decimal256(..) => "DECIMAL".into(),
            DataType::Boolean => "BOOLEAN".into(),
            DataType::Date32 | DataType::Date64 => "DATE".into(),
            DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
            DataType::Timestamp(..) => "TIMESTAMP".into(),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BINARY".into(),
            DataType::List(field) | DataType::LargeList(field) => {
                format!("ARRAY_{}", Self::name_of_arrow(field.data_type()))
            }
            DataType::Map(..) | DataType::Struct(_) => "MAP_STRING".into(),
            _ => "STRING".into(),
        }
    }

    /// The type a column takes when it meets a value of `incoming` type, if
    /// that is a lossless widening. Old data is cast on read.
    pub fn widened_with(&self, incoming: &FieldType) -> Option<FieldType> {
        match (self, incoming) {
            (Self::Long, Self::Double) => Some(Self::Double),
            (Self::Array(current), Self::Array(next)) => current
                .widened_with(next)
                .map(|inner| Self::Array(Box::new(inner))),
            _ => None,
        }
    }
}

/// Timestamps are epoch milliseconds in UTC, the unit of `_time`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for FieldType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for FieldType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [
            FieldType::String,
            FieldType::Long,
            FieldType::Double,
            FieldType::Boolean,
            FieldType::Date,
            FieldType::Timestamp,
            FieldType::Array(Box::new(FieldType::Long)),
        ] {
            assert_eq!(FieldType::parse(&t.name()), Ok(t.clone()));
            assert_eq!(FieldType::from_arrow(&t.arrow_type()), Some(t.clone()));
        }
        assert_eq!(FieldType::parse("integer"), Ok(FieldType::Long));
        assert!(FieldType::parse("MAP_STRING").is_err());
        assert!(FieldType::parse("ARRAY_ARRAY_LONG").is_err());
    }

    #[test]
    fn only_lossless_widening() {
        assert_eq!(
            FieldType::Long.widened_with(&FieldType::Double),
            Some(FieldType::Double)
        );
        assert_eq!(FieldType::Double.widened_with(&FieldType::Long), None);
        assert_eq!(FieldType::String.widened_with(&FieldType::Long), None);
        let long_list = FieldType::Array(Box::new(FieldType::Long));
        let double_list = FieldType::Array(Box::new(FieldType::Double));
        assert_eq!(long_list.widened_with(&double_list), Some(double_list));
    }
}
