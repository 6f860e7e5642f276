use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rakam_model::{infer_type, widening_for, CollectionSchema, Column, FieldType};
use rakam_store_api::{Catalog, EventStore, ProjectInfo};

use crate::build::build_batch;
use crate::prepare::{prepare, PreparedEvent};
use crate::{EventInput, IngestError, IngestLimits};

/// Events per append: bounds the memory of one build and the size of one
/// WAL record while keeping fsyncs rare.
const EVENTS_PER_APPEND: usize = 100_000;

#[derive(Debug, Default)]
pub struct IngestOutcome {
    pub stored: usize,
    /// Events that were not stored, by their index in the request.
    pub failed: Vec<(usize, IngestError)>,
    /// Stored events that kept at least one value in `_unmapped`.
    pub unmapped_rows: usize,
}

#[derive(Debug, Clone)]
pub struct Ingester {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn EventStore>,
    limits: IngestLimits,
}

impl Ingester {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn EventStore>,
        limits: IngestLimits,
    ) -> Self {
        Self {
            catalog,
            store,
            limits,
        }
    }

    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Stores every valid event and reports the others by index. With
    /// `all_or_nothing`, one invalid event rejects the request before
    /// anything is stored. Returns once the stored events are durable.
    pub async fn ingest(
        &self,
        project: &ProjectInfo,
        inputs: Vec<Result<EventInput, IngestError>>,
        all_or_nothing: bool,
    ) -> Result<IngestOutcome, IngestError> {
        let server_time_ms = rakam_common::time::now_millis();
        let limits = self.limits.clone();
        let prepared =
            tokio::task::spawn_blocking(move || prepare_all(inputs, server_time_ms, &limits))
                .await
                .map_err(|e| IngestError::Malformed(format!("decoder task failed: {e}")))?;
        let mut outcome = IngestOutcome::default();
        let mut valid = Vec::with_capacity(prepared.len());
        for (index, event) in prepared.into_iter().enumerate() {
            match event {
                Ok(event) => valid.push(event),
                Err(error) if all_or_nothing => return Err(error.at(format!("event {index}"))),
                Err(error) => outcome.failed.push((index, error)),
            }
        }
        while !valid.is_empty() {
            let rest = valid.split_off(valid.len().min(EVENTS_PER_APPEND));
            let chunk = std::mem::replace(&mut valid, rest);
            let stored = chunk.len();
            outcome.unmapped_rows += self.store_chunk(project, chunk, server_time_ms).await?;
            outcome.stored += stored;
        }
        Ok(outcome)
    }

    async fn store_chunk(
        &self,
        project: &ProjectInfo,
        events: Vec<PreparedEvent>,
        server_time_ms: i64,
    ) -> Result<usize, IngestError> {
        let mut by_collection: BTreeMap<String, Vec<PreparedEvent>> = BTreeMap::new();
        for event in events {
            by_collection
                .entry(event.collection.clone())
                .or_default()
                .push(event);
        }
        let mut groups = Vec::with_capacity(by_collection.len());
        for (collection, events) in by_collection {
            let schema = self.evolved_schema(project, &collection, &events).await?;
            groups.push((collection, schema, events));
        }
        let built = tokio::task::spawn_blocking(move || {
            groups
                .into_iter()
                .map(|(collection, schema, events)| {
                    build_batch(&schema, events, server_time_ms).map(|built| (collection, built))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| IngestError::Malformed(format!("build task failed: {e}")))??;
        let unmapped_rows = built.iter().map(|(_, built)| built.unmapped_rows).sum();
        let batches = built
            .into_iter()
            .map(|(collection, built)| (collection, built.batch))
            .collect();
        self.store.append(project, batches).await?;
        Ok(unmapped_rows)
    }

    /// Commits the columns these events need (new fields, widenings) before
    /// any of them is written, and returns the schema to build with.
    async fn evolved_schema(
        &self,
        project: &ProjectInfo,
        collection: &str,
        events: &[PreparedEvent],
    ) -> Result<Arc<CollectionSchema>, IngestError> {
        let current = self.catalog.schema(&project.name, collection).await?;
        let requested = plan_columns(current.as_deref(), events);
        match current {
            Some(schema) if requested.is_empty() => Ok(schema),
            _ => Ok(self
                .catalog
                .evolve(&project.name, collection, &requested)
                .await?
                .schema),
        }
    }
}

fn prepare_all(
    inputs: Vec<Result<EventInput, IngestError>>,
    server_time_ms: i64,
    limits: &IngestLimits,
) -> Vec<Result<PreparedEvent, IngestError>> {
    let prepare_one = |input: Result<EventInput, IngestError>| {
        input.and_then(|i| prepare(i, server_time_ms, limits))
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
fn plan_columns(current: Option<&CollectionSchema>, events: &[PreparedEvent]) -> Vec<Column> {
    let mut requested: Vec<Column> = Vec::new();
    let mut positions: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    for event in events {
        for field in &event.fields {
            if let Some(&position) = positions.get(field.name.as_str()) {
                let column = &mut requested[position];
                if let Some(widened) = widening_for(&field.value, &column.field_type) {
                    column.field_type = widened;
                }
                continue;
            }
            let existing: Option<&FieldType> =
                current.and_then(|schema| schema.column_type(&field.name));
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
