//! Request decoders. They only check shape; names, time and types are the
//! job of `prepare` and `build`, shared by every format.

use rakam_model::{CollectionSchema, TIME_COLUMN};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::big_integers::quote_huge_integers;
use crate::text_values::typed_from_text;
use crate::{IngestError, IngestLimits};

/// The `api` object of Rakam's envelope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiContext {
    pub api_key: Option<String>,
    /// The client's clock when it sent the request, epoch milliseconds.
    pub upload_time: Option<i64>,
}

impl ApiContext {
    fn from_value(value: Option<Value>) -> Result<Self, IngestError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        let Value::Object(mut api) = value else {
            if value.is_null() {
                return Ok(Self::default());
            }
            return Err(IngestError::InvalidValue("api must be an object".into()));
        };
        let api_key = match api.remove("api_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => Some(key),
            Some(_) => {
                return Err(IngestError::InvalidValue(
                    "api.api_key must be a string".into(),
                ))
            }
        };
        let upload_time = match api.remove("upload_time") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => Some(
                number
                    .as_i64()
                    .or_else(|| number.as_f64().map(|f| f as i64))
                    .ok_or_else(|| {
                        IngestError::InvalidValue(
                            "api.upload_time must be epoch milliseconds".into(),
                        )
                    })?,
            ),
            Some(_) => {
                return Err(IngestError::InvalidValue(
                    "api.upload_time must be epoch milliseconds".into(),
                ))
            }
        };
        Ok(Self {
            api_key,
            upload_time,
        })
    }
}

/// One event as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventInput {
    pub collection: String,
    pub properties: Map<String, Value>,
    pub upload_time: Option<i64>,
}

/// `/event/collect`: `{collection, api, properties}`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    pub api: ApiContext,
    pub event: EventInput,
}

fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, IngestError> {
    let bytes = quote_huge_integers(bytes);
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(IngestError::Malformed(format!(
            "{what} must be a JSON object"
        ))),
        Err(error) => Err(IngestError::Malformed(format!(
            "{what} is not valid JSON: {error}"
        ))),
    }
}

fn event_from_object(
    mut object: Map<String, Value>,
    default_api: &ApiContext,
) -> Result<(ApiContext, EventInput), IngestError> {
    let api = match object.remove("api") {
        Some(value) if !value.is_null() => ApiContext::from_value(Some(value))?,
        _ => default_api.clone(),
    };
    let collection = match object.remove("collection") {
        Some(Value::String(name)) => name,
        None | Some(Value::Null) => return Err(IngestError::Missing("collection")),
        Some(_) => {
            return Err(IngestError::InvalidValue(
                "collection must be a string".into(),
            ))
        }
    };
    let properties = match object.remove("properties") {
        Some(Value::Object(properties)) => properties,
        None | Some(Value::Null) => return Err(IngestError::Missing("properties")),
        Some(_) => {
            return Err(IngestError::InvalidValue(
                "properties must be an object".into(),
            ))
        }
    };
    let upload_time = api.upload_time;
    Ok((
        api,
        EventInput {
            collection,
            properties,
            upload_time,
        },
    ))
}

pub fn decode_event(bytes: &[u8]) -> Result<EventEnvelope, IngestError> {
    let object = parse_object(bytes, "the body")?;
    let (api, event) = event_from_object(object, &ApiContext::default())?;
    Ok(EventEnvelope { api, event })
}

/// `/event/batch` and JSON `/event/bulk`: `{api, events: [...]}`. Each event
/// decodes on its own, so one bad event does not sink the others.
#[derive(Debug)]
pub struct BatchRequest {
    pub api: ApiContext,
    pub events: Vec<Result<EventInput, IngestError>>,
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(default)]
    api: Option<Value>,
    #[serde(borrow)]
    events: Option<Vec<&'a RawValue>>,
}

pub fn decode_batch(bytes: &[u8], limits: &IngestLimits) -> Result<BatchRequest, IngestError> {
    let raw: RawBatch<'_> = serde_json::from_slice(bytes).map_err(|error| {
        IngestError::Malformed(format!("the body is not a valid batch: {error}"))
    })?;
    let api = ApiContext::from_value(raw.api)?;
    let raw_events = raw.events.ok_or(IngestError::Missing("events"))?;
    if raw_events.len() > limits.max_batch_events {
        return Err(IngestError::TooManyEvents {
            actual: raw_events.len(),
            limit: limits.max_batch_events,
        });
    }
    let events = raw_events
        .into_iter()
        .map(|raw_event| {
            let text = raw_event.get();
            if text.len() > limits.max_event_bytes {
                return Err(IngestError::EventTooLarge {
                    actual: text.len(),
                    limit: limits.max_event_bytes,
                });
            }
            let object = parse_object(text.as_bytes(), "an event")?;
            event_from_object(object, &api).map(|(_, event)| event)
        })
        .collect();
    Ok(BatchRequest { api, events })
}

