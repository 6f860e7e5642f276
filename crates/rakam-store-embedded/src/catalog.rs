//! The embedded catalog: served from memory, kept on disk as a document
//! and a log of changes (see `catalog_log`). Changes are rare (a project, a
//! key, a new collection or column) and cost the size of what changed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use rakam_model::{CollectionSchema, Column};
use rakam_store_api::{
    hash_key, normalized_project_name, Catalog, CatalogLimits, EvolveOutcome, KeyKind, ProjectId,
    ProjectInfo, ProjectKeys, ProjectSnapshot, Result, StoreError,
};

use crate::catalog_log::{CatalogDocument, CatalogFiles, Change, ProjectEntry};

/// What is read on every request, kept up to date change by change.
#[derive(Debug, Default)]
struct Indexes {
    /// Key hash → project name and key kind.
    keys: HashMap<String, (String, KeyKind)>,
    /// Project id → name.
    names: HashMap<ProjectId, String>,
    snapshots: HashMap<ProjectId, Arc<ProjectSnapshot>>,
}

impl Indexes {
    fn forget(&mut self, entry: &ProjectEntry) {
        for (hash, _) in &entry.key_hashes {
            self.keys.remove(hash);
        }
        self.names.remove(&entry.id);
        self.snapshots.remove(&entry.id);
    }

    fn learn(&mut self, name: &str, entry: &ProjectEntry) {
        for (hash, kind) in &entry.key_hashes {
            self.keys.insert(hash.clone(), (name.to_string(), *kind));
        }
        self.names.insert(entry.id.clone(), name.to_string());
        self.snapshots
            .insert(entry.id.clone(), Arc::new(entry.snapshot(name)));
    }
}

#[derive(Debug)]
pub struct FileCatalog {
    document: RwLock<Arc<CatalogDocument>>,
    indexes: RwLock<Indexes>,
    /// Serialises writers so that read-modify-write cycles never interleave.
    files: Mutex<CatalogFiles>,
    limits: CatalogLimits,
}

impl FileCatalog {
    pub fn open(path: PathBuf, limits: CatalogLimits) -> Result<Self> {
        let (files, document) = CatalogFiles::open(path)?;
        let mut indexes = Indexes::default();
        for (name, entry) in &document.projects {
            indexes.learn(name, entry);
        }
        Ok(Self {
            document: RwLock::new(Arc::new(document)),
            indexes: RwLock::new(indexes),
            files: Mutex::new(files),
            limits,
        })
    }

    fn document(&self) -> Arc<CatalogDocument> {
        self.document.read().clone()
    }

    fn name_of(&self, id: &ProjectId) -> Result<String> {
        self.indexes
            .read()
            .names
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::ProjectNotFound(id.to_string()))
    }

    /// Works out a change from the current document, makes it durable, then
    /// visible. `decide` may decline by returning an error. Only the
    /// changed project is copied and re-indexed.
    fn modify<T>(&self, decide: impl FnOnce(&CatalogDocument) -> Result<(Change, T)>) -> Result<T> {
        let mut files = self.files.lock();
        let current = self.document();
        let (change, outcome) = decide(&current)?;
        let mut document = (*current).clone();
        change.apply(&mut document);
        files.append(change.clone(), &mut document)?;
        let name = change.project();
        let mut indexes = self.indexes.write();
        if let Some(before) = current.projects.get(name) {
            indexes.forget(before);
        }
        if let Some(after) = document.projects.get(name) {
            indexes.learn(name, after);
        }
        *self.document.write() = Arc::new(document);
        Ok(outcome)
    }

    /// A change to one project's entry, by id.
    fn modify_project<T>(
        &self,
        id: &ProjectId,
        decide: impl FnOnce(&str, &ProjectEntry) -> Result<(Change, T)>,
    ) -> Result<T> {
        let name = self.name_of(id)?;
        self.modify(|document| {
            let entry = document
                .projects
                .get(&name)
                .filter(|entry| entry.id == *id)
                .ok_or_else(|| StoreError::ProjectNotFound(id.to_string()))?;
            decide(&name, entry)
        })
    }
}

