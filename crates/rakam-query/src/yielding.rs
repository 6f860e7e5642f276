//! Joins that give their thread back. A nested-loop or cross join with a
//! selective filter computes (probe batch × every buffered row) inside one
//! `poll_next` before it has anything to return: with 20,000 rows a side
//! that is minutes without a yield, so an aborted query kept its thread
//! (DataFusion's cooperative leaves only yield between input batches).
//! This rule, run after DataFusion's own, cuts the probe side of such joins
//! into small batches and yields to the scheduler before each of them and
//! before each output batch: an abort (timeout, client gone, shutdown) lands
//! within one small batch, and other queries get the thread in turn.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

/// Rows of a probe batch joined against every buffered row between yields.
const PROBE_BATCH_ROWS: usize = 16;

/// Joins whose work per input batch grows with the other side's size.
const QUADRATIC_JOINS: [&str; 2] = ["NestedLoopJoinExec", "CrossJoinExec"];

#[derive(Debug, Default)]
pub(crate) struct YieldInJoins;

impl PhysicalOptimizerRule for YieldInJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let name = node.name();
            if QUADRATIC_JOINS.contains(&name) {
                let mut children: Vec<Arc<dyn ExecutionPlan>> =
                    node.children().into_iter().cloned().collect();
                // The probe side (streamed against the buffered one) is last.
                if let Some(probe) = children.last_mut() {
                    *probe = Arc::new(YieldingExec::new(probe.clone(), Some(PROBE_BATCH_ROWS)));
                }
                let join = node.replace_children(
                    children,
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )?;
                return Ok(Transformed::yes(
                    Arc::new(YieldingExec::new(join, None)) as Arc<dyn ExecutionPlan>
                ));
            }
            if name.ends_with("JoinExec") {
                return Ok(Transformed::yes(
                    Arc::new(YieldingExec::new(node, None)) as Arc<dyn ExecutionPlan>
                ));
            }
            Ok(Transformed::no(node))
        })
        .data()
    }

    fn name(&self) -> &str {
        "rakam_yield_in_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input through, in batches of at most `batch_rows`, yielding
/// to the scheduler before every batch but the first.
#[derive(Debug)]
struct YieldingExec {
    input: Arc<dyn ExecutionPlan>,
    batch_rows: Option<usize>,
}

impl YieldingExec {
    fn new(input: Arc<dyn ExecutionPlan>, batch_rows: Option<usize>) -> Self {
        Self { input, batch_rows }
    }
}

impl DisplayAs for YieldingExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "YieldingExec")
    }
}

impl ExecutionPlan for YieldingExec {
    fn name(&self) -> &str {
        "YieldingExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(Self::new(input, self.batch_rows))),
            _ => datafusion::common::internal_err!("YieldingExec takes one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(YieldingStream {
            schema: input.schema(),
            input,
            batch_rows: self.batch_rows,
            ready: VecDeque::new(),
            returned_one: false,
            yielding: None,
        }))
    }
}

struct YieldingStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    batch_rows: Option<usize>,
    ready: VecDeque<RecordBatch>,
    returned_one: bool,
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Stream for YieldingStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(yielding) = self.yielding.as_mut() {
                if yielding.as_mut().poll(context).is_pending() {
                    return Poll::Pending;
                }
                self.yielding = None;
                if let Some(batch) = self.ready.pop_front() {
                    return Poll::Ready(Some(Ok(batch)));
                }
            }
            if !self.ready.is_empty() {
                if self.returned_one {
                    self.yielding = Some(Box::pin(tokio::task::yield_now()));
                    continue;
                }
                self.returned_one = true;
                return Poll::Ready(self.ready.pop_front().map(Ok));
            }
            match self.input.poll_next_unpin(context) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(batch))) => match self.batch_rows {
                    Some(rows) if batch.num_rows() > rows => {
                        let mut offset = 0;
                        while offset < batch.num_rows() {
                            let length = rows.min(batch.num_rows() - offset);
                            self.ready.push_back(batch.slice(offset, length));
                            offset += length;
                        }
                    }
                    _ => self.ready.push_back(batch),
                },
                Poll::Ready(other) => return Poll::Ready(other),
            }
        }
    }
}

impl RecordBatchStream for YieldingStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