/// NDJSON (or one JSON array): each item is an envelope
/// `{"collection", "properties"}` or a bare properties object for
/// `default_collection`. Any bad line fails the whole request, naming it.
pub fn decode_ndjson(
    bytes: &[u8],
    default_collection: Option<&str>,
    limits: &IngestLimits,
) -> Result<Vec<EventInput>, IngestError> {
    let trimmed = trim_ascii_start(bytes);
    if trimmed.first() == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(trimmed)
            .map_err(|e| IngestError::Malformed(format!("the body is not a JSON array: {e}")))?;
        check_count(items.len(), limits)?;
        return items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                decode_line(item.get().as_bytes(), default_collection, limits)
                    .map_err(|e| e.at(format!("item {index}")))
            })
            .collect();
    }
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !trim_ascii_start(line).is_empty())
        .collect();
    check_count(lines.len(), limits)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk_size = lines.len().div_ceil(workers).max(4096);
    let decode_chunk = |chunk: &[(usize, &[u8])]| -> Result<Vec<EventInput>, IngestError> {
        chunk
            .iter()
            .map(|(number, line)| {
                decode_line(line, default_collection, limits)
                    .map_err(|e| e.at(format!("line {}", number + 1)))
            })
            .collect()
    };
    if lines.len() <= chunk_size {
        return decode_chunk(&lines);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(chunk_size)
            .map(|chunk| scope.spawn(move || decode_chunk(chunk)))
            .collect();
        let mut events = Vec::with_capacity(lines.len());
        for handle in handles {
            let decoded = handle
                .join()
                .map_err(|_| IngestError::Malformed("decoder thread failed".into()))??;
            events.extend(decoded);
        }
        Ok(events)
    })
}

fn check_count(count: usize, limits: &IngestLimits) -> Result<(), IngestError> {
    if count > limits.max_batch_events {
        return Err(IngestError::TooManyEvents {
            actual: count,
            limit: limits.max_batch_events,
        });
    }
    Ok(())
}

fn trim_ascii_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn decode_line(
    line: &[u8],
    default_collection: Option<&str>,
    limits: &IngestLimits,
) -> Result<EventInput, IngestError> {
    if line.len() > limits.max_event_bytes {
        return Err(IngestError::EventTooLarge {
            actual: line.len(),
            limit: limits.max_event_bytes,
        });
    }
    let mut object = parse_object(line, "the line")?;
    let is_envelope = matches!(object.get("properties"), Some(Value::Object(_)))
        && matches!(object.get("collection"), Some(Value::String(_)));
    if is_envelope {
        return event_from_object(object, &ApiContext::default()).map(|(_, event)| event);
    }
    let collection =
        default_collection.ok_or(IngestError::Missing("collection query parameter"))?;
    // A bare properties object may still carry an api object; it is not data.
    object.remove("api");
    Ok(EventInput {
        collection: collection.to_string(),
        properties: object,
        upload_time: None,
    })
}

#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub separator: u8,
    /// The first row names the columns; otherwise values are positional
    /// against the collection's columns (`_time` first, then the others in
    /// the order `/project/schema` lists them).
    pub use_header: bool,
}

