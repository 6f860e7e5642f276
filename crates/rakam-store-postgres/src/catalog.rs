//! Projects, keys and schemas in `rakam_meta`, shared by every server
//! process on the database. Snapshots and keys are cached per process and
//! dropped when another process changes the project (`catalog_cache.rs`), so
//! an unchanged project costs no round trip, and a change made by one
//! process is seen by the others once its notification arrives.

use std::sync::Arc;

use async_trait::async_trait;
use rakam_model::{CollectionSchema, Column};
use rakam_store_api::{
    hash_key, normalized_project_name, random_key, Catalog, EvolveOutcome, KeyKind, ProjectId,
    ProjectInfo, ProjectKeys, ProjectSnapshot, Result, StoreError,
};
use tokio_postgres::error::SqlState;

use crate::catalog_cache::{spawn_listener, CatalogCache, CHANNEL};
use crate::connection::{pg_error, Shared};
use crate::ddl::{self, StoredColumn};
use crate::names::{reader_role, MAX_IDENTIFIER_BYTES};

#[derive(Debug)]
pub struct PgCatalog {
    shared: Arc<Shared>,
    cache: Arc<CatalogCache>,
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
        id: ProjectId::new(row.get::<_, String>(1)),
        created_at_ms: row.get(2),
    }
}

