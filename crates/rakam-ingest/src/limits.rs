/// Per-request limits, the same for every Source. Exceeding one is a clear
/// error naming the limit; nothing is ever truncated.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest body of a single event or a batch, after decompression.
    pub max_request_bytes: usize,
    /// Largest body of a bulk load, after decompression.
    pub max_bulk_bytes: usize,
    pub max_event_bytes: usize,
    pub max_batch_events: usize,
    pub max_properties_per_event: usize,
    pub max_string_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_bulk_bytes: 256 << 20,
            max_event_bytes: 1 << 20,
            max_batch_events: 10_000_000,
            max_properties_per_event: 1_000,
            max_string_bytes: 1 << 20,
        }
    }
}
