use std::sync::Arc;

use async_trait::async_trait;
use rakam_model::{CollectionSchema, Column};

use crate::{KeyKind, ProjectId, ProjectInfo, ProjectKeys, ProjectSnapshot, Result};

/// The limits every catalog holds a project to (`limits.*` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogLimits {
    /// Columns beyond it are refused; their values go to `_unmapped`.
    pub max_columns_per_collection: usize,
    /// A new collection beyond it is refused with an error naming the limit.
    pub max_collections_per_project: usize,
}

impl From<&rakam_config::LimitsConfig> for CatalogLimits {
    fn from(limits: &rakam_config::LimitsConfig) -> Self {
        Self {
            max_columns_per_collection: limits.max_columns_per_collection,
            max_collections_per_project: limits.max_collections_per_project,
        }
    }
}

impl Default for CatalogLimits {
    fn default() -> Self {
        Self::from(&rakam_config::LimitsConfig::default())
    }
}

impl CatalogLimits {
    /// Whether a project that has `existing` collections may get one more.
    pub fn check_new_collection(&self, collection: &str, existing: usize) -> Result<()> {
        if existing >= self.max_collections_per_project {
            return Err(crate::StoreError::TooManyCollections {
                collection: collection.to_string(),
                limit: self.max_collections_per_project,
            });
        }
        Ok(())
    }
}

/// What [`Catalog::evolve`] decided.
#[derive(Debug, Clone)]
pub struct EvolveOutcome {
    pub schema: Arc<CollectionSchema>,
    /// Requested columns that were not added because of the column limit;
    /// their values go to `_unmapped`.
    pub refused: Vec<String>,
    /// The project's metadata version once the change committed.
    pub version: u64,
}

/// Projects, their keys and their collections' schemas: one part of a
/// backend, keyed by [`ProjectId`], shared by any sink and table source.
///
/// Schema changes commit here before any row that needs them is written, so
/// every batch handed to a sink fits the schema it is read with.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Creates a project and returns it with its first key triple.
    async fn create_project(&self, name: &str) -> Result<(ProjectInfo, ProjectKeys)>;
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>>;
    /// The project of this name (lower-cased), if it exists.
    async fn project(&self, name: &str) -> Result<Option<ProjectInfo>>;
    /// Removes the project, its keys and its schemas.
    async fn delete_project(&self, project: &ProjectId) -> Result<()>;
    /// Adds another key triple to a project.
    async fn create_api_keys(&self, project: &ProjectId) -> Result<ProjectKeys>;
    /// The project and kind a key belongs to; `None` for unknown keys.
    async fn authenticate(&self, key: &str) -> Result<Option<(ProjectInfo, KeyKind)>>;
    /// The project's collections and schemas at their current version. A
    /// catalog shared by several nodes caches snapshots and refreshes one
    /// when its version changes, so an unchanged project costs no round trip.
    async fn snapshot(&self, project: &ProjectId) -> Result<Arc<ProjectSnapshot>>;
    /// Adds the missing columns and applies lossless widenings (see
    /// `FieldType::widened_with`). Existing columns of another type are left
    /// as they are; the caller keeps such values in `_unmapped`. Concurrent
    /// callers agree: whoever commits first decides a column's type.
    async fn evolve(
        &self,
        project: &ProjectId,
        collection: &str,
        requested: &[Column],
    ) -> Result<EvolveOutcome>;
}
