//! Projects, keys and schemas.

use std::collections::HashMap;
use std::sync::Arc;

use rakam_common::ErrorCode;
use rakam_model::{
    normalize_collection_name, normalize_field_name, CollectionSchema, Column, FieldType,
    ModelError, RESERVED_FIELD_NAMES, TIME_COLUMN,
};
use rakam_store_api::{CollectionStats, KeyKind, ProjectInfo, ProjectKeys};

use crate::{Rakam, Result, ServiceError};

/// A collection as `/project/schema` describes it.
#[derive(Debug, Clone)]
pub struct CollectionDescription {
    pub name: String,
    pub schema: Arc<CollectionSchema>,
    pub stats: CollectionStats,
}

/// Compares without an early exit, so timing does not reveal the lock key.
pub fn constant_time_eq(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

impl Rakam {
    /// May this client create and list projects? With `server.lock_key`
    /// set, the request must carry it; without one, only clients on the
    /// server's own machine may.
    pub fn check_lock_key(&self, lock_key: Option<&str>, from_loopback: bool) -> Result<()> {
        let configured = &self.config.server.lock_key;
        if configured.is_empty() {
            if from_loopback {
                return Ok(());
            }
            return Err(ServiceError::Forbidden(
                "projects can only be created from the server's own machine (not through a proxy) unless server.lock_key is set".into(),
            ));
        }
        match lock_key.filter(|k| !k.is_empty()) {
            Some(given) if constant_time_eq(given, configured) => Ok(()),
            Some(_) => Err(ServiceError::Forbidden("lock_key is invalid".into())),
            None => Err(ServiceError::Forbidden("lock_key is required".into())),
        }
    }

    pub async fn create_project(&self, name: &str) -> Result<ProjectKeys> {
        let (project, keys) = self.backend.catalog.create_project(name).await?;
        tracing::info!(project = %project.name, "project created");
        Ok(keys)
    }

    pub async fn list_projects(&self) -> Result<Vec<String>> {
        let projects = self.backend.catalog.list_projects().await?;
        Ok(projects.into_iter().map(|p| p.name).collect())
    }

    /// Deletes the project, its keys and all its data, when
    /// `server.allow_project_deletion` lets it.
    pub async fn delete_project(&self, project: &ProjectInfo) -> Result<()> {
        if !self.config.server.allow_project_deletion {
            return Err(ServiceError::NotSupported(
                "project deletion is disabled (server.allow_project_deletion)".into(),
            ));
        }
        self.backend.catalog.delete_project(&project.id).await?;
        self.views.delete_project(&project.id).await?;
        self.backend.sink.delete_project(&project.id).await?;
        tracing::info!(project = %project.name, "project deleted");
        Ok(())
    }

    pub async fn create_api_keys(&self, project: &ProjectInfo) -> Result<ProjectKeys> {
        Ok(self.backend.catalog.create_api_keys(&project.id).await?)
    }

    pub async fn collections(&self, project: &ProjectInfo) -> Result<Vec<String>> {
        Ok(self.snapshot(project).await?.collection_names())
    }

    /// The collections (all, or those named) with their columns and counts.
    pub async fn describe_collections(
        &self,
        project: &ProjectInfo,
        names: Option<&[String]>,
    ) -> Result<Vec<CollectionDescription>> {
        let snapshot = self.snapshot(project).await?;
        let mut described = Vec::new();
        for (name, schema) in &snapshot.collections {
            if names.is_some_and(|names| !names.contains(name)) {
                continue;
            }
            let stats = self.backend.tables.stats(&project.id, name).await?;
            described.push(CollectionDescription {
                name: name.clone(),
                schema: schema.clone(),
                stats,
            });
        }
        Ok(described)
    }

    /// Declares columns ahead of events (`/project/schema/add`): each must
    /// end up with exactly the asked type.
    pub async fn add_fields(
        &self,
        project: &ProjectInfo,
        collection: &str,
        fields: &[(String, String)],
    ) -> Result<Arc<CollectionSchema>> {
        let collection = normalize_collection_name(collection)?;
        let mut columns = Vec::with_capacity(fields.len());
        for (name, type_name) in fields {
            let name = normalize_field_name(name)?;
            if RESERVED_FIELD_NAMES.contains(&name.as_str()) || name == TIME_COLUMN {
                return Err(ModelError::ReservedName { name }.into());
            }
            columns.push(Column {
                name,
                field_type: FieldType::parse(type_name)?,
            });
        }
        let outcome = self
            .backend
            .catalog
            .evolve(&project.id, &collection, &columns)
            .await?;
        if let Some(name) = outcome.refused.first() {
            return Err(ServiceError::Refused {
                code: ErrorCode::TooManyColumns,
                message: format!(
                    "{name:?} was not added: the collection is at limits.max_columns_per_collection"
                ),
            });
        }
        for column in &columns {
            let actual = outcome.schema.column_type(&column.name);
            if actual != Some(&column.field_type) {
                return Err(ServiceError::Refused {
                    code: ErrorCode::TypeConflict,
                    message: format!(
                        "field {:?} exists as {}, not {}",
                        column.name,
                        actual.map_or_else(|| "nothing".into(), FieldType::name),
                        column.field_type
                    ),
                });
            }
        }
        Ok(outcome.schema)
    }

    /// Events stored per project, for each read (or master) key given;
    /// other keys are left out.
    pub async fn event_counts(&self, keys: &[String]) -> Result<HashMap<String, u64>> {
        let mut counts = HashMap::new();
        for key in keys {
            let Some((project, kind)) = self.backend.catalog.authenticate(key).await? else {
                continue;
            };
            if !kind.grants(KeyKind::Read) {
                continue;
            }
            let snapshot = self.snapshot(&project).await?;
            let mut events = 0;
            for collection in snapshot.collections.keys() {
                events += self
                    .backend
                    .tables
                    .stats(&project.id, collection)
                    .await?
                    .rows;
            }
            counts.insert(key.clone(), events);
        }
        Ok(counts)
    }
}
