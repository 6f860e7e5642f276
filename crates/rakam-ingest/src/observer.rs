//! Append observers: told of every durable append with its position in the
//! sink's log (continuous queries and the live stream will be observers).
//!
//! The contract: every durable append reaches every observer at least once,
//! with its position. After a restart, the pipeline replays the appends after
//! each observer's checkpoint, and the sink keeps them in its log until every
//! observer's checkpoint has passed them. Deliveries of concurrent requests
//! may arrive out of position order, and an append handled just before a
//! crash may come again: an observer that stores, with its state and in one
//! durable step, which positions it has handled is exactly-once.

use std::sync::Arc;

use async_trait::async_trait;
use rakam_store_api::{Append, EventSink, LogPosition};

use crate::IngestError;

#[async_trait]
pub trait AppendObserver: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// Whether the observer is replayed what it missed and holds the log
    /// until its checkpoint. An observer of the live moment only (the live
    /// stream) says no: it is never replayed and never holds the log, and
    /// its `checkpoint` is not asked.
    fn replays(&self) -> bool {
        true
    }

    /// Every position at or below this one is handled durably; replay
    /// starts after it. `None` before the first.
    async fn checkpoint(&self) -> Result<Option<LogPosition>, IngestError>;

    /// An append is durable. `position` is `None` for sinks without a
    /// replayable log.
    async fn on_append(
        &self,
        position: Option<LogPosition>,
        append: &Append,
    ) -> Result<(), IngestError>;
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Observers {
    observers: Vec<Arc<dyn AppendObserver>>,
}

impl Observers {
    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }

    /// Whether an observer is replayed what it misses, so its delivery must
    /// finish together with the append even when the client goes away.
    pub fn any_replays(&self) -> bool {
        self.observers.iter().any(|o| o.replays())
    }

    pub fn add(&mut self, observer: Arc<dyn AppendObserver>) {
        self.observers.push(observer);
    }

    /// Replays to each observer what it missed, and keeps the sink's log
    /// from dropping what an observer has not handled yet.
    pub async fn start(&self, sink: &dyn EventSink) -> Result<usize, IngestError> {
        if !self.any_replays() {
            return Ok(0);
        }
        self.retain(sink).await?;
        let mut replayed = 0;
        for observer in self.observers.iter().filter(|o| o.replays()) {
            let after = observer.checkpoint().await?.unwrap_or(LogPosition(0));
            let Some(appends) = sink.replay(after).await? else {
                tracing::warn!(
                    observer = observer.name(),
                    "this backend cannot replay its appends: what the observer missed while the server was down stays missed"
                );
                continue;
            };
            for logged in appends {
                observer
                    .on_append(Some(logged.position), &logged.append)
                    .await?;
                replayed += 1;
            }
        }
        self.retain(sink).await?;
        Ok(replayed)
    }

    /// Tells every observer of a durable append. A failing observer does
    /// not fail the request (the events are stored and acknowledged); it is
    /// replayed the append at the next start.
    pub async fn appended(
        &self,
        sink: &dyn EventSink,
        position: Option<LogPosition>,
        append: &Append,
    ) {
        if self.observers.is_empty() {
            return;
        }
        for observer in &self.observers {
            if let Err(error) = observer.on_append(position, append).await {
                tracing::error!(observer = observer.name(), %error, "an append observer failed; it will be replayed the append at the next start");
            }
        }
        if let Err(error) = self.retain(sink).await {
            tracing::error!(%error, "cannot read the append observers' checkpoints");
        }
    }

    async fn retain(&self, sink: &dyn EventSink) -> Result<(), IngestError> {
        if !self.any_replays() {
            return Ok(());
        }
        let mut lowest = LogPosition(u64::MAX);
        for observer in self.observers.iter().filter(|o| o.replays()) {
            lowest = lowest.min(observer.checkpoint().await?.unwrap_or(LogPosition(0)));
        }
        sink.retain_log_after(lowest);
        Ok(())
    }
}
