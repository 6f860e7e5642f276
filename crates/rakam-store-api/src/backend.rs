use std::sync::Arc;

use crate::{Catalog, EventSink, NativeSql, TableSource, ViewStore};

/// What an assembly of parts can do beyond the common contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The sink returns log positions and can replay appends after one
    /// (append observers are exactly-once across a crash).
    pub replayable_log: bool,
    /// Several server processes may share the catalog.
    pub shared_catalog: bool,
}

/// A backend as parts: a catalog, a sink, a table source and optionally the
/// backend's own SQL engine. Parts of different backends compose (a
/// PostgreSQL catalog with embedded data), as long as the sink and the
/// table source read the same data.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: &'static str,
    pub catalog: Arc<dyn Catalog>,
    pub sink: Arc<dyn EventSink>,
    pub tables: Arc<dyn TableSource>,
    pub native_sql: Option<Arc<dyn NativeSql>>,
    /// Materialized views, kept next to the data they are computed from.
    pub views: Arc<dyn ViewStore>,
    pub capabilities: Capabilities,
}