#[async_trait]
impl Catalog for FileCatalog {
    async fn create_project(&self, name: &str) -> Result<(ProjectInfo, ProjectKeys)> {
        let name = normalized_project_name(name)?;
        let keys = ProjectKeys::generate();
        let info = self.modify(|document| {
            if document.projects.contains_key(&name) {
                return Err(StoreError::ProjectExists(name.clone()));
            }
            let entry = ProjectEntry {
                id: ProjectId::generate(),
                created_at_ms: rakam_common::time::now_millis(),
                version: 1,
                key_hashes: keys.hashed().to_vec(),
                collections: BTreeMap::new(),
            };
            let info = entry.info(&name);
            let change = Change::CreateProject {
                name: name.clone(),
                entry: Arc::new(entry),
            };
            Ok((change, info))
        })?;
        Ok((info, keys))
    }

    async fn list_projects(&self) -> Result<Vec<ProjectInfo>> {
        Ok(self
            .document()
            .projects
            .iter()
            .map(|(name, entry)| entry.info(name))
            .collect())
    }

    async fn project(&self, name: &str) -> Result<Option<ProjectInfo>> {
        let name = name.to_lowercase();
        Ok(self
            .document()
            .projects
            .get(&name)
            .map(|entry| entry.info(&name)))
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        let name = self.name_of(id)?;
        self.modify(|document| match document.projects.get(&name) {
            Some(entry) if entry.id == *id => {
                Ok((Change::DeleteProject { name: name.clone() }, ()))
            }
            _ => Err(StoreError::ProjectNotFound(id.to_string())),
        })
    }

    async fn create_api_keys(&self, id: &ProjectId) -> Result<ProjectKeys> {
        let keys = ProjectKeys::generate();
        self.modify_project(id, |name, _| {
            let change = Change::AddKeys {
                name: name.to_string(),
                key_hashes: keys.hashed().to_vec(),
            };
            Ok((change, ()))
        })?;
        Ok(keys)
    }

    async fn authenticate(&self, key: &str) -> Result<Option<(ProjectInfo, KeyKind)>> {
        let Some((project, kind)) = self.indexes.read().keys.get(&hash_key(key)).cloned() else {
            return Ok(None);
        };
        Ok(self
            .document()
            .projects
            .get(&project)
            .map(|entry| (entry.info(&project), kind)))
    }

    async fn snapshot(&self, id: &ProjectId) -> Result<Arc<ProjectSnapshot>> {
        self.indexes
            .read()
            .snapshots
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::ProjectNotFound(id.to_string()))
    }

    async fn evolve(
        &self,
        id: &ProjectId,
        collection: &str,
        requested: &[Column],
    ) -> Result<EvolveOutcome> {
        let current = self.snapshot(id).await?;
        if let Some(schema) = current.schema(collection) {
            if !schema.needs_evolution(requested) {
                return Ok(EvolveOutcome {
                    schema: schema.clone(),
                    refused: Vec::new(),
                    version: current.version,
                });
            }
        }
        let limits = self.limits;
        self.modify_project(id, |name, entry| {
            let mut next = match entry.collections.get(collection) {
                Some(schema) => (**schema).clone(),
                None => {
                    limits.check_new_collection(collection, entry.collections.len())?;
                    CollectionSchema::default()
                }
            };
            let refused = next.evolve(requested, limits.max_columns_per_collection);
            let schema = Arc::new(next);
            let version = entry.version + 1;
            let change = Change::SetCollection {
                name: name.to_string(),
                collection: collection.to_string(),
                schema: schema.clone(),
                version,
            };
            let outcome = EvolveOutcome {
                schema,
                refused,
                version,
            };
            Ok((change, outcome))
        })
    }
}
