//! What an analysis needs to know of a project before it writes SQL: which
//! collections exist, their columns, and how events of different
//! collections are tied to one person (the connector).

use std::collections::BTreeMap;
use std::sync::Arc;

use rakam_model::{CollectionSchema, FieldType, SERVER_TIME_COLUMN, TIME_COLUMN, UNMAPPED_COLUMN};
use rakam_store_api::{ProjectInfo, ProjectSnapshot};

use crate::error::{AnalysisError, Result};
use crate::sql::ident;

pub const USER: &str = "_user";
pub const DEVICE_ID: &str = "_device_id";

#[derive(Debug, Clone)]
pub struct ProjectView {
    pub project: ProjectInfo,
    collections: BTreeMap<String, Arc<CollectionSchema>>,
}

impl ProjectView {
    pub fn new(snapshot: &ProjectSnapshot) -> Self {
        Self {
            project: snapshot.project.clone(),
            collections: snapshot.collections.clone(),
        }
    }

    pub fn collection_names(&self) -> Vec<String> {
        self.collections.keys().cloned().collect()
    }

    pub fn schema(&self, collection: &str) -> Result<&CollectionSchema> {
        self.collections
            .get(collection)
            .map(Arc::as_ref)
            .ok_or_else(|| {
                AnalysisError::invalid(format!(
                    "collection {collection:?} does not exist in this project"
                ))
            })
    }

    /// The column's type, the implicit system columns included.
    pub fn column_type(&self, collection: &str, column: &str) -> Result<Option<&FieldType>> {
        static TIMESTAMP: FieldType = FieldType::Timestamp;
        static TEXT: FieldType = FieldType::String;
        let schema = self.schema(collection)?;
        Ok(match column {
            TIME_COLUMN | SERVER_TIME_COLUMN => Some(&TIMESTAMP),
            UNMAPPED_COLUMN => Some(&TEXT),
            _ => schema.column_type(column),
        })
    }

    pub fn require_column(&self, collection: &str, column: &str) -> Result<&FieldType> {
        self.column_type(collection, column)?.ok_or_else(|| {
            AnalysisError::invalid(format!(
                "collection {collection:?} has no column {column:?}"
            ))
        })
    }

    /// The SQL expression identifying the person of an event, per collection.
    ///
    /// With explicit `connectors`, each must be a column of every collection
    /// (several are combined into one key). By default it is `_user`, or
    /// `coalesce(_user, _device_id)` when `device_hint` (the first step's
    /// collection) carries `_device_id`, as Rakam does. Keys are compared as
    /// strings whenever the collections disagree on the column's type. A
    /// collection with neither column gets a null key: its events are left
    /// out.
    pub fn connectors(
        &self,
        collections: &[String],
        connectors: Option<&[String]>,
        device_hint: Option<&str>,
    ) -> Result<BTreeMap<String, String>> {
        let explicit: Vec<String> = connectors
            .unwrap_or_default()
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        let mut out = BTreeMap::new();
        if !explicit.is_empty() {
            for collection in collections {
                for column in &explicit {
                    self.require_column(collection, column)?;
                }
            }
            let single_type = explicit.len() == 1 && self.same_type(collections, &explicit[0]);
            for collection in collections {
                let expr = if single_type {
                    ident(&explicit[0])
                } else {
                    let parts: Vec<String> = explicit
                        .iter()
                        .map(|c| format!("CAST({} AS VARCHAR)", ident(c)))
                        .collect();
                    format!("concat_ws('\u{1f}', {})", parts.join(", "))
                };
                out.insert(collection.clone(), expr);
            }
            return Ok(out);
        }
        let use_device = match device_hint {
            Some(hint) => self.column_type(hint, DEVICE_ID)?.is_some(),
            None => false,
        };
        let plain_user = !use_device
            && self.same_type(collections, USER)
            && collections
                .iter()
                .all(|c| self.column_type(c, USER).ok().flatten().is_some());
        for collection in collections {
            let has_user = self.column_type(collection, USER)?.is_some();
            let has_device = self.column_type(collection, DEVICE_ID)?.is_some();
            let as_text = |c: &str| format!("CAST({} AS VARCHAR)", ident(c));
            let expr = match (has_user, use_device && has_device) {
                _ if plain_user => ident(USER),
                (true, true) => format!("coalesce({}, {})", as_text(USER), as_text(DEVICE_ID)),
                (true, false) => as_text(USER),
                (false, _) if has_device => as_text(DEVICE_ID),
                // Nothing ties these events to a person: they take part in
                // no analysis, like events whose identity is null.
                (false, _) => "CAST(NULL AS VARCHAR)".to_string(),
            };
            out.insert(collection.clone(), expr);
        }
        Ok(out)
    }

    fn same_type(&self, collections: &[String], column: &str) -> bool {
        let mut types = collections
            .iter()
            .filter_map(|c| self.column_type(c, column).ok().flatten());
        match types.next() {
            Some(first) => types.all(|t| t == first),
            None => true,
        }
    }
}
