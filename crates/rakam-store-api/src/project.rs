use std::collections::BTreeMap;
use std::sync::Arc;

use rakam_model::CollectionSchema;
use serde::{Deserialize, Serialize};

/// A project's identity in every part of a backend. Fresh per creation, so
/// data of a deleted project can never reappear in a new one of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A new random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectInfo {
    pub name: String,
    pub id: ProjectId,
    pub created_at_ms: i64,
}

/// A project name as every backend stores it: lower-cased, and only
/// `[a-z0-9_]`, at most 64 bytes (it names directories and schemas).
pub fn normalized_project_name(name: &str) -> crate::Result<String> {
    let name = name.to_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name)
    } else {
        Err(crate::StoreError::InvalidProjectName(name))
    }
}

/// A project's metadata at one version: what one request reads, once.
///
/// Ingest, the query session and the analyzer of a request share one
/// snapshot, so they agree on the collections and their columns. The version
/// grows with every schema change of the project.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSnapshot {
    pub project: ProjectInfo,
    pub version: u64,
    pub collections: BTreeMap<String, Arc<CollectionSchema>>,
}

impl ProjectSnapshot {
    pub fn id(&self) -> &ProjectId {
        &self.project.id
    }

    pub fn schema(&self, collection: &str) -> Option<&Arc<CollectionSchema>> {
        self.collections.get(collection)
    }

    /// Collection names, in name order.
    pub fn collection_names(&self) -> Vec<String> {
        self.collections.keys().cloned().collect()
    }
}