fn version_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Tells every process sharing the database that the project changed; sent
/// when the transaction commits.
async fn notify_change(
    client: &impl deadpool_postgres::GenericClient,
    project_id: &str,
) -> Result<()> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &project_id])
        .await
        .map_err(pg_error("announcing a catalog change"))?;
    Ok(())
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
        let cache = Arc::new(CatalogCache::default());
        spawn_listener(shared.base.clone(), Arc::downgrade(&cache));
        Self { shared, cache }
    }

    /// The project's metadata in one round trip.
    async fn load_snapshot(&self, id: &ProjectId) -> Result<ProjectSnapshot> {
        let client = self.shared.admin().await?;
        let rows = client
            .query(
                "SELECT p.name, p.id, p.created_at_ms, p.version, c.name, col.name, col.type, col.first_type
                 FROM rakam_meta.projects p
                 LEFT JOIN rakam_meta.collections c ON c.project_id = p.id
                 LEFT JOIN rakam_meta.columns col
                   ON col.project_id = c.project_id AND col.collection = c.name
                 WHERE p.id = $1
                 ORDER BY c.name, col.position",
                &[&id.as_str()],
            )
            .await
            .map_err(pg_error("reading a project's schemas"))?;
        let first = rows
            .first()
            .ok_or_else(|| StoreError::ProjectNotFound(id.to_string()))?;
        let mut collections: std::collections::BTreeMap<String, Vec<StoredColumn>> =
            std::collections::BTreeMap::new();
        for row in &rows {
            let Some(collection) = row.get::<_, Option<String>>(4) else {
                continue;
            };
            let columns = collections.entry(collection).or_default();
            if let Some(name) = row.get::<_, Option<String>>(5) {
                columns.push(ddl::stored_column(name, row.get(6), row.get(7))?);
            }
        }
        Ok(ProjectSnapshot {
            project: project_info(first),
            version: version_of(first.get(3)),
            collections: collections
                .into_iter()
                .map(|(name, columns)| (name, collection_schema(&columns)))
                .collect(),
        })
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
        project: &ProjectId,
        collection: &str,
        requested: &[Column],
    ) -> Result<EvolveOutcome> {
        let mut client = self.shared.admin().await?;
        let transaction =
            ddl::begin_schema_change(&mut client, self.shared.options.ddl_lock_timeout).await?;
        // The row lock serialises the project's schema changes (ddl::lock_project).
        let row = transaction
            .query_opt(
                "SELECT id, version FROM rakam_meta.projects WHERE id = $1 FOR NO KEY UPDATE",
                &[&project.as_str()],
            )
            .await
            .map_err(pg_error("reading a project"))?
            .ok_or_else(|| StoreError::ProjectNotFound(project.to_string()))?;
        let project_id: String = row.get(0);
        let mut version = version_of(row.get(1));
        let (current, created) =
            match ddl::load_columns(&transaction, &project_id, collection).await? {
                Some(columns) => (columns, false),
                None => {
                    let existing = ddl::collection_count(&transaction, &project_id).await?;
                    self.shared
                        .options
                        .catalog_limits
                        .check_new_collection(collection, existing)?;
                    ddl::create_collection(&transaction, &project_id, collection).await?;
                    (Vec::new(), true)
                }
            };
        let mut next = (*collection_schema(&current)).clone();
        let refused = next.evolve(
            requested,
            self.shared
                .options
                .catalog_limits
                .max_columns_per_collection,
        );
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
            let row = transaction
                .query_one(
                    "UPDATE rakam_meta.projects SET version = version + 1 WHERE id = $1 RETURNING version",
                    &[&project_id],
                )
                .await
                .map_err(pg_error("recording a schema version"))?;
            version = version_of(row.get(0));
            notify_change(&transaction, &project_id).await?;
        }
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a schema change"))?;
        self.cache.invalidate(project);
        Ok(EvolveOutcome {
            schema: collection_schema(&stored),
            refused,
            version,
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
    async fn create_project(&self, name: &str) -> Result<(ProjectInfo, ProjectKeys)> {
        let name = normalized_project_name(name)?;
        let keys = ProjectKeys::generate();
        let id = ProjectId::generate();
        let created_at_ms = rakam_common::time::now_millis();
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
                    &id.as_str(),
                    &created_at_ms,
                    &reader_role(id.as_str()),
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
        Self::insert_keys(&transaction, id.as_str(), &keys).await?;
        ddl::create_project_objects(&transaction, id.as_str(), &password).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a new project"))?;
        let info = ProjectInfo {
            name,
            id,
            created_at_ms,
        };
        Ok((info, keys))
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
        let name = name.to_lowercase();
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

    async fn delete_project(&self, project: &ProjectId) -> Result<()> {
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting project deletion"))?;
        let row = transaction
            .query_opt(
                "DELETE FROM rakam_meta.projects WHERE id = $1 RETURNING id",
                &[&project.as_str()],
            )
            .await
            .map_err(pg_error("deleting a project"))?
            .ok_or_else(|| StoreError::ProjectNotFound(project.to_string()))?;
        let id: String = row.get(0);
        ddl::drop_project_objects(&transaction, &id).await?;
        notify_change(&transaction, &id).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a project deletion"))?;
        self.cache.invalidate(project);
        self.shared.forget_reader(&id);
        Ok(())
    }

    async fn create_api_keys(&self, project: &ProjectId) -> Result<ProjectKeys> {
        let keys = ProjectKeys::generate();
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting key creation"))?;
        let exists = transaction
            .query_opt(
                "SELECT 1 FROM rakam_meta.projects WHERE id = $1 FOR NO KEY UPDATE",
                &[&project.as_str()],
            )
            .await
            .map_err(pg_error("reading a project"))?;
        if exists.is_none() {
            return Err(StoreError::ProjectNotFound(project.to_string()));
        }
        Self::insert_keys(&transaction, project.as_str(), &keys).await?;
        notify_change(&transaction, project.as_str()).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing new keys"))?;
        self.cache.invalidate(project);
        Ok(keys)
    }

    async fn authenticate(&self, key: &str) -> Result<Option<(ProjectInfo, KeyKind)>> {
        let hash = hash_key(key);
        if let Some(found) = self.cache.key(&hash) {
            return Ok(Some(found));
        }
        let epoch = self.cache.epoch();
        let client = self.shared.admin().await?;
        let row = client
            .query_opt(
                "SELECT p.name, p.id, p.created_at_ms, k.kind
                 FROM rakam_meta.api_keys k JOIN rakam_meta.projects p ON p.id = k.project_id
                 WHERE k.key_hash = $1",
                &[&hash],
            )
            .await
            .map_err(pg_error("checking a key"))?;
        let found = row.map(|row| {
            let kind = match row.get::<_, &str>(3) {
                "master" => KeyKind::Master,
                "read" => KeyKind::Read,
                _ => KeyKind::Write,
            };
            (project_info(&row), kind)
        });
        if let Some(found) = &found {
            self.cache.store_key(epoch, hash, found.clone());
        }
        Ok(found)
    }

    async fn snapshot(&self, project: &ProjectId) -> Result<Arc<ProjectSnapshot>> {
        if let Some(snapshot) = self.cache.snapshot(project) {
            return Ok(snapshot);
        }
        let epoch = self.cache.epoch();
        let snapshot = Arc::new(self.load_snapshot(project).await?);
        self.cache.store_snapshot(epoch, snapshot.clone());
        Ok(snapshot)
    }

    async fn evolve(
        &self,
        project: &ProjectId,
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
        let snapshot = self.snapshot(project).await?;
        if let Some(schema) = snapshot.schema(collection) {
            if !schema.needs_evolution(requested) {
                return Ok(EvolveOutcome {
                    schema: schema.clone(),
                    refused: too_long,
                    version: snapshot.version,
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
