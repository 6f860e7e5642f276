//! Per-event normalisation shared by every input format: collection and
//! field names, event time with clock-skew correction, and limits.

use std::collections::HashSet;

use rakam_model::{
    flatten_properties, normalize_collection_name, parse_timestamp_millis, FlatProperty,
    ModelError, MAX_NAME_LENGTH, RESERVED_FIELD_NAMES, TIME_COLUMN,
};
use serde_json::{Map, Value};

use crate::context::EventContext;
use crate::{EventInput, IngestError, IngestLimits, RequestContext};

#[derive(Debug)]
pub(crate) struct PreparedEvent {
    pub collection: String,
    pub time_ms: i64,
    /// `_ip`, `_user_agent`, `_referrer`: for the mappers, never stored.
    pub context: EventContext,
    pub fields: Vec<FlatProperty>,
    /// Values that cannot have a column at all (a second field that
    /// normalises to the same name, an empty object), by original name.
    pub unmapped: Map<String, Value>,
}

pub(crate) fn prepare(
    input: EventInput,
    server_time_ms: i64,
    limits: &IngestLimits,
    request: &RequestContext,
) -> Result<PreparedEvent, IngestError> {
    let collection = normalize_collection_name(&input.collection)?;
    let mut properties = input.properties;
    let context = EventContext::take_from(&mut properties, request)?;
    if properties.len() > limits.max_properties_per_event {
        return Err(IngestError::TooManyProperties {
            actual: properties.len(),
            limit: limits.max_properties_per_event,
        });
    }
    let time_ms = match properties.remove(TIME_COLUMN) {
        None | Some(Value::Null) => server_time_ms,
        Some(value) => {
            let client_time = parse_event_time(&value)?;
            match input.upload_time {
                // The client's clock is off by (server now - client now).
                Some(upload_time) => server_time_ms
                    .checked_sub(upload_time)
                    .and_then(|skew| client_time.checked_add(skew))
                    .filter(|&ms| rakam_model::is_supported_time(ms))
                    .ok_or_else(|| {
                        IngestError::InvalidValue(format!(
                            "api.upload_time {upload_time} is out of range"
                        ))
                    })?,
                None => client_time,
            }
        }
    };
    let flat = flatten_properties(properties)?;
    // Keys of one JSON object are unique, so two fields can only share a
    // column name when normalisation or flattening renamed one of them.
    let any_renamed = flat.iter().any(|p| p.original_name.is_some());
    let mut seen: HashSet<String> = HashSet::new();
    let mut fields = Vec::with_capacity(flat.len());
    let mut unmapped = Map::new();
    for property in flat {
        if property.name.starts_with('_')
            && (RESERVED_FIELD_NAMES.contains(&property.name.as_str())
                || property.name == TIME_COLUMN)
        {
            return Err(ModelError::ReservedName {
                name: property.original_name().to_string(),
            }
            .into());
        }
        check_string_lengths(&property, limits)?;
        // An empty object has no column to go to; nor has a nested field
        // whose flattened name is over the name limit (kept, not cut).
        let no_column_possible = matches!(&property.value, Value::Object(o) if o.is_empty())
            || property.name.len() > MAX_NAME_LENGTH;
        let duplicate = any_renamed && !seen.insert(property.name.clone());
        if no_column_possible || duplicate {
            let (name, value) = property.into_original_name();
            unmapped.insert(name, value);
        } else {
            fields.push(property);
        }
    }
    Ok(PreparedEvent {
        collection,
        time_ms,
        context,
        fields,
        unmapped,
    })
}

/// An event time outside the years Rakam keeps (`1e300`) is refused, never
/// clamped to the nearest representable instant.
fn in_time_range(time_ms: i64, sent: &Value) -> Result<i64, IngestError> {
    if rakam_model::is_supported_time(time_ms) {
        Ok(time_ms)
    } else {
        Err(IngestError::InvalidTime(format!(
            "{sent} (outside the years 1 to 9999)"
        )))
    }
}

fn parse_event_time(value: &Value) -> Result<i64, IngestError> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| {
                number
                    .as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                    .map(|f| f.round() as i64)
            })
            .ok_or_else(|| IngestError::InvalidTime(value.to_string()))
            .and_then(|ms| in_time_range(ms, value)),
        Value::String(text) => parse_timestamp_millis(text)
            .or_else(|| text.trim().parse::<i64>().ok())
            .ok_or_else(|| IngestError::InvalidTime(value.to_string()))
            .and_then(|ms| in_time_range(ms, value)),
        _ => Err(IngestError::InvalidTime(value.to_string())),
    }
}

