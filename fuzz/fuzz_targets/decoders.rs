//! Every request decoder (collect, batch, bulk JSON, NDJSON, CSV, pixel)
//! on any bytes: an error or events, never a panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use rakam_ingest::{
    BatchSource, BulkJsonSource, CollectSource, CsvSource, IngestLimits, NdjsonSource,
    PixelSource, Source,
};

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
    let _ = source.decode(body, &params, None, &IngestLimits::default());
});
