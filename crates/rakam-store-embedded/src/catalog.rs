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
    hash_key, normalized_project_name, Catalog, EvolveOutcome, KeyKind, ProjectInfo, ProjectKeys,
    Result, StoreError,
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
    id: String,
    created_at_ms: i64,
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
}

#[derive(Debug)]
pub struct FileCatalog {
    path: PathBuf,
    document: RwLock<Arc<CatalogDocument>>,
    keys: RwLock<HashMap<String, (String, KeyKind)>>,
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
            keys: RwLock::new(HashMap::new()),
            write_lock: Mutex::new(()),
            max_columns_per_collection,
        };
        catalog.install(document);
        Ok(catalog)
    }

    fn install(&self, document: CatalogDocument) {
        let mut keys = HashMap::new();
        for (name, project) in &document.projects {
            for (hash, kind) in &project.key_hashes {
                keys.insert(hash.clone(), (name.clone(), *kind));
            }
        }
        *self.document.write() = Arc::new(document);
        *self.keys.write() = keys;
    }

    fn snapshot(&self) -> Arc<CatalogDocument> {
        self.document.read().clone()
    }

    /// Applies `change` to a copy of the document, persists it, then makes
    /// it visible. The change may decline by returning an error.
    fn modify<T>(&self, change: impl FnOnce(&mut CatalogDocument) -> Result<T>) -> Result<T> {
        let _guard = self.write_lock.lock();
        let mut document = (*self.snapshot()).clone();
        let outcome = change(&mut document)?;
        let bytes = serde_json::to_vec_pretty(&document)
            .map_err(|e| StoreError::Data(format!("serialising catalog: {e}")))?;
        write_atomically(&self.path, &bytes)?;
        self.install(document);
        Ok(outcome)
    }

    pub fn project_ids(&self) -> HashMap<String, ProjectInfo> {
        self.snapshot()
            .projects
            .iter()
            .map(|(name, entry)| (entry.id.clone(), entry.info(name)))
            .collect()
    }
}

#[async_trait]
impl Catalog for FileCatalog {
    async fn create_project(&self, name: &str) -> Result<ProjectKeys> {
        let name = normalized_project_name(name)?;
        let keys = ProjectKeys::generate();
        self.modify(|document| {
            if document.projects.contains_key(&name) {
                return Err(StoreError::ProjectExists(name.clone()));
            }
            let entry = ProjectEntry {
                id: uuid::Uuid::new_v4().simple().to_string(),
                created_at_ms: rakam_common::time::now_millis(),
                key_hashes: keys.hashed().to_vec(),
                collections: BTreeMap::new(),
            };
            document.projects.insert(name.clone(), entry);
            Ok(())
        })?;
        Ok(keys)
    }

    async fn list_projects(&self) -> Result<Vec<ProjectInfo>> {
        Ok(self
            .snapshot()
            .projects
            .iter()
            .map(|(name, entry)| entry.info(name))
            .collect())
    }

    async fn project(&self, name: &str) -> Result<Option<ProjectInfo>> {
        Ok(self
            .snapshot()
            .projects
            .get(name)
            .map(|entry| entry.info(name)))
    }

    async fn delete_project(&self, name: &str) -> Result<()> {
        self.modify(|document| match document.projects.remove(name) {
            Some(_) => Ok(()),
            None => Err(StoreError::ProjectNotFound(name.to_string())),
        })
    }

    async fn create_api_keys(&self, project: &str) -> Result<ProjectKeys> {
        let keys = ProjectKeys::generate();
        self.modify(|document| {
            let entry = document
                .projects
                .get_mut(project)
                .ok_or_else(|| StoreError::ProjectNotFound(project.to_string()))?;
            entry.key_hashes.extend(keys.hashed());
            Ok(())
        })?;
        Ok(keys)
    }

    async fn authenticate(&self, key: &str) -> Result<Option<(ProjectInfo, KeyKind)>> {
        let Some((project, kind)) = self.keys.read().get(&hash_key(key)).cloned() else {
            return Ok(None);
        };
        Ok(self
            .snapshot()
            .projects
            .get(&project)
            .map(|entry| (entry.info(&project), kind)))
    }

    async fn collections(&self, project: &str) -> Result<Vec<String>> {
        let document = self.snapshot();
        let entry = document
            .projects
            .get(project)
            .ok_or_else(|| StoreError::ProjectNotFound(project.to_string()))?;
        Ok(entry.collections.keys().cloned().collect())
    }

    async fn schema(
        &self,
        project: &str,
        collection: &str,
    ) -> Result<Option<Arc<CollectionSchema>>> {
        let document = self.snapshot();
        let entry = document
            .projects
            .get(project)
            .ok_or_else(|| StoreError::ProjectNotFound(project.to_string()))?;
        Ok(entry.collections.get(collection).cloned())
    }

    async fn evolve(
        &self,
        project: &str,
        collection: &str,
        requested: &[Column],
    ) -> Result<EvolveOutcome> {
        let current = self.schema(project, collection).await?;
        if let Some(schema) = &current {
            if !schema.needs_evolution(requested) {
                return Ok(EvolveOutcome {
                    schema: schema.clone(),
                    refused: Vec::new(),
                });
            }
        }
        let limit = self.max_columns_per_collection;
        self.modify(|document| {
            let entry = document
                .projects
                .get_mut(project)
                .ok_or_else(|| StoreError::ProjectNotFound(project.to_string()))?;
            let schema = entry
                .collections
                .entry(collection.to_string())
                .or_insert_with(|| Arc::new(CollectionSchema::default()));
            let mut next = (**schema).clone();
            let refused = next.evolve(requested, limit);
            *schema = Arc::new(next);
            Ok(EvolveOutcome {
                schema: schema.clone(),
                refused,
            })
        })
    }
}
