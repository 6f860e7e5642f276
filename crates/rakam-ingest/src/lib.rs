//! From request bytes to durable rows, without HTTP: a [`Source`] per wire
//! format decodes (JSON event, batch, bulk JSON, NDJSON, CSV, pixel), then
//! the [`Pipeline`] prepares (names, `_time`, clock skew, limits), runs the
//! [`Mapper`]s, evolves the schema in the catalog, builds Arrow batches,
//! appends them to the sink as one durable unit and tells the
//! [`AppendObserver`]s.
//!
//! A value that fits no column is never dropped or zeroed: it goes, under
//! its field name, into the row's `_unmapped` JSON.

mod big_integers;
mod build;
mod column_builder;
mod context;
mod decode;
mod error;
mod limits;
mod mapper;
mod observer;
mod pipeline;
mod prepare;
mod sources;
mod text_values;
mod typed;
mod user_column;

pub use big_integers::is_integer_beyond_i64;
pub use context::{EventContext, RequestContext};
pub use decode::{
    decode_batch, decode_csv, decode_event, decode_ndjson, ApiContext, BatchRequest, CsvOptions,
    EventEnvelope, EventInput,
};
pub use error::IngestError;
pub use limits::IngestLimits;
pub use mapper::{MappedEvent, Mapper};
pub use observer::AppendObserver;
pub use pipeline::{IngestOutcome, Pipeline};
pub use sources::{
    Atomicity, BatchSource, BulkJsonSource, CollectSource, CsvSource, Decoded, NdjsonSource,
    PixelSource, Source, SourceShape,
};
pub use text_values::typed_from_text;
pub use typed::{batch_body_key, decode_batch_typed, decode_ndjson_typed, Decline, TypedBatches};