pub fn decode_csv(
    bytes: &[u8],
    collection: &str,
    options: &CsvOptions,
    schema: Option<&CollectionSchema>,
    limits: &IngestLimits,
) -> Result<Vec<EventInput>, IngestError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(options.separator)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let header: Vec<String> = if options.use_header {
        match records.next() {
            Some(Ok(row)) => row
                .iter()
                .map(|cell| String::from_utf8_lossy(cell).trim().to_string())
                .collect(),
            Some(Err(error)) => return Err(IngestError::Malformed(format!("csv header: {error}"))),
            None => return Ok(Vec::new()),
        }
    } else {
        let schema = schema.ok_or_else(|| {
            IngestError::InvalidValue(format!(
                "collection {collection:?} does not exist yet, so positional csv has no columns; send use_header=true"
            ))
        })?;
        std::iter::once(TIME_COLUMN.to_string())
            .chain(schema.columns.iter().map(|column| column.name.clone()))
            .collect()
    };
    let column_types: Vec<_> = header
        .iter()
        .map(|name| {
            if name == TIME_COLUMN {
                None
            } else {
                let normalized = rakam_model::normalize_field_name(name).ok();
                schema
                    .zip(normalized)
                    .and_then(|(schema, normalized)| schema.column_type(&normalized).cloned())
            }
        })
        .collect();
    let mut events = Vec::new();
    for (index, record) in records.enumerate() {
        let line = index + 1 + usize::from(options.use_header);
        let record = record.map_err(|e| IngestError::Malformed(format!("csv line {line}: {e}")))?;
        if record.len() > header.len() {
            return Err(IngestError::InvalidValue(format!(
                "csv line {line} has {} values but there are {} columns",
                record.len(),
                header.len()
            )));
        }
        if record.len() == 1 && record.get(0).is_some_and(<[u8]>::is_empty) {
            continue;
        }
        let mut properties = Map::new();
        for ((name, column_type), cell) in header.iter().zip(&column_types).zip(record.iter()) {
            let text = std::str::from_utf8(cell)
                .map_err(|_| IngestError::Malformed(format!("csv line {line} is not UTF-8")))?;
            let value = typed_from_text(text, column_type.as_ref(), name == TIME_COLUMN);
            properties.insert(name.clone(), value);
        }
        events.push(EventInput {
            collection: collection.to_string(),
            properties,
            upload_time: None,
        });
        check_count(events.len(), limits)?;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use rakam_model::{Column, FieldType};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_keeps_good_events_and_reports_bad_ones() {
        let body = json!({
            "api": {"api_key": "k", "upload_time": 1000},
            "events": [
                {"collection": "a", "properties": {"x": 1}},
                {"collection": 5, "properties": {}},
                {"properties": {}},
                "not an object"
            ]
        });
        let batch =
            decode_batch(body.to_string().as_bytes(), &IngestLimits::default()).expect("batch");
        assert_eq!(batch.api.api_key.as_deref(), Some("k"));
        assert!(batch.events[0].is_ok());
        assert_eq!(
            batch.events[0].as_ref().map(|e| e.upload_time).ok(),
            Some(Some(1000))
        );
        assert!(batch.events[1..].iter().all(Result::is_err));
    }

    #[test]
    fn oversized_events_name_the_limit() {
        let limits = IngestLimits {
            max_event_bytes: 40,
            ..IngestLimits::default()
        };
        let body = json!({"events": [{"collection": "a", "properties": {"x": "0123456789012345678901234567890123456789"}}]});
        let batch = decode_batch(body.to_string().as_bytes(), &limits).expect("batch");
        let error = batch.events[0].as_ref().expect_err("too large").to_string();
        assert!(error.contains("limits.max_event_bytes"), "{error}");
    }

    #[test]
    fn ndjson_lines_are_envelopes_or_properties() {
        let body = b"{\"collection\":\"pageview\",\"properties\":{\"a\":1}}\n\n{\"b\":2}\n";
        let events =
            decode_ndjson(body, Some("fallback"), &IngestLimits::default()).expect("ndjson");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].collection, "pageview");
        assert_eq!(events[1].collection, "fallback");
        let error = decode_ndjson(b"{\"a\":1}\n{oops\n", Some("c"), &IngestLimits::default())
            .expect_err("bad line")
            .to_string();
        assert!(error.starts_with("line 2"), "{error}");
        assert!(decode_ndjson(b"{\"a\":1}", None, &IngestLimits::default()).is_err());
        let array = decode_ndjson(
            b" [{\"a\":1},{\"a\":2}]",
            Some("c"),
            &IngestLimits::default(),
        )
        .expect("array");
        assert_eq!(array.len(), 2);
    }

    #[test]
    fn csv_with_header_and_positional() {
        let options = CsvOptions {
            separator: b',',
            use_header: true,
        };
        let events = decode_csv(
            b"name,count\nada,3\n\"b,c\",\n",
            "people",
            &options,
            None,
            &IngestLimits::default(),
        )
        .expect("csv");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].properties["count"], json!("3"));
        assert_eq!(events[1].properties["name"], json!("b,c"));
        assert_eq!(events[1].properties["count"], json!(null));

        let schema = CollectionSchema {
            columns: vec![Column {
                name: "count".into(),
                field_type: FieldType::Long,
            }],
        };
        let positional = CsvOptions {
            separator: b';',
            use_header: false,
        };
        let events = decode_csv(
            b"1700000000000;42\n",
            "people",
            &positional,
            Some(&schema),
            &IngestLimits::default(),
        )
        .expect("positional");
        assert_eq!(events[0].properties["_time"], json!(1_700_000_000_000_i64));
        assert_eq!(events[0].properties["count"], json!(42));
        assert!(decode_csv(
            b"1;2;3\n",
            "people",
            &positional,
            Some(&schema),
            &IngestLimits::default()
        )
        .is_err());
        assert!(decode_csv(
            b"1\n",
            "people",
            &positional,
            None,
            &IngestLimits::default()
        )
        .is_err());
    }
}
