//! One Source per wire format: where its key may be, which limit bounds its
//! body, how it decodes, and whether one bad event refuses the request.
//! Segment and PostHog endpoints will be Sources too.

use std::collections::HashMap;

use rakam_model::normalize_collection_name;
use rakam_store_api::ProjectSnapshot;
use serde_json::Map;

use crate::decode::{decode_batch, decode_csv, decode_event, decode_ndjson, CsvOptions};
use crate::text_values::typed_from_text;
use crate::typed::{decode_batch_typed, decode_ndjson_typed, Decline, TypedBatches};
use crate::{EventInput, IngestError, IngestLimits};

/// What a request's events are stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atomicity {
    /// One invalid event refuses the request; a crash leaves all of it or
    /// none (bulk loads, single events).
    AllOrNothing,
    /// Valid events are stored, invalid ones reported by index (batches).
    PerEvent,
}

/// A decoded request.
#[derive(Debug)]
pub struct Decoded {
    /// `api.api_key` of the body, when the format has one.
    pub api_key: Option<String>,
    pub events: Vec<Result<EventInput, IngestError>>,
}

/// What sets a Source apart besides its decoder.
#[derive(Debug, Clone, Copy)]
pub struct SourceShape {
    pub name: &'static str,
    /// Whether the body may carry the key (`api.api_key`); otherwise it
    /// must be in a header or a query parameter.
    pub key_in_body: bool,
    /// Bounded by `limits.max_bulk_bytes` rather than `max_request_bytes`.
    pub bulk: bool,
    pub atomicity: Atomicity,
}

pub trait Source: Send + Sync + std::fmt::Debug {
    fn shape(&self) -> SourceShape;

    /// Decodes a body. `project` is the project of a header key, when there
    /// is one (text formats type their values by its columns).
    fn decode(
        &self,
        body: &[u8],
        params: &HashMap<String, String>,
        project: Option<&ProjectSnapshot>,
        limits: &IngestLimits,
    ) -> Result<Decoded, IngestError>;

    /// Whether [`Source::decode_typed`] may take requests.
    fn decodes_typed(&self) -> bool {
        false
    }

    /// Decodes straight into batches of `project`'s current schemas when
    /// every event fits them as it is (see `typed`); otherwise says why,
    /// and [`Source::decode`] takes the request.
    fn decode_typed(
        &self,
        _body: &[u8],
        _params: &HashMap<String, String>,
        _project: &ProjectSnapshot,
        _limits: &IngestLimits,
        _server_time_ms: i64,
    ) -> Result<TypedBatches, Decline> {
        Err(Decline::Format)
    }

    fn name(&self) -> &'static str {
        self.shape().name
    }

    fn key_in_body(&self) -> bool {
        self.shape().key_in_body
    }

    fn atomicity(&self) -> Atomicity {
        self.shape().atomicity
    }

    /// The largest body, after decompression, and the limit's config key.
    fn body_limit(&self, limits: &IngestLimits) -> (usize, &'static str) {
        if self.shape().bulk {
            (limits.max_bulk_bytes, "limits.max_bulk_bytes")
        } else {
            (limits.max_request_bytes, "limits.max_request_bytes")
        }
    }
}

/// `/event/collect`: `{collection, api, properties}`.
#[derive(Debug)]
pub struct CollectSource;

impl Source for CollectSource {
    fn shape(&self) -> SourceShape {
        SourceShape {
            name: "collect",
            key_in_body: true,
            bulk: false,
            atomicity: Atomicity::AllOrNothing,
        }
    }

    fn decode(
        &self,
        body: &[u8],
        _params: &HashMap<String, String>,
        _project: Option<&ProjectSnapshot>,
        limits: &IngestLimits,
    ) -> Result<Decoded, IngestError> {
        if body.len() > limits.max_event_bytes {
            return Err(IngestError::EventTooLarge {
                actual: body.len(),
                limit: limits.max_event_bytes,
            });
        }
        let envelope = decode_event(body)?;
        Ok(Decoded {
            api_key: envelope.api.api_key,
            events: vec![Ok(envelope.event)],
        })
    }
}

