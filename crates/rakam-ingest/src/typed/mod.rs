//! The typed decoder: NDJSON straight into Arrow builders of the columns a
//! collection already has, with a SIMD JSON parser (sonic-rs), borrowed
//! strings, no `serde_json::Value`, no per-event map.
//!
//! It takes a request only when the general path would store exactly the
//! same rows without changing anything: every field an existing column,
//! every value fitting it as it is. Anything else (a new field, a value for
//! `_unmapped`, a widening, a nested object, an odd name, an error to
//! report) declines the whole request, which then goes down the general
//! path and its rules; the schema it evolves lets the next request through.
//! `typed::differential` checks, on random events, that both paths store
//! the same values.

mod rows;
mod scan;

#[cfg(test)]
mod differential;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use datafusion::arrow::record_batch::RecordBatch;
use rakam_model::normalize_collection_name;
use rakam_store_api::ProjectSnapshot;
use serde::de::DeserializeSeed;
use sonic_rs::JsonValueTrait;

use crate::IngestLimits;
use rows::CollectionRows;
use scan::{Fields, LineSeed};

/// Why the typed decoder left a request to the general path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// Not a format it reads (a JSON array body, no default collection).
    Format,
    /// The pipeline has mappers, which work on prepared events.
    Mappers,
    /// Invalid JSON, or not an object: the general path names the line.
    Malformed,
    /// A limit is reached: the general path reports it.
    Limit,
    /// A collection that does not exist yet, or a name to normalise.
    Collection,
    /// A field without a column, an instruction (`_ip`), a reserved name,
    /// or an `api` object on an envelope.
    Field,
    /// A value its column cannot take as it is (`_unmapped` or widening).
    Value,
    /// An event time to refuse.
    Time,
    /// A key repeated within one event.
    Duplicate,
    /// The body's `api.api_key` is not the key the request was checked
    /// with, or `api.upload_time` asks for clock-skew correction.
    Key,
}

impl Decline {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::Mappers => "mappers",
            Self::Malformed => "malformed",
            Self::Limit => "limit",
            Self::Collection => "collection",
            Self::Field => "field",
            Self::Value => "value",
            Self::Time => "time",
            Self::Duplicate => "duplicate",
            Self::Key => "key",
        }
    }
}

/// A request decoded into batches of the collections' current schemas.
/// The rows and their order are those of the general path; where a large
/// body is decoded in parallel, the batches are cut differently (one per
/// part and collection, each with the columns its rows use).
#[derive(Debug)]
pub struct TypedBatches {
    /// In collection name order, then event order.
    pub batches: Vec<(String, RecordBatch)>,
    pub events: usize,
    /// The body's `api.api_key` (batch bodies), for the caller to check
    /// against the key the request was authorised with.
    pub api_key: Option<String>,
}

/// NDJSON (envelopes, or bare properties for `default_collection`) into
/// batches, when every event fits `project`'s schemas as it is.
pub fn decode_ndjson_typed(
    body: &[u8],
    default_collection: Option<&str>,
    project: &ProjectSnapshot,
    limits: &IngestLimits,
    server_time_ms: i64,
) -> Result<TypedBatches, Decline> {
    if body.trim_ascii_start().first() == Some(&b'[') {
        return Err(Decline::Format);
    }
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.trim_ascii_start().is_empty())
        .collect();
    decode_lines_typed(&lines, default_collection, project, limits, server_time_ms)
}

/// A batch body (`/event/batch`, JSON `/event/bulk`: `{api, events: [...]}`)
/// into batches, on the terms of [`decode_ndjson_typed`]: every event an
/// envelope that fits as it is. A body asking for clock-skew correction
/// (`api.upload_time`) is the general path's. Its `api.api_key` comes back
/// in [`TypedBatches::api_key`].
pub fn decode_batch_typed(
    body: &[u8],
    project: &ProjectSnapshot,
    limits: &IngestLimits,
    server_time_ms: i64,
) -> Result<TypedBatches, Decline> {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(default, borrow)]
        api: Option<sonic_rs::LazyValue<'a>>,
        #[serde(default, borrow)]
        events: Option<Vec<sonic_rs::LazyValue<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct Api {
        #[serde(default)]
        api_key: Option<String>,
        #[serde(default)]
        upload_time: Option<sonic_rs::Value>,
    }
    if has_digit_run(body, LONGEST_DIGIT_RUN) {
        return Err(Decline::Value);
    }
    let text = std::str::from_utf8(body).map_err(|_| Decline::Malformed)?;
    let parsed: Body<'_> = sonic_rs::from_str(text).map_err(|_| Decline::Malformed)?;
    let api_key = match parsed.api.as_ref().map(|api| api.as_raw_str().trim()) {
        None | Some("null") => None,
        Some(raw) => {
            let api: Api = sonic_rs::from_str(raw).map_err(|_| Decline::Malformed)?;
            if api.upload_time.is_some_and(|time| !time.is_null()) {
                return Err(Decline::Key);
            }
            api.api_key
        }
    };
    let events = parsed.events.ok_or(Decline::Format)?;
    let lines: Vec<&[u8]> = events
        .iter()
        .map(|event| event.as_raw_str().as_bytes())
        .collect();
    let mut decoded = decode_lines_typed(&lines, None, project, limits, server_time_ms)?;
    decoded.api_key = api_key;
    Ok(decoded)
}

/// The `api.api_key` of a batch body, found without decoding the rest (to
/// know the project whose columns the typed decoder needs).
pub fn batch_body_key(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let key = sonic_rs::get(text, ["api", "api_key"]).ok()?;
    key.as_str().map(str::to_string)
}

