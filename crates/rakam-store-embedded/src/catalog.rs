//! The embedded catalog: one JSON document, replaced atomically on every
//! change. Changes are rare (a project, a key, a new column), reads are
//! served from memory.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use rakam_model::{CollectionSchema, Column};
use rakam_store_api::{
    hash_key, normalized_project_name, Catalog, EvolveOutcome, KeyKind, ProjectId, ProjectInfo,
    ProjectKeys, ProjectSnapshot, Result, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::fs_util::write_atomically;

const CATALOG_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CatalogDocument {
    version: u32,
    projects: BTreeMap<String, ProjectEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProjectEntry {
    id: ProjectId,
    created_at_ms: i64,
    /// Grows with every schema change; older catalogs start at 0.
    #[serde(default)]
    version: u64,
    /// SHA-256 of each key, and its kind.
    key_hashes: Vec<(String, KeyKind)>,
    collections: BTreeMap<String, Arc<CollectionSchema>>,
}

impl ProjectEntry {
    fn info(&self, name: &str) -> ProjectInfo {
        ProjectInfo {
            name: name.to_string(),
            id: self.id.clone(),
            created_at_ms: self.created_at_ms,
        }
    }

    fn snapshot(&self, name: &str) -> ProjectSnapshot {
        ProjectSnapshot {
            project: self.info(name),
            version: self.version,
            collections: self.collections.clone(),
        }
    }
}

/// What is read on every request, rebuilt on every change.
#[derive(Debug, Default)]
struct Indexes {
    /// Key hash → project name and key kind.
    keys: HashMap<String, (String, KeyKind)>,
    /// Project id → name.
    names: HashMap<ProjectId, String>,
    snapshots: HashMap<ProjectId, Arc<ProjectSnapshot>>,
}

#[derive(Debug)]
pub struct FileCatalog {
    path: PathBuf,
    document: RwLock<Arc<CatalogDocument>>,
    indexes: RwLock<Indexes>,
    /// Serialises writers so that read-modify-write cycles never interleave.
    write_lock: Mutex<()>,
    max_columns_per_collection: usize,
}

impl FileCatalog {
    pub fn open(path: PathBuf, max_columns_per_collection: usize) -> Result<Self> {
        let document = match std::fs::read(&path) {
            Ok(bytes) => {
                let document: CatalogDocument = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Data(format!("catalog {} is corrupt: {e}", path.display()))
                })?;
                if document.version != CATALOG_FORMAT_VERSION {
                    return Err(StoreError::Data(format!(
                        "catalog format {} is not supported (expected {CATALOG_FORMAT_VERSION})",
                        document.version
                    )));
                }
                document
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => CatalogDocument {
                version: CATALOG_FORMAT_VERSION,
                projects: BTreeMap::new(),
            },
            Err(error) => return Err(StoreError::io(format!("reading {}", path.display()))(error)),
        };
        let catalog = Self {
            path,
            document: RwLock::new(Arc::new(CatalogDocument::default())),
            indexes: RwLock::new(Indexes::default()),
            write_lock: Mutex::new(()),
            max_columns_per_collection,
        };
        catalog.install(document);
        Ok(catalog)
    }

    fn install(&self, document: CatalogDocument) {
        let mut indexes = Indexes::default();
        for (name, project) in &document.projects {
            for (hash, kind) in &project.key_hashes {
                indexes.keys.insert(hash.clone(), (name.clone(), *kind));
            }
            indexes.names.insert(project.id.clone(), name.clone());
            indexes
                .snapshots
                .insert(project.id.clone(), Arc::new(project.snapshot(name)));
        }
        *self.document.write() = Arc::new(document);
        *self.indexes.write() = indexes;
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

    /// Applies `change` to a copy of the document, persists it, then makes
    /// it visible. The change may decline by returning an error.
    fn modify<T>(&self, change: impl FnOnce(&mut CatalogDocument) -> Result<T>) -> Result<T> {
        let _guard = self.write_lock.lock();
        let mut document = (*self.document()).clone();
        let outcome = change(&mut document)?;
        let bytes = serde_json::to_vec_pretty(&document)
            .map_err(|e| StoreError::Data(format!("serialising catalog: {e}")))?;
        write_atomically(&self.path, &bytes)?;
        self.install(document);
        Ok(outcome)
    }

    /// Applies `change` to one project's entry, by id.
    fn modify_project<T>(
        &self,
        id: &ProjectId,
        change: impl FnOnce(&mut ProjectEntry) -> Result<T>,
    ) -> Result<T> {
        let name = self.name_of(id)?;
        self.modify(|document| {
            let entry = document
                .projects
                .get_mut(&name)
                .filter(|entry| entry.id == *id)
                .ok_or_else(|| StoreError::ProjectNotFound(id.to_string()))?;
            change(entry)
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
            document.projects.insert(name.clone(), entry);
            Ok(info)
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
                document.projects.remove(&name);
                Ok(())
            }
            _ => Err(StoreError::ProjectNotFound(id.to_string())),
        })
    }

    async fn create_api_keys(&self, id: &ProjectId) -> Result<ProjectKeys> {
        let keys = ProjectKeys::generate();
        self.modify_project(id, |entry| {
            entry.key_hashes.extend(keys.hashed());
            Ok(())
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
        let limit = self.max_columns_per_collection;
        self.modify_project(id, |entry| {
            let schema = entry
                .collections
                .entry(collection.to_string())
                .or_insert_with(|| Arc::new(CollectionSchema::default()));
            let mut next = (**schema).clone();
            let refused = next.evolve(requested, limit);
            *schema = Arc::new(next);
            let schema = schema.clone();
            entry.version += 1;
            Ok(EvolveOutcome {
                schema,
                refused,
                version: entry.version,
            })
        })
    }
}
