//! Type inference for new fields and the rule for whether a value fits an
//! existing column. The rules never lose data: a value either fits exactly
//! (or as its exact text, for STRING columns), asks for a lossless widening,
//! or is reported as not fitting so the caller keeps it in `_unmapped`.

use serde_json::{Map, Value};

use crate::time_parse::looks_like_timestamp;
use crate::{
    is_normal_field_name, normalize_field_name, parse_date, parse_timestamp_millis, FieldType,
    ModelError,
};

/// A value converted to a column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    String(String),
    Long(i64),
    Double(f64),
    Boolean(bool),
    /// Days since the Unix epoch.
    Date(i32),
    /// Milliseconds since the Unix epoch, UTC.
    Timestamp(i64),
    List(Vec<Scalar>),
}

/// The outcome of fitting a value to a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    Value(Scalar),
    /// The value fits once the column is widened to this type.
    Widen(FieldType),
    /// The value does not fit; keep it in `_unmapped`.
    NoFit,
}

/// The type a new column gets from the first value seen. `None` for values
/// that carry no type (null, an empty array).
pub fn infer_type(value: &Value) -> Option<FieldType> {
    match value {
        Value::Null | Value::Object(_) => None,
        Value::Bool(_) => Some(FieldType::Boolean),
        Value::Number(number) => Some(if number.is_i64() {
            FieldType::Long
        } else if number.is_u64() {
            // Beyond BIGINT: only text keeps every digit.
            FieldType::String
        } else {
            FieldType::Double
        }),
        Value::String(text) => Some(if parse_date(text).is_some() {
            FieldType::Date
        } else if looks_like_timestamp(text) {
            FieldType::Timestamp
        } else {
            FieldType::String
        }),
        Value::Array(items) => {
            // One element type for all; a mix becomes a list of strings, which
            // holds every element (numbers and booleans as text, nested
            // values as JSON).
            let mut inner: Option<FieldType> = None;
            for item in items.iter().filter(|item| !item.is_null()) {
                let item_type = match item {
                    Value::Array(_) | Value::Object(_) => FieldType::String,
                    scalar => infer_type(scalar)?,
                };
                inner = Some(match inner {
                    None => item_type,
                    Some(current) if current == item_type => current,
                    Some(current) => current
                        .widened_with(&item_type)
                        .or_else(|| item_type.widened_with(&current))
                        .unwrap_or(FieldType::String),
                });
            }
            let mut inner = inner?;
            // Integers a double cannot hold exactly keep their text instead.
            let inexact = |item: &Value| {
                item.as_i64()
                    .map(i64::unsigned_abs)
                    .or_else(|| item.as_u64())
                    .is_some_and(|magnitude| magnitude > 1 << 53)
            };
            if inner == FieldType::Double && items.iter().any(inexact) {
                inner = FieldType::String;
            }
            Some(FieldType::Array(Box::new(inner)))
        }
    }
}

/// The widened type a column needs to hold `value`, if any. Cheaper than
/// [`coerce`] because it allocates nothing; used to plan schema changes.
pub fn widening_for(value: &Value, column_type: &FieldType) -> Option<FieldType> {
    let has_fraction = |item: &Value| match item {
        Value::Number(number) => {
            !number.is_i64()
                && number.as_u64().is_none()
                && number
                    .as_f64()
                    .is_some_and(|f| f.is_finite() && (f.fract() != 0.0 || f.abs() >= 9.0e15))
        }
        _ => false,
    };
    match column_type {
        FieldType::Long if has_fraction(value) => Some(FieldType::Double),
        FieldType::Array(inner) if **inner == FieldType::Long => {
            let widens = match value {
                // Only when every element is a number: otherwise the list
                // does not fit at all and widening would not help.
                Value::Array(items) => {
                    items.iter().any(has_fraction)
                        && items.iter().all(|item| item.is_number() || item.is_null())
                }
                single => has_fraction(single),
            };
            widens.then(|| FieldType::Array(Box::new(FieldType::Double)))
        }
        _ => None,
    }
}