/// `/event/batch`: `{api, events: [...]}`; each event stands on its own.
#[derive(Debug)]
pub struct BatchSource;

impl Source for BatchSource {
    fn shape(&self) -> SourceShape {
        SourceShape {
            name: "batch",
            key_in_body: true,
            bulk: false,
            atomicity: Atomicity::PerEvent,
        }
    }

    fn decode(
        &self,
        body: &[u8],
        _params: &HashMap<String, String>,
        _project: Option<&ProjectSnapshot>,
        limits: &IngestLimits,
    ) -> Result<Decoded, IngestError> {
        let request = decode_batch(body, limits)?;
        Ok(Decoded {
            api_key: request.api.api_key,
            events: request.events,
        })
    }

    fn decodes_typed(&self) -> bool {
        true
    }

    fn decode_typed(
        &self,
        body: &[u8],
        _params: &HashMap<String, String>,
        project: &ProjectSnapshot,
        limits: &IngestLimits,
        server_time_ms: i64,
    ) -> Result<TypedBatches, Decline> {
        decode_batch_typed(body, project, limits, server_time_ms)
    }
}

/// `/event/bulk` with a JSON body: a batch, stored all or nothing.
#[derive(Debug)]
pub struct BulkJsonSource;

impl Source for BulkJsonSource {
    fn shape(&self) -> SourceShape {
        SourceShape {
            name: "bulk_json",
            key_in_body: true,
            bulk: true,
            atomicity: Atomicity::AllOrNothing,
        }
    }

    fn decode(
        &self,
        body: &[u8],
        params: &HashMap<String, String>,
        project: Option<&ProjectSnapshot>,
        limits: &IngestLimits,
    ) -> Result<Decoded, IngestError> {
        BatchSource.decode(body, params, project, limits)
    }

    fn decodes_typed(&self) -> bool {
        true
    }

    fn decode_typed(
        &self,
        body: &[u8],
        params: &HashMap<String, String>,
        project: &ProjectSnapshot,
        limits: &IngestLimits,
        server_time_ms: i64,
    ) -> Result<TypedBatches, Decline> {
        BatchSource.decode_typed(body, params, project, limits, server_time_ms)
    }
}

/// `/event/bulk` as NDJSON (or a JSON array): envelopes, or bare properties
/// for the `collection` query parameter. The key is in a header.
#[derive(Debug)]
pub struct NdjsonSource;

impl Source for NdjsonSource {
    fn shape(&self) -> SourceShape {
        SourceShape {
            name: "ndjson",
            key_in_body: false,
            bulk: true,
            atomicity: Atomicity::AllOrNothing,
        }
    }

    fn decode(
        &self,
        body: &[u8],
        params: &HashMap<String, String>,
        _project: Option<&ProjectSnapshot>,
        limits: &IngestLimits,
    ) -> Result<Decoded, IngestError> {
        let collection = params.get("collection").map(String::as_str);
        let events = decode_ndjson(body, collection, limits)?;
        Ok(Decoded {
            api_key: None,
            events: events.into_iter().map(Ok).collect(),
        })
    }

    fn decodes_typed(&self) -> bool {
        true
    }

    fn decode_typed(
        &self,
        body: &[u8],
        params: &HashMap<String, String>,
        project: &ProjectSnapshot,
        limits: &IngestLimits,
        server_time_ms: i64,
    ) -> Result<TypedBatches, Decline> {
        let collection = params.get("collection").map(String::as_str);
        decode_ndjson_typed(body, collection, project, limits, server_time_ms)
    }
}

fn required_collection(params: &HashMap<String, String>) -> Result<&str, IngestError> {
    params
        .get("collection")
        .map(String::as_str)
        .ok_or(IngestError::Missing("collection query parameter"))
}

