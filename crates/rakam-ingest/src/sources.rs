//! One Source per wire format: where its key may be, which limit bounds its
//! body, how it decodes, and whether one bad event refuses the request.
//! Segment and PostHog endpoints will be Sources too.

use std::collections::HashMap;

use rakam_model::normalize_collection_name;
use rakam_store_api::ProjectSnapshot;
use serde_json::Map;

use crate::decode::{decode_batch, decode_csv, decode_event, decode_ndjson, CsvOptions};
use crate::text_values::typed_from_text;
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
