use serde::{Deserialize, Serialize};

/// The live event stream (`GET /stream/subscribe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Whether clients may subscribe to the live event stream.
    pub enabled: bool,
    /// Subscribers one project may have at once; more get 429.
    pub max_subscribers_per_project: usize,
    /// Appends (requests' worth of events) queued for one subscriber. A
    /// subscriber that falls further behind is told what it missed and
    /// disconnected, so a slow client never slows ingestion or holds memory.
    pub subscriber_buffer_appends: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_subscribers_per_project: 16,
            subscriber_buffer_appends: 256,
        }
    }
}

impl StreamConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(1..=1 << 16).contains(&self.subscriber_buffer_appends) {
            return Err(format!(
                "stream.subscriber_buffer_appends must be between 1 and 65536, not {}",
                self.subscriber_buffer_appends
            ));
        }
        Ok(())
    }
}
