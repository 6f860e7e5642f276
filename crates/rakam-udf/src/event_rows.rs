//! The shared machinery of Rakam's aggregate functions: every row a function
//! sees is three integers `(t, a, b)`; a group (a user) keeps its rows until
//! the end (all groups in one arena, `arena.rs`), then a [`Finisher`] turns
//! them into one `List<Int64>` value.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{exec_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::PhysicalExpr;

use crate::arena::{GroupedRows, Laid};

/// One event as an aggregate function sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub t: i64,
    pub a: i64,
    pub b: i64,
}

/// Computes one group's answer from its rows (in no particular order).
pub trait Finisher: Debug + Send + Sync + 'static {
    /// Appends the group's answer to `out` (shared by all groups, so an
    /// answer costs no allocation of its own).
    fn finish_into(&self, rows: &mut [Row], out: &mut Vec<i64>);
}

/// The output and state type of every Rakam aggregate: a list of BIGINT.
pub fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}

pub fn state_fields(name: &str) -> Vec<FieldRef> {
    ["t", "a", "b"]
        .iter()
        .map(|part| Arc::new(Field::new(format!("{name}[{part}]"), list_type(), true)))
        .collect()
}

/// Reads the constant string argument (the spec) at `index`.
pub fn literal_spec(exprs: &[Arc<dyn PhysicalExpr>], index: usize) -> Result<String> {
    let Some(literal) = exprs.get(index).and_then(|e| e.downcast_ref::<Literal>()) else {
        return exec_err!("argument {} must be a constant string", index + 1);
    };
    match literal.value() {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => Ok(s.clone()),
        ScalarValue::Utf8View(Some(s)) => Ok(s.clone()),
        other => exec_err!(
            "argument {} must be a constant string, got {other}",
            index + 1
        ),
    }
}

fn int_column(values: &[ArrayRef], index: usize) -> Result<&Int64Array> {
    match values.get(index) {
        Some(array) => match array.as_primitive_opt::<Int64Type>() {
            Some(ints) => Ok(ints),
            None => exec_err!("argument {} must be BIGINT", index + 1),
        },
        None => exec_err!("missing argument {}", index + 1),
    }
}

/// Visits the rows of an input batch whose three values are all present.
fn for_each_row(
    values: &[ArrayRef],
    filter: Option<&BooleanArray>,
    mut visit: impl FnMut(usize, Row),
) -> Result<()> {
    let (t, a) = (int_column(values, 0)?, int_column(values, 1)?);
    // Functions of two integer columns take the spec third; their `b` is 0.
    let b = values
        .get(2)
        .and_then(|array| array.as_primitive_opt::<Int64Type>());
    for i in 0..t.len() {
        if t.is_null(i) || a.is_null(i) || b.is_some_and(|b| b.is_null(i)) {
            continue;
        }
        if filter.is_some_and(|f| f.is_null(i) || !f.value(i)) {
            continue;
        }
        visit(
            i,
            Row {
                t: t.value(i),
                a: a.value(i),
                b: b.map_or(0, |b| b.value(i)),
            },
        );
    }
    Ok(())
}

/// Visits the rows packed in state lists (`t`, `a`, `b` lists per group),
/// reading the lists' offsets and values directly: slicing a list per
/// group would cost three allocations per person.
fn for_each_state_row(values: &[ArrayRef], mut visit: impl FnMut(usize, Row)) -> Result<()> {
    let lists: Vec<&ListArray> = values
        .iter()
        .take(3)
        .map(|array| array.as_list_opt::<i32>())
        .collect::<Option<_>>()
        .ok_or_else(|| DataFusionError::Internal("bad state".into()))?;
    let [t, a, b] = lists.as_slice() else {
        return exec_err!("state must have three lists");
    };
    let parts = [t, a, b].map(|list| {
        let values = list.values().as_primitive_opt::<Int64Type>();
        (list.value_offsets(), values.map(|v| v.values().as_ref()))
    });
    let slice = |part: usize, i: usize| -> Option<&[i64]> {
        let (offsets, values) = parts.get(part)?;
        let (start, end) = (*offsets.get(i)? as usize, *offsets.get(i + 1)? as usize);
        values.as_ref()?.get(start..end)
    };
    for i in 0..t.len() {
        if t.is_null(i) {
            continue;
        }
        let (Some(ts), Some(as_), Some(bs)) = (slice(0, i), slice(1, i), slice(2, i)) else {
            return exec_err!("bad state lists");
        };
        if ts.len() != as_.len() || ts.len() != bs.len() {
            return exec_err!("state lists of different lengths");
        }
        for ((t, a), b) in ts.iter().zip(as_).zip(bs) {
            visit(
                i,
                Row {
                    t: *t,
                    a: *a,
                    b: *b,
                },
            );
        }
    }
    Ok(())
}

