//! The body reader on any bytes declared as gzip: the body, or a clear
//! error (corrupt, too large), never a panic or unbounded memory.
#![no_main]

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rakam_http::BodyReader;

fuzz_target!(|data: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let body = Body::from(data.to_vec());
    runtime.block_on(async {
        if let Ok(reader) = BodyReader::new(
            &headers,
            body,
            1 << 20,
            "limits.max_request_bytes",
            Duration::from_secs(5),
        ) {
            if let Ok(bytes) = reader.read_to_end().await {
                assert!(bytes.len() <= 1 << 20, "the limit was not kept");
            }
        }
    });
});
