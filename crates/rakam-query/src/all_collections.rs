//! `_all`: every collection of the project as one table. Columns are the
//! union of all collections' columns (null where a collection lacks one),
//! plus `_collection`. Unlike Rakam, which kept only the columns common to
//! every collection, nothing is hidden.
//!
//! The table is planned at scan time, once the columns a query reads are
//! known: each collection contributes a scan of just those columns (and
//! the filters it can evaluate), so planning is linear in the number of
//! collections times the columns the query needs, not in all columns of
//! all collections. `_collection = '…'` and `_collection IN (…)` skip the
//! other collections without opening them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::{cast, lit, Column};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use rakam_model::{COLLECTION_COLUMN, SERVER_TIME_COLUMN, TIME_COLUMN, UNMAPPED_COLUMN};

use crate::project_schema::ProjectTables;

/// Two collections may type a column differently; `_all` reads it as the
/// narrowest type that holds both, and as text when there is none.
fn common_type(left: &DataType, right: &DataType) -> DataType {
    if left == right {
        return left.clone();
    }
    match (left, right) {
        (DataType::Int64, DataType::Float64) | (DataType::Float64, DataType::Int64) => {
            DataType::Float64
        }
        _ => DataType::Utf8,
    }
}

#[derive(Debug)]
pub(crate) struct AllCollections {
    tables: Arc<ProjectTables>,
    schema: SchemaRef,
}

impl AllCollections {
    /// The table's columns from the catalog's schemas: one pass over every
    /// column of every collection, no collection opened.
    pub(crate) fn new(tables: Arc<ProjectTables>) -> Self {
        let mut columns: BTreeMap<String, DataType> = BTreeMap::new();
        for name in tables.collection_names() {
            let Some(schema) = tables.catalog_schema(&name) else {
                continue;
            };
            for field in schema.fields() {
                let merged = match columns.get(field.name()) {
                    Some(existing) => common_type(existing, field.data_type()),
                    None => field.data_type().clone(),
                };
                columns.insert(field.name().clone(), merged);
            }
        }
        // `_collection` and the system columns first, then user columns by
        // name, `_unmapped` last.
        let mut fields = vec![Field::new(COLLECTION_COLUMN, DataType::Utf8, false)];
        for name in [TIME_COLUMN, SERVER_TIME_COLUMN] {
            if let Some(data_type) = columns.remove(name) {
                fields.push(Field::new(name, data_type, true));
            }
        }
        let unmapped = columns.remove(UNMAPPED_COLUMN);
        fields.extend(columns.into_iter().map(|(n, t)| Field::new(n, t, true)));
        if let Some(data_type) = unmapped {
            fields.push(Field::new(UNMAPPED_COLUMN, data_type, true));
        }
        Self {
            tables,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// The collections a query can match, given its filters on
    /// `_collection`.
    fn collections_matching(&self, filters: &[Expr]) -> Vec<String> {
        let mut names = self.tables.collection_names();
        for filter in filters {
            if let Some(allowed) = collections_named_by(filter) {
                names.retain(|name| allowed.contains(name));
            }
        }
        names
    }
}

/// The collection names a filter restricts `_collection` to, when it is
/// `_collection = 'a'` or `_collection IN ('a', 'b')`.
fn collections_named_by(filter: &Expr) -> Option<HashSet<String>> {
    let is_collection =
        |expr: &Expr| matches!(expr, Expr::Column(column) if column.name == COLLECTION_COLUMN);
    let text = |expr: &Expr| match expr {
        Expr::Literal(ScalarValue::Utf8(Some(text)) | ScalarValue::Utf8View(Some(text)), _) => {
            Some(text.clone())
        }
        _ => None,
    };
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let value = if is_collection(left) {
                text(right)?
            } else if is_collection(right) {
                text(left)?
            } else {
                return None;
            };
            Some(HashSet::from([value]))
        }
        Expr::InList(list) if !list.negated && is_collection(&list.expr) => {
            list.list.iter().map(text).collect()
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for AllCollections {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to skip collections and passed on to each collection's scan
        // where it applies; always evaluated again above the union.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(projection) => projection.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let output = Arc::new(self.schema.project(&wanted)?);
        let mut branches = Vec::new();
        for name in self.collections_matching(filters) {
            let Some(provider) = self.tables.collection(&name).await? else {
                continue;
            };
            let branch = collection_branch(state, &name, provider, &output, filters, limit).await?;
            branches.push(branch);
        }
        if branches.is_empty() {
            return Ok(Arc::new(EmptyExec::new(output)));
        }
        UnionExec::try_new(branches)
    }
}

/// One collection's rows as `output`'s columns: its own columns where it
/// has them (cast where `_all` reads them as another type), null where it
/// does not, and its name as `_collection`.
async fn collection_branch(
    state: &dyn Session,
    name: &str,
    provider: Arc<dyn TableProvider>,
    output: &SchemaRef,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let own = provider.schema();
    let mut read = Vec::new();
    for field in output.fields() {
        if let Ok(index) = own.index_of(field.name()) {
            if !read.contains(&index) {
                read.push(index);
            }
        }
    }
    // A filter goes down only when the collection has every column it
    // names, with the type `_all` gives them.
    let applies = |filter: &&Expr| {
        filter.column_refs().iter().all(|column| {
            let union_type = output
                .field_with_name(&column.name)
                .ok()
                .map(Field::data_type);
            column.name != COLLECTION_COLUMN
                && own
                    .field_with_name(&column.name)
                    .is_ok_and(|f| Some(f.data_type()) == union_type)
        })
    };
    let own_filters: Vec<Expr> = filters.iter().filter(applies).cloned().collect();
    let scan = provider
        .scan(state, Some(&read), &own_filters, limit)
        .await?;
    let scanned = scan.schema();
    let mut expressions: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
    for field in output.fields() {
        let expression: Arc<dyn PhysicalExpr> = if field.name() == COLLECTION_COLUMN {
            lit(name.to_string())
        } else {
            match scanned.index_of(field.name()) {
                Ok(index) => {
                    let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), index));
                    if scanned.field(index).data_type() == field.data_type() {
                        column
                    } else {
                        cast(column, &scanned, field.data_type().clone())?
                    }
                }
                Err(_) => lit(ScalarValue::try_from(field.data_type())?),
            }
        };
        expressions.push((expression, field.name().clone()));
    }
    Ok(Arc::new(ProjectionExec::try_new(expressions, scan)?))
}
