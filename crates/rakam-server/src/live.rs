//! The live event stream: an append observer that hands every durable
//! append to the project's subscribers, each through a bounded queue.
//!
//! Ingest only pays for a lookup and, when a project has subscribers, one
//! `Arc` per append: filtering, column selection and JSON happen in each
//! subscriber's own task. A subscriber that falls more than
//! `stream.subscriber_buffer_appends` behind loses its place: it is told how
//! many appends it missed and disconnected (tokio's broadcast channel keeps
//! one ring for all of them, so a stuck client holds no memory of its own).
//! The stream shows what this server acknowledged: on PostgreSQL with
//! several servers, each streams its own appends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use parking_lot::Mutex;
use rakam_common::ErrorCode;
use rakam_config::StreamConfig;
use rakam_ingest::{AppendObserver, IngestError};
use rakam_query::{rows_as_json, BatchFilter};
use rakam_store_api::{Append, LogPosition, ProjectId, ProjectSnapshot};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::{Result, ServiceError};

/// `data` of `/stream/subscribe`, as in Rakam.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    /// The collections to stream, each with an optional filter; none means
    /// every collection.
    #[serde(default)]
    pub collections: Vec<StreamCollection>,
    /// The columns of each event to send; none means all.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamCollection {
    pub name: String,
    #[serde(default, alias = "filterExpression")]
    pub filter: Option<String>,
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum StreamFrame {
    /// Events of one append that pass the subscriber's filters, as Rakam
    /// sends them: `[{project, collection, properties}]`.
    Events(Value),
    /// The last frame of a stream that cannot go on (it fell behind, or a
    /// filter does not fit a collection's new schema).
    Failed { code: ErrorCode, message: String },
}

#[derive(Debug)]
pub struct LiveStream {
    config: StreamConfig,
    channels: Mutex<HashMap<ProjectId, broadcast::Sender<Arc<Append>>>>,
    closed: AtomicBool,
}

impl LiveStream {
    pub fn new(config: StreamConfig) -> Self {
        Self {
            config,
            channels: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Ends every subscription (they see the end of the stream) and refuses
    /// new ones: the server is shutting down.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.channels.lock().clear();
    }

    fn receiver(&self, project: &ProjectId) -> Result<broadcast::Receiver<Arc<Append>>> {
        let mut channels = self.channels.lock();
        if self.closed.load(Ordering::SeqCst) {
            return Err(ServiceError::Refused {
                code: ErrorCode::Unavailable,
                message: "the server is shutting down".into(),
            });
        }
        let sender = channels
            .entry(project.clone())
            .or_insert_with(|| broadcast::channel(self.config.subscriber_buffer_appends).0);
        if sender.receiver_count() >= self.config.max_subscribers_per_project {
            return Err(ServiceError::Refused {
                code: ErrorCode::TooManySubscribers,
                message: format!(
                    "the project has {} live-stream subscribers already (stream.max_subscribers_per_project)",
                    sender.receiver_count()
                ),
            });
        }
        Ok(sender.subscribe())
    }

    /// A subscription of `project` as `request` asks, checked against the
    /// project's current schemas.
    pub fn subscribe(
        &self,
        snapshot: &ProjectSnapshot,
        request: StreamRequest,
    ) -> Result<Subscription> {
        let project = &snapshot.project;
        if !self.config.enabled {
            return Err(ServiceError::NotSupported(
                "the live event stream is turned off (stream.enabled)".into(),
            ));
        }
        let mut collections = HashMap::new();
        for (i, collection) in request.collections.iter().enumerate() {
            let name = collection.name.to_ascii_lowercase();
            let filter = match collection.filter.as_deref().map(str::trim) {
                Some(text) if !text.is_empty() => {
                    let mut filter = BatchFilter::new(text).map_err(|e| invalid_filter(i, e))?;
                    if let Some(schema) = snapshot.collections.get(&name) {
                        filter
                            .check(&schema.arrow_schema())
                            .map_err(|e| invalid_filter(i, e))?;
                    }
                    Some(filter)
                }
                _ => None,
            };
            collections.insert(name, filter);
        }
        let receiver = self.receiver(&project.id)?;
        metrics::gauge!("rakam_stream_subscribers").increment(1.0);
        Ok(Subscription {
            receiver,
            matcher: Some(Matcher {
                project_name: project.name.clone(),
                all_collections: request.collections.is_empty(),
                collections,
                columns: request.columns,
            }),
        })
    }
}

fn invalid_filter(index: usize, error: rakam_query::QueryError) -> ServiceError {
    ServiceError::Refused {
        code: ErrorCode::InvalidValue,
        message: format!("collections[{index}].filter is invalid: {error}"),
    }
}

#[async_trait]
impl AppendObserver for LiveStream {
    fn name(&self) -> &str {
        "live-stream"
    }