/// `/event/bulk` as CSV into the `collection` query parameter, with
/// `column_separator` and `use_header`. The key is in a header.
#[derive(Debug)]
pub struct CsvSource;

impl CsvSource {
    fn options(params: &HashMap<String, String>) -> Result<CsvOptions, IngestError> {
        let separator = match params.get("column_separator").map(String::as_str) {
            None | Some("") => b',',
            Some("\\t") | Some("tab") => b'\t',
            Some(text) if text.len() == 1 => text.as_bytes()[0],
            Some(text) => {
                return Err(IngestError::InvalidValue(format!(
                    "column_separator must be one character, not {text:?}"
                )))
            }
        };
        let use_header = params
            .get("use_header")
            .map(|v| v.to_ascii_lowercase())
            .is_some_and(|value| matches!(value.as_str(), "true" | "1" | "yes"));
        Ok(CsvOptions {
            separator,
            use_header,
        })
    }
}

impl Source for CsvSource {
    fn shape(&self) -> SourceShape {
        SourceShape {
            name: "csv",
            key_in_body: false,
            bulk: true,
            atomicity: Atomicity::AllOrNothing,
        }
    }

    fn decode(
        &self,
        body: &[u8],
        params: &HashMap<String, String>,
        project: Option<&ProjectSnapshot>,
        limits: &IngestLimits,
    ) -> Result<Decoded, IngestError> {
        let collection = normalize_collection_name(required_collection(params)?)?;
        let options = Self::options(params)?;
        let schema = project.and_then(|p| p.schema(&collection));
        let events = decode_csv(body, &collection, &options, schema.map(|s| &**s), limits)?;
        Ok(Decoded {
            api_key: None,
            events: events.into_iter().map(Ok).collect(),
        })
    }
}

/// `/event/pixel?collection=…&api.api_key=…&prop.<name>=…`: one event from
/// the query string, typed by the collection's columns.
#[derive(Debug)]
pub struct PixelSource;

impl Source for PixelSource {
    fn shape(&self) -> SourceShape {
        SourceShape {
            name: "pixel",
            key_in_body: false,
            bulk: false,
            atomicity: Atomicity::AllOrNothing,
        }
    }

