//! Materialized views of the embedded store: per view a directory with its
//! Parquet files and `view.json` (definition, state, live files). A refresh
//! writes a new file, then replaces `view.json` atomically: the rows and the
//! state that says what they cover commit in one rename (ADR 0013). Files a
//! refresh replaced stay until queries that may still read them are over.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use futures::StreamExt;
use parking_lot::Mutex;
use rakam_store_api::{
    ProjectId, Result, StoreError, StoredView, ViewDefinition, ViewState, ViewStore, ViewWrite,
    ViewWriteMode,
};
use serde::{Deserialize, Serialize};

use crate::fs_util::{
    collection_dir_name, collection_of_dir, create_dir_all_synced, sync_dir, write_atomically,
};
use crate::provider::CollectionProvider;

const MANIFEST: &str = "view.json";
/// Replaced files are deleted this long after, when no query can still be
/// reading them (well above any statement timeout).
const RETIRED_GRACE_MS: i64 = 6 * 60 * 60 * 1000;
/// An incremental view with more files than this is merged into one file
/// by its next refresh.
const MAX_FILES: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    definition: ViewDefinition,
    state: ViewState,
    files: Vec<ViewFile>,
    #[serde(default)]
    retired: Vec<(String, i64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ViewFile {
    name: String,
    bytes: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    manifest: Manifest,
    schema: Option<SchemaRef>,
}

type Key = (ProjectId, String);

#[derive(Debug)]
pub struct FileViews {
    root: PathBuf,
    views: Mutex<HashMap<Key, Entry>>,
}

impl FileViews {
    pub(crate) fn open(root: PathBuf) -> Result<Self> {
        create_dir_all_synced(&root)?;
        let mut views = HashMap::new();
        for project in read_dir(&root)? {
            let Some(id) = collection_of_dir(&file_name(&project)) else {
                continue;
            };
            let project_id = ProjectId::new(id);
            for dir in read_dir(&project)? {
                let path = dir.join(MANIFEST);
                if !path.exists() {
                    // A view whose creation did not finish.
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                let manifest: Manifest = read_manifest(&path)?;
                remove_strays(&dir, &manifest);
                let schema = match manifest.files.first() {
                    Some(file) => Some(file_schema(&dir.join(&file.name))?),
                    None => None,
                };
                let key = (project_id.clone(), manifest.definition.table_name.clone());
                views.insert(key, Entry { manifest, schema });
            }
        }
        Ok(Self {
            root,
            views: Mutex::new(views),
        })
    }

    fn dir(&self, project: &ProjectId, table_name: &str) -> PathBuf {
        self.root
            .join(collection_dir_name(project.as_str()))
            .join(collection_dir_name(table_name))
    }

    fn entry(&self, project: &ProjectId, table_name: &str) -> Option<Entry> {
        self.views
            .lock()
            .get(&(project.clone(), table_name.to_string()))
            .cloned()
    }

    fn stored(entry: &Entry) -> StoredView {
        StoredView {
            definition: entry.manifest.definition.clone(),
            state: entry.manifest.state,
            schema: entry.schema.clone(),
        }
    }

    /// Commits `manifest` for the view if its generation is still
    /// `expected` (or the view is new when `expected` is `None`).
    fn commit(
        &self,
        project: &ProjectId,
        manifest: Manifest,
        schema: Option<SchemaRef>,
        expected: Option<u64>,
    ) -> Result<()> {
        let table_name = manifest.definition.table_name.clone();
        let dir = self.dir(project, &table_name);
        let key = (project.clone(), table_name.clone());
        let mut views = self.views.lock();
        match (views.get(&key), expected) {
            (Some(_), None) => return Err(StoreError::ViewExists(table_name)),
            (None, Some(_)) => return Err(StoreError::ViewNotFound(table_name)),
            (Some(entry), Some(generation)) if entry.manifest.state.generation != generation => {
                return Err(StoreError::ViewChanged(table_name))
            }
            _ => {}
        }
        create_dir_all_synced(&dir)?;
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| StoreError::Data(format!("encoding a view manifest: {e}")))?;
        write_atomically(&dir.join(MANIFEST), &bytes)?;
        views.insert(key, Entry { manifest, schema });
        Ok(())
    }
}

#[async_trait]
impl ViewStore for FileViews {
    async fn create(&self, project: &ProjectId, definition: ViewDefinition) -> Result<()> {
        let manifest = Manifest {
            definition,
            state: ViewState::default(),
            files: Vec::new(),
            retired: Vec::new(),
        };
        self.commit(project, manifest, None, None)
    }

    async fn list(&self, project: &ProjectId) -> Result<Vec<StoredView>> {
        let views = self.views.lock();
        let mut list: Vec<StoredView> = views
            .iter()
            .filter(|((id, _), _)| id == project)
            .map(|(_, entry)| Self::stored(entry))
            .collect();
        list.sort_by(|a, b| a.definition.table_name.cmp(&b.definition.table_name));
        Ok(list)
    }

    async fn list_all(&self) -> Result<Vec<(ProjectId, StoredView)>> {
        Ok(self
            .views
            .lock()
            .iter()
            .map(|((project, _), entry)| (project.clone(), Self::stored(entry)))
            .collect())
    }

    async fn get(&self, project: &ProjectId, table_name: &str) -> Result<Option<StoredView>> {
        Ok(self.entry(project, table_name).as_ref().map(Self::stored))
    }

    async fn change(&self, project: &ProjectId, definition: ViewDefinition) -> Result<()> {
        let Some(entry) = self.entry(project, &definition.table_name) else {
            return Err(StoreError::ViewNotFound(definition.table_name));
        };
        let mut manifest = entry.manifest;
        let expected = manifest.state.generation;
        manifest.definition = definition;
        self.commit(project, manifest, entry.schema, Some(expected))
    }

    async fn delete(&self, project: &ProjectId, table_name: &str) -> Result<bool> {
        let removed = self
            .views
            .lock()
            .remove(&(project.clone(), table_name.to_string()));
        if removed.is_none() {
            return Ok(false);
        }
        let dir = self.dir(project, table_name);
        // The manifest goes first: a crash after it leaves a directory that
        // start-up removes, never a half-deleted view.
        let _ = std::fs::remove_file(dir.join(MANIFEST));
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            let _ = sync_dir(parent);
        }
        Ok(true)
    }

    async fn write(
        &self,
        project: &ProjectId,
        table_name: &str,
        write: ViewWrite,
    ) -> Result<ViewState> {
        let Some(entry) = self.entry(project, table_name) else {
            return Err(StoreError::ViewNotFound(table_name.to_string()));
        };
        if entry.manifest.state.generation != write.expected_generation {
            return Err(StoreError::ViewChanged(table_name.to_string()));
        }
        let dir = self.dir(project, table_name);
        create_dir_all_synced(&dir)?;
        let generation = write.state.generation;
        let name = format!("{generation:020}.parquet");
        let previous_schema = entry.schema.clone();
        let appending = write.mode == ViewWriteMode::Append;
        if appending && !previous_schema.is_some_and(|s| same_columns(&s, &write.schema)) {
            return Err(StoreError::ViewColumnsChanged(table_name.to_string()));
        }
        let mut files = if appending {
            entry.manifest.files.clone()
        } else {
            Vec::new()
        };
        let merge = if appending && files.len() >= MAX_FILES {
            std::mem::take(&mut files)
        } else {
            Vec::new()
        };
        let schema = all_nullable(&write.schema);
        // An append of no rows (a refresh of an idle collection) adds no
        // file: only the state moves on.
        let (written, rows) = write_file(
            &dir,
            &name,
            schema.clone(),
            &merge,
            write.batches,
            appending,
        )
        .await
        .inspect_err(|_| {
            let _ = std::fs::remove_file(dir.join(format!("{name}.tmp")));
        })?;
        files.extend(written);
        let now = rakam_common::time::now_millis();
        let mut retired = entry.manifest.retired.clone();
        let replaced: Vec<&ViewFile> = if appending {
            merge.iter().collect()
        } else {
            entry.manifest.files.iter().collect()
        };
        retired.extend(replaced.into_iter().map(|file| (file.name.clone(), now)));
        let (expired, retired): (Vec<_>, Vec<_>) = retired
            .into_iter()
            .partition(|(_, at)| now - at > RETIRED_GRACE_MS);
        let mut state = write.state;
        state.rows = if appending {
            entry.manifest.state.rows + rows
        } else {
            rows
        };
        let manifest = Manifest {
            definition: entry.manifest.definition.clone(),
            state,
            files,
            retired,
        };
        self.commit(
            project,
            manifest,
            Some(schema),
            Some(write.expected_generation),
        )
        .inspect_err(|_| {
            let _ = std::fs::remove_file(dir.join(&name));
        })?;
        for (file, _) in expired {
            let _ = std::fs::remove_file(dir.join(file));
        }
        Ok(state)
    }

    async fn table_provider(
        &self,
        project: &ProjectId,
        table_name: &str,
    ) -> Result<Option<(Arc<dyn TableProvider>, ViewState)>> {
        let Some(entry) = self.entry(project, table_name) else {
            return Ok(None);
        };
        let Some(schema) = entry.schema else {
            return Ok(None);
        };
        let dir = self.dir(project, table_name);
        let files = entry
            .manifest
            .files
            .iter()
            .map(|file| (dir.join(&file.name), file.bytes))
            .collect();
        let provider = Arc::new(CollectionProvider::new(schema, files, Vec::new()));
        Ok(Some((provider, entry.manifest.state)))
    }

    async fn delete_project(&self, project: &ProjectId) -> Result<()> {
        self.views.lock().retain(|(id, _), _| id != project);
        let dir = self.root.join(collection_dir_name(project.as_str()));
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}

/// Writes the rows of `merge` (earlier files) and then of `batches` into
/// one new file; returns it (none for no rows when `skip_empty`) and the
/// number of rows.
async fn write_file(
    dir: &Path,
    name: &str,
    schema: SchemaRef,
    merge: &[ViewFile],
    mut batches: futures::stream::BoxStream<'static, Result<RecordBatch>>,
    skip_empty: bool,
) -> Result<(Option<ViewFile>, u64)> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let context = format!("writing {}", path.display());
    let file = File::create(&temporary).map_err(StoreError::io(context.clone()))?;
    let mut writer = Some(
        ArrowWriter::try_new(file, schema.clone(), None)
            .map_err(|e| StoreError::Data(e.to_string()))?,
    );
    let mut rows = 0_u64;
    for earlier in merge {
        let source = dir.join(&earlier.name);
        let mut active = writer
            .take()
            .ok_or_else(|| StoreError::Data("writer lost".into()))?;
        let target = schema.clone();
        let copied = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut count = 0_u64;
            for batch in read_file(&source)? {
                let batch = RecordBatch::try_new(target.clone(), batch.columns().to_vec())?;
                count += batch.num_rows() as u64;
                active
                    .write(&batch)
                    .map_err(|e| StoreError::Data(e.to_string()))?;
            }
            Ok((active, count))
        })
        .await
        .map_err(|e| StoreError::Data(e.to_string()))??;
        writer = Some(copied.0);
        rows += copied.1;
    }
    while let Some(batch) = batches.next().await {
        let batch = RecordBatch::try_new(schema.clone(), batch?.columns().to_vec())?;
        rows += batch.num_rows() as u64;
        let mut active = writer
            .take()
            .ok_or_else(|| StoreError::Data("writer lost".into()))?;
        writer = Some(
            tokio::task::spawn_blocking(move || -> Result<_> {
                active
                    .write(&batch)
                    .map_err(|e| StoreError::Data(e.to_string()))?;
                Ok(active)
            })
            .await
            .map_err(|e| StoreError::Data(e.to_string()))??,
        );
    }
    let active = writer
        .take()
        .ok_or_else(|| StoreError::Data("writer lost".into()))?;
    if rows == 0 && skip_empty {
        drop(active);
        let _ = std::fs::remove_file(&temporary);
        return Ok((None, 0));
    }
    let finished_path = path.clone();
    let bytes = tokio::task::spawn_blocking(move || -> Result<u64> {
        let file = active
            .into_inner()
            .map_err(|e| StoreError::Data(e.to_string()))?;
        file.sync_all().map_err(StoreError::io(context.clone()))?;
        drop(file);
        std::fs::rename(&temporary, &finished_path).map_err(StoreError::io(context.clone()))?;
        crate::fs_util::sync_parent_dir(&finished_path)?;
        Ok(std::fs::metadata(&finished_path)
            .map_err(StoreError::io(context))?
            .len())
    })
    .await
    .map_err(|e| StoreError::Data(e.to_string()))??;
    Ok((
        Some(ViewFile {
            name: name.to_string(),
            bytes,
        }),
        rows,
    ))
}

