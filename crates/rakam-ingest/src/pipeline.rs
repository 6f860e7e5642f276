use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rakam_model::{infer_type, widening_for, CollectionSchema, Column, FieldType};
use rakam_store_api::{Append, Catalog, EventSink, ProjectSnapshot};

use crate::build::{build_batch, EVENTS_PER_BUILD};
use crate::mapper::{MappedEvent, Mapper};
use crate::observer::{AppendObserver, Observers};
use crate::prepare::{prepare, PreparedEvent};
use crate::user_column::settle_user_column;
use crate::{Atomicity, EventInput, IngestError, IngestLimits, RequestContext, TypedBatches};

#[derive(Debug, Default)]
pub struct IngestOutcome {
    pub stored: usize,
    /// Events that were not stored, by their index in the request.
    pub failed: Vec<(usize, IngestError)>,
    /// Stored events that kept at least one value in `_unmapped`.
    pub unmapped_rows: usize,
}

/// From decoded events to durable rows, with no HTTP in it: prepare (names,
/// `_time`, clock skew, limits) → mappers → evolve → build Arrow → sink →
/// append observers.
#[derive(Debug, Clone)]
pub struct Pipeline {
    catalog: Arc<dyn Catalog>,
    sink: Arc<dyn EventSink>,
    limits: IngestLimits,
    mappers: Vec<Arc<dyn Mapper>>,
    observers: Observers,
}

impl Pipeline {
    pub fn new(catalog: Arc<dyn Catalog>, sink: Arc<dyn EventSink>, limits: IngestLimits) -> Self {
        Self {
            catalog,
            sink,
            limits,
            mappers: Vec::new(),
            observers: Observers::default(),
        }
    }

    /// Adds a mapper after those already added.
    pub fn with_mapper(mut self, mapper: Arc<dyn Mapper>) -> Self {
        self.mappers.push(mapper);
        self
    }

    pub fn with_observer(mut self, observer: Arc<dyn AppendObserver>) -> Self {
        self.observers.add(observer);
        self
    }

    /// Replays to the observers what they missed while the server was
    /// down; call once, before taking requests. Returns the appends replayed.
    pub async fn start(&self) -> Result<usize, IngestError> {
        self.observers.start(self.sink.as_ref()).await
    }

    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Stores the events of one request as one durable append. With
    /// `AllOrNothing`, one invalid event refuses the request before anything
    /// is stored; with `PerEvent`, the others are stored and the invalid ones
    /// reported by index. Returns once the stored events are durable.
    pub async fn ingest(
        &self,
        project: &Arc<ProjectSnapshot>,
        inputs: Vec<Result<EventInput, IngestError>>,
        context: &RequestContext,
        atomicity: Atomicity,
    ) -> Result<IngestOutcome, IngestError> {
        let server_time_ms = rakam_common::time::now_millis();
        let limits = self.limits.clone();
        let mappers = self.mappers.clone();
        let request = context.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            prepare_all(inputs, server_time_ms, &limits, &request, &mappers)
        })
        .await
        .map_err(|e| IngestError::Malformed(format!("decoder task failed: {e}")))?;
        let mut outcome = IngestOutcome::default();
        let mut valid = Vec::with_capacity(prepared.len());
        for (index, event) in prepared.into_iter().enumerate() {
            match event {
                Ok(event) => valid.push(event),
                Err(error) if atomicity == Atomicity::AllOrNothing => {
                    return Err(error.at(format!("event {index}")))
                }
                Err(error) => outcome.failed.push((index, error)),
            }
        }
        if valid.is_empty() {
            return Ok(outcome);
        }
        outcome.stored = valid.len();
        let (batches, version, unmapped_rows) = self.build(project, valid, server_time_ms).await?;
        outcome.unmapped_rows = unmapped_rows;
        self.append(Append {
            project: project.project.id.clone(),
            schema_version: version,
            batches,
        })
        .await?;
        Ok(outcome)
    }

    /// Whether requests may take the typed decoder: mappers work on
    /// prepared events, which it does not make.
    pub fn takes_typed(&self) -> bool {
        self.mappers.is_empty()
    }

    /// Stores what the typed decoder built from `project`'s schemas, as one
    /// durable append; returns once it is durable.
    pub async fn ingest_typed(
        &self,
        project: &ProjectSnapshot,
        typed: TypedBatches,
    ) -> Result<IngestOutcome, IngestError> {
        self.append(Append {
            project: project.project.id.clone(),
            schema_version: project.version,
            batches: typed.batches,
        })
        .await?;
        Ok(IngestOutcome {
            stored: typed.events,
            ..IngestOutcome::default()
        })
    }

    async fn append(&self, append: Append) -> Result<(), IngestError> {
        if self.observers.is_empty() {
            self.sink.append(append).await?;
            return Ok(());
        }
        if !self.observers.any_replays() {
            // Live-only observers (the live stream) may miss an append whose
            // client went away: no task of its own per request.
            let position = self.sink.append(append.clone()).await?;
            self.observers
                .appended(self.sink.as_ref(), position, &append)
                .await;
            return Ok(());
        }
        // The append and the observers' delivery finish together even when
        // the client goes away mid-request.
        let (sink, observers) = (self.sink.clone(), self.observers.clone());
        tokio::spawn(async move {
            let position = sink.append(append.clone()).await?;
            observers.appended(sink.as_ref(), position, &append).await;
            Ok::<_, IngestError>(())
        })
        .await
        .map_err(|e| IngestError::Malformed(format!("append task failed: {e}")))??;
        Ok(())
    }

    /// Evolves the schemas the events need, then builds their batches, a
    /// bounded number of events at a time.
    async fn build(
        &self,
        project: &Arc<ProjectSnapshot>,
        events: Vec<PreparedEvent>,
        server_time_ms: i64,
    ) -> Result<
        (
            Vec<(String, datafusion::arrow::record_batch::RecordBatch)>,
            u64,
            usize,
        ),
        IngestError,
    > {
        let mut by_collection: BTreeMap<String, Vec<PreparedEvent>> = BTreeMap::new();
        for event in events {
            by_collection
                .entry(event.collection.clone())
                .or_default()
                .push(event);
        }
        let mut version = project.version;
        let mut groups = Vec::with_capacity(by_collection.len());
        for (collection, events) in by_collection {
            let (schema, evolved_version) =
                self.evolved_schema(project, &collection, &events).await?;
            version = version.max(evolved_version);
            groups.push((collection, schema, events));
        }
        let built = tokio::task::spawn_blocking(move || {
            let mut built = Vec::new();
            for (collection, schema, mut events) in groups {
                while !events.is_empty() {
                    let rest = events.split_off(events.len().min(EVENTS_PER_BUILD));
                    let chunk = std::mem::replace(&mut events, rest);
                    built.push((
                        collection.clone(),
                        build_batch(&schema, chunk, server_time_ms)?,
                    ));
                }
            }
            Ok::<_, IngestError>(built)
        })
        .await
        .map_err(|e| IngestError::Malformed(format!("build task failed: {e}")))??;
        let unmapped_rows = built.iter().map(|(_, built)| built.unmapped_rows).sum();
        let batches = built
            .into_iter()
            .map(|(collection, built)| (collection, built.batch))
            .collect();
        Ok((batches, version, unmapped_rows))
    }

    /// Commits the columns these events need (new fields, widenings, the
    /// project's `_user`) before any of them is written, and returns the
    /// schema to build with and the version it belongs to.
    async fn evolved_schema(
        &self,
        project: &Arc<ProjectSnapshot>,
        collection: &str,
        events: &[PreparedEvent],
    ) -> Result<(Arc<CollectionSchema>, u64), IngestError> {
        let current = project.schema(collection);
        let mut requested = plan_columns(current.map(|s| &**s), events);
        settle_user_column(project, current.map(|s| &**s), &mut requested);
        match current {
            Some(schema) if requested.is_empty() => Ok((schema.clone(), project.version)),
            _ => {
                let outcome = self
                    .catalog
                    .evolve(project.id(), collection, &requested)
                    .await?;
                Ok((outcome.schema, outcome.version))
            }
        }
    }
}

