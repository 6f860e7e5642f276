//! Projects, keys and schemas in `rakam_meta`, shared by every server
//! process on the database. Nothing is cached: a key revoked or a column
//! added by one process is seen by the next request of every other.

use std::sync::Arc;

use async_trait::async_trait;
use rakam_model::{CollectionSchema, Column};
use rakam_store_api::{
    hash_key, normalized_project_name, random_key, Catalog, EvolveOutcome, KeyKind, ProjectInfo,
    ProjectKeys, Result, StoreError,
};
use tokio_postgres::error::SqlState;

use crate::connection::{pg_error, Shared};
use crate::ddl::{self, StoredColumn};
use crate::names::{reader_role, MAX_IDENTIFIER_BYTES};

#[derive(Debug)]
pub struct PgCatalog {
    shared: Arc<Shared>,
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Master => "master",
        KeyKind::Read => "read",
        KeyKind::Write => "write",
    }
}

fn project_info(row: &tokio_postgres::Row) -> ProjectInfo {
    ProjectInfo {
        name: row.get(0),
        id: row.get(1),
        created_at_ms: row.get(2),
    }
}

fn collection_schema(columns: &[StoredColumn]) -> Arc<CollectionSchema> {
    Arc::new(CollectionSchema {
        columns: columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                field_type: c.field_type.clone(),
            })
            .collect(),
    })
}

impl PgCatalog {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn project_id(&self, name: &str) -> Result<String> {
        self.project(name)
            .await?
            .map(|info| info.id)
            .ok_or_else(|| StoreError::ProjectNotFound(name.to_string()))
    }

    async fn insert_keys(
        client: &impl deadpool_postgres::GenericClient,
        project_id: &str,
        keys: &ProjectKeys,
    ) -> Result<()> {
        for (hash, kind) in keys.hashed() {
            client
                .execute(
                    "INSERT INTO rakam_meta.api_keys (key_hash, project_id, kind) VALUES ($1, $2, $3)",
                    &[&hash, &project_id, &kind_name(kind)],
                )
                .await
                .map_err(pg_error("storing a key"))?;
        }
        Ok(())
    }

    /// One attempt of [`Catalog::evolve`]'s locked part.
    async fn evolve_locked(
        &self,
        project: &str,
        collection: &str,
        requested: &[Column],
    ) -> Result<EvolveOutcome> {
        let mut client = self.shared.admin().await?;
        let transaction =
            ddl::begin_schema_change(&mut client, self.shared.options.ddl_lock_timeout).await?;
        // The row lock serialises the project's schema changes (ddl::lock_project).
        let row = transaction
            .query_opt(
                "SELECT id FROM rakam_meta.projects WHERE name = $1 FOR NO KEY UPDATE",
                &[&project],
            )
            .await
            .map_err(pg_error("reading a project"))?
            .ok_or_else(|| StoreError::ProjectNotFound(project.to_string()))?;
        let project_id: String = row.get(0);
        let (current, created) =
            match ddl::load_columns(&transaction, &project_id, collection).await? {
                Some(columns) => (columns, false),
                None => {
                    ddl::create_collection(&transaction, &project_id, collection).await?;
                    (Vec::new(), true)
                }
            };
        let mut next = (*collection_schema(&current)).clone();
        let refused = next.evolve(requested, self.shared.options.max_columns_per_collection);
        let mut stored = current.clone();
        for (position, column) in next.columns.iter().enumerate() {
            let existing = stored.iter_mut().find(|c| c.name == column.name);
            let change = match existing {
                Some(old) if old.field_type == column.field_type => None,
                Some(old) => {
                    old.field_type = column.field_type.clone();
                    Some(old.clone())
                }
                None => {
                    let added = StoredColumn {
                        name: column.name.clone(),
                        field_type: column.field_type.clone(),
                        first_type: column.field_type.clone(),
                    };
                    stored.push(added.clone());
                    Some(added)
                }
            };
            if let Some(column) = change {
                let position = i32::try_from(position).unwrap_or(i32::MAX);
                ddl::add_column(&transaction, &project_id, collection, &column, position).await?;
            }
        }
        if stored != current || created {
            ddl::rebuild_views(&transaction, &project_id, collection, &stored).await?;
        }
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a schema change"))?;
        Ok(EvolveOutcome {
            schema: collection_schema(&stored),
            refused,
        })
    }
}