/// Views store every column as nullable: an incremental refresh may
/// find nulls where the first one found none.
fn all_nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| field.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Names and types alike (nullability and metadata aside).
fn same_columns(left: &SchemaRef, right: &SchemaRef) -> bool {
    left.fields().len() == right.fields().len()
        && left
            .fields()
            .iter()
            .zip(right.fields())
            .all(|(l, r)| l.name() == r.name() && l.data_type() == r.data_type())
}

fn read_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(StoreError::io(format!("reading {}", path.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.build())
        .map_err(|e| StoreError::Data(format!("{}: {e}", path.display())))?;
    reader
        .map(|batch| batch.map_err(StoreError::from))
        .collect()
}

fn file_schema(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(StoreError::io(format!("reading {}", path.display())))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| StoreError::Data(format!("{}: {e}", path.display())))?;
    Ok(builder.schema().clone())
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes =
        std::fs::read(path).map_err(StoreError::io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Data(format!("{}: {e}", path.display())))
}

/// Files a refresh wrote but never committed (it crashed first).
fn remove_strays(dir: &Path, manifest: &Manifest) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let known = name == MANIFEST
            || manifest.files.iter().any(|file| file.name == name)
            || manifest.retired.iter().any(|(file, _)| *file == name);
        if !known {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))?;
    Ok(entries
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.path())
        .collect())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default()
}
