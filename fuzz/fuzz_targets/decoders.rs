//! Every request decoder (collect, batch, bulk JSON, NDJSON, CSV, pixel,
//! and the typed decoders of NDJSON and batch bodies against a fixed
//! schema, with the body-key lookup before them) on any bytes: an
//! error, a decline or events, never a panic.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rakam_ingest::{
    BatchSource, BulkJsonSource, CollectSource, CsvSource, IngestLimits, NdjsonSource,
    PixelSource, Source,
};
use rakam_model::{CollectionSchema, Column, FieldType};
use rakam_store_api::{ProjectId, ProjectInfo, ProjectSnapshot};

/// A project whose collection `e` has a column of every type, so the typed
/// decoder gets past its first field.
fn snapshot() -> &'static ProjectSnapshot {
    static SNAPSHOT: OnceLock<ProjectSnapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let types = [
            ("s", FieldType::String),
            ("n", FieldType::Long),
            ("d", FieldType::Double),
            ("b", FieldType::Boolean),
            ("day", FieldType::Date),
            ("ts", FieldType::Timestamp),
            ("_user", FieldType::String),
        ];
        let schema = CollectionSchema {
            columns: types
                .into_iter()
                .map(|(name, field_type)| Column {
                    name: name.into(),
                    field_type,
                })
                .collect(),
        };
        ProjectSnapshot {
            project: ProjectInfo {
                name: "p".into(),
                id: ProjectId::new("p"),
                created_at_ms: 0,
            },
            version: 1,
            collections: [("e".to_string(), Arc::new(schema))].into_iter().collect(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let sources: [&dyn Source; 6] = [
        &CollectSource,
        &BatchSource,
        &BulkJsonSource,
        &NdjsonSource,
        &CsvSource,
        &PixelSource,
    ];
    let source = sources[usize::from(selector) % sources.len()];
    let mut params = HashMap::new();
    params.insert("collection".to_string(), "e".to_string());
    if selector & 0x10 != 0 {
        params.insert("use_header".to_string(), "false".to_string());
    }
    if selector & 0x20 != 0 {
        params.insert("column_separator".to_string(), ";".to_string());
    }
    if selector & 0x40 != 0 {
        // Pixel parameters come from the query string.
        for pair in String::from_utf8_lossy(body).split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(key.to_string(), value.to_string());
        }
    }
    let limits = IngestLimits::default();
    if source.decodes_typed() {
        let _ = source.decode_typed(body, &params, snapshot(), &limits, 0);
    }
    if source.key_in_body() {
        let _ = rakam_ingest::batch_body_key(body);
    }
    let _ = source.decode(body, &params, None, &limits);
});