pub(crate) fn prepare_all(
    inputs: Vec<Result<EventInput, IngestError>>,
    server_time_ms: i64,
    limits: &IngestLimits,
    request: &RequestContext,
    mappers: &[Arc<dyn Mapper>],
) -> Vec<Result<PreparedEvent, IngestError>> {
    let prepare_one = |input: Result<EventInput, IngestError>| {
        let mut event = input.and_then(|i| prepare(i, server_time_ms, limits, request))?;
        for mapper in mappers {
            mapper.map(&mut MappedEvent { event: &mut event })?;
        }
        Ok(event)
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    if workers < 2 || inputs.len() < 20_000 {
        return inputs.into_iter().map(prepare_one).collect();
    }
    let chunk_size = inputs.len().div_ceil(workers);
    let mut chunks: Vec<Vec<_>> = Vec::new();
    let mut inputs = inputs.into_iter().peekable();
    while inputs.peek().is_some() {
        chunks.push(inputs.by_ref().take(chunk_size).collect());
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || chunk.into_iter().map(prepare_one).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    vec![Err(IngestError::Malformed(
                        "a decoder thread failed".into(),
                    ))]
                })
            })
            .collect()
    })
}

/// The columns to add or widen for these events: a new field takes the type
/// of its first value that has one; a fraction in a LONG column widens it.
pub(crate) fn plan_columns(
    current: Option<&CollectionSchema>,
    events: &[PreparedEvent],
) -> Vec<Column> {
    let mut requested: Vec<Column> = Vec::new();
    let mut positions: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    let existing_types: HashMap<&str, &FieldType, foldhash::fast::RandomState> = current
        .map(|schema| {
            schema
                .columns
                .iter()
                .map(|column| (column.name.as_str(), &column.field_type))
                .collect()
        })
        .unwrap_or_default();
    for event in events {
        for field in &event.fields {
            if let Some(&position) = positions.get(field.name.as_str()) {
                let column = &mut requested[position];
                if let Some(widened) = widening_for(&field.value, &column.field_type) {
                    column.field_type = widened;
                }
                continue;
            }
            let existing: Option<&FieldType> = existing_types.get(field.name.as_str()).copied();
            let wanted = match existing {
                Some(existing_type) => widening_for(&field.value, existing_type),
                None => infer_type(&field.value),
            };
            if let Some(field_type) = wanted {
                positions.insert(field.name.as_str(), requested.len());
                requested.push(Column {
                    name: field.name.clone(),
                    field_type,
                });
            }
        }
    }
    requested
}
