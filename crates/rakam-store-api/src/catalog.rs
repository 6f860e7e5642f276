use std::sync::Arc;

use async_trait::async_trait;
use rakam_model::{CollectionSchema, Column};
use serde::Serialize;

use crate::{KeyKind, ProjectKeys, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectInfo {
    pub name: String,
    /// A fresh id per creation, so data of a deleted project can never
    /// reappear in a new project of the same name.
    pub id: String,
    pub created_at_ms: i64,
}

/// A project name as every backend stores it: lower-cased, and only
/// `[a-z0-9_]`, at most 64 bytes (it names directories and schemas).
pub fn normalized_project_name(name: &str) -> Result<String> {
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

/// What [`Catalog::evolve`] decided.
#[derive(Debug, Clone)]
pub struct EvolveOutcome {
    pub schema: Arc<CollectionSchema>,
    /// Requested columns that were not added because of the column limit;
    /// their values go to `_unmapped`.
    pub refused: Vec<String>,
}

/// Projects, their keys and their collections' schemas.
///
/// Schema changes commit here before any row that needs them is written, so
/// every batch handed to the store fits the schema it is read with.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Creates a project and returns its first key triple.
    async fn create_project(&self, name: &str) -> Result<ProjectKeys>;
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>>;
    async fn project(&self, name: &str) -> Result<Option<ProjectInfo>>;
    /// Removes the project, its keys and its schemas.
    async fn delete_project(&self, name: &str) -> Result<()>;
    /// Adds another key triple to a project.
    async fn create_api_keys(&self, project: &str) -> Result<ProjectKeys>;
    /// The project and kind a key belongs to; `None` for unknown keys.
    async fn authenticate(&self, key: &str) -> Result<Option<(ProjectInfo, KeyKind)>>;
    /// The project's collections, in name order.
    async fn collections(&self, project: &str) -> Result<Vec<String>>;
    async fn schema(
        &self,
        project: &str,
        collection: &str,
    ) -> Result<Option<Arc<CollectionSchema>>>;
    /// Adds the missing columns and applies lossless widenings (see
    /// `FieldType::widened_with`). Existing columns of another type are left
    /// as they are; the caller keeps such values in `_unmapped`. Concurrent
    /// callers agree: whoever commits first decides a column's type.
    async fn evolve(
        &self,
        project: &str,
        collection: &str,
        requested: &[Column],
    ) -> Result<EvolveOutcome>;
}