    fn replays(&self) -> bool {
        false
    }

    async fn checkpoint(&self) -> Result<Option<LogPosition>, IngestError> {
        Ok(None)
    }

    async fn on_append(
        &self,
        _position: Option<LogPosition>,
        append: &Append,
    ) -> Result<(), IngestError> {
        let mut channels = self.channels.lock();
        if let Some(sender) = channels.get(&append.project) {
            if sender.send(Arc::new(append.clone())).is_err() {
                // Nobody listens any more.
                channels.remove(&append.project);
            }
        }
        Ok(())
    }
}

/// One subscriber's view of its project's appends.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Append>>,
    /// `None` once the stream has ended.
    matcher: Option<Matcher>,
}

/// What a subscriber asked for: its collections, filters and columns.
#[derive(Debug)]
struct Matcher {
    project_name: String,
    all_collections: bool,
    collections: HashMap<String, Option<BatchFilter>>,
    columns: Option<Vec<String>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        metrics::gauge!("rakam_stream_subscribers").decrement(1.0);
    }
}

impl Subscription {
    /// The next frame with events in it; `None` when the stream ends.
    pub async fn next(&mut self) -> Option<StreamFrame> {
        loop {
            let mut matcher = self.matcher.take()?;
            let append = match self.receiver.recv().await {
                Ok(append) => append,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("rakam_stream_lagged_total").increment(1);
                    return Some(StreamFrame::Failed {
                        code: ErrorCode::SubscriberLagged,
                        message: format!(
                            "the subscriber fell behind and missed {missed} appends \
                             (stream.subscriber_buffer_appends); subscribe again"
                        ),
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            // Filtering and encoding a large append take milliseconds: not
            // on the workers that serve HTTP.
            let matched = tokio::task::spawn_blocking(move || {
                let events = matcher.events(&append);
                (matcher, events)
            })
            .await;
            match matched {
                Ok((matcher, Ok(events))) => {
                    self.matcher = Some(matcher);
                    if !events.is_empty() {
                        return Some(StreamFrame::Events(Value::Array(events)));
                    }
                }
                Ok((_, Err(failed))) => return Some(failed),
                Err(error) => {
                    return Some(StreamFrame::Failed {
                        code: ErrorCode::Internal,
                        message: format!("the subscriber's task failed: {error}"),
                    })
                }
            }
        }
    }
}

impl Matcher {
    fn events(&mut self, append: &Append) -> Result<Vec<Value>, StreamFrame> {
        let mut events = Vec::new();
        for (collection, batch) in &append.batches {
            let filter = match self.collections.get_mut(collection) {
                Some(filter) => filter.as_mut(),
                None if self.all_collections => None,
                None => continue,
            };
            let kept = match filter {
                Some(filter) => filter.apply(batch).map_err(|error| StreamFrame::Failed {
                    code: ErrorCode::InvalidValue,
                    message: format!("the filter of {collection} no longer fits it: {error}"),
                })?,
                None => batch.clone(),
            };
            self.append_json(collection, &kept, &mut events)
                .map_err(|error| StreamFrame::Failed {
                    code: ErrorCode::Internal,
                    message: format!("cannot encode events of {collection}: {error}"),
                })?;
        }
        Ok(events)
    }

    fn append_json(
        &self,
        collection: &str,
        batch: &RecordBatch,
        out: &mut Vec<Value>,
    ) -> Result<(), rakam_query::QueryError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let schema = batch.schema();
        let indices: Vec<usize> = match &self.columns {
            Some(columns) => columns
                .iter()
                .filter_map(|c| schema.index_of(&c.to_ascii_lowercase()).ok())
                .collect(),
            None => (0..schema.fields().len()).collect(),
        };
        let projected = batch
            .project(&indices)
            .map_err(|e| rakam_query::QueryError::Execution(e.to_string()))?;
        let names: Vec<&String> = indices.iter().map(|i| schema.field(*i).name()).collect();
        for row in rows_as_json(std::slice::from_ref(&projected))? {
            let properties: Map<String, Value> = names
                .iter()
                .map(|name| (*name).clone())
                .zip(row)
                .filter(|(_, value)| !value.is_null())
                .collect();
            out.push(json!({
                "project": self.project_name,
                "collection": collection,
                "properties": properties,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use rakam_store_api::ProjectInfo;

    use super::*;

    fn snapshot() -> ProjectSnapshot {
        ProjectSnapshot {
            project: ProjectInfo {
                name: "shop".into(),
                id: ProjectId::new("p1"),
                created_at_ms: 0,
            },
            version: 1,
            collections: BTreeMap::new(),
        }
    }

    fn append(collection: &str, rows: &[(&str, i64)]) -> Append {
        let schema = Arc::new(Schema::new(vec![
            Field::new("country", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .expect("batch");
        Append {
            project: ProjectId::new("p1"),
            schema_version: 1,
            batches: vec![(collection.to_string(), batch)],
        }
    }

    fn request(value: Value) -> StreamRequest {
        serde_json::from_value(value).expect("request")
    }

    fn stream(buffer: usize, max: usize) -> LiveStream {
        LiveStream::new(StreamConfig {
            enabled: true,
            max_subscribers_per_project: max,
            subscriber_buffer_appends: buffer,
        })
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_filtered_columns_of_its_collections() {
        let live = stream(8, 4);
        let mut subscription = live
            .subscribe(
                &snapshot(),
                request(json!({
                    "collections": [{"name": "PageView", "filter": "country = 'tr' OR n > 5"}],
                    "columns": ["n"]
                })),
            )
            .expect("subscribe");
        live.on_append(None, &append("click", &[("tr", 1)]))
            .await
            .expect("append");
        live.on_append(
            None,
            &append("pageview", &[("tr", 1), ("de", 2), ("us", 9)]),
        )
        .await
        .expect("append");
        match subscription.next().await {
            Some(StreamFrame::Events(events)) => assert_eq!(
                events,
                json!([
                    {"project": "shop", "collection": "pageview", "properties": {"n": 1}},
                    {"project": "shop", "collection": "pageview", "properties": {"n": 9}},
                ])
            ),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_and_cut_off_without_slowing_appends() {
        let live = stream(2, 4);
        let mut slow = live
            .subscribe(&snapshot(), StreamRequest::default())
            .expect("subscribe");
        for n in 0..10 {
            // Never waits for the subscriber.
            live.on_append(None, &append("e", &[("tr", n)]))
                .await
                .expect("append");
        }
        match slow.next().await {
            Some(StreamFrame::Failed { code, message }) => {
                assert_eq!(code, ErrorCode::SubscriberLagged);
                assert!(message.contains("missed 8 appends"), "{message}");
            }
            other => panic!("expected the lag notice, got {other:?}"),
        }
        assert!(slow.next().await.is_none());
    }

    #[tokio::test]
    async fn subscribers_are_bounded_per_project_and_closing_ends_them() {
        let live = stream(2, 1);
        let mut first = live
            .subscribe(&snapshot(), StreamRequest::default())
            .expect("subscribe");
        match live.subscribe(&snapshot(), StreamRequest::default()) {
            Err(error) => assert_eq!(
                rakam_common::ErrorExt::code(&error),
                ErrorCode::TooManySubscribers
            ),
            Ok(_) => panic!("a second subscriber was let in"),
        }
        live.close();
        assert!(first.next().await.is_none());
        assert!(live
            .subscribe(&snapshot(), StreamRequest::default())
            .is_err());
    }

    #[test]
    fn a_filter_that_is_not_one_expression_is_refused() {
        let live = stream(2, 4);
        let bad = request(json!({"collections": [{"name": "e", "filter": "1; DROP TABLE e"}]}));
        assert!(live.subscribe(&snapshot(), bad).is_err());
    }
}
