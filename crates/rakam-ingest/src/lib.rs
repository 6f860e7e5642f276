//! From request bytes to durable rows, without HTTP: decode (JSON event,
//! batch, NDJSON, CSV, query parameters) → normalise names and time →
//! evolve the schema in the catalog → build Arrow batches → append.
//!
//! A value that fits no column is never dropped or zeroed: it goes, under
//! its field name, into the row's `_unmapped` JSON.

mod build;

mod decode;
mod error;
mod ingester;
mod limits;
mod prepare;
mod text_values;

pub use decode::{
    decode_batch, decode_csv, decode_event, decode_ndjson, ApiContext, BatchRequest, CsvOptions,
    EventEnvelope, EventInput,
};
pub use error::IngestError;
pub use ingester::{IngestOutcome, Ingester};
pub use limits::IngestLimits;
pub use text_values::typed_from_text;
