//! `_all`: every collection of the project as one table. Columns are the
//! union of all collections' columns (null where a collection lacks one),
//! plus `_collection`. Unlike Rakam, which kept only the columns common to
//! every collection, nothing is hidden.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::error::Result;
use datafusion::logical_expr::{cast, lit, Expr, LogicalPlan, LogicalPlanBuilder};
use rakam_model::{COLLECTION_COLUMN, SERVER_TIME_COLUMN, TIME_COLUMN, UNMAPPED_COLUMN};

use crate::project_schema::ProjectSchema;

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

/// A column by its exact name, whatever characters it holds.
fn column_ref(name: &str) -> Expr {
    Expr::Column(datafusion::common::Column::new_unqualified(name))
}

pub(crate) async fn all_collections_view(
    project: &ProjectSchema,
) -> Result<Arc<dyn TableProvider>> {
    let mut providers = Vec::new();
    for name in project.collection_names() {
        if let Some(provider) = project.collection(&name).await? {
            providers.push((name, provider));
        }
    }
    // System columns first, then user columns by name, `_unmapped` last.
    let mut columns: BTreeMap<String, DataType> = BTreeMap::new();
    for (_, provider) in &providers {
        for field in provider.schema().fields() {
            let merged = match columns.get(field.name()) {
                Some(existing) => common_type(existing, field.data_type()),
                None => field.data_type().clone(),
            };
            columns.insert(field.name().clone(), merged);
        }
    }
    let system = [TIME_COLUMN, SERVER_TIME_COLUMN];
    let mut ordered: Vec<(String, DataType)> = Vec::new();
    for name in system {
        if let Some(data_type) = columns.remove(name) {
            ordered.push((name.to_string(), data_type));
        }
    }
    let unmapped = columns.remove(UNMAPPED_COLUMN);
    ordered.extend(columns);
    if let Some(data_type) = unmapped {
        ordered.push((UNMAPPED_COLUMN.to_string(), data_type));
    }

    let mut plan: Option<LogicalPlan> = None;
    for (name, provider) in providers {
        let provided = provider.schema();
        let mut projection: Vec<Expr> = vec![lit(name.as_str()).alias(COLLECTION_COLUMN)];
        for (column, data_type) in &ordered {
            let expression = match provided.field_with_name(column) {
                Ok(field) if field.data_type() == data_type => column_ref(column),
                Ok(_) => cast(column_ref(column), data_type.clone()),
                Err(_) => lit(ScalarValue::try_from(data_type)?),
            };
            projection.push(expression.alias(column));
        }
        // A bare reference: a collection's name may hold dots and quotes.
        let table = datafusion::common::TableReference::bare(name.as_str());
        let branch = LogicalPlanBuilder::scan(table, provider_as_source(provider), None)?
            .project(projection)?
            .build()?;
        plan = Some(match plan {
            None => branch,
            Some(previous) => LogicalPlanBuilder::from(previous).union(branch)?.build()?,
        });
    }
    let plan = match plan {
        Some(plan) => plan,
        None => {
            let mut fields = vec![Field::new(COLLECTION_COLUMN, DataType::Utf8, false)];
            fields.extend(ordered.iter().map(|(n, t)| Field::new(n, t.clone(), true)));
            LogicalPlanBuilder::empty(false)
                .project(fields.iter().map(|f| {
                    lit(ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null))
                        .alias(f.name())
                }))?
                .build()?
        }
    };
    Ok(Arc::new(ViewTable::new(plan, None)))
}