fn check_string_lengths(property: &FlatProperty, limits: &IngestLimits) -> Result<(), IngestError> {
    let too_long = |text: &String| text.len() > limits.max_string_bytes;
    let longest = match &property.value {
        Value::String(text) if too_long(text) => Some(text.len()),
        Value::Array(items) => items.iter().find_map(|item| match item {
            Value::String(text) if too_long(text) => Some(text.len()),
            _ => None,
        }),
        _ => None,
    };
    match longest {
        Some(actual) => Err(IngestError::StringTooLong {
            field: property.original_name().to_string(),
            actual,
            limit: limits.max_string_bytes,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prepare_plain(
        input: EventInput,
        server_time_ms: i64,
        limits: &IngestLimits,
    ) -> Result<PreparedEvent, IngestError> {
        prepare(input, server_time_ms, limits, &RequestContext::default())
    }

    fn input(properties: Value, upload_time: Option<i64>) -> EventInput {
        let Value::Object(properties) = properties else {
            unreachable!()
        };
        EventInput {
            collection: "PageView".into(),
            properties,
            upload_time,
        }
    }

    #[test]
    fn time_comes_from_the_event_or_the_server() {
        let limits = IngestLimits::default();
        let from_server = prepare_plain(input(json!({}), None), 5_000, &limits).expect("ok");
        assert_eq!(from_server.time_ms, 5_000);
        assert_eq!(from_server.collection, "pageview");
        let millis =
            prepare_plain(input(json!({"_time": 1_000}), None), 5_000, &limits).expect("ok");
        assert_eq!(millis.time_ms, 1_000);
        let iso = prepare_plain(
            input(json!({"_time": "1970-01-01T00:00:01.5Z"}), None),
            0,
            &limits,
        )
        .expect("ok");
        assert_eq!(iso.time_ms, 1_500);
        // The client clock is 2 s behind the server's: shift the event by 2 s.
        let skewed =
            prepare_plain(input(json!({"_time": 1_000}), Some(3_000)), 5_000, &limits).expect("ok");
        assert_eq!(skewed.time_ms, 3_000);
        assert!(prepare_plain(input(json!({"_time": "soon"}), None), 0, &limits).is_err());
        assert!(prepare_plain(input(json!({"_time": true}), None), 0, &limits).is_err());
        assert!(prepare_plain(input(json!({"_time": 1}), Some(i64::MIN)), 5, &limits).is_err());
        for far in [
            json!(1e300),
            json!(-1e300),
            json!(i64::MAX),
            json!("99999-01-01T00:00:00Z"),
        ] {
            assert!(
                prepare_plain(input(json!({"_time": far.clone()}), None), 0, &limits).is_err(),
                "{far}"
            );
        }
        assert!(prepare_plain(
            input(json!({"_time": "9999-12-31T23:59:59Z"}), None),
            0,
            &limits
        )
        .is_ok());
    }

    #[test]
    fn reserved_and_invalid_names_are_refused() {
        let limits = IngestLimits::default();
        for bad in [
            json!({"_server_time": 1}),
            json!({"_unmapped": 1}),
            json!({"a\u{1}b": 1}),
        ] {
            assert!(
                prepare_plain(input(bad.clone(), None), 0, &limits).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn clashing_names_keep_both_values() {
        let prepared = prepare_plain(
            input(json!({"pageUrl": "a", "page_url": "b"}), None),
            0,
            &IngestLimits::default(),
        )
        .expect("ok");
        assert_eq!(prepared.fields.len(), 1);
        assert_eq!(prepared.unmapped.len(), 1);
    }

    #[test]
    fn a_flattened_name_over_the_limit_is_kept_aside() {
        let mut inner = Map::new();
        inner.insert("b".repeat(100), json!(1));
        let mut outer = Map::new();
        outer.insert("a".repeat(100), Value::Object(inner));
        outer.insert("ok".into(), json!(2));
        let nested = Value::Object(outer);
        let prepared =
            prepare_plain(input(nested, None), 0, &IngestLimits::default()).expect("kept");
        assert_eq!(prepared.fields.len(), 1);
        assert_eq!(prepared.unmapped.len(), 1, "{:?}", prepared.unmapped);
    }

    #[test]
    fn long_strings_are_refused_not_cut() {
        let limits = IngestLimits {
            max_string_bytes: 4,
            ..IngestLimits::default()
        };
        let error =
            prepare_plain(input(json!({"s": "12345"}), None), 0, &limits).expect_err("too long");
        assert!(error.to_string().contains("limits.max_string_bytes"));
        assert!(prepare_plain(input(json!({"s": "1234"}), None), 0, &limits).is_ok());
    }
}
