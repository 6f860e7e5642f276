use rakam_config::LimitsConfig;

/// Per-request limits, the same for every Source. Exceeding one is a clear
/// error naming the limit; nothing is ever truncated. The defaults are the
/// config's (`limits.*`), stated once there.
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

impl From<&LimitsConfig> for IngestLimits {
    fn from(limits: &LimitsConfig) -> Self {
        Self {
            max_request_bytes: limits.max_request_bytes,
            max_bulk_bytes: limits.max_bulk_bytes,
            max_event_bytes: limits.max_event_bytes,
            max_batch_events: limits.max_batch_events,
            max_properties_per_event: limits.max_properties_per_event,
            max_string_bytes: limits.max_string_bytes,
        }
    }
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self::from(&LimitsConfig::default())
    }
}