/// One `List<Int64>` per part (`t`, `a`, `b`) over the laid-out groups.
fn state_arrays(laid: &Laid) -> Result<Vec<ArrayRef>> {
    if i32::try_from(laid.rows.len()).is_err() {
        return exec_err!("too many rows in one aggregate state");
    }
    let lengths = laid.offsets.windows(2).map(|w| w[1] - w[0]);
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
    let parts: [fn(&Row) -> i64; 3] = [|r| r.t, |r| r.a, |r| r.b];
    parts
        .iter()
        .map(|part| {
            let values = Int64Array::from_iter_values(laid.rows.iter().map(part));
            ListArray::try_new(item_field(), offsets.clone(), Arc::new(values), None)
                .map(|list| Arc::new(list) as ArrayRef)
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
        })
        .collect()
}

fn item_field() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Int64, true))
}

/// Per-group state for GROUP BY queries: every group's rows in one arena.
#[derive(Debug)]
pub struct RowsGroupsAccumulator<F: Finisher> {
    arena: GroupedRows,
    finisher: Arc<F>,
}

impl<F: Finisher> RowsGroupsAccumulator<F> {
    pub fn new(finisher: Arc<F>) -> Self {
        Self {
            arena: GroupedRows::default(),
            finisher,
        }
    }

    fn emitted_groups(&self, emit_to: EmitTo) -> usize {
        match emit_to {
            EmitTo::All => self.arena.num_groups(),
            EmitTo::First(n) => n,
        }
    }
}

impl<F: Finisher> GroupsAccumulator for RowsGroupsAccumulator<F> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.arena.ensure_groups(total_num_groups)?;
        let arena = &mut self.arena;
        for_each_row(values, opt_filter, |i, row| {
            if let Some(group) = group_indices.get(i) {
                arena.push(*group, row);
            }
        })
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut laid = self.arena.take_first(self.emitted_groups(emit_to));
        let mut values: Vec<i64> = Vec::new();
        let mut offsets: Vec<i32> = Vec::with_capacity(laid.groups() + 1);
        offsets.push(0);
        for group in 0..laid.groups() {
            self.finisher
                .finish_into(laid.group_mut(group), &mut values);
            match i32::try_from(values.len()) {
                Ok(end) => offsets.push(end),
                Err(_) => return exec_err!("too many values in one aggregate result"),
            }
        }
        let list = ListArray::try_new(
            item_field(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(Int64Array::from(values)),
            None,
        )
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        Ok(Arc::new(list))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let laid = self.arena.take_first(self.emitted_groups(emit_to));
        state_arrays(&laid)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.arena.ensure_groups(total_num_groups)?;
        let arena = &mut self.arena;
        for_each_state_row(values, |i, row| {
            if let Some(group) = group_indices.get(i) {
                arena.push(*group, row);
            }
        })
    }

    /// Each input row as its own one-row state (skipped rows as empty
    /// lists), for DataFusion's skip-partial-aggregation path.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let len = values.first().map_or(0, |v| v.len());
        let mut laid = Laid {
            rows: Vec::with_capacity(len),
            offsets: vec![0; len + 1],
        };
        for_each_row(values, opt_filter, |i, row| {
            laid.rows.push(row);
            if let Some(next) = laid.offsets.get_mut(i + 1) {
                *next = 1;
            }
        })?;
        for i in 1..laid.offsets.len() {
            laid.offsets[i] += laid.offsets[i - 1];
        }
        state_arrays(&laid)
    }

    fn size(&self) -> usize {
        self.arena.size()
    }
}