/// Events (one JSON object each) into batches.
fn decode_lines_typed(
    lines: &[&[u8]],
    default_collection: Option<&str>,
    project: &ProjectSnapshot,
    limits: &IngestLimits,
    server_time_ms: i64,
) -> Result<TypedBatches, Decline> {
    if lines.is_empty() {
        return Err(Decline::Format);
    }
    if lines.len() > limits.max_batch_events {
        return Err(Decline::Limit);
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk_size = lines.len().div_ceil(workers).max(4096);
    let decoder = LineDecoder {
        default_collection,
        project,
        limits,
        server_time_ms,
        declined: OnceLock::new(),
    };
    let parts: Vec<Result<PartBatches, Decline>> = if lines.len() <= chunk_size {
        vec![decoder.decode(lines)]
    } else {
        std::thread::scope(|scope| {
            let decoder = &decoder;
            let handles: Vec<_> = lines
                .chunks(chunk_size)
                .map(|chunk| scope.spawn(move || decoder.decode(chunk)))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or(Err(Decline::Malformed)))
                .collect()
        })
    };
    let mut by_collection: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for part in parts {
        // A part stopped because another declined reports that one's reason.
        let part = part.map_err(|stopped| decoder.declined.get().copied().unwrap_or(stopped))?;
        for (collection, batches) in part {
            by_collection.entry(collection).or_default().extend(batches);
        }
    }
    Ok(TypedBatches {
        batches: by_collection
            .into_iter()
            .flat_map(|(collection, batches)| {
                batches
                    .into_iter()
                    .map(move |batch| (collection.clone(), batch))
            })
            .collect(),
        events: lines.len(),
        api_key: None,
    })
}

/// One part's batches, by collection.
type PartBatches = Vec<(String, Vec<RecordBatch>)>;

/// Digits in a row beyond which a line takes the general path.
const LONGEST_DIGIT_RUN: usize = 64;

fn has_digit_run(line: &[u8], longest: usize) -> bool {
    let mut run = 0;
    for byte in line {
        if byte.is_ascii_digit() {
            run += 1;
            if run > longest {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

struct LineDecoder<'r> {
    default_collection: Option<&'r str>,
    project: &'r ProjectSnapshot,
    limits: &'r IngestLimits,
    server_time_ms: i64,
    /// Why the first part to decline did, so the others stop.
    declined: OnceLock<Decline>,
}

impl<'r> LineDecoder<'r> {
    fn decode(&self, lines: &[&'r [u8]]) -> Result<PartBatches, Decline> {
        let result = self.decode_lines(lines);
        if let Err(decline) = result {
            let _ = self.declined.set(decline);
        }
        result
    }

    fn decode_lines(&self, lines: &[&'r [u8]]) -> Result<PartBatches, Decline> {
        let mut collections: Vec<(String, CollectionRows<'r>)> = Vec::new();
        // Raw collection names as sent, to their entry in `collections`.
        let mut names: Vec<(String, usize)> = Vec::new();
        let mut top: Fields<'r> = Vec::new();
        let mut properties: Fields<'r> = Vec::new();
        for (number, line) in lines.iter().enumerate() {
            if number % 1024 == 0 && self.declined.get().is_some() {
                return Err(Decline::Malformed);
            }
            if line.len() > self.limits.max_event_bytes {
                return Err(Decline::Limit);
            }
            // The parser rounds numbers of hundreds of digits wrongly
            // (it caps their exponent): those take the general path.
            if has_digit_run(line, LONGEST_DIGIT_RUN) {
                return Err(Decline::Value);
            }
            let text = std::str::from_utf8(line).map_err(|_| Decline::Malformed)?;
            top.clear();
            properties.clear();
            let mut deserializer = sonic_rs::Deserializer::from_str(text);
            let seed = LineSeed {
                top: &mut top,
                properties: &mut properties,
            };
            let shape = seed.deserialize(&mut deserializer).map_err(|error| {
                if error.to_string().contains(scan::NESTED) {
                    Decline::Value
                } else {
                    Decline::Malformed
                }
            })?;
            deserializer.end().map_err(|_| Decline::Malformed)?;
            let (collection, fields) = match shape.collection {
                Some(collection) if shape.properties_object => {
                    if shape.api {
                        return Err(Decline::Field);
                    }
                    (collection, &properties)
                }
                _ => (self.default_collection.ok_or(Decline::Format)?.into(), &top),
            };
            let entry = match names.iter().find(|(raw, _)| *raw == *collection) {
                Some((_, entry)) => *entry,
                None => {
                    let entry = self.collection_entry(&collection, &mut collections)?;
                    names.push((collection.into_owned(), entry));
                    entry
                }
            };
            collections[entry].1.append(fields, line, self.limits)?;
        }
        collections
            .into_iter()
            .map(|(name, rows)| Ok((name, rows.finish()?)))
            .collect()
    }

    fn collection_entry(
        &self,
        raw: &str,
        collections: &mut Vec<(String, CollectionRows<'r>)>,
    ) -> Result<usize, Decline> {
        let name = normalize_collection_name(raw).map_err(|_| Decline::Collection)?;
        if let Some(entry) = collections.iter().position(|(known, _)| *known == name) {
            return Ok(entry);
        }
        let schema = self.project.schema(&name).ok_or(Decline::Collection)?;
        collections.push((name, CollectionRows::new(schema, self.server_time_ms)));
        Ok(collections.len() - 1)
    }
}