    fn decode(
        &self,
        _body: &[u8],
        params: &HashMap<String, String>,
        project: Option<&ProjectSnapshot>,
        _limits: &IngestLimits,
    ) -> Result<Decoded, IngestError> {
        let collection = required_collection(params)?;
        let normalized = normalize_collection_name(collection)?;
        let schema = project.and_then(|p| p.schema(&normalized));
        let mut properties = Map::new();
        for (key, text) in params {
            let Some(name) = key.strip_prefix("prop.") else {
                continue;
            };
            let normalized = rakam_model::normalize_field_name(name)?;
            let column_type = schema.and_then(|s| s.column_type(&normalized));
            properties.insert(
                name.to_string(),
                typed_from_text(text, column_type, name == "_time"),
            );
        }
        Ok(Decoded {
            api_key: params.get("api.api_key").cloned(),
            events: vec![Ok(EventInput {
                collection: collection.to_string(),
                properties,
                upload_time: None,
            })],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use rakam_model::{CollectionSchema, Column, FieldType};
    use rakam_store_api::{ProjectId, ProjectInfo};
    use serde_json::json;

    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn project_with_long_n() -> ProjectSnapshot {
        let schema = CollectionSchema {
            columns: vec![Column {
                name: "n".into(),
                field_type: FieldType::Long,
            }],
        };
        ProjectSnapshot {
            project: ProjectInfo {
                name: "p".into(),
                id: ProjectId::new("p"),
                created_at_ms: 0,
            },
            version: 1,
            collections: BTreeMap::from([("e".to_string(), Arc::new(schema))]),
        }
    }

    fn only_event(decoded: Decoded) -> EventInput {
        let mut events = decoded.events;
        assert_eq!(events.len(), 1);
        events.remove(0).expect("valid event")
    }

    #[test]
    fn every_source_says_where_its_key_is_and_how_it_fails() {
        let limits = IngestLimits::default();
        let cases: [(&dyn Source, bool, usize, Atomicity); 6] = [
            (
                &CollectSource,
                true,
                limits.max_request_bytes,
                Atomicity::AllOrNothing,
            ),
            (
                &BatchSource,
                true,
                limits.max_request_bytes,
                Atomicity::PerEvent,
            ),
            (
                &BulkJsonSource,
                true,
                limits.max_bulk_bytes,
                Atomicity::AllOrNothing,
            ),
            (
                &NdjsonSource,
                false,
                limits.max_bulk_bytes,
                Atomicity::AllOrNothing,
            ),
            (
                &CsvSource,
                false,
                limits.max_bulk_bytes,
                Atomicity::AllOrNothing,
            ),
            (
                &PixelSource,
                false,
                limits.max_request_bytes,
                Atomicity::AllOrNothing,
            ),
        ];
        for (source, key_in_body, limit, atomicity) in cases {
            assert_eq!(source.key_in_body(), key_in_body, "{}", source.name());
            assert_eq!(source.body_limit(&limits).0, limit, "{}", source.name());
            assert_eq!(source.atomicity(), atomicity, "{}", source.name());
        }
    }

    #[test]
    fn collect_and_batch_return_the_body_key() {
        let limits = IngestLimits::default();
        let body = json!({"collection": "e", "api": {"api_key": "k"}, "properties": {"n": 1}});
        let decoded = CollectSource
            .decode(body.to_string().as_bytes(), &params(&[]), None, &limits)
            .expect("decoded");
        assert_eq!(decoded.api_key.as_deref(), Some("k"));
        assert_eq!(only_event(decoded).properties["n"], json!(1));
        let small = IngestLimits {
            max_event_bytes: 10,
            ..IngestLimits::default()
        };
        assert!(CollectSource
            .decode(body.to_string().as_bytes(), &params(&[]), None, &small)
            .is_err());
        let batch = json!({"api": {"api_key": "k"}, "events": [
            {"collection": "e", "properties": {}}, {"collection": 5, "properties": {}}
        ]});
        let decoded = BatchSource
            .decode(batch.to_string().as_bytes(), &params(&[]), None, &limits)
            .expect("decoded");
        assert!(decoded.events[0].is_ok() && decoded.events[1].is_err());
    }

    #[test]
    fn text_sources_type_values_by_the_projects_columns() {
        let limits = IngestLimits::default();
        let project = project_with_long_n();
        let csv = CsvSource
            .decode(
                b"n;s\n7;x\n",
                &params(&[
                    ("collection", "E"),
                    ("use_header", "true"),
                    ("column_separator", ";"),
                ]),
                Some(&project),
                &limits,
            )
            .expect("csv");
        let event = only_event(csv);
        assert_eq!(event.collection, "e");
        assert_eq!(event.properties["n"], json!(7));
        assert!(CsvSource
            .decode(b"1\n", &params(&[]), Some(&project), &limits)
            .is_err());
        let separator = params(&[("collection", "e"), ("column_separator", "ab")]);
        assert!(CsvSource.decode(b"1\n", &separator, None, &limits).is_err());
        let pixel = PixelSource
            .decode(
                b"",
                &params(&[
                    ("collection", "e"),
                    ("api.api_key", "k"),
                    ("prop.n", "12"),
                    ("prop.s", "12"),
                ]),
                Some(&project),
                &limits,
            )
            .expect("pixel");
        assert_eq!(pixel.api_key.as_deref(), Some("k"));
        let event = only_event(pixel);
        assert_eq!(event.properties["n"], json!(12));
        assert_eq!(event.properties["s"], json!("12"));
        let ndjson = NdjsonSource
            .decode(
                b"{\"n\":1}\n{\"n\":2}\n",
                &params(&[("collection", "e")]),
                None,
                &limits,
            )
            .expect("ndjson");
        assert_eq!(ndjson.events.len(), 2);
    }
}