/// The state of an aggregate without GROUP BY: one group.
#[derive(Debug)]
pub struct RowsAccumulator<F: Finisher> {
    rows: Vec<Row>,
    finisher: Arc<F>,
}

impl<F: Finisher> RowsAccumulator<F> {
    pub fn new(finisher: Arc<F>) -> Self {
        Self {
            rows: Vec::new(),
            finisher,
        }
    }
}

impl<F: Finisher> Accumulator for RowsAccumulator<F> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = &mut self.rows;
        for_each_row(values, None, |_, row| rows.push(row))
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut values = Vec::new();
        self.finisher.finish_into(&mut self.rows, &mut values);
        let array = Int64Array::from(values);
        Ok(ScalarValue::List(Arc::new(
            ListArray::try_new(
                item_field(),
                OffsetBuffer::from_lengths([array.len()]),
                Arc::new(array),
                None,
            )
            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.rows.capacity() * std::mem::size_of::<Row>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let rows = std::mem::take(&mut self.rows);
        let laid = Laid {
            offsets: vec![0, rows.len()],
            rows,
        };
        let arrays = state_arrays(&laid)?;
        self.rows = laid.rows;
        arrays
            .iter()
            .map(|array| ScalarValue::try_from_array(array, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = &mut self.rows;
        for_each_state_row(states, |_, row| rows.push(row))
    }
}

/// Declares an aggregate UDF over `(t, a, b, spec)` whose spec type `$spec`
/// parses with `$spec::parse(&str)` and computes with [`Finisher`].
macro_rules! rows_udaf {
    ($udaf:ident, $name:expr, $spec:ty, [$($arg:expr),* $(,)?]) => {
        #[derive(Debug, PartialEq, Eq, Hash)]
        pub struct $udaf {
            signature: datafusion::logical_expr::Signature,
        }

        impl $udaf {
            pub fn new() -> Self {
                Self {
                    signature: datafusion::logical_expr::Signature::exact(
                        vec![$($arg),*],
                        datafusion::logical_expr::Volatility::Immutable,
                    ),
                }
            }

            fn spec_of(
                args: &datafusion::logical_expr::function::AccumulatorArgs,
            ) -> datafusion::common::Result<std::sync::Arc<$spec>> {
                let text = $crate::event_rows::literal_spec(args.exprs, args.exprs.len() - 1)?;
                Ok(std::sync::Arc::new(<$spec>::parse(&text)?))
            }
        }

        impl Default for $udaf {
            fn default() -> Self {
                Self::new()
            }
        }

        impl datafusion::logical_expr::AggregateUDFImpl for $udaf {
            fn name(&self) -> &str {
                $name
            }

            fn signature(&self) -> &datafusion::logical_expr::Signature {
                &self.signature
            }

            fn return_type(
                &self,
                _arg_types: &[datafusion::arrow::datatypes::DataType],
            ) -> datafusion::common::Result<datafusion::arrow::datatypes::DataType> {
                Ok($crate::event_rows::list_type())
            }

            fn accumulator(
                &self,
                args: datafusion::logical_expr::function::AccumulatorArgs,
            ) -> datafusion::common::Result<Box<dyn datafusion::logical_expr::Accumulator>> {
                Ok(Box::new($crate::event_rows::RowsAccumulator::new(
                    Self::spec_of(&args)?,
                )))
            }

            fn state_fields(
                &self,
                args: datafusion::logical_expr::function::StateFieldsArgs,
            ) -> datafusion::common::Result<Vec<datafusion::arrow::datatypes::FieldRef>> {
                Ok($crate::event_rows::state_fields(args.name))
            }

            fn groups_accumulator_supported(
                &self,
                _args: datafusion::logical_expr::function::AccumulatorArgs,
            ) -> bool {
                true
            }

            fn create_groups_accumulator(
                &self,
                args: datafusion::logical_expr::function::AccumulatorArgs,
            ) -> datafusion::common::Result<Box<dyn datafusion::logical_expr::GroupsAccumulator>>
            {
                Ok(Box::new($crate::event_rows::RowsGroupsAccumulator::new(
                    Self::spec_of(&args)?,
                )))
            }
        }
    };
}
pub(crate) use rows_udaf;