/// Splits off the requested columns whose names PostgreSQL would cut; their
/// values go to `_unmapped`, as for columns over the column limit.
fn storable(requested: &[Column]) -> (Vec<Column>, Vec<String>) {
    let (fit, too_long): (Vec<_>, Vec<_>) = requested
        .iter()
        .cloned()
        .partition(|c| c.name.len() <= MAX_IDENTIFIER_BYTES);
    (fit, too_long.into_iter().map(|c| c.name).collect())
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn create_project(&self, name: &str) -> Result<ProjectKeys> {
        let name = normalized_project_name(name)?;
        let keys = ProjectKeys::generate();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let password = random_key();
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting project creation"))?;
        let inserted = transaction
            .execute(
                "INSERT INTO rakam_meta.projects (name, id, created_at_ms, reader_role, reader_password)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &name,
                    &id,
                    &rakam_common::time::now_millis(),
                    &reader_role(&id),
                    &password,
                ],
            )
            .await;
        if let Err(error) = inserted {
            if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                return Err(StoreError::ProjectExists(name));
            }
            return Err(pg_error("creating a project")(error));
        }
        Self::insert_keys(&transaction, &id, &keys).await?;
        ddl::create_project_objects(&transaction, &id, &password).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a new project"))?;
        Ok(keys)
    }

    async fn list_projects(&self) -> Result<Vec<ProjectInfo>> {
        let client = self.shared.admin().await?;
        let rows = client
            .query(
                "SELECT name, id, created_at_ms FROM rakam_meta.projects ORDER BY name",
                &[],
            )
            .await
            .map_err(pg_error("listing projects"))?;
        Ok(rows.iter().map(project_info).collect())
    }

    async fn project(&self, name: &str) -> Result<Option<ProjectInfo>> {
        let client = self.shared.admin().await?;
        let row = client
            .query_opt(
                "SELECT name, id, created_at_ms FROM rakam_meta.projects WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg_error("reading a project"))?;
        Ok(row.as_ref().map(project_info))
    }

    async fn delete_project(&self, name: &str) -> Result<()> {
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting project deletion"))?;
        let row = transaction
            .query_opt(
                "DELETE FROM rakam_meta.projects WHERE name = $1 RETURNING id",
                &[&name],
            )
            .await
            .map_err(pg_error("deleting a project"))?
            .ok_or_else(|| StoreError::ProjectNotFound(name.to_string()))?;
        let id: String = row.get(0);
        ddl::drop_project_objects(&transaction, &id).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a project deletion"))?;
        self.shared.forget_reader(&id);
        Ok(())
    }

    async fn create_api_keys(&self, project: &str) -> Result<ProjectKeys> {
        let id = self.project_id(project).await?;
        let keys = ProjectKeys::generate();
        let client = self.shared.admin().await?;
        Self::insert_keys(&client, &id, &keys).await?;
        Ok(keys)
    }

    async fn authenticate(&self, key: &str) -> Result<Option<(ProjectInfo, KeyKind)>> {
        let client = self.shared.admin().await?;
        let row = client
            .query_opt(
                "SELECT p.name, p.id, p.created_at_ms, k.kind
                 FROM rakam_meta.api_keys k JOIN rakam_meta.projects p ON p.id = k.project_id
                 WHERE k.key_hash = $1",
                &[&hash_key(key)],
            )
            .await
            .map_err(pg_error("checking a key"))?;
        Ok(row.map(|row| {
            let kind = match row.get::<_, &str>(3) {
                "master" => KeyKind::Master,
                "read" => KeyKind::Read,
                _ => KeyKind::Write,
            };
            (project_info(&row), kind)
        }))
    }

    async fn collections(&self, project: &str) -> Result<Vec<String>> {
        let id = self.project_id(project).await?;
        let client = self.shared.admin().await?;
        let rows = client
            .query(
                "SELECT name FROM rakam_meta.collections WHERE project_id = $1 ORDER BY name",
                &[&id],
            )
            .await
            .map_err(pg_error("listing collections"))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn schema(
        &self,
        project: &str,
        collection: &str,
    ) -> Result<Option<Arc<CollectionSchema>>> {
        let id = self.project_id(project).await?;
        let client = self.shared.admin().await?;
        Ok(ddl::load_columns(&client, &id, collection)
            .await?
            .map(|columns| collection_schema(&columns)))
    }

    async fn evolve(
        &self,
        project: &str,
        collection: &str,
        requested: &[Column],
    ) -> Result<EvolveOutcome> {
        if collection.len() > MAX_IDENTIFIER_BYTES {
            return Err(StoreError::NameTooLong {
                name: collection.to_string(),
                limit: MAX_IDENTIFIER_BYTES,
            });
        }
        let (requested, too_long) = storable(requested);
        let requested = requested.as_slice();
        if let Some(schema) = self.schema(project, collection).await? {
            if !schema.needs_evolution(requested) {
                return Ok(EvolveOutcome {
                    schema,
                    refused: too_long,
                });
            }
        }
        // A long query holding the table blocks ALTER TABLE, and a waiting
        // ALTER TABLE blocks every writer behind it; giving up after the
        // lock timeout and retrying keeps ingestion moving meanwhile.
        let mut outcome = ddl::retry_on_lock_timeout("schema change", || {
            self.evolve_locked(project, collection, requested)
        })
        .await?;
        outcome.refused.extend(too_long);
        Ok(outcome)
    }
}
