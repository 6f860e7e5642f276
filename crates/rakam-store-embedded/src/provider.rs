//! The DataFusion view of one collection: its Parquet files (pruned by the
//! pushed-down filters) unioned with the in-memory tail, all read as the
//! catalog's current schema.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

#[derive(Debug)]
pub(crate) struct CollectionProvider {
    schema: SchemaRef,
    files: Vec<(PathBuf, u64)>,
    tail: Vec<RecordBatch>,
    target_partitions: usize,
}

impl CollectionProvider {
    pub(crate) fn new(
        schema: SchemaRef,
        files: Vec<(PathBuf, u64)>,
        tail: Vec<RecordBatch>,
    ) -> Self {
        Self {
            schema,
            files,
            tail,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    fn parquet_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut source = ParquetSource::new(self.schema.clone());
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            let physical = state.create_physical_expr(predicate, &df_schema)?;
            source = source.with_predicate(physical);
        }
        let groups = self.target_partitions.max(1);
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (index, (path, size)) in self.files.iter().enumerate() {
            file_groups[index % groups].push(partitioned_file(path, *size));
        }
        let file_groups = file_groups
            .into_iter()
            .filter(|group| !group.is_empty())
            .map(FileGroup::new)
            .collect();
        let config =
            FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(file_groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[async_trait]
impl TableProvider for CollectionProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune Parquet row groups; DataFusion still applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !self.files.is_empty() {
            inputs.push(self.parquet_scan(state, projection, filters, limit)?);
        }
        if !self.tail.is_empty() {
            let memory = MemorySourceConfig::try_new(
                std::slice::from_ref(&self.tail),
                self.schema.clone(),
                projection.cloned(),
            )?
            .with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(memory));
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(indices) => Arc::new(self.schema.project(indices)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

/// A file of the scan. The location is the path as it is: `Path::from`
/// would percent-encode characters such as the `~` of an encoded
/// collection directory, which the local store then looks for literally.
fn partitioned_file(path: &std::path::Path, size: u64) -> PartitionedFile {
    let text = path.to_string_lossy();
    let mut file = PartitionedFile::new(text.as_ref(), size);
    if let Ok(location) = datafusion::object_store::path::Path::parse(text.as_ref()) {
        file.object_meta.location = location;
    }
    file
}