pub fn coerce(value: &Value, column_type: &FieldType) -> Fit {
    if value.is_null() {
        return Fit::Value(Scalar::Null);
    }
    match column_type {
        FieldType::Array(inner) => coerce_list(value, column_type, inner),
        scalar_type => coerce_scalar(value, scalar_type),
    }
}

fn coerce_list(value: &Value, list_type: &FieldType, inner: &FieldType) -> Fit {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    };
    let mut converted = Vec::with_capacity(items.len());
    let mut widened_inner = None;
    for item in items {
        match coerce_scalar(item, inner) {
            Fit::Value(scalar) => converted.push(scalar),
            Fit::Widen(target) => widened_inner = Some(target),
            Fit::NoFit => {
                // A nested structure in a list of strings is kept as JSON text.
                if *inner == FieldType::String && (item.is_array() || item.is_object()) {
                    converted.push(Scalar::String(item.to_string()));
                } else {
                    return Fit::NoFit;
                }
            }
        }
    }
    if let Some(target) = widened_inner {
        return Fit::Widen(FieldType::Array(Box::new(target)));
    }
    debug_assert!(matches!(list_type, FieldType::Array(_)));
    Fit::Value(Scalar::List(converted))
}

fn coerce_scalar(value: &Value, column_type: &FieldType) -> Fit {
    match (column_type, value) {
        (_, Value::Null) => Fit::Value(Scalar::Null),
        (FieldType::String, Value::String(text)) => Fit::Value(Scalar::String(text.clone())),
        (FieldType::String, Value::Number(_) | Value::Bool(_)) => {
            Fit::Value(Scalar::String(value.to_string()))
        }
        (FieldType::Long, Value::Number(number)) => {
            if let Some(integer) = number.as_i64() {
                return Fit::Value(Scalar::Long(integer));
            }
            match number.as_f64() {
                Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                    Fit::Value(Scalar::Long(float as i64))
                }
                Some(float) if float.is_finite() && number.as_u64().is_none() => {
                    Fit::Widen(FieldType::Double)
                }
                _ => Fit::NoFit,
            }
        }
        (FieldType::Double, Value::Number(number)) => {
            // Integers beyond 2^53 would lose digits as a double.
            const EXACT: u64 = 1 << 53;
            if let Some(integer) = number.as_i64() {
                return if integer.unsigned_abs() <= EXACT {
                    Fit::Value(Scalar::Double(integer as f64))
                } else {
                    Fit::NoFit
                };
            }
            match number.as_f64() {
                Some(float) if number.as_u64().is_none() => Fit::Value(Scalar::Double(float)),
                _ => Fit::NoFit,
            }
        }
        (FieldType::Boolean, Value::Bool(flag)) => Fit::Value(Scalar::Boolean(*flag)),
        (FieldType::Date, Value::String(text)) => match parse_date(text) {
            Some(days) => Fit::Value(Scalar::Date(days)),
            None => Fit::NoFit,
        },
        (FieldType::Timestamp, Value::String(text)) => match parse_timestamp_millis(text) {
            Some(millis) => Fit::Value(Scalar::Timestamp(millis)),
            None => Fit::NoFit,
        },
        (FieldType::Timestamp, Value::Number(number)) => match number.as_i64() {
            Some(millis) if crate::time_parse::is_supported_time(millis) => {
                Fit::Value(Scalar::Timestamp(millis))
            }
            _ => Fit::NoFit,
        },
        _ => Fit::NoFit,
    }
}

/// One property after flattening: the normalised column name, the path the
/// client sent (kept for `_unmapped`), and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatProperty {
    pub name: String,
    /// The name as sent, when it differs from `name`.
    pub original_name: Option<String>,
    pub value: Value,
}

impl FlatProperty {
    /// The name as the client sent it (a path for nested fields).
    pub fn into_original_name(self) -> (String, Value) {
        (self.original_name.unwrap_or(self.name), self.value)
    }

