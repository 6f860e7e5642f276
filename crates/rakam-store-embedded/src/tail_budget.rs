//! Appends wait while the tails hold more than twice
//! `storage.embedded.max_tail_bytes`. The maintenance task flushes the
//! largest tails once they pass the budget, but only between its other
//! steps (a flush by age, a compaction), so ingest that outruns flushing
//! would otherwise grow the tails without bound. Waiting slows ingest to
//! the pace of flushing; the request keeps its share of the in-flight
//! budget meanwhile (ADR 0009).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rakam_store_api::{Result, StoreError};

use crate::store::EmbeddedStore;

/// Multiple of `max_tail_bytes` above which appends wait.
const HARD_LIMIT_FACTOR: usize = 2;
/// How often a waiting append looks again.
const POLL: Duration = Duration::from_millis(10);
/// How long an append waits for flushing before it is refused as busy
/// (503, retryable).
const LONGEST_WAIT: Duration = Duration::from_secs(30);

impl EmbeddedStore {
    /// Memory the unflushed batches of every collection hold.
    pub(crate) fn tail_bytes(&self) -> usize {
        self.tables
            .read()
            .values()
            .map(|table| table.tail_bytes())
            .sum()
    }

    pub(crate) async fn wait_for_tail_room(&self) -> Result<()> {
        let limit = self
            .options
            .max_tail_bytes
            .saturating_mul(HARD_LIMIT_FACTOR);
        let started = Instant::now();
        while self.tail_bytes() > limit {
            if self.stopping.load(Ordering::Acquire) {
                return Err(StoreError::ShuttingDown);
            }
            if started.elapsed() >= LONGEST_WAIT {
                return Err(StoreError::Unavailable(format!(
                    "unflushed events hold more than {limit} bytes (twice \
                     storage.embedded.max_tail_bytes) and flushing has not caught up \
                     in {} s; retry later",
                    LONGEST_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}