    pub fn original_name(&self) -> &str {
        self.original_name.as_deref().unwrap_or(&self.name)
    }
}

const MAX_NESTING_DEPTH: usize = 16;

/// Flattens nested objects into `parent_child` columns (see ADR 0002) and
/// normalises every name. An empty object has no column to go to, so it is
/// returned as is and ends up in `_unmapped`.
pub fn flatten_properties(properties: Map<String, Value>) -> Result<Vec<FlatProperty>, ModelError> {
    let mut flat = Vec::with_capacity(properties.len());
    flatten_into(properties, None, None, 0, &mut flat)?;
    Ok(flat)
}

fn flatten_into(
    properties: Map<String, Value>,
    prefix: Option<&str>,
    original_prefix: Option<&str>,
    depth: usize,
    out: &mut Vec<FlatProperty>,
) -> Result<(), ModelError> {
    for (key, value) in properties {
        if prefix.is_none() && is_normal_field_name(&key) {
            // The common case: the client's name is the column's.
            match value {
                Value::Object(nested) if !nested.is_empty() && depth < MAX_NESTING_DEPTH => {
                    let original = key.clone();
                    flatten_into(nested, Some(&key), Some(&original), depth + 1, out)?;
                }
                value => out.push(FlatProperty {
                    name: key,
                    original_name: None,
                    value,
                }),
            }
            continue;
        }
        let segment = normalize_field_name(&key)?;
        let (name, original_name) = match (prefix, original_prefix) {
            (Some(prefix), Some(original_prefix)) => (
                format!("{prefix}_{segment}"),
                Some(format!("{original_prefix}.{key}")),
            ),
            _ if segment == key => (key, None),
            _ => (segment, Some(key)),
        };
        match value {
            Value::Object(nested) if !nested.is_empty() && depth < MAX_NESTING_DEPTH => {
                let original = original_name.as_deref().unwrap_or(&name).to_string();
                flatten_into(nested, Some(&name), Some(&original), depth + 1, out)?;
            }
            value => out.push(FlatProperty {
                name,
                original_name,
                value,
            }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn long_list() -> FieldType {
        FieldType::Array(Box::new(FieldType::Long))
    }

    #[test]
    fn inference_follows_the_type_rules() {
        assert_eq!(infer_type(&json!(1)), Some(FieldType::Long));
        assert_eq!(infer_type(&json!(-7)), Some(FieldType::Long));
        assert_eq!(infer_type(&json!(1.5)), Some(FieldType::Double));
        assert_eq!(infer_type(&json!(true)), Some(FieldType::Boolean));
        assert_eq!(infer_type(&json!("2024-01-02")), Some(FieldType::Date));
        assert_eq!(
            infer_type(&json!("2024-01-02T10:00:00Z")),
            Some(FieldType::Timestamp)
        );
        assert_eq!(infer_type(&json!("hello")), Some(FieldType::String));
        assert_eq!(infer_type(&json!([1, 2])), Some(long_list()));
        assert_eq!(
            infer_type(&json!([1, 2.5])),
            Some(FieldType::Array(Box::new(FieldType::Double)))
        );
        assert_eq!(
            infer_type(&json!([{"a": 1}])),
            Some(FieldType::Array(Box::new(FieldType::String)))
        );
        assert_eq!(
            infer_type(&json!([0.5, 1])),
            Some(FieldType::Array(Box::new(FieldType::Double)))
        );
        assert_eq!(
            infer_type(&json!(["2024-01-01", false])),
            Some(FieldType::Array(Box::new(FieldType::String)))
        );
        assert_eq!(infer_type(&json!([])), None);
        assert_eq!(infer_type(&json!(null)), None);
    }

    #[test]
    fn a_fraction_widens_a_long_column() {
        assert_eq!(
            coerce(&json!(2.5), &FieldType::Long),
            Fit::Widen(FieldType::Double)
        );
        assert_eq!(
            coerce(&json!(3.0), &FieldType::Long),
            Fit::Value(Scalar::Long(3))
        );
        assert_eq!(
            coerce(&json!([1, 2.5]), &long_list()),
            Fit::Widen(FieldType::Array(Box::new(FieldType::Double)))
        );
    }

    #[test]
    fn values_that_do_not_fit_are_reported_not_zeroed() {
        assert_eq!(coerce(&json!("abc"), &FieldType::Long), Fit::NoFit);
        assert_eq!(coerce(&json!("abc"), &FieldType::Double), Fit::NoFit);
        assert_eq!(coerce(&json!(1), &FieldType::Boolean), Fit::NoFit);
        assert_eq!(coerce(&json!("not a date"), &FieldType::Date), Fit::NoFit);
        assert_eq!(coerce(&json!([1, "x"]), &long_list()), Fit::NoFit);
        assert_eq!(coerce(&json!(u64::MAX), &FieldType::Long), Fit::NoFit);
        assert_eq!(
            coerce(&json!(9_007_199_254_740_993_i64), &FieldType::Double),
            Fit::NoFit
        );
    }

    #[test]
    fn times_outside_the_years_1_to_9999_fit_no_time_column() {
        for far in [
            json!("0000-06-01T00:00:00Z"),
            json!(1_000_000_000_000_000_i64),
        ] {
            assert_eq!(coerce(&far, &FieldType::Timestamp), Fit::NoFit, "{far}");
        }
        assert_eq!(coerce(&json!("0000-06-01"), &FieldType::Date), Fit::NoFit);
        // Such text is not taken for a time when a column is created either.
        assert_eq!(
            infer_type(&json!("0000-06-01T00:00:00Z")),
            Some(FieldType::String)
        );
        assert!(matches!(
            coerce(&json!("9999-12-31T23:59:59Z"), &FieldType::Timestamp),
            Fit::Value(_)
        ));
    }

    #[test]
    fn strings_keep_the_exact_text_of_scalars() {
        assert_eq!(
            coerce(&json!(12.50), &FieldType::String),
            Fit::Value(Scalar::String("12.5".into()))
        );
        assert_eq!(
            coerce(&json!(true), &FieldType::String),
            Fit::Value(Scalar::String("true".into()))
        );
        let long_text = "x".repeat(10_000);
        assert_eq!(
            coerce(&json!(long_text), &FieldType::String),
            Fit::Value(Scalar::String(long_text))
        );
    }

    #[test]
    fn widening_is_planned_without_converting() {
        assert_eq!(
            widening_for(&json!(2.5), &FieldType::Long),
            Some(FieldType::Double)
        );
        assert_eq!(widening_for(&json!(2), &FieldType::Long), None);
        assert_eq!(widening_for(&json!(2.0), &FieldType::Long), None);
        assert_eq!(widening_for(&json!(2.5), &FieldType::Double), None);
        assert_eq!(
            widening_for(&json!([1, 0.5]), &long_list()),
            Some(FieldType::Array(Box::new(FieldType::Double)))
        );
    }

    #[test]
    fn a_scalar_fits_a_list_as_one_element() {
        assert_eq!(
            coerce(&json!(5), &long_list()),
            Fit::Value(Scalar::List(vec![Scalar::Long(5)]))
        );
    }

    #[test]
    fn nested_objects_flatten_with_normalised_names() {
        let properties =
            json!({"userInfo": {"firstName": "Ada", "address": {"zip": "01234"}}, "empty": {}});
        let Value::Object(map) = properties else {
            unreachable!()
        };
        let mut flat = flatten_properties(map).expect("valid names");
        flat.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<_> = flat.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["empty", "user_info_address_zip", "user_info_first_name"]
        );
        assert_eq!(flat[1].original_name(), "userInfo.address.zip");
        assert_eq!(flat[0].original_name, None);
        assert_eq!(flat[0].value, json!({}));
    }
}
